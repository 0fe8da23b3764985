"""`xai-meter reconcile`: xAI's bill (fetched now, or the ledger's stored pull) set against
the ledger, per UTC day and key, as a table, JSON or CSV.

Where the bill comes from: with the management key in the environment (``management.
api_key_env``), `ManagementClient.usage` is asked now, for the last ``days`` complete UTC days
and today so far (marked partial: xAI's bill may lag the ledger); the ledger is only read (the
daemon's daily run stores pulls). Without the key, or when the API fails, the pull the daemon
stored (`daemon.management.reconcile.DailyReconciliation`) is used, over the days it covers,
and the output says so. When neither serves, `NoBill` (one line; the CLI exits 2).

JSON and CSV carry numbers as numbers: USD as floats, ticks as exact integers.
"""

from __future__ import annotations

import asyncio
import csv
import io
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import aiohttp
import orjson

from daemon.config import Settings
from daemon.ledger.billing import (
    BilledRow,
    LedgerCost,
    api_key_names,
    days_between,
    ledger_costs,
    load_billed_usage,
    pulled_days,
)
from daemon.ledger.engine import is_url, open_ledger, redact
from daemon.management.client import ManagementClient, ManagementError
from daemon.management.reconcile import UNJOINED, Reconciled, billed_rows, reconcile, utc_day
from daemon.management.refresh import management_key
from daemon.units import TICKS_PER_USD, format_usd


class NoBill(Exception):
    """Neither the Management API nor the ledger's stored pull can say what xAI billed; the
    message (one line) says why and what to do."""


class NoLedger(Exception):
    """The bill was fetched, but there is no ledger to set it against (``str()``: "no ledger
    at PATH")."""


@dataclass(frozen=True, slots=True)
class Report:
    """The rows, and where xAI's bill came from: ``source`` for JSON (``from``: ``api`` or
    ``ledger``, the days, ``fetched_at``, the API's error if one sent us to the ledger) and
    ``line`` for the table."""

    rows: list[Reconciled]
    source: dict[str, Any]
    line: str


def report_text(
    settings: Settings,
    days: int | None,
    fmt: str,
    progress: Callable[[str], None] | None = None,
) -> str:
    """`xai-meter reconcile`: the report for these settings (``management.*``, the ledger at
    ``ledger.url``, else ``ledger.path``), over `days` (None: ``management.reconcile_days``)
    complete UTC days, in `fmt`. The key is read from ``$<management.api_key_env>``.
    `progress` is told each stage (see `build_report`). Raises `NoBill`, `NoLedger`."""
    m = settings.management
    key = management_key(settings)
    report = asyncio.run(
        build_report(
            settings.ledger.url or settings.ledger.path,
            days=days or m.reconcile_days,
            now=time.time(),
            key=key or None,
            key_env=m.api_key_env or "XAI_MANAGEMENT_KEY",
            base_url=m.base_url,
            team_id=m.team_id,
            progress=progress,
        )
    )
    return render(report, fmt)


