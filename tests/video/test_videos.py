"""Video jobs through the daemon, against the simulator, with aiohttp (the openai SDK's videos
are OpenAI's, at other paths): the POST row pending, the poll that first says done billed once
and linked to it, pending polls and repeats unbilled, failed and expired jobs unbilled with the
POST row saying so, restarts on either side of the result, the client's bytes unchanged."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from daemon import simulator
from daemon.testing import TEST_KEY, DaemonFactory, RunningDaemon

# Catalog prices (xai-api.md "Models (late 2026)"), ticks: per second by model and resolution,
# per input image, per second of input video.
VIDEO_480P, VIDEO_720P = 500_000_000, 700_000_000
V15_1080P = 2_500_000_000
IMAGE_INPUT, VIDEO_INPUT = 20_000_000, 100_000_000

COLUMNS = (
    "endpoint",
    "method",
    "status",
    "deferred",
    "deferred_state",
    "video_request",
    "requested_model",
    "model",
    "catalog_rate",
    "video_seconds",
    "video_image_inputs",
    "video_input_seconds",
    "reported_cost_ticks",
    "computed_cost_ticks",
    "cost_ticks",
    "cost_source",
    "upstream_error",
    "metered",
)


@pytest.fixture
async def http(sim: simulator.Simulator) -> AsyncIterator[aiohttp.ClientSession]:
    del sim  # the daemon under test relays to it
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TEST_KEY}"}) as s:
        yield s


async def start(
    http: aiohttp.ClientSession,
    sim: simulator.Simulator,
    meter: RunningDaemon,
    kind: str,
    body: dict[str, Any],
    **headers: str,
) -> str:
    async with http.post(f"{meter.base_url}/videos/{kind}", json=body, headers=headers) as r:
        assert r.status == 200
        raw = await r.read()
    assert raw == sim.state.sent[-1]
    return str(orjson.loads(raw)["request_id"])


async def poll(
    http: aiohttp.ClientSession, sim: simulator.Simulator, meter: RunningDaemon, request_id: str
) -> tuple[int, Any]:
    """One poll; the client gets the simulator's bytes, unchanged."""
    async with http.get(f"{meter.base_url}/videos/{request_id}") as resp:
        raw = await resp.read()
        status = resp.status
    assert raw == sim.state.sent[-1]
    return status, orjson.loads(raw)


def pick(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[c] for c in COLUMNS)


async def test_a_job_is_billed_once_at_done_and_linked_to_its_post(
    sim: simulator.Simulator, meter: RunningDaemon, http: aiohttp.ClientSession
) -> None:
    body = {
        "prompt": "a meter spinning",
        "model": "grok-imagine-video",
        "resolution": "720p",
        "duration": 5,
        "image": {"url": "https://example.com/first.png"},
    }
    rid = await start(http, sim, meter, "generations", body, **{"X-Sim-Video-Polls": "2"})
    assert [(await poll(http, sim, meter, rid))[0] for _ in range(2)] == [202, 202]
    status, done = await poll(http, sim, meter, rid)
    assert status == 200 and done["status"] == "done"
    assert await poll(http, sim, meter, rid) == (200, done)  # the same result again
    cost = 5 * VIDEO_720P + IMAGE_INPUT
    assert done["usage"] == {"cost_in_usd_ticks": cost}
    rows = await meter.rows(5)
    post, *polls = rows
    result = "grok-imagine-video", "video:720p", 5.0, 1, None, cost, cost, cost, "reported"
    assert [pick(r) for r in rows] == [
        ("videos.generations", "POST", 200, 1, "completed", "generations/720p/1",
         "grok-imagine-video", None, None, None, None, None, None, None, None, None, None, 1),
        ("videos.result", "GET", 202, 0, None, None, None, None, None, None, None, None, None,
         None, None, None, None, 1),
        ("videos.result", "GET", 202, 0, None, None, None, None, None, None, None, None, None,
         None, None, None, None, 1),
        ("videos.result", "GET", 200, 0, "result", "generations/720p/1", None, *result, None, 1),
        ("videos.result", "GET", 200, 0, "duplicate", None, None, "grok-imagine-video", None,
         None, None, None, None, None, None, None, None, 1),
    ]  # fmt: skip
    assert post["response_id"] == rid
    assert polls[2]["linked_id"] == post["id"] and polls[2]["deferred_ms"] > 0
    assert [p["linked_id"] for p in (polls[0], polls[1], polls[3])] == [None, None, None]
    assert meter.metric("xai_meter_cost_usd_total", provider="xai", model="grok-imagine-video") == (
        pytest.approx(cost / 1e10)
    )
    assert meter.metric(
        "xai_meter_requests_total", provider="xai", endpoint="videos.result",
        model="grok-imagine-video", code="200",
    ) == 2  # fmt: skip


