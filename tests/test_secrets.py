"""Secrets: the key-id salt in its own 0600 file, keys masked in everything stored or logged
whatever they look like, and keys with bytes that are not UTF-8 (issue 12, items 4 and 6)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web
from tenacity import wait_none

from daemon import logs
from daemon.app import Daemon
from daemon.config import ConfigError
from daemon.dialects.base import end_call
from daemon.keys import KNOWN_KEYS, KeyHasher, KnownKeys
from daemon.ledger import migrate, open_database
from daemon.ledger.store import legacy_salt
from daemon.testing import DaemonFactory, RunningDaemon, make_record, make_settings

XAI_KEY = "xai-" + "Zq9Xw2" * 12  # shaped like xAI's keys
PLAIN_KEY = "abc123"  # no prefix at all
CHAT = {"model": "grok-4", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(autouse=True)
def _forget_keys() -> Iterator[None]:
    """Each test starts knowing no key (the table is per process, as logging is)."""
    KNOWN_KEYS.forget()
    yield
    KNOWN_KEYS.forget()


def _salt_of(path: Path) -> bytes:
    return bytes.fromhex(path.read_text().strip())


def _key_id(salt: bytes, raw: bytes) -> str:
    """The key id made here, independently: HMAC-SHA256 of the key's bytes as sent."""
    return "k_" + hmac.new(salt, raw, hashlib.sha256).hexdigest()[:16]


def _meta(path: Path) -> dict[str, str]:
    db = open_database(path, readonly=True)
    try:
        return {row["key"]: row["value"] for row in db["meta"].rows}
    finally:
        db.close()


# --- an upstream that echoes the key it was sent -------------------------------------------


