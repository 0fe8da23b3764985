"""The voice sockets through the daemon: one row per session, billed by what was sent (realtime
and STT: seconds of audio at the session's format; TTS: characters), priced from the catalog
(``cost_source = 'computed'``: none reports a cost), messages unchanged both ways."""

from __future__ import annotations

import base64
import json
from fractions import Fraction
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import WSMsgType

from daemon import simulator
from daemon.dialects.voice_sockets import (
    RealtimeTap,
    base64_length,
    client_bytes_per_second,
    input_bytes_per_second,
)
from daemon.simulator.realtime import AUDIO_TOKENS_PER_SECOND
from daemon.testing import TEST_KEY, RunningDaemon, make_record

AUTH = {"Authorization": f"Bearer {TEST_KEY}"}
# The catalog's prices in force now (daemon/pricing/catalog.toml), in ticks:
REALTIME_PER_MINUTE = 800_000_000  # $0.08 per minute, since 2026-09-01
TTS_PER_CHARACTER = 150_000  # $15 per 1M characters, since 2026-05-15
STT_STREAMING_PER_HOUR = 2_000_000_000  # $0.20 per hour


def append(audio: bytes) -> str:
    return json.dumps(
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(audio).decode()}
    )


def event(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields})


async def until(ws: aiohttp.ClientWebSocketResponse, kind: str) -> list[dict[str, Any]]:
    """The server's events up to and including the first of `kind`."""
    events = []
    while True:
        msg = await ws.receive()
        assert msg.type is WSMsgType.TEXT, msg
        events.append(json.loads(msg.data))
        if events[-1]["type"] == kind:
            return events


async def test_realtime_is_billed_per_second_of_audio_sent_at_the_sessions_format(
    sim: simulator.Simulator, meter: RunningDaemon
) -> None:
    pcm16k = {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}}
    ulaw = {"audio": {"input": {"format": {"type": "audio/pcmu"}}}}
    sent: list[str] = []
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{meter.base_url}/realtime?model=grok-voice-latest", headers=AUTH) as ws,
    ):
        await until(ws, "conversation.created")

        async def send(message: str) -> None:
            sent.append(message)
            await ws.send_str(message)

        await send(append(b"\x01\x02" * 12_000))  # 24,000 bytes at the default pcm16 24 kHz: 0.5 s
        await send(event("session.update", session=pcm16k))
        await until(ws, "session.updated")
        for _ in range(3):
            await send(append(b"\x00" * 16_000))  # 0.5 s each at pcm16 16 kHz
        await send(event("input_audio_buffer.commit"))
        await send(event("response.create"))
        first = (await until(ws, "response.done"))[-1]["response"]["usage"]
        await send(event("session.update", session=ulaw))
        await until(ws, "session.updated")
        await send(append(b"\xff" * 2_000))  # 0.25 s of G.711 at 8 kHz
        await send(event("input_audio_buffer.commit"))
        await send(event("response.create"))
        second = (await until(ws, "response.done"))[-1]["response"]["usage"]
    [row] = await meter.rows(1)
    seconds = Fraction(1, 2) + 3 * Fraction(1, 2) + Fraction(1, 4)  # 2.25 s
    assert row["audio_seconds"] == float(seconds) == 2.25
    assert row["computed_cost_ticks"] == int(seconds * REALTIME_PER_MINUTE / 60) == 30_000_000
    assert (row["cost_ticks"], row["cost_source"], row["catalog_rate"]) == (
        30_000_000,
        "computed",
        "realtime",
    )
    assert (row["endpoint"], row["transport"], row["status"], row["error"]) == (
        "realtime",
        "websocket",
        101,
        None,
    )
    assert (row["requested_model"], row["model"]) == (
        "grok-voice-latest",
        "grok-voice-think-fast-2.0",
    )
    assert row["input_tokens"] == first["input_tokens"] + second["input_tokens"]
    assert row["output_tokens"] == first["output_tokens"] + second["output_tokens"]
    cached = first["input_token_details"]["cached_tokens"]
    assert row["cached_input_tokens"] == cached + second["input_token_details"]["cached_tokens"]
    assert (row["reported_cost_ticks"], row["metered"]) == (None, 1)
    [log] = sim.state.sockets
    assert log.received == sent


ULAW_NEW = {"audio": {"input": {"format": {"type": "audio/pcmu"}}}}
PCM24K_NEW = {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}}}}


