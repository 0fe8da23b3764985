"""Whatever goes wrong, every call is exactly one ledger row that says what happened."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import sqlite_utils
from structlog.testing import capture_logs

from daemon import simulator
from daemon.dialects.sse import EventTap
from daemon.testing import TEST_KEY, DaemonFactory, RunningDaemon

CHAT = {"model": "grok-3", "messages": [{"role": "user", "content": "hello there"}]}
STREAM = {**CHAT, "stream": True}
AUTH = {"Authorization": f"Bearer {TEST_KEY}"}


async def post(meter: RunningDaemon, body: dict[str, Any], **headers: str) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{meter.base_url}/chat/completions", json=body, headers={**AUTH, **headers}
        ) as r,
    ):
        return r.status, await r.read()


@pytest.mark.parametrize("status", [400, 401, 404, 422, 429, 500, 503])
async def test_upstream_error_is_relayed_and_recorded(meter: RunningDaemon, status: int) -> None:
    got, body = await post(meter, CHAT, **{"X-Sim-Status": str(status)})
    assert got == status and "error" in json.loads(body)
    [row] = await meter.rows(1)
    assert (row["status"], row["error"], row["metered"]) == (status, "http_error", 1)
    assert row["input_tokens"] is None
    assert (
        meter.metric(
            "xai_meter_requests_total",
            provider="xai",
            endpoint="chat.completions",
            model="grok-3",
            code=str(status),
        )
        == 1
    )


async def test_openai_sdk_sees_the_upstream_error(meter: RunningDaemon) -> None:
    client = openai.AsyncOpenAI(base_url=meter.base_url, api_key="invalid-key", max_retries=0)
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model="grok-3", messages=CHAT["messages"])
    [row] = await meter.rows(1)
    assert row["status"] == 400 and row["error"] == "http_error"
    await client.close()


async def test_sdk_retries_are_each_one_row(meter: RunningDaemon) -> None:
    client = openai.AsyncOpenAI(base_url=meter.base_url, api_key=TEST_KEY, max_retries=2)
    with pytest.raises(openai.RateLimitError):
        await client.with_options(timeout=5).chat.completions.create(
            model="grok-3", messages=CHAT["messages"], extra_headers={"X-Sim-Status": "429"}
        )
    rows = await meter.rows(3)
    assert [r["status"] for r in rows] == [429, 429, 429]
    await client.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_upstream_gives_502(start_daemon: DaemonFactory) -> None:
    meter = await start_daemon(f"http://127.0.0.1:{free_port()}")
    status, body = await post(meter, CHAT)
    assert status == 502 and json.loads(body)["code"] == "upstream_unreachable"
    [row] = await meter.rows(1)
    assert (row["status"], row["error"]) == (502, "upstream_unreachable")


async def test_silent_upstream_gives_504(
    sim: simulator.Simulator, start_daemon: DaemonFactory
) -> None:
    meter = await start_daemon(sim.url, upstream__read_timeout=0.2)
    status, body = await post(meter, CHAT, **{"X-Sim-Stall": "headers"})
    assert status == 504 and json.loads(body)["code"] == "upstream_timeout"
    [row] = await meter.rows(1)
    assert (row["status"], row["error"]) == (504, "upstream_timeout")


async def test_stream_cut_by_upstream(meter: RunningDaemon) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{meter.base_url}/chat/completions",
            json=STREAM,
            headers={**AUTH, "X-Sim-Cut-After": "2"},
        ) as resp,
    ):
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()  # the client sees the cut, as it would from the upstream
    [row] = await meter.rows(1)
    assert (row["status"], row["error"], row["metered"], row["unmetered_reason"]) == (
        200,
        "upstream_stream_cut",
        0,
        "incomplete",
    )
    assert row["model"] == "grok-3"
    assert (
        meter.metric("xai_meter_unmetered_total", endpoint="chat.completions", reason="incomplete")
        == 1
    )


async def test_client_disconnect_mid_stream(meter: RunningDaemon, sim: simulator.Simulator) -> None:
    async with aiohttp.ClientSession() as http:
        resp = await http.post(
            f"{meter.base_url}/chat/completions",
            json=STREAM,
            headers={**AUTH, "X-Sim-Stall": "body"},
        )
        assert resp.status == 200
        first = await resp.content.readany()
        assert first.startswith(b"data: ")
        resp.close()  # hang up while the upstream is still streaming
    [row] = await meter.rows(1)
    assert (row["status"], row["error"], row["stream"]) == (200, "client_disconnect", 1)
    assert row["unmetered_reason"] == "incomplete"
    sim.state.release.set()


async def test_malformed_upstream_body_is_relayed_as_is(
    meter: RunningDaemon, sim: simulator.Simulator
) -> None:
    status, body = await post(meter, CHAT, **{"X-Sim-Malformed": "1"})
    assert status == 200 and body == sim.state.sent[-1]
    [row] = await meter.rows(1)
    assert (row["metered"], row["unmetered_reason"], row["error"]) == (0, "malformed", None)
    assert (
        meter.metric("xai_meter_unmetered_total", endpoint="chat.completions", reason="malformed")
        == 1
    )


async def test_metering_crash_never_breaks_the_relay(
    meter: RunningDaemon, sim: simulator.Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(self: EventTap, event: bytes) -> bool:
        raise RuntimeError("parser bug")

    monkeypatch.setattr("daemon.dialects.chat.ChatStream.on_event", explode)
    status, body = await post(meter, {**STREAM, "stream_options": {"include_usage": True}})
    assert status == 200 and body == sim.state.sent[-1]
    [row] = await meter.rows(1)
    assert (row["metered"], row["unmetered_reason"]) == (0, "parser_error")


async def test_failing_sink_is_skipped_and_counted(meter: RunningDaemon) -> None:
    from daemon.meter import Sink

    def broken(record: Any) -> None:
        raise ValueError("sink bug")

    meter.daemon.meter.sinks = (Sink("broken", broken), *meter.daemon.meter.sinks)
    status, _ = await post(meter, CHAT)
    assert status == 200
    [row] = await meter.rows(1)  # later sinks still ran
    assert row["metered"] == 1
    assert meter.metric("xai_meter_sink_errors_total", sink="broken") == 1


async def test_api_key_is_never_logged_or_stored(meter: RunningDaemon) -> None:
    with capture_logs() as logs:
        await post(meter, CHAT)
        await post(meter, CHAT, **{"X-Sim-Status": "400"})
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{meter.base_url}/chat/completions", json=CHAT, headers={"x-api-key": TEST_KEY}
            ) as r,
        ):
            await r.read()
        await meter.rows(3)
    assert any(entry.get("event") == "call" for entry in logs)
    assert TEST_KEY not in repr(logs)
    await meter.daemon.stop()
    for path in Path(meter.daemon.settings.ledger.path).parent.rglob("*"):  # the journal too
        assert path.is_dir() or TEST_KEY.encode() not in path.read_bytes(), path


@pytest.mark.slow
async def test_sigterm_during_a_stream_drains_and_records(
    sim: simulator.Simulator, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.db"
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f"[relay]\nport = 0\n[admin]\nport = 0\n[grpc]\nport = 0\n"
        f'[upstream]\nbase_url = "{sim.url}"\n'
        f'[ledger]\npath = "{ledger}"\n[shutdown]\ngrace_period = 0.3\n'
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
            async with aiohttp.ClientSession() as http:
                resp = await http.post(
                    f"{relay}/chat/completions",
                    json=STREAM,
                    headers={**AUTH, "X-Sim-Stall": "body"},
                )
                assert (await resp.content.readany()).startswith(b"data: ")
                proc.send_signal(signal.SIGTERM)
                assert await proc.wait() == 0
                resp.close()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    sim.state.release.set()
    rows = list(sqlite_utils.Database(ledger).query("select * from calls"))
    assert len(rows) == 1
    assert (rows[0]["status"], rows[0]["error"], rows[0]["stream"]) == (200, "shutdown", 1)
