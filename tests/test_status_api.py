"""The status page's JSON API on a real daemon relaying real calls to the simulator: every
number equals the ledger's, exactly (ticks as ints), windows and zones read as `report` reads
them, bad parameters are 400 with a one-line error, and the page's files are served from the
package with a policy that lets nothing in from elsewhere."""

from __future__ import annotations

import math
import os
from collections import defaultdict
from importlib import resources
from typing import Any

import aiohttp
import pytest

from daemon import __version__, simulator
from daemon.testing import (
    STATUS_FINGERPRINT,
    STATUS_KEYS,
    DaemonFactory,
    RunningDaemon,
    status_traffic,
)
from daemon.windows import parse_window

# What `status_traffic` costs at the simulator's own prices (it reports cost_in_usd_ticks on
# every chat answer): 2 x grok-4-fast-reasoning, 3 billed x grok-3-mini, 2 x grok-4-0709.
TRAFFIC_TICKS = 27_996_000


@pytest.fixture
async def fed(
    sim: simulator.Simulator, start_daemon: DaemonFactory
) -> tuple[RunningDaemon, list[dict[str, Any]]]:
    """A daemon that relayed `status_traffic`, and the ledger's rows once all are written."""
    meter = await start_daemon(sim.url)
    count = await status_traffic(sim.state, meter.base_url)
    return meter, await meter.rows(count)


async def get(meter: RunningDaemon, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(meter.admin_url + path) as response:
        return response.status, await response.json()


def sums(rows: list[dict[str, Any]], field: str) -> int:
    return sum(row[field] or 0 for row in rows)


def by(rows: list[dict[str, Any]], key: str) -> dict[Any, list[dict[str, Any]]]:
    """Rows per value of `key`; "model" is the answering model, else the one asked for (an
    upstream error names none), as `report` counts them."""
    groups: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        value = row[key] or row["requested_model"] if key == "model" else row[key]
        groups[value].append(row)
    return groups


async def test_summary_equals_the_ledger(
    fed: tuple[RunningDaemon, list[dict[str, Any]]],
) -> None:
    meter, rows = fed
    status, body = await get(meter, "/api/summary?since=24h&tz=UTC")
    assert status == 200
    total = sums(rows, "cost_ticks")
    assert total == TRAFFIC_TICKS
    for name in ("window", "today", "this_month", "last_hour"):
        part = body["totals"][name]
        assert part["cost_ticks"] == total, name
        assert part["cost_usd"] == total / 10**10
        assert part["calls"] == len(rows)
        assert part["input_tokens"] == sums(rows, "input_tokens")
        assert part["output_tokens"] == sums(rows, "output_tokens")
        assert (part["unmetered"], part["unpriced"], part["errors"]) == (1, 1, 1)
    now = body["now"]
    assert body["totals"]["today"]["start"] == parse_window("today", now).start
    assert body["totals"]["this_month"]["start"] == parse_window("this-month", now).start
    assert body["window"]["since"] == "24h" and body["window"]["tz"] == "UTC"
    assert body["window"]["start"] == now - 86400 and body["window"]["end"] is None
    assert body["burn_rate"]["last_hour_cost_ticks"] == total
    assert body["burn_rate"]["window_usd_per_hour"] == pytest.approx(total / 10**10 / 24)
    assert body["total"]["cost_ticks"] == total and body["total"]["calls"] == len(rows)

    models = by(rows, "model")
    for row in body["by_model"]:
        group = models.pop(row["model"])
        assert row["calls"] == len(group), row["model"]
        assert row["cost_ticks"] == sums(group, "cost_ticks")
        for field in ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens"):
            assert row[field] == sums(group, field), (row["model"], field)
        ttfts = sorted(r["ttft_ms"] for r in group if r["ttft_ms"] is not None)
        assert row["ttft_calls"] == len(ttfts)
        assert row["ttft_p95_ms"] == (round(ttfts[-1], 2) if ttfts else None)
    assert models == {}
    assert [r["model"] for r in body["by_model"][:3]] == [
        "grok-4-0709",
        "grok-3-mini",
        "grok-4-fast-reasoning",
    ]
    assert body["by_model"][2]["ttft_calls"] == 1  # one of the two was streamed

    keys = by(rows, "key_id")
    names = {row["key_id"]: row["key_name"] for row in body["by_key"]}
    assert sorted(n for n in names.values() if n) == sorted(STATUS_KEYS.values())
    for row in body["by_key"]:
        assert row["cost_ticks"] == sums(keys.pop(row["key_id"]), "cost_ticks")
    assert keys == {}
    apps = {row["app"]: row["cost_ticks"] for row in body["by_app"]}
    assert apps == {app: sums(group, "cost_ticks") for app, group in by(rows, "app").items()}

    series = body["series"]
    assert sum(p["cost_ticks"] for p in series["points"]) == total
    assert sum(p["calls"] for p in series["points"]) == len(rows)
    assert series["bucket_s"] == 1800 and series["origin"] <= body["window"]["start"]
    assert all(0 <= p["bucket"] < series["buckets"] for p in series["points"])
    assert body["problems"] == {
        "unmetered": {"no_usage": 1},
        "errors": {"http_error": 1},
        "unpriced": {"grok-4-0709": 1},
    }


async def test_windows_and_zones_are_read_as_report_reads_them(
    fed: tuple[RunningDaemon, list[dict[str, Any]]],
) -> None:
    meter, _ = fed
    status, future = await get(meter, "/api/summary?since=2099-01-01&tz=Europe/Paris")
    assert status == 200
    assert future["window"]["tz"] == "Europe/Paris"
    assert future["window"]["start"] == parse_window("2099-01-01", 0, "Europe/Paris").start
    assert future["totals"]["window"] == {
        "calls": 0,
        "cost_ticks": 0,
        "cost_usd": 0.0,
        "input_tokens": 0,
        "output_tokens": 0,
        "errors": 0,
        "unmetered": 0,
        "unpriced": 0,
    }
    assert future["by_model"] == [] and future["series"]["points"] == []
    assert future["totals"]["today"]["cost_ticks"] == TRAFFIC_TICKS  # today is still today
    status, past = await get(meter, "/api/summary?since=2000-01-01T00:00&tz=UTC")
    assert past["totals"]["window"]["cost_ticks"] == TRAFFIC_TICKS
    span = past["now"] - past["window"]["start"]
    assert past["series"]["bucket_s"] == math.ceil(span / 72 / 86400) * 86400  # whole days
    assert past["series"]["buckets"] <= 73
    status, default = await get(meter, "/api/summary")
    assert default["window"]["since"] == "24h" and default["window"]["tz"] == "UTC"
    # the first date a window can hold, UTC spelled in lower case
    status, first = await get(meter, "/api/summary?since=0001-01-01&tz=utc")
    assert status == 200 and first["window"]["tz"] == "UTC"
    assert first["window"]["start"] == -62135596800.0
    assert first["totals"]["window"]["cost_ticks"] == TRAFFIC_TICKS


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("since=1M", "ambiguous"),
        ("since=soon", "this-month"),
        ("since=24h&tz=Mars/Base", "Mars/Base"),
        ("since=99999999d", "reaches past the dates"),  # was a 500: year out of range
        ("since=" + "9" * 400 + "w", "reaches past the dates"),  # was a 500: OverflowError
        ("since=9999-12-31T23:59&tz=America/New_York", "reaches past the dates"),
    ],
)
async def test_a_bad_window_is_400_with_the_reason(
    meter: RunningDaemon, query: str, says: str
) -> None:
    status, body = await get(meter, "/api/summary?" + query)
    assert status == 400
    assert list(body) == ["error"] and says in body["error"]


