"""The Responses dialect on its own (xai-api.md, "Responses POST /v1/responses")."""

from __future__ import annotations

import json

from daemon.dialects.responses import ResponsesDialect
from daemon.testing import make_record

USAGE = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}


def event(kind: str, **response: object) -> bytes:
    return b"data: " + json.dumps({"type": kind, "response": response}).encode() + b"\n\n"


def test_first_non_empty_model_and_id_win() -> None:
    """The one setter policy (daemon.dialects.base.note_model_and_id): the stream repeats its
    response object from response.created to the terminal event; the first id wins, and the
    model is taken from the first event that names one."""
    record = make_record(endpoint="responses", path="/v1/responses")
    dialect = ResponsesDialect()
    dialect.inspect_request(record, b'{"model":"grok-4","stream":true,"input":"hi"}')
    tap = dialect.tap(record, "text/event-stream", lambda: 0.0)
    body = event("response.created", id="resp_1", model="") + event(
        "response.completed", id="resp_2", model="grok-4-0709", usage=USAGE
    )
    assert tap.feed(body) is None
    tap.finish(True)
    assert (record.model, record.response_id) == ("grok-4-0709", "resp_1")
    assert record.usage is not None and record.usage.output_tokens == 5
