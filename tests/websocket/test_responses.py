"""The Responses API over a WebSocket through the daemon: one row per turn (``response.create``
to its terminal event) with that turn's usage and cost, messages unchanged both ways, and a
socket that ends mid-turn leaves that turn one unmetered row."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType

from daemon import simulator
from daemon.ledger.schema import open_database
from daemon.ledger.store import all_calls
from daemon.testing import TEST_KEY, DaemonFactory, RunningDaemon, cost_by_hand

AUTH = {"Authorization": f"Bearer {TEST_KEY}"}
TERMINAL = ("response.completed", "response.incomplete", "response.failed", "error")
# grok-4.3 in the simulator's listing, ticks per token: input, cached input, output
GROK_43 = (12_500, 2_000, 25_000)


def create(**body: Any) -> str:
    return json.dumps({"type": "response.create", "model": "grok-4.3", **body})


async def turn(ws: aiohttp.ClientWebSocketResponse, message: str) -> list[dict[str, Any]]:
    """Send one ``response.create``; the events until its terminal one (or an error)."""
    await ws.send_str(message)
    events = []
    while True:
        msg = await ws.receive()
        assert msg.type is WSMsgType.TEXT, msg
        events.append(json.loads(msg.data))
        if events[-1]["type"] in TERMINAL:
            return events


def assert_turn_row(row: dict[str, Any], events: list[dict[str, Any]]) -> None:
    """A turn's row says what its terminal event says, priced as over HTTP."""
    response = events[-1]["response"]
    usage = response["usage"]
    reasoning = usage["output_tokens_details"]["reasoning_tokens"]
    cached = usage["input_tokens_details"]["cached_tokens"]
    assert (row["transport"], row["endpoint"], row["method"], row["path"], row["stream"]) == (
        "websocket",
        "responses",
        "GET",
        "/v1/responses",
        1,
    )
    assert (row["status"], row["error"], row["metered"]) == (200, None, 1)
    assert (row["response_id"], row["model"]) == (response["id"], response["model"])
    assert row["fingerprint"] == response["metadata"]["system_fingerprint"]
    assert (row["input_tokens"], row["cached_input_tokens"]) == (usage["input_tokens"], cached)
    assert (row["output_tokens"], row["reasoning_tokens"]) == (usage["output_tokens"], reasoning)
    by_hand = cost_by_hand(*GROK_43, usage["input_tokens"], cached, usage["output_tokens"])
    assert usage["cost_in_usd_ticks"] == by_hand
    assert (row["reported_cost_ticks"], row["computed_cost_ticks"]) == (by_hand, by_hand)
    assert (row["cost_ticks"], row["cost_source"]) == (by_hand, "reported")
    assert row["ttft_ms"] is not None and row["upstream_ms"] is not None


async def test_each_turn_is_one_row_with_its_own_usage_and_cost(
    sim: simulator.Simulator, start_priced: DaemonFactory
) -> None:
    meter = await start_priced(sim.url)
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{meter.base_url}/responses", headers=AUTH) as ws,
    ):
        first = await turn(ws, create(input="How many tokens does a socket cost?"))
        first_id = first[-1]["response"]["id"]
        second = await turn(ws, create(input="And the next turn?", previous_response_id=first_id))
        received = [json.dumps(e, separators=(",", ":")) for e in first + second]
    turns = await meter.rows(2)
    assert_turn_row(turns[0], first)
    assert_turn_row(turns[1], second)
    assert (turns[0]["previous_response_id"], turns[1]["previous_response_id"]) == (None, first_id)
    assert (turns[0]["input_tokens"], turns[0]["output_tokens"]) == (14, 43)  # pinned
    assert turns[0]["cost_ticks"] == 14 * 12_500 + 43 * 25_000 == 1_250_000
    assert (turns[1]["input_tokens"], turns[1]["cached_input_tokens"]) == (36, 26)
    assert turns[1]["cost_ticks"] == (36 - 26) * 12_500 + 26 * 2_000 + 98 * 25_000 == 2_627_000
    assert turns[0]["request_id"] == turns[1]["request_id"] is not None  # the upgrade's
    [log] = sim.state.sockets
    assert [json.loads(m) for m in log.received] == [
        json.loads(create(input="How many tokens does a socket cost?")),
        json.loads(create(input="And the next turn?", previous_response_id=first_id)),
    ]
    assert [json.dumps(json.loads(m), separators=(",", ":")) for m in log.sent] == received


