"""Reconciliation as pure functions: billed and ledger rows in, exact gaps and notes out."""

from __future__ import annotations

import csv
import io

import orjson
import pytest
from prometheus_client import CollectorRegistry

from daemon.ledger.billing import BilledRow, LedgerCost
from daemon.management.reconcile import (
    ClassGap,
    Reconciled,
    complete_days,
    reconcile,
    unit_class,
)
from daemon.management.report import as_dict, render_csv, render_json, render_table
from daemon.metrics import Metrics

D1, D2 = "2026-03-04", "2026-03-05"


def _cost(day: str, key: str | None, kind: str, ticks: int, calls: int = 1) -> LedgerCost:
    return LedgerCost(day, key, kind, ticks, calls, 0, 0)


@pytest.mark.parametrize(
    ("unit_type", "kind"),
    [
        ("input_tokens", "text"),
        ("cached_prompt_text_tokens", "text"),
        ("image_input_tokens", "text"),
        ("WEB_SEARCH", "text"),
        ("COLLECTIONS_SEARCH", "text"),
        ("x_posts_fetched", "text"),
        ("images", "image"),
        ("IMAGE_GENERATION", "image"),
        ("video_seconds", "video"),
        ("tts_characters", "voice"),
        ("stt_audio_seconds", "voice"),
        ("realtime_audio", "voice"),
        ("batch_output_tokens", "batch"),
        ("file_storage_gb_hours", "storage"),
        ("something_new", "text"),
    ],
)
def test_unit_classes(unit_type: str, kind: str) -> None:
    assert unit_class(unit_type) == kind


def test_a_zero_gap_day() -> None:
    billed = [
        BilledRow(D1, "k1", "input_tokens", 0.0001, 1_000_000),
        BilledRow(D1, "k1", "output_tokens", 0.0002, 2_000_000),
    ]
    [key, day] = reconcile(billed, [_cost(D1, "k1", "text", 3_000_000, calls=2)], {"k1": "prod"})
    assert key == Reconciled(
        day=D1,
        row="key",
        api_key_id="k1",
        name="prod",
        billed_ticks=3_000_000,
        ledger_ticks=3_000_000,
        calls=2,
        billed_by_unit={"input_tokens": 1_000_000, "output_tokens": 2_000_000},
    )
    assert (key.gap_ticks, key.gap_ratio, key.status, key.note) == (0, 0.0, "match", "")
    assert (day.row, day.api_key_id, day.billed_ticks, day.gap_ticks) == ("day", None, 3_000_000, 0)


def test_gaps_per_key_class_unjoined_and_days() -> None:
    billed = [
        BilledRow(D1, "k1", "input_tokens", 1.0, 10_000_000_000),
        BilledRow(D1, "k1", "tts_characters", 0.5, 5_000_000_000),
        BilledRow(D1, "k1", "file_storage", 0.25, 2_500_000_000),
        BilledRow(D1, "k2", "input_tokens", 0.02, 200_000_000),  # no call through us
        BilledRow(D2, "k1", "input_tokens", 1.0, 10_000_000_000),
    ]
    ledger = [
        _cost(D1, "k1", "text", 10_300_000_000, calls=3),  # $0.03 more than billed
        _cost(D1, "k1", "voice", 4_900_000_000),
        _cost(D1, "k3", "image", 700_000_000),  # nothing billed
        LedgerCost(D1, None, "text", 123, 2, 1, 1, (("no_usage", 1),)),
        _cost(D2, "k1", "text", 10_000_000_000),
    ]
    rows = reconcile(billed, ledger, days=[D1, D2, "2026-03-06"], today="2026-03-06")
    assert [(r.day, r.row, r.api_key_id) for r in rows] == [
        (D1, "key", "k1"), (D1, "key", "k2"), (D1, "key", "k3"), (D1, "unjoined", None),
        (D1, "day", None), (D2, "key", "k1"), (D2, "day", None), ("2026-03-06", "day", None),
    ]  # fmt: skip
    k1 = rows[0]
    assert (k1.billed_ticks, k1.ledger_ticks, k1.gap_ticks) == (
        17_500_000_000, 15_200_000_000, -2_300_000_000,
    )  # fmt: skip
    assert k1.gap_ratio == pytest.approx(-2_300_000_000 / 17_500_000_000)
    assert k1.status == "gap"
    assert k1.differs == (
        ClassGap("text", ("input_tokens",), 10_000_000_000, 10_300_000_000),
        ClassGap("voice", ("tts_characters",), 5_000_000_000, 4_900_000_000),
        ClassGap("storage", ("file_storage",), 2_500_000_000, 0),
    )
    assert [g.expected for g in k1.differs] == [False, True, True]
    assert k1.note == (
        "unexpected gap in text: check prices and usage; expected gap in voice: xAI bills the "
        "audio and characters it counted, the ledger prices what the relay saw at the "
        "catalog's rates; storage: files and collections never cross the relay, the ledger "
        "has none"
    )
    k2, k3, unjoined, day1 = rows[1:5]
    assert (k2.gap_ticks, k2.status, k2.calls) == (-200_000_000, "gap", 0)
    assert k2.note.startswith("billed, but no call through this daemon")
    assert (k3.gap_ticks, k3.gap_ratio, k3.note.split(";")[0]) == (
        700_000_000, None, "calls in the ledger, nothing billed",
    )  # fmt: skip
    assert (unjoined.ledger_ticks, unjoined.differs, unjoined.unpriced) == (123, (), 1)
    assert unjoined.note == (
        "calls of keys with no api_key_id yet (not joined to xAI's keys, or no key sent): no "
        "bill to meet them; 1 unmetered call(s) (1 no_usage): billed by xAI, their usage "
        "unread by the relay, so missing from the ledger; 1 unpriced call(s): no price yet, "
        "missing from the ledger"
    )
    assert (day1.billed_ticks, day1.ledger_ticks, day1.gap_ticks, day1.calls) == (
        17_700_000_000, 15_900_000_123, -1_799_999_877, 7,
    )  # fmt: skip
    assert (rows[6].status, rows[6].partial, rows[7].partial) == ("match", False, True)
    assert rows[7].note == ""


