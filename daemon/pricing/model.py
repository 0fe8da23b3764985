"""`ModelPrice`: one model's prices in integer ticks, the value every pricing module shares.

Facts from /work/shared/xai-api.md, "Units" and "Listings": listing token prices are ticks per
token, ``search_price`` ticks per source, ``image_price`` ticks per image (see
`daemon.pricing.listing` for its unit); a ``*_long_context`` price applies to every token of a
request whose prompt reaches ``long_context_threshold``. Parsing lives in `listing` and
`overrides`, the formula in `cost`, lookups in `book`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Final, Literal

Source = Literal["listing", "override"]


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
    # Prompt-cache writes (Anthropic), ticks per token; only overrides set them. None: derived,
    # 1.25x (5-minute writes) and 2x (1-hour writes) the input price in force (`cost`).
    cache_write: int | None = None
    cache_write_1h: int | None = None
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
            for name in (*PRICE_FIELDS, *OVERRIDE_ONLY_FIELDS, "long_context_threshold")
            if getattr(override, name) is not None
        }
        aliases = self.aliases + tuple(a for a in override.aliases if a not in self.aliases)
        return replace(self, aliases=aliases, source="override", **changes)


#: The price fields of `ModelPrice`, every one integer ticks or None.
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

#: Price fields only an override sets (no listing has them, so no price-history column either):
#: ticks per token or None.
OVERRIDE_ONLY_FIELDS: Final = ("cache_write", "cache_write_1h")
