"""The Messages dialect on its own (xai-api.md, "Anthropic-compatible POST /v1/messages")."""

from __future__ import annotations

from daemon.dialects.messages import MessagesDialect
from daemon.record import CallRecord


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
    assert record.error_detail == "overloaded_error" and record.response_id == "msg_1"
