"""WebSockets through the relay, as a transport: messages untouched both ways, subprotocols,
headers, close codes and pings both ways, backpressure, and an honest HTTP error before the
upgrade when the upstream cannot be had. Each session is one row (a socket no dialect knows:
unbilled, endpoint as the path table names it)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from multidict import CIMultiDict

from daemon import dialects, simulator
from daemon.dialects.voice_sockets import TtsSocketTap
from daemon.testing import TEST_KEY, DaemonFactory, RunningDaemon

AUTH = {"Authorization": f"Bearer {TEST_KEY}"}


@dataclass
class Peer:
    """An upstream WebSocket for transport tests, on any path: echoes every message back; a
    text ``close CODE REASON`` closes with that code, ``ping DATA`` pings the client,
    ``drop`` drops the connection, ``flood N`` sends N binary messages of 1 MiB. Logs what it
    received (pongs too) and the close code it got."""

    url: str = ""
    received: list[tuple[WSMsgType, str | bytes]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    flooded: int = 0  # flood messages sent so far
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.headers.append(dict(request.headers))
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        ws = web.WebSocketResponse(
            protocols=[p for p in offered if p.startswith("echo.")][:1],
            autoping=False,
            autoclose=False,
        )
        ws.headers["x-request-id"] = "req-peer-1"
        ws.headers["x-peer"] = "yes"
        await ws.prepare(request)
        try:
            while True:
                msg = await ws.receive()
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.PONG):
                    self.received.append((msg.type, msg.data))
                if msg.type is WSMsgType.TEXT and msg.data.startswith("close "):
                    _, code, reason = msg.data.split(" ", 2)
                    await ws.close(code=int(code), message=reason.encode())
                    return ws
                if msg.type is WSMsgType.TEXT and msg.data.startswith("ping "):
                    await ws.ping(msg.data[5:].encode())
                elif msg.type is WSMsgType.TEXT and msg.data == "drop":
                    assert request.transport is not None
                    request.transport.abort()
                    return ws
                elif msg.type is WSMsgType.TEXT and msg.data.startswith("flood "):
                    for _ in range(int(msg.data[6:])):
                        await ws.send_bytes(b"\x00" * (1 << 20))
                        self.flooded += 1
                elif msg.type is WSMsgType.TEXT:
                    await ws.send_str(msg.data)
                elif msg.type is WSMsgType.BINARY:
                    await ws.send_bytes(msg.data)
                elif msg.type is WSMsgType.CLOSE:
                    self.close_code, self.close_reason = msg.data, msg.extra or ""
                    await ws.close(code=msg.data, message=(msg.extra or "").encode())
                    return ws
                elif msg.type not in (WSMsgType.PING, WSMsgType.PONG):
                    return ws
        finally:
            self.ended.set()


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    upstream = Peer()
    app = web.Application()
    app.router.add_get("/v1/{tail:.*}", upstream.handle)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    upstream.url = f"http://{host}:{port}"
    yield upstream
    await runner.cleanup()


@pytest.fixture
async def relay(peer: Peer, start_daemon: DaemonFactory) -> RunningDaemon:
    return await start_daemon(peer.url)


async def test_messages_pass_unchanged_both_ways(peer: Peer, relay: RunningDaemon) -> None:
    texts = ['{"type":"x",  "a" : [1, 2.50, "é\\u00e9"]}', "plain ünïcode ✓", ""]
    blobs = [b"\xff\xfe\x00 not utf-8", bytes(range(256)) * 300, b""]
    got: list[tuple[WSMsgType, str | bytes]] = []
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{relay.base_url}/echo?x=1", headers=AUTH) as ws,
    ):
        for text, blob in zip(texts, blobs, strict=True):
            await ws.send_str(text)
            await ws.send_bytes(blob)
        for _ in range(len(texts) * 2):
            msg = await ws.receive()
            got.append((msg.type, msg.data))
    sent = [m for pair in zip(texts, blobs, strict=True) for m in pair]
    kinds = [WSMsgType.TEXT, WSMsgType.BINARY] * len(texts)
    assert peer.received == list(zip(kinds, sent, strict=True))
    assert got == list(zip(kinds, sent, strict=True))
    [row] = await relay.rows(1)
    assert (row["endpoint"], row["transport"], row["method"], row["path"]) == (
        "other",
        "websocket",
        "GET",
        "/v1/echo",
    )
    assert (row["status"], row["error"], row["metered"], row["cost_ticks"]) == (101, None, 1, None)
    assert row["request_id"] == "req-peer-1"


async def test_headers_and_subprotocols_pass_and_upgrade_headers_come_back(
    peer: Peer, relay: RunningDaemon
) -> None:
    bare = ("User-Agent", "Accept", "Accept-Encoding")  # the client sends none of these
    async with (
        aiohttp.ClientSession(skip_auto_headers=bare) as http,
        http.ws_connect(
            f"{relay.base_url}/echo",
            protocols=("nope.1", "echo.v2"),
            headers={**AUTH, "X-Meter-App": "voicebot", "X-Custom": "kept", "Origin": "app://x"},
        ) as ws,
    ):
        assert ws.protocol == "echo.v2"
        await ws.send_str("hi")
        assert (await ws.receive()).data == "hi"
    [sent] = peer.headers
    assert sent["Authorization"] == AUTH["Authorization"]
    assert (sent["X-Custom"], sent["Origin"]) == ("kept", "app://x")
    assert sent["Sec-WebSocket-Protocol"] == "nope.1,echo.v2"
    assert "X-Meter-App" not in sent
    assert not any(name in sent for name in bare), "the relay added headers of its own"
    [row] = await relay.rows(1)
    assert row["app"] == "voicebot" and row["key_id"]


async def test_upstream_response_headers_reach_the_client(peer: Peer, relay: RunningDaemon) -> None:
    seen: list[CIMultiDict[str]] = []

    async def on_end(*args: object) -> None:
        params = args[-1]
        seen.append(CIMultiDict(params.response.headers))  # type: ignore[attr-defined]

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_end)
    async with (
        aiohttp.ClientSession(trace_configs=[trace]) as http,
        http.ws_connect(f"{relay.base_url}/echo", headers=AUTH) as ws,
    ):
        await ws.close()
    [headers] = seen
    assert (headers["x-peer"], headers["x-request-id"]) == ("yes", "req-peer-1")
    assert await relay.rows(1)


@pytest.mark.parametrize(("code", "reason"), [(1000, ""), (4000, "bye now"), (1001, "away")])
async def test_client_close_code_reaches_the_upstream(
    peer: Peer, relay: RunningDaemon, code: int, reason: str
) -> None:
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"{relay.base_url}/echo", headers=AUTH)
        await ws.send_str("hello")
        assert (await ws.receive()).data == "hello"
        await ws.close(code=code, message=reason.encode())
        assert ws.close_code == code  # the upstream's answer, relayed back
    async with asyncio.timeout(5):
        await peer.ended.wait()
    assert (peer.close_code, peer.close_reason) == (code, reason)
    [row] = await relay.rows(1)
    abnormal = code not in (1000, 1001)
    assert row["error"] == ("client_disconnect" if abnormal else None)
    assert row["error_detail"] == (f"client closed {code}" if abnormal else None)


@pytest.mark.parametrize(("code", "reason"), [(1000, "done"), (1011, "upstream broke"), (4400, "")])
async def test_upstream_close_code_reaches_the_client(
    peer: Peer, relay: RunningDaemon, code: int, reason: str
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{relay.base_url}/echo", headers=AUTH) as ws,
    ):
        await ws.send_str(f"close {code} {reason}")
        msg = await ws.receive()
        assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, code, reason)
    [row] = await relay.rows(1)
    abnormal = code != 1000
    assert row["error"] == ("upstream_stream_cut" if abnormal else None)
    assert row["upstream_error"] == (f"ws_close_{code}" if abnormal else None)


async def test_pings_and_pongs_cross_both_ways(peer: Peer, relay: RunningDaemon) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{relay.base_url}/echo", headers=AUTH, autoping=False) as ws,
    ):
        await ws.send_str("ping from-upstream")
        msg = await ws.receive()
        assert (msg.type, msg.data) == (WSMsgType.PING, b"from-upstream")
        await ws.pong(b"from-upstream")
        await ws.send_str("after")  # ordered after the pong on the same connection
        assert (await ws.receive()).data == "after"
    assert (WSMsgType.PONG, b"from-upstream") in peer.received


async def test_a_client_ping_is_answered_by_the_upstream(
    sim: simulator.Simulator, start_daemon: DaemonFactory
) -> None:
    meter = await start_daemon(sim.url)
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{meter.base_url}/tts", headers=AUTH, autoping=False) as ws,
    ):
        await ws.ping(b"are you there")
        msg = await ws.receive()
        assert (msg.type, msg.data) == (WSMsgType.PONG, b"are you there")  # the simulator's


async def test_upstream_that_drops_the_connection_drops_the_client(
    peer: Peer, relay: RunningDaemon
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{relay.base_url}/echo", headers=AUTH) as ws,
    ):
        await ws.send_str("drop")
        msg = await ws.receive()
        assert msg.type in (WSMsgType.CLOSED, WSMsgType.CLOSE, WSMsgType.ERROR)
        assert ws.close_code != 1000
    [row] = await relay.rows(1)
    assert (row["error"], row["error_detail"]) == ("upstream_stream_cut", "upstream gone")


async def test_client_that_vanishes_closes_the_upstream_going_away(
    peer: Peer, relay: RunningDaemon
) -> None:
    host, port = relay.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"GET /v1/echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Authorization: " + AUTH["Authorization"].encode() + b"\r\n\r\n"
    )
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    writer.transport.abort()  # gone, without a close frame
    async with asyncio.timeout(5):
        await peer.ended.wait()
    assert peer.close_code == 1001
    [row] = await relay.rows(1)
    assert row["error"] == "client_disconnect"


async def test_a_slow_reader_holds_back_the_upstream(peer: Peer, relay: RunningDaemon) -> None:
    """Backpressure: while the client reads nothing, the upstream can only send what the
    socket buffers hold, not the whole flood; then everything arrives, in order."""
    total = 96
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{relay.base_url}/echo", headers=AUTH, max_msg_size=2 << 20) as ws,
    ):
        await ws.send_str(f"flood {total}")
        async with asyncio.timeout(10):  # until the flood stalls: no progress for 0.3 s
            last = -1
            while peer.flooded != last:
                last = peer.flooded
                await asyncio.sleep(0.3)
        assert peer.flooded < total // 2, "the relay buffered the flood instead of holding it"
        for _ in range(total):
            msg = await ws.receive()
            assert (msg.type, len(msg.data)) == (WSMsgType.BINARY, 1 << 20)
    assert peer.flooded == total


async def test_unreachable_upstream_is_a_502_before_the_upgrade(
    start_daemon: DaemonFactory,
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    meter = await start_daemon(f"http://127.0.0.1:{port}")
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(f"{meter.base_url}/realtime", headers=AUTH)
        assert refused.value.status == 502
    [row] = await meter.rows(1)
    assert (row["status"], row["error"], row["metered"]) == (502, "upstream_unreachable", 1)
    assert (row["endpoint"], row["transport"]) == ("realtime", "websocket")


@pytest.mark.parametrize(("header", "status"), [("X-Sim-Status", 503), ("X-Sim-Status", 429)])
async def test_upstream_refusal_keeps_its_status(
    sim: simulator.Simulator, start_daemon: DaemonFactory, header: str, status: int
) -> None:
    meter = await start_daemon(sim.url)
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(
                f"{meter.base_url}/responses", headers={**AUTH, header: str(status)}
            )
        assert refused.value.status == status
        assert refused.value.headers is not None
        assert refused.value.headers.get("retry-after") == ("1" if status == 429 else None)
    [row] = await meter.rows(1)
    assert (row["status"], row["error"], row["metered"]) == (status, "http_error", 1)
    assert row["request_id"] == refused.value.headers["x-request-id"]


async def test_a_missing_key_is_the_upstreams_401_and_a_configured_key_is_added(
    sim: simulator.Simulator, start_daemon: DaemonFactory
) -> None:
    bare = await start_daemon(sim.url)
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(f"{bare.base_url}/tts")
        assert refused.value.status == 401
    keyed = await start_daemon(sim.url, api_key="xai-configured-key")
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{keyed.base_url}/tts") as ws,
    ):
        await ws.close()
    assert sim.state.requests[-1].headers["Authorization"] == "Bearer xai-configured-key"


async def test_a_client_secret_subprotocol_is_passed_and_no_key_added(
    sim: simulator.Simulator, start_daemon: DaemonFactory
) -> None:
    meter = await start_daemon(sim.url, api_key="xai-configured-key")
    secret = "xai-client-secret.ephemeral-123"
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(
            f"{meter.base_url}/realtime?model=grok-voice-latest", protocols=[secret]
        ) as ws,
    ):
        assert ws.protocol == secret
        await ws.send_str(json.dumps({"type": "input_audio_buffer.clear"}))
        assert json.loads((await ws.receive()).data)["type"] == "conversation.created"
    [log] = sim.state.sockets
    assert (log.protocol, log.query_string) == (secret, "model=grok-voice-latest")
    received = sim.state.requests[-1].headers
    assert "Authorization" not in received
    assert received["Sec-WebSocket-Protocol"] == secret
    [row] = await meter.rows(1)
    assert row["key_id"] is None


async def test_a_plain_get_on_a_socket_path_is_relayed_as_http(
    sim: simulator.Simulator, start_daemon: DaemonFactory
) -> None:
    meter = await start_daemon(sim.url)
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{meter.base_url}/realtime", headers={**AUTH, "Upgrade": "h2c"}) as r,
    ):
        assert r.status == 400  # the simulator's answer to a GET that is no upgrade
    [row] = await meter.rows(1)
    assert row["transport"] == "http"


async def test_a_meter_that_raises_drops_nothing_and_leaves_the_row_unmetered(
    sim: simulator.Simulator, start_daemon: DaemonFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Broken(TtsSocketTap):
        def client_message(self, data: bytes, text: bool) -> None:
            raise ValueError("a bug in a socket tap")

    monkeypatch.setitem(dialects._SOCKET_TAPS, "/v1/tts", Broken)
    meter = await start_daemon(sim.url)
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{meter.base_url}/tts", headers=AUTH) as ws,
    ):
        await ws.send_str(json.dumps({"type": "text.delta", "delta": "still spoken"}))
        await ws.send_str(json.dumps({"type": "text.done"}))
        kinds = []
        while not kinds or kinds[-1] != "audio.done":
            kinds.append(json.loads((await ws.receive()).data)["type"])
    assert kinds == ["audio.delta", "audio.delta", "audio.done"]
    [row] = await meter.rows(1)
    assert (row["metered"], row["unmetered_reason"], row["cost_ticks"]) == (0, "parser_error", None)
    assert (row["status"], row["error"]) == (101, None)