async def test_last_calls_newest_first_with_key_names_and_no_prompts(
    fed: tuple[RunningDaemon, list[dict[str, Any]]],
) -> None:
    meter, rows = fed
    status, body = await get(meter, "/api/calls?limit=4")
    assert status == 200
    newest = sorted(rows, key=lambda r: (r["started_at"], r["id"]), reverse=True)[:4]
    assert [c["id"] for c in body["calls"]] == [r["id"] for r in newest]
    for shown, row in zip(body["calls"], newest, strict=True):
        for field in ("started_at", "endpoint", "status", "input_tokens", "output_tokens"):
            assert shown[field] == row[field], field
        assert shown["cost_ticks"] == row["cost_ticks"]
        assert shown["cost_usd"] == (
            None if row["cost_ticks"] is None else row["cost_ticks"] / 1e10
        )
        assert shown["key_name"] in STATUS_KEYS.values()
    assert body["calls"][0]["endpoint"] == "messages"
    assert body["calls"][0]["cost_source"] == "unpriced"
    assert set(body["calls"][0]) == {
        "id", "started_at", "endpoint", "method", "status", "transport", "model",
        "requested_model", "input_tokens", "cached_input_tokens", "output_tokens",
        "reasoning_tokens", "cost_ticks", "cost_usd", "cost_source", "duration_ms", "ttft_ms",
        "error", "metered", "unmetered_reason", "app", "key_id", "key_name",
    }  # fmt: skip
    status, every = await get(meter, "/api/calls?limit=500")
    assert len(every["calls"]) == len(rows)
    status, default = await get(meter, "/api/calls")
    assert len(default["calls"]) == len(rows)  # 50 by default; fewer here


