"""The Batch API through the daemon, against the simulator, with aiohttp (the openai SDK's
batches are OpenAI's, not xAI's): every relayed call one unbilled ``batches`` row, each result
of a results page one ``batches.result`` row, billed exactly once across refetches, single
fetches and a restart, the client's bytes unchanged."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from daemon import simulator
from daemon.cli import main
from daemon.testing import TEST_KEY, DaemonFactory, RunningDaemon

# Listing prices of grok-4.3 (ticks per token: $1.25 / $0.20 / $2.50 per 1M) and the image and
# video prices of xai-api.md: grok-imagine-image $0.02, grok-imagine-video at 480p $0.05 per s.
P_IN, P_OUT = 12_500, 25_000
IMAGE = 200_000_000
VIDEO_480P = 500_000_000
PROMPT = 100  # X-Sim-Prompt-Tokens on the requests call: every chat line's prompt
PINNED = {"X-Sim-Prompt-Tokens": str(PROMPT), "X-Sim-Cached-Tokens": "0"}

LINES: list[dict[str, Any]] = [
    {
        "batch_request_id": "chat-1",
        "batch_request": {
            "chat_get_completion": {
                "model": "grok-4.3",
                "messages": [{"role": "user", "content": "Name a prime."}],
            }
        },
    },
    {
        "batch_request_id": "resp-1",
        "batch_request": {"responses": {"model": "grok-4.3", "input": "Name a colour."}},
    },
    {
        "batch_request_id": "img-1",
        "batch_request": {
            "image_generation": {"model": "grok-imagine-image", "prompt": "a meter", "n": 2}
        },
    },
    {
        "batch_request_id": "vid-1",
        "batch_request": {"video_generation": {"prompt": "a meter spinning", "duration": 4}},
    },
    {
        "batch_request_id": "bad-1",
        "batch_request": {
            "chat_get_completion": {
                "model": "grok-nope",
                "messages": [{"role": "user", "content": "?"}],
            }
        },
    },
]
COLUMNS = (
    "endpoint",
    "method",
    "status",
    "transport",
    "linked_id",
    "response_id",
    "model",
    "input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "images",
    "video_seconds",
    "catalog_rate",
    "reported_cost_ticks",
    "computed_cost_ticks",
    "cost_ticks",
    "cost_source",
    "upstream_error",
    "metered",
    "duration_ms",
)


@pytest.fixture
async def http(sim: simulator.Simulator) -> AsyncIterator[aiohttp.ClientSession]:
    del sim  # the daemon under test relays to it
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TEST_KEY}"}) as s:
        yield s


async def get_json(
    http: aiohttp.ClientSession, sim: simulator.Simulator, url: str, **params: str
) -> Any:
    """GET through the daemon; the body must be byte for byte what the simulator sent."""
    async with http.get(url, params=params) as resp:
        assert resp.status == 200
        body = await resp.read()
    assert body == sim.state.sent[-1]
    return orjson.loads(body)


async def make_batch(
    http: aiohttp.ClientSession, meter: RunningDaemon, lines: list[dict[str, Any]]
) -> str:
    async with http.post(f"{meter.base_url}/batches", json={"name": "nightly"}) as resp:
        batch_id = str((await resp.json())["batch_id"])
    url = f"{meter.base_url}/batches/{batch_id}/requests"
    async with http.post(url, json={"batch_requests": lines}, headers=PINNED) as resp:
        assert resp.status == 200
    return batch_id


async def all_results(
    http: aiohttp.ClientSession, sim: simulator.Simulator, meter: RunningDaemon, batch_id: str
) -> list[dict[str, Any]]:
    """Every result, page by page (two a page)."""
    url = f"{meter.base_url}/batches/{batch_id}/results"
    results: list[dict[str, Any]] = []
    params = {"limit": "2"}
    for _ in range(10):
        page = await get_json(http, sim, url, **params)
        results += page["results"]
        if "pagination_token" not in page:
            return results
        params["pagination_token"] = page["pagination_token"]
    raise AssertionError("more pages than results")


def pick(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[c] for c in COLUMNS)


def answer(results: list[dict[str, Any]], request_id: str) -> dict[str, Any]:
    item = next(r for r in results if r["batch_request_id"] == request_id)
    return dict(next(iter(item["batch_result"]["response"].values())))


async def test_each_result_is_one_row_billed_at_the_discount(
    sim: simulator.Simulator,
    start_priced: DaemonFactory,
    http: aiohttp.ClientSession,
) -> None:
    meter = await start_priced(sim.url)
    batch_id = await make_batch(http, meter, LINES)
    results = await all_results(http, sim, meter, batch_id)
    # create, add requests, three pages (2 + 2 + 1 results) and five result rows
    rows = await meter.rows(10)
    calls = [r for r in rows if r["endpoint"] == "batches"]
    assert [(r["method"], r["path"].rsplit("/", 1)[-1], r["metered"]) for r in calls] == [
        ("POST", "batches", 1),
        ("POST", "requests", 1),
        ("GET", "results", 1),
        ("GET", "results", 1),
        ("GET", "results", 1),
    ]
    assert all(r["cost_ticks"] is None and r["input_tokens"] is None for r in calls)

    chat = answer(results, "chat-1")["usage"]
    resp = answer(results, "resp-1")["usage"]
    assert answer(results, "resp-1")["object"] == "chat.completion"  # Responses: chat shape
    chat_out = chat["completion_tokens"] + chat["completion_tokens_details"]["reasoning_tokens"]
    resp_out = resp["completion_tokens"] + resp["completion_tokens_details"]["reasoning_tokens"]
    chat_cost = (PROMPT * P_IN + chat_out * P_OUT) // 2  # xAI's 50% and the catalog's agree
    resp_cost = (PROMPT * P_IN + resp_out * P_OUT) // 2
    assert chat["cost_in_usd_ticks"] == chat_cost and resp["cost_in_usd_ticks"] == resp_cost
    reasoning = chat["completion_tokens_details"]["reasoning_tokens"]
    resp_reasoning = resp["completion_tokens_details"]["reasoning_tokens"]
    by_id = {r["response_id"]: r for r in rows if r["endpoint"] == "batches.result"}
    assert list(by_id) == ["chat-1", "resp-1", "img-1", "vid-1", "bad-1"]  # in page order
    head = ("batches.result", "GET", 200, "http", batch_id)
    assert pick(by_id["chat-1"]) == (
        *head, "chat-1", "grok-4.3", PROMPT, chat_out, reasoning, 0, None, None,
        chat_cost, chat_cost, chat_cost, "reported", None, 1, None,
    )  # fmt: skip
    assert pick(by_id["resp-1"]) == (
        *head, "resp-1", "grok-4.3", PROMPT, resp_out, resp_reasoning, 0, None, None,
        resp_cost, resp_cost, resp_cost, "reported", None, 1, None,
    )  # fmt: skip
    assert pick(by_id["img-1"]) == (
        *head, "img-1", "grok-imagine-image", 0, 0, 0, 2, None, None,
        IMAGE, IMAGE, IMAGE, "reported", None, 1, None,
    )  # fmt: skip
    # A video answer names no resolution and a page carries no request: priced at none (no
    # computed cost, never a guess at 480p); xAI's reported cost stands.
    assert pick(by_id["vid-1"]) == (
        *head, "vid-1", "grok-imagine-video", 0, 0, 0, 0, 4.0, "video:unknown",
        2 * VIDEO_480P, None, 2 * VIDEO_480P, "reported", None, 1, None,
    )  # fmt: skip
    assert pick(by_id["bad-1"]) == (
        *head, "bad-1", None, None, None, None, None, None, None,
        None, None, None, None, "5", 1, None,
    )  # fmt: skip
    # Each result row names the page call it was read from.
    pages = calls[2:]
    assert [r["request_id"] for r in by_id.values()] == [
        pages[0]["request_id"], pages[0]["request_id"], pages[1]["request_id"],
        pages[1]["request_id"], pages[2]["request_id"],
    ]  # fmt: skip
    assert {r["key_id"] for r in rows} == {calls[0]["key_id"]}
    assert all(r["path"] == f"/v1/batches/{batch_id}/results" for r in by_id.values())

    # Metrics: results are not relayed calls; batch spend per model, inside total spend.
    m = meter.metric
    for model, ticks in (
        ("grok-4.3", chat_cost + resp_cost),
        ("grok-imagine-image", IMAGE),
        ("grok-imagine-video", 2 * VIDEO_480P),
    ):
        assert m("xai_meter_batch_cost_usd_total", provider="xai", model=model) == pytest.approx(
            ticks / 1e10
        )
        computed = None if model == "grok-imagine-video" else pytest.approx(ticks / 1e10)
        assert m("xai_meter_batch_computed_usd_total", provider="xai", model=model) == computed
        assert m("xai_meter_cost_usd_total", provider="xai", model=model) == pytest.approx(
            ticks / 1e10
        )
    assert m("xai_meter_batch_results_total", provider="xai", model="grok-4.3", outcome="ok") == 2
    assert m("xai_meter_batch_results_total", provider="xai", model="none", outcome="error") == 1
    requests = [
        s.labels
        for f in meter.registry.collect()
        if f.name == "xai_meter_requests"
        for s in f.samples
    ]
    assert {r["endpoint"] for r in requests} == {"batches"}
    assert sum(
        s.value for f in meter.registry.collect() if f.name == "xai_meter_requests"
        for s in f.samples
    ) == 5  # fmt: skip


async def test_refetches_and_single_results_bill_nothing_new(
    sim: simulator.Simulator,
    start_daemon: DaemonFactory,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    ledger = tmp_path / "batches.db"
    meter = await start_daemon(sim.url, ledger=ledger)
    batch_id = await make_batch(http, meter, LINES)
    await all_results(http, sim, meter, batch_id)
    await meter.rows(10)
    await all_results(http, sim, meter, batch_id)  # the same three pages again
    single = await get_json(http, sim, f"{meter.base_url}/batches/{batch_id}/results/chat-1")
    assert single["result"]["batch_request_id"] == "chat-1"
    rows = await meter.rows(14)
    assert len(rows) == 14  # four page calls more, and no result row
    assert [r["response_id"] for r in rows if r["endpoint"] == "batches.result"] == [
        "chat-1", "resp-1", "img-1", "vid-1", "bad-1",
    ]  # fmt: skip
    assert meter.metric(
        "xai_meter_batch_results_total", provider="xai", model="grok-imagine-image",
        outcome="ok",
    ) == 1  # fmt: skip
    await meter.daemon.stop()

    # A restart remembers every result billed (from the ledger): nothing is billed again,
    # and a result new to it is billed once.
    second = await start_daemon(sim.url, ledger=ledger)
    await all_results(http, sim, second, batch_id)
    await get_json(http, sim, f"{second.base_url}/batches/{batch_id}/results/img-1")
    new_line = {**LINES[0], "batch_request_id": "chat-2"}
    url = f"{second.base_url}/batches/{batch_id}/requests"
    async with http.post(url, json={"batch_requests": [new_line]}, headers=PINNED) as resp:
        assert resp.status == 200
    single = await get_json(http, sim, f"{second.base_url}/batches/{batch_id}/results/chat-2")
    await all_results(http, sim, second, batch_id)  # chat-2 again, on the last page
    # Its own rows: 3 pages, 1 single result, the requests call, 1 single result and the
    # result it billed, 3 pages.
    rows = await second.rows(10)
    results = [r for r in rows if r["endpoint"] == "batches.result"]
    assert [r["response_id"] for r in results] == [
        "chat-1", "resp-1", "img-1", "vid-1", "bad-1", "chat-2",
    ]  # fmt: skip
    assert results[-1]["input_tokens"] == PROMPT
    assert results[-1]["output_tokens"] == (
        single["result"]["batch_result"]["response"]["chat_get_completion"]["usage"][
            "completion_tokens"
        ]
        + single["result"]["batch_result"]["response"]["chat_get_completion"]["usage"][
            "completion_tokens_details"
        ]["reasoning_tokens"]
    )
    assert len(rows) == 14 + 10


async def test_the_reconciliation_shows_a_discount_that_changed(
    sim: simulator.Simulator,
    start_priced: DaemonFactory,
    http: aiohttp.ClientSession,
) -> None:
    sim.state.batch_ratio = (6, 10)  # xAI now takes 40% off; the catalog still says 50%
    meter = await start_priced(sim.url)
    batch_id = await make_batch(http, meter, [LINES[2], LINES[3]])
    await all_results(http, sim, meter, batch_id)
    rows = await meter.rows(5)
    got = {
        r["response_id"]: (r["reported_cost_ticks"], r["computed_cost_ticks"], r["cost_ticks"])
        for r in rows
        if r["endpoint"] == "batches.result"
    }
    assert got == {
        "img-1": (2 * IMAGE * 6 // 10, IMAGE, 2 * IMAGE * 6 // 10),
        "vid-1": (4 * VIDEO_480P * 6 // 10, None, 4 * VIDEO_480P * 6 // 10),
    }
    m = meter.metric
    reported = m("xai_meter_reconciled_reported_usd_total", provider="xai",
                 model="grok-imagine-image")  # fmt: skip
    computed = m("xai_meter_reconciled_computed_usd_total", provider="xai",
                 model="grok-imagine-image")  # fmt: skip
    assert (reported, computed) == (pytest.approx(0.024), pytest.approx(0.02))
    assert m("xai_meter_batch_computed_usd_total", provider="xai",
             model="grok-imagine-image") == pytest.approx(0.02)  # fmt: skip
    # The video's resolution is not known: no computed cost, so no drift shown for it.
    assert m("xai_meter_batch_cost_usd_total", provider="xai", model="grok-imagine-video") == (
        pytest.approx(0.12)
    )
    for name in ("xai_meter_reconciled_computed_usd_total", "xai_meter_batch_computed_usd_total"):
        assert m(name, provider="xai", model="grok-imagine-video") is None


async def test_a_video_result_is_priced_by_its_line_only_when_the_answer_carries_it(
    sim: simulator.Simulator,
    start_priced: DaemonFactory,
    http: aiohttp.ClientSession,
) -> None:
    """A 720p video line: fetched alone (``{request, result}``), it is priced by its request's
    resolution, computed = reported (both half of 720p's $0.07 a second); read from a page (no
    request), it has no computed cost rather than 480p's."""
    lines = [
        {
            "batch_request_id": f"vid-{n}",
            "batch_request": {
                "video_generation": {"prompt": "a meter", "duration": 4, "resolution": "720p"}
            },
        }
        for n in (1, 2)
    ]
    meter = await start_priced(sim.url)
    batch_id = await make_batch(http, meter, lines)
    await get_json(http, sim, f"{meter.base_url}/batches/{batch_id}/results/vid-1")
    await all_results(http, sim, meter, batch_id)  # vid-1 again (no row), then vid-2
    rows = await meter.rows(6)
    got = {
        r["response_id"]: (
            r["catalog_rate"],
            r["reported_cost_ticks"],
            r["computed_cost_ticks"],
            r["cost_ticks"],
        )
        for r in rows
        if r["endpoint"] == "batches.result"
    }
    half = 4 * 700_000_000 // 2
    assert got == {
        "vid-1": ("video:720p", half, half, half),
        "vid-2": ("video:unknown", half, None, half),
    }


