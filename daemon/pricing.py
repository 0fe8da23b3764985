"""Prices: xAI's listings as exact integer ticks, their history, and the cost of one call.

Units. Money is an integer number of **ticks** everywhere (1 tick = 1e-10 USD, the unit of
xAI's ``usage.cost_in_usd_ticks``). Listing token prices are already integer ticks per token
("USD cents per 100 million tokens" is the same unit): $ per 1M tokens = ticks / 10,000.
``search_price`` is ticks per source. ``image_price`` is documented as cents but observed as
ticks (200000000 = $0.02 per image); `parse_image_price` tells the two apart by magnitude.

The pieces, in the order data flows through them:

- `parse_language_models` / `parse_image_models`: listing JSON → `ModelPrice` (tolerant).
- `fetch_listing` / `PriceRefresher`: GET the listings (retried with tenacity) → `PriceSet`.
- `save_price_set` / `load_price_history`: the history in SQLite (sync; run in the ledger thread).
- `PriceBook`: every `PriceSet` by the time it took effect, plus config overrides;
  `price_record` prices a finished `CallRecord` on the hot path (dict lookups, no I/O, no locks).
- `compute_cost`: one `Usage` at one `ModelPrice` → ticks.
- `prices_table`: rows for ``xai-meter prices``.

The cost formula (`compute_cost`), checked exactly against real bills::

    (input - cached - image_input)·P_in + cached·P_cached + image_input·P_image_in
    + output·P_out + sources·P_search + Σ tool calls·fee + images·P_image

``output`` already includes reasoning; cached and image-input tokens are parts of ``input``
(xAI bills "prompt text, audio and image tokens" at the prompt price, and its chat usage reports
``text_tokens`` = ``prompt_tokens`` when no image is sent), so each input token is billed once.
Long context: when ``input >= long_context_threshold`` and the listing has long-context prices,
*all* tokens use them. The priority service tier is **not priced**: xAI publishes no multiplier,
so a priority call's computed cost is the standard one (its reported cost, when present, is the
truth and wins anyway).
"""

from __future__ import annotations

import asyncio
import bisect
import difflib
import hashlib
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any, Final, Literal

import aiohttp
import sqlite_utils
import structlog
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential
from tenacity.wait import WaitBaseT

from daemon.record import CallRecord, Usage

log = structlog.get_logger("xai_meter.pricing")

Source = Literal["listing", "override"]
CostSource = Literal["reported", "computed", "unpriced"]

TICKS_PER_USD: Final = 10**10
#: USD per 1M tokens * this = ticks per token (1e10 ticks per USD / 1e6 tokens).
TICKS_PER_TOKEN_PER_USD_PER_1M: Final = 10_000

#: Server-side tool fees in ticks per call, keyed like xAI's ``server_side_tool_usage_details``
#: without ``_calls``. Web/X search and code execution: $5 per 1,000 calls; collections search
#: (``file_search``): $2.50 per 1,000; attachment search (``document_search``): $10 per 1,000.
#: Remote MCP has no published per-call fee (its tokens are billed as tokens): 0. A tool not
#: listed here adds nothing (the reported cost, when present, still includes it).
TOOL_FEES_TICKS: Final[Mapping[str, int]] = MappingProxyType(
    {
        "web_search": 50_000_000,
        "x_search": 50_000_000,
        "code_interpreter": 50_000_000,
        "code_execution": 50_000_000,
        "file_search": 25_000_000,
        "collections_search": 25_000_000,
        "document_search": 100_000_000,
        "attachment_search": 100_000_000,
        "mcp": 0,
    }
)

#: Per-image prices outside this range (USD) are not believed in either unit.
PLAUSIBLE_IMAGE_USD: Final = (Decimal("0.0005"), Decimal("5"))

# Name endings that select a variant of a listed model (reasoning effort, "latest" pointer).
_STRIP_SUFFIXES: Final = ("-latest", "-high", "-medium", "-low")