class Echo:
    """A tiny upstream that quotes the caller's key in everything it can: its error code, its
    message and its x-request-id; it keeps the raw headers of each request it got."""

    def __init__(self) -> None:
        self.requests: list[tuple[tuple[bytes, bytes], ...]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(request.raw_headers)
        auth = request.headers.get("Authorization", "")
        key = auth.removeprefix("Bearer ")
        if request.path.endswith("/language-models"):
            body = f'{{"code": "{key}", "error": "Incorrect API key provided: {key} (bad)"}}'
            return web.Response(status=401, text=body, content_type="application/json")
        body = f'{{"code": "invalid_key:{key}", "error": "Incorrect API key provided: {key}"}}'
        return web.Response(
            status=401,
            text=body,
            content_type="application/json",
            headers={"x-request-id": f"req-{key}"},
        )


@pytest.fixture
async def echo() -> AsyncIterator[Echo]:
    upstream = Echo()
    server = web.Server(upstream.handle)
    runner = web.ServerRunner(server)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    upstream.url = f"http://{host}:{port}"
    try:
        yield upstream
    finally:
        await runner.cleanup()


@pytest.fixture
def log_out() -> Iterator[io.TextIOWrapper]:
    """The daemon's log as JSON lines on a stream the test reads (structlog and stdlib)."""
    out = io.TextIOWrapper(io.BytesIO(), write_through=True)
    logs.configure("info", "json", stream=out)
    yield out
    logs.reset()


def _log_text(out: io.TextIOWrapper) -> str:
    logs.flush()
    return out.buffer.getvalue().decode()  # type: ignore[attr-defined]


def _log_lines(out: io.TextIOWrapper) -> list[dict[str, Any]]:
    return [json.loads(line) for line in _log_text(out).splitlines() if line.startswith("{")]


def _stored_bytes(ledger: str) -> bytes:
    """Every byte the ledger holds on disk (the DB and its WAL)."""
    return b"".join(
        Path(ledger + suffix).read_bytes()
        for suffix in ("", "-wal")
        if Path(ledger + suffix).exists()
    )


def _delete(ledger: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(ledger + suffix).unlink(missing_ok=True)


# --- the salt ----------------------------------------------------------------------------


async def test_the_salt_is_a_0600_file_beside_the_ledger_made_once(
    start_daemon: DaemonFactory, sim: Any, tmp_path: Path
) -> None:
    d = await start_daemon(sim.url)
    path = tmp_path / "xai-meter.salt"
    text = path.read_text()
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert len(text) == 33 and text.endswith("\n") and len(bytes.fromhex(text)) == 16
    assert "key_salt" not in _meta(Path(d.ledger_path))  # the ledger never holds it
    await d.daemon.stop()
    again = await start_daemon(sim.url)
    assert path.read_text() == text
    assert again.daemon.keys.key_id("k-1") == _key_id(bytes.fromhex(text), b"k-1")


async def test_key_ids_survive_a_deleted_ledger(
    start_daemon: DaemonFactory, sim: Any, tmp_path: Path
) -> None:
    ids = []
    for _ in range(2):
        d = await start_daemon(sim.url)
        async with aiohttp.ClientSession() as s:
            headers = {"Authorization": f"Bearer {XAI_KEY}"}
            async with s.post(d.base_url + "/chat/completions", json=CHAT, headers=headers) as r:
                assert r.status == 200
        [row] = await d.rows(1)
        ids.append(row["key_id"])
        await d.daemon.stop()
        _delete(d.ledger_path)
    salt = _salt_of(tmp_path / "xai-meter.salt")
    assert ids == [_key_id(salt, XAI_KEY.encode())] * 2


async def test_salt_path_puts_the_file_where_it_says(
    start_daemon: DaemonFactory, sim: Any, tmp_path: Path
) -> None:
    chosen = tmp_path / "secrets" / "meter.salt"
    chosen.parent.mkdir()
    d = await start_daemon(sim.url, ledger__salt_path=str(chosen))
    assert os.stat(chosen).st_mode & 0o777 == 0o600
    assert not (tmp_path / "xai-meter.salt").exists()
    assert d.daemon.keys.key_id("k-1") == _key_id(_salt_of(chosen), b"k-1")


def _old_ledger(path: Path, salt: bytes) -> None:
    """A ledger as older versions left it: the salt in meta.key_salt."""
    db = open_database(path)
    migrate(db)
    db["meta"].insert({"key": "key_salt", "value": salt.hex()})
    db.close()


async def test_an_older_ledgers_salt_moves_to_the_file(
    start_daemon: DaemonFactory, sim: Any, tmp_path: Path
) -> None:
    old = bytes(range(16))
    ledger = tmp_path / "ledger.db"
    _old_ledger(ledger, old)
    d = await start_daemon(sim.url)
    assert (tmp_path / "xai-meter.salt").read_text() == old.hex() + "\n"
    assert "key_salt" not in _meta(ledger)
    assert d.daemon.keys.key_id(XAI_KEY) == _key_id(old, XAI_KEY.encode())  # ids unchanged


async def test_a_salt_file_beats_a_different_one_in_the_ledger(
    start_daemon: DaemonFactory, sim: Any, tmp_path: Path, log_out: io.TextIOWrapper
) -> None:
    file_salt = bytes(range(100, 132))
    path = tmp_path / "xai-meter.salt"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, file_salt.hex().encode())
    os.close(fd)
    ledger = tmp_path / "ledger.db"
    _old_ledger(ledger, bytes(16))
    d = await start_daemon(sim.url)
    assert d.daemon.keys.key_id(XAI_KEY) == _key_id(file_salt, XAI_KEY.encode())
    assert "key_salt" not in _meta(ledger) and path.read_text() == file_salt.hex()
    await d.daemon.stop()
    await start_daemon(sim.url)  # the row is gone: no second warning
    warnings = [line for line in _log_lines(log_out) if line["event"] == "key_salt_conflict"]
    assert [(w["level"], w["path"]) for w in warnings] == [("warning", str(path))]


def test_legacy_salt_reads_the_old_row_only(tmp_path: Path) -> None:
    db = open_database(tmp_path / "l.db")
    migrate(db)
    assert legacy_salt(db) is None
    db["meta"].insert({"key": "key_salt", "value": "00" * 16})
    assert legacy_salt(db) == bytes(16)
    db.close()


@pytest.mark.parametrize(
    ("mode", "content", "problem", "fix"),
    [
        (
            0o640,
            "00" * 16,
            "the key-id salt is open to others (mode 0640)",
            "chmod 600 {path}",
        ),
        (
            0o604,
            "00" * 16,
            "the key-id salt is open to others (mode 0604)",
            "chmod 600 {path}",
        ),
        (
            0o600,
            "not a salt",
            "not a key-id salt (expected one line of at least 32 hex digits)",
            "restore it from a backup, or delete it to make a new salt (every key id changes)",
        ),
        (
            0o600,
            "abcd",
            "not a key-id salt (expected one line of at least 32 hex digits)",
            "restore it from a backup, or delete it to make a new salt (every key id changes)",
        ),
    ],
)
async def test_a_bad_salt_file_stops_the_start(
    tmp_path: Path, mode: int, content: str, problem: str, fix: str
) -> None:
    path = tmp_path / "xai-meter.salt"
    path.write_text(content)
    path.chmod(mode)
    daemon = Daemon(make_settings(tmp_path, "http://127.0.0.1:9"), retry_wait=wait_none())
    with pytest.raises(ConfigError) as raised:
        await daemon.start()
    fix = fix.format(path=path)
    assert str(raised.value) == f"ledger.salt_path = {str(path)!r}: {problem}. Fix: {fix}."
    await daemon.stop()


# --- keys masked in what is stored and logged --------------------------------------------


@pytest.mark.parametrize("key", [XAI_KEY, PLAIN_KEY])
async def test_an_echoed_key_is_stored_and_logged_as_a_mask(
    start_daemon: DaemonFactory, echo: Echo, key: str, log_out: io.TextIOWrapper
) -> None:
    d = await start_daemon(echo.url)
    async with aiohttp.ClientSession() as s:
        headers = {"Authorization": f"Bearer {key}", "X-Meter-App": "app"}
        async with s.post(d.base_url + "/chat/completions", json=CHAT, headers=headers) as r:
            body = await r.text()
    # The client gets the upstream's answer as it was: the key is the client's own.
    assert r.status == 401 and body.count(key) == 2
    [row] = await d.rows(1)
    assert (row["status"], row["error"], row["error_detail"]) == (401, "http_error", None)
    assert row["upstream_error"] == "invalid_key:[key]"
    assert row["request_id"] == "req-[key]"
    assert row["key_id"] == d.daemon.keys.key_id(key)
    await d.daemon.stop()
    assert key.encode() not in _stored_bytes(d.ledger_path)
    text = _log_text(log_out)
    assert key not in text
    [call] = [line for line in _log_lines(log_out) if line["event"] == "call"]
    assert (call["status"], call["error"], call["key_id"]) == (401, "http_error", row["key_id"])


@pytest.mark.parametrize("key", [XAI_KEY, PLAIN_KEY])
@pytest.mark.parametrize("source", ["pricing_key", "client_key"])
async def test_a_listing_error_logs_a_mask_for_the_key(
    start_daemon: DaemonFactory,
    echo: Echo,
    key: str,
    source: str,
    log_out: io.TextIOWrapper,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = "XAI_METER_TEST_PRICING_KEY"
    if source == "pricing_key":
        monkeypatch.setenv(env, key)
    else:
        monkeypatch.delenv(env, raising=False)
    d = await start_daemon(echo.url, pricing__refresh=True, pricing__api_key_env=env)
    if source == "client_key":  # the listings wait for a client's key, then use it
        async with aiohttp.ClientSession() as s:
            headers = {"Authorization": f"Bearer {key}"}
            async with s.post(d.base_url + "/chat/completions", json=CHAT, headers=headers) as r:
                assert r.status == 401
    await _until(lambda: d.metric("xai_meter_price_refresh_failures_total") == 1.0)
    [failed] = [line for line in _log_lines(log_out) if line["event"] == "price_refresh_failed"]
    assert failed["error"] == (
        f"GET {echo.url}/v1/language-models: HTTP 401: "
        '{"code": "[key]", "error": "Incorrect API key provided: [key] (bad)"}'
    )
    assert key not in _log_text(log_out)


async def _until(condition: Any, within: float = 5.0) -> None:
    """Poll `condition` on the loop, at most `within` seconds (a refresh that fails sets no
    event: its count is what can be watched)."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - a bounded poll of a metric
            await asyncio.sleep(0.01)


def test_end_call_masks_the_calls_own_key_in_every_text_field() -> None:
    """Every transport ends its rows in `end_call`: gRPC details in ``error_detail``, a batch
    result's code in a derived row, the name /v1/api-key gave, all masked there."""
    hasher = KeyHasher(b"s" * 16)
    key = "sk-other-service-0123"
    record = make_record(
        key_id=hasher.key_id(key),
        status=503,
        error_detail=f"upstream said: key {key} unknown",
        upstream_error=f"UNAVAILABLE {key}",
        model=key,
        path=f"/v1/x/{key}",
        key_info={"name": f"my {key}", "team_id": None},
    )
    record.derived = [record.derive(1.0, 1.0, upstream_error=f"{key}{key}")]
    end_call(record, 1.0)
    assert (record.error_detail, record.upstream_error, record.model, record.path) == (
        "upstream said: key [key] unknown",
        "UNAVAILABLE [key]",
        "[key]",
        "/v1/x/[key]",
    )
    assert record.key_info == {"name": "my [key]", "team_id": None}
    assert record.derived[0].upstream_error == "[key][key]"
    other = make_record(key_id=hasher.key_id("another-key"), model=key)
    end_call(other, 1.0)
    assert other.model == key  # only a call's own key (and configured ones) is masked in it


def test_configured_keys_are_masked_in_every_call() -> None:
    KNOWN_KEYS.pin("configured-upstream-key")
    record = make_record(key_id=None, upstream_error="bad configured-upstream-key")
    end_call(record, 1.0)
    assert record.upstream_error == "bad [key]"


def test_text_that_is_not_utf8_is_made_storable() -> None:
    record = make_record(app="app\udcff", requested_model="m\ud800")
    end_call(record, 1.0)
    assert (record.app, record.requested_model) == ("app\\udcff", "m\\ud800")


def test_known_keys_stay_bounded_and_mask_the_longest_first() -> None:
    known = KnownKeys(remembered=3, logged=2)
    hasher = KeyHasher(b"s" * 16, known)
    for key in ("key-one", "key-two", "key-three", "key-four"):
        hasher.key_id(key)
    assert len(known._by_id) == 3 and hasher.key_id("key-one") not in known._by_id
    # the log net looks for the 2 most recent only
    assert known.scrub("key-two key-three key-four") == "key-two [key] [key]"
    known.pin("key-four-and-more")
    assert known.scrub("key-four-and-more") == "[key]"
    hasher.key_id("abc")  # too short to be worth masking: words would go
    assert known.scrub("abc") == "abc"


def test_the_log_nets_mask_keys_in_lines_and_tracebacks(log_out: io.TextIOWrapper) -> None:
    KNOWN_KEYS.pin(PLAIN_KEY)
    log = structlog.get_logger("xai_meter.test")
    try:
        raise ValueError(f"bad key {PLAIN_KEY}")
    except ValueError:
        log.exception("boom", detail={"quoted": [f"k={PLAIN_KEY}"]})
        logging.getLogger("aiohttp.server").error("header %s", PLAIN_KEY, exc_info=True)
    text = _log_text(log_out)
    assert PLAIN_KEY not in text
    [boom] = [line for line in _log_lines(log_out) if line["event"] == "boom"]
    assert boom["detail"] == {"quoted": ["k=[key]"]}
    assert boom["exception"].endswith("ValueError: bad key [key]")
    assert "ERROR aiohttp.server: header [key]" in text
    assert "ValueError: bad key [key]" in text.split("aiohttp.server", 1)[1]


# --- odd bytes in a key --------------------------------------------------------------------


async def _raw_call(d: RunningDaemon, headers: bytes) -> tuple[int, bytes]:
    """POST a chat completion over a raw socket with these header lines; (status, body)."""
    host, port = d.url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    body = json.dumps(CHAT).encode()
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + headers
        + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        + body
    )
    async with asyncio.timeout(10):
        answer = await reader.read()
    writer.close()
    head, _, rest = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), rest


