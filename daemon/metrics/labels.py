"""Bounded label values: a label fed from traffic must not grow a series per new value."""

from __future__ import annotations

from collections.abc import Iterable

OVERFLOW = "other"  # the one value every label takes beyond its cap


class BoundedLabel:
    """Bounds a label: known values, then the first `cap` others seen, then "other"."""

    def __init__(self, cap: int, known: Iterable[str] = ()) -> None:
        self._cap = cap
        self._known: set[str] = set(known)
        self._seen: set[str] = set()

    def add_known(self, models: Iterable[str]) -> None:
        self._known.update(models)

    def __call__(self, value: str | None) -> str:
        if not value:
            return "none"
        if value in self._known or value in self._seen:
            return value
        if len(self._seen) < self._cap:
            self._seen.add(value)
            return value
        return OVERFLOW
