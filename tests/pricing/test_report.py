"""The `xai-meter prices` tables: exact USD strings per 1M tokens, per image, per source; and
the catalog of prices no listing carries, every dated entry with its source."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from daemon.cli import main
from daemon.ledger import migrate, open_database
from daemon.ledger.prices import save_price_set
from daemon.pricing.book import PriceBook, PriceSet
from daemon.pricing.model import ModelPrice
from daemon.pricing.report import catalog_table, prices_table


def test_prices_table(listing_set: Callable[..., PriceSet]) -> None:
    book = PriceBook(
        [replace(listing_set(1_700_000_000.0), id=9)], overrides={"grok-3-mini": {"output": 0.4}}
    )
    rows = {row["model"]: row for row in prices_table(book, at=1_800_000_000.0)}
    g3 = rows["grok-3"]
    assert (g3["input_usd_per_1m"], g3["cached_input_usd_per_1m"], g3["output_usd_per_1m"]) == (
        "3.00",
        "0.75",
        "15.00",
    )
    assert g3["search_usd"] == "0.025" and g3["image_usd"] is None
    assert g3["aliases"] == ["grok-3-latest", "grok-3-beta"]
    assert g3["source"] == "listing" and g3["price_set_id"] == 9
    assert g3["fetched_at"] == "2023-11-14T22:13:20+00:00"
    fast = rows["grok-4-fast-reasoning"]
    assert (fast["input_usd_per_1m"], fast["cached_input_usd_per_1m"]) == ("0.20", "0.05")
    assert fast["image_input_usd_per_1m"] == "0.20"
    g4 = rows["grok-4-0709"]
    assert (
        g4["long_context_threshold"],
        g4["input_long_usd_per_1m"],
        g4["output_long_usd_per_1m"],
    ) == (128000, "6.00", "30.00")
    assert rows["grok-imagine-image"]["image_usd"] == "0.02"
    assert rows["grok-3-mini"]["output_usd_per_1m"] == "0.40"
    assert rows["grok-3-mini"]["source"] == "override"
    assert list(rows) == sorted(rows)
    odd = PriceBook([PriceSet.of([ModelPrice("m", input=1, output=12345)], effective_at=0)])
    row = prices_table(odd)[0]
    assert (row["input_usd_per_1m"], row["output_usd_per_1m"]) == ("0.0001", "1.2345")
    assert prices_table(PriceBook()) == []


def test_catalog_table_shows_every_dated_entry_and_which_is_in_force() -> None:
    book = PriceBook(overrides={"catalog": {"stt:rest": 0.12}})
    rows = catalog_table(book.catalog, at=1_793_491_200.0)  # 2026-11-01
    by_id: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        by_id.setdefault(str(row["id"]), []).append(row)
    assert [(r["price"], r["effective"], r["in_force"]) for r in by_id["tts"]] == [
        ("4.20", "2026-03-16", False),
        ("15.00", "2026-05-15", True),
    ]
    assert by_id["tts"][1]["unit"] == "USD per 1M characters"
    assert by_id["tts"][1]["source"] == "xai-api.md, Voice [obs]"
    [stt] = by_id["stt:rest"]
    assert (stt["price"], stt["unit"], stt["effective"], stt["origin"]) == (
        "0.12",
        "USD per hour",
        "always",
        "override",
    )
    assert by_id["tool:web_search"][0]["unit"] == "USD per 1k calls"
    assert (by_id["tier:priority"][0]["price"], by_id["tier:priority"][0]["unit"]) == (
        "2",
        "multiplier",
    )
    assert by_id["batch_discount"][0]["unit"] == "discount (fraction off)"


def test_the_prices_command_shows_the_catalog(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[pricing.overrides.catalog]\n"tts" = 4.2\n')
    assert main(["prices", "--catalog", "--format", "json", "--config", str(config)]) == 0
    rows = json.loads(capsys.readouterr().out)
    [tts] = [r for r in rows if r["id"] == "tts"]
    assert (tts["price"], tts["origin"], tts["in_force"]) == (4.2, "override", True)
    assert {"note", "source", "effective"} <= set(tts)
    ledger = tmp_path / "empty.db"
    db = open_database(ledger)
    migrate(db)
    db.close()
    assert main(["prices", "--ledger", str(ledger)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("No prices yet.")
    assert "Prices no listing carries" in out
    assert "video:grok-imagine-video:720p" in out and "2026-01-28" in out


def test_json_carries_aliases_as_a_list_and_in_force_as_a_boolean(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], listing_set: Callable[..., PriceSet]
) -> None:
    """JSON: lists and booleans; CSV and the table: the joined names and yes / no."""
    ledger = tmp_path / "l.db"
    db = open_database(ledger)
    migrate(db)
    save_price_set(db, listing_set(1_700_000_000.0))
    db.close()
    args = ["prices", "--ledger", str(ledger), "--format"]
    assert main([*args, "json"]) == 0
    [g3] = [r for r in json.loads(capsys.readouterr().out) if r["model"] == "grok-3"]
    assert g3["aliases"] == ["grok-3-latest", "grok-3-beta"]
    assert main([*args, "csv"]) == 0
    [g3] = [
        r for r in csv.DictReader(io.StringIO(capsys.readouterr().out)) if r["model"] == "grok-3"
    ]
    assert g3["aliases"] == "grok-3-latest, grok-3-beta"
    assert main([*args, "table"]) == 0
    table = capsys.readouterr().out
    assert "grok-3-latest, grok-3-beta" in table
    assert "2026-05-15  yes" in table and "True" not in table
    assert main(["prices", "--catalog", "--format", "json"]) == 0
    in_force = {
        (r["id"], r["effective"]): r["in_force"] for r in json.loads(capsys.readouterr().out)
    }
    assert (in_force[("tts", "2026-03-16")], in_force[("tts", "2026-05-15")]) == (False, True)
    assert {type(v) for v in in_force.values()} == {bool}
    assert main(["prices", "--catalog", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {r["in_force"] for r in rows} == {"yes", "no"}
