"""The relay port's limits, over real sockets: header, body and idle timeouts, the connection
cap, the body bytes held at once, the per-call body limit, and a full upstream pool. Each limit
gives a typed answer where one can still be given, is counted, and a call it refused is one row.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from yarl import URL

from daemon import simulator
from daemon.app import MAX_REQUEST_BYTES, Daemon
from daemon.config import ConfigError
from daemon.connections import DERIVED_MAX, FD_RESERVE, REFUSING_MAX, connection_cap
from daemon.tasks import spawn
from daemon.testing import TEST_KEY, DaemonFactory, RunningDaemon, make_settings

AUTH = {"Authorization": f"Bearer {TEST_KEY}"}
MESSAGES = [{"role": "user", "content": "hello there"}]


def chat_body(size: int) -> bytes:
    """A chat completion request of exactly `size` bytes (its message padded)."""
    bare = json.dumps({"model": "grok-3", "messages": [{"role": "user", "content": ""}]})
    return json.dumps(
        {"model": "grok-3", "messages": [{"role": "user", "content": "x" * (size - len(bare))}]}
    ).encode()


def head(
    path: str = "/v1/chat/completions", length: int | None = None, method: str = "POST"
) -> bytes:
    """A request's line and headers (and the blank line), with our test key."""
    lines = [f"{method} {path} HTTP/1.1", "Host: relay", f"Authorization: Bearer {TEST_KEY}"]
    if length is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {length}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def connect(meter: RunningDaemon) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    url = URL(meter.url)
    assert url.host is not None and url.port is not None
    return await asyncio.open_connection(url.host, url.port)


async def until_closed(reader: asyncio.StreamReader, within: float = 5.0) -> bytes:
    """Everything the relay writes until it closes the connection (bounded)."""
    async with asyncio.timeout(within):
        return await reader.read()


async def one_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One whole HTTP/1.1 answer (Content-Length framed): status, headers, body."""
    async with asyncio.timeout(5):
        raw = await reader.readuntil(b"\r\n\r\n")
        status, headers = parse_head(raw)
        body = await reader.readexactly(int(headers["content-length"]))
    return status, headers, body


def parse_head(raw: bytes) -> tuple[int, dict[str, str]]:
    first, *rest = raw.decode().split("\r\n")
    headers = {k.lower(): v for k, _, v in (h.partition(": ") for h in rest if h)}
    return int(first.split()[1]), headers


def split_answer(raw: bytes) -> tuple[int, dict[str, str], Any]:
    """An answer read to the connection's close: status, headers, JSON body."""
    top, _, body = raw.partition(b"\r\n\r\n")
    status, headers = parse_head(top + b"\r\n\r\n")
    return status, headers, json.loads(body)


