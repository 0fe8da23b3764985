"""A daemon that stops with sockets open: each socket is closed with 1001 both ways (a Responses
turn in flight may finish first, within the grace period), and every row it owns is written."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlite_utils
from aiohttp import WSMsgType

from daemon import simulator
from daemon.testing import TEST_KEY, DaemonFactory, RunningDaemon

AUTH = {"Authorization": f"Bearer {TEST_KEY}"}
CREATE = json.dumps({"type": "response.create", "model": "grok-4.3", "input": "a long answer"})
SHUTDOWN = (WSMsgType.CLOSE, 1001, "xai-meter is shutting down")


async def next_event(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await ws.receive()
    assert msg.type is WSMsgType.TEXT, msg
    event: dict[str, Any] = json.loads(msg.data)
    return event


async def closed_with(ws: aiohttp.ClientWebSocketResponse) -> tuple[WSMsgType, int, str]:
    """Read past any messages to the close frame; its (type, code, reason)."""
    while (msg := await ws.receive()).type is WSMsgType.TEXT:
        pass
    return msg.type, msg.data, msg.extra


async def test_an_idle_socket_is_closed_going_away_both_ways(
    sim: simulator.Simulator, meter: RunningDaemon
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{meter.base_url}/responses", headers=AUTH) as ws,
    ):
        await ws.send_str(CREATE)
        while (await next_event(ws))["type"] != "response.completed":
            pass
        stopping = asyncio.create_task(meter.daemon.stop())
        assert await closed_with(ws) == SHUTDOWN
        await stopping
    [log] = sim.state.sockets
    assert (log.close_code, log.close_reason) == (1001, "xai-meter is shutting down")
    [row] = await meter.rows(1)
    assert (row["metered"], row["error"]) == (1, None)


async def test_a_turn_in_flight_finishes_before_its_socket_closes(
    sim: simulator.Simulator, meter: RunningDaemon
) -> None:
    headers = {**AUTH, "X-Sim-Stall": "body"}
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{meter.base_url}/responses", headers=headers) as ws,
    ):
        await ws.send_str(CREATE)
        assert (await next_event(ws))["type"] == "response.created"
        stopping = asyncio.create_task(meter.daemon.stop())
        async with asyncio.timeout(5):  # the drain began, and waits for the turn
            await meter.daemon.relay.sockets.draining.wait()
        sim.state.release.set()
        kinds = []
        while (msg := await ws.receive()).type is WSMsgType.TEXT:
            kinds.append(json.loads(msg.data)["type"])
        assert kinds[-1] == "response.completed"
        assert (msg.type, msg.data, msg.extra) == SHUTDOWN
        await stopping
    [row] = await meter.rows(1)
    assert (row["metered"], row["error"], row["status"]) == (1, None, 200)
    assert row["cost_ticks"] is not None


async def test_the_grace_period_cuts_a_turn_that_does_not_finish(
    sim: simulator.Simulator, start_daemon: DaemonFactory
) -> None:
    meter = await start_daemon(sim.url, shutdown__grace_period=0.3)
    headers = {**AUTH, "X-Sim-Stall": "body"}
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{meter.base_url}/responses", headers=headers) as ws,
    ):
        await ws.send_str(CREATE)
        assert (await next_event(ws))["type"] == "response.created"
        stopping = asyncio.create_task(meter.daemon.stop())
        assert await closed_with(ws) == SHUTDOWN
        await stopping
    sim.state.release.set()
    [row] = await meter.rows(1)
    assert (row["metered"], row["unmetered_reason"], row["error"]) == (0, "incomplete", "shutdown")


async def test_a_voice_session_at_shutdown_is_one_row_billed_for_its_audio(
    sim: simulator.Simulator, meter: RunningDaemon
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{meter.base_url}/realtime", headers=AUTH) as ws,
    ):
        assert (await next_event(ws))["type"] == "conversation.created"
        audio = base64.b64encode(b"\x00" * 96_000).decode()  # 2 s at 24 kHz
        await ws.send_str(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
        await sim.state.wait_for_socket_messages(1)
        stopping = asyncio.create_task(meter.daemon.stop())
        assert await closed_with(ws) == SHUTDOWN
        await stopping
    [row] = await meter.rows(1)
    assert (row["endpoint"], row["error"], row["metered"], row["audio_seconds"]) == (
        "realtime",
        "shutdown",
        1,
        2.0,
    )
    assert row["cost_ticks"] == 800_000_000 * 2 // 60


async def test_no_socket_is_accepted_once_draining(
    sim: simulator.Simulator, meter: RunningDaemon
) -> None:
    meter.daemon.relay.drain(2.0)
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(f"{meter.base_url}/realtime", headers=AUTH)
    assert refused.value.status == 503
    assert sim.state.sockets == []


@pytest.mark.slow
async def test_sigterm_with_a_socket_open_leaves_one_row(
    sim: simulator.Simulator, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.db"
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[relay]\nport = 0\n[admin]\nport = 0\n[upstream]\nbase_url = "{sim.url}"\n'
        f'[ledger]\npath = "{ledger}"\n[shutdown]\ngrace_period = 2\n'
        f'[log]\nformat = "json"\n'
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "daemon",
        "serve",
        "--config",
        str(cfg),
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(20):
            while True:
                line = await proc.stderr.readline()
                assert line, "daemon exited before listening"
                event = json.loads(line)
                if event.get("event") == "listening":
                    relay = event["relay"]
                    break
            async with (
                aiohttp.ClientSession() as http,
                http.ws_connect(f"{relay}/stt?sample_rate=16000", headers=AUTH) as ws,
            ):
                await ws.send_bytes(b"\x00" * 48_000)  # 1.5 s of 16-bit audio at 16 kHz
                await sim.state.wait_for_socket_messages(1)
                proc.send_signal(signal.SIGTERM)
                assert await closed_with(ws) == SHUTDOWN
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    rows = list(sqlite_utils.Database(ledger).query("select * from calls"))
    assert len(rows) == 1
    row = rows[0]
    assert (row["endpoint"], row["transport"], row["error"], row["audio_seconds"]) == (
        "stt",
        "websocket",
        "shutdown",
        1.5,
    )
    assert row["cost_ticks"] == 2_000_000_000 * 3 // 2 // 3600