def test_the_note_names_the_unmetered_calls_reasons() -> None:
    """The reasons the ledger stored (`Unmetered`), counted over the key's classes, most
    first: not a fixed "(cut, malformed)" whatever they were."""
    ledger = [
        LedgerCost(D1, "k1", "text", 0, 5, 0, 4, (("no_usage", 3), ("malformed", 1))),
        LedgerCost(D1, "k1", "image", 0, 2, 0, 2, (("too_large", 1), ("no_usage", 1))),
    ]
    key, day = reconcile([], ledger)
    assert key.unmetered_reasons == {"no_usage": 4, "malformed": 1, "too_large": 1}
    assert day.unmetered_reasons == key.unmetered_reasons
    assert key.note.split("; ")[1] == (
        "6 unmetered call(s) (4 no_usage, 1 malformed, 1 too_large): billed by xAI, their "
        "usage unread by the relay, so missing from the ledger"
    )


@pytest.mark.parametrize(
    ("billed", "ledger", "status"),
    [
        (10**10, 10**10, "match"),
        (10**10, 10**10 + 10**8, "small"),  # $0.01 exactly
        (10**11, 10**11 + 2 * 10**9, "small"),  # 2% exactly
        (10**11, 10**11 - 2 * 10**9 - 1, "gap"),
        (10**9, 10**9 + 10**8 + 1, "gap"),  # > $0.01 and > 2%
    ],
)
def test_status_thresholds(billed: int, ledger: int, status: str) -> None:
    assert Reconciled(D1, "key", "k", None, billed, ledger).status == status


def test_json_and_csv_carry_numbers() -> None:
    rows = reconcile(
        [BilledRow(D1, "k1", "input_tokens", 0.0123, 123_000_000)],
        [_cost(D1, "k1", "text", 123_000_456, calls=2), _cost(D1, "k1", "voice", 10)],
        {"k1": "prod"},
    )
    doc = orjson.loads(render_json(rows, {"from": "api"}))
    assert doc["source"] == {"from": "api"}
    key = doc["rows"][0]
    assert key == as_dict(rows[0])
    assert {k: key[k] for k in ("billed_usd", "ledger_usd", "gap_usd", "billed_ticks")} == {
        "billed_usd": 0.0123,
        "ledger_usd": 0.0123000466,
        "gap_usd": 4.66e-08,
        "billed_ticks": 123_000_000,
    }
    assert (key["ledger_ticks"], key["gap_ticks"], key["calls"]) == (123_000_466, 466, 3)
    assert key["gap_ratio"] == 466 / 123_000_000
    assert key["differs"] == [
        {"class": "text", "unit_types": ["input_tokens"], "billed_ticks": 123_000_000,
         "ledger_ticks": 123_000_456, "gap_ticks": 456, "expected": False},
        {"class": "voice", "unit_types": [], "billed_ticks": 0, "ledger_ticks": 10,
         "gap_ticks": 10, "expected": True},
    ]  # fmt: skip
    [line, day] = list(csv.DictReader(io.StringIO(render_csv(rows))))
    assert line["billed_usd"] == "0.0123"
    assert line["gap_ticks"] == "466"
    assert line["differs"] == "text:456!;voice:10"
    assert line["partial"] == "0"
    assert (day["row"], day["api_key_id"], day["gap_ratio"]) == ("day", "", str(466 / 123_000_000))


