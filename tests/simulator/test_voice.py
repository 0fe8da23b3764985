"""The simulator's voice over REST and deferred image jobs (xai-api.md "Voice", "Images")."""

from __future__ import annotations

import aiohttp

from daemon.simulator import Simulator
from daemon.simulator.voice import AUDIO_BYTES_PER_CHAR, AUDIO_FORMATS, speech_audio


async def test_tts_answers_deterministic_raw_audio(http: aiohttp.ClientSession) -> None:
    async with http.post("/v1/tts", json={"text": "Hello 😀", "language": "en"}) as r:
        assert (r.status, r.content_type) == (200, "audio/mpeg")
        audio = await r.read()
    assert audio == speech_audio("Hello 😀")
    assert audio.startswith(b"ID3") and len(audio) == 10 + 7 * AUDIO_BYTES_PER_CHAR
    for hostile in (b"\r\n", b"\x00", b"data: {", b"\xff\xfe"):
        assert hostile in audio  # a relay that touches them is caught
    async with http.post(
        "/v1/tts", json={"text": "Hi", "language": "en", "output_format": "wav"}
    ) as r:
        assert r.content_type == "audio/wav" and (await r.read()).startswith(b"RIFF")
    assert set(AUDIO_FORMATS) == {"mp3", "wav", "pcm", "mulaw", "alaw"}
    for bad in ({"language": "en"}, {"text": "x", "output_format": "ogg"}, {"text": "x" * 15_001}):
        async with http.post("/v1/tts", json=bad) as r:
            assert r.status == 422
            assert set(await r.json()) == {"code", "error"}


async def test_stt_answers_the_uploads_duration(http: aiohttp.ClientSession) -> None:
    form = aiohttp.FormData()
    form.add_field("file", b"\x00\x01" * 48_000, filename="a.pcm", content_type="audio/pcm")
    form.add_field("language", "de")
    async with http.post("/v1/stt", data=form) as r:
        answer = await r.json()
    assert (r.status, answer["duration"], answer["language"]) == (200, 3.0, "de")
    assert len(answer["words"]) == 6 and answer["words"][-1]["end"] == 3.0
    assert answer["text"] == " ".join(w["text"] for w in answer["words"])
    async with http.post("/v1/stt", json={"url": "https://x/a.mp3"}) as r:
        assert (await r.json())["duration"] == 60.0
    async with http.post("/v1/stt", json={"language": "en"}) as r:
        assert r.status == 422


async def test_deferred_image_jobs_end_after_their_polls(
    http: aiohttp.ClientSession, sim: Simulator
) -> None:
    sim.state.image_polls = 2
    body = {"model": "grok-imagine-image", "prompt": "p", "n": 1, "deferred": True}
    async with http.post("/v1/images/generations", json=body) as r:
        request_id = (await r.json())["request_id"]
    statuses = []
    for _ in range(4):
        async with http.get(f"/v1/images/{request_id}") as r:
            statuses.append((r.status, await r.json() if r.status == 200 else None))
    assert [s for s, _ in statuses] == [202, 202, 200, 200]
    done = statuses[2][1]
    assert done["status"] == "done" and done["usage"] == {"cost_in_usd_ticks": 200_000_000}
    assert statuses[3][1] == done
    headers = {"X-Sim-Image-Outcome": "failed", "X-Sim-Image-Polls": "0"}
    async with http.post("/v1/images/generations", json=body, headers=headers) as r:
        failed = (await r.json())["request_id"]
    async with http.get(f"/v1/images/{failed}") as r:
        assert (await r.json())["status"] == "failed"
    sim.state.image_pending_200 = True
    async with http.post("/v1/images/generations", json=body) as r:
        pending = (await r.json())["request_id"]
    async with http.get(f"/v1/images/{pending}") as r:
        assert (r.status, await r.json()) == (200, {"status": "pending"})
    async with http.get("/v1/images/no-such-job") as r:
        assert r.status == 404