async def test_an_edit_bills_its_input_video_and_an_extension_shows_the_gap(
    sim: simulator.Simulator, meter: RunningDaemon, http: aiohttp.ClientSession
) -> None:
    polls = {"X-Sim-Video-Polls": "0"}
    first = {"prompt": "a meter", "model": "grok-imagine-video-1.5", "resolution": "1080p",
             "duration": 3}  # fmt: skip
    rid = await start(http, sim, meter, "generations", first, **polls)
    url = (await poll(http, sim, meter, rid))[1]["video"]["url"]
    edit = {"prompt": "bluer", "model": "grok-imagine-video-1.5", "size": "1920x1080",
            "video": {"url": url}, "reference_images": ["a", "b"]}  # fmt: skip
    rid = await start(http, sim, meter, "edits", edit, **polls)
    assert (await poll(http, sim, meter, rid))[1]["video"]["duration"] == 3
    extend = {"prompt": "and then", "video": {"url": "https://example.com/v.mp4"}, "duration": 6}
    rid = await start(http, sim, meter, "extensions", extend, **polls)
    await poll(http, sim, meter, rid)
    rows = await meter.rows(6)
    billed = [r for r in rows if r["deferred_state"] == "result"]
    edit_cost = 3 * V15_1080P + 2 * IMAGE_INPUT + 3 * VIDEO_INPUT
    extension_computed = 6 * VIDEO_480P  # its input video's length is unknown to the daemon
    extension_reported = extension_computed + 8 * VIDEO_INPUT  # the simulator's input: 8 s
    assert [
        (r["video_request"], r["catalog_rate"], r["video_seconds"], r["video_image_inputs"],
         r["video_input_seconds"], r["reported_cost_ticks"], r["computed_cost_ticks"])
        for r in billed
    ] == [
        ("generations/1080p/0", "video:1080p", 3.0, None, None, 3 * V15_1080P, 3 * V15_1080P),
        ("edits/1080p/2", "video:1080p", 3.0, 2, 3.0, edit_cost, edit_cost),
        ("extensions//0", "video", 6.0, None, None, extension_reported, extension_computed),
    ]  # fmt: skip
    gap = meter.metric(
        "xai_meter_reconciled_reported_usd_total", provider="xai", model="grok-imagine-video"
    )
    assert gap == pytest.approx(extension_reported / 1e10)
    assert meter.metric(
        "xai_meter_reconciled_computed_usd_total", provider="xai", model="grok-imagine-video"
    ) == pytest.approx(extension_computed / 1e10)


