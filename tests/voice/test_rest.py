"""`POST /v1/tts` and `POST /v1/stt` through the daemon, with aiohttp (the openai SDK's audio
calls go to /v1/audio/*, not xAI's paths): exact rows and costs from the catalog, computed by
hand; billed once per call; the audio bytes reach the client untouched."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from daemon import simulator
from daemon.simulator.voice import PCM_BYTES_PER_SECOND, speech_audio
from daemon.testing import TEST_KEY, RunningDaemon

AUTH = {"Authorization": f"Bearer {TEST_KEY}"}
NOV_2026 = 1793491200.0  # 2026-11-01T00:00:00Z
APR_2026 = 1775001600.0  # 2026-04-01T00:00:00Z: before the $15 TTS price (2026-05-15)
TTS_TICKS_PER_CHAR = 150_000  # catalog "tts" from 2026-05-15: $15 per 1M characters
TTS_TICKS_PER_CHAR_MARCH = 42_000  # catalog "tts" from 2026-03-16: $4.20 per 1M characters
STT_REST_TICKS_PER_HOUR = 1_000_000_000  # catalog "stt:rest": $0.10 per hour

# 5 ASCII letters, 4 spaces, an accented letter, 3 CJK characters, an emoji, and a letter with a
# combining accent: 16 code points (the emoji is 2 UTF-16 units and 4 UTF-8 bytes; "é" is one
# code point, "e\u0301" two, as sent: no normalization).
TEXT = "Hello é 你好吗 😀 e\u0301"
CODE_POINTS = 16


async def tts(meter: RunningDaemon, body: dict[str, Any], **headers: str) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{meter.base_url}/tts", json=body, headers={**AUTH, **headers}) as r,
    ):
        return r.status, await r.read()


def test_the_sample_text_counts_as_its_code_points() -> None:
    assert len(TEXT) == CODE_POINTS
    assert len(TEXT.encode("utf-16-le")) // 2 == CODE_POINTS + 1  # the emoji's surrogate pair
    assert len(TEXT.encode()) > CODE_POINTS


async def test_tts_is_billed_per_code_point_and_its_audio_passes_untouched(
    meter_at: Callable[..., Any], sim: simulator.Simulator
) -> None:
    meter = await meter_at(NOV_2026)
    status, audio = await tts(meter, {"text": TEXT, "voice_id": "eve", "language": "en"})
    assert status == 200
    assert audio == speech_audio(TEXT) == sim.state.sent[-1]  # byte for byte, CR/LF/NUL too
    status2, audio2 = await tts(meter, {"text": "Hi", "language": "en", "output_format": "wav"})
    assert (status2, audio2) == (200, speech_audio("Hi", "wav"))
    first, second = await meter.rows(2)
    assert (first["endpoint"], first["method"], first["status"]) == ("tts", "POST", 200)
    assert (first["catalog_rate"], first["characters"]) == ("tts", CODE_POINTS)
    assert first["computed_cost_ticks"] == CODE_POINTS * TTS_TICKS_PER_CHAR == 2_400_000
    assert (first["cost_ticks"], first["cost_source"]) == (2_400_000, "computed")
    assert first["reported_cost_ticks"] is None and first["metered"] == 1
    assert (first["input_tokens"], first["output_tokens"], first["audio_seconds"]) == (0, 0, None)
    assert (second["characters"], second["cost_ticks"]) == (2, 2 * TTS_TICKS_PER_CHAR)
    spend = meter.metric("xai_meter_cost_usd_total", provider="xai", model="none")
    assert spend == pytest.approx((2_400_000 + 300_000) / 1e10)


async def test_tts_takes_the_price_in_force_when_the_call_was_made(
    meter_at: Callable[..., Any],
) -> None:
    meter = await meter_at(APR_2026)
    assert (await tts(meter, {"text": TEXT, "language": "en"}))[0] == 200
    [row] = await meter.rows(1)
    assert row["cost_ticks"] == CODE_POINTS * TTS_TICKS_PER_CHAR_MARCH == 672_000


async def test_tts_catalog_override_wins(meter_at: Callable[..., Any]) -> None:
    meter = await meter_at(
        NOV_2026, pricing__overrides={"catalog": {"tts": 4.2}}
    )  # USD per 1M characters, in force at every time
    assert (await tts(meter, {"text": TEXT, "language": "en"}))[0] == 200
    [row] = await meter.rows(1)
    assert row["cost_ticks"] == CODE_POINTS * 42_000


async def test_tts_cut_short_is_unmetered_and_an_error_bills_nothing(
    meter_at: Callable[..., Any], sim: simulator.Simulator
) -> None:
    meter = await meter_at(NOV_2026)
    with pytest.raises(aiohttp.ClientPayloadError):
        await tts(meter, {"text": TEXT, "language": "en"}, **{"X-Sim-Cut-After": "1"})
    status, body = await tts(meter, {"text": "", "language": "en"})
    assert status == 422 and b"text" in body
    cut, failed = await meter.rows(2)
    assert (cut["metered"], cut["unmetered_reason"], cut["cost_ticks"]) == (0, "incomplete", None)
    assert cut["characters"] is None
    assert (failed["status"], failed["error"], failed["cost_ticks"]) == (422, "http_error", None)
    assert failed["upstream_error"] == "Unprocessable entity" and failed["metered"] == 1


def stt_form(audio: bytes, **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("file", audio, filename="call.pcm", content_type="audio/pcm")
    for name, value in fields.items():
        form.add_field(name, value)
    return form


async def test_stt_is_billed_per_second_of_the_answers_duration(
    meter_at: Callable[..., Any],
) -> None:
    meter = await meter_at(NOV_2026)
    audio = bytes(range(256)) * 440  # every byte value, CR and LF included
    assert len(audio) == PCM_BYTES_PER_SECOND * 352 // 100  # 3.52 s of 16 kHz 16-bit PCM
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{meter.base_url}/stt",
            data=stt_form(audio, model="grok-stt", language="fr"),
            headers=AUTH,
        ) as r:
            answer = await r.json()
        assert (r.status, answer["duration"], answer["language"]) == (200, 3.52, "fr")
        async with http.post(
            f"{meter.base_url}/stt", json={"url": "https://example.com/a.mp3"}, headers=AUTH
        ) as r:
            assert (r.status, (await r.json())["duration"]) == (200, 60.0)
    first, second = await meter.rows(2)
    assert (first["endpoint"], first["requested_model"], first["catalog_rate"]) == (
        "stt",
        "grok-stt",
        "stt:rest",
    )
    assert first["audio_seconds"] == 3.52
    # 3.52 s x $0.10 per hour = 3.52 x 1e9 / 3600 ticks = 977,777.7…, rounded down once
    assert first["computed_cost_ticks"] == 3_520_000_000 // 3600 == 977_777
    assert (first["cost_ticks"], first["cost_source"]) == (977_777, "computed")
    assert second["cost_ticks"] == 60 * STT_REST_TICKS_PER_HOUR // 3600 == 16_666_666


async def test_stt_without_a_duration_is_unmetered(meter_at: Callable[..., Any]) -> None:
    meter = await meter_at(NOV_2026)
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{meter.base_url}/stt",
            data=stt_form(b"\x01\x02" * 1000),
            headers={**AUTH, "X-Sim-Usage": "none"},
        ) as r,
    ):
        assert r.status == 200 and "duration" not in await r.json()
    [row] = await meter.rows(1)
    assert (row["metered"], row["unmetered_reason"], row["cost_ticks"]) == (0, "no_usage", None)
