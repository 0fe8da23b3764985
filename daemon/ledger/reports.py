"""Reports read from the ledger (read-only, safe while the daemon writes): `xai-meter report`.

`report(db, window, by)` returns a `Report`: one row per group and a total, numbers as numbers
(exact `cost_ticks` integers beside `cost_usd` floats), missing values as None. Turning them into
text ($, %, widths) is the CLI's job (`daemon.cli`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlite_utils

from daemon.ledger.engine import Database, utc_day
from daemon.units import TICKS_PER_USD
from daemon.windows import Window, zone

# A first query to try on a ledger with `sqlite-utils query` (the demo prints it).
EXAMPLE_QUERY = "select model, sum(output_tokens) from calls group by model"

# The SQL for each `--by` group; `key` groups by key_id, its name read from api_keys after.
REPORT_GROUPS: dict[str, str] = {
    "model": "coalesce(model, requested_model)",
    "app": "app",
    "key": "key_id",
    "day": "date(started_at, 'unixepoch')",  # UTC; another zone: `_local_day`
    "endpoint": "endpoint",
}

# Every row's fields after the group field(s), in order (JSON/CSV keep them all).
REPORT_FIELDS = (
    "calls",
    "input_tokens",
    "cached_input_tokens",
    "cached_share",
    "output_tokens",
    "reasoning_tokens",
    "image_input_tokens",
    "cost_usd",
    "cost_ticks",
    "batch_cost_usd",
    "batch_cost_ticks",
    "p50_ms",
    "p95_ms",
    "errors",
    "unmetered",
    "unpriced",
)

_SUMS = """count(*) as calls,
    coalesce(sum(input_tokens), 0) as input_tokens,
    coalesce(sum(cached_input_tokens), 0) as cached_input_tokens,
    coalesce(sum(output_tokens), 0) as output_tokens,
    coalesce(sum(reasoning_tokens), 0) as reasoning_tokens,
    coalesce(sum(image_input_tokens), 0) as image_input_tokens,
    coalesce(sum(cost_ticks), 0) as cost_ticks,
    coalesce(sum(case when endpoint = 'batches.result' then cost_ticks end), 0)
        as batch_cost_ticks,
    count(*) filter (where cost_source = 'unpriced') as unpriced,
    count(*) filter (where metered = 0) as unmetered,
    count(*) filter (where error is not null) as errors"""


@dataclass(frozen=True)
class Report:
    """`xai-meter report`'s numbers. `rows`: one per group, sorted by cost desc, calls desc,
    group; `total`: the same fields over every call in the window, group field(s) None.

    Group field: `by` itself (`model`, `app`, `day` as YYYY-MM-DD in the window's zone,
    `endpoint`), or for
    `by="key"` two: `key_id` and `key_name` (from api_keys; None when unnamed)."""

    window: Window
    by: str
    rows: list[dict[str, Any]]
    total: dict[str, Any]

    @property
    def group_fields(self) -> tuple[str, ...]:
        """The row fields naming the group: ("key_id", "key_name") or (by,)."""
        return group_fields(self.by)


def group_fields(by: str) -> tuple[str, ...]:
    """The fields naming a row's group for `--by by`."""
    return ("key_id", "key_name") if by == "key" else (by,)


