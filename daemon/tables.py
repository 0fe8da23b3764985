"""Rendering rows for the CLI: aligned columns on a terminal, JSON or CSV for scripts.

JSON and CSV carry numbers as numbers and missing values as null (CSV: an empty field); a
table's text (``-`` for none, 2 decimals for a float) is for people only. `numeric` turns the
exact decimal strings a table shows (``"3.00"``) back into numbers for JSON and CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Collection, Sequence
from typing import Any

import orjson

FORMATS = ("table", "json", "csv")


def render(
    rows: Sequence[dict[str, Any]], fmt: str = "table", columns: Sequence[str] | None = None
) -> str:
    """`rows` in `fmt` (one of `FORMATS`), with `columns` (default: the first row's keys).

    json: a list of objects, indented; csv: a header line and a line per row; table: aligned
    columns, numbers right-aligned, ``(no rows)`` when there are none."""
    cols = list(columns) if columns is not None else (list(rows[0]) if rows else [])
    if fmt == "json":
        return (
            orjson.dumps(
                [{c: r.get(c) for c in cols} for r in rows], option=orjson.OPT_INDENT_2
            ).decode()
            + "\n"
        )
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()
    if not rows:
        return "(no rows)\n"
    cells = [[_cell(r.get(c)) for c in cols] for r in rows]
    right = {
        i
        for i, c in enumerate(cols)
        if all(_is_number(r.get(c)) for r in rows if r.get(c) is not None)
    }
    return aligned(cols, cells, right)


def aligned(
    header: Sequence[str],
    body: Sequence[Sequence[str]],
    right: Collection[int] = (),
    footer: Sequence[Sequence[str]] = (),
) -> str:
    """Text columns two spaces apart: the header, a rule, the body, then (after a second rule)
    the footer rows, such as a total. `right`: the indexes of the right-aligned columns."""
    widths = [max(len(h), *(len(row[i]) for row in (*body, *footer))) for i, h in enumerate(header)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if i in right else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ).rstrip()

    rule = line(["-" * w for w in widths])
    parts = [line(header), rule, *(line(row) for row in body)]
    if footer:
        parts += [rule, *(line(row) for row in footer)]
    return "\n".join(parts) + "\n"


def numeric(rows: Sequence[dict[str, Any]], columns: Collection[str]) -> list[dict[str, Any]]:
    """`rows` with the exact decimal strings in `columns` (``"3.00"``, ``"0.0000731"``) as
    numbers (int when whole and written without a point, else float); None stays None."""
    return [{k: _number(v) if k in columns else v for k, v in row.items()} for row in rows]


def _number(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    return float(value) if any(c in value for c in ".eE") else int(value)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _is_number(value: Any) -> bool:
    if isinstance(value, int | float):
        return True
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return False
        return True
    return False