# --------------------------------------------------------------------------------------------
# Prices of one model


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """One model's prices, all integer ticks (per token, per source or per image); None = unlisted.

    ``input``/``cached_input``/``output``/``image_input`` are ticks per token; ``search`` is ticks
    per source; ``image`` is ticks per generated image. The ``*_long`` prices apply to every token
    of a request whose input reaches ``long_context_threshold``.
    """

    model: str
    aliases: tuple[str, ...] = ()
    input: int | None = None
    cached_input: int | None = None
    output: int | None = None
    image_input: int | None = None
    search: int | None = None
    image: int | None = None
    long_context_threshold: int | None = None
    input_long: int | None = None
    cached_input_long: int | None = None
    output_long: int | None = None
    fingerprint: str | None = None
    source: Source = "listing"

    @property
    def has_long_context(self) -> bool:
        return self.long_context_threshold is not None and (
            self.input_long is not None
            or self.cached_input_long is not None
            or self.output_long is not None
        )

    def content(self) -> dict[str, Any]:
        """Everything but ``source``, as plain values (the digest and the SQLite row use it)."""
        return {
            "model": self.model,
            "aliases": list(self.aliases),
            **{name: getattr(self, name) for name in PRICE_FIELDS},
            "long_context_threshold": self.long_context_threshold,
            "fingerprint": self.fingerprint,
        }

    def overridden_by(self, override: ModelPrice) -> ModelPrice:
        """This price with every field the override sets replaced (the override wins)."""
        changes: dict[str, Any] = {
            name: getattr(override, name)
            for name in (*PRICE_FIELDS, "long_context_threshold")
            if getattr(override, name) is not None
        }
        aliases = self.aliases + tuple(a for a in override.aliases if a not in self.aliases)
        return replace(self, aliases=aliases, source="override", **changes)


PRICE_FIELDS: Final = (
    "input",
    "cached_input",
    "output",
    "image_input",
    "search",
    "image",
    "input_long",
    "cached_input_long",
    "output_long",
)


class UnpricedError(LookupError):
    """A usage has a nonzero quantity for which the model has no price."""

    def __init__(self, model: str, price_field: str) -> None:
        super().__init__(f"model {model!r} has no {price_field} price")
        self.model = model
        self.field = price_field


def _tool_fee(name: str) -> int:
    fee = TOOL_FEES_TICKS.get(name)
    if fee is not None:
        return fee
    key = name.strip().lower().removeprefix("server_side_tool_").removesuffix("_calls")
    return TOOL_FEES_TICKS.get(key, 0)


def compute_cost(usage: Usage, price: ModelPrice, service_tier: str | None = None) -> int:
    """The cost of one call in ticks (see the module docstring for the formula).

    Counts are clamped: negative counts count as 0, image-input tokens as at most the input and
    cached tokens as at most the rest (xAI does not say whether cached tokens can be image
    tokens; this order keeps "caching never costs more" true), so the result is never negative
    and no token is billed twice. A cached token without a cached price costs the input price;
    an image-input token without an image price costs the input price. `UnpricedError` when a
    nonzero quantity has no price at all (never a silent zero). ``service_tier`` is accepted but
    not priced: xAI publishes no priority multiplier.
    """
    del service_tier  # priority: not priced (no published multiplier); see the module docstring
    inp = max(usage.input_tokens, 0)
    image_in = min(max(usage.image_input_tokens, 0), inp)
    cached = min(max(usage.cached_input_tokens, 0), inp - image_in)
    text = inp - cached - image_in
    out = max(usage.output_tokens, 0)

    p_in, p_cached, p_out = price.input, price.cached_input, price.output
    threshold = price.long_context_threshold
    if threshold is not None and inp >= threshold and price.has_long_context:
        # Every component takes its long-context price when listed, else keeps its own price.
        p_in = price.input_long if price.input_long is not None else p_in
        p_cached = price.cached_input_long if price.cached_input_long is not None else p_cached
        p_out = price.output_long if price.output_long is not None else p_out
    if p_cached is None:
        p_cached = p_in
    p_image_in = price.image_input if price.image_input is not None else p_in

    total = 0
    for count, unit, name in (
        (text, p_in, "input"),
        (cached, p_cached, "cached_input"),
        (image_in, p_image_in, "image_input"),
        (out, p_out, "output"),
        (max(usage.sources, 0), price.search, "search"),
        (max(usage.images, 0), price.image, "image"),
    ):
        if count:
            if unit is None:
                raise UnpricedError(price.model, name)
            total += count * unit
    for tool, calls in usage.server_tool_calls.items():
        if calls > 0:
            total += calls * _tool_fee(tool)
    return total