@pytest.mark.parametrize("header", [b"Authorization: Bearer ", b"x-api-key: "])
async def test_a_key_that_is_not_utf8_is_relayed_and_gets_its_key_id(
    start_daemon: DaemonFactory, echo: Echo, tmp_path: Path, header: bytes
) -> None:
    raw_key = b"abc\xff\xfedef"
    d = await start_daemon(echo.url)
    status, _ = await _raw_call(d, header + raw_key + b"\r\n")
    assert status == 401  # relayed: the upstream decided
    # aiohttp's client would drop the odd bytes (another key, perhaps a real one): each is
    # sent as U+FFFD, which no valid key holds
    [sent] = echo.requests
    name = "Authorization" if header.startswith(b"Auth") else "x-api-key"
    sent_key = dict(sent)[name.encode()].removeprefix(b"Bearer ")
    assert sent_key == "abc\ufffd\ufffddef".encode()
    [row] = await d.rows(1)
    assert (row["status"], row["error"], row["error_detail"]) == (
        401,
        "http_error",
        f"header not UTF-8, sent with U+FFFD: {name}",
    )
    assert row["key_id"] == _key_id(_salt_of(tmp_path / "xai-meter.salt"), raw_key)


async def test_a_key_in_utf8_beyond_ascii_is_relayed_byte_for_byte(
    start_daemon: DaemonFactory, echo: Echo, tmp_path: Path
) -> None:
    raw_key = "clé-ключ-鍵".encode()
    d = await start_daemon(echo.url)
    status, _ = await _raw_call(d, b"Authorization: Bearer " + raw_key + b"\r\n")
    assert status == 401  # the upstream decided
    [sent] = echo.requests
    assert dict(sent)[b"Authorization"] == b"Bearer " + raw_key
    [row] = await d.rows(1)
    assert (row["status"], row["error"]) == (401, "http_error")
    assert row["key_id"] == _key_id(_salt_of(tmp_path / "xai-meter.salt"), raw_key)
    assert row["upstream_error"] == "invalid_key:[key]"


