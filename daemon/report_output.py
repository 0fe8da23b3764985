"""`xai-meter report`'s output: a `daemon.ledger.reports.Report` as a table, JSON or CSV.

- table: a header line (the window: start → end, time zone, the user's own words; and the
  grouping), one line per group, a rule, and the total. It fits the width it is given (the
  CLI's: the terminal's, at most `WIDTH`, 100; off a terminal `WIDTH`, see `table_width`):
  token counts are short (``12.3k``, ``4.56M``), USD to the micro-dollar, latency in whole ms
  (one decimal when every latency of the table is below 10 ms); a missing model or app reads
  ``(none)``, as on the status page; the columns that are zero everywhere are left out, and
  when the rest would not fit, the least needed go first (named under the table; on a narrow
  terminal the cached share, p50, p95, output and input too, in that order) and the group
  names are cut with ``…``.
- json: ``{"window": {...}, "by": ..., "rows": [...], "total": {...}}``, every field, numbers
  as numbers (exact ``cost_ticks`` integers, ``cost_usd`` floats, shares as fractions), null
  for missing.
- csv: a ``row`` column (``group`` or ``total``), the group field(s), then every field; the
  total is the last line; missing values are empty fields.
"""

from __future__ import annotations

import csv
import io
import shutil
import textwrap
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson

from daemon.ledger.reports import REPORT_FIELDS, Report, group_fields
from daemon.tables import aligned
from daemon.units import format_usd
from daemon.windows import Window, zone

WIDTH = 100
MIN_WIDTH = 40  # a terminal narrower than this gets this: the table wraps there instead
NONE = "(none)"  # a group without a model or app (the status page's word too)


def render_report(rep: Report, fmt: str, width: int = WIDTH) -> str:
    """`rep` in `fmt` (``table``, ``json`` or ``csv``), one trailing newline."""
    if fmt == "json":
        body = {
            "window": window_dict(rep.window),
            "by": rep.by,
            "rows": rep.rows,
            "total": rep.total,
        }
        return orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n"
    if fmt == "csv":
        return _csv(rep)
    return _table(rep, width)


def table_width(stdout_is_terminal: bool) -> int:
    """The table's width: on a terminal, its width (``$COLUMNS`` when set, else the
    terminal's own; `shutil.get_terminal_size`) but at most `WIDTH` and at least `MIN_WIDTH`;
    off a terminal (a pipe, a file), `WIDTH`."""
    if not stdout_is_terminal:
        return WIDTH
    columns = shutil.get_terminal_size((WIDTH, 24)).columns
    return max(MIN_WIDTH, min(WIDTH, columns))


def window_dict(window: Window) -> dict[str, Any]:
    """The window for JSON: ``start``/``end`` epoch seconds (``end`` null: open, up to now),
    the same as ISO date-times in the window's zone (``start_local``/``end_local``), ``tz``
    and ``label``."""
    where = zone(window.tz)

    def local(epoch: float | None) -> str | None:
        if epoch is None:
            return None
        return datetime.fromtimestamp(epoch, where).isoformat(timespec="seconds")

    return {
        "start": window.start,
        "end": window.end,
        "start_local": local(window.start),
        "end_local": local(window.end),
        "tz": window.tz,
        "label": window.label,
    }


def _csv(rep: Report) -> str:
    columns = ["row", *group_fields(rep.by), *REPORT_FIELDS]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for kind, row in [*(("group", r) for r in rep.rows), ("total", rep.total)]:
        writer.writerow({"row": kind, **row})
    return out.getvalue()


# --- the table ------------------------------------------------------------------------------


def count(n: int) -> str:
    """A token count in at most 5 characters: exact below 10,000, else 3 significant digits
    with k, M, G or T (``12.3k``, ``456k``, ``1.2M``)."""
    if n < 10_000:
        return str(n)
    text = str(n)
    for unit, size in (("k", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12)):
        text = f"{n / size:.3g}"
        if float(text) < 1000:
            return text + unit
    return text + "T"


