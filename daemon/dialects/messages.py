"""Anthropic Messages (`POST /v1/messages`), on xAI (deprecated there) or on Anthropic itself.

Shapes read (xai-api.md, "Anthropic-compatible POST /v1/messages"):

- body: ``{id, model, usage}``; ``usage`` is ``{input_tokens, output_tokens,
  cache_read_input_tokens, cache_creation_input_tokens, server_tool_use{web_search_requests}}``
  (xAI sends no cost here today; a ``cost_in_usd_ticks`` or ``cost_in_nano_usd`` is read as in
  every dialect, `daemon.dialects.coerce.reported_ticks`);
- stream: ``message_start`` carries ``message{id, model, usage}`` (input side; xAI sends 0/0
  there), ``message_delta`` carries ``usage`` (output, cumulative: the last value of each count
  wins); an ``error`` event carries ``error{type}``. A stream whose final usage never came is
  unmetered, not zero.

Anthropic counts cache reads and cache writes *outside* `input_tokens`; xAI's compatible endpoint
counts cache reads inside. The upstream's provider says which; a cache-read count larger than
`input_tokens` proves the Anthropic convention whatever the provider.
"""

from __future__ import annotations

import re
from typing import Any

from daemon.dialects.base import Clock, Dialect, Tap, note_model_and_id, read_error
from daemon.dialects.body import BodyTap
from daemon.dialects.coerce import as_int, loads_object, opt_str, reported_ticks, sub
from daemon.dialects.sse import EventTap
from daemon.record import CallRecord, Unmetered, Usage

_FIRST_TOKEN = re.compile(rb'"type"\s*:\s*"content_block_delta"')
_USAGE_KEYS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)
# Taken from `message_delta` only: a cost in `message_start` could only be provisional.
_COST_KEYS = ("cost_in_usd_ticks", "cost_in_nano_usd")


def messages_usage(u: dict[str, Any], provider: str) -> Usage:
    """Normalize Messages usage so `input_tokens` includes cache reads and writes."""
    inp = as_int(u.get("input_tokens"))
    cache_read = as_int(u.get("cache_read_input_tokens"))
    cache_write = as_int(u.get("cache_creation_input_tokens"))
    if provider == "anthropic" or cache_read > inp:
        inp += cache_read + cache_write
    return Usage(
        input_tokens=inp,
        cached_input_tokens=min(cache_read, inp),
        cache_write_tokens=cache_write,
        output_tokens=as_int(u.get("output_tokens")),
        sources=as_int(sub(u, "server_tool_use").get("web_search_requests")),
        reported_cost_ticks=reported_ticks(u),
    )


class MessageBody(BodyTap):
    def parse(self, body: bytes) -> None:
        record = self.record
        obj = self.success_object(body)
        if obj is None:
            return
        note_model_and_id(record, obj.get("model"), obj.get("id"))
        usage = obj.get("usage")
        if isinstance(usage, dict):
            record.usage = messages_usage(usage, record.provider)


class MessageStream(EventTap):
    """Reads `message_start` (model, id, input usage) and `message_delta` (output usage)."""

    first_token = _FIRST_TOKEN
    needles = (b"message_start", b"message_delta", b'"error"')

    def __init__(self, record: CallRecord, clock: Clock, encoding: str) -> None:
        super().__init__(record, clock, encoding)
        self._usage: dict[str, Any] = {}

    def read(self, obj: dict[str, Any]) -> bool:
        if obj.get("type") == "error":  # Anthropic's error event, e.g. overloaded_error
            read_error(self.record, obj)
            return True
        message = obj.get("message")
        keys: tuple[str, ...] = (*_USAGE_KEYS, "server_tool_use")
        if isinstance(message, dict):  # message_start
            note_model_and_id(self.record, message.get("model"), message.get("id"))
            usage = message.get("usage")
        else:  # message_delta (or another event that names one)
            usage = obj.get("usage")
            keys = (*keys, *_COST_KEYS)
        if isinstance(usage, dict):
            self._usage.update({k: usage[k] for k in keys if usage.get(k) is not None})
        return True

    def end_of_stream(self, complete: bool) -> None:
        record = self.record
        if "output_tokens" in self._usage:
            record.usage = messages_usage(self._usage, record.provider)
            if not complete:  # a lower bound: counted, and marked as not the whole story
                record.mark_unmetered(Unmetered.INCOMPLETE)
        super().end_of_stream(complete)


class MessagesDialect(Dialect):
    def __init__(self) -> None:
        super().__init__("messages", billable=True)

    def inspect_request(self, record: CallRecord, body: bytes) -> bytes | None:
        record.billable = record.method == "POST" and record.path == "/v1/messages"
        obj = loads_object(body) if record.billable else None
        if obj is not None:
            record.requested_model = opt_str(obj.get("model"))
            record.stream = obj.get("stream") is True
        return None

    def tap(self, record: CallRecord, content_type: str, clock: Clock, encoding: str = "") -> Tap:
        if content_type.startswith("text/event-stream"):
            return MessageStream(record, clock, encoding)
        return MessageBody(record, clock, encoding)
