"""Prompts in, replies out: what every generating surface shares.

Token counts (words plus a per-message and per-image cost), the prompt cache (prefixes seen
before count as cached, a subset of the prompt as xai-api.md "Units" says), deterministic reply
and reasoning words (the same prompt gives the same reply), and the request fields every
surface checks (model, max tokens, search sources). Also ``POST /v1/tokenize-text`` (xai-api.md
"Other endpoints"), which splits text its own way and costs nothing.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from daemon.simulator.catalog import resolve_model
from daemon.simulator.faults import (
    HEADER_CACHED_TOKENS,
    HEADER_PROMPT_TOKENS,
    HEADER_SOURCES,
    Injection,
    header_int,
)
from daemon.simulator.state import SimulatorState
from daemon.simulator.wire import ApiError, Reply, json_body, json_reply

_PRIMING = 3  # tokens every prompt costs on top of its messages
_PER_MESSAGE = 4  # tokens each message costs on top of its words
_IMAGE_TOKENS = 256  # tokens per image part
_CACHE_NUM, _CACHE_DEN = 15, 16  # a cache hit covers this share of the seen prefix
_WORDS = (
    "the", "meter", "counts", "every", "token", "that", "flows", "through", "this", "quiet",
    "relay", "and", "each", "answer", "arrives", "in", "small", "steady", "pieces", "while",
    "prices", "stay", "exact", "to", "a", "tenth", "of", "nanodollar", "so", "reports",
    "remain", "honest", "simulated", "replies", "are", "short", "clear", "deterministic",
    "useful", "for", "tests", "models", "change", "fingerprints", "drift", "but", "numbers",
    "add", "up", "cleanly", "when", "streams", "end", "or", "break", "halfway", "bills",
    "match", "listings", "here", "today", "again", "always", "gently",
)  # fmt: skip
_THOUGHTS = (
    "Considering", "the", "question", "carefully", "weighing", "possible", "answers",
    "checking", "each", "step", "before", "replying", "briefly",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Segment:
    """One message of a prompt: its identity for the prompt cache, and its size."""

    canon: bytes
    text: str
    words: int
    images: int

    @property
    def tokens(self) -> int:
        return self.words + _PER_MESSAGE + self.images * _IMAGE_TOKENS


_IMAGE_PARTS = frozenset({"image_url", "input_image", "image"})


def _flatten(content: Any, texts: list[str]) -> int:
    """Collect the text of a message's content into `texts`; return how many images it holds."""
    if content is None:
        return 0
    if isinstance(content, str):
        texts.append(content)
        return 0
    if isinstance(content, list):
        return sum(_flatten(part, texts) for part in content)
    if isinstance(content, dict):
        if content.get("type") in _IMAGE_PARTS:
            return 1
        for key in ("text", "content", "output", "arguments"):
            if key in content:
                return _flatten(content[key], texts)
    texts.append(orjson.dumps(content).decode())
    return 0


def segment_of(message: Any) -> Segment:
    """A message (any surface's shape) as a `Segment`: its text, word and image count."""
    texts: list[str] = []
    if isinstance(message, dict):
        images = _flatten(message.get("content"), texts)
        for extra in ("tool_calls", "function_call"):
            if message.get(extra):
                texts.append(orjson.dumps(message[extra]).decode())
        if "content" not in message:
            images += _flatten({k: v for k, v in message.items() if k not in ("type", "id")}, texts)
    else:
        images = _flatten(message, texts)
    text = " ".join(texts)
    canon = orjson.dumps(message, option=orjson.OPT_SORT_KEYS)
    return Segment(canon=canon, text=text, words=len(text.split()), images=images)


@dataclass(slots=True)
class Prompt:
    """A measured prompt: its tokens, the image and cached parts of them, the reply seed."""

    segments: list[Segment]
    tokens: int
    image_tokens: int
    cached: int
    seed: bytes


def measure_prompt(
    state: SimulatorState,
    headers: Mapping[str, str],
    scope: str,
    segments: list[Segment],
    history_tokens: int = 0,
) -> Prompt:
    """Count a prompt's tokens and how much of it the prompt cache already holds.

    The cache works on message prefixes within one scope (model, conversation): the longest
    prefix seen before counts as cached, 15/16 of it, as a real cache covers most but not all.
    """
    digest = hashlib.sha256(scope.encode()).digest()
    running = _PRIMING + history_tokens
    best = running if history_tokens else 0
    seen: list[bytes] = []
    for segment in segments:
        digest = hashlib.sha256(digest + segment.canon).digest()
        running += segment.tokens
        if digest in state.prompt_cache:
            best = running
        seen.append(digest)
    state.prompt_cache.update(seen)
    image_tokens = sum(s.images for s in segments) * _IMAGE_TOKENS
    tokens = running
    forced = header_int(headers, HEADER_PROMPT_TOKENS)
    if forced is not None:
        tokens = max(forced, image_tokens)
    cached = best * _CACHE_NUM // _CACHE_DEN
    forced_cached = header_int(headers, HEADER_CACHED_TOKENS)
    if forced_cached is not None:
        cached = forced_cached
    cached = min(cached, tokens - image_tokens)
    seed = hashlib.sha256(b"\x00".join(s.canon for s in segments)).digest()
    return Prompt(segments, tokens, image_tokens, cached, seed)


