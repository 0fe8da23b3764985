"""The status page's JSON documents, built from a read-only ledger connection (no I/O of its
own beyond it, no clock: `now` is passed in). Each function runs in a worker thread
(`daemon.status.StatusPage`), never on the event loop.

Units everywhere: money as exact integer ``*_ticks`` (1e-10 USD, `daemon.units`) beside a float
``*_usd`` (ticks / 1e10, for plotting; exact below 2**53 ticks, $900k); times epoch seconds;
durations ms; counts ints. Missing values are null.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from daemon.ledger import status as queries
from daemon.ledger.engine import Database
from daemon.ledger.reports import percentile, report
from daemon.units import TICKS_PER_USD
from daemon.windows import Window, parse_window, zone

HOUR = 3600.0
DAY = 86400
# Bar widths for the spend-over-time chart, seconds: the smallest that gives at most
# `MAX_BUCKETS` bars over the window.
BUCKETS_S = (60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 604800)
MAX_BUCKETS = 72
MAX_CALLS = 500  # /api/calls?limit= at most this


def usd(ticks: int) -> float:
    """Ticks as a float USD, for charts and JSON readers (the ticks stay the exact figure)."""
    return ticks / TICKS_PER_USD


def _money(totals: dict[str, int]) -> dict[str, Any]:
    return {**totals, "cost_usd": usd(totals["cost_ticks"])}


def _window_json(window: Window, now: float, text: str) -> dict[str, Any]:
    end = window.end if window.end is not None else now
    return {
        "since": text,
        "tz": window.tz,
        "start": window.start,
        "end": window.end,
        "label": window.label,
        "hours": max(end - window.start, 0.0) / HOUR,
    }


def buckets_for(window: Window, now: float) -> tuple[float, float, int]:
    """The spend chart's bars for `window`: (origin, width in s, count). The origin is the
    window's start rounded down to a whole bar in the window's zone (local midnight for bars of
    a day or more), so bars start on round local times. Over a long window (more than 72
    weeks) the bars are as many whole days wide as keep them at most `MAX_BUCKETS`."""
    end = window.end if window.end is not None else now
    span = max(end - window.start, 1.0)
    # past a week's bars: as many whole days as keep the bars at most MAX_BUCKETS
    longest = math.ceil(span / MAX_BUCKETS / DAY) * DAY
    width = next((b for b in BUCKETS_S if span / b <= MAX_BUCKETS), longest)
    local = datetime.fromtimestamp(window.start, zone(window.tz))
    offset = local.utcoffset()
    shift = offset.total_seconds() if offset is not None else 0.0
    origin = math.floor((window.start + shift) / width) * width - shift
    count = max(math.ceil((end - origin) / width), 1)
    return origin, float(width), count


def summary(db: Database, window: Window, now: float, text: str) -> dict[str, Any]:
    """`GET /api/summary`: the window's totals, spend today and this month (in the window's
    zone), burn rate, per-model / app / key rows (`daemon.ledger.reports.report` rows, plus
    ``ttft_p50_ms`` / ``ttft_p95_ms`` / ``ttft_calls`` on model rows), the spend series and
    what went wrong. Shape: README "Status page"."""
    tz = window.tz
    today = parse_window("today", now, tz)
    month = parse_window("this-month", now, tz)
    by_model = report(db, window, "model")
    by_app = report(db, window, "app")
    by_key = report(db, window, "key")
    ttft = queries.ttft_by_model(db, window.start, window.end)
    for row in by_model.rows:
        values = ttft.get(row["model"], [])
        row["ttft_p50_ms"] = percentile(values, 50)
        row["ttft_p95_ms"] = percentile(values, 95)
        row["ttft_calls"] = len(values)
    window_totals = queries.spend(db, window.start, window.end)
    last_hour = queries.spend(db, now - HOUR, None)
    hours = _window_json(window, now, text)["hours"]
    origin, width, count = buckets_for(window, now)
    return {
        "now": now,
        "window": _window_json(window, now, text),
        "totals": {
            "window": _money(window_totals),
            "today": {**_money(queries.spend(db, today.start, today.end)), "start": today.start},
            "this_month": {
                **_money(queries.spend(db, month.start, month.end)),
                "start": month.start,
            },
            "last_hour": _money(last_hour),
        },
        "burn_rate": {
            "last_hour_usd_per_hour": usd(last_hour["cost_ticks"]),
            "last_hour_cost_ticks": last_hour["cost_ticks"],
            "window_usd_per_hour": usd(window_totals["cost_ticks"]) / hours if hours else None,
        },
        "total": by_model.total,
        "by_model": by_model.rows,
        "by_app": by_app.rows,
        "by_key": by_key.rows,
        "series": {
            "origin": origin,
            "bucket_s": width,
            "buckets": count,
            "points": queries.spend_series(db, window.start, window.end, origin, width),
        },
        "problems": queries.problems(db, window.start, window.end),
    }


def calls(db: Database, limit: int) -> dict[str, Any]:
    """`GET /api/calls`: the last `limit` calls, newest first (`queries.recent_calls` fields,
    plus ``cost_usd``, null when unpriced). No prompt or completion: the ledger has none."""
    rows = queries.recent_calls(db, limit)
    for row in rows:
        ticks = row["cost_ticks"]
        row["cost_usd"] = None if ticks is None else usd(ticks)
    return {"calls": rows}


def fingerprints(db: Database) -> dict[str, Any]:
    """`GET /api/fingerprints`: per model (sorted), the fingerprints seen (first/last seen,
    calls) and every change (``at``, ``old``, ``new``, ``kind``), oldest first."""
    seen, changes = queries.fingerprint_timeline(db)
    models: dict[tuple[str, str], dict[str, Any]] = {}

    def entry(provider: str, model: str) -> dict[str, Any]:
        key = (provider, model)
        if key not in models:
            models[key] = {"provider": provider, "model": model, "seen": [], "changes": []}
        return models[key]

    for row in seen:
        entry(row.pop("provider"), row.pop("model"))["seen"].append(row)
    for row in changes:
        entry(row.pop("provider"), row.pop("model"))["changes"].append(row)
    return {"models": [models[key] for key in sorted(models, key=lambda k: (k[1], k[0]))]}