async def test_an_app_tag_that_is_not_utf8_is_relayed_and_stored(
    start_daemon: DaemonFactory, sim: Any
) -> None:
    d = await start_daemon(sim.url)
    headers = b"Authorization: Bearer k-utf8-app\r\nX-Meter-App: app\xff\r\n"
    status, _ = await _raw_call(d, headers)
    assert status == 200
    [row] = await d.rows(1)
    assert (row["status"], row["app"]) == (200, "app\\udcff")


async def test_a_websocket_key_that_is_not_utf8_is_relayed_too(
    start_daemon: DaemonFactory, echo: Echo, tmp_path: Path
) -> None:
    raw_key = b"ws\xff\xfekey"
    d = await start_daemon(echo.url)
    host, port = d.url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"GET /v1/realtime HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Authorization: Bearer " + raw_key + b"\r\n\r\n"
    )
    async with asyncio.timeout(10):
        head = await reader.readuntil(b"\r\n\r\n")
    writer.close()
    assert head.startswith(b"HTTP/1.1 401 ")  # relayed: the upstream decided
    [sent] = echo.requests
    assert dict(sent)[b"Authorization"] == "Bearer ws\ufffd\ufffdkey".encode()
    [row] = await d.rows(1)
    assert (row["transport"], row["status"], row["error"], row["error_detail"]) == (
        "websocket",
        401,
        "http_error",
        "header not UTF-8, sent with U+FFFD: Authorization",
    )
    assert row["key_id"] == _key_id(_salt_of(tmp_path / "xai-meter.salt"), raw_key)
