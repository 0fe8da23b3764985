"""The price catalog: the xAI prices no listing carries, each dated and sourced, as exact ticks.

The listings (`daemon.pricing.listing`) price tokens, images and searches per model. Everything
else xAI bills is here, shipped with the package as data (``catalog.toml`` beside this module):
video per second by model and resolution (and its image and video inputs), text-to-speech per
character, speech-to-text per hour (REST and streaming), realtime voice per minute, server-side
tool fees per call or per item fetched, the tier multipliers (priority, fast), the US regional
multiplier (a note: it is applied through an upstream's ``price_multiplier``) and the batch
discount. Each entry says its unit, its source (the section of /work/shared/xai-api.md and the
label there) and the date it took effect; `xai-meter prices --catalog` shows them all.

Lookup: ``catalog.price(kind, *name, at=epoch)`` → the `CatalogEntry` in force at that time
(``at`` None: the latest), or None. ``name`` is the kind's dimensions (`KINDS`): ``("video",
"grok-imagine-video", "720p")``, ``("stt", "rest")``, ``("tool", "web_search")``, ``("tts",)``.
A time before a price's first entry takes the first (calls made before we knew of it). Model
names match case-insensitively, without a provider prefix (``xai/``), by an entry's aliases,
and fall back to the entry for any model (``*``). `Catalog.with_overrides` puts
``[pricing.overrides.catalog]`` entries (parsed by `daemon.pricing.overrides`) in force at every
time, each replacing every dated entry of its id.

Money is integer ticks per *base unit* (1 tick = 1e-10 USD; per second, per character, per
call, ...), so a cost is exact: `CatalogEntry.cost` gives ticks for a quantity as an exact
`Fraction`, and the caller rounds down once per call (`daemon.pricing.cost.catalog_cost`).
People read and write these prices per *display unit* (`DISPLAY_PER`: per 1M characters, per
1,000 calls or items; else per unit), as xAI publishes them.
"""

from __future__ import annotations

import bisect
import functools
import importlib.resources
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from fractions import Fraction
from types import MappingProxyType
from typing import Any, Final, Literal

from daemon.units import format_usd, parse_amount

Origin = Literal["catalog", "override"]


