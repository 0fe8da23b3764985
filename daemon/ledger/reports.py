"""Reports read from the ledger (read-only, safe while the daemon writes): `xai-meter report`."""

from __future__ import annotations

from typing import Any

import sqlite_utils

from daemon.units import format_usd

# A first query to try on a ledger with `sqlite-utils query` (the demo prints it).
EXAMPLE_QUERY = "select model, sum(output_tokens) from calls group by model"

REPORT_GROUPS: dict[str, str] = {
    "model": "coalesce(model, requested_model, '-')",
    "app": "coalesce(app, '-')",
    "key": "coalesce((select name || ' (' || calls.key_id || ')' from api_keys k "
    "where k.key_id = calls.key_id), key_id, '-')",
    "day": "date(started_at, 'unixepoch')",
    "endpoint": "endpoint",
}


def report(db: sqlite_utils.Database, since: float, by: str) -> list[dict[str, Any]]:
    """Calls, tokens, cost and latency per group, for calls started at or after `since`.

    ``batch_cost_*`` is the part of the cost spent on Batch API results (rows of endpoint
    ``batches.result``, one per result: `daemon.dialects.batches`); ``calls`` counts those
    rows too, and ``--by endpoint`` shows them as a group of their own."""
    group = REPORT_GROUPS[by]
    rows = list(
        db.query(
            f"""select {group} as grp, count(*) as calls,
                   coalesce(sum(input_tokens), 0) as input_tokens,
                   coalesce(sum(cached_input_tokens), 0) as cached_input_tokens,
                   coalesce(sum(output_tokens), 0) as output_tokens,
                   coalesce(sum(reasoning_tokens), 0) as reasoning_tokens,
                   coalesce(sum(image_input_tokens), 0) as image_input_tokens,
                   coalesce(sum(cost_ticks), 0) as cost_ticks,
                   coalesce(sum(case when endpoint = 'batches.result' then cost_ticks end), 0)
                       as batch_cost_ticks,
                   coalesce(sum(cost_source = 'unpriced'), 0) as unpriced,
                   coalesce(sum(metered = 0), 0) as unmetered,
                   coalesce(sum(error is not null), 0) as errors
            from calls where started_at >= ? group by grp""",
            [since],
        )
    )
    latencies: dict[str, list[float]] = {}
    for grp, duration in db.execute(
        f"select {group}, duration_ms from calls where started_at >= ? and duration_ms is not null",
        [since],
    ).fetchall():
        latencies.setdefault(grp, []).append(duration)
    out = []
    for row in sorted(rows, key=lambda r: (-r["cost_ticks"], -r["calls"], str(r["grp"]))):
        durations = sorted(latencies.get(row["grp"], []))
        inp = row["input_tokens"]
        out.append(
            {
                by: row["grp"],
                "calls": row["calls"],
                "input_tokens": inp,
                "cached_input_tokens": row["cached_input_tokens"],
                "cached_share": f"{row['cached_input_tokens'] / inp:.1%}" if inp else "-",
                "output_tokens": row["output_tokens"],
                "reasoning_tokens": row["reasoning_tokens"],
                "image_input_tokens": row["image_input_tokens"],
                "cost_usd": usd(row["cost_ticks"]),
                "cost_ticks": row["cost_ticks"],
                "batch_cost_usd": usd(row["batch_cost_ticks"]),
                "batch_cost_ticks": row["batch_cost_ticks"],
                "p50_ms": percentile(durations, 50),
                "p95_ms": percentile(durations, 95),
                "errors": row["errors"],
                "unmetered": row["unmetered"],
                "unpriced": row["unpriced"],
            }
        )
    return out


def percentile(sorted_values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return None
    rank = max(int(-(-pct * len(sorted_values) // 100)), 1)  # ceil(pct/100 * n)
    return round(sorted_values[rank - 1], 2)


def usd(ticks: int | None) -> str:
    """Exact dollars from ticks, to the micro-dollar ("-" for none)."""
    return "-" if ticks is None else format_usd(ticks, places=6)
