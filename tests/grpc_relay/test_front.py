"""The gRPC port's front (issue 10): HTTP/1.1 there gets one plain 400 line and one log line,
other bytes and idle connections are closed with one log line, gRPC passes through it."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
from structlog.testing import capture_logs

from daemon.sniff import H2_PREFACE, Look, first_look
from daemon.testing import RunningDaemon


def port_of(daemon: RunningDaemon) -> int:
    return int(daemon.grpc_address.rsplit(":", 1)[1])


async def exchange(port: int, data: bytes) -> bytes:
    """Send `data` on a fresh connection; everything that comes back until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(5):
            return await reader.read()
    finally:
        writer.close()


def events(logs: Sequence[Mapping[str, Any]], name: str) -> list[Mapping[str, Any]]:
    return [e for e in logs if e["event"] == name]


def test_first_look_tells_the_kinds_apart() -> None:
    assert first_look(H2_PREFACE + b"\x00\x00") is Look.H2
    assert first_look(H2_PREFACE[:10]) is Look.WAIT
    assert first_look(b"PO") is Look.WAIT
    assert first_look(b"GET / HTTP/1.1\r\n") is Look.HTTP1
    assert first_look(b"PRI * HTTP/1.1\r\n") is Look.HTTP1
    assert first_look(b"\x16\x03\x01\x00") is Look.TLS
    assert first_look(b"\x00\x01hello") is Look.OTHER


async def test_http1_on_the_grpc_port_gets_one_line_naming_the_rest_url(
    grpc_meter: RunningDaemon,
) -> None:
    with capture_logs() as logs:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"http://{grpc_meter.grpc_address}/v1/chat/completions", json={"x": 1}
            ) as response,
        ):
            text = await response.text()
    assert response.status == 400
    assert text.count("\n") == 1 and text.endswith("\n")
    assert grpc_meter.base_url in text and "gRPC (HTTP/2)" in text
    [warned] = events(logs, "http1_on_grpc_port")
    assert warned["log_level"] == "warning" and warned["rest"] == grpc_meter.base_url
    assert len(logs) == 1, logs


async def test_garbage_on_the_grpc_port_is_closed_with_one_line(
    grpc_meter: RunningDaemon,
) -> None:
    with capture_logs() as logs:
        assert await exchange(port_of(grpc_meter), b"\x00\x01\x02 not a protocol\r\n") == b""
    [warned] = events(logs, "not_grpc_on_grpc_port")
    assert warned["looks_like"] == "other"
    assert len(logs) == 1, logs


async def test_an_idle_connection_is_closed_after_the_timeout(grpc_meter: RunningDaemon) -> None:
    assert grpc_meter.daemon.grpc is not None
    front = grpc_meter.daemon.grpc._front
    front.timeout = 0.05  # read per connection
    with capture_logs() as logs:
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(grpc_meter))
        try:
            async with asyncio.timeout(5):
                assert await reader.read() == b""  # closed by the front, nothing said
        finally:
            writer.close()
    [idle] = events(logs, "grpc_port_idle")
    assert idle["seconds"] == 0.05
    assert len(logs) == 1, logs