@pytest.mark.parametrize("limit", ["0", "501", "abc", "-3"])
async def test_a_bad_limit_is_400(meter: RunningDaemon, limit: str) -> None:
    status, body = await get(meter, f"/api/calls?limit={limit}")
    assert status == 400 and "1 to 500" in body["error"]


async def test_fingerprint_timeline_marks_the_change(
    fed: tuple[RunningDaemon, list[dict[str, Any]]],
) -> None:
    meter, rows = fed
    status, body = await get(meter, "/api/fingerprints")
    assert status == 200
    models = {m["model"]: m for m in body["models"]}
    assert sorted(models) == ["grok-3-mini", "grok-4-0709", "grok-4-fast-reasoning"]
    mini = models["grok-3-mini"]
    old = simulator.default_fingerprints()["grok-3-mini"]
    assert [(s["fingerprint"], s["calls"]) for s in mini["seen"]] == [
        (old, 2),
        (STATUS_FINGERPRINT, 2),  # the change's call and the unmetered one (it has an answer)
    ]
    (change,) = mini["changes"]
    assert (change["old"], change["new"], change["kind"]) == (old, STATUS_FINGERPRINT, "new")
    first_new = min(r["started_at"] for r in rows if r["fingerprint"] == STATUS_FINGERPRINT)
    assert change["at"] == first_new
    assert models["grok-4-0709"]["changes"] == []


async def test_health_from_the_daemons_state(
    fed: tuple[RunningDaemon, list[dict[str, Any]]],
) -> None:
    meter, rows = fed
    status, body = await get(meter, "/api/health")
    assert status == 200
    assert body["status"] == "ok" and body["version"] == __version__
    assert body["ledger"]["healthy"] is True
    assert body["ledger"]["rows_written"] == len(rows)
    assert body["ledger"]["queue_depth"] == 0 and body["ledger"]["write_errors"] == 0
    assert body["prices"]["refresh"] is False  # the tests' daemons fetch no listings
    assert body["prices"]["last_success"] is None and body["prices"]["age_s"] is None
    assert body["upstream"]["http_5xx"] == 1
    assert body["upstream"]["errors_by_kind"] == {"http_error": 1}
    assert body["upstream"]["errors"] == 0  # the upstream answered; it did not fail us
    assert 0 <= body["uptime_s"] == pytest.approx(body["now"] - body["started_at"])


async def test_health_counts_an_unreachable_upstream(start_daemon: DaemonFactory) -> None:
    meter = await start_daemon("http://127.0.0.1:9")  # the discard port: nothing listens
    async with aiohttp.ClientSession() as http:
        body = {"model": "grok-3-mini", "messages": [{"role": "user", "content": "hi"}]}
        headers = {"Authorization": "Bearer xai-unreachable-key"}
        async with http.post(meter.base_url + "/chat/completions", json=body, headers=headers):
            pass
    await meter.rows(1)
    _, health = await get(meter, "/api/health")
    assert health["upstream"]["errors"] == 1
    assert health["upstream"]["errors_by_kind"] == {"upstream_unreachable": 1}
    assert health["upstream"]["http_5xx"] == 1  # the relay's own 502


async def test_the_page_and_its_files_come_from_the_package(meter: RunningDaemon) -> None:
    static = resources.files("daemon.status") / "static"
    async with aiohttp.ClientSession() as http:
        for path, name, kind in [
            ("/", "index.html", "text/html"),
            ("/static/status.js", "status.js", "text/javascript"),
            ("/static/status.css", "status.css", "text/css"),
        ]:
            async with http.get(meter.admin_url + path) as response:
                assert response.status == 200
                assert response.content_type == kind
                assert await response.read() == (static / name).read_bytes()
                policy = response.headers["Content-Security-Policy"]
                assert "default-src 'none'" in policy and "script-src 'self'" in policy
        for missing in ("/static/index.html", "/static/nope.js", "/static/../app.py"):
            async with http.get(meter.admin_url + missing) as response:
                assert response.status == 404, missing
    page = (static / "index.html").read_text()
    assert "http://" not in page.replace('"http://www.w3.org', "") and "https://" not in page
    script = (static / "status.js").read_text()
    assert "https://" not in script and "http://" not in script.replace('"http://www.w3.org', "")


async def test_a_ledger_that_cannot_be_read_is_503(meter: RunningDaemon) -> None:
    """The page says so (and retries) rather than failing without a word; health still
    answers (it reads memory only)."""
    path = meter.ledger_path
    os.rename(path, path + ".away")
    try:
        status, body = await get(meter, "/api/summary")
        health_status, _ = await get(meter, "/api/health")
    finally:
        os.rename(path + ".away", path)
    assert status == 503 and "the ledger could not be read" in body["error"]
    assert health_status == 200
    status, _ = await get(meter, "/api/summary")
    assert status == 200
