"""What the status page reads from the ledger beyond `report()`: spend totals, spend over
time, time to first token, what went wrong, the last calls and the fingerprint timeline.

Every function takes a read-only connection of either engine (SQLite or PostgreSQL:
`daemon.ledger.engine.open_ledger`), run in a thread by `daemon.status`; none writes. A window
is ``[start, end)`` in epoch seconds, ``end`` None meaning open (every row from ``start`` on), as
`daemon.windows.Window` has it. Money is exact integer ticks (1e-10 USD, `daemon.units`); times
are epoch seconds; durations ms.
"""

from __future__ import annotations

from typing import Any

from daemon.ledger.engine import Database, whole
from daemon.ledger.reports import REPORT_GROUPS

# The model a row counts under, as `report` has it: the one that answered, else the one asked
# for (None for a call that names none, e.g. GET /v1/api-key).
MODEL = REPORT_GROUPS["model"]
# Rows of a window: ``started_at`` in [start, end); end None = no upper bound.
_IN_WINDOW = "started_at >= ? and (? is null or started_at < ?)"


def _window(start: float, end: float | None) -> list[Any]:
    return [start, end, end]


def spend(db: Database, start: float, end: float | None) -> dict[str, int]:
    """Totals of a window: ``calls``, ``cost_ticks`` (int, exact), ``input_tokens``,
    ``output_tokens``, ``errors``, ``unmetered``, ``unpriced`` (all ints, 0 when empty)."""
    row = db.execute(
        f"""select count(*), coalesce(sum(cost_ticks), 0), coalesce(sum(input_tokens), 0),
                   coalesce(sum(output_tokens), 0), count(*) filter (where error is not null),
                   count(*) filter (where metered = 0),
                   count(*) filter (where cost_source = 'unpriced')
            from calls where {_IN_WINDOW}""",
        _window(start, end),
    ).fetchone()
    names = ("calls", "cost_ticks", "input_tokens", "output_tokens", "errors", "unmetered")
    return dict(zip((*names, "unpriced"), map(int, row), strict=True))


def spend_series(
    db: Database, start: float, end: float | None, origin: float, bucket_s: float
) -> list[dict[str, Any]]:
    """Spend over time per model: one row per (bucket, model) that has calls, ordered by
    bucket then model. ``bucket`` is the index from ``origin`` (``origin + bucket * bucket_s``
    is its start, epoch seconds); ``calls``, ``cost_ticks``, ``input_tokens``,
    ``output_tokens`` ints."""
    rows = db.execute(
        f"""select {whole(db, "(started_at - ?) / ?")} as bucket, {MODEL} as grp, count(*),
                   coalesce(sum(cost_ticks), 0), coalesce(sum(input_tokens), 0),
                   coalesce(sum(output_tokens), 0)
            from calls where {_IN_WINDOW} group by bucket, grp order by bucket, grp""",
        [origin, bucket_s, *_window(start, end)],
    ).fetchall()
    return [
        {
            "bucket": int(bucket),
            "model": model,
            "calls": int(calls),
            "cost_ticks": int(cost),
            "input_tokens": int(inp),
            "output_tokens": int(out),
        }
        for bucket, model, calls, cost, inp, out in rows
    ]


def ttft_by_model(db: Database, start: float, end: float | None) -> dict[str | None, list[float]]:
    """Time to first token (ms) of the window's calls that have one, per model, each list
    sorted ascending (for nearest-rank percentiles)."""
    out: dict[str | None, list[float]] = {}
    for model, ttft in db.execute(
        f"select {MODEL}, ttft_ms from calls where {_IN_WINDOW} and ttft_ms is not null "
        "order by ttft_ms",
        _window(start, end),
    ).fetchall():
        out.setdefault(model, []).append(float(ttft))
    return out


def problems(db: Database, start: float, end: float | None) -> dict[str, Any]:
    """What went wrong in the window, counted: ``unmetered`` by reason, ``errors`` by kind
    (`daemon.record.CallError`), ``unpriced`` by model; each ``{name: int}``, largest first."""
    params = _window(start, end)

    def counts(column: str, where: str) -> dict[str, int]:
        rows = db.execute(
            f"select coalesce({column}, '-') as name, count(*) as n from calls "
            f"where {_IN_WINDOW} and {where} group by name order by n desc, name",
            params,
        ).fetchall()
        return {str(name): int(n) for name, n in rows}

    return {
        "unmetered": counts("unmetered_reason", "metered = 0"),
        "errors": counts("error", "error is not null"),
        "unpriced": counts(MODEL, "cost_source = 'unpriced'"),
    }


# The columns of a call the page shows: never a prompt or completion (the ledger has none).
_CALL_FIELDS = (
    "calls.id, started_at, endpoint, method, status, transport, "
    f"{MODEL} as model, requested_model, input_tokens, cached_input_tokens, output_tokens, "
    "reasoning_tokens, cost_ticks, cost_source, duration_ms, ttft_ms, error, metered, "
    "unmetered_reason, app, calls.key_id, api_keys.name as key_name"
)


def recent_calls(db: Database, limit: int) -> list[dict[str, Any]]:
    """The `limit` latest calls, newest first, with the key's name from ``api_keys`` (None
    when GET /v1/api-key never named it). Fields: `_CALL_FIELDS` (``cost_ticks`` int or None,
    ``metered`` 0/1, times epoch seconds, durations ms)."""
    return list(
        db.query(
            f"select {_CALL_FIELDS} from calls left join api_keys using (key_id) "
            "order by started_at desc, calls.id desc limit ?",
            [limit],
        )
    )


def fingerprint_timeline(
    db: Database,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every fingerprint seen per model (``provider``, ``model``, ``fingerprint``,
    ``first_seen``, ``last_seen`` epoch seconds, ``calls`` int), ordered by model then first
    seen; and every change (``at``, ``provider``, ``model``, ``old``, ``new``, ``kind``: new or
    known), oldest first."""
    seen = list(
        db.query(
            "select provider, model, fingerprint, first_seen, last_seen, calls "
            "from fingerprints order by model, provider, first_seen, fingerprint"
        )
    )
    changes = list(
        db.query(
            "select at, provider, model, old, new, kind from fingerprint_changes order by at, id"
        )
    )
    return seen, changes
