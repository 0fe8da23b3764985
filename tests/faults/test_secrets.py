"""Keys where they must never be: an upstream that echoes the caller's key in its errors
(relayed calls and the price listing fetched with the caller's key), and a key with a byte
that is not UTF-8. The ledger's files (database, WAL, journal, salt) and the daemon's log are
searched byte for byte afterwards: the key is in none of them.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest

from daemon.testing import ODD_ECHO_KEY, Daemons, Driver, OddUpstream, eventually, expect_rows

pytestmark = [pytest.mark.faults, pytest.mark.slow]

NO_SUCH_ENV = "XAI_METER_FAULTS_NO_KEY"  # pricing.api_key_env: unset, so the client's key is used


def holding(where: Path, secret: bytes) -> list[str]:
    """Every file under `where` whose bytes contain `secret` (the test's config has none)."""
    return [str(p) for p in sorted(where.rglob("*")) if p.is_file() and secret in p.read_bytes()]


async def test_echoed_key_is_stored_and_logged_nowhere(
    odd_upstream: OddUpstream, daemons: Daemons, driver: Driver, tmp_path: Path
) -> None:
    """An upstream puts the caller's key (no xai- or sk- prefix) in its error code and message,
    for relayed calls and for the price listing fetched with that key: each call has its row,
    with a key id, and the key is in no file the daemon wrote, its debug log included."""
    key = "abc123" + secrets.token_hex(16)
    meter = await daemons.start(
        odd_upstream.url,
        log__level="debug",
        pricing__refresh=True,
        pricing__api_key_env=NO_SUCH_ENV,
        pricing__use_client_key=True,
    )
    driver.use(meter)
    echoed = await driver.many(3, "echoed", key=key, headers={ODD_ECHO_KEY: "1"})
    for seen in echoed:
        assert seen.status == 400 and key.encode() in seen.body  # relayed as the upstream said
    fine = await driver.many(2, "fine", key=key)

    async def listing_failed() -> bool:
        return (await meter.metric("xai_meter_price_refresh_failures_total") or 0) >= 1

    await eventually(listing_failed, "the price listing, fetched with the key, failed", 15)
    assert await meter.stop() == 0
    rows = daemons.rows()
    http_error = {"status": 400, "error": "http_error"}
    expect_rows(rows, {s.tag: http_error for s in echoed} | {s.tag: s.row() for s in fine})
    assert len({row["key_id"] for row in rows}) == 1 and rows[0]["key_id"], rows
    assert holding(tmp_path, key.encode()) == []


async def test_key_with_a_byte_not_utf8_is_relayed_and_never_stored(
    odd_upstream: OddUpstream, daemons: Daemons, driver: Driver, tmp_path: Path
) -> None:
    """A key with a 0xff byte in it (sent raw, as HTTP allows): the call is relayed, answered,
    has its row with a key id; no part of the key is in the ledger or the log."""
    head, tail = "abc123" + secrets.token_hex(8), secrets.token_hex(8)
    meter = await daemons.start(odd_upstream.url, log__level="debug")
    seen = driver.new("odd")
    body = driver.request(seen.tag)[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", meter.relay_port)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Authorization: Bearer " + head.encode() + b"\xff" + tail.encode() + b"\r\n"
        b"Content-Type: application/json\r\nX-Meter-App: " + seen.tag.encode() + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    async with asyncio.timeout(10):
        answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    seen.status, seen.ended, seen.body = 200, True, answer.split(b"\r\n\r\n", 1)[1]
    relayed = [h for path, h in odd_upstream.requests if path == "/v1/chat/completions"]
    assert len(relayed) == 1
    assert await meter.stop() == 0
    rows = daemons.rows()
    expect_rows(rows, {seen.tag: seen.row()})
    assert rows[0]["key_id"], rows
    assert holding(tmp_path, head.encode()) == [] and holding(tmp_path, tail.encode()) == []
