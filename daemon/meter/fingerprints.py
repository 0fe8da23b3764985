"""Fingerprint watch: which backend answers behind each model name, and when that changes.

Per (provider, model) the tracker keeps the current `system_fingerprint` and every one ever seen.
A change to a fingerprint never seen before is kind "new" (a new backend configuration: worth a
page); a change back to one seen before is kind "known" (several backends serving one model can
alternate; that must not page anyone). State is rebuilt from the ledger at start, so a restart
raises no false change. The tracker is a sink: dict lookups on the hot path, nothing else; the
change events go to the ledger queue, the log and the webhook queue.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from daemon.metrics import Metrics
from daemon.metrics.labels import OVERFLOW
from daemon.record import CallRecord

log = structlog.get_logger("xai_meter.fingerprints")

Key = tuple[str, str]  # (provider, model)


class ChangeKind(enum.StrEnum):
    """A fingerprint change's kind; stored in ``fingerprint_changes.kind`` and a metric label."""

    NEW = "new"  # a fingerprint never seen for this model: a new backend configuration
    KNOWN = "known"  # back to one seen before: several backends serving one model


@dataclass(frozen=True, slots=True)
class FingerprintChange:
    """One model's fingerprint change: ``old`` to ``new``, of a `ChangeKind`, ``at`` the start
    of the call that showed it (epoch seconds)."""

    at: float
    provider: str
    model: str
    old: str
    new: str
    kind: ChangeKind

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "provider": self.provider,
            "model": self.model,
            "old": self.old,
            "new": self.new,
            "kind": self.kind,
        }


class FingerprintTracker:
    """The fingerprint sink: per (provider, model), the current fingerprint and every one seen,
    from calls answered below 400. A change updates the metrics, is logged and goes to
    ``on_change``; a fingerprint unlike the listing's sets the mismatch gauge."""

    def __init__(
        self, metrics: Metrics, on_change: Callable[[FingerprintChange], None] | None = None
    ) -> None:
        self._metrics = metrics
        self._on_change = on_change or (lambda change: None)
        self._current: dict[Key, str] = {}
        self._seen: dict[Key, set[str]] = {}
        self._listed: dict[str, str] = {}  # listing model id -> fingerprint
        self._resolve: Callable[[str], str | None] = lambda model: model

    def load(self, seen: Iterable[tuple[str, str, str]], current: Mapping[Key, str]) -> None:
        """State from the ledger: every (provider, model, fingerprint) seen, and the latest."""
        for provider, model, fingerprint in seen:
            self._seen.setdefault((provider, model), set()).add(fingerprint)
        for key, fingerprint in current.items():
            self._current[key] = fingerprint
            self._seen.setdefault(key, set()).add(fingerprint)
            self._publish(key, None, fingerprint)

    def set_listing(self, listed: Mapping[str, str], resolve: Callable[[str], str | None]) -> None:
        """Fingerprints the price listing gives per model id, and how to map a name to an id."""
        self._listed = dict(listed)
        self._resolve = resolve
        for key, fingerprint in self._current.items():
            self._check_listing(key, fingerprint)

    def current(self) -> dict[Key, str]:
        return dict(self._current)

    def observe(self, record: CallRecord) -> None:
        """The sink: note the call's fingerprint; count and announce a change."""
        fingerprint = record.fingerprint
        model = record.model
        if not fingerprint or not model or record.status is None or record.status >= 400:
            return
        key = (record.provider, model)
        old = self._current.get(key)
        if old == fingerprint:
            return
        seen = self._seen.setdefault(key, set())
        kind = ChangeKind.KNOWN if fingerprint in seen else ChangeKind.NEW
        seen.add(fingerprint)
        self._current[key] = fingerprint
        self._publish(key, old, fingerprint)
        if old is None:
            return  # the model's first fingerprint: nothing changed
        change = FingerprintChange(
            at=record.started_at,
            provider=record.provider,
            model=model,
            old=old,
            new=fingerprint,
            kind=kind,
        )
        label = self._metrics.model_label(model)  # bounded, like every model label
        self._metrics.fingerprint_changes.labels(record.provider, label, kind).inc()
        self._metrics.fingerprint_last_change.labels(record.provider, label).set(record.started_at)
        log.warning("fingerprint_changed", **change.as_dict())
        self._on_change(change)

    def _publish(self, key: Key, old: str | None, new: str) -> None:
        provider, model = key
        model_label = self._metrics.model_label(model)
        shown_old, shown = old, new
        if model_label == OVERFLOW:
            # Models beyond the cap share one label: a fingerprint series each would grow one
            # series per overflow model. Their one series says only that they answer.
            shown_old, shown = (None if old is None else OVERFLOW), OVERFLOW
        if old is None:  # both kinds exist from the first sighting: increase() sees a change
            for kind in ChangeKind:
                self._metrics.fingerprint_changes.labels(provider, model_label, kind)
        if shown_old is not None and shown_old != shown:
            with contextlib.suppress(KeyError):  # not published (another model label)
                self._metrics.fingerprint.remove(provider, model_label, shown_old)
        self._metrics.fingerprint.labels(provider, model_label, shown).set(1)
        self._check_listing(key, new)

    def _check_listing(self, key: Key, fingerprint: str) -> None:
        provider, model = key
        listed_id = self._resolve(model)
        listed = self._listed.get(listed_id) if listed_id else None
        if listed is None:
            return
        self._metrics.fingerprint_listing_mismatch.labels(
            provider, self._metrics.model_label(model)
        ).set(int(listed != fingerprint))
