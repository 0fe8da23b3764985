"""Batches: requests run at once, results paged with an opaque token, billed at the batch ratio."""

from __future__ import annotations

from typing import Any

import aiohttp

from daemon.simulator import Simulator, price_ticks

USER = [{"role": "user", "content": "Name a prime."}]


async def test_batch_results_in_pages_and_one_by_one(
    http: aiohttp.ClientSession, sim: Simulator
) -> None:
    async with http.post("/v1/batches", json={"name": "nightly"}) as resp:
        batch = await resp.json()
    batch_id = batch["batch_id"]
    assert batch["state"]["num_requests"] == 0
    lines: list[dict[str, Any]] = [
        {"batch_request_id": f"c{i}", "batch_request": {"chat_get_completion": {
            "model": "grok-4.3", "messages": USER}}}
        for i in range(3)
    ]  # fmt: skip
    lines += [
        {"batch_request_id": "r", "batch_request": {"responses": {"model": "grok-4.3",
                                                                  "input": "hi"}}},
        {"batch_request_id": "i", "batch_request": {"image_generation": {
            "model": "grok-imagine-image-2.0", "prompt": "p", "quality": "low"}}},
        {"batch_request_id": "v", "batch_request": {"video_generation": {"prompt": "p",
                                                                         "duration": 2}}},
        {"batch_request_id": "x", "batch_request": {"nonsense": {}}},
    ]  # fmt: skip
    url = f"/v1/batches/{batch_id}/requests"
    async with http.post(url, json={"batch_requests": lines}) as resp:
        state = (await resp.json())["state"]
    assert (state["num_requests"], state["num_success"], state["num_error"]) == (7, 6, 1)

    results: list[dict[str, Any]] = []
    tokens: list[str | None] = []
    params: dict[str, str] = {"limit": "3"}
    for _ in range(5):
        async with http.get(f"/v1/batches/{batch_id}/results", params=params) as resp:
            page = await resp.json()
        results += page["results"]
        tokens.append(page.get("pagination_token"))
        if "pagination_token" not in page:
            break
        params["pagination_token"] = page["pagination_token"]
    assert tokens == ["3", "6", None]
    assert [r["batch_request_id"] for r in results] == ["c0", "c1", "c2", "r", "i", "v", "x"]

    chat = results[0]["batch_result"]["response"]["chat_get_completion"]
    full = price_ticks(sim.state, "grok-4.3", chat["usage"])
    assert chat["usage"]["cost_in_usd_ticks"] == full // 2  # batch_ratio (1, 2)
    assert results[3]["batch_result"]["response"]["chat_get_completion"]["object"] == (
        "chat.completion"
    )
    image = results[4]["batch_result"]["response"]["image_generation"]
    assert (image["model"], image["usage"]) == (
        "grok-imagine-image-2.0",
        {"cost_in_usd_ticks": 300_000_000 // 2},
    )
    video = results[5]["batch_result"]["response"]["video_generation"]
    assert video["usage"] == {"cost_in_usd_ticks": 2 * 500_000_000 // 2}
    assert results[6]["batch_result"] == {
        "error": {"code": 3, "message": "Unknown batch request kind 'nonsense'"}
    }

    async with http.get(f"/v1/batches/{batch_id}/results/v") as resp:
        one = await resp.json()
    assert one["result"] == results[5] and one["request"]["batch_request_id"] == "v"
    async with http.get(f"/v1/batches/{batch_id}/requests") as resp:
        meta = (await resp.json())["batch_request_metadata"]
    assert [m["state"] for m in meta] == ["succeeded"] * 6 + ["failed"]
    async with http.post(f"/v1/batches/{batch_id}:cancel") as resp:
        assert (await resp.json())["cancel_time"] is not None
    async with http.post(url, json={"batch_requests": lines[:1]}) as resp:
        assert resp.status == 400
    async with http.get("/v1/batches") as resp:
        assert [b["batch_id"] for b in (await resp.json())["batches"]] == [batch_id]
    async with http.get("/v1/batches/nope/results") as resp:
        assert resp.status == 404