class CatalogError(ValueError):
    """The catalog data is malformed; the message names the entry and the field."""


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of catalog price: its dimensions (what names an entry besides the kind) and the
    units its entries may use (the first is the unit of an override naming a new entry)."""

    dims: tuple[str, ...]
    units: tuple[str, ...]
    help: str


#: Every kind the catalog knows, by name. A dimension called ``model`` accepts ``*`` (any model).
KINDS: Final[Mapping[str, Kind]] = MappingProxyType(
    {
        "video": Kind(("model", "resolution"), ("second",), "generated video, per second"),
        "video_image_input": Kind(("model",), ("image",), "a video request's input images"),
        "video_input": Kind(("model",), ("second",), "a video request's input video, per second"),
        "tts": Kind((), ("character",), "text-to-speech, per input character"),
        "stt": Kind(("mode",), ("hour", "minute", "second"), "speech-to-text: rest | streaming"),
        "realtime": Kind((), ("minute", "hour", "second"), "realtime voice, per minute of audio"),
        "tool": Kind(("tool",), ("call", "item"), "a server-side tool, per call or item fetched"),
        "tier": Kind(("tier",), ("multiplier",), "a service tier's token price multiplier"),
        "region": Kind(("region",), ("multiplier",), "a regional endpoint's token multiplier"),
        "batch_discount": Kind((), ("discount",), "the Batch API discount (fraction off)"),
    }
)

#: Seconds in each time unit: a quantity of seconds costs ticks * seconds / this.
UNIT_SECONDS: Final[Mapping[str, int]] = MappingProxyType({"second": 1, "minute": 60, "hour": 3600})
#: Units of a count (characters, images, calls, items): a quantity costs ticks * count.
COUNT_UNITS: Final = frozenset({"character", "image", "call", "item"})
#: Units of a factor, not of money.
FACTOR_UNITS: Final = frozenset({"multiplier", "discount"})
#: How many base units people price at once (xAI's own way of writing them): $ per 1M
#: characters, per 1,000 calls or items; every other unit is priced one at a time.
DISPLAY_PER: Final[Mapping[str, int]] = MappingProxyType(
    {"character": 1_000_000, "call": 1_000, "item": 1_000}
)
#: The words for a display unit, by base unit.
DISPLAY_UNIT: Final[Mapping[str, str]] = MappingProxyType(
    {"character": "1M characters", "call": "1k calls", "item": "1k items"}
)

_ANY = "*"
#: The multiplier 1, one object: `Catalog.tier_multiplier` returns it for "no multiplier", so
#: the hot path tests ``is ONE`` and skips the arithmetic.
ONE: Final = Fraction(1)
_PROVIDER_PREFIX = "xai/"


def _epoch(day: date | datetime) -> float:
    """00:00 UTC of a date (or a datetime, UTC when naive) as epoch seconds."""
    if isinstance(day, datetime):
        return (day if day.tzinfo else day.replace(tzinfo=UTC)).timestamp()
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def split_id(entry_id: str) -> tuple[str, tuple[str, ...]]:
    """``"video:grok-imagine-video:720p"`` → ``("video", ("grok-imagine-video", "720p"))``,
    lower-cased and stripped; `CatalogError` for an unknown kind or the wrong number of parts
    (its message names the shape the kind expects, not the id: the caller says which)."""
    kind, *name = [part.strip().lower() for part in entry_id.split(":")]
    spec = KINDS.get(kind)
    if spec is None:
        raise CatalogError(f"no such kind {kind!r} (kinds: {', '.join(KINDS)})")
    if len(name) != len(spec.dims) or not all(name):
        raise CatalogError(f"expected {example_id(kind)} ({kind}: {spec.help})")
    return kind, tuple(name)


def example_id(kind: str) -> str:
    """The shape of an id of ``kind``: ``video:MODEL:RESOLUTION``, ``tts``."""
    return ":".join((kind, *(d.upper() for d in KINDS[kind].dims)))


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One dated price: ``ticks`` per ``unit`` (money), or ``factor`` (a multiplier, or a
    discount as the fraction taken off), in force from ``effective_at`` (epoch seconds; None:
    an override, in force at every time). ``name`` is the kind's dimensions, lower case, ``*``
    for any model; ``aliases`` are other names of the first one."""

    kind: str
    name: tuple[str, ...]
    unit: str
    ticks: int | None
    factor: Fraction | None
    effective_at: float | None
    source: str
    note: str = ""
    aliases: tuple[str, ...] = ()
    origin: Origin = "catalog"

    @property
    def id(self) -> str:
        """``kind[:name...]``, the id `xai-meter prices --catalog` shows and overrides use."""
        return ":".join((self.kind, *self.name))

    @property
    def effective(self) -> str | None:
        """The day it took effect, ISO (``2026-09-21``); None for an override."""
        if self.effective_at is None:
            return None
        return datetime.fromtimestamp(self.effective_at, UTC).date().isoformat()

    def cost(self, quantity: Fraction | int) -> Fraction:
        """Exact ticks for ``quantity``: seconds for a time unit (per ``minute`` = ticks * s / 60),
        else a count (characters, images, calls, items). `CatalogError` for a factor entry."""
        if self.ticks is None:
            raise CatalogError(f"{self.id} is a {self.unit}, not a price")
        seconds = UNIT_SECONDS.get(self.unit)
        if seconds is None:
            return Fraction(self.ticks) * quantity
        return Fraction(self.ticks) * quantity / seconds


@dataclass(frozen=True, slots=True)
class _Series:
    """Every entry of one id, oldest first, and their times (an override: one entry, time -inf)."""

    times: tuple[float, ...]
    entries: tuple[CatalogEntry, ...]

    def at(self, when: float | None) -> CatalogEntry:
        if when is None:
            return self.entries[-1]
        return self.entries[max(bisect.bisect_right(self.times, when) - 1, 0)]


