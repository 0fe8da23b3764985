"""Money units: integer ticks, and the US dollars they stand for.

Every amount of money in the daemon is an integer number of **ticks**; `Decimal` appears only at
the edges (reading a price, printing one), a float never. Facts from /work/shared/xai-api.md,
"Units": 1 tick = 1e-10 USD, the unit of xAI's ``usage.cost_in_usd_ticks``; listing per-token
prices are ticks per token ("USD cents per 100 million tokens" is the same unit), so
$ per 1M tokens = ticks per token / 10,000.

This module owns the one `TICKS_PER_USD`, the exact conversions and the one USD formatter.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any, Final

#: Ticks in one US dollar (1 tick = 1e-10 USD).
TICKS_PER_USD: Final = 10**10
#: USD per 1M tokens * this = ticks per token (1e10 ticks per USD / 1e6 tokens).
TICKS_PER_TOKEN_PER_USD_PER_1M: Final = 10_000


def ticks_to_usd(ticks: int) -> Decimal:
    """Exact USD for a tick count."""
    return Decimal(ticks).scaleb(-10)


def parse_amount(value: Any) -> Decimal | None:
    """An exact, finite, non-negative number from an int, float or numeric string; else None.

    A float is read by its shortest repr (0.2 → ``Decimal("0.2")``, not the binary fraction),
    so a price written in JSON or TOML converts to ticks exactly. Booleans are not numbers here.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        d = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            return None
        d = Decimal(repr(value))  # the float's shortest repr: 0.2 → Decimal("0.2")
    elif isinstance(value, str):
        try:
            d = Decimal(value.strip())
        except InvalidOperation:
            return None
        if not d.is_finite():
            return None
    else:
        return None
    return d if d >= 0 else None


def format_usd(ticks: int, places: int | None = None) -> str:
    """USD for ``ticks`` as a plain decimal string (no ``$``, never an exponent).

    ``places`` None: exact, with at least 2 decimals (``"3.00"``, ``"0.025"``, ``"0.0000731"``).
    ``places`` given: rounded half-even to that many decimals (``places=6``: ``"0.000073"``).
    Per-token prices print per 1M tokens as ``format_usd(ticks_per_token * 1_000_000)``.
    """
    d = ticks_to_usd(ticks)
    if places is not None:
        d = d.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)
        return f"{d:f}"
    d = d.normalize()
    exponent = d.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:
        d = d.quantize(Decimal("0.01"))
    return f"{d:f}"