def _choice_seed(seed: bytes, index: int) -> bytes:
    return seed if index == 0 else hashlib.sha256(seed + index.to_bytes(2, "big")).digest()


def _reply_words(seed: bytes) -> list[str]:
    """8 to 20 words, the same ones for the same prompt."""
    count = 8 + seed[0] % 13
    words = [_WORDS[seed[1 + i] % len(_WORDS)] for i in range(count)]
    words[0] = words[0].capitalize()
    words[-1] += "."
    return words


def _thought_words(seed: bytes) -> list[str]:
    count = 4 + seed[25] % 5
    words = [_THOUGHTS[(seed[26] + i) % len(_THOUGHTS)] for i in range(count)]
    words[0] = words[0].capitalize()
    words[-1] += "."
    return words


def _reasoning_tokens(seed: bytes, effort: str | None) -> int:
    base = 24 + seed[30] % 64
    if effort == "low":
        return base // 2
    if effort == "high":
        return base * 2
    return base


def word_deltas(words: list[str]) -> list[str]:
    """The pieces a stream sends for `words`: each word, spaced after the first."""
    return [word if i == 0 else " " + word for i, word in enumerate(words)]


def token_limit(value: Any) -> int | None:
    """A positive integer token limit from a request field; None when absent or bad."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


@dataclass(slots=True)
class Choice:
    """One reply: its words, reasoning words and tokens, and why it stopped."""

    words: list[str]
    thoughts: list[str]
    reasoning_tokens: int
    finish_reason: str

    @property
    def text(self) -> str:
        return " ".join(self.words)


def reply_choices(
    seed: bytes, n: int, reasoning: bool, effort: str | None, limit: int | None
) -> list[Choice]:
    """`n` deterministic replies for a prompt seed, cut to `limit` words if given."""
    out = []
    for index in range(n):
        choice_seed = _choice_seed(seed, index)
        words = _reply_words(choice_seed)
        finish = "stop"
        if limit is not None and len(words) > limit:
            words, finish = words[:limit], "length"
        out.append(
            Choice(
                words=words,
                thoughts=_thought_words(choice_seed) if reasoning else [],
                reasoning_tokens=_reasoning_tokens(choice_seed, effort) if reasoning else 0,
                finish_reason=finish,
            )
        )
    return out


def model_of(
    state: SimulatorState, req: Mapping[str, Any], effort: str | None
) -> tuple[str, dict[str, Any] | None]:
    """The request's model resolved: (the id reported, its listing entry).

    422 when the request names none, 404 when it is unknown (unless `accept_unknown_models`).
    """
    name = req.get("model")
    if not isinstance(name, str) or not name:
        raise ApiError(422, "Failed to deserialize the JSON body: missing field `model`")
    resolved, entry = resolve_model(state, name, effort)
    if entry is None and not state.accept_unknown_models:
        raise ApiError(
            404, f"The model {name} does not exist or your team does not have access to it."
        )
    return resolved, entry


def sources_used(headers: Mapping[str, str], req: Mapping[str, Any], seed: bytes) -> int:
    """``num_sources_used``: forced by X-Sim-Sources, else a few when search is on."""
    forced = header_int(headers, HEADER_SOURCES)
    if forced is not None:
        return forced
    search = req.get("search_parameters")
    if not isinstance(search, dict) or search.get("mode") == "off":
        return 0
    most = token_limit(search.get("max_search_results")) or 20
    return min(most, 2 + seed[29] % 4)


async def tokenize_text(request: web.Request, state: SimulatorState, inj: Injection) -> Reply:
    """`POST /v1/tokenize-text`: the text split into tokens, each with an id and bytes."""
    req = json_body(await request.read(), request.headers)
    model_of(state, req, None)
    text = req.get("text")
    if not isinstance(text, str):
        raise ApiError(422, "`text` must be a string")
    return json_reply({"token_ids": text_tokens(text)})


def text_tokens(text: str) -> list[dict[str, Any]]:
    """`text` split the tokenizer's way: ``{token_id, string_token, token_bytes}`` each."""
    tokens = []
    for piece in re.findall(r"\s*\S+|\s+", text):
        digest = hashlib.sha256(piece.encode()).digest()
        tokens.append(
            {
                "token_id": int.from_bytes(digest[:4], "big") % 131072,
                "string_token": piece,
                "token_bytes": list(piece.encode()),
            }
        )
    return tokens