@dataclass(frozen=True, slots=True)
class Catalog:
    """Every catalog entry, with lookups by id and time (see the module docstring)."""

    entries: tuple[CatalogEntry, ...]
    _series: Mapping[tuple[str, tuple[str, ...]], _Series] = field(init=False, repr=False)
    _aliases: Mapping[tuple[str, str], str] = field(init=False, repr=False)
    _tiers: Mapping[str, _Series] = field(init=False, repr=False)  # the hot path's own index

    def __post_init__(self) -> None:
        ordered = sorted(
            self.entries,
            key=lambda e: (e.id, float("-inf") if e.effective_at is None else e.effective_at),
        )
        grouped: dict[tuple[str, tuple[str, ...]], list[CatalogEntry]] = {}
        aliases: dict[tuple[str, str], str] = {}
        for entry in ordered:
            grouped.setdefault((entry.kind, entry.name), []).append(entry)
            for alias in entry.aliases:
                aliases.setdefault((entry.kind, alias.lower()), entry.name[0])
        series = {
            key: _Series(
                tuple(float("-inf") if e.effective_at is None else e.effective_at for e in found),
                tuple(found),
            )
            for key, found in grouped.items()
        }
        object.__setattr__(self, "entries", tuple(ordered))
        object.__setattr__(self, "_series", MappingProxyType(series))
        object.__setattr__(self, "_aliases", MappingProxyType(aliases))
        tiers = {name[0]: found for (kind, name), found in series.items() if kind == "tier"}
        object.__setattr__(self, "_tiers", MappingProxyType(tiers))

    # -- lookups ----------------------------------------------------------------------------

    def price(self, kind: str, *name: str | None, at: float | None = None) -> CatalogEntry | None:
        """The entry of ``kind`` for ``name`` (the kind's dimensions, `KINDS`) in force at ``at``
        (epoch seconds; None: the latest); None when the catalog has none. A model dimension
        tries the name as given, without ``xai/``, by alias, then ``*`` (any model)."""
        spec = KINDS.get(kind)
        if spec is None or len(name) != len(spec.dims):
            return None
        parts = tuple((n or "").strip().lower() for n in name)
        series = self._series.get((kind, parts))
        if series is None and parts:
            first, rest = parts[0], parts[1:]
            candidates = [first]
            if first.startswith(_PROVIDER_PREFIX):
                candidates.append(first[len(_PROVIDER_PREFIX) :])
            for candidate in list(candidates):
                alias = self._aliases.get((kind, candidate))
                if alias is not None:
                    candidates.append(alias)
            if spec.dims[0] == "model":
                candidates.append(_ANY)
            for candidate in candidates:
                series = self._series.get((kind, (candidate, *rest)))
                if series is not None:
                    break
        return None if series is None else series.at(at)

    def ticks(self, kind: str, *name: str | None, at: float | None = None) -> int | None:
        """Ticks per unit of the entry `price` finds; None when none (or it is a factor)."""
        entry = self.price(kind, *name, at=at)
        return None if entry is None else entry.ticks

    def factor(self, kind: str, *name: str | None, at: float | None = None) -> Fraction | None:
        """The multiplier or discount of the entry `price` finds; None when none."""
        entry = self.price(kind, *name, at=at)
        return None if entry is None else entry.factor

    def tier_multiplier(self, service_tier: str | None, at: float | None = None) -> Fraction:
        """The token price multiplier of a response's ``service_tier`` at ``at``: its ``tier``
        entry (priority, fast: 2), else 1 (``default``, none, or a tier the catalog lacks)."""
        if not service_tier:
            return ONE
        series = self._tiers.get(service_tier) or self._tiers.get(service_tier.strip().lower())
        if series is None:
            return ONE
        found = series.at(at).factor
        return ONE if found is None else found

    def tool_fee(self, tool: str, at: float | None = None) -> int:
        """Ticks per call (or item fetched) of a server-side tool kind at ``at``; 0 for a kind
        the catalog lacks. Accepts xAI's detail key (``web_search_calls``) or the kind."""
        key = tool.strip().lower().removeprefix("server_side_tool_").removesuffix("_calls")
        return self.ticks("tool", key, at=at) or 0

    def tool_fees(self, at: float | None = None) -> dict[str, int]:
        """Every tool kind and alias → ticks per call or item, as in force at ``at``."""
        fees: dict[str, int] = {}
        for kind, name in self._series:
            if kind == "tool":
                fees[name[0]] = self.tool_fee(name[0], at)
        for (kind, alias), target in self._aliases.items():
            if kind == "tool":
                fees.setdefault(alias, fees.get(target, 0))
        return fees

    def batch_multiplier(self, at: float | None = None) -> Fraction:
        """What a batch result's computed cost is multiplied by: 1 - the batch discount."""
        discount = self.factor("batch_discount", at=at)
        return Fraction(1) if discount is None else 1 - discount

    def in_force(self, entry: CatalogEntry, at: float | None = None) -> bool:
        """True when ``entry`` is the one its id has in force at ``at`` (None: the latest)."""
        series = self._series.get((entry.kind, entry.name))
        return series is not None and series.at(at) is entry

    def unit_of(self, kind: str, name: tuple[str, ...]) -> str:
        """The unit entries of this id use (its latest entry's), else the kind's first unit."""
        series = self._series.get((kind, name))
        return series.entries[-1].unit if series is not None else KINDS[kind].units[0]

    # -- overrides --------------------------------------------------------------------------

    def with_overrides(self, overrides: Iterable[CatalogEntry]) -> Catalog:
        """This catalog with each override (``effective_at`` None) replacing every dated entry
        of its id, at every time; an override of an id the catalog lacks adds it."""
        overrides = list(overrides)
        if not overrides:
            return self
        replaced = {(o.kind, o.name) for o in overrides}
        kept = [e for e in self.entries if (e.kind, e.name) not in replaced]
        return Catalog((*kept, *overrides))


