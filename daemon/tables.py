"""Rendering rows for the CLI: aligned columns on a terminal, JSON or CSV for scripts."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

import orjson

FORMATS = ("table", "json", "csv")


def render(
    rows: Sequence[dict[str, Any]], fmt: str = "table", columns: Sequence[str] | None = None
) -> str:
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
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    numeric = [all(_is_number(r.get(c)) for r in rows if r.get(c) is not None) for c in cols]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    parts = [line(cols), line(["-" * w for w in widths]), *(line(row) for row in cells)]
    return "\n".join(parts) + "\n"


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
