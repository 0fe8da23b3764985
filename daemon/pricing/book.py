"""The price book: every `PriceSet` by the time it took effect, plus overrides; prices records.

- `PriceSet`: an immutable snapshot of the listing, with its name map and content digest.
- Name resolution: exact id or alias (case-insensitive), then without a provider prefix
  (``xai/``) and with variant endings stripped (``-latest``, reasoning effort ``-high``, ...).
- `PriceBook`: the history plus config overrides, and the price catalog (prices no listing
  carries, `daemon.pricing.catalog`) with its overrides; `PriceBook.price_record` is the
  meter's pricing sink, run on the hot path (dict lookups, no I/O, no locks).

Facts from /work/shared/xai-api.md, "Listings" (ids and ``aliases``; which name is the id and
which the alias has changed between listings) and "Models" (old names may be redirected, and the
response's ``model`` then shows the resolved id: `price_record` tries it first, then the
requested name). Stripping variant endings is our rule, not xAI's. Saving the history is the
ledger's (`daemon.ledger.prices`); fetching it is `daemon.pricing.refresh`'s.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Final

from daemon.pricing.catalog import Catalog, default_catalog
from daemon.pricing.cost import BATCH_RESULT_ENDPOINT, UnpricedError, catalog_cost, compute_cost
from daemon.pricing.model import ModelPrice, Source
from daemon.pricing.overrides import CATALOG_KEY, parse_catalog_overrides, parse_overrides
from daemon.record import CallRecord, CostSource

# Name endings that select a variant of a listed model (reasoning effort, "latest" pointer).
_STRIP_SUFFIXES: Final = ("-latest", "-high", "-medium", "-low")


# --------------------------------------------------------------------------------------------
# Name resolution and snapshots


def _resolve(names: Mapping[str, ModelPrice], name: str) -> ModelPrice | None:
    """Exact id or alias (case-insensitive), then without a provider prefix (``xai/``) and with
    variant endings stripped one at a time: ``grok-3-mini-high`` → ``grok-3-mini``,
    ``grok-3-latest`` → ``grok-3``."""
    found = names.get(name)
    if found is not None:
        return found
    key = name.strip().lower()
    found = names.get(key)
    if found is not None:
        return found
    if "/" in key:
        key = key.rsplit("/", 1)[1]
        found = names.get(key)
        if found is not None:
            return found
    stripped = True
    while stripped:
        stripped = False
        for suffix in _STRIP_SUFFIXES:
            if key.endswith(suffix) and len(key) > len(suffix):
                key = key[: -len(suffix)]
                found = names.get(key)
                if found is not None:
                    return found
                stripped = True
                break
    return None


def _name_map(models: Iterable[ModelPrice]) -> dict[str, ModelPrice]:
    """Lower-cased id and alias → price; an id always beats another model's alias."""
    models = list(models)
    names = {mp.model.lower(): mp for mp in models}
    for mp in models:
        for alias in mp.aliases:
            names.setdefault(alias.lower(), mp)
    return names


def _digest(models: Iterable[ModelPrice]) -> str:
    content = []
    for mp in sorted(models, key=lambda m: m.model):
        c = mp.content()
        c["aliases"] = sorted(c["aliases"])
        content.append(c)
    blob = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class PriceSet:
    """An immutable snapshot of the listing: model id → `ModelPrice`, in force from
    ``effective_at`` (epoch seconds). ``id`` is the ``price_sets`` row id once saved.
    ``names`` (lower-cased ids and aliases) and ``digest`` (of the content) are derived."""

    models: Mapping[str, ModelPrice]
    effective_at: float
    fetched_at: float
    id: int | None = None
    source: Source = "listing"
    names: Mapping[str, ModelPrice] = field(init=False, repr=False, compare=False)
    digest: str = field(init=False)

    def __post_init__(self) -> None:
        models = MappingProxyType(dict(self.models))
        object.__setattr__(self, "models", models)
        object.__setattr__(self, "names", MappingProxyType(_name_map(models.values())))
        object.__setattr__(self, "digest", _digest(models.values()))

    @classmethod
    def of(
        cls,
        models: Iterable[ModelPrice],
        *,
        effective_at: float,
        fetched_at: float | None = None,
        id: int | None = None,
        source: Source = "listing",
    ) -> PriceSet:
        """A price set keyed by each `ModelPrice`'s model id (a later duplicate id wins);
        ``fetched_at`` defaults to ``effective_at`` (both epoch seconds)."""
        return cls(
            models={mp.model: mp for mp in models},
            effective_at=effective_at,
            fetched_at=effective_at if fetched_at is None else fetched_at,
            id=id,
            source=source,
        )

    def resolve(self, name: str) -> ModelPrice | None:
        """The price for a model name: id, alias or a variant of one (see `_resolve`); else None."""
        return _resolve(self.names, name)