# --- the shipped data ---------------------------------------------------------------------------


def _factor(where: str, value: Any) -> Fraction:
    amount = parse_amount(value)
    if amount is None:
        raise CatalogError(f"{where}: factor = {value!r} is not a number 0 or more")
    return Fraction(amount)


def _entry(index: int, raw: Any) -> CatalogEntry:
    where = f"catalog entry {index + 1}"
    if not isinstance(raw, Mapping):
        raise CatalogError(f"{where}: expected a table")
    entry_id = raw.get("id")
    if not isinstance(entry_id, str):
        raise CatalogError(f"{where}: id = {entry_id!r} is not a string")
    where = f"catalog entry {index + 1} ({entry_id})"
    try:
        kind, name = split_id(entry_id)
    except CatalogError as exc:
        raise CatalogError(f"{where}: {exc}") from None
    unit = raw.get("unit")
    if unit not in KINDS[kind].units:
        raise CatalogError(f"{where}: unit = {unit!r}; {kind} takes {KINDS[kind].units}")
    ticks: int | None = None
    factor: Fraction | None = None
    if unit in FACTOR_UNITS:
        factor = _factor(where, raw.get("factor"))
    else:
        ticks = raw.get("ticks")
        if isinstance(ticks, bool) or not isinstance(ticks, int) or ticks < 0:
            raise CatalogError(f"{where}: ticks = {ticks!r} is not a whole number 0 or more")
    effective = raw.get("effective")
    if not isinstance(effective, date):
        raise CatalogError(f"{where}: effective = {effective!r} is not a TOML date")
    source = raw.get("source")
    if not isinstance(source, str) or not source:
        raise CatalogError(f"{where}: every price names its source")
    aliases = raw.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise CatalogError(f"{where}: aliases = {aliases!r} is not a list of names")
    unknown = set(raw) - {"id", "unit", "ticks", "factor", "effective", "source", "note", "aliases"}
    if unknown:
        raise CatalogError(f"{where}: unknown fields {sorted(unknown)}")
    return CatalogEntry(
        kind=kind,
        name=name,
        unit=unit,
        ticks=ticks,
        factor=factor,
        effective_at=_epoch(effective),
        source=source,
        note=str(raw.get("note", "")),
        aliases=tuple(a.strip().lower() for a in aliases),
    )


def parse_catalog(text: str) -> Catalog:
    """A catalog from TOML text in ``catalog.toml``'s shape (its header says every field);
    `CatalogError` naming the entry and field when it is malformed."""
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"the catalog is not valid TOML: {exc}") from None
    prices = table.get("prices")
    if not isinstance(prices, list):
        raise CatalogError("the catalog has no [[prices]] entries")
    return Catalog(tuple(_entry(i, raw) for i, raw in enumerate(prices)))


@functools.cache
def default_catalog() -> Catalog:
    """The catalog shipped with the package (``daemon/pricing/catalog.toml``), read once."""
    text = importlib.resources.files("daemon.pricing").joinpath("catalog.toml").read_text("utf-8")
    return parse_catalog(text)


def display_value(entry: CatalogEntry) -> str:
    """The entry's value as people write it: USD per display unit (``"4.20"`` per 1M
    characters), or the factor (``"2"``, ``"1.1"``, ``"0.5"``), exact."""
    if entry.factor is not None:
        value = Decimal(entry.factor.numerator) / Decimal(entry.factor.denominator)
        return f"{value.normalize():f}"
    return format_usd((entry.ticks or 0) * DISPLAY_PER.get(entry.unit, 1))


def display_unit(entry: CatalogEntry) -> str:
    """What `display_value` is per: ``USD per 1M characters``, ``USD per second``, or the
    factor's kind (``multiplier``, ``discount (fraction off)``)."""
    if entry.unit == "discount":
        return "discount (fraction off)"
    if entry.unit == "multiplier":
        return "multiplier"
    return f"USD per {DISPLAY_UNIT.get(entry.unit, entry.unit)}"


def override_entry(kind: str, name: tuple[str, ...], unit: str, value: Any) -> CatalogEntry:
    """An override (in force at every time) from a checked value: ``value`` is ticks per unit
    for money, or the factor; the caller (`daemon.pricing.overrides`) has converted it."""
    ticks, factor = (None, Fraction(value)) if unit in FACTOR_UNITS else (int(value), None)
    return CatalogEntry(
        kind, name, unit, ticks, factor, None, "[pricing.overrides.catalog]", origin="override"
    )
