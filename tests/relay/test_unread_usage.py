"""A billable call that reached the upstream but whose usage was never read is unmetered, with
the reason, whatever ended it; a call the upstream never saw, or a non-billable one, is not.

Each ending below pins (status, error, metered, unmetered_reason) of its one ledger row."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
import sqlite_utils

from daemon import simulator
from daemon.testing import TEST_KEY, DaemonFactory, RunningDaemon, stream_cut_errors

MESSAGES: list[Any] = [{"role": "user", "content": "Say something brief."}]
AUTH = {"Authorization": f"Bearer {TEST_KEY}"}


def ending(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["status"], row["error"], row["metered"], row["unmetered_reason"])


async def sdk_call(meter: RunningDaemon, stream: bool, **headers: str) -> None:
    client = openai.AsyncOpenAI(base_url=meter.base_url, api_key=TEST_KEY, max_retries=0)
    try:
        answer = await client.chat.completions.create(
            model="grok-4-fast", messages=MESSAGES, stream=stream, extra_headers=headers
        )
        if stream:
            async for _ in answer:  # type: ignore[union-attr]
                pass
    finally:
        await client.close()


async def test_client_gone_before_the_response_headers(
    meter: RunningDaemon, sim: simulator.Simulator
) -> None:
    call = asyncio.ensure_future(sdk_call(meter, False, **{"X-Sim-Stall": "headers"}))
    async with asyncio.timeout(5):
        await sim.state.stalled.wait()  # the upstream has the request and says nothing yet
    call.cancel()  # the app hangs up
    with pytest.raises(asyncio.CancelledError):
        await call
    [row] = await meter.rows(1)
    assert ending(row) == (499, "client_disconnect", 0, "no_response")  # nginx: closed request
    assert row["input_tokens"] is None and row["requested_model"] == "grok-4-fast"
    assert (
        meter.metric("xai_meter_unmetered_total", endpoint="chat.completions", reason="no_response")
        == 1
    )


async def test_client_gone_mid_stream(meter: RunningDaemon, sim: simulator.Simulator) -> None:
    async with aiohttp.ClientSession() as http:
        resp = await http.post(
            f"{meter.base_url}/chat/completions",
            json={"model": "grok-4-fast", "messages": MESSAGES, "stream": True},
            headers={**AUTH, "X-Sim-Stall": "body"},
        )
        assert (await resp.content.readany()).startswith(b"data: ")
        resp.close()
    [row] = await meter.rows(1)
    assert ending(row) == (200, "client_disconnect", 0, "incomplete")
    sim.state.release.set()


async def test_upstream_silent_until_the_timeout(
    sim: simulator.Simulator, start_daemon: DaemonFactory
) -> None:
    meter = await start_daemon(sim.url, upstream__read_timeout=0.2)
    with pytest.raises(openai.InternalServerError):
        await sdk_call(meter, False, **{"X-Sim-Stall": "headers"})
    [row] = await meter.rows(1)
    assert ending(row) == (504, "upstream_timeout", 0, "no_response")


async def test_upstream_stalls_mid_stream_until_the_timeout(
    sim: simulator.Simulator, start_daemon: DaemonFactory
) -> None:
    meter = await start_daemon(sim.url, upstream__read_timeout=0.2)
    with pytest.raises(stream_cut_errors()):
        await sdk_call(meter, True, **{"X-Sim-Stall": "body"})
    [row] = await meter.rows(1)
    assert ending(row) == (200, "upstream_timeout", 0, "incomplete")


async def test_upstream_cuts_the_stream(meter: RunningDaemon) -> None:
    with pytest.raises(stream_cut_errors()):
        await sdk_call(meter, True, **{"X-Sim-Cut-After": "2"})
    [row] = await meter.rows(1)
    assert ending(row) == (200, "upstream_stream_cut", 0, "incomplete")


async def test_upstream_cuts_a_json_body(meter: RunningDaemon) -> None:
    with pytest.raises(openai.APIError):
        await sdk_call(meter, False, **{"X-Sim-Cut-After": "1"})
    [row] = await meter.rows(1)
    assert ending(row) == (200, "upstream_stream_cut", 0, "incomplete")


@pytest.fixture
async def hang_up_upstream() -> AsyncIterator[str]:
    """An upstream that reads the request and closes the connection without a word."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.close()
        await server.wait_closed()


async def test_upstream_hangs_up_before_answering(
    hang_up_upstream: str, start_daemon: DaemonFactory
) -> None:
    meter = await start_daemon(hang_up_upstream)
    with pytest.raises(openai.InternalServerError):
        await sdk_call(meter, False)
    [row] = await meter.rows(1)
    assert ending(row) == (502, "upstream_unreachable", 0, "no_response")


async def test_upstream_refusing_connections_saw_nothing_to_bill(
    start_daemon: DaemonFactory,
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        meter = await start_daemon(f"http://127.0.0.1:{port}")
        with pytest.raises(openai.InternalServerError):
            await sdk_call(meter, False)
    [row] = await meter.rows(1)
    assert ending(row) == (502, "upstream_unreachable", 1, None)


@pytest.mark.parametrize(("stall", "expected"), [("headers", None), ("body", 200)])
async def test_shutdown_ends_the_call(
    sim: simulator.Simulator, start_daemon: DaemonFactory, stall: str, expected: int | None
) -> None:
    meter = await start_daemon(sim.url, shutdown__grace_period=0.05)
    async with aiohttp.ClientSession() as http:
        call = asyncio.ensure_future(
            http.post(
                f"{meter.base_url}/chat/completions",
                json={"model": "grok-4-fast", "messages": MESSAGES, "stream": True},
                headers={**AUTH, "X-Sim-Stall": stall},
            )
        )
        async with asyncio.timeout(5):
            await sim.state.stalled.wait()
        await meter.daemon.stop()  # drains for the grace period, then cancels the call
        call.cancel()
        with pytest.raises((asyncio.CancelledError, aiohttp.ClientError)):
            resp = await call
            await resp.read()
    rows = list(sqlite_utils.Database(meter.ledger_path).query("select * from calls"))
    reason = "no_response" if stall == "headers" else "incomplete"
    assert [ending(r) for r in rows] == [(expected, "shutdown", 0, reason)]
    sim.state.release.set()


async def test_non_billable_call_cut_before_its_headers_stays_metered(
    meter: RunningDaemon, sim: simulator.Simulator
) -> None:
    async with aiohttp.ClientSession() as http:
        call = asyncio.ensure_future(
            http.get(
                f"{meter.base_url}/language-models", headers={**AUTH, "X-Sim-Stall": "headers"}
            )
        )
        async with asyncio.timeout(5):
            await sim.state.stalled.wait()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    [row] = await meter.rows(1)
    assert ending(row) == (499, "client_disconnect", 1, None)
