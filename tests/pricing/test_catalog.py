"""The price catalog (daemon/pricing/catalog.toml, catalog.py): the prices no listing carries,
each dated and sourced; lookups by time; overrides; and the costs it gives, computed by hand."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path

import pytest

from daemon.cli import main
from daemon.pricing.book import PriceBook
from daemon.pricing.catalog import (
    KINDS,
    Catalog,
    CatalogError,
    default_catalog,
    display_value,
    parse_catalog,
)
from daemon.pricing.cost import UnpricedError, catalog_cost, compute_cost
from daemon.pricing.model import ModelPrice
from daemon.pricing.overrides import OverrideError, parse_catalog_overrides, parse_overrides
from daemon.record import Usage
from daemon.testing import make_record


def day(iso: str) -> float:
    return datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp()


# Every shipped price as xAI publishes it (xai-api.md), in USD per its display unit, by hand.
PUBLISHED = {
    ("video:grok-imagine-video:480p", "2026-01-28"): "0.05",  # per second
    ("video:grok-imagine-video:720p", "2026-01-28"): "0.07",
    ("video:grok-imagine-video-1.5:480p", "2026-06-03"): "0.08",
    ("video:grok-imagine-video-1.5:720p", "2026-06-03"): "0.14",
    ("video:grok-imagine-video-1.5:1080p", "2026-06-03"): "0.25",
    ("video_image_input:*", "2026-01-28"): "0.002",  # per image
    ("video_input:*", "2026-01-28"): "0.01",  # per second
    ("tts", "2026-03-16"): "4.20",  # per 1M characters, documented
    ("tts", "2026-05-15"): "15.00",  # observed
    ("stt:rest", "2026-04-17"): "0.10",  # per hour
    ("stt:streaming", "2026-04-17"): "0.20",
    ("realtime", "2026-04-01"): "0.05",  # per minute, documented April 2026
    ("realtime", "2026-09-01"): "0.08",  # observed September 2026
    ("tool:web_search", "2025-11-19"): "5.00",  # per 1,000 calls
    ("tool:x_search", "2025-11-19"): "5.00",
    ("tool:x_search", "2026-09-21"): "0.00",
    ("tool:x_posts_fetched", "2025-11-19"): "0.00",  # per 1,000 items
    ("tool:x_posts_fetched", "2026-09-21"): "5.00",
    ("tool:x_users_fetched", "2025-11-19"): "0.00",
    ("tool:x_users_fetched", "2026-09-21"): "10.00",
    ("tool:code_interpreter", "2025-11-19"): "5.00",
    ("tool:file_search", "2025-11-19"): "2.50",
    ("tool:document_search", "2025-11-19"): "10.00",
    ("tool:mcp", "2025-11-19"): "0.00",
    ("tool:view_image", "2025-11-19"): "0.00",
    ("tool:view_x_video", "2025-11-19"): "0.00",
    ("tool:image_search", "2025-11-19"): "0.00",
    ("tier:priority", "2026-01-01"): "2",
    ("tier:fast", "2026-01-01"): "2",
    ("region:us", "2026-01-01"): "1.1",
    ("batch_discount", "2026-01-01"): "0.5",
}


def test_the_shipped_catalog_holds_every_published_price_dated_and_sourced() -> None:
    catalog = default_catalog()
    shipped = {(e.id, e.effective): display_value(e) for e in catalog.entries}
    assert shipped == PUBLISHED
    assert {e.kind for e in catalog.entries} == set(KINDS)
    for entry in catalog.entries:
        assert entry.source.startswith("xai-api.md, "), entry.id
        assert entry.origin == "catalog"
        assert (entry.ticks is None) == (entry.unit in ("multiplier", "discount")), entry.id


def test_ticks_are_per_base_unit() -> None:
    catalog = default_catalog()
    assert catalog.ticks("tts", at=day("2026-11-01")) == 150_000  # $15 / 1M characters
    assert catalog.ticks("stt", "rest") == 1_000_000_000  # $0.10 per hour
    assert catalog.ticks("realtime") == 800_000_000  # $0.08 per minute
    assert catalog.ticks("video", "grok-imagine-video", "480p") == 500_000_000  # $0.05 per s
    assert catalog.ticks("tool", "document_search") == 100_000_000  # $10 per 1,000 calls


def test_lookups_by_time_name_alias_and_fallback() -> None:
    catalog = default_catalog()
    realtime = [catalog.ticks("realtime", at=day(d)) for d in ("2026-01-01", "2026-04-01")]
    assert realtime == [500_000_000, 500_000_000]  # before the first entry: the first
    assert catalog.ticks("realtime", at=day("2026-09-01") - 1) == 500_000_000
    assert catalog.ticks("realtime", at=day("2026-09-01")) == 800_000_000  # from 00:00 UTC
    assert catalog.ticks("realtime", at=None) == 800_000_000  # the latest
    # model names: case, the xai/ prefix, an alias; the * entry for any model
    for name in ("GROK-IMAGINE-VIDEO-1.5", "xai/grok-imagine-video-1.5-preview"):
        assert catalog.ticks("video", name, "720P") == 1_400_000_000
    assert catalog.ticks("video_image_input", "grok-imagine-video-1.5") == 20_000_000
    assert catalog.ticks("video_input", None) == 100_000_000
    # nothing to find: an unknown resolution or model, a kind without it, wrong dimensions
    assert catalog.price("video", "grok-imagine-video", "1080p") is None
    assert catalog.price("video", "grok-imagine-video-9", "480p") is None
    assert catalog.price("tool", "weather") is None
    assert catalog.price("no-such-kind") is None
    assert catalog.price("tts", "extra") is None


def test_tool_fees_tiers_and_the_batch_discount() -> None:
    catalog = default_catalog()
    fees = catalog.tool_fees(day("2026-11-01"))
    assert fees["code_execution"] == fees["code_interpreter"] == 50_000_000  # an alias
    assert fees["collections_search"] == fees["file_search"] == 25_000_000
    assert fees["attachment_search"] == fees["document_search"] == 100_000_000
    assert catalog.tool_fee("web_search_calls") == catalog.tool_fee("server_side_tool_web_search")
    assert catalog.tool_fee("weather") == 0
    assert catalog.tier_multiplier("priority") == catalog.tier_multiplier("FAST") == 2
    assert catalog.tier_multiplier("default") == catalog.tier_multiplier(None) == 1
    assert catalog.batch_multiplier() == Fraction(1, 2)
    assert catalog.factor("region", "us") == Fraction(11, 10)


def test_in_force_marks_one_entry_per_id() -> None:
    catalog = default_catalog()
    tts = [e for e in catalog.entries if e.id == "tts"]
    assert [catalog.in_force(e, day("2026-04-01")) for e in tts] == [True, False]
    assert [catalog.in_force(e, day("2026-06-01")) for e in tts] == [False, True]


def test_catalog_data_errors_name_the_entry_and_the_field() -> None:
    good = '[[prices]]\nid = "tts"\nunit = "character"\nticks = 1\neffective = 2026-01-01\n'
    assert parse_catalog(good + 'source = "s"\n').ticks("tts") == 1
    for text, words in (
        (good, "names its source"),
        (good.replace('"character"', '"second"') + 'source = "s"\n', "unit = 'second'"),
        (good.replace("ticks = 1", "ticks = -1") + 'source = "s"\n', "ticks = -1"),
        (good.replace('"tts"', '"tts:x"') + 'source = "s"\n', "expected tts"),
        (good.replace("2026-01-01", '"2026"') + 'source = "s"\n', "not a TOML date"),
        (good + 'source = "s"\ncolour = 1\n', "unknown fields ['colour']"),
        ("prices = 1", "no [[prices]]"),
    ):
        with pytest.raises(CatalogError, match=words.replace("[", r"\[").replace("(", r"\(")):
            parse_catalog(text)


def test_the_catalog_ships_in_the_wheel() -> None:
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert "pricing/catalog.toml" in pyproject["tool"]["setuptools"]["package-data"]["daemon"]
    assert default_catalog() is default_catalog()  # read once


# --- overrides ------------------------------------------------------------------------------


def test_catalog_overrides_win_at_every_time_and_may_add_ids() -> None:
    entries = parse_catalog_overrides(
        {
            "tts": 4.2,  # USD per 1M characters
            "video:grok-imagine-video-2:1080p": "0.30",  # a model the catalog lacks
            "tool:web_search": 10,  # USD per 1,000 calls
            "tier:priority": 1.5,
            "batch_discount": 0.25,
        }
    )
    catalog = default_catalog().with_overrides(entries)
    assert [e.effective for e in catalog.entries if e.id == "tts"] == [None]
    assert catalog.ticks("tts", at=0.0) == catalog.ticks("tts") == 42_000
    assert catalog.ticks("video", "grok-imagine-video-2", "1080p") == 3_000_000_000
    assert catalog.tool_fee("web_search") == 100_000_000
    assert catalog.tier_multiplier("priority") == Fraction(3, 2)
    assert catalog.batch_multiplier() == Fraction(3, 4)
    assert catalog.ticks("stt", "rest") == 1_000_000_000  # the rest is untouched
    assert parse_overrides({"catalog": {"tts": 1}}) == {}  # not a model


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ({"ttx": 1}, "no such kind 'ttx'.*Did you mean 'tts'.*Fix: name an id"),
        ({"video:grok-imagine-video": 1}, "expected video:MODEL:RESOLUTION"),
        ({"tts": 4.12345}, "41234.5 ticks per character.*Fix: use at most 4 decimal places"),
        ({"stt:rest": "cheap"}, r"expected US dollars per hour.*Fix: write it like"),
        ({"batch_discount": 1.5}, "fraction taken off, from 0 to 1"),
        ({"tier:fast": 0}, "a multiplier above 0"),
    ],
)
def test_catalog_override_errors_name_the_id_and_the_fix(
    table: dict[str, object], words: str
) -> None:
    with pytest.raises(OverrideError, match=words):
        parse_catalog_overrides(table)
    with pytest.raises(OverrideError):
        parse_overrides({"catalog": table})  # what config validation runs


def test_a_bad_catalog_override_is_a_config_error_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[pricing.overrides.catalog]\n"tts" = 4.123456\n')
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "pricing.overrides: price override catalog.'tts' = 4.123456" in err
    assert "Fix: use at most 4 decimal places." in err
    path.write_text('[pricing.overrides.catalog]\n"tts" = 4.2\n')
    assert main(["check-config", str(path)]) == 0


# --- costs, by hand ----------------------------------------------------------------------------


def test_catalog_costs_by_hand() -> None:
    nov = day("2026-11-01")
    tts = Usage(catalog_rate="tts", characters=1_234)
    assert catalog_cost(tts, None, at=nov) == 1_234 * 150_000
    assert catalog_cost(tts, None, at=day("2026-04-01")) == 1_234 * 42_000
    # 3.52 s is 352/100 s exactly: 3.52 x 1e9 ticks per hour / 3600 = 977,777.7… → 977,777
    stt = Usage(catalog_rate="stt:rest", audio_seconds=3.52)
    assert catalog_cost(stt, None, at=nov) == 977_777
    streaming = Usage(catalog_rate="stt:streaming", audio_seconds=3.52)
    assert catalog_cost(streaming, None, at=nov) == 1_955_555
    # 90 s of realtime audio: 1.5 min x $0.05 in April, x $0.08 from September
    realtime = Usage(catalog_rate="realtime", audio_seconds=90.0, input_tokens=500)
    assert catalog_cost(realtime, "grok-voice", at=day("2026-05-01")) == 750_000_000
    assert catalog_cost(realtime, "grok-voice", at=nov) == 1_200_000_000  # tokens not billed
    # 10 s of 1.5 at 720p, 2 input images, 3 s of input video; a tool call on top
    video = Usage(
        catalog_rate="video:720p",
        video_seconds=10.0,
        video_image_inputs=2,
        video_input_seconds=3.0,
        server_tool_calls={"web_search": 1},
    )
    assert catalog_cost(video, "grok-imagine-video-1.5", at=nov) == (
        10 * 1_400_000_000 + 2 * 20_000_000 + 3 * 100_000_000 + 50_000_000
    )
    # no resolution: 480p, xAI's default
    assert catalog_cost(Usage(catalog_rate="video", video_seconds=8), "grok-imagine-video") == (
        4_000_000_000  # the real bill of xai-api.md: 8 s at 480p
    )


def test_a_catalog_rate_without_a_price_is_unpriced_not_zero() -> None:
    with pytest.raises(UnpricedError, match="video:grok-imagine-video:1080p"):
        catalog_cost(Usage(catalog_rate="video:1080p", video_seconds=1), "grok-imagine-video")
    with pytest.raises(UnpricedError, match="catalog rate 'karaoke'"):
        catalog_cost(Usage(catalog_rate="karaoke"), None)
    assert catalog_cost(Usage(catalog_rate="video:1080p"), "grok-imagine-video") == 0  # nothing


def test_the_book_prices_catalog_rates_and_the_batch_discount() -> None:
    book = PriceBook(overrides={"grok-3": {"input": 3.0, "output": 15.0}})
    nov = day("2026-11-01")
    tts = make_record(
        endpoint="tts", started_at=nov, usage=Usage(catalog_rate="tts", characters=10)
    )
    book.price_record(tts)
    assert (tts.computed_cost_ticks, tts.cost_ticks, tts.cost_source, tts.price_id) == (
        1_500_000,
        1_500_000,
        "computed",
        None,
    )
    assert tts.model is None  # nothing named one
    video = make_record(
        endpoint="videos.deferred",
        model="grok-imagine-video",
        started_at=nov,
        usage=Usage(catalog_rate="video:480p", video_seconds=8, reported_cost_ticks=4_000_000_001),
    )
    book.price_record(video)
    assert (video.computed_cost_ticks, video.cost_ticks, video.cost_source) == (
        4_000_000_000,
        4_000_000_001,
        "reported",
    )
    # a Batch API result: the computed cost x (1 - the discount); the reported one as xAI says
    result = make_record(
        endpoint="batches.result",
        model="grok-3",
        started_at=nov,
        usage=Usage(input_tokens=1_001, output_tokens=10, reported_cost_ticks=1_576_500),
    )
    book.price_record(result)
    full = 1_001 * 30_000 + 10 * 150_000  # 31,530,000 ticks at list price
    assert result.computed_cost_ticks == full // 2 == 15_765_000
    assert result.cost_ticks == 1_576_500
    discounted = PriceBook(overrides={"catalog": {"batch_discount": 0.25}})
    odd = make_record(
        endpoint="batches.result",
        started_at=nov,
        usage=Usage(catalog_rate="tts", characters=3),  # 450,000 ticks
    )
    discounted.price_record(odd)
    assert odd.computed_cost_ticks == 450_000 * 3 // 4 == 337_500


def test_a_tier_override_changes_the_token_multiplier() -> None:
    price = ModelPrice("m", input=10, output=10)
    usage = Usage(input_tokens=3, output_tokens=0)
    catalog = default_catalog().with_overrides(parse_catalog_overrides({"tier:priority": 1.5}))
    assert compute_cost(usage, price, "priority") == 60
    assert compute_cost(usage, price, "priority", catalog=catalog) == 45
    # with the regional multiplier too, rounded down once: 30 x 3/2 x 11/10 = 49.5 → 49
    assert compute_cost(usage, price, "priority", Fraction(11, 10), catalog=catalog) == 49
    book = PriceBook(overrides={"m": {"input": 1e-3}, "catalog": {"tier:priority": 3}})
    record = make_record(model="m", service_tier="priority", usage=usage)
    book.price_record(record)
    assert record.computed_cost_ticks == 3 * 10 * 3  # the book's own catalog


def test_catalog_is_a_value() -> None:
    catalog = default_catalog()
    assert Catalog(catalog.entries).entries == catalog.entries
    assert catalog.with_overrides([]) is catalog
