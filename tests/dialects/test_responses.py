"""The Responses dialect on its own (xai-api.md, "Responses POST /v1/responses")."""

from __future__ import annotations

import json

from daemon.dialects.responses import ResponsesDialect
from daemon.record import CallRecord
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


# --- the fingerprint: metadata.system_fingerprint (2026), top level (older) ---------------


def body_record(body: dict[str, object]) -> CallRecord:
    record = make_record(endpoint="responses", path="/v1/responses")
    dialect = ResponsesDialect()
    dialect.inspect_request(record, b'{"model":"grok-4.3","input":"hi"}')
    tap = dialect.tap(record, "application/json", lambda: 0.0)
    assert tap.feed(json.dumps(body).encode()) is None
    tap.finish(True)
    return record


def stream_record(events: bytes) -> CallRecord:
    record = make_record(endpoint="responses", path="/v1/responses")
    dialect = ResponsesDialect()
    dialect.inspect_request(record, b'{"model":"grok-4.3","stream":true,"input":"hi"}')
    tap = dialect.tap(record, "text/event-stream", lambda: 0.0)
    assert tap.feed(events) is None
    tap.finish(True)
    return record


def test_fingerprint_is_read_from_metadata_in_a_2026_body() -> None:
    record = body_record(
        {
            "id": "r",
            "model": "grok-4.3",
            "metadata": {"system_fingerprint": "fp_7c1e"},
            "usage": USAGE,
        }
    )
    assert record.fingerprint == "fp_7c1e"


def test_fingerprint_at_the_top_level_of_an_old_body_is_still_read() -> None:
    record = body_record(
        {"id": "r", "model": "grok-4", "system_fingerprint": "fp_old", "usage": USAGE}
    )
    assert record.fingerprint == "fp_old"
    both = body_record(
        {
            "id": "r",
            "system_fingerprint": "fp_top",
            "metadata": {"system_fingerprint": "fp_meta"},
            "usage": USAGE,
        }
    )
    assert both.fingerprint == "fp_meta"  # metadata first
    assert body_record({"id": "r", "metadata": {}, "usage": USAGE}).fingerprint is None


def test_fingerprint_is_read_from_a_2026_stream() -> None:
    meta = {"system_fingerprint": "fp_5d02"}
    events = (
        event("response.created", id="r1", model="grok-4.3", metadata=meta, usage=None)
        + b'data: {"type":"response.output_text.delta","delta":"Hi",'
        b'"metadata":{"system_fingerprint":"fp_5d02"}}\n\n'
        + event("response.completed", id="r1", model="grok-4.3", metadata=meta, usage=USAGE)
    )
    record = stream_record(events)
    assert record.fingerprint == "fp_5d02"
    assert record.usage is not None and record.usage.input_tokens == 10


def test_fingerprint_from_the_terminal_event_when_the_first_has_none() -> None:
    events = event("response.created", id="r1", model="grok-4.3", metadata={}) + event(
        "response.completed",
        id="r1",
        model="grok-4.3",
        metadata={"system_fingerprint": "fp_late"},
        usage=USAGE,
    )
    assert stream_record(events).fingerprint == "fp_late"


def test_fingerprint_from_an_events_own_metadata() -> None:
    events = (
        b'data: {"type":"response.created","metadata":{"system_fingerprint":"fp_ev"},'
        b'"response":{"id":"r1","model":"grok-4.3"}}\n\n'
        + event("response.completed", id="r1", model="grok-4.3", usage=USAGE)
    )
    assert stream_record(events).fingerprint == "fp_ev"


# --- server-side tools: details first, else output items, else the bare number --------------

WEB_ITEM = {"type": "web_search_call", "id": "ws_1", "status": "completed",
            "action": {"type": "search", "query": "meters"}}  # fmt: skip


def x_item(name: str) -> dict[str, object]:
    return {"type": "custom_tool_call", "name": name, "call_id": "c", "input": "{}"}


def test_tools_from_details_with_posts_and_profiles_fetched() -> None:
    usage = {
        **USAGE,
        "num_server_side_tools_used": 4,
        "server_side_tool_usage_details": {
            "web_search_calls": 1,
            "x_search_calls": 3,
            "x_posts_fetched": 42,
            "x_users_fetched": 5,
            "code_interpreter_calls": 0,
        },
    }
    record = body_record({"id": "r", "usage": usage, "output": [WEB_ITEM]})
    assert record.usage is not None
    assert record.usage.server_tool_calls == {
        "web_search": 1,
        "x_search": 3,
        "x_posts_fetched": 42,
        "x_users_fetched": 5,
    }
    row = record.as_row()
    assert row["server_tool_calls"] == 4  # calls; the 47 items fetched are not calls
    assert json.loads(row["tool_calls"])["x_posts_fetched"] == 42