@pytest.mark.parametrize(
    ("first", "second", "first_rate", "second_rate"),
    [
        # μ-law in the newer field, then 24 kHz PCM in the older one: the echo of the second
        # carries both fields; the client's older one is what its audio now is.
        (ULAW_NEW, {"input_audio_format": "pcm16"}, 8_000, 48_000),
        # the other way round: μ-law in the older field, then 24 kHz PCM in the newer one
        ({"input_audio_format": "g711_ulaw"}, PCM24K_NEW, 8_000, 48_000),
        # one message naming both, disagreeing: the older field is the app's word
        ({**ULAW_NEW, "input_audio_format": "pcm16"}, ULAW_NEW, 48_000, 8_000),
    ],
)
async def test_realtime_counts_audio_at_the_format_the_client_declared(
    sim: simulator.Simulator,
    meter: RunningDaemon,
    first: dict[str, Any],
    second: dict[str, Any],
    first_rate: int,
    second_rate: int,
) -> None:
    """The app encodes what it sends: the format its last ``session.update`` declared (the
    older field when one message names both) counts, whatever the upstream's echo carries
    beside it. The simulator bills input audio tokens by the same format: the row's seconds
    are exactly the ones it counted."""
    audio_tokens = 0
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{meter.base_url}/realtime", headers=AUTH) as ws,
    ):
        await until(ws, "conversation.created")
        for update, size in ((first, 24_000), (second, 48_000)):
            await ws.send_str(event("session.update", session=update))
            await until(ws, "session.updated")
            await ws.send_str(append(b"\xff" * size))
            await ws.send_str(event("input_audio_buffer.commit"))
            await ws.send_str(event("response.create"))
            done = (await until(ws, "response.done"))[-1]["response"]["usage"]
            audio_tokens += done["input_token_details"]["audio_tokens"]
    [row] = await meter.rows(1)
    seconds = Fraction(24_000, first_rate) + Fraction(48_000, second_rate)
    assert row["audio_seconds"] == float(seconds) == (4.0 if first_rate == 8_000 else 6.5)
    assert audio_tokens == seconds * AUDIO_TOKENS_PER_SECOND  # the simulator agrees
    assert row["cost_ticks"] == int(seconds * REALTIME_PER_MINUTE / 60)


async def test_realtime_follows_the_upstreams_format_until_the_client_declares_one(
    sim: simulator.Simulator, meter: RunningDaemon
) -> None:
    """Before the client names a format, the upstream's ``session.created``/``updated`` says
    it: a session the upstream runs at μ-law counts the first audio at 8 kHz (its echo of an
    update that names no format says so); then the client declares 24 kHz PCM."""
    sim.state.realtime_input_format = {"type": "audio/pcmu", "rate": 8000}
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{meter.base_url}/realtime", headers=AUTH) as ws,
    ):
        await until(ws, "conversation.created")
        await ws.send_str(event("session.update", session={"voice": "eve"}))
        [updated] = await until(ws, "session.updated")
        assert updated["session"]["audio"]["input"]["format"]["type"] == "audio/pcmu"
        await ws.send_str(append(b"\xff" * 8_000))  # 1 s of μ-law
        await ws.send_str(event("session.update", session={"input_audio_format": "pcm16"}))
        await until(ws, "session.updated")
        await ws.send_str(append(b"\x00" * 48_000))  # 1 s of 24 kHz PCM
    [row] = await meter.rows(1)
    assert row["audio_seconds"] == 2.0


def test_an_echo_naming_both_formats_cannot_override_the_clients() -> None:
    """An upstream echo that carries the new ``audio.input.format`` and the older
    ``input_audio_format`` disagreeing (as one that keeps both and updates only the field it
    was sent): the client's declaration stands, in either order of the client's fields."""
    both = {
        "type": "session.updated",
        "session": {"audio": {"input": {"format": {"type": "audio/pcmu"}}},
                    "input_audio_format": "pcm16"},
    }  # fmt: skip
    for declared, rate in ((ULAW_NEW, 8_000), ({"input_audio_format": "pcm16"}, 48_000)):
        tap = RealtimeTap(make_record(endpoint="realtime"), cast(Any, None))
        tap.server_message(json.dumps(both).encode(), True)  # before any declaration: counts
        assert tap.bytes_per_second == 8_000  # the upstream's newer field
        tap.client_message(event("session.update", session=declared).encode(), True)
        tap.server_message(json.dumps(both).encode(), True)
        assert tap.bytes_per_second == rate