def test_table() -> None:
    rows = reconcile(
        [BilledRow(D1, "k1", "input_tokens", 0.0123, 123_000_000)],
        [_cost(D1, "k1", "text", 123_000_000), LedgerCost(D1, None, "text", 5, 1, 0, 0)],
        {"k1": "prod"},
    )
    text = render_table(rows, "xAI's bill: fetched now from the Management API.")
    assert text.splitlines() == [
        "day         key         billed $      ledger $          gap $   gap %  calls  status",
        "----------  ----------  --------  ------------  -------------  ------  -----  ------",
        "2026-03-04  prod (k1)     0.0123        0.0123           0.00  +0.00%      1  match",
        "2026-03-04  (unjoined)      0.00  0.0000000005  +0.0000000005       -      1  small",
        "2026-03-04  (all keys)    0.0123  0.0123000005  +0.0000000005  +0.00%      2  small",
        "",
        "Notes:",
        "  2026-03-04 (unjoined): calls of keys with no api_key_id yet (not joined to xAI's "
        "keys, or no key sent): no bill to meet them",
        "  2026-03-04 (all keys): unexpected gap in text: check prices and usage",
        "",
        "Gaps are ledger minus billed; expected where xAI bills what the relay cannot see or "
        "price the same way: voice, storage and batch discounts.",
        "xAI's bill: fetched now from the Management API.",
    ]


def test_complete_days() -> None:
    from datetime import date

    now = 1772582400.0 + 3600  # 2026-03-04T01:00Z
    assert complete_days(now, 7) == (date(2026, 2, 25), date(2026, 3, 3))
    assert complete_days(now, 1) == (date(2026, 3, 3), date(2026, 3, 3))


def test_gauges() -> None:
    registry = CollectorRegistry()
    gauges = Metrics(registry).reconciliation
    gauges.set(1.0, {"k1": (10**10, 10**10 + 5 * 10**7), "unjoined": (0, 10**8)})
    gauges.set(86_401.0, {"k1": (2 * 10**10, 10**10)})

    def value(name: str, key: str) -> float | None:
        sample = f"xai_meter_billing_reconciliation_{name}"
        return registry.get_sample_value(sample, {"api_key_id": key})

    assert (value("billed_usd", "k1"), value("ledger_usd", "k1"), value("gap_usd", "k1")) == (
        2.0, 1.0, -1.0,
    )  # fmt: skip
    assert value("ledger_usd", "unjoined") is None  # the old day's series went
    day = registry.get_sample_value("xai_meter_billing_reconciliation_day_timestamp_seconds")
    assert day == 86_401.0


def test_batch_results_meet_token_unit_types_when_the_bill_names_no_batch() -> None:
    billed = [BilledRow(D1, "k1", "prompt_text_tokens", 1e-8, 100)]
    [same, _] = reconcile(billed, [_cost(D1, "k1", "text", 60), _cost(D1, "k1", "batch", 40)])
    assert (same.gap_ticks, same.differs, same.status) == (0, (), "match")
    [late, _] = reconcile(billed, [_cost(D1, "k1", "text", 60), _cost(D1, "k1", "batch", 30)])
    assert late.differs == (ClassGap("text", ("prompt_text_tokens",), 100, 90, with_batch=True),)
    assert late.note.startswith("expected gap in batch: xAI bills a batch")
    # a bill that names batch units keeps the class apart
    billed.append(BilledRow(D1, "k1", "batch_tokens", 4e-9, 40))
    [apart, _] = reconcile(billed, [_cost(D1, "k1", "text", 100), _cost(D1, "k1", "batch", 30)])
    assert apart.differs == (ClassGap("batch", ("batch_tokens",), 40, 30),)