def ticks_to_usd(ticks: int) -> Decimal:
    """Exact USD for a tick count."""
    return Decimal(ticks).scaleb(-10)


# --------------------------------------------------------------------------------------------
# Listings → ModelPrice

_LISTING_PRICE_KEYS: Final = {
    "prompt_text_token_price": "input",
    "cached_prompt_text_token_price": "cached_input",
    "completion_text_token_price": "output",
    "prompt_image_token_price": "image_input",
    "search_price": "search",
    "prompt_text_token_price_long_context": "input_long",
    "cached_prompt_text_token_price_long_context": "cached_input_long",
    "completion_text_token_price_long_context": "output_long",
}


def _decimal(value: Any) -> Decimal | None:
    """A finite, non-negative number from an int, float or numeric string; else None."""
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


def _whole(value: Any) -> int | None:
    """A non-negative whole number (30000, 30000.0, "30000"); anything else → None."""
    d = _decimal(value)
    if d is None or d != d.to_integral_value():
        return None
    return int(d)


def parse_image_price(value: Any, model: str = "?") -> int | None:
    """Ticks per image from a listing's ``image_price``, whichever unit it came in.

    Observed values are ticks (200000000 = $0.02); the docs say cents (2 = $0.02). A value is
    taken in the unit that makes it a plausible per-image price (`PLAUSIBLE_IMAGE_USD`); the two
    ranges cannot overlap. A value plausible in neither unit is dropped with a warning.
    """
    d = _decimal(value)
    if d is None:
        if value is not None:
            log.warning(
                "price_listing_field_ignored",
                model=model,
                field="image_price",
                value=repr(value)[:80],
                reason="not a number",
            )
        return None
    if d == 0:
        return 0
    lo, hi = PLAUSIBLE_IMAGE_USD
    as_ticks = d
    as_cents = d * (TICKS_PER_USD // 100)
    for ticks in (as_ticks, as_cents):
        if lo * TICKS_PER_USD <= ticks <= hi * TICKS_PER_USD and ticks == ticks.to_integral_value():
            return int(ticks)
    log.warning(
        "price_listing_field_ignored",
        model=model,
        field="image_price",
        value=repr(value)[:80],
        reason="not a plausible per-image price in ticks or cents",
    )
    return None


def _parse_entry(entry: Any) -> ModelPrice | None:
    if not isinstance(entry, Mapping):
        log.warning("price_listing_entry_skipped", reason="not an object", entry=repr(entry)[:80])
        return None
    model = entry.get("id")
    if not isinstance(model, str) or not model.strip():
        log.warning("price_listing_entry_skipped", reason="no model id", entry=repr(entry)[:80])
        return None
    model = model.strip()
    prices: dict[str, int | None] = {}
    for key, name in _LISTING_PRICE_KEYS.items():
        raw = entry.get(key)
        prices[name] = _whole(raw)
        if raw is not None and prices[name] is None:
            log.warning(
                "price_listing_field_ignored",
                model=model,
                field=key,
                value=repr(raw)[:80],
                reason="not a whole number of ticks, 0 or more",
            )
    prices["image"] = parse_image_price(entry.get("image_price"), model)
    threshold = _whole(entry.get("long_context_threshold"))
    raw_aliases = entry.get("aliases")
    aliases: list[str] = []
    if isinstance(raw_aliases, list):
        for a in raw_aliases:
            if isinstance(a, str) and a.strip() and a.strip() != model and a.strip() not in aliases:
                aliases.append(a.strip())
    fingerprint = entry.get("fingerprint")
    return ModelPrice(
        model=model,
        aliases=tuple(aliases),
        long_context_threshold=threshold or None,
        fingerprint=fingerprint if isinstance(fingerprint, str) and fingerprint else None,
        source="listing",
        **prices,
    )


def _entries(obj: Any) -> list[Any]:
    if isinstance(obj, list):
        return obj
    if isinstance(obj, Mapping):
        for key in ("models", "data"):
            value = obj.get(key)
            if isinstance(value, list):
                return value
        if "id" in obj:  # GET /v1/language-models/{id}: one model
            return [obj]
    log.warning("price_listing_unreadable", type=type(obj).__name__)
    return []


def _parse_listing(obj: Any) -> list[ModelPrice]:
    models: dict[str, ModelPrice] = {}
    for entry in _entries(obj):
        mp = _parse_entry(entry)
        if mp is None:
            continue
        if mp.model in models:
            log.warning("price_listing_duplicate", model=mp.model, kept="first")
            continue
        models[mp.model] = mp
    return list(models.values())


def parse_language_models(obj: Any) -> list[ModelPrice]:
    """`ModelPrice` for each usable entry of a ``/v1/language-models`` answer.

    Accepts ``{"models": [...]}``, ``{"data": [...]}`` (``/v1/models``, with or without the newer
    price extras), a bare list or one model object. Every price field is optional, unknown fields
    are ignored, an entry without an id is skipped and an unreadable price is dropped (logged).
    """
    return _parse_listing(obj)


def parse_image_models(obj: Any) -> list[ModelPrice]:
    """`ModelPrice` for each usable entry of a ``/v1/image-generation-models`` answer.

    Same tolerance as `parse_language_models`; ``image_price`` goes through `parse_image_price`.
    """
    return _parse_listing(obj)


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
    source: str = "listing"
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
        source: str = "listing",
    ) -> PriceSet:
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
# Overrides from config