def test_input_formats_read_from_a_session_object() -> None:
    pcm = {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 44100}}}}
    assert input_bytes_per_second(pcm) == 88_200
    assert input_bytes_per_second({"audio": {"input": {"format": {"type": "audio/pcma"}}}}) == 8_000
    assert input_bytes_per_second({"audio": {"input": {"format": {"type": "audio/pcm"}}}}) == 48_000
    assert input_bytes_per_second({"input_audio_format": "g711_ulaw"}) == 8_000
    assert input_bytes_per_second({"input_audio_format": "pcm16"}) == 48_000
    assert input_bytes_per_second({"voice": "eve"}) is None
    assert input_bytes_per_second({"audio": {"input": {"format": {"type": "audio/opus"}}}}) is None
    assert input_bytes_per_second("nonsense") is None
    both = {"audio": {"input": {"format": {"type": "audio/pcmu"}}}, "input_audio_format": "pcm16"}
    assert (input_bytes_per_second(both), client_bytes_per_second(both)) == (8_000, 48_000)
    assert client_bytes_per_second({"input_audio_format": "opus"}) is None
    assert base64_length(base64.b64encode(b"12345").decode()) == 5
    assert base64_length(base64.b64encode(b"12345").decode().rstrip("=")) == 5


async def test_a_realtime_session_the_upstream_cuts_is_billed_for_what_was_sent(
    sim: simulator.Simulator, meter: RunningDaemon
) -> None:
    headers = {**AUTH, "X-Sim-Cut-After": "3"}
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{meter.base_url}/realtime", headers=headers) as ws,
    ):
        await until(ws, "conversation.created")
        await ws.send_str(append(b"\x00" * 48_000))  # 1 s
        await ws.send_str(event("input_audio_buffer.commit"))
        await ws.send_str(event("response.create"))
        while (await ws.receive()).type is WSMsgType.TEXT:
            pass
    [row] = await meter.rows(1)
    assert (row["audio_seconds"], row["metered"]) == (1.0, 1)
    assert (row["error"], row["error_detail"]) == ("upstream_stream_cut", "upstream gone")
    assert row["cost_ticks"] == REALTIME_PER_MINUTE // 60
    assert row["input_tokens"] == 0  # the response.done never came


async def test_tts_is_billed_per_character_of_text_sent(
    sim: simulator.Simulator, meter: RunningDaemon
) -> None:
    pieces = ["Hello, ", "wörld ✓"]
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{meter.base_url}/tts?voice=eve&language=en", headers=AUTH) as ws,
    ):
        for piece in pieces:
            await ws.send_str(event("text.delta", delta=piece))
        await ws.send_str(event("text.done"))
        audio = await until(ws, "audio.done")
        await ws.send_str(event("text.delta", delta="again"))
        await ws.send_str(event("text.done"))
        audio += await until(ws, "audio.done")
    characters = len("Hello, wörld ✓") + len("again")
    assert characters == 19
    [row] = await meter.rows(1)
    assert (row["characters"], row["catalog_rate"], row["endpoint"]) == (19, "tts", "tts")
    assert row["cost_ticks"] == 19 * TTS_PER_CHARACTER == 2_850_000
    assert (row["cost_source"], row["status"], row["transport"]) == ("computed", 101, "websocket")
    [log] = sim.state.sockets
    assert [json.loads(m) for m in log.sent] == audio
    assert log.query_string == "voice=eve&language=en"


async def test_stt_is_billed_per_second_of_binary_audio_at_the_query_format(
    sim: simulator.Simulator, meter: RunningDaemon
) -> None:
    chunks = [bytes(range(256)) * 16, b"\x7f" * 4_000, b"\x80" * 3_904]  # 12,000 bytes
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(
            f"{meter.base_url}/stt?sample_rate=8000&encoding=mulaw", headers=AUTH
        ) as ws,
    ):
        for chunk in chunks:
            await ws.send_bytes(chunk)
        await ws.send_str(event("audio.done"))
        [done] = await until(ws, "transcript.done")
        await ws.send_bytes(b"\x00" * 4_000)
        await ws.send_str(event("audio.done"))
        await until(ws, "transcript.done")
    assert done["duration"] == 1.5  # the upstream's own count agrees
    [row] = await meter.rows(1)
    assert (row["audio_seconds"], row["catalog_rate"], row["endpoint"]) == (
        2.0,
        "stt:streaming",
        "stt",
    )
    assert row["cost_ticks"] == 2 * STT_STREAMING_PER_HOUR // 3600 == 1_111_111
    [log] = sim.state.sockets
    assert log.received[:3] == chunks  # binary frames unchanged


async def test_stt_defaults_to_16_khz_pcm(sim: simulator.Simulator, meter: RunningDaemon) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{meter.base_url}/stt", headers=AUTH) as ws,
    ):
        await ws.send_bytes(b"\x00\x01" * 16_000)  # 1 s: 16,000 samples of 2 bytes
        await ws.send_str(event("audio.done"))
        [done] = await until(ws, "transcript.done")
    assert done["duration"] == 1.0
    [row] = await meter.rows(1)
    assert row["audio_seconds"] == 1.0
