"""The price history in the ledger: ``price_sets`` and their ``prices`` rows.

Sync functions for the ledger's writer thread (or a read-only connection), never the event loop.
A price set is stored once per distinct content (its digest); a refresh that changes nothing
only moves the latest set's ``fetched_at`` on. Daemons sharing a PostgreSQL ledger share the
history: one at a time compares and stores (`daemon.ledger.engine.serialized`), so a listing
change all of them fetch is one new set, and each gets its id. The values are
`daemon.pricing`'s `PriceSet` and `ModelPrice`, stored as xAI lists them: integer ticks
(/work/shared/xai-api.md, "Units").
"""

from __future__ import annotations

import json
from typing import Final

import sqlite_utils

from daemon.ledger.engine import Database, serialized, table_exists
from daemon.pricing.book import PriceSet
from daemon.pricing.model import PRICED_FIELDS, ImageTier, ModelPrice

# The price columns a `ModelPrice` is written to and read from (ticks; tokens for the threshold).
_PRICE_COLUMNS: Final = PRICED_FIELDS


def save_price_set(db: Database, price_set: PriceSet) -> int:
    """Store a set unless its content equals the latest stored one; returns the row id in force.

    Unchanged content adds no row: the latest row's ``fetched_at`` moves on and its id returns.
    """
    with db.atomic():
        serialized(db, "price_sets")
        latest = list(
            db.query("select id, digest, fetched_at from price_sets order by id desc limit 1")
        )
        if latest and latest[0]["digest"] == price_set.digest:
            set_id = int(latest[0]["id"])
            fetched_at = max(latest[0]["fetched_at"] or 0, price_set.fetched_at)
            db.execute("update price_sets set fetched_at = ? where id = ?", [fetched_at, set_id])
            return set_id
        values = [price_set.effective_at, price_set.fetched_at, price_set.source, price_set.digest]
        insert = (
            "insert into price_sets (effective_at, fetched_at, source, digest) values (?, ?, ?, ?)"
        )
        if not isinstance(db, sqlite_utils.Database):  # PostgreSQL: no lastrowid
            new_id = int(db.execute(insert + " returning id", values).fetchone()[0])
        else:
            cursor = db.execute(insert, values)
            if cursor.lastrowid is None:  # pragma: no cover - sqlite always sets it
                raise RuntimeError("price_sets insert returned no row id")
            new_id = cursor.lastrowid
        rows = []
        for mp in price_set.models.values():
            row = mp.content()
            row["aliases"] = json.dumps(row["aliases"])
            tiers = row.get("image_tiers")
            row["image_tiers"] = json.dumps(tiers) if tiers else None
            row["price_set_id"] = new_id
            rows.append(row)
        if rows:
            columns = list(dict.fromkeys(c for row in rows for c in row))
            db.conn.executemany(
                f"insert into prices ({', '.join(columns)}) "
                f"values ({', '.join('?' for _ in columns)})",
                [[row.get(c) for c in columns] for row in rows],
            )
        return new_id


def _image_tiers(text: str | None) -> tuple[ImageTier, ...]:
    """The stored JSON ``[[quality, resolution, ticks], ...]`` back as tiers (bad rows: none)."""
    try:
        tiers = json.loads(text) if text else []
        return tuple((str(q), str(r), int(t)) for q, r, t in tiers)
    except (ValueError, TypeError):
        return ()


def load_price_history(db: Database) -> list[PriceSet]:
    """Every stored set, oldest first (by ``effective_at``, then id); [] before any migration."""
    if not table_exists(db, "price_sets"):
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
                image_tiers=_image_tiers(row.get("image_tiers")),
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