async def until(condition: Any, within: float = 5.0) -> None:
    """Poll a condition the daemon reaches on its own, with no event to await (bounded)."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110  # a gauge has no event to wait on
            await asyncio.sleep(0.005)


def rejected(meter: RunningDaemon, reason: str) -> float | None:
    return meter.metric("xai_meter_relay_rejected_total", reason=reason)


def gauge(meter: RunningDaemon, name: str) -> float | None:
    return meter.metric(name)


# --- relay.header_timeout ------------------------------------------------------------------


async def test_slowloris_headers_are_cut_at_header_timeout(
    sim: simulator.Simulator, start_daemon: DaemonFactory
) -> None:
    meter = await start_daemon(sim.url, relay__header_timeout=0.3)
    reader, writer = await connect(meter)
    loop = asyncio.get_running_loop()
    started = loop.time()
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: relay\r\nX-Slow: ")

    async def drip() -> None:  # one header byte every 50 ms, as a slowloris client does
        for _ in range(100):
            await asyncio.sleep(0.05)
            if writer.is_closing() or reader.at_eof():
                return
            writer.write(b"a")

    dripping = spawn(drip())
    raw = await until_closed(reader)
    took = loop.time() - started
    dripping.cancel()
    writer.close()
    status, headers, body = split_answer(raw)
    assert (status, headers["connection"], body["code"]) == (408, "close", "header_timeout")
    assert body["error"] == (
        "The request headers did not arrive within relay.header_timeout = 0.3 s."
    )
    assert 0.3 <= took < 2.0
    assert rejected(meter, "header_timeout") == 1
    await until(lambda: gauge(meter, "xai_meter_relay_connections") == 0)
    assert sim.state.requests == [] and await meter.rows(0) == []  # no request: no call


async def test_a_silent_connection_is_closed_at_header_timeout_without_an_answer(
    sim: simulator.Simulator, start_daemon: DaemonFactory
) -> None:
    meter = await start_daemon(sim.url, relay__header_timeout=0.2)
    reader, writer = await connect(meter)
    assert await until_closed(reader) == b""  # a pre-opened connection is not told 408
    writer.close()
    assert rejected(meter, "header_timeout") == 1
    await until(lambda: gauge(meter, "xai_meter_relay_connections") == 0)


async def test_headers_in_time_are_not_cut_later(
    sim: simulator.Simulator, start_daemon: DaemonFactory
) -> None:
    """The header timer is the first request's: a call that outlives it is untouched."""
    meter = await start_daemon(sim.url, relay__header_timeout=0.1)
    async with aiohttp.ClientSession() as http:
        task = spawn(
            http.post(
                f"{meter.base_url}/chat/completions",
                json={"model": "grok-3", "messages": MESSAGES},
                headers={**AUTH, "X-Sim-Stall": "headers"},
            )
        )
        await sim.state.stalled.wait()
        await asyncio.sleep(0.2)  # past the header timeout, on purpose: nothing may happen
        sim.state.release.set()
        async with await task as answer:
            assert answer.status == 200
            await answer.read()
    assert rejected(meter, "header_timeout") is None
    [row] = await meter.rows(1)
    assert (row["status"], row["error"]) == (200, None)


# --- relay.body_timeout ---------------------------------------------------------------------


async def test_a_slow_body_is_cut_at_body_timeout_and_recorded(
    sim: simulator.Simulator, start_daemon: DaemonFactory
) -> None:
    meter = await start_daemon(sim.url, relay__body_timeout=0.3)
    reader, writer = await connect(meter)
    loop = asyncio.get_running_loop()
    writer.write(head(length=100) + b'{"model": ')  # 10 of 100 bytes, then nothing
    started = loop.time()
    status, headers, raw = await one_answer(reader)
    took = loop.time() - started
    writer.close()
    body = json.loads(raw)
    assert (status, headers["connection"], body["code"]) == (408, "close", "body_timeout")
    assert body["error"] == (
        "The request body did not arrive within relay.body_timeout = 0.3 s (10 of 100 bytes came)."
    )
    assert 0.3 <= took < 2.0
    [row] = await meter.rows(1)
    assert (row["status"], row["error"], row["error_detail"]) == (
        408,
        "body_timeout",
        "10 of 100 bytes in 0.3 s",
    )
    assert (row["metered"], row["unmetered_reason"], row["endpoint"]) == (
        1,
        None,
        "chat.completions",
    )
    assert row["key_id"] is not None
    assert sim.state.requests == []  # never sent upstream
    assert rejected(meter, "body_timeout") == 1
    errors = meter.metric(
        "xai_meter_call_errors_total",
        provider="xai",
        endpoint="chat.completions",
        error="body_timeout",
    )
    assert errors == 1
    assert gauge(meter, "xai_meter_relay_body_bytes_in_flight") == 0


# --- relay.idle_timeout ---------------------------------------------------------------------


async def test_an_idle_keep_alive_connection_is_closed_at_idle_timeout(
    sim: simulator.Simulator, start_daemon: DaemonFactory
) -> None:
    meter = await start_daemon(sim.url, relay__idle_timeout=0.3)
    reader, writer = await connect(meter)
    writer.write(head("/nowhere", method="GET"))
    status, headers, _ = await one_answer(reader)
    assert (status, headers.get("connection", "keep-alive").lower()) == (404, "keep-alive")
    loop = asyncio.get_running_loop()
    answered = loop.time()
    assert await until_closed(reader) == b""
    took = loop.time() - answered
    writer.close()
    assert 0.25 <= took < 2.0
    await until(lambda: gauge(meter, "xai_meter_relay_connections") == 0)


# --- relay.max_connections ------------------------------------------------------------------


