"""Anthropic Messages (`POST /v1/messages`), on xAI (deprecated there) or on Anthropic itself.

Shapes read (xai-api.md, "Anthropic-compatible POST /v1/messages"):

- body: ``{id, model, usage}``; ``usage`` is ``{input_tokens, output_tokens,
  cache_read_input_tokens, cache_creation_input_tokens, cache_creation{ephemeral_5m_input_tokens,
  ephemeral_1h_input_tokens}, server_tool_use{web_search_requests}}`` (xAI sends no cost here
  today; a ``cost_in_usd_ticks`` or ``cost_in_nano_usd`` is read as in every dialect,
  `daemon.dialects.coerce.reported_ticks`);
- stream: ``message_start`` carries ``message{id, model, usage}`` (provisional: xAI sends 0/0
  there), ``message_delta`` carries the final ``usage`` (cumulative: the last value of each count
  wins); an ``error`` event carries ``error{type}``. A stream whose ``message_delta`` usage never
  came is unmetered (``incomplete``), never booked with the provisional counts.

Cache reads and cache writes are counted *outside* `input_tokens`, on Anthropic and, per xAI's
2026 docs, on xAI's compatible endpoint too (xai-api.md: "``input_tokens`` excludes cache reads
(Anthropic semantics)"); the normalized `Usage` puts them inside, as every other dialect does.
"""

from __future__ import annotations

import re
from typing import Any

from daemon.dialects.base import (
    Clock,
    Dialect,
    Tap,
    note_model_and_id,
    read_error,
    read_json_request,
)
from daemon.dialects.body import BodyTap
from daemon.dialects.coerce import as_int, reported_ticks, sub
from daemon.dialects.sse import EventTap
from daemon.record import CallRecord, Usage

_FIRST_TOKEN = re.compile(rb'"type"\s*:\s*"content_block_delta"')
_USAGE_KEYS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)
# Taken from `message_delta` only: a cost in `message_start` could only be provisional.
_COST_KEYS = ("cost_in_usd_ticks", "cost_in_nano_usd")


_DETAIL_KEYS = ("server_tool_use", "cache_creation")
# The counts that say how large the prompt was (all three are outside input_tokens' count).
_PROMPT_KEYS = ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


def messages_usage(u: dict[str, Any]) -> Usage:
    """Normalize Messages usage so `input_tokens` includes cache reads and writes (the upstream
    counts both outside its ``input_tokens``).

    Cache writes: ``cache_creation_input_tokens`` (all of them) and, on Anthropic,
    ``cache_creation{ephemeral_5m_input_tokens, ephemeral_1h_input_tokens}``; a total without
    the split is all 5-minute writes, a split without the total adds up to it.
    """
    inp = as_int(u.get("input_tokens"))
    cache_read = as_int(u.get("cache_read_input_tokens"))
    split = sub(u, "cache_creation")
    write_1h = as_int(split.get("ephemeral_1h_input_tokens"))
    write = max(
        as_int(u.get("cache_creation_input_tokens")),
        as_int(split.get("ephemeral_5m_input_tokens")) + write_1h,
    )
    inp += cache_read + write
    cached = min(cache_read, inp)
    write = min(write, inp - cached)
    return Usage(
        input_tokens=inp,
        cached_input_tokens=cached,
        cache_creation_input_tokens=write,
        cache_creation_1h_input_tokens=min(write_1h, write),
        output_tokens=as_int(u.get("output_tokens")),
        sources=as_int(sub(u, "server_tool_use").get("web_search_requests")),
        reported_cost_ticks=reported_ticks(u),
    )


class MessageBody(BodyTap):
    """A whole Messages body: model, id and `messages_usage` (cache reads and writes counted
    inside ``input_tokens``)."""

    def parse(self, body: bytes) -> None:
        record = self.record
        obj = self.success_object(body)
        if obj is None:
            return
        note_model_and_id(record, obj.get("model"), obj.get("id"))
        usage = obj.get("usage")
        if isinstance(usage, dict):
            record.usage = messages_usage(usage)


class MessageStream(EventTap):
    """Reads `message_start` (model, id, input usage) and `message_delta` (output usage)."""

    first_token = _FIRST_TOKEN
    needles = (b"message_start", b"message_delta", b'"error"')

    def __init__(self, record: CallRecord, clock: Clock, encoding: str) -> None:
        super().__init__(record, clock, encoding)
        self._usage: dict[str, Any] = {}
        # The prompt's size is known once an event states it: Anthropic's message_start does
        # (its message_delta carries output only); xAI's says 0/0 there, a placeholder, so its
        # message_delta must. A final usage whose prompt side was never stated is not final.
        self._prompt_known = False

    def read(self, obj: dict[str, Any]) -> bool:
        if obj.get("type") == "error":  # Anthropic's error event, e.g. overloaded_error
            read_error(self.record, obj)
            return True
        message = obj.get("message")
        keys: tuple[str, ...] = (*_USAGE_KEYS, *_DETAIL_KEYS)
        if isinstance(message, dict):  # message_start: its usage is provisional
            note_model_and_id(self.record, message.get("model"), message.get("id"))
            usage = message.get("usage")
        else:  # message_delta (or another event that names one)
            usage = obj.get("usage")
            keys = (*keys, *_COST_KEYS)
            if isinstance(usage, dict) and obj.get("type") == "message_delta":
                self.usage_final = True  # the final, cumulative counts
        if isinstance(usage, dict):
            self._usage.update({k: usage[k] for k in keys if usage.get(k) is not None})
            if not self._prompt_known:
                stated = [usage.get(k) for k in _PROMPT_KEYS if k in usage]
                # a message_delta that names the prompt counts states it, whatever the values;
                # message_start only by a nonzero count (0/0 is xAI's placeholder)
                self._prompt_known = bool(stated) and (message is None or any(stated))
        return True

    def end_of_stream(self, complete: bool) -> None:
        record = self.record
        if self._usage:  # dropped by EventTap unless message_delta made it final
            record.usage = messages_usage(self._usage)
        if not self._prompt_known:
            self.usage_final = False  # output counted, prompt never stated: not a final bill
        super().end_of_stream(complete)


class MessagesDialect(Dialect):
    """`POST /v1/messages` (xai-api.md, "Anthropic-compatible"), billed. Reads the request's
    ``model`` and ``stream``, and the answer's ``{id, model, usage{input_tokens, output_tokens,
    cache_read_input_tokens, cache_creation_input_tokens}}`` from a body, or from a stream's
    ``message_start`` and ``message_delta`` events."""

    def __init__(self) -> None:
        super().__init__("messages", billable=True)

    def inspect_request(self, record: CallRecord, body: bytes) -> bytes | None:
        record.billable = record.method == "POST" and record.path == "/v1/messages"
        read_json_request(record, body)
        return None

    def tap(self, record: CallRecord, content_type: str, clock: Clock, encoding: str = "") -> Tap:
        if content_type.startswith("text/event-stream"):
            return MessageStream(record, clock, encoding)
        return MessageBody(record, clock, encoding)