class OverrideError(ValueError):
    """A price override in the config is wrong; the message names the model, field and fix."""


# field in config → (ModelPrice field, unit): per_1m = USD per 1M tokens, usd = USD per unit
_OVERRIDE_FIELDS: Final[Mapping[str, tuple[str, str]]] = MappingProxyType(
    {
        "input": ("input", "per_1m"),
        "cached_input": ("cached_input", "per_1m"),
        "output": ("output", "per_1m"),
        "image_input": ("image_input", "per_1m"),
        "input_long": ("input_long", "per_1m"),
        "input_long_context": ("input_long", "per_1m"),
        "cached_input_long": ("cached_input_long", "per_1m"),
        "cached_input_long_context": ("cached_input_long", "per_1m"),
        "output_long": ("output_long", "per_1m"),
        "output_long_context": ("output_long", "per_1m"),
        "image": ("image", "usd"),
        "search": ("search", "usd"),
        "long_context_threshold": ("long_context_threshold", "tokens"),
        "aliases": ("aliases", "names"),
    }
)


def _usd_decimal(model: str, key: str, value: Any) -> Decimal:
    d = _decimal(value) if not isinstance(value, bool) else None
    if d is None:
        raise OverrideError(
            f"price override {model}.{key} = {value!r}: expected a number of US dollars, 0 or "
            f"more. Fix: write it like {key} = 0.75."
        )
    return d


def _whole_ticks(value: Any, scale: int, model: str, key: str, not_whole: str) -> int:
    """USD times scale as an exact whole number of ticks; else `OverrideError` ending in
    `not_whole` (which may use {ticks})."""
    ticks = _usd_decimal(model, key, value) * scale
    if ticks != ticks.to_integral_value():
        raise OverrideError(
            f"price override {model}.{key} = {value!r} "
            + not_whole.format(ticks=f"{ticks.normalize():f}")
        )
    return int(ticks)


def usd_per_1m_to_ticks(value: Any, *, model: str = "?", key: str = "input") -> int:
    """USD per 1M tokens → ticks per token, exactly (* 10,000); `OverrideError` unless whole."""
    return _whole_ticks(
        value,
        TICKS_PER_TOKEN_PER_USD_PER_1M,
        model,
        key,
        "USD per 1M tokens is {ticks} ticks per token, not a whole number (1 tick = 1e-10 USD; "
        "prices per 1M tokens have at most 4 decimal places). Fix: round it to 4 decimal places.",
    )


