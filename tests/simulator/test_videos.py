"""Video jobs: a request id, pending polls, then the same end on every poll; failed, expired."""

from __future__ import annotations

import aiohttp

from daemon.simulator import Simulator


async def post(http: aiohttp.ClientSession, path: str, body: object, **headers: str) -> str:
    async with http.post(path, json=body, headers=headers) as resp:
        assert resp.status == 200
        return str((await resp.json())["request_id"])


async def poll(http: aiohttp.ClientSession, request_id: str) -> tuple[int, object]:
    async with http.get(f"/v1/videos/{request_id}") as resp:
        return resp.status, await resp.json()


async def test_a_job_is_pending_then_done_on_every_poll(
    http: aiohttp.ClientSession, sim: Simulator
) -> None:
    body = {
        "prompt": "a meter",
        "model": "grok-imagine-video-1.5",
        "resolution": "1080p",
        "duration": 5,
        "reference_images": [{"url": "https://x/a.png"}, {"url": "https://x/b.png"}],
    }
    rid = await post(http, "/v1/videos/generations", body, **{"X-Sim-Video-Polls": "2"})
    assert await poll(http, rid) == (202, {"status": "pending", "progress": 20})
    assert await poll(http, rid) == (202, {"status": "pending", "progress": 40})
    status, done = await poll(http, rid)
    assert status == 200 and isinstance(done, dict)
    # 5 s at $0.25/s and two input images at $0.002
    assert done["usage"] == {"cost_in_usd_ticks": 5 * 2_500_000_000 + 2 * 20_000_000}
    assert (done["status"], done["model"], done["progress"]) == ("done", body["model"], 100)
    assert done["video"]["duration"] == 5 and done["video"]["url"].endswith(".mp4")
    assert await poll(http, rid) == (200, done)  # the same end again

    # An edit of that video: as long as its input, billed per second of it too.
    edit = {"prompt": "bluer", "video": {"url": done["video"]["url"]}, "resolution": "720p"}
    rid = await post(http, "/v1/videos/edits", edit, **{"X-Sim-Video-Polls": "0"})
    status, edited = await poll(http, rid)
    assert status == 200 and isinstance(edited, dict)
    assert edited["video"]["duration"] == 5
    assert edited["usage"] == {"cost_in_usd_ticks": 5 * 700_000_000 + 5 * 100_000_000}


async def test_failed_expired_pending_200_and_refusals(
    http: aiohttp.ClientSession, sim: Simulator
) -> None:
    sim.state.video_pending_200 = True
    failed = await post(
        http, "/v1/videos/generations", {"prompt": "x"}, **{"X-Sim-Video-Outcome": "failed"}
    )
    assert await poll(http, failed) == (200, {"status": "pending", "progress": 20})
    status, body = await poll(http, failed)
    assert status == 200 and isinstance(body, dict)
    assert (body["status"], body["error"]["code"]) == ("failed", "moderation_blocked")
    expired = await post(
        http,
        "/v1/videos/extensions",
        {"prompt": "x", "video": "https://x/v.mp4"},
        **{"X-Sim-Video-Outcome": "expired", "X-Sim-Video-Polls": "0"},
    )
    assert await poll(http, expired) == (200, {"status": "expired"})
    assert (await poll(http, "nope"))[0] == 404
    for path, body in (
        ("/v1/videos/generations", {"prompt": "x", "resolution": "1080p"}),  # 1.0: no 1080p
        ("/v1/videos/generations", {"prompt": "x", "duration": 16}),
        ("/v1/videos/edits", {"prompt": "x"}),  # no input video
    ):
        async with http.post(path, json=body) as resp:
            assert resp.status == 422
    async with http.post("/v1/videos/generations", json={"prompt": "x", "model": "no"}) as r:
        assert r.status == 404
    async with http.get("/v1/video-generation-models") as resp:
        models = (await resp.json())["models"]
    assert [m["id"] for m in models] == ["grok-imagine-video", "grok-imagine-video-1.5"]
    assert all("price" not in key for m in models for key in m)