def _ms_whole(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _ms_tenths(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


_LATENCY = ("p50_ms", "p95_ms")


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _int(value: int) -> str:
    return str(value)


Column = tuple[str, str, Callable[[Any], str]]  # (field, header, formatter)

# Always shown, in this order after the group.
_BASE: list[Column] = [
    ("calls", "calls", _int),
    ("input_tokens", "input", count),
    ("cached_share", "cached", _share),
    ("output_tokens", "output", count),
    ("cost_ticks", "cost $", lambda t: format_usd(t, places=6)),
    ("p50_ms", "p50 ms", _ms_whole),  # or _ms_tenths: `_latency_columns`
    ("p95_ms", "p95 ms", _ms_whole),
]
# Shown when not zero everywhere, most needed first, while the line fits; then placed by
# `_ORDER`.
_OPTIONAL: list[Column] = [
    ("errors", "err", _int),
    ("unpriced", "unpr", _int),
    ("unmetered", "unmet", _int),
    ("reasoning_tokens", "reason", count),
    ("batch_cost_ticks", "batch $", lambda t: format_usd(t, places=6)),
    ("image_input_tokens", "img in", count),
]
_ORDER = [
    "calls",
    "input_tokens",
    "cached_share",
    "image_input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_ticks",
    "batch_cost_ticks",
    "p50_ms",
    "p95_ms",
    "errors",
    "unmetered",
    "unpriced",
]
# Under the table, for the short headers it shows.
_LEGEND = {
    "cached": "the share of input tokens read from cache",
    "batch $": "the Batch API results' part of cost $",
    "err": "calls that failed",
    "unmet": "calls without usage",
    "unpr": "calls without a price",
}
# The always-shown columns a narrow table (below 87 columns) leaves out, in this order.
_NARROW = ("cached_share", "p50_ms", "p95_ms", "output_tokens", "input_tokens")
_GROUP_MIN = 12  # the group column is never cut shorter than this
_GROUP_KEEP = 26  # nor shorter than this (grok-4-fast-non-reasoning) for an optional column


def _table(rep: Report, width: int) -> str:
    head = f"Calls by {rep.by}, {rep.window.label}"
    lines = [*textwrap.wrap(head, width, subsequent_indent="  "), ""]
    if not rep.rows:
        return "\n".join([*lines, "(no calls in this window)"]) + "\n"
    everything = [*rep.rows, rep.total]
    groups = [_group_label(rep.by, r) for r in rep.rows]

    def cells(columns: list[Column]) -> list[list[str]]:
        return [[fmt(row[field]) for field, _, fmt in columns] for row in everything]

    def span(columns: list[Column]) -> int:
        grid = cells(columns)
        widths = [max(len(h), *(len(r[i]) for r in grid)) for i, (_, h, _) in enumerate(columns)]
        return sum(widths) + 2 * len(widths)  # two spaces before each, after the group

    shown = _latency_columns(_BASE, everything)
    group_width = max(len(rep.by), len("total"), *(len(g) for g in groups))
    fixed = span(shown)
    dropped = []
    # A narrow terminal: the always-shown columns go too, least needed first, before the
    # group names are cut below `_GROUP_KEEP` (calls and cost always stay).
    for field in _NARROW:
        if min(group_width, _GROUP_KEEP) + fixed <= width:
            break
        column = next(c for c in shown if c[0] == field)
        shown.remove(column)
        dropped.append(column[1])
        fixed = span(shown)
    for column in _OPTIONAL:
        if not any(row[column[0]] for row in everything):
            continue  # zero everywhere: nothing to show
        extra = span([*shown, column]) - fixed
        if min(group_width, _GROUP_KEEP) + fixed + extra <= width:
            shown.append(column)
            fixed += extra
        else:
            dropped.append(column[1])
    limit = max(_GROUP_MIN, width - fixed)
    shown.sort(key=lambda c: _ORDER.index(c[0]))
    grid = cells(shown)
    header = [rep.by, *(h for _, h, _ in shown)]
    body = [[_cut(g, limit), *row] for g, row in zip(groups, grid[:-1], strict=True)]
    total = [["total", *grid[-1]]]
    lines.append(aligned(header, body, range(1, len(header)), total).rstrip("\n"))
    legend = "; ".join(f"{h}: {_LEGEND[h]}" for h in header if h in _LEGEND)
    if legend:
        lines += textwrap.wrap(legend + ".", width)
    if dropped:
        note = f"Not shown, for width: {', '.join(dropped)} (--format json or csv has every field)."
        lines += textwrap.wrap(note, width)
    return "\n".join(lines) + "\n"


def _latency_columns(columns: list[Column], rows: list[dict[str, Any]]) -> list[Column]:
    """`columns` with the latency ones all in one precision: tenths of a ms when every latency
    of the table is below 10 ms (a fast local upstream), else whole ms."""
    values = [row[f] for row in rows for f in _LATENCY if row[f] is not None]
    fmt = _ms_tenths if values and max(values) < 10 else _ms_whole
    return [(f, h, fmt if f in _LATENCY else g) for f, h, g in columns]


def _group_label(by: str, row: dict[str, Any]) -> str:
    if by != "key":
        return NONE if row[by] is None else str(row[by])
    key_id, name = row["key_id"], row["key_name"]
    if key_id is None:
        return "(no key)"
    return f"{name} ({key_id})" if name else str(key_id)


def _cut(text: str, limit: int) -> str:
    """`text` in at most `limit` characters: a key's name is cut before its id, so the id
    stays whole; anything else loses its end."""
    if len(text) <= limit:
        return text
    if text.endswith(")") and " (" in text:
        name, _, rest = text.rpartition(" (")
        keep = limit - len(rest) - 3
        if keep >= 1:
            return f"{name[:keep]}… ({rest}"
    return text[: limit - 1] + "…"