async def test_past_max_connections_a_connection_gets_503_and_metrics_still_answer(
    sim: simulator.Simulator, start_daemon: DaemonFactory
) -> None:
    meter = await start_daemon(sim.url, relay__max_connections=3)
    assert gauge(meter, "xai_meter_relay_max_connections") == 3
    kept_alive = await connect(meter)  # one handed to aiohttp, two that said nothing yet
    kept_alive[1].write(head("/nowhere", method="GET"))
    assert (await one_answer(kept_alive[0]))[0] == 404
    silent = [await connect(meter) for _ in range(2)]
    await until(lambda: gauge(meter, "xai_meter_relay_connections") == 3)

    reader, writer = await connect(meter)
    writer.write(head(length=2) + b"{}")
    status, headers, body = split_answer(await until_closed(reader))
    writer.close()
    assert (status, headers["retry-after"], headers["connection"]) == (503, "1", "close")
    assert body == {
        "code": "too_many_connections",
        "error": "xai-meter has relay.max_connections = 3 client connections open; retry "
        "shortly, or reuse connections (keep-alive).",
        "source": "xai-meter",
    }
    assert rejected(meter, "too_many_connections") == 1

    async with aiohttp.ClientSession() as http, http.get(f"{meter.admin_url}/metrics") as r:
        assert r.status == 200
        scraped = await r.text()
    assert "xai_meter_relay_connections 3.0" in scraped
    assert 'xai_meter_relay_rejected_total{reason="too_many_connections"} 1.0' in scraped

    kept_alive[1].close()  # a slot frees (aiohttp's connection)
    await until(lambda: gauge(meter, "xai_meter_relay_connections") == 2)
    silent[0][1].close()  # and one the sniffer held
    await until(lambda: gauge(meter, "xai_meter_relay_connections") == 1)
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http,
        http.post(
            f"{meter.base_url}/chat/completions",
            json={"model": "grok-3", "messages": MESSAGES},
            headers=AUTH,
        ) as r,
    ):
        assert r.status == 200
        await r.read()
    [row] = await meter.rows(1)  # the refused connection made no row; the call after, one
    assert (row["status"], row["error"]) == (200, None)
    silent[1][1].close()
    await until(lambda: gauge(meter, "xai_meter_relay_connections") == 0)


async def test_past_the_refusals_being_answered_a_connection_is_closed_at_accept(
    sim: simulator.Simulator, start_daemon: DaemonFactory
) -> None:
    meter = await start_daemon(sim.url, relay__max_connections=1)
    held = await connect(meter)
    refusing = [await connect(meter) for _ in range(REFUSING_MAX)]  # each waits for its 503
    await until(lambda: rejected(meter, "too_many_connections") == REFUSING_MAX)
    reader, writer = await connect(meter)
    assert await until_closed(reader, within=2.0) == b""  # no answer, no descriptor held
    writer.close()
    assert rejected(meter, "too_many_connections") == REFUSING_MAX + 1
    refusing[0][1].write(head("/nowhere", method="GET"))  # the ones held still get theirs
    assert split_answer(await until_closed(refusing[0][0]))[0] == 503
    for _, w in [held, *refusing]:
        w.close()
    await until(lambda: gauge(meter, "xai_meter_relay_connections") == 0)


async def test_an_open_websocket_counts_twice_against_max_connections(
    sim: simulator.Simulator, start_daemon: DaemonFactory
) -> None:
    """A socket's upstream connection is its own (outside the pool's reserve): two descriptors."""
    meter = await start_daemon(sim.url, relay__max_connections=3)
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"{meter.base_url}/responses", headers=AUTH)
        assert gauge(meter, "xai_meter_relay_connections") == 1  # client connections only
        second = await connect(meter)  # 1 + 1 (the socket's upstream) + 1: the cap
        await until(lambda: gauge(meter, "xai_meter_relay_connections") == 2)
        reader, writer = await connect(meter)
        writer.write(head("/nowhere", method="GET"))
        assert split_answer(await until_closed(reader))[0] == 503
        writer.close()
        await ws.close()
        await until(lambda: gauge(meter, "xai_meter_relay_connections") == 1)
        reader, writer = await connect(meter)  # the socket's two slots are free again
        writer.write(head("/nowhere", method="GET"))
        assert (await one_answer(reader))[0] == 404
        writer.close()
        second[1].close()
    assert rejected(meter, "too_many_connections") == 1


