"""xAI's own bill in the ledger, and the ledger's cost in the same shape (issue 13).

`save_billed_usage` keeps what the Management API's ``POST /v1/billing/teams/{id}/usage`` said
(table ``billed_usage``, migration m014); `load_billed_usage` reads it back; `ledger_costs`
sums the ledger's own cost per UTC day, xAI ``api_key_id`` and class of call, for
`daemon.management.reconcile` to set the two side by side. Writers run in the ledger's writer
thread (`Ledger.run_in_writer`); readers also run on a read-only connection (the CLI).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import NamedTuple

from daemon.ledger.engine import Database, table_exists, utc_day

DAY_SECONDS = 86_400

#: The class of a ledger row, for the reconciliation's "which unit types differ": what xAI's
#: unit types can be told apart by (`daemon.management.reconcile.unit_class` maps those).
#: Order matters: a batch result priced by the catalog is a batch row first.
_CALL_CLASS = """case
    when c.endpoint = 'batches.result' then 'batch'
    when c.catalog_rate like 'video%' then 'video'
    when c.catalog_rate is not null then 'voice'
    when c.endpoint like 'images.%' then 'image'
    else 'text' end"""


class BilledRow(NamedTuple):
    """One row of xAI's bill: UTC day ``YYYY-MM-DD``, xAI's api_key_id, its unit_type, USD as
    xAI gave it, and that amount in exact ticks (1 tick = 1e-10 USD)."""

    day: str
    api_key_id: str
    unit_type: str
    usd: float
    ticks: int


class LedgerCost(NamedTuple):
    """The ledger's cost of one UTC day, xAI api_key_id (None: the "unjoined" group, calls whose
    key has no api_key_id yet, or that carried no key) and class (``text``, ``image``,
    ``video``, ``voice``, ``batch``).

    ``ticks``: the sum of ``calls.cost_ticks`` (reported by xAI, else computed); ``calls``:
    rows; ``unpriced``: rows with usage but no price; ``unmetered``: rows whose usage could not
    be read (their cost is unknown, so missing from ``ticks``); ``reasons``: those rows by
    ``unmetered_reason`` (``no_usage``, ``malformed``, ...; ``unknown`` when none was stored),
    as (reason, rows) pairs, most rows first."""

    day: str
    api_key_id: str | None
    kind: str
    ticks: int
    calls: int
    unpriced: int
    unmetered: int
    reasons: tuple[tuple[str, int], ...] = ()


def day_start(day: str) -> float:
    """Epoch seconds of 00:00 UTC of ``day`` (``YYYY-MM-DD``); ValueError for anything else."""
    return datetime.combine(date.fromisoformat(day), datetime.min.time(), UTC).timestamp()


def days_between(first: str, last: str) -> list[str]:
    """Every UTC day from `first` to `last`, both included, oldest first."""
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    return [(start + timedelta(days=n)).isoformat() for n in range((end - start).days + 1)]


def save_billed_usage(
    db: Database, days: Iterable[str], rows: Iterable[BilledRow], fetched_at: float
) -> int:
    """Store a pull of xAI's bill in one transaction: every row of each day pulled (`days`,
    and any other day a row names) is replaced, so a day pulled again replaces itself, a unit
    type gone from it included. Returns the rows written."""
    rows = list(rows)
    replaced = sorted({*days, *(r.day for r in rows)})
    with db.conn:
        db.conn.executemany("delete from billed_usage where day = ?", [(d,) for d in replaced])
        db.conn.executemany(
            "insert into billed_usage (day, api_key_id, unit_type, usd, ticks, fetched_at) "
            "values (?, ?, ?, ?, ?, ?) on conflict (day, api_key_id, unit_type) do update set "
            "usd = excluded.usd, ticks = excluded.ticks, fetched_at = excluded.fetched_at",
            [(*row, fetched_at) for row in rows],
        )
        db.conn.executemany(
            "insert into billed_days (day, fetched_at) values (?, ?) "
            "on conflict (day) do update set fetched_at = excluded.fetched_at",
            [(d, fetched_at) for d in replaced],
        )
    return len(rows)


def pulled_days(db: Database, first: str, last: str) -> list[str]:
    """The days from `first` to `last` (``YYYY-MM-DD``, both included) that a stored pull
    covered, charged or not, oldest first."""
    if not table_exists(db, "billed_days"):
        return []
    return [
        r[0]
        for r in db.execute(
            "select day from billed_days where day between ? and ? order by day", [first, last]
        )
    ]


def has_billed_usage(db: Database) -> bool:
    """The ledger has the ``billed_usage`` table (a ledger migrated to m014)."""
    return table_exists(db, "billed_usage")


def load_billed_usage(db: Database, first: str, last: str) -> tuple[list[BilledRow], float | None]:
    """The stored bill of the days `first` to `last` (``YYYY-MM-DD``, both included), by day,
    key and unit type, and when the latest pull of those days was made (None: none stored)."""
    if not has_billed_usage(db):
        return [], None
    rows = [
        BilledRow(*r)
        for r in db.execute(
            "select day, api_key_id, unit_type, usd, ticks from billed_usage "
            "where day between ? and ? order by day, api_key_id, unit_type",
            [first, last],
        )
    ]
    fetched = db.execute(
        "select max(fetched_at) from billed_days where day between ? and ?", [first, last]
    ).fetchone()[0]
    return rows, fetched


def ledger_costs(db: Database, first: str, last: str) -> list[LedgerCost]:
    """The ledger's cost of the UTC days `first` to `last` (both included) per day, xAI
    api_key_id and class, from the calls of the default upstream (``provider = 'xai'``: other
    upstreams are not on xAI's bill). A call's day is the UTC day it started; its key joins
    through ``api_keys`` (key_id -> api_key_id). The unmetered rows' reasons come from a
    second pass over only those rows (few)."""
    span = [day_start(first), day_start(last) + DAY_SECONDS]
    rows = db.execute(
        f"""select {utc_day(db, "c.started_at")} as day, k.api_key_id, {_CALL_CLASS} as kind,
               coalesce(sum(c.cost_ticks), 0), count(*),
               count(*) filter (where c.cost_source = 'unpriced'),
               count(*) filter (where c.metered = 0)
        from calls c left join api_keys k on k.key_id = c.key_id
        where c.started_at >= ? and c.started_at < ? and c.provider = 'xai'
        group by day, k.api_key_id, kind
        order by day, k.api_key_id, kind""",
        span,
    ).fetchall()
    reasons: dict[tuple[str, str | None, str], list[tuple[str, int]]] = {}
    if any(r[6] for r in rows):
        for day, api_key_id, kind, reason, count in db.execute(
            f"""select {utc_day(db, "c.started_at")} as day, k.api_key_id,
                   {_CALL_CLASS} as kind, coalesce(c.unmetered_reason, 'unknown') as reason,
                   count(*) as n
            from calls c left join api_keys k on k.key_id = c.key_id
            where c.started_at >= ? and c.started_at < ? and c.provider = 'xai'
              and c.metered = 0
            group by day, k.api_key_id, kind, reason
            order by n desc, reason""",
            span,
        ):
            reasons.setdefault((day, api_key_id, kind), []).append((reason, count))
    return [LedgerCost._make((*r, tuple(reasons.get((r[0], r[1], r[2]), ())))) for r in rows]


def api_key_names(db: Database) -> dict[str, str]:
    """xAI api_key_id -> the key's name, as GET /v1/api-key gave it (the ``api_keys`` table)."""
    return {
        r[0]: r[1]
        for r in db.execute(
            "select api_key_id, name from api_keys where api_key_id is not null "
            "and name is not null order by updated_at"
        )
    }
