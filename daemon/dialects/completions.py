"""Legacy text completions: OpenAI's `POST /v1/completions` and Anthropic's `POST /v1/complete`.

Shapes read (xai-api.md, "Other endpoints" and "Anthropic-compatible"):

- ``/v1/completions`` (OpenAI legacy): the chat shape with ``choices[].text`` for
  ``choices[].message``: body ``{id, object: "text_completion", model, system_fingerprint,
  choices, usage}``, ``usage`` as in chat (``prompt_tokens, completion_tokens, total_tokens,
  prompt_tokens_details{cached_tokens}, completion_tokens_details{reasoning_tokens},
  cost_in_usd_ticks``); streams are ``data: {chunk}`` events ending ``data: [DONE]``, usage on
  one ``choices: []`` chunk when ``stream_options.include_usage`` asks (the relay asks, and
  removes that chunk, as for chat). So it is the chat dialect with another endpoint name and
  another first-token event.
- ``/v1/complete`` (Anthropic legacy): body ``{type: "completion", id, model, completion,
  stop_reason, usage?}``; streams are ``event: completion`` events ``{completion, stop_reason,
  model, usage?}``, the last one with a ``stop_reason``, and ``error`` events. ``usage``, when the
  upstream sends it, is in the Messages shape (`messages_usage`). Anthropic's own legacy API
  sends none: such a call is unmetered (``no_usage``), never zero. In a stream, usage is final
  only on the event that carries the ``stop_reason``.
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
from daemon.dialects.chat import ChatBody, ChatDialect, ChatStream
from daemon.dialects.coerce import opt_str
from daemon.dialects.messages import messages_usage
from daemon.dialects.sse import EventTap
from daemon.record import CallRecord

_TEXT_TOKEN = re.compile(rb'"text"\s*:\s*"[^"]')
_COMPLETION_TOKEN = re.compile(rb'"completion"\s*:\s*"[^"]')


class CompletionStream(ChatStream):
    """A legacy completion stream: chat's chunks, whose generated text is ``choices[].text``."""

    first_token = _TEXT_TOKEN


class CompletionsDialect(ChatDialect):
    """`POST /v1/completions`: billed like chat (the request rewriting for usage included)."""

    def __init__(self) -> None:
        Dialect.__init__(self, "completions", billable=True)

    def inspect_request(self, record: CallRecord, body: bytes) -> bytes | None:
        out = super().inspect_request(record, body)
        record.deferred = False  # no deferred mode here: every POST bills
        record.billable = record.method == "POST"
        return out

    def tap(self, record: CallRecord, content_type: str, clock: Clock, encoding: str = "") -> Tap:
        if content_type.startswith("text/event-stream"):
            return CompletionStream(record, clock, encoding, filtering=record.usage_injected)
        return ChatBody(record, clock, encoding)


def _read_complete(record: CallRecord, obj: dict[str, Any]) -> bool:
    """Read one legacy Anthropic completion (or stream event); True when it carried usage."""
    note_model_and_id(record, obj.get("model"), obj.get("id"))
    usage = obj.get("usage")
    if isinstance(usage, dict):
        record.usage = messages_usage(usage)
        return True
    return False


class CompleteBody(BodyTap):
    """A whole `/v1/complete` body: model, id and, when sent, usage in the Messages shape
    (a 2xx without it is unmetered, ``no_usage``)."""

    def parse(self, body: bytes) -> None:
        obj = self.success_object(body)
        if obj is not None:
            _read_complete(self.record, obj)


class CompleteStream(EventTap):
    """Reads the first event (model, id) and any event carrying usage or an error."""

    first_token = _COMPLETION_TOKEN
    needles = (b'"usage"', b'"error"')

    def read(self, obj: dict[str, Any]) -> bool:
        if obj.get("type") == "error":
            read_error(self.record, obj)
            return True
        if _read_complete(self.record, obj) and opt_str(obj.get("stop_reason")):
            self.usage_final = True  # the last event: its counts are the final ones
        return True


class CompleteDialect(Dialect):
    """`POST /v1/complete` (Anthropic's legacy text completions)."""

    def __init__(self) -> None:
        super().__init__("complete", billable=True)

    def inspect_request(self, record: CallRecord, body: bytes) -> bytes | None:
        record.billable = record.method == "POST"
        read_json_request(record, body)
        return None

    def tap(self, record: CallRecord, content_type: str, clock: Clock, encoding: str = "") -> Tap:
        if content_type.startswith("text/event-stream"):
            return CompleteStream(record, clock, encoding)
        return CompleteBody(record, clock, encoding)