async def test_messages_reach_each_side_byte_for_byte(
    sim: simulator.Simulator, meter: RunningDaemon
) -> None:
    odd = '{ "type" : "response.create",\n "model":"grok-4.3", "input": "spaced  \\u00e9 out" }'
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{meter.base_url}/responses", headers=AUTH) as ws,
    ):
        await ws.send_str(odd)
        got: list[str] = []
        while not got or json.loads(got[-1])["type"] not in TERMINAL:
            got.append((await ws.receive()).data)
    [log] = sim.state.sockets
    assert log.received == [odd]
    assert log.sent == got
    [row] = await meter.rows(1)
    assert row["metered"] == 1


async def test_pipelined_turns_are_billed_in_order(
    sim: simulator.Simulator, meter: RunningDaemon
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{meter.base_url}/responses", headers=AUTH) as ws,
    ):
        await ws.send_str(create(input="first question here"))
        await ws.send_str(create(model="grok-4.5", input="a second, longer question here"))
        terminals: list[dict[str, Any]] = []
        while len(terminals) < 2:
            event = json.loads((await ws.receive()).data)
            if event["type"] in TERMINAL:
                terminals.append(event["response"])
    rows = await meter.rows(2)
    assert [(r["requested_model"], r["response_id"], r["input_tokens"]) for r in rows] == [
        (model, t["id"], t["usage"]["input_tokens"])
        for model, t in zip(("grok-4.3", "grok-4.5"), terminals, strict=True)
    ]


@pytest.mark.parametrize("status", ["incomplete", "failed"])
async def test_an_incomplete_or_failed_turn_is_billed_by_its_usage(
    sim: simulator.Simulator, meter: RunningDaemon, status: str
) -> None:
    headers = {**AUTH, "X-Sim-Response-Status": status}
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{meter.base_url}/responses", headers=headers) as ws,
    ):
        events = await turn(ws, create(input="cut me off"))
    assert events[-1]["type"] == f"response.{status}"
    [row] = await meter.rows(1)
    usage = events[-1]["response"]["usage"]
    assert (row["metered"], row["status"], row["error"]) == (1, 200, None)
    assert row["reported_cost_ticks"] == row["cost_ticks"] == usage["cost_in_usd_ticks"]


async def test_an_error_event_answers_a_bad_create_and_the_socket_goes_on(
    sim: simulator.Simulator, meter: RunningDaemon
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{meter.base_url}/responses", headers=AUTH) as ws,
    ):
        [error] = await turn(ws, create(model="grok-nonexistent", input="hi"))
        good = await turn(ws, create(input="hi again"))
    assert (error["type"], error["status"]) == ("error", 404)
    bad_row, good_row = await meter.rows(2)
    assert (bad_row["status"], bad_row["error"], bad_row["metered"]) == (404, "http_error", 1)
    assert (bad_row["upstream_error"], bad_row["input_tokens"]) == ("not_found_error", None)
    assert bad_row["requested_model"] == "grok-nonexistent"
    assert good_row["response_id"] == good[-1]["response"]["id"]
    assert good_row["metered"] == 1


async def test_a_turn_the_upstream_cuts_is_one_unmetered_row(
    sim: simulator.Simulator, meter: RunningDaemon
) -> None:
    headers = {**AUTH, "X-Sim-Cut-After": "4"}
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{meter.base_url}/responses", headers=headers) as ws,
    ):
        await ws.send_str(create(input="this turn will be cut"))
        kinds = []
        while (msg := await ws.receive()).type is WSMsgType.TEXT:
            kinds.append(json.loads(msg.data)["type"])
    assert kinds[0] == "response.created" and len(kinds) == 4
    [row] = await meter.rows(1)
    assert (row["status"], row["metered"], row["unmetered_reason"]) == (200, 0, "incomplete")
    assert (row["error"], row["error_detail"]) == ("upstream_stream_cut", "upstream gone")
    assert (row["input_tokens"], row["cost_ticks"]) == (None, None)
    assert row["response_id"] is not None  # from response.created


async def test_an_upstream_close_code_mid_turn_reaches_the_client_and_the_row(
    sim: simulator.Simulator, meter: RunningDaemon
) -> None:
    headers = {**AUTH, "X-Sim-Cut-After": "30", "X-Sim-Close-Code": "1011"}
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{meter.base_url}/responses", headers=headers) as ws,
    ):
        first = await turn(ws, create(input="short"))  # under 30 messages: whole
        await ws.send_str(create(input="the second turn crosses the limit"))
        while (msg := await ws.receive()).type is WSMsgType.TEXT:
            pass
        assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 1011, "simulated close")
    done, cut = await meter.rows(2)
    assert done["response_id"] == first[-1]["response"]["id"] and done["metered"] == 1
    assert (cut["metered"], cut["unmetered_reason"], cut["error"]) == (
        0,
        "incomplete",
        "upstream_stream_cut",
    )
    assert (cut["upstream_error"], cut["error_detail"]) == (
        "ws_close_1011",
        "upstream closed 1011",
    )