async def test_report_separates_batch_spend(
    sim: simulator.Simulator,
    start_priced: DaemonFactory,
    http: aiohttp.ClientSession,
    capsys: pytest.CaptureFixture[str],
) -> None:
    meter = await start_priced(sim.url)
    batch_id = await make_batch(http, meter, [LINES[2], LINES[3]])
    await all_results(http, sim, meter, batch_id)
    url = f"{meter.base_url}/images/generations"
    async with http.post(url, json={"prompt": "a meter", "model": "grok-imagine-image"}) as r:
        assert r.status == 200
    await meter.rows(6)
    ledger = meter.ledger_path
    capsys.readouterr()
    assert main(["report", "--ledger", ledger, "--by", "endpoint", "--format", "json"]) == 0
    by_endpoint = {r["endpoint"]: r for r in orjson.loads(capsys.readouterr().out)["rows"]}
    got = {k: (v["calls"], v["cost_ticks"], v["batch_cost_ticks"]) for k, v in by_endpoint.items()}
    assert got == {
        "batches.result": (2, IMAGE + 2 * VIDEO_480P, IMAGE + 2 * VIDEO_480P),
        "batches": (3, 0, 0),
        "images.generations": (1, IMAGE, 0),
    }
    assert main(["report", "--ledger", ledger, "--by", "model", "--format", "json"]) == 0
    by_model = {r["model"]: r for r in orjson.loads(capsys.readouterr().out)["rows"]}
    image = by_model["grok-imagine-image"]
    assert (image["cost_usd"], image["batch_cost_usd"]) == (0.04, 0.02)
    assert by_model["grok-imagine-video"]["batch_cost_usd"] == 0.1


async def test_a_page_that_cannot_be_read_is_unmetered(
    sim: simulator.Simulator, meter: RunningDaemon, http: aiohttp.ClientSession
) -> None:
    batch_id = await make_batch(http, meter, [LINES[2]])
    url = f"{meter.base_url}/batches/{batch_id}/results"
    async with http.get(url, headers={"X-Sim-Malformed": "1"}) as resp:
        assert resp.status == 200
        assert await resp.read() == sim.state.sent[-1]
    rows = await meter.rows(3)
    assert [(r["endpoint"], r["metered"], r["unmetered_reason"]) for r in rows][-1] == (
        "batches",
        0,
        "malformed",
    )
    assert meter.metric("xai_meter_unmetered_total", endpoint="batches", reason="malformed") == 1
