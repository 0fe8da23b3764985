"""Deferred images through the daemon: the openai SDK posts ``"deferred": true`` (it has no call
for the poll: aiohttp polls ``GET /v1/images/{request_id}``). The POST row is pending and bills
nothing; the first done poll is billed once, linked to the POST; repeats, pending polls, and
failed or expired jobs bill nothing, and the POST row says how the job ended."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import openai

from daemon import simulator
from daemon.testing import TEST_KEY, DaemonFactory, RunningDaemon

AUTH = {"Authorization": f"Bearer {TEST_KEY}"}
IMAGE_TICKS = 200_000_000  # the simulator's listed grok-imagine-image price: $0.02 per image


async def post_deferred(meter: RunningDaemon, **headers: str) -> str:
    async with openai.AsyncOpenAI(
        base_url=meter.base_url, api_key=TEST_KEY, max_retries=0, default_headers=headers
    ) as client:
        posted = await client.images.generate(
            model="grok-imagine-image", prompt="a meter at dawn", n=2, extra_body={"deferred": True}
        )
    assert posted.model_extra is not None
    request_id = posted.model_extra["request_id"]
    assert isinstance(request_id, str)
    return request_id


async def poll(meter: RunningDaemon, request_id: str, times: int) -> list[tuple[int, Any]]:
    """``times`` polls (bounded): each (status, JSON body or None)."""
    answers = []
    async with aiohttp.ClientSession() as http:
        for _ in range(times):
            async with http.get(f"{meter.base_url}/images/{request_id}", headers=AUTH) as r:
                body = await r.read()
                answers.append((r.status, await r.json() if body else None))
    return answers


async def post_state(meter: RunningDaemon, call_id: str) -> str:
    await meter.daemon.ledger.drained()
    db = meter.daemon.ledger.db
    return str(
        await meter.daemon.ledger.run_in_writer(
            lambda: (
                db()
                .execute("select deferred_state from calls where id = ?", [call_id])
                .fetchone()[0]
            )
        )
    )


async def test_a_deferred_image_is_billed_once_at_done(
    meter: RunningDaemon, sim: simulator.Simulator
) -> None:
    sim.state.image_polls = 2
    request_id = await post_deferred(meter)
    answers = await poll(meter, request_id, 4)
    assert [status for status, _ in answers] == [202, 202, 200, 200]
    done = answers[2][1]
    assert done["status"] == "done" and len(done["data"]) == 2
    assert answers[3][1] == done  # a done job answers the same on every later poll
    assert done["usage"]["cost_in_usd_ticks"] == 2 * IMAGE_TICKS
    post, *polls = await meter.rows(5)
    assert (post["endpoint"], post["deferred"], post["response_id"]) == (
        "images.generations",
        1,
        request_id,
    )
    assert (post["images"], post["cost_ticks"], post["metered"]) == (None, None, 1)
    assert [p["endpoint"] for p in polls] == ["images.deferred"] * 4
    assert [p["cost_ticks"] for p in polls] == [None, None, 2 * IMAGE_TICKS, None]
    assert [p["deferred_state"] for p in polls] == [None, None, "result", "duplicate"]
    billed = polls[2]
    assert (billed["images"], billed["reported_cost_ticks"], billed["cost_source"]) == (
        2,
        2 * IMAGE_TICKS,
        "reported",
    )
    # the POST's model, carried to the result (the answer names none), resolved to its id only
    # when prices are known (none here): as requested
    assert (billed["model"], billed["linked_id"]) == ("grok-imagine-image", post["id"])
    assert billed["deferred_ms"] > 0 and all(p["metered"] == 1 for p in polls)
    assert await post_state(meter, post["id"]) == "completed"
    spend = meter.metric("xai_meter_cost_usd_total", provider="xai", model="grok-imagine-image")
    assert spend == 2 * IMAGE_TICKS / 1e10  # once


async def test_pending_answers_that_are_200_bill_nothing(
    meter: RunningDaemon, sim: simulator.Simulator
) -> None:
    sim.state.image_pending_200 = True
    request_id = await post_deferred(meter, **{"X-Sim-Image-Polls": "1"})
    answers = await poll(meter, request_id, 2)
    assert answers[0] == (200, {"status": "pending"}) and answers[1][1]["status"] == "done"
    _, pending, done = await meter.rows(3)
    assert (pending["cost_ticks"], pending["deferred_state"], pending["metered"]) == (
        None,
        None,
        1,
    )
    assert (done["cost_ticks"], done["deferred_state"]) == (2 * IMAGE_TICKS, "result")


async def test_failed_and_expired_jobs_bill_nothing_and_their_post_says_so(
    meter: RunningDaemon,
) -> None:
    failed = await post_deferred(meter, **{"X-Sim-Image-Outcome": "failed"})
    expired = await post_deferred(meter, **{"X-Sim-Image-Outcome": "expired"})
    failed_answers = await poll(meter, failed, 3)
    assert [status for status, _ in failed_answers] == [202, 200, 200]
    assert failed_answers[1][1]["status"] == "failed" and failed_answers[1][1]["error"]
    assert [a for _, a in await poll(meter, expired, 2)] == [None, {"status": "expired"}]
    post_failed, post_expired, *polls = await meter.rows(7)
    assert all(p["cost_ticks"] is None and p["images"] is None for p in polls)
    assert all(p["metered"] == 1 for p in polls)  # nothing to meter: not "unmetered"
    assert [p["deferred_state"] for p in polls] == [None, "failed", "failed", None, "expired"]
    assert [p["linked_id"] for p in polls] == [
        None,
        post_failed["id"],
        None,  # the job was closed by the poll before
        None,
        post_expired["id"],
    ]
    assert await post_state(meter, post_failed["id"]) == "failed"
    assert await post_state(meter, post_expired["id"]) == "expired"
    assert (
        meter.metric("xai_meter_cost_usd_total", provider="xai", model="grok-imagine-image") is None
    )


async def test_a_restart_between_the_post_and_its_result_still_bills_it_once(
    sim: simulator.Simulator, start_daemon: DaemonFactory, tmp_path: Path
) -> None:
    ledger = tmp_path / "kept.db"
    first = await start_daemon(sim.url, ledger=ledger)
    request_id = await post_deferred(first)
    [post] = await first.rows(1)
    await first.daemon.stop()
    second = await start_daemon(sim.url, ledger=ledger)
    assert [status for status, _ in await poll(second, request_id, 3)] == [202, 200, 200]
    _, _, billed, again = await second.rows(3)  # three written by this daemon, four in all
    assert (billed["cost_ticks"], billed["linked_id"], billed["deferred_state"]) == (
        2 * IMAGE_TICKS,
        post["id"],
        "result",
    )
    assert billed["model"] == "grok-imagine-image"  # carried from the POST's row
    assert (again["cost_ticks"], again["deferred_state"]) == (None, "duplicate")
    assert await post_state(second, post["id"]) == "completed"
    await second.daemon.stop()
    third = await start_daemon(sim.url, ledger=ledger)
    await poll(third, request_id, 1)
    *_, last = await third.rows(1)
    assert (last["cost_ticks"], last["deferred_state"]) == (None, "duplicate")
