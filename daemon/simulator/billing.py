"""The simulator's bill: every billed answer books what it charged, for the Management API.

Every billed answer (a REST request, a WebSocket turn, a gRPC call, a batch line) books its
``cost_in_usd_ticks`` (billing ratio and batch discount applied; booked too when the answer
does not report it) under (UTC day of ``state.billing_clock``, the caller's ``api_key_id``,
unit type) in ``state.billing_book``; `daemon.simulator.management` serves that book.

Unit types [guess: xAI's own values of ``unit_type`` are not documented; these follow the
listing's price fields]: ``prompt_text_tokens``, ``cached_prompt_text_tokens``,
``prompt_image_tokens``, ``completion_text_tokens`` (reasoning included), ``search_sources``,
``server_side_tools``, ``image_generation``, ``video_generation``. A call's listing cost is
split by the units its usage tells (`catalog.price_units`); the billed total is spread over
them in proportion, the rounding remainder on the largest (`spread`), so the parts sum to the
reported cost exactly. Not booked: Messages (no cost reported; cache writes priced by
duration) and voice (priced from the daemon's catalog, never reported).

How a charge finds its caller: `billing` opens one billed answer (the REST front per request,
the gRPC front per call, a batch line, a WebSocket turn) in a context variable; `note` records
the answer's split, replacing what an earlier computation of the same answer noted (gRPC
builds REST's answer first, then its own); the book is written when the answer is done.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from daemon.simulator.state import SimulatorState

PROMPT_TEXT: Final = "prompt_text_tokens"
CACHED_PROMPT_TEXT: Final = "cached_prompt_text_tokens"
PROMPT_IMAGE: Final = "prompt_image_tokens"
COMPLETION_TEXT: Final = "completion_text_tokens"
SEARCH_SOURCES: Final = "search_sources"
SERVER_SIDE_TOOLS: Final = "server_side_tools"
IMAGE_GENERATION: Final = "image_generation"
VIDEO_GENERATION: Final = "video_generation"


@dataclass(slots=True)
class _Charge:
    state: SimulatorState
    api_key_id: str
    discount: tuple[int, int]
    units: dict[str, int] | None = field(default=None)


_CHARGE: ContextVar[_Charge | None] = ContextVar("xai_sim_charge", default=None)


def current_caller() -> str:
    """The ``api_key_id`` of the answer being served ("" outside of one)."""
    charge = _CHARGE.get()
    return charge.api_key_id if charge is not None else ""


@contextlib.contextmanager
def billing(
    state: SimulatorState, key_id: str | None = None, discount: tuple[int, int] = (1, 1)
) -> Iterator[None]:
    """One billed answer for ``key_id`` (None: the enclosing answer's caller): what `note`
    records inside is booked at the end, times ``discount`` (a batch line's ratio)."""
    who = current_caller() if key_id is None else key_id
    token = _CHARGE.set(_Charge(state, who, discount))
    try:
        yield
    finally:
        charge = _CHARGE.get()
        _CHARGE.reset(token)
        if charge is not None and charge.units:
            _book(charge)


def note(units: Mapping[str, int]) -> None:
    """The answer being served charges these billed ticks per unit type (replacing an earlier
    note of the same answer). Outside of `billing`, nothing."""
    charge = _CHARGE.get()
    if charge is not None:
        charge.units = {unit: ticks for unit, ticks in units.items() if ticks}


def spread(total: int, units: Mapping[str, int]) -> dict[str, int]:
    """``total`` ticks split in proportion to ``units`` (floors, the remainder on the largest
    unit): the parts sum to ``total`` exactly. No positive weight: nothing."""
    weight = sum(units.values())
    if weight <= 0:
        return {}
    parts = {unit: value * total // weight for unit, value in units.items()}
    largest = max(units, key=lambda unit: units[unit])
    parts[largest] += total - sum(parts.values())
    return parts


def today(state: SimulatorState) -> str:
    """The UTC day charges are booked under now (``state.billing_clock``)."""
    return datetime.fromtimestamp(state.billing_clock(), UTC).date().isoformat()


def _book(charge: _Charge) -> None:
    units = charge.units or {}
    num, den = charge.discount
    if (num, den) != (1, 1):
        units = spread(sum(units.values()) * num // den, units)
    day = today(charge.state)
    book = charge.state.billing_book
    for unit, ticks in units.items():
        if ticks:
            slot = (day, charge.api_key_id, unit)
            book[slot] = book.get(slot, 0) + ticks
