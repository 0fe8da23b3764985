"""The daemon as a process (uvloop, JSON log): SIGTERM drains a gRPC stream in flight, and the
wrong protocol on either port gets a clear answer and one log line, never a traceback."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlite_utils
from xai_sdk import AsyncClient
from xai_sdk.chat import user

from daemon import simulator
from daemon.sniff import PREFACE
from daemon.testing import TEST_KEY

PROMPT = "How many tokens does a metering relay count?"


def free_port() -> int:
    """A port free a moment ago (a subprocess's gRPC port cannot be 0: 0 turns it off)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def exchange(port: int, data: bytes) -> bytes:
    """Send `data` on a fresh connection; everything that comes back until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await reader.read()
    finally:
        writer.close()


async def next_event(stderr: asyncio.StreamReader, lines: list[str], name: str) -> dict[str, Any]:
    while True:
        line = (await stderr.readline()).decode()
        assert line, f"daemon exited before {name!r}"
        lines.append(line)
        event: dict[str, Any] = json.loads(line)
        if event.get("event") == name:
            return event


@pytest.mark.slow
async def test_sigterm_drains_grpc_and_bad_protocols_get_one_line(
    sim: simulator.Simulator, grpc_sim: simulator.GrpcSimulator, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.db"
    grpc_port = free_port()
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[relay]\nport = 0\n[admin]\nport = 0\n[upstream]\nbase_url = "{sim.url}"\n'
        f'[grpc]\nport = {grpc_port}\nupstream = "{grpc_sim.url}"\n'
        f'[ledger]\npath = "{ledger}"\n[shutdown]\ngrace_period = 5\n[log]\nformat = "json"\n'
        f"[pricing]\nrefresh = false\n"
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
    lines: list[str] = []
    try:
        async with asyncio.timeout(30):
            listening = await next_event(proc.stderr, lines, "listening")
            relay_port = int(listening["relay"].rsplit(":", 1)[1].split("/")[0])
            assert listening["grpc"] == f"127.0.0.1:{grpc_port}"

            # HTTP/2 with prior knowledge to the HTTP port: one readable HTTP/1.1 line
            answer = await exchange(relay_port, PREFACE + b"\r\n\r\nSM\r\n\r\n")
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 400 Bad Request")
            assert body.decode().count("\n") == 1 and f"127.0.0.1:{grpc_port}" in body.decode()
            warned = await next_event(proc.stderr, lines, "http2_on_http_port")
            assert warned["level"] == "warning"
            # xai-sdk pointed at the HTTP port: grpc says what it met
            wrong = AsyncClient(
                api_key=TEST_KEY,
                api_host=f"127.0.0.1:{relay_port}",
                use_insecure_channel=True,
                channel_options=[("grpc.enable_retries", 0)],
            )
            chat = wrong.chat.create(model="grok-4.3")
            chat.append(user(PROMPT))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await chat.sample()
            assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
            assert "http1.x server" in (caught.value.details() or "")
            await next_event(proc.stderr, lines, "http2_on_http_port")

            # HTTP/1.1 to the gRPC port (uvloop's transports under the front): one plain line
            # naming the HTTP relay, and one log line
            answer = await exchange(
                grpc_port, b"POST /xai_api.Chat/GetCompletion HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 400 Bad Request")
            assert body.decode().count("\n") == 1
            assert f"http://127.0.0.1:{relay_port}/v1" in body.decode()
            warned = await next_event(proc.stderr, lines, "http1_on_grpc_port")
            assert warned["level"] == "warning"
            assert warned["rest"] == f"http://127.0.0.1:{relay_port}/v1"
            # TLS to the plaintext gRPC port: closed, one line
            assert await exchange(grpc_port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03") == b""
            warned = await next_event(proc.stderr, lines, "not_grpc_on_grpc_port")
            assert warned["looks_like"] == "tls"

            # a stream in flight when SIGTERM comes finishes within the grace period
            sdk = AsyncClient(
                api_key=TEST_KEY,
                api_host=f"127.0.0.1:{grpc_port}",
                use_insecure_channel=True,
                metadata=(("x-sim-stall", "body"),),
            )
            chat = sdk.chat.create(model="grok-4.3")
            chat.append(user(PROMPT))
            stream = chat.stream().__aiter__()
            await stream.__anext__()  # the first chunk came; the rest stalls
            proc.send_signal(signal.SIGTERM)
            await next_event(proc.stderr, lines, "draining")
            grpc_sim.state.release.set()
            rest = [response async for response, _chunk in stream]
            assert rest[-1].usage.prompt_tokens == 15
            lines += (await proc.stderr.read()).decode().splitlines(keepends=True)
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    for line in lines:  # every line is one JSON object; no traceback anywhere
        json.loads(line)
    assert "Traceback" not in "".join(lines)
    assert sum('"http2_on_http_port"' in line for line in lines) == 2
    assert sum('"http1_on_grpc_port"' in line for line in lines) == 1
    assert sum('"not_grpc_on_grpc_port"' in line for line in lines) == 1
    rows = list(sqlite_utils.Database(ledger).query("select * from calls"))
    assert [(r["transport"], r["path"], r["status"], r["error"], r["metered"]) for r in rows] == [
        ("grpc", "/xai_api.Chat/GetCompletionChunk", 200, None, 1)
    ]
    assert rows[0]["input_tokens"] == 15


@pytest.mark.slow
async def test_a_busy_grpc_port_is_one_plain_line_and_no_grpc_chatter(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if k != "GRPC_VERBOSITY"}
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "daemon", "serve", "--port", "0", "--admin-port", "0"),
            *("--grpc-port", str(port), "--ledger", str(tmp_path / "l.db")),
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        _, err = await proc.communicate()
    assert proc.returncode == 2
    *logged, last = err.decode().strip().splitlines()
    for line in logged:  # grpc core's own "E... add_port.cc" line would not be JSON
        json.loads(line)
    assert last.startswith("xai-meter: config error: grpc.host") and "--grpc-port N" in last