def test_max_connections_is_derived_from_the_file_limit() -> None:
    assert connection_cap(0, 256, file_limit=1024) == 1024 - FD_RESERVE - 256
    assert connection_cap(0, 100, file_limit=1 << 20) == DERIVED_MAX
    assert connection_cap(500, 256, file_limit=1024) == 500


def test_max_connections_over_the_file_limit_stops_the_start() -> None:
    with pytest.raises(ConfigError) as too_many:
        connection_cap(600, 256, file_limit=1024)
    assert str(too_many.value) == (
        "relay.max_connections = 600, but the open-file limit (ulimit -n) is 1024, and 512 of "
        "it are kept for the upstream pool (upstream.max_connections = 256), the ledger and the "
        "admin listener: at most 512 fit. Fix: raise the limit (ulimit -n 1112, or "
        "LimitNOFILE= in a systemd unit), or set relay.max_connections to 512 or less (0 "
        "derives it from the limit)."
    )
    with pytest.raises(ConfigError, match=r"^relay.max_connections: the open-file limit"):
        connection_cap(0, 256, file_limit=400)


def test_a_daemon_configured_past_the_file_limit_does_not_start(tmp_path: Any) -> None:
    settings = make_settings(tmp_path, "http://127.0.0.1:9", relay__max_connections=1_000_000)
    with pytest.raises(ConfigError, match=r"^relay.max_connections = 1000000, but the open-file"):
        Daemon(settings)


# --- relay.max_body_bytes_in_flight and the per-call limit --------------------------------


async def test_a_body_past_the_bytes_in_flight_gets_503_and_a_row(
    sim: simulator.Simulator, start_daemon: DaemonFactory
) -> None:
    meter = await start_daemon(sim.url, relay__max_body_bytes_in_flight=100_000)
    first = chat_body(80_000)
    reader, writer = await connect(meter)
    writer.write(head(length=len(first)) + first[:1000])  # held: its Content-Length
    await until(lambda: gauge(meter, "xai_meter_relay_body_bytes_in_flight") == 80_000)

    second = chat_body(30_000)
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{meter.base_url}/chat/completions",
            data=second,
            headers={**AUTH, "Content-Type": "application/json"},
        ) as r,
    ):
        assert (r.status, r.headers["Retry-After"]) == (503, "1")
        body = await r.json()
    assert body["code"] == "body_bytes_exhausted"
    assert body["error"] == (
        "xai-meter holds 80000 bytes of request bodies now and may hold 100000 "
        "(relay.max_body_bytes_in_flight); this one (30000 bytes) does not fit. Retry shortly."
    )
    [refused] = await meter.rows(1)
    assert (refused["status"], refused["error"], refused["error_detail"]) == (
        503,
        "body_bytes_exhausted",
        "30000 bytes; 80000 of 100000 held",
    )
    assert refused["metered"] == 1

    writer.write(first[1000:])  # the first body completes: relayed as ever
    status, _, answer = await one_answer(reader)
    writer.close()
    assert status == 200 and json.loads(answer)["model"] == "grok-3"
    rows = await meter.rows(2)
    assert sorted((r["status"], r["error"]) for r in rows) == [
        (200, None),
        (503, "body_bytes_exhausted"),
    ]
    assert len(sim.state.requests) == 1 and sim.state.requests[0].body == first
    assert rejected(meter, "body_bytes_exhausted") == 1
    await until(lambda: gauge(meter, "xai_meter_relay_body_bytes_in_flight") == 0)


