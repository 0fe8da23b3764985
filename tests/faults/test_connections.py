"""Faults from the clients' side: many leaving mid-stream at once, slowloris connections, and
more idle sockets than the daemon has file descriptors.

Each test compares, tag by tag, what the clients saw with the ledger the daemon left.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time

import pytest

from daemon.simulator import Simulator
from daemon.testing import TEST_KEY, Daemons, Driver, eventually, expect_rows

pytestmark = [pytest.mark.faults, pytest.mark.slow]


async def test_bulk_disconnects_are_one_row_each(
    sim: Simulator, daemons: Daemons, driver: Driver
) -> None:
    """100 clients leave mid-stream in the same instant: 100 rows ``client_disconnect``, the
    upstream streams behind them are let go, and the daemon serves on."""
    meter = await daemons.start(sim.url)
    driver.use(meter)
    streams = await driver.held_streams(100, "left")
    for stream in streams:  # in one loop iteration: at once
        stream.leave()
    await daemons.rows_with(driver.tags("left"))

    async def upstream_let_go() -> bool:
        return sim.state.abandoned_count >= 100

    await eventually(upstream_let_go, "the daemon closed its 100 upstream streams", 10.0)
    after = await driver.many(5, "after")
    assert await meter.stop() == 0
    left = {
        "status": 200,
        "error": "client_disconnect",
        "metered": 0,
        "unmetered_reason": "incomplete",
    }
    expect_rows(
        daemons.rows(),
        {tag: left for tag in driver.tags("left")} | {seen.tag: seen.row() for seen in after},
    )


HEADER_TIMEOUT = 1.0  # relay.header_timeout (and body_timeout, idle_timeout) in these tests (s)
SLACK = 2.0  # how much later than its timeout a connection may be cut (s)
Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def connect(port: int, within: float = 1.0) -> Connection | None:
    """A TCP connection to the daemon's relay port; None when it is not had in time."""
    try:
        async with asyncio.timeout(within):
            return await asyncio.open_connection("127.0.0.1", port)
    except (OSError, TimeoutError):
        return None


async def closed_after(connection: Connection, trickle: bytes, within: float) -> float | None:
    """Send `trickle` one byte every 0.1 s (round and round) and read whatever comes, until
    the daemon closes the connection: the seconds that took; None when it was still open
    after `within` s. Bytes the daemon answers (a 408, say) do not count as closing."""
    reader, writer = connection
    started = time.monotonic()
    next_byte = itertools.cycle(trickle)
    try:
        async with asyncio.timeout(within):
            while True:
                if trickle:
                    writer.write(bytes([next(next_byte)]))
                    await writer.drain()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.1):
                        if not await reader.read(65536):
                            return time.monotonic() - started
    except TimeoutError:  # first: it is an OSError too
        return None
    except OSError:  # reset, broken pipe
        return time.monotonic() - started
    finally:
        writer.close()


def http_head(tag: str, length: int, keep_alive: bool = False) -> bytes:
    """The head of a tagged chat completion POST with a `length`-byte body."""
    lines = [
        "POST /v1/chat/completions HTTP/1.1",
        "Host: 127.0.0.1",
        f"Authorization: Bearer {TEST_KEY}",
        "Content-Type: application/json",
        f"X-Meter-App: {tag}",
        f"Content-Length: {length}",
    ]
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_slowloris_connections_are_cut(
    sim: Simulator, daemons: Daemons, driver: Driver
) -> None:
    """Connections that trickle their headers, stop mid-body, or sit idle between calls are
    cut within their timeout (+ 2 s), while real calls are served. A call whose body never
    came has one row, 408; a connection that never finished its headers, none."""
    meter = await daemons.start(
        sim.url,
        relay__header_timeout=HEADER_TIMEOUT,
        relay__body_timeout=HEADER_TIMEOUT,
        relay__idle_timeout=HEADER_TIMEOUT,
    )
    driver.use(meter)
    within = HEADER_TIMEOUT + SLACK
    # headers: a line, then one byte every 0.1 s, never the blank line that ends them
    slow_heads = []
    for _ in range(20):
        connection = await connect(meter.relay_port)
        assert connection is not None
        connection[1].write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        slow_heads.append(closed_after(connection, b"X-Slow: abcdefghij\r\n", within + 3))
    # bodies: the head and 10 bytes of a 1,000-byte body, then silence
    silent_bodies = []
    for _ in range(5):
        connection = await connect(meter.relay_port)
        assert connection is not None
        seen = driver.new("nobody")
        connection[1].write(http_head(seen.tag, 1000) + b'{"model": ')
        silent_bodies.append(closed_after(connection, b"", within + 3))
    # idle: one whole call on a kept-alive connection, then nothing
    idle = await connect(meter.relay_port)
    assert idle is not None
    once = driver.new("keepalive")
    body = driver.request(once.tag)[1]
    idle[1].write(http_head(once.tag, len(body), keep_alive=True) + body)
    head = await asyncio.wait_for(idle[0].readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 200"), head
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    once.status, once.ended = 200, True
    once.body = await asyncio.wait_for(idle[0].readexactly(length), 10)
    cuts = asyncio.gather(*slow_heads, *silent_bodies, closed_after(idle, b"", within + 3))
    real = await driver.many(5, "real")  # served meanwhile
    took = await cuts
    assert all(t is not None and t <= within for t in took), f"cut after (s): {took}"
    assert await meter.stop() == 0
    rows = daemons.rows()
    nobody = driver.tags("nobody")
    body_timeout = {"status": 408, "error": "body_timeout"}
    expect_rows(
        rows, {s.tag: s.row() for s in [*real, once]} | {tag: body_timeout for tag in nobody}
    )


NOFILE = 512  # the daemon's open-file limit in the fd test
IDLE = 600  # idle sockets the test opens at it: more than it has file descriptors


async def test_fd_exhaustion_leaves_metrics_and_calls_answering(
    sim: Simulator, daemons: Daemons, driver: Driver
) -> None:
    """A daemon with 512 file descriptors, 600 idle sockets opened at it: /metrics answers
    while they are held, a real call is answered once the idle ones are cut, and the daemon
    serves on when they are gone. A call refused on the way has at most one row, not a
    success."""
    # The relay's connection cap is derived from the file limit less a reserve (the upstream
    # pool among it: 32 here, so that NOFILE leaves room for 200 or so client connections).
    meter = await daemons.start(
        sim.url, nofile=NOFILE, upstream__max_connections=32, relay__header_timeout=2
    )
    driver.use(meter)
    opened = await asyncio.gather(*(connect(meter.relay_port) for _ in range(IDLE)))
    held = [connection for connection in opened if connection]
    assert len(held) > NOFILE // 2, f"only {len(held)} idle sockets opened"
    try:
        status, body = await meter.get("/metrics", within=5)
        assert status == 200 and b"xai_meter_" in body, status

        async def a_call_answers() -> bool:
            seen = await driver.chat("try", within=5)
            return seen.status == 200 and seen.ended

        await eventually(a_call_answers, f"a call answered beside {IDLE} idle sockets", 15, 0.2)
    finally:
        for _, writer in held:
            writer.close()
    after = await driver.many(5, "after")
    assert await meter.stop() == 0
    tries = [driver.seen[tag] for tag in driver.tags("try")]
    ok = [s for s in tries if s.status == 200 and s.ended]
    refused = [s for s in tries if s not in ok]
    rows = daemons.rows()
    expect_rows(rows, {s.tag: s.row() for s in ok + after}, {s.tag: [{}] for s in refused})
    assert not [r for r in rows if r["app"] in {s.tag for s in refused} and r["status"] == 200]