def usd_to_ticks(value: Any, *, model: str = "?", key: str = "image") -> int:
    """USD (per image, per source) → ticks, exactly (* 1e10); `OverrideError` unless whole."""
    return _whole_ticks(
        value,
        TICKS_PER_USD,
        model,
        key,
        "USD is not a whole number of ticks (1 tick = 1e-10 USD). "
        "Fix: use at most 10 decimal places.",
    )


def parse_overrides(table: Mapping[str, Any]) -> dict[str, ModelPrice]:
    """Config overrides ``{model: {"input": usd_per_1M, "cached_input": ..., "output": ...,
    "image_input": ..., "image": usd_per_image, "search": usd_per_source,
    "long_context_threshold": tokens, "input_long": ..., "aliases": [...]}}`` → partial
    `ModelPrice` (source "override") by lower-cased model name. Every error is an `OverrideError`.
    """
    if not isinstance(table, Mapping):
        raise OverrideError(
            f"price overrides: expected a table of models, got {type(table).__name__}."
        )
    out: dict[str, ModelPrice] = {}
    for model, spec in table.items():
        if not isinstance(model, str) or not model.strip():
            raise OverrideError(f"price overrides: {model!r} is not a model name.")
        if not isinstance(spec, Mapping):
            raise OverrideError(
                f"price override {model} = {spec!r}: expected a table like "
                f"{{input = 3.0, output = 15.0}} (USD per 1M tokens)."
            )
        values: dict[str, Any] = {}
        for key, value in spec.items():
            target = _OVERRIDE_FIELDS.get(key)
            if target is None:
                close = difflib.get_close_matches(str(key), _OVERRIDE_FIELDS, n=1)
                hint = f" Did you mean {close[0]}?" if close else ""
                raise OverrideError(
                    f"price override {model}.{key}: no such field.{hint} Fields: "
                    f"{', '.join(_OVERRIDE_FIELDS)}."
                )
            name, unit = target
            if unit == "per_1m":
                values[name] = usd_per_1m_to_ticks(value, model=model, key=key)
            elif unit == "usd":
                values[name] = usd_to_ticks(value, model=model, key=key)
            elif unit == "tokens":
                if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                    raise OverrideError(
                        f"price override {model}.{key} = {value!r}: expected a whole number of "
                        f"tokens greater than 0, like {key} = 128000."
                    )
                values[name] = value
            else:
                if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
                    raise OverrideError(
                        f"price override {model}.{key} = {value!r}: expected a list of names."
                    )
                values[name] = tuple(a.strip() for a in value if a.strip())
        out[model.strip().lower()] = ModelPrice(model=model.strip(), source="override", **values)
    return out


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
    """

    def __init__(
        self,
        history: Iterable[PriceSet] = (),
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self._state = _State()
        sets = sorted(history, key=lambda s: s.effective_at)
        self._rebuild(sets, parse_overrides(overrides or {}))

    # -- writers ---------------------------------------------------------------------------

    def _rebuild(self, sets: Sequence[PriceSet], overrides: Mapping[str, ModelPrice]) -> None:
        self._state = _State(
            sets=tuple(sets),
            times=tuple(s.effective_at for s in sets),
            views=tuple(MappingProxyType(_view(s, overrides)) for s in sets),
            overrides=MappingProxyType(dict(overrides)),
            override_view=MappingProxyType(_name_map(overrides.values())),
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
        self._rebuild(self._state.sets, parsed)

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
        ``at`` prices at another time than ``started_at`` (the backfill of calls made before any
        price for their model existed).
        """
        usage = record.usage
        if usage is None:
            return
        found = None
        for name in (record.model, record.requested_model):
            if name:
                found = self.lookup(name, record.started_at if at is None else at)
                if found is not None:
                    break
        computed: int | None = None
        price_id: int | None = None
        if found is not None:
            price, set_id = found
            try:
                computed = compute_cost(usage, price, record.service_tier)
                price_id = set_id
            except UnpricedError:
                computed = None
        record.computed_cost_ticks = computed
        record.price_id = price_id
        reported = usage.reported_cost_ticks
        if reported is not None:
            record.cost_ticks, record.cost_source = reported, "reported"
        elif computed is not None:
            record.cost_ticks, record.cost_source = computed, "computed"
        else:
            record.cost_ticks, record.cost_source = None, "unpriced"

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