async def test_a_client_that_closes_mid_turn_leaves_one_unmetered_row(
    sim: simulator.Simulator, meter: RunningDaemon
) -> None:
    headers = {**AUTH, "X-Sim-Stall": "body"}  # the turn stops after response.created
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"{meter.base_url}/responses", headers=headers)
        await ws.send_str(create(input="never finished"))
        assert json.loads((await ws.receive()).data)["type"] == "response.created"
        await ws.close(code=1000)
        assert ws.close_code == 1000
    [row] = await meter.rows(1)
    assert (row["status"], row["metered"], row["unmetered_reason"]) == (200, 0, "incomplete")
    assert (row["error"], row["error_detail"]) == ("client_disconnect", "client closed 1000")
    [log] = sim.state.sockets
    assert log.close_code == 1000


async def test_a_socket_closed_before_any_answer_leaves_a_no_response_row(
    sim: simulator.Simulator, meter: RunningDaemon
) -> None:
    headers = {**AUTH, "X-Sim-Cut-After": "0"}  # the upstream drops before its first event
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{meter.base_url}/responses", headers=headers) as ws,
    ):
        await ws.send_str(create(input="anyone?"))
        assert (await ws.receive()).type is not WSMsgType.TEXT
    [row] = await meter.rows(1)
    assert (row["status"], row["metered"], row["unmetered_reason"]) == (None, 0, "no_response")
    assert row["requested_model"] == "grok-4.3"


@pytest.mark.parametrize("garbage", [True, False])
async def test_a_socket_without_turns_is_one_unbilled_row(
    sim: simulator.Simulator, meter: RunningDaemon, garbage: bool
) -> None:
    """Every relayed call is one row: a session that never began a turn (bad JSON and a binary
    frame, or nothing at all) is the upgrade's row, unbilled, as a voice session's is."""
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{meter.base_url}/responses", headers=AUTH) as ws,
    ):
        if garbage:
            await ws.send_str("not json {")
            assert json.loads((await ws.receive()).data)["type"] == "error"
            await ws.send_bytes(b"\x00\xff")
            assert json.loads((await ws.receive()).data)["type"] == "error"
        await ws.close()
    await turn_row_count_is(meter, 1)
    row = (await meter.rows(2))[0]
    assert (row["transport"], row["endpoint"], row["method"], row["path"], row["status"]) == (
        "websocket",
        "responses",
        "GET",
        "/v1/responses",
        101,
    )
    assert (row["error"], row["metered"], row["unmetered_reason"]) == (None, 1, None)
    assert (row["input_tokens"], row["cost_ticks"], row["cost_source"]) == (None, None, None)
    assert len(sim.state.sockets) == 1


async def turn_row_count_is(meter: RunningDaemon, count: int) -> None:
    """The ledger holds `count` rows once everything finished is written (a chat call after
    the socket is the marker: its row comes last)."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{meter.base_url}/chat/completions",
            json={"model": "grok-4.3", "messages": [{"role": "user", "content": "marker"}]},
            headers=AUTH,
        ) as r,
    ):
        assert r.status == 200
    rows = await meter.rows(count + 1)
    assert [r["transport"] for r in rows] == ["websocket"] * count + ["http"]


async def test_a_session_with_turns_leaves_its_turns_rows_and_no_other_after_a_restart(
    sim: simulator.Simulator, start_priced: DaemonFactory, tmp_path: Any
) -> None:
    """The upgrade's record gives way to the turns: its start in the journal is ended with
    them, so a restart finds no call in flight (no ``crash`` row for the session), and each
    turn is in the journal from its start (a SIGKILL mid-turn leaves that turn a row)."""
    ledger = tmp_path / "turns.db"
    meter = await start_priced(sim.url, ledger=ledger)
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{meter.base_url}/responses", headers=AUTH) as ws,
    ):
        await turn(ws, create(input="One?"))
        await turn(ws, create(input="Two?"))
    assert len(await meter.rows(2)) == 2
    await meter.daemon.stop()
    await start_priced(sim.url, ledger=ledger)  # replays the journal as it opens the ledger
    db = open_database(ledger, readonly=True)
    try:
        rows = all_calls(db)
    finally:
        db.close()
    assert [(r["error"], r["transport"]) for r in rows] == [(None, "websocket")] * 2
