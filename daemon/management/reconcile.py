"""Reconciliation: the ledger's cost set against xAI's own bill, per UTC day and key.

xAI's bill (``POST /v1/billing/teams/{id}/usage``, `ManagementClient.usage`) says what was
charged per UTC day, ``api_key_id`` and ``unit_type``; the ledger knows what each relayed call
cost (``calls.cost_ticks``: the cost xAI reported, else the computed one) and, through the
``api_keys`` table, which ``api_key_id`` its key is. `reconcile` sets the two side by side:
billed, ledger, gap (ledger minus billed, in exact ticks and in USD), relative gap, and which
classes of unit types differ. Where a gap is expected, each row says so:

- **voice**: xAI bills audio and characters it counted; the ledger prices what the relay saw at
  the catalog's rates (no cost is reported on voice) [guess: small gaps];
- **storage**: files and collections storage never crosses the relay: the ledger has none;
- **batch**: xAI bills a batch (at the batch discount) when it runs; the ledger books each
  result when its results page is read, which may be another day.

The calls of keys with no ``api_key_id`` yet (the refresher asks xAI once per key) form their
own "unjoined" group: the ledger's cost of it has no bill to meet.

`DailyReconciliation` is the daily job: after ``management.reconcile_hour_utc`` it pulls the
last ``management.reconcile_days`` complete UTC days, stores the pull in the ledger
(`daemon.ledger.billing`, a day pulled again replaces itself) and exports the gauges of the
last complete day (`daemon.metrics.ReconciliationGauges`).

How xAI names its unit types is not documented [guess]; `unit_class` reads them by the words
they carry, so an unknown name lands in ``text`` (the tokens and tool fees of chat-like calls,
which the ledger cannot split from one another: a call has one cost).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Final

import structlog

from daemon.ledger import Ledger
from daemon.ledger.billing import (
    BilledRow,
    LedgerCost,
    api_key_names,
    day_start,
    days_between,
    ledger_costs,
    save_billed_usage,
)
from daemon.management.client import BilledUsage
from daemon.metrics import ReconciliationGauges
from daemon.units import TICKS_PER_USD, format_usd

log = structlog.get_logger("xai_meter.management")

#: Gaps past both of these are "gap" (the BillingReconciliationGap alert's thresholds).
GAP_RATIO: Final = 0.02
GAP_TICKS: Final = TICKS_PER_USD // 100  # $0.01
DRAIN_WAIT: Final = 5.0  # seconds the daily run waits for the ledger's queue before reading
UNJOINED: Final = "unjoined"  # the group (and the gauges' api_key_id) of unjoined calls
CLASSES: Final = ("text", "image", "video", "voice", "batch", "storage")
EXPECTED: Final[Mapping[str, str]] = {
    "voice": "voice: xAI bills the audio and characters it counted, the ledger prices what "
    "the relay saw at the catalog's rates",
    "storage": "storage: files and collections never cross the relay, the ledger has none",
    "batch": "batch: xAI bills a batch (discounted) when it runs, the ledger books each result "
    "when its page is read, maybe another day",
}
_STORAGE_WORDS = ("storage", "collection", "file", "document")
_VOICE_WORDS = ("audio", "voice", "speech", "tts", "stt", "realtime", "transcri", "character")
_TOOL_WORDS = ("search", "tool", "mcp", "source", "code", "x_post", "x_user")


def unit_class(unit_type: str) -> str:
    """The class of an xAI unit type (one of `CLASSES`), by the words its name carries:
    batch; a tool or search (``COLLECTIONS_SEARCH`` included) is ``text`` (a chat call's fee);
    storage; voice; video; image (but not image input tokens, which are ``text``); the rest,
    tokens and names not known, ``text`` [guess: xAI's names are not documented]."""
    name = unit_type.lower()
    if "batch" in name:
        return "batch"
    if any(w in name for w in _TOOL_WORDS):
        return "text"
    if any(w in name for w in _STORAGE_WORDS):
        return "storage"
    if any(w in name for w in _VOICE_WORDS):
        return "voice"
    if "video" in name:
        return "video"
    if "image" in name and "token" not in name:
        return "image"
    return "text"


@dataclass(frozen=True, slots=True)
class ClassGap:
    """A class of unit types whose billed and ledger costs differ on one day and key (a class
    is what `unit_class` tells: the ledger cannot split one call's cost by unit type)."""

    kind: str  # one of CLASSES
    unit_types: tuple[str, ...]  # xAI's unit types of this class that day (may be empty)
    billed_ticks: int
    ledger_ticks: int
    with_batch: bool = False  # ``text`` holding the ledger's batch results (see `reconcile`)

    @property
    def gap_ticks(self) -> int:
        return self.ledger_ticks - self.billed_ticks

    @property
    def expected(self) -> bool:
        """A class where gaps are expected (`EXPECTED`), or text holding batch results."""
        return self.kind in EXPECTED or self.with_batch

    @property
    def why(self) -> str:
        """The expected gap's reason ("" when unexpected)."""
        return EXPECTED["batch"] if self.with_batch else EXPECTED.get(self.kind, "")


@dataclass(frozen=True, slots=True)
class Reconciled:
    """One UTC day and one key (``row`` "key"), the unjoined calls (``row`` "unjoined",
    ``api_key_id`` None) or every key of the day (``row`` "day", ``api_key_id`` None).
    Amounts in exact ticks (1e-10 USD); ``gap`` is ledger minus billed."""

    day: str
    row: str
    api_key_id: str | None
    name: str | None
    billed_ticks: int
    ledger_ticks: int
    calls: int = 0
    unpriced: int = 0
    unmetered: int = 0
    # the unmetered calls by reason (`daemon.record.Unmetered`: no_usage, malformed, ...)
    unmetered_reasons: Mapping[str, int] = field(default_factory=dict)
    differs: tuple[ClassGap, ...] = ()
    billed_by_unit: Mapping[str, int] = field(default_factory=dict)
    partial: bool = False  # the day is still open (today): xAI's bill may lag

    @property
    def gap_ticks(self) -> int:
        return self.ledger_ticks - self.billed_ticks

    @property
    def gap_ratio(self) -> float | None:
        """The gap as a fraction of the bill; None when nothing was billed."""
        return self.gap_ticks / self.billed_ticks if self.billed_ticks else None

    @property
    def status(self) -> str:
        """``match`` (no gap), ``small`` (within ±2% of the bill or $0.01), ``gap``."""
        gap = abs(self.gap_ticks)
        if gap == 0:
            return "match"
        if gap <= GAP_TICKS or gap <= GAP_RATIO * self.billed_ticks:
            return "small"
        return "gap"

    @property
    def note(self) -> str:
        """Why the row looks as it does, in a few words ("" when billed and ledger match)."""
        parts = []
        if self.row == UNJOINED:
            parts.append(
                "calls of keys with no api_key_id yet (not joined to xAI's keys, or no key "
                "sent): no bill to meet them"
            )
        elif self.row == "key" and self.billed_ticks and not self.calls:
            parts.append("billed, but no call through this daemon (another client, the console?)")
        elif self.row == "key" and self.calls and not self.billed_ticks:
            parts.append("calls in the ledger, nothing billed")
        if self.unmetered:
            why = ", ".join(f"{n} {reason}" for reason, n in self.unmetered_reasons.items())
            parts.append(
                f"{self.unmetered} unmetered call(s){f' ({why})' if why else ''}: billed by "
                "xAI, their usage unread by the relay, so missing from the ledger"
            )
        if self.unpriced:
            parts.append(f"{self.unpriced} unpriced call(s): no price yet, missing from the ledger")
        expected = [g.why for g in self.differs if g.expected]
        unexpected = [g.kind for g in self.differs if not g.expected]
        if unexpected and (self.unmetered or self.unpriced) and self.gap_ticks < 0:
            parts.append(f"gap in {', '.join(unexpected)}: the unread calls' cost, or more")
        elif unexpected:
            parts.append(f"unexpected gap in {', '.join(unexpected)}: check prices and usage")
        if expected:
            parts.append("expected gap in " + "; ".join(expected))
        return "; ".join(parts)


def reconcile(
    billed: Iterable[BilledRow | BilledUsage],
    ledger: Iterable[LedgerCost],
    names: Mapping[str, str] | None = None,
    *,
    days: Sequence[str] = (),
    today: str | None = None,
) -> list[Reconciled]:
    """Billed and ledger side by side: per day, one row per key (billed or in the ledger),
    the unjoined group when it has calls, and the day's total (a "day" row, last of its day).
    ``days``: days to show even when empty (a day row each); ``today``: that day is marked
    partial. Rows are ordered by day, then key rows by api_key_id, then unjoined, then day."""
    names = names or {}
    bills: dict[tuple[str, str], dict[str, int]] = {}
    for b in billed:
        units = bills.setdefault((b.day, b.api_key_id), {})
        units[b.unit_type] = units.get(b.unit_type, 0) + b.ticks
    costs: dict[tuple[str, str | None], list[LedgerCost]] = {}
    for c in ledger:
        costs.setdefault((c.day, c.api_key_id), []).append(c)
    all_days = sorted({*days, *(d for d, _ in bills), *(d for d, _ in costs)})
    out: list[Reconciled] = []
    for day in all_days:
        keys = sorted({k for d, k in bills if d == day} | {k for d, k in costs if d == day and k})
        rows = [
            _row(day, "key", key, names.get(key), bills.get((day, key), {}), costs.get((day, key)))
            for key in keys
        ]
        if (day, None) in costs:
            rows.append(_row(day, UNJOINED, None, None, {}, costs[(day, None)]))
        all_units: dict[str, int] = {}
        for (d, _), units in bills.items():
            if d == day:
                for unit, ticks in units.items():
                    all_units[unit] = all_units.get(unit, 0) + ticks
        every = [c for (d, _), cs in costs.items() if d == day for c in cs]
        rows.append(_row(day, "day", None, None, all_units, every))
        if day == today:
            rows = [_partial(r) for r in rows]
        out += rows
    return out


def _partial(row: Reconciled) -> Reconciled:
    return dataclasses.replace(row, partial=True)


def _row(
    day: str,
    kind: str,
    api_key_id: str | None,
    name: str | None,
    units: Mapping[str, int],
    costs: Sequence[LedgerCost] | None,
) -> Reconciled:
    costs = costs or ()
    billed_by_class: dict[str, int] = {}
    unit_types: dict[str, list[str]] = {}
    for unit, ticks in sorted(units.items()):
        cls = unit_class(unit)
        billed_by_class[cls] = billed_by_class.get(cls, 0) + ticks
        unit_types.setdefault(cls, []).append(unit)
    ledger_by_class: dict[str, int] = {}
    for c in costs:
        ledger_by_class[c.kind] = ledger_by_class.get(c.kind, 0) + c.ticks
    # A bill that names no batch unit type bills batch results under the token types: the
    # ledger's batch rows are set against those, and a gap there may be the batch's.
    folded = "batch" not in billed_by_class and "batch" in ledger_by_class
    if folded:
        ledger_by_class["text"] = ledger_by_class.get("text", 0) + ledger_by_class.pop("batch")
    differs = tuple(
        ClassGap(cls, tuple(unit_types.get(cls, ())), billed, ledger, folded and cls == "text")
        for cls in CLASSES
        if (billed := billed_by_class.get(cls, 0)) != (ledger := ledger_by_class.get(cls, 0))
    )
    return Reconciled(
        day=day,
        row=kind,
        api_key_id=api_key_id,
        name=name,
        billed_ticks=sum(units.values()),
        ledger_ticks=sum(c.ticks for c in costs),
        calls=sum(c.calls for c in costs),
        unpriced=sum(c.unpriced for c in costs),
        unmetered=sum(c.unmetered for c in costs),
        unmetered_reasons=_reasons(costs),
        differs=differs if kind != UNJOINED else (),
        billed_by_unit=dict(units),
    )


def _reasons(costs: Sequence[LedgerCost]) -> dict[str, int]:
    """The unmetered calls of `costs` by reason, most first (then by name)."""
    counts: dict[str, int] = {}
    for c in costs:
        for reason, n in c.reasons:
            counts[reason] = counts.get(reason, 0) + n
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


# --- the window and the daily job ---------------------------------------------------------


def utc_day(epoch: float) -> date:
    """The UTC date of an epoch time."""
    return datetime.fromtimestamp(epoch, UTC).date()


def complete_days(now: float, days: int) -> tuple[date, date]:
    """The last `days` complete UTC days before `now`'s day: (first, last), both included."""
    today = utc_day(now)
    return today - timedelta(days=days), today - timedelta(days=1)


def billed_rows(usage: Iterable[BilledUsage]) -> list[BilledRow]:
    """The client's answers as the ledger's rows."""
    return [BilledRow(u.day, u.api_key_id, u.unit_type, u.usd, u.ticks) for u in usage]


UsagePull = Callable[[date, date], Awaitable[list[BilledUsage]]]


class DailyReconciliation:
    """The daily job: `due` once per UTC day from ``hour_utc`` on; `run` pulls the last
    ``days`` complete UTC days with ``pull`` (`ManagementClient.usage`, both days
    inclusive), stores them, reconciles and exports the last complete day's gauges.

    The management refresher asks `due` on each round and then runs it (counting a failure as
    ``usage``); a failed run stays due, so the next round tries again. ``done_on`` lives in
    memory: a restart past the hour pulls once more. ``wall``: epoch seconds.
    """

    def __init__(
        self,
        ledger: Ledger,
        gauges: ReconciliationGauges,
        *,
        hour_utc: int,
        days: int,
        wall: Callable[[], float],
    ) -> None:
        self.ledger = ledger
        self.gauges = gauges
        self.hour_utc = hour_utc
        self.days = days
        self.wall = wall
        self.done_on: date | None = None  # the UTC day of the last successful run

    def due(self) -> bool:
        """Past ``hour_utc`` today (UTC) and not yet run successfully today."""
        now = datetime.fromtimestamp(self.wall(), UTC)
        return now.hour >= self.hour_utc and self.done_on != now.date()

    async def run_if_due(self, pull: UsagePull) -> list[Reconciled] | None:
        """`run` when `due`; None when not. Raises what `run` raises."""
        return await self.run(pull) if self.due() else None

    async def run(self, pull: UsagePull) -> list[Reconciled]:
        """Pull, store, reconcile, export; the rows of every day pulled. Raises the pull's
        `ManagementError`; the ledger's own errors propagate too (nothing is exported then)."""
        now = self.wall()
        first, last = complete_days(now, self.days)
        rows = billed_rows(await pull(first, last))
        first_s, last_s = first.isoformat(), last.isoformat()
        # What was submitted just before (this round's key join) is written first; bounded,
        # so a busy ledger never holds the refresher up for long.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_WAIT):
                await self.ledger.drained()
        result = await self.ledger.run_in_writer(self._store_and_read, rows, first_s, last_s, now)
        self.export(result, last_s)
        self.done_on = utc_day(now)
        day = next(r for r in result if r.day == last_s and r.row == "day")
        log.info(
            "billing_reconciled",
            first=first_s,
            last=last_s,
            billed_usd=format_usd(day.billed_ticks),
            ledger_usd=format_usd(day.ledger_ticks),
            gap_ticks=day.gap_ticks,
        )
        return result

    def _store_and_read(
        self, rows: list[BilledRow], first: str, last: str, now: float
    ) -> list[Reconciled]:
        db = self.ledger.db()
        save_billed_usage(db, days_between(first, last), rows, now)
        return reconcile(
            rows, ledger_costs(db, first, last), api_key_names(db), days=days_between(first, last)
        )

    def export(self, rows: Sequence[Reconciled], day: str) -> None:
        """Set the gauges to `day`'s rows (keys and the unjoined group; old series go)."""
        per_key = {
            (r.api_key_id or UNJOINED): (r.billed_ticks, r.ledger_ticks)
            for r in rows
            if r.day == day and r.row != "day"
        }
        self.gauges.set(day_start(day), per_key)