# --------------------------------------------------------------------------------------------
# The book: history + overrides, priced on the hot path


@dataclass(frozen=True, slots=True)
class _State:
    """Everything a lookup reads, replaced whole (one attribute store) on every change."""

    sets: tuple[PriceSet, ...] = ()
    times: tuple[float, ...] = ()
    views: tuple[Mapping[str, ModelPrice], ...] = ()  # per set: names with overrides applied
    overrides: Mapping[str, ModelPrice] = field(default_factory=dict)
    override_view: Mapping[str, ModelPrice] = field(default_factory=dict)
    catalog: Catalog = field(default_factory=default_catalog)  # overrides applied


def _view(ps: PriceSet, overrides: Mapping[str, ModelPrice]) -> dict[str, ModelPrice]:
    merged = dict(ps.models)
    alone: list[ModelPrice] = []
    for key, ov in overrides.items():
        base = ps.resolve(key)
        if base is None:
            alone.append(ov)
        else:
            merged[base.model] = merged[base.model].overridden_by(ov)
    names = _name_map(merged.values())
    for ov in alone:
        names[ov.model.lower()] = ov
        for alias in ov.aliases:
            names.setdefault(alias.lower(), ov)
    return names


class PriceBook:
    """The prices in force at any time: a history of `PriceSet` plus overrides from config.

    Readers (`price_for`, `price_record`) take one reference to an immutable state and only do
    dict lookups; writers (`add`, `set_overrides`) build a new state and swap it in, so no lock
    is needed. Overrides apply at every time and win field by field over the listing: an override
    naming a listed model (by id, alias or variant) replaces only the fields it sets; one naming
    an unlisted model prices that model by itself. A time before the first set uses the first
    set (calls made while the first listing was still being fetched).

    The catalog (``catalog``: the shipped one unless given) prices what no listing carries;
    the ``catalog`` key of the overrides overrides its entries (`parse_catalog_overrides`).
    """

    def __init__(
        self,
        history: Iterable[PriceSet] = (),
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
        catalog: Catalog | None = None,
    ) -> None:
        self._state = _State()
        self._base_catalog = default_catalog() if catalog is None else catalog
        sets = sorted(history, key=lambda s: s.effective_at)
        overrides = overrides or {}
        self._rebuild(sets, parse_overrides(overrides), self._catalog_of(overrides))

    # -- writers ---------------------------------------------------------------------------

    def _catalog_of(self, overrides: Mapping[str, Any]) -> Catalog:
        return self._base_catalog.with_overrides(
            parse_catalog_overrides(overrides.get(CATALOG_KEY, {}))
        )

    def _rebuild(
        self,
        sets: Sequence[PriceSet],
        overrides: Mapping[str, ModelPrice],
        catalog: Catalog | None = None,
    ) -> None:
        self._state = _State(
            sets=tuple(sets),
            times=tuple(s.effective_at for s in sets),
            views=tuple(MappingProxyType(_view(s, overrides)) for s in sets),
            overrides=MappingProxyType(dict(overrides)),
            override_view=MappingProxyType(_name_map(overrides.values())),
            catalog=self._state.catalog if catalog is None else catalog,
        )

    def add(self, price_set: PriceSet) -> PriceSet:
        """Put a fetched (or saved) set in force; returns the set now in force for its content.

        A set with the same content as the latest one adds nothing: the latest keeps its
        ``effective_at`` and id (or takes the new one's id if it had none), and its
        ``fetched_at`` moves on.
        """
        st = self._state
        sets = list(st.sets)
        if sets and sets[-1].digest == price_set.digest:
            latest = sets[-1]
            sets[-1] = replace(
                latest,
                fetched_at=max(latest.fetched_at, price_set.fetched_at),
                id=latest.id if latest.id is not None else price_set.id,
            )
            self._rebuild(sets, st.overrides)
            return sets[-1]
        index = bisect.bisect_right(st.times, price_set.effective_at)
        sets.insert(index, price_set)
        self._rebuild(sets, st.overrides)
        return price_set

    def set_overrides(self, overrides: Mapping[str, Mapping[str, Any]]) -> None:
        """Replace the overrides (config reload); `OverrideError` leaves the old ones in place."""
        parsed = parse_overrides(overrides)
        self._rebuild(self._state.sets, parsed, self._catalog_of(overrides))

    # -- readers ---------------------------------------------------------------------------

    @property
    def history(self) -> tuple[PriceSet, ...]:
        return self._state.sets

    @property
    def current(self) -> PriceSet | None:
        sets = self._state.sets
        return sets[-1] if sets else None

    @property
    def overrides(self) -> Mapping[str, ModelPrice]:
        return self._state.overrides

    @property
    def catalog(self) -> Catalog:
        """The price catalog in force, its overrides applied (`daemon.pricing.catalog`)."""
        return self._state.catalog

    def lookup(self, model: str, at: float) -> tuple[ModelPrice, int | None] | None:
        """(price, id of the `PriceSet` in force at ``at``) for a model name; None if unknown."""
        st = self._state
        times = st.times
        if not times:
            found = _resolve(st.override_view, model)
            return None if found is None else (found, None)
        i = _index(times, at)
        found = _resolve(st.views[i], model)
        return None if found is None else (found, st.sets[i].id)

    def price_for(self, model: str, at: float) -> ModelPrice | None:
        """The price of ``model`` in force at ``at`` (epoch seconds), overrides applied."""
        found = self.lookup(model, at)
        return None if found is None else found[0]

    def price_record(self, record: CallRecord, at: float | None = None) -> None:
        """Fill the record's cost fields (the only writer of them).

        No usage: left as it is (all None). Else ``computed_cost_ticks`` from the price in force
        at ``started_at`` for ``model`` (the resolved name), falling back to ``requested_model``;
        ``cost_ticks`` is the reported cost when xAI sent one, else the computed one;
        ``cost_source`` says which, or "unpriced" (``cost_ticks`` None) when neither exists.
        A record without ``model`` (an image answer names none) gets the requested name resolved
        to its listed id (the name as requested when the book does not know it), so every
        later sink labels it by that. The computed cost takes the response's ``service_tier``,
        the upstream's ``price_multiplier`` and an image call's ``image_tier`` into account
        (`compute_cost`).
        ``at`` prices at another time than ``started_at`` (the backfill of calls made before any
        price for their model existed); tool fees always follow ``started_at``, the call's time.

        A usage with a ``catalog_rate`` (text-to-speech, speech-to-text, realtime voice, video)
        is priced by the catalog at ``started_at`` instead (`catalog_cost`; no price set, so no
        ``price_id``). A Batch API result (endpoint `BATCH_RESULT_ENDPOINT`) has its computed
        cost times the catalog's `Catalog.batch_multiplier` (1 - the batch discount), rounded
        down; its reported cost stays what xAI says.
        """
        usage = record.usage
        if usage is None:
            return
        computed: int | None = None
        price_id: int | None = None
        catalog = self._state.catalog
        if usage.catalog_rate is not None:
            try:
                computed = catalog_cost(
                    usage, record.model or record.requested_model, catalog, record.started_at
                )
            except UnpricedError:
                computed = None
        else:
            found = None
            for name in (record.model, record.requested_model):
                if name:
                    found = self.lookup(name, record.started_at if at is None else at)
                    if found is not None:
                        break
            if record.model is None:  # an answer without a model (images): the requested one
                record.model = found[0].model if found is not None else record.requested_model
            if found is not None:
                price, set_id = found
                try:
                    computed = compute_cost(
                        usage,
                        price,
                        record.service_tier,
                        record.price_multiplier,
                        record.image_tier,
                        at=record.started_at,
                        catalog=catalog,
                    )
                    price_id = set_id
                except UnpricedError:
                    computed = None
        if computed is not None and record.endpoint == BATCH_RESULT_ENDPOINT:
            factor = catalog.batch_multiplier(record.started_at)
            computed = computed * factor.numerator // factor.denominator
        record.computed_cost_ticks = computed
        record.price_id = price_id
        reported = usage.reported_cost_ticks
        if reported is not None:
            record.cost_ticks, record.cost_source = reported, CostSource.REPORTED
        elif computed is not None:
            record.cost_ticks, record.cost_source = computed, CostSource.COMPUTED
        else:
            record.cost_ticks, record.cost_source = None, CostSource.UNPRICED

    def set_at(self, at: float) -> PriceSet | None:
        """The `PriceSet` in force at ``at`` (the first one for earlier times); None if none."""
        st = self._state
        return st.sets[_index(st.times, at)] if st.sets else None

    def models_at(self, at: float | None = None) -> list[ModelPrice]:
        """Every distinct model price in force at ``at`` (now by default), sorted by id."""
        st = self._state
        if not st.sets:
            view: Mapping[str, ModelPrice] = st.override_view
        else:
            view = st.views[_index(st.times, time.time() if at is None else at)]
        unique = {id(mp): mp for mp in view.values()}
        return sorted(unique.values(), key=lambda mp: mp.model)


def _index(times: Sequence[float], at: float) -> int:
    """Index of the set in force at ``at`` in a non-empty, sorted ``times``."""
    if at >= times[-1]:
        return len(times) - 1
    return max(bisect.bisect_right(times, at) - 1, 0)
