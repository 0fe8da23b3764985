"""`ModelPrice`: one model's prices in integer ticks, the value every pricing module shares.

Facts from /work/shared/xai-api.md, "Units" and "Listings": listing token prices are ticks per
token, ``search_price`` ticks per source, ``image_price`` ticks per image (see
`daemon.pricing.listing` for its unit), ``pricing[]`` image tiers ticks per image by quality x
resolution; a ``*_long_context`` price applies to every token of a request whose prompt reaches
``long_context_threshold`` (at or above; no threshold = no long-context tier, and a long price
of 0 or None means the normal price). Parsing lives in `listing` and `overrides`, the formula
in `cost`, lookups in `book`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Final, Literal

Source = Literal["listing", "override"]

#: One image price tier of a 2026 listing's ``pricing[]``: (quality, resolution, ticks per
#: image), quality and resolution lower-cased as listed ("medium", "1k").
ImageTier = tuple[str, str, int]


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """One model's prices, all integer ticks (per token, per source or per image); None = unlisted.

    ``input``/``cached_input``/``output``/``image_input`` are ticks per token; ``search`` is ticks
    per source; ``image`` is ticks per generated image. The ``*_long`` prices apply to every token
    of a request whose input reaches ``long_context_threshold`` (a ``*_long`` of 0 or None keeps
    the normal price). ``image_tiers`` are the listing's ``pricing[]`` tiers (`ImageTier`),
    which price an image call by its request's quality x resolution (see `cost`).
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
    image_tiers: tuple[ImageTier, ...] = ()

    def content(self) -> dict[str, Any]:
        """Everything but ``source``, as plain values (the digest and the SQLite row use it).

        ``image_tiers`` appears only when there are some, so digests of sets without tiers stay
        what they were before tiers existed."""
        content = {
            "model": self.model,
            "aliases": list(self.aliases),
            **{name: getattr(self, name) for name in PRICE_FIELDS},
            "long_context_threshold": self.long_context_threshold,
            "fingerprint": self.fingerprint,
        }
        if self.image_tiers:
            content["image_tiers"] = [list(t) for t in self.image_tiers]
        return content

    def overridden_by(self, override: ModelPrice) -> ModelPrice:
        """This price with every field the override sets replaced (the override wins)."""
        changes: dict[str, Any] = {
            name: getattr(override, name)
            for name in (*PRICED_FIELDS, *OVERRIDE_ONLY_FIELDS)
            if getattr(override, name) is not None
        }
        aliases = self.aliases + tuple(a for a in override.aliases if a not in self.aliases)
        if override.image is not None:  # an overridden image price wins over listed tiers
            changes["image_tiers"] = ()
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
#: Every field a listing or an override sets: the prices, and the long-context threshold.
PRICED_FIELDS: Final = (*PRICE_FIELDS, "long_context_threshold")

#: Price fields only an override sets (no listing has them, so no price-history column either):
#: ticks per token or None.
OVERRIDE_ONLY_FIELDS: Final = ("cache_write", "cache_write_1h")
