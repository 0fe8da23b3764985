"""The Messages dialect on its own (xai-api.md, "Anthropic-compatible POST /v1/messages")."""

from __future__ import annotations

from daemon.dialects.messages import MessagesDialect
from daemon.record import CallRecord
from daemon.testing import make_record


def test_anthropic_error_event_keeps_its_type() -> None:
    body = (
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1",'
        b'"model":"claude","usage":{"input_tokens":5,"output_tokens":1}}}\n\n'
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
        b'"message":"Overloaded"}}\n\n'
    )
    record = CallRecord(
        id="t",
        started_at=0.0,
        t0=0.0,
        provider="anthropic",
        endpoint="messages",
        method="POST",
        path="/v1/messages",
        status=200,
    )
    MessagesDialect().inspect_request(record, b'{"model":"claude","stream":true}')
    tap = MessagesDialect().tap(record, "text/event-stream", lambda: 1.0)
    assert tap.feed(body) is None
    tap.finish(True)
    assert record.upstream_error == "overloaded_error" and record.response_id == "msg_1"
    assert record.error_detail is None


def test_first_non_empty_model_and_id_win() -> None:
    """The one setter policy (daemon.dialects.base.note_model_and_id): model and id come from
    message_start; a later event that names a message without them never erases them."""
    body = (
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1",'
        b'"model":"grok-3","usage":{"input_tokens":5,"output_tokens":0}}}\n\n'
        b'event: message_start\ndata: {"type":"message_start","message":{"id":null,'
        b'"model":"grok-other","usage":{"input_tokens":5}}}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","delta":{},'
        b'"usage":{"output_tokens":7}}\n\n'
    )
    record = make_record(endpoint="messages", path="/v1/messages")
    MessagesDialect().inspect_request(record, b'{"model":"grok-3","stream":true}')
    tap = MessagesDialect().tap(record, "text/event-stream", lambda: 1.0)
    assert tap.feed(body) is None
    tap.finish(True)
    assert (record.model, record.response_id) == ("grok-3", "msg_1")
    assert record.usage is not None and record.usage.output_tokens == 7