def test_tools_from_output_items_of_a_2025_body() -> None:
    """No details, no ticks: only the number and the *_call items (X search as custom_tool_call
    items; a client's own function or custom tool is no server-side call)."""
    output = [
        {"type": "reasoning", "id": "rs"},
        WEB_ITEM,
        {**WEB_ITEM, "action": {"type": "open_page", "url": "https://example.com"}},
        x_item("x_keyword_search"),
        x_item("x_semantic_search"),
        x_item("x_thread_fetch"),
        {"type": "code_interpreter_call", "id": "ci"},
        {"type": "file_search_call", "id": "fs"},
        {"type": "mcp_call", "id": "mcp", "name": "lookup"},
        {"type": "function_call", "name": "get_weather", "call_id": "f"},
        x_item("my_own_tool"),
        {"type": "message", "content": []},
    ]
    usage = {**USAGE, "num_server_side_tools_used": 8}
    record = body_record({"id": "r", "usage": usage, "output": output})
    assert record.usage is not None
    assert record.usage.server_tool_calls == {
        "web_search": 2,
        "x_search": 3,
        "code_interpreter": 1,
        "file_search": 1,
        "mcp": 1,
    }
    assert record.usage.reported_cost_ticks is None
    assert record.as_row()["server_tool_calls"] == 8


def test_tools_from_the_bare_number_are_unknown_calls() -> None:
    record = body_record({"id": "r", "usage": {**USAGE, "num_server_side_tools_used": 3}})
    assert record.usage is not None and record.usage.server_tool_calls == {"unknown": 3}
    assert record.as_row()["server_tool_calls"] == 3


def test_a_number_larger_than_what_is_named_adds_unknown_calls() -> None:
    usage = {
        **USAGE,
        "num_server_side_tools_used": 5,
        "server_side_tool_usage_details": {"web_search_calls": 2, "x_posts_fetched": 9},
    }
    record = body_record({"id": "r", "usage": usage, "output": [WEB_ITEM] * 4})
    assert record.usage is not None
    assert record.usage.server_tool_calls == {"web_search": 2, "x_posts_fetched": 9, "unknown": 3}
    items = body_record({"id": "r", "usage": {**USAGE, "num_server_side_tools_used": 3},
                         "output": [WEB_ITEM]})  # fmt: skip
    assert items.usage is not None
    assert items.usage.server_tool_calls == {"web_search": 1, "unknown": 2}


def test_tools_in_a_stream_come_from_the_terminal_response() -> None:
    usage = {**USAGE, "num_server_side_tools_used": 2}
    events = event("response.created", id="r1", model="grok-4", output=[]) + event(
        "response.completed",
        id="r1",
        model="grok-4",
        output=[x_item("x_user_search"), WEB_ITEM],
        usage=usage,
    )
    record = stream_record(events)
    assert record.usage is not None
    assert record.usage.server_tool_calls == {"x_search": 1, "web_search": 1}


def test_no_tools_no_kinds() -> None:
    usage = {**USAGE, "num_server_side_tools_used": 0, "server_side_tool_usage_details": {}}
    record = body_record({"id": "r", "usage": usage, "output": [{"type": "message"}]})
    assert record.usage is not None and record.usage.server_tool_calls == {}
    row = record.as_row()
    assert (row["server_tool_calls"], row["tool_calls"]) == (0, None)


# --- compaction and error events ---------------------------------------------------------


def test_a_compaction_is_billed_by_its_usage() -> None:
    """POST /v1/responses/compact runs the model (gRPC's Chat/CompactContext is billed)."""
    record = make_record(endpoint="responses", method="POST", path="/v1/responses/compact")
    dialect = ResponsesDialect()
    dialect.inspect_request(record, b'{"model":"grok-4.3","input":"a long conversation"}')
    tap = dialect.tap(record, "application/json", lambda: 0.0)
    usage = {"input_tokens": 500, "output_tokens": 100, "total_tokens": 600}
    tap.feed(json.dumps({"id": "c1", "model": "grok-4.3", "usage": usage}).encode())
    tap.finish(True)
    assert record.billable and record.metered and record.requested_model == "grok-4.3"
    assert record.usage is not None
    assert (record.usage.input_tokens, record.usage.output_tokens) == (500, 100)


def test_a_stored_response_fetched_again_is_not_billed() -> None:
    record = make_record(endpoint="responses", method="GET", path="/v1/responses/resp_1")
    ResponsesDialect().inspect_request(record, b"")
    assert not record.billable


def test_an_error_event_keeps_its_code_and_the_call_is_unmetered() -> None:
    events = (
        event("response.created", id="r1", model="grok-4.3")
        + b'data: {"type":"error","code":"server_error","message":"upstream failed"}\n\n'
    )
    record = stream_record(events)
    assert record.upstream_error == "server_error" and record.error_detail is None
    assert record.usage is None and not record.metered


def test_reasoning_beyond_output_is_outside_it() -> None:
    """Responses' output_tokens includes reasoning; a reasoning count above it cannot be a part
    of it, so it was reported outside (as on chat): output = 2 + 125."""
    from daemon.dialects.responses import responses_usage

    u = {
        "input_tokens": 100,
        "output_tokens": 2,
        "output_tokens_details": {"reasoning_tokens": 125},
    }
    usage = responses_usage(u)
    assert (usage.output_tokens, usage.reasoning_tokens) == (127, 125)
    inside = {**u, "output_tokens": 200}  # within the output: as documented, nothing added
    assert responses_usage(inside).output_tokens == 200