# --------------------------------------------------------------------------------------------
# SQLite (sync: the ledger's thread calls these, never the event loop)

_PRICE_COLUMNS: Final = (
    "input",
    "cached_input",
    "output",
    "image_input",
    "search",
    "image",
    "long_context_threshold",
    "input_long",
    "cached_input_long",
    "output_long",
)


def migrate_prices(db: sqlite_utils.Database) -> None:
    """Create ``price_sets`` and ``prices`` if missing (idempotent)."""
    db.table("price_sets").create(
        {"id": int, "effective_at": float, "fetched_at": float, "source": str, "digest": str},
        pk="id",
        if_not_exists=True,
    )
    db.table("prices").create(
        {
            "price_set_id": int,
            "model": str,
            "aliases": str,  # JSON list
            **dict.fromkeys(_PRICE_COLUMNS, int),
            "fingerprint": str,
        },
        pk=("price_set_id", "model"),
        foreign_keys=[("price_set_id", "price_sets", "id")],
        if_not_exists=True,
    )


def save_price_set(db: sqlite_utils.Database, price_set: PriceSet) -> int:
    """Store a set unless its content equals the latest stored one; returns the row id in force.

    Unchanged content adds no row: the latest row's ``fetched_at`` moves on and its id returns.
    """
    with db.atomic():
        latest = list(db.query("select id, digest from price_sets order by id desc limit 1"))
        if latest and latest[0]["digest"] == price_set.digest:
            set_id = int(latest[0]["id"])
            db.execute(
                "update price_sets set fetched_at = max(coalesce(fetched_at, 0), ?) where id = ?",
                [price_set.fetched_at, set_id],
            )
            return set_id
        cursor = db.execute(
            "insert into price_sets (effective_at, fetched_at, source, digest) values (?, ?, ?, ?)",
            [price_set.effective_at, price_set.fetched_at, price_set.source, price_set.digest],
        )
        if cursor.lastrowid is None:  # pragma: no cover - sqlite always sets it for an insert
            raise RuntimeError("price_sets insert returned no row id")
        new_id: int = cursor.lastrowid
        rows = []
        for mp in price_set.models.values():
            row = mp.content()
            row["aliases"] = json.dumps(row["aliases"])
            row["price_set_id"] = new_id
            rows.append(row)
        if rows:
            db.table("prices").insert_all(rows)
        return new_id


def load_price_history(db: sqlite_utils.Database) -> list[PriceSet]:
    """Every stored set, oldest first (by ``effective_at``, then id); [] before any migration."""
    if not db.table("price_sets").exists():
        return []
    by_set: dict[int, list[ModelPrice]] = {}
    for row in db.query("select * from prices order by price_set_id, model"):
        try:
            aliases = json.loads(row["aliases"] or "[]")
        except ValueError:
            aliases = []
        by_set.setdefault(row["price_set_id"], []).append(
            ModelPrice(
                model=row["model"],
                aliases=tuple(a for a in aliases if isinstance(a, str)),
                fingerprint=row["fingerprint"],
                **{c: row[c] for c in _PRICE_COLUMNS},
            )
        )
    return [
        PriceSet.of(
            by_set.get(row["id"], []),
            effective_at=row["effective_at"],
            fetched_at=row["fetched_at"],
            id=row["id"],
            source=row["source"] or "listing",
        )
        for row in db.query("select * from price_sets order by effective_at, id")
    ]


# --------------------------------------------------------------------------------------------
# Fetching the listings


class PriceFetchError(Exception):
    """A listing could not be fetched: ``status`` (None when no HTTP answer), a body excerpt."""

    def __init__(self, url: str, status: int | None, detail: str, *, retryable: bool) -> None:
        where = f"HTTP {status}" if status is not None else "no answer"
        super().__init__(f"GET {url}: {where}: {detail}")
        self.url = url
        self.status = status
        self.detail = detail
        self.retryable = retryable


_RETRY_STATUSES: Final = frozenset({408, 409, 425, 429})


