"""JSON coercion for the dialect parsers: read a value from an upstream's JSON without trusting it.

Upstream JSON is data, not a contract: a count may be missing, negative, a float or a string. These
helpers give the parsers one reading of each shape (an object, a token count, an optional int, a
nested object, a bounded string, a reported cost), so a malformed field counts as absent, never
as an exception.
"""

from __future__ import annotations

import math
from typing import Any

import orjson


def loads_object(data: bytes) -> dict[str, Any] | None:
    """Parse JSON; None unless it is an object."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def as_int(value: Any) -> int:
    """A token count from JSON: ints (and integral floats) only, never negative; else 0."""
    if type(value) is int:  # the usual case first: this runs several times per call
        return value if value > 0 else 0
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, float) and value.is_integer():
        return max(int(value), 0)
    return 0


def opt_int(value: Any) -> int | None:
    """An optional integer from JSON (ints and integral floats; bools are not numbers here)."""
    if type(value) is int:
        return value
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def sub(obj: Any, key: str) -> dict[str, Any]:
    """``obj[key]`` when both are objects; else an empty dict (never shared: safe to read only)."""
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, dict) else {}


def opt_str(value: Any, limit: int = 200) -> str | None:
    """A non-empty string cut to ``limit`` characters; None for anything else."""
    if type(value) is str and value:
        return value if len(value) <= limit else value[:limit]
    return None


def reported_ticks(usage: dict[str, Any]) -> int | None:
    """What the upstream says it billed, in ticks (1e-10 USD), from a `usage` object.

    ``cost_in_usd_ticks`` when present; else ``cost_in_nano_usd`` (1e-9 USD, so ticks = nano
    * 10; xai-api.md, "Units"); else None. Ticks win when both are present. A float nano value
    (not seen, but JSON allows it) is rounded to the nearest tick.
    """
    ticks = opt_int(usage.get("cost_in_usd_ticks"))
    if ticks is not None:
        return ticks
    nano = usage.get("cost_in_nano_usd")
    if nano is None:
        return None
    whole = opt_int(nano)
    if whole is not None:
        return whole * 10
    if isinstance(nano, float) and math.isfinite(nano):
        return round(nano * 10)
    return None