async def test_a_content_length_over_the_per_call_limit_gets_413_before_any_body(
    sim: simulator.Simulator, start_daemon: DaemonFactory
) -> None:
    meter = await start_daemon(sim.url, relay__max_body_bytes_in_flight=1 << 30)
    reader, writer = await connect(meter)
    writer.write(head(length=MAX_REQUEST_BYTES + 1))  # and no body at all
    status, headers, body = await one_answer(reader)
    writer.close()
    assert (status, headers["connection"]) == (413, "close")
    assert json.loads(body) == {
        "code": "request_too_large",
        "error": "The request body is larger than xai-meter relays (104857600 bytes; "
        "relay.max_body_bytes_in_flight and the per-call limit of 100 MiB).",
        "source": "xai-meter",
    }
    [row] = await meter.rows(1)
    assert (row["status"], row["error"], row["error_detail"], row["metered"]) == (
        413,
        "request_too_large",
        "Content-Length 104857601; the limit is 104857600",
        1,
    )
    assert sim.state.requests == []
    assert rejected(meter, "request_too_large") == 1


async def test_a_body_over_the_bytes_in_flight_alone_gets_413(
    sim: simulator.Simulator, start_daemon: DaemonFactory
) -> None:
    """A body the budget could never hold is too large, not a reason to retry."""
    meter = await start_daemon(sim.url, relay__max_body_bytes_in_flight=10_000)
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{meter.base_url}/chat/completions",
            data=chat_body(20_000),
            headers={**AUTH, "Content-Type": "application/json"},
        ) as r,
    ):
        assert r.status == 413  # read in full by the client: aiohttp drained the body
        assert (await r.json())["code"] == "request_too_large"
    [row] = await meter.rows(1)
    assert (row["status"], row["error"], row["error_detail"]) == (
        413,
        "request_too_large",
        "Content-Length 20000; the limit is 10000",
    )


async def test_a_chunked_body_over_the_limit_gets_413_as_it_passes_it(
    sim: simulator.Simulator, start_daemon: DaemonFactory
) -> None:
    meter = await start_daemon(sim.url, relay__max_body_bytes_in_flight=10_000)
    reader, writer = await connect(meter)
    lines = head().replace(b"\r\n\r\n", b"\r\nTransfer-Encoding: chunked\r\n\r\n")
    writer.write(lines + b"%x\r\n" % 10_001 + b"x" * 10_001 + b"\r\n")  # no last chunk yet
    status, _, body = await one_answer(reader)
    writer.close()
    assert (status, json.loads(body)["code"]) == (413, "request_too_large")
    [row] = await meter.rows(1)
    assert (row["status"], row["error"], row["error_detail"]) == (
        413,
        "request_too_large",
        "10001 bytes read; the limit is 10000",
    )
    assert gauge(meter, "xai_meter_relay_body_bytes_in_flight") == 0


# --- upstream pool exhausted ------------------------------------------------------------------


async def test_a_full_upstream_pool_gives_503_not_504(
    sim: simulator.Simulator, start_daemon: DaemonFactory
) -> None:
    meter = await start_daemon(sim.url, upstream__max_connections=1, upstream__connect_timeout=0.3)
    async with aiohttp.ClientSession() as http:
        holding = spawn(  # takes the pool's one connection and keeps it
            http.post(
                f"{meter.base_url}/chat/completions",
                json={"model": "grok-3", "messages": MESSAGES},
                headers={**AUTH, "X-Sim-Stall": "headers"},
            )
        )
        await sim.state.stalled.wait()
        async with http.post(
            f"{meter.base_url}/chat/completions",
            json={"model": "grok-3", "messages": MESSAGES},
            headers=AUTH,
        ) as r:
            assert (r.status, r.headers["Retry-After"]) == (503, "1")
            body = await r.json()
        assert body["code"] == "upstream_pool_exhausted"
        [refused] = await meter.rows(1)
        assert (refused["status"], refused["error"], refused["error_detail"]) == (
            503,
            "upstream_pool_exhausted",
            "ConnectionTimeoutError",
        )
        assert (refused["metered"], refused["unmetered_reason"]) == (1, None)  # never sent
        sim.state.release.set()
        async with await holding as first:
            assert first.status == 200
            await first.read()
    rows = await meter.rows(2)
    assert sorted((r["status"], r["error"]) for r in rows) == [
        (200, None),
        (503, "upstream_pool_exhausted"),
    ]
    assert len(sim.state.requests) == 1
    errors = meter.metric(
        "xai_meter_call_errors_total",
        provider="xai",
        endpoint="chat.completions",
        error="upstream_pool_exhausted",
    )
    assert errors == 1