# An upstream's "incorrect API key" message may quote part of the key: never log that part.
_KEYISH = re.compile(r"\b(?:xai|sk|sk-ant)-[A-Za-z0-9*._-]{4,}")


def _excerpt(body: bytes, limit: int = 200) -> str:
    text = _KEYISH.sub("<key>", " ".join(body.decode("utf-8", "replace").split()))
    return text if len(text) <= limit else text[:limit] + "…"


def _api_root(base_url: str) -> str:
    root = base_url.rstrip("/")
    return root if root.endswith("/v1") else root + "/v1"


async def _get_json(
    session: aiohttp.ClientSession,
    url: str,
    headers: Mapping[str, str],
    request_timeout: float,
    *,
    optional: bool = False,
) -> Any:
    try:
        async with session.get(
            url, headers=headers, timeout=aiohttp.ClientTimeout(total=request_timeout)
        ) as resp:
            body = await resp.read()
            if optional and resp.status == 404:
                return None
            if resp.status != 200:
                raise PriceFetchError(
                    url,
                    resp.status,
                    _excerpt(body) or resp.reason or "",
                    retryable=resp.status >= 500 or resp.status in _RETRY_STATUSES,
                )
            try:
                return json.loads(body)
            except ValueError:
                raise PriceFetchError(
                    url, resp.status, "not JSON: " + _excerpt(body), retryable=True
                ) from None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise PriceFetchError(url, None, f"{type(exc).__name__}: {exc}", retryable=True) from exc


async def fetch_listing(
    session: aiohttp.ClientSession,
    base_url: str,
    api_key: str | None,
    *,
    request_timeout: float = 30.0,
    clock: Callable[[], float] = time.time,
) -> PriceSet:
    """GET ``/v1/language-models`` and ``/v1/image-generation-models`` → a `PriceSet` (no id).

    ``base_url`` is the upstream origin (a trailing ``/v1`` is accepted). The image listing is
    optional: 404 there means none. Any other failure, or a language listing without one usable
    model, raises `PriceFetchError` (``retryable`` says whether another attempt may help).
    """
    root = _api_root(base_url)
    headers = {"Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    url = f"{root}/language-models"
    models = parse_language_models(await _get_json(session, url, headers, request_timeout))
    if not models:
        raise PriceFetchError(url, 200, "the listing has no usable model", retryable=True)
    image_obj = await _get_json(
        session, f"{root}/image-generation-models", headers, request_timeout, optional=True
    )
    by_id = {mp.model: mp for mp in models}
    for mp in parse_image_models(image_obj) if image_obj is not None else []:
        known = by_id.get(mp.model)
        if known is None:
            by_id[mp.model] = mp
        elif known.image is None and mp.image is not None:
            by_id[mp.model] = replace(known, image=mp.image)
    now = clock()
    return PriceSet.of(by_id.values(), effective_at=now, fetched_at=now, source="listing")


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, PriceFetchError) and exc.retryable


