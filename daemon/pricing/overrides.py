"""Price overrides from the config's ``[pricing.overrides]``: USD as people write it → exact ticks.

An override is a partial `ModelPrice` (source "override") that `PriceBook` applies over the
listing, field by field. Token prices are written in USD per 1M tokens, image and search prices
in USD per unit; each must convert to a whole number of ticks (no rounding, ever), and every
mistake is an `OverrideError` whose message names the model, the field and the fix.

One key of the table is not a model: ``[pricing.overrides.catalog]`` overrides entries of the
price catalog (`daemon.pricing.catalog`) by id, ``"video:grok-imagine-video:720p" = 0.07``,
each value in the unit ``xai-meter prices --catalog`` shows (USD per second, per hour, per 1M
characters, per 1,000 calls; a multiplier; a discount as the fraction off), in force at every
time (`parse_catalog_overrides`).

Units from /work/shared/xai-api.md, "Units": 1 tick = 1e-10 USD, so $ per 1M tokens * 10,000 =
ticks per token (`daemon.units`).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Final

from daemon.pricing.catalog import (
    DISPLAY_PER,
    DISPLAY_UNIT,
    FACTOR_UNITS,
    KINDS,
    CatalogEntry,
    CatalogError,
    default_catalog,
    example_id,
    override_entry,
    split_id,
)
from daemon.pricing.model import ModelPrice
from daemon.units import TICKS_PER_TOKEN_PER_USD_PER_1M, TICKS_PER_USD, parse_amount

#: The key of ``[pricing.overrides]`` that holds catalog overrides instead of a model.
CATALOG_KEY: Final = "catalog"


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
        "cache_write": ("cache_write", "per_1m"),
        "cache_write_5m": ("cache_write", "per_1m"),
        "cache_write_1h": ("cache_write_1h", "per_1m"),
        "image": ("image", "usd"),
        "search": ("search", "usd"),
        "long_context_threshold": ("long_context_threshold", "tokens"),
        "aliases": ("aliases", "names"),
    }
)


def _usd_decimal(model: str, key: str, value: Any) -> Decimal:
    d = parse_amount(value)
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
    "long_context_threshold": tokens, "input_long": ..., "cache_write": usd_per_1M (5-minute
    prompt-cache writes; ``cache_write_5m`` is the same field), "cache_write_1h": usd_per_1M,
    "aliases": [...]}}`` → partial
    `ModelPrice` (source "override") by lower-cased model name. Every error is an `OverrideError`.
    The ``catalog`` key is no model: it is checked here (`parse_catalog_overrides`) and left out.
    """
    if not isinstance(table, Mapping):
        raise OverrideError(
            f"price overrides: expected a table of models, got {type(table).__name__}."
        )
    out: dict[str, ModelPrice] = {}
    for model, spec in table.items():
        if model == CATALOG_KEY:
            parse_catalog_overrides(spec)
            continue
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


def _catalog_value(entry_id: str, unit: str, value: Any) -> Any:
    """A checked override value: ticks per base unit (exact) for money, the factor for a
    multiplier or discount; `OverrideError` naming the id and the fix otherwise."""
    key = f"catalog.{entry_id!r}"
    if unit in FACTOR_UNITS:
        amount = parse_amount(value)
        if (
            amount is None
            or (unit == "multiplier" and amount == 0)
            or (unit == "discount" and amount > 1)
        ):
            shape = (
                "a multiplier above 0, like 2 or 1.1"
                if unit == "multiplier"
                else ("the fraction taken off, from 0 to 1, like 0.5 for 50% off")
            )
            raise OverrideError(
                f"price override {key} = {value!r}: expected {shape}. Fix: write it like "
                f'"{entry_id}" = {"2" if unit == "multiplier" else "0.5"}.'
            )
        return amount
    per = DISPLAY_PER.get(unit, 1)
    per_words = DISPLAY_UNIT.get(unit, unit)
    amount = parse_amount(value)
    if amount is None:
        raise OverrideError(
            f"price override {key} = {value!r}: expected US dollars per {per_words}, 0 or more. "
            f'Fix: write it like "{entry_id}" = 0.05.'
        )
    ticks = amount * TICKS_PER_USD / per
    if ticks != ticks.to_integral_value():
        places = 10 - len(str(per)) + 1
        raise OverrideError(
            f"price override {key} = {value!r}: USD per {per_words} is {ticks.normalize():f} "
            f"ticks per {unit}, not a whole number (1 tick = 1e-10 USD). Fix: use at most "
            f"{places} decimal places."
        )
    return int(ticks)


def parse_catalog_overrides(table: Any) -> tuple[CatalogEntry, ...]:
    """``[pricing.overrides.catalog]``, ``{entry id: value}`` → override entries (in force at
    every time; `daemon.pricing.catalog.Catalog.with_overrides` applies them). An id names an
    entry of the shipped catalog or a new one of a known kind (``video:NEW-MODEL:1080p``); its
    value is in the unit ``xai-meter prices --catalog`` shows for it. `OverrideError` names the
    id and the fix."""
    if not isinstance(table, Mapping):
        raise OverrideError(
            f"price overrides: catalog = {table!r}: expected a table of catalog ids, like "
            f'[pricing.overrides.catalog] with "tts" = 4.20 (USD per 1M characters).'
        )
    base = default_catalog()
    entries = []
    for entry_id, value in table.items():
        try:
            kind, name = split_id(str(entry_id))
        except CatalogError as exc:
            close = difflib.get_close_matches(
                str(entry_id).lower(), sorted({e.id for e in base.entries}), n=1
            )
            hint = f" Did you mean {close[0]!r}?" if close else ""
            ids = ", ".join(example_id(k) for k in KINDS)
            raise OverrideError(
                f"price override catalog.{entry_id!r}: {exc}.{hint} Fix: name an id "
                f"`xai-meter prices --catalog` shows, or one of: {ids}."
            ) from None
        unit = base.unit_of(kind, name)
        entries.append(
            override_entry(kind, name, unit, _catalog_value(":".join((kind, *name)), unit, value))
        )
    return tuple(entries)