def report(db: Database, window: Window, by: str) -> Report:
    """Calls, tokens, cost and latency per group, for calls started in `window`.

    Per row (and in `total`): `calls`, `input_tokens`, `cached_input_tokens`,
    `output_tokens`, `reasoning_tokens`, `image_input_tokens` (int); `cached_share` (cached /
    input tokens, a fraction 0..1; None without input tokens); `cost_ticks` (int, exact, 1e-10
    USD) and `cost_usd` (float, ticks / 1e10); ``batch_cost_*`` the part of the cost spent on
    Batch API results (rows of endpoint ``batches.result``, one per result:
    `daemon.dialects.batches`; ``calls`` counts those rows too, and ``--by endpoint`` shows them
    as a group of their own); `p50_ms`, `p95_ms` (nearest-rank over the calls with a
    duration; None without one); `errors`, `unmetered`, `unpriced` (int). `by` is a key of
    `REPORT_GROUPS` (KeyError otherwise)."""
    group = REPORT_GROUPS[by]
    if by == "day" and window.tz != "UTC":
        group = _local_day(db, window.tz)
    elif by == "day":
        group = utc_day(db, "started_at")
    where, params = _where(window)
    grouped = list(
        db.query(f"select {group} as grp, {_SUMS} from calls {where} group by grp", params)
    )
    totals = next(db.query(f"select {_SUMS} from calls {where}", params))
    latencies: dict[Any, list[float]] = {}
    for grp, duration in db.execute(
        f"select {group}, duration_ms from calls {where} and duration_ms is not null", params
    ).fetchall():
        latencies.setdefault(grp, []).append(duration)
    names: dict[str, str] = {}
    if by == "key":
        names = {k: n for k, n in db.execute("select key_id, name from api_keys").fetchall()}
    rows = []
    for row in grouped:
        grp = row["grp"]
        head = {"key_id": grp, "key_name": names.get(grp)} if by == "key" else {by: grp}
        rows.append(_fields(head, row, latencies.get(grp, [])))
    rows.sort(key=lambda r: (-r["cost_ticks"], -r["calls"], str(r[group_fields(by)[0]] or "")))
    every = [d for durations in latencies.values() for d in durations]
    total = _fields(dict.fromkeys(group_fields(by)), totals, every)
    return Report(window=window, by=by, rows=rows, total=total)


def _local_day(db: Database, tz: str) -> str:
    """The SQL for a call's YYYY-MM-DD in IANA zone `tz` (SQLite knows no zones: a Python
    function, registered on this connection, called once per row; PostgreSQL knows them)."""
    where = zone(tz)
    if not isinstance(db, sqlite_utils.Database):
        literal = tz.replace("'", "''")  # a zone name zone() found: no quote in it
        return f"to_char(to_timestamp(started_at) at time zone '{literal}', 'YYYY-MM-DD')"

    def local_day(epoch: float) -> str:
        return datetime.fromtimestamp(epoch, where).date().isoformat()

    db.conn.create_function("xm_local_day", 1, local_day, deterministic=True)
    return "xm_local_day(started_at)"


def _where(window: Window) -> tuple[str, list[float]]:
    if window.end is None:
        return "where started_at >= ?", [window.start]
    return "where started_at >= ? and started_at < ?", [window.start, window.end]


def _fields(head: dict[str, Any], sums: dict[str, Any], durations: list[float]) -> dict[str, Any]:
    inp = sums["input_tokens"]
    ordered = sorted(durations)
    return {
        **head,
        "calls": sums["calls"],
        "input_tokens": inp,
        "cached_input_tokens": sums["cached_input_tokens"],
        "cached_share": sums["cached_input_tokens"] / inp if inp else None,
        "output_tokens": sums["output_tokens"],
        "reasoning_tokens": sums["reasoning_tokens"],
        "image_input_tokens": sums["image_input_tokens"],
        "cost_usd": sums["cost_ticks"] / TICKS_PER_USD,
        "cost_ticks": sums["cost_ticks"],
        "batch_cost_usd": sums["batch_cost_ticks"] / TICKS_PER_USD,
        "batch_cost_ticks": sums["batch_cost_ticks"],
        "p50_ms": percentile(ordered, 50),
        "p95_ms": percentile(ordered, 95),
        "errors": sums["errors"],
        "unmetered": sums["unmetered"],
        "unpriced": sums["unpriced"],
    }


def percentile(sorted_values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile of already sorted values, rounded to 0.01 (None for none)."""
    if not sorted_values:
        return None
    rank = max(int(-(-pct * len(sorted_values) // 100)), 1)  # ceil(pct/100 * n)
    return round(sorted_values[rank - 1], 2)