async def build_report(
    ledger_path: str | Path,
    *,
    days: int,
    now: float,
    key: str | None,
    key_env: str,
    base_url: str,
    team_id: str = "",
    retry_wait: Any = None,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Reconcile the last `days` complete UTC days before `now` (and today so far when the
    bill is fetched). `key`: the management key (None: not set; `key_env` names it in
    messages). Raises `NoBill` when neither source serves, `NoLedger` when the bill was fetched
    but there is no ledger.

    `progress` (the CLI's `daemon.progress.TerminalProgress.show`) is told each stage as one
    line: ``reconcile: fetching xAI's bill, FIRST to LAST (N days), from URL…`` before the
    fetch, then ``reconcile: day I/N (DAY)…`` before the ledger's cost of each day is read."""
    tell = progress or _silent
    today = utc_day(now)
    first, last = (today - timedelta(days=days)).isoformat(), today.isoformat()
    fetched: list[BilledRow] | None = None
    failure = ""
    refused = False
    if key is not None:
        tell(
            f"reconcile: fetching xAI's bill, {first} to {last} ({days + 1} days), from {base_url}…"
        )
        try:
            fetched = await _fetch(base_url, key, team_id, first, last, retry_wait)
        except ManagementError as exc:
            failure = str(exc)
            refused = exc.status in _REFUSED
    why_not, fix = _why_not(failure, refused, key_env, base_url)
    return _assemble(
        str(ledger_path), fetched, failure, (why_not, fix), first, last, now, base_url, tell
    )


#: What the Management API answers a key it does not take (not a management key, revoked).
_REFUSED: Final = (401, 403)


def _why_not(failure: str, refused: bool, key_env: str, base_url: str) -> tuple[str, str]:
    """Why the bill was not fetched, and the fix: the key is not set (export it), the API
    refused it (401/403: not a management key; where to make one), or the API failed."""
    if refused:
        return (
            f"the Management API refused ${key_env} ({failure})",
            f"set ${key_env} to a valid management key (console.x.ai, Settings, Management "
            "Keys: a management key, not an API key)",
        )
    if failure:
        return (
            f"the Management API failed ({failure})",
            f"try again when the Management API ({base_url}) answers",
        )
    return f"${key_env} is not set", f"export {key_env}=<management key>"


def _silent(line: str) -> None:
    pass


def _assemble(
    where: str,
    fetched: list[BilledRow] | None,
    failure: str,
    not_fetched: tuple[str, str],
    first: str,
    last: str,
    now: float,
    base_url: str,
    tell: Callable[[str], None],
) -> Report:
    """The report from the bill fetched (None: not fetched: `not_fetched` is why, and the
    fix, from `_why_not`; `failure` is the API's error when it failed) or else the ledger's
    stored pull, and the ledger's costs. `where`: the ledger's file, or a PostgreSQL URL."""
    why_not, fix = not_fetched
    path = redact(where) if is_url(where) else Path(where)
    if isinstance(path, Path) and not path.exists():
        if fetched is None:
            raise NoBill(
                f"{why_not}, and there is no ledger at {path} to hold a stored pull of xAI's "
                f"bill. Fix: {fix}, or pass --ledger FILE."
            )
        raise NoLedger(f"no ledger at {path}")
    db = open_ledger(where, readonly=True)
    try:
        if fetched is not None:
            billed, shown, partial = fetched, days_between(first, last), last
            source: dict[str, Any] = {"from": "api", "fetched_at": now, "api_error": None}
            line = f"xAI's bill: fetched now from the Management API ({base_url})."
        else:
            yesterday = (date.fromisoformat(last) - timedelta(days=1)).isoformat()
            billed, fetched_at = load_billed_usage(db, first, yesterday)
            pulled = pulled_days(db, first, yesterday)  # a day with no charges included
            if not pulled:
                raise NoBill(
                    f"{why_not}, and the ledger {path} holds no stored pull of xAI's bill for "
                    f"{first} to {yesterday}. Fix: {fix} (a daemon with a working management "
                    "key stores a pull every day)."
                )
            shown, partial = days_between(pulled[0], pulled[-1]), None
            when = datetime.fromtimestamp(fetched_at or 0.0, UTC).isoformat(timespec="seconds")
            source = {"from": "ledger", "fetched_at": fetched_at, "api_error": failure or None}
            line = (
                f"xAI's bill: not fetched ({why_not}); the pull the daemon stored in the "
                f"ledger at {when}, over the days it covers."
            )
        costs: list[LedgerCost] = []
        for n, day in enumerate(shown, 1):  # a day at a time: the progress a big ledger needs
            tell(f"reconcile: day {n}/{len(shown)} ({day})…")
            costs += ledger_costs(db, day, day)
        names = api_key_names(db)
    finally:
        db.close()
    source.update(first_day=shown[0], last_day=shown[-1])
    return Report(reconcile(billed, costs, names, days=shown, today=partial), source, line)


async def _fetch(
    base_url: str, key: str, team_id: str, first: str, last: str, retry_wait: Any
) -> list[BilledRow]:
    async with aiohttp.ClientSession() as session:
        client = ManagementClient(session, base_url, key, team_id, retry_wait=retry_wait)
        usage = await client.usage(date.fromisoformat(first), date.fromisoformat(last))
    return billed_rows(usage)


# --- output: table, JSON, CSV -------------------------------------------------------------


def _usd(ticks: int) -> float:
    return ticks / TICKS_PER_USD


def as_dict(row: Reconciled) -> dict[str, Any]:
    """One row for JSON: numbers as numbers (USD as floats, ticks as exact integers)."""
    return {
        "day": row.day,
        "row": row.row,
        "api_key_id": row.api_key_id,
        "name": row.name,
        "billed_usd": _usd(row.billed_ticks),
        "ledger_usd": _usd(row.ledger_ticks),
        "gap_usd": _usd(row.gap_ticks),
        "gap_ratio": row.gap_ratio,
        "billed_ticks": row.billed_ticks,
        "ledger_ticks": row.ledger_ticks,
        "gap_ticks": row.gap_ticks,
        "status": row.status,
        "calls": row.calls,
        "unpriced": row.unpriced,
        "unmetered": row.unmetered,
        "unmetered_reasons": dict(row.unmetered_reasons),
        "partial": row.partial,
        "differs": [
            {
                "class": g.kind,
                "unit_types": list(g.unit_types),
                "billed_ticks": g.billed_ticks,
                "ledger_ticks": g.ledger_ticks,
                "gap_ticks": g.gap_ticks,
                "expected": g.expected,
            }
            for g in row.differs
        ],
        "billed_by_unit_type": dict(row.billed_by_unit),
        "note": row.note,
    }


CSV_COLUMNS: Final = (
    "day",
    "row",
    "api_key_id",
    "name",
    "billed_usd",
    "ledger_usd",
    "gap_usd",
    "gap_ratio",
    "billed_ticks",
    "ledger_ticks",
    "gap_ticks",
    "status",
    "calls",
    "unpriced",
    "unmetered",
    "partial",
    "differs",
    "note",
)


def render_json(rows: Sequence[Reconciled], source: Mapping[str, Any]) -> str:
    """``{"source": {...}, "rows": [...]}`` (`as_dict` rows), indented, one trailing newline."""
    body = {"source": dict(source), "rows": [as_dict(r) for r in rows]}
    return orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n"


def render_csv(rows: Sequence[Reconciled]) -> str:
    """`CSV_COLUMNS`, one line per row: plain numbers (no ``$`` or ``%``), ``differs`` as
    ``class:gap_ticks`` pairs joined by ``;`` (``!`` after an unexpected one)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        values = as_dict(row)
        values["differs"] = ";".join(
            f"{g.kind}:{g.gap_ticks}{'' if g.expected else '!'}" for g in row.differs
        )
        values["gap_ratio"] = "" if row.gap_ratio is None else row.gap_ratio
        values["partial"] = int(row.partial)
        writer.writerow({c: values[c] for c in CSV_COLUMNS})
    return out.getvalue()


def render_table(rows: Sequence[Reconciled], source: str) -> str:
    """Aligned columns for a terminal: one line per row (exact USD, the gap's sign kept, the
    relative gap in %), then the notes, then where xAI's bill came from (`source`)."""
    head = ("day", "key", "billed $", "ledger $", "gap $", "gap %", "calls", "status")
    cells = [
        (
            r.day + ("*" if r.partial else ""),
            _key_label(r),
            format_usd(r.billed_ticks),
            format_usd(r.ledger_ticks),
            _signed(r.gap_ticks),
            "-" if r.gap_ratio is None else f"{r.gap_ratio:+.2%}",
            str(r.calls),
            r.status,
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
    right = {2, 3, 4, 5, 6}

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if i in right else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ).rstrip()

    lines = [line(head), line(["-" * w for w in widths]), *(line(c) for c in cells)]
    if not rows:
        lines.append("(no billed usage and no ledger cost in these days)")
    notes = [(r, r.note) for r in rows if r.note]
    if notes:
        lines.append("")
        lines.append("Notes:")
        lines += [f"  {r.day} {_key_label(r)}: {note}" for r, note in notes]
    if any(r.partial for r in rows):
        lines.append("  * today, still open: xAI's bill may lag behind the ledger")
    lines.append("")
    lines.append(
        "Gaps are ledger minus billed; expected where xAI bills what the relay cannot see or "
        "price the same way: voice, storage and batch discounts."
    )
    lines.append(source)
    return "\n".join(lines) + "\n"


def _key_label(row: Reconciled) -> str:
    if row.row == "day":
        return "(all keys)"
    if row.row == UNJOINED:
        return f"({UNJOINED})"
    return f"{row.name} ({row.api_key_id})" if row.name else str(row.api_key_id)


def _signed(ticks: int) -> str:
    text = format_usd(abs(ticks))
    return ("-" if ticks < 0 else "+" if ticks > 0 else "") + text


def render(report: Report, fmt: str) -> str:
    """The report in `fmt` (``table``, ``json`` or ``csv``: `daemon.tables.FORMATS`)."""
    if fmt == "json":
        return render_json(report.rows, report.source)
    if fmt == "csv":
        return render_csv(report.rows)
    return render_table(report.rows, report.line)