async def test_failed_and_expired_jobs_bill_nothing_and_their_posts_say_so(
    sim: simulator.Simulator, meter: RunningDaemon, http: aiohttp.ClientSession
) -> None:
    sim.state.video_pending_200 = True  # pending polls answer 200 {"status": "pending"}
    body = {"prompt": "x", "duration": 2}
    failed = await start(http, sim, meter, "generations", body, **{"X-Sim-Video-Outcome": "failed"})
    ends = {"X-Sim-Video-Outcome": "expired", "X-Sim-Video-Polls": "0"}
    expired = await start(http, sim, meter, "generations", body, **ends)
    assert await poll(http, sim, meter, failed) == (200, {"status": "pending", "progress": 20})
    assert (await poll(http, sim, meter, failed))[1]["status"] == "failed"
    assert (await poll(http, sim, meter, failed))[1]["status"] == "failed"
    assert await poll(http, sim, meter, expired) == (200, {"status": "expired"})
    rows = await meter.rows(6)
    by_id = {r["id"]: r for r in rows}
    assert [
        (r["endpoint"], r["status"], r["deferred_state"], r["linked_id"] and
         by_id[r["linked_id"]]["response_id"], r["upstream_error"], r["cost_ticks"],
         r["input_tokens"], r["metered"])
        for r in rows
    ] == [
        ("videos.generations", 200, "failed", None, None, None, None, 1),
        ("videos.generations", 200, "expired", None, None, None, None, 1),
        ("videos.result", 200, None, None, None, None, None, 1),  # pending
        ("videos.result", 200, "failed", failed, "moderation_blocked", None, None, 1),
        ("videos.result", 200, "failed", None, "moderation_blocked", None, None, 1),
        ("videos.result", 200, "expired", expired, None, None, None, 1),
    ]  # fmt: skip
    assert meter.metric("xai_meter_unmetered_total", endpoint="videos.result",
                        reason="no_usage") is None  # fmt: skip


async def test_restarts_before_and_after_the_result(
    sim: simulator.Simulator,
    start_daemon: DaemonFactory,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    ledger = tmp_path / "video.db"
    first = await start_daemon(sim.url, ledger=ledger)
    body = {"prompt": "x", "resolution": "720p", "duration": 4,
            "reference_images": [{"url": "a"}, {"url": "b"}, {"url": "c"}]}  # fmt: skip
    rid = await start(http, sim, first, "generations", body, **{"X-Sim-Video-Polls": "1"})
    assert (await poll(http, sim, first, rid))[0] == 202
    await first.rows(2)
    await first.daemon.stop()

    # The result comes to a daemon that never saw the POST: linked, priced as the POST asked.
    second = await start_daemon(sim.url, ledger=ledger)
    assert (await poll(http, sim, second, rid))[0] == 200
    await second.rows(1)
    await second.daemon.stop()

    # A third daemon sees the same result again: nothing more is billed.
    third = await start_daemon(sim.url, ledger=ledger)
    assert (await poll(http, sim, third, rid))[0] == 200
    rows = await third.rows(1)
    cost = 4 * VIDEO_720P + 3 * IMAGE_INPUT
    assert [(r["endpoint"], r["status"], r["deferred_state"], r["catalog_rate"],
             r["video_image_inputs"], r["computed_cost_ticks"], r["cost_ticks"]) for r in rows] == [
        ("videos.generations", 200, "completed", None, None, None, None),
        ("videos.result", 202, None, None, None, None, None),
        ("videos.result", 200, "result", "video:720p", 3, cost, cost),
        ("videos.result", 200, "duplicate", None, None, None, None),
    ]  # fmt: skip
    assert rows[2]["linked_id"] == rows[0]["id"]


async def test_a_result_without_reported_cost_is_priced_from_the_catalog(
    sim: simulator.Simulator, meter: RunningDaemon, http: aiohttp.ClientSession
) -> None:
    body = {"prompt": "x", "duration": 7}
    headers = {"X-Sim-Usage": "none", "X-Sim-Video-Polls": "0"}
    rid = await start(http, sim, meter, "generations", body, **headers)
    status, done = await poll(http, sim, meter, rid)
    assert status == 200 and "usage" not in done
    rows = await meter.rows(2)
    assert (rows[1]["catalog_rate"], rows[1]["reported_cost_ticks"], rows[1]["cost_ticks"],
            rows[1]["cost_source"]) == ("video", None, 7 * VIDEO_480P, "computed")  # fmt: skip