class PriceRefresher:
    """Refreshes a `PriceBook` from the listings, retrying with tenacity.

    One `refresh` makes up to ``attempts`` tries (exponential backoff with full jitter unless
    ``wait`` is given; tests pass ``tenacity.wait_none()``), retrying only what may pass next
    time (network errors, 408/409/425/429, 5xx). On success the set is saved through ``save``
    (an awaitable returning its ``price_sets`` id, e.g. a call into the ledger thread), put in
    force with `PriceBook.add` and passed to ``on_success``. On final failure the book keeps its
    prices and ``on_failure`` gets the exception (metrics hook); nothing is raised.
    """

    def __init__(
        self,
        book: PriceBook,
        session: aiohttp.ClientSession,
        base_url: str,
        api_key: str | Callable[[], str | None] | None = None,
        *,
        attempts: int = 5,
        wait: WaitBaseT | None = None,
        timeout: float = 30.0,
        save: Callable[[PriceSet], Awaitable[int]] | None = None,
        on_success: Callable[[PriceSet], None] | None = None,
        on_failure: Callable[[Exception], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.book = book
        self.session = session
        self.base_url = base_url
        self.api_key = api_key
        self.attempts = max(attempts, 1)
        self.wait: WaitBaseT = (
            wait if wait is not None else wait_random_exponential(multiplier=1, max=60)
        )
        self.timeout = timeout
        self.save = save
        self.on_success = on_success
        self.on_failure = on_failure
        self.clock = clock
        self.last_error: Exception | None = None
        self.last_success_at: float | None = None
        self.tries = 0  # HTTP attempts made, all refreshes together

    def _fail(self, exc: Exception) -> None:
        self.last_error = exc
        current = self.book.current
        log.warning(
            "price_refresh_failed",
            error=str(exc),
            error_type=type(exc).__name__,
            kept_price_set=current.id if current is not None else None,
        )
        if self.on_failure is not None:
            try:
                self.on_failure(exc)
            except Exception:
                log.exception("price_refresh_callback_failed", callback="on_failure")

    async def _fetch(self) -> PriceSet:
        self.tries += 1
        key = self.api_key() if callable(self.api_key) else self.api_key
        return await fetch_listing(
            self.session,
            self.base_url,
            key,
            request_timeout=self.timeout,
            clock=self.clock,
        )

    async def refresh(self) -> PriceSet | None:
        """One refresh (with retries); the set in force afterwards, or None when it failed."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=self.wait,
            retry=retry_if_exception(_retryable),
            reraise=True,
        )
        try:
            fetched: PriceSet | None = None
            async for attempt in retrying:
                with attempt:
                    fetched = await self._fetch()
            assert fetched is not None
        except Exception as exc:  # PriceFetchError, or a bug: either way keep the old prices
            self._fail(exc)
            return None
        if self.save is not None:
            try:
                fetched = replace(fetched, id=await self.save(fetched))
            except Exception as exc:  # the prices are still good: use them unsaved
                self._fail(exc)
        in_force = self.book.add(fetched)
        log.info(
            "prices_refreshed",
            price_set=in_force.id,
            models=len(in_force.models),
            changed=in_force is fetched,
            digest=in_force.digest[:12],
        )
        self.last_error = None
        self.last_success_at = self.clock()
        if self.on_success is not None:
            try:
                self.on_success(in_force)
            except Exception:
                log.exception("price_refresh_callback_failed", callback="on_success")
        return in_force

    async def run(self, interval: float) -> None:
        """Refresh now and then every ``interval`` seconds, until cancelled."""
        while True:
            await self.refresh()
            await asyncio.sleep(interval)


# --------------------------------------------------------------------------------------------
# The `xai-meter prices` table


def _usd(ticks: int | None, places: int) -> str | None:
    """Exact USD string of ``ticks`` scaled down by 10**places, with at least 2 decimals."""
    if ticks is None:
        return None
    d = Decimal(ticks).scaleb(-places).normalize()
    exponent = d.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:
        d = d.quantize(Decimal("0.01"))
    return f"{d:f}"


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def prices_table(book: PriceBook, at: float | None = None) -> list[dict[str, Any]]:
    """One row per model in force at ``at`` (now by default): USD as exact decimal strings
    (per 1M tokens for token prices, per image, per source), None where unlisted."""
    current = book.set_at(time.time() if at is None else at)
    fetched_at = _iso(current.fetched_at) if current is not None else None
    rows = []
    for mp in book.models_at(at):
        rows.append(
            {
                "model": mp.model,
                "aliases": ", ".join(mp.aliases),
                "input_usd_per_1m": _usd(mp.input, 4),
                "cached_input_usd_per_1m": _usd(mp.cached_input, 4),
                "output_usd_per_1m": _usd(mp.output, 4),
                "image_input_usd_per_1m": _usd(mp.image_input, 4),
                "image_usd": _usd(mp.image, 10),
                "search_usd": _usd(mp.search, 10),
                "long_context_threshold": mp.long_context_threshold,
                "input_long_usd_per_1m": _usd(mp.input_long, 4),
                "cached_input_long_usd_per_1m": _usd(mp.cached_input_long, 4),
                "output_long_usd_per_1m": _usd(mp.output_long, 4),
                "source": mp.source,
                "price_set_id": current.id if current is not None else None,
                "fetched_at": fetched_at,
            }
        )
    return rows
