"""`xai-meter report` on real ledgers: `report()`'s exact numbers (ticks), the windows and zones
it reads, the table (header, total, ≤ 100 columns), JSON and CSV types, and user errors.

Two ledgers: a small one whose every number is worked out by hand below, and a realistic one
(long model and key names, millions of tokens, dollars in the thousands, every kind of trouble)
for the table's width. Rows are written with the ledger's own insert (`insert_calls`); times are
fixed, so no test reads the clock."""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils

from daemon.cli import main
from daemon.ledger import migrate, open_database, report
from daemon.ledger.reports import REPORT_FIELDS, REPORT_GROUPS
from daemon.ledger.store import insert_calls, save_fingerprint_change, save_key_name
from daemon.record import CallError, CallRecord, CostSource, Unmetered, Usage
from daemon.report_output import count, render_report
from daemon.testing import ROOT, make_record
from daemon.windows import parse_window, with_until


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


NOW = utc("2026-11-03T12:00")


def call(n: int, at: str, model: str | None, **fields: Any) -> CallRecord:
    return make_record(id=f"c{n}", started_at=utc(at), model=model, **fields)


def priced(ticks: int) -> dict[str, Any]:
    return {"cost_ticks": ticks, "cost_source": CostSource.COMPUTED}


# The small ledger. In the window 2026-11-01 .. 2026-11-03 (UTC): c1 to c6; c7 is before it.
SMALL = [
    call(1, "2026-11-01T10:00", "grok-4", app="web", key_id="k_a", duration_ms=100.0,
         usage=Usage(input_tokens=1000, cached_input_tokens=400, output_tokens=200,
                     reasoning_tokens=50), **priced(1_234_567_890)),
    # 23:30 UTC on Nov 1 is 00:30 on Nov 2 in Paris
    call(2, "2026-11-01T23:30", "grok-4", app="web", key_id="k_a", duration_ms=300.0,
         usage=Usage(input_tokens=3000, output_tokens=100), **priced(765_432_110)),
    call(3, "2026-11-02T08:00", "grok-3-mini", key_id="k_b", duration_ms=50.0,
         usage=Usage(input_tokens=500, output_tokens=50), error=CallError.UPSTREAM_STREAM_CUT,
         **priced(10_000)),
    call(4, "2026-11-02T09:00", "grok-imagine-image", app="batch", key_id="k_a",
         endpoint="batches.result", usage=Usage(images=1), **priced(200_000_000)),
    call(5, "2026-11-02T10:00", "grok-4", duration_ms=200.0, unmetered_reason=Unmetered.NO_USAGE),
    call(6, "2026-11-02T11:00", "grok-9-preview", duration_ms=20.0,
         usage=Usage(input_tokens=10, output_tokens=5), cost_source=CostSource.UNPRICED),
    call(7, "2026-10-31T12:00", "grok-4", app="web", key_id="k_a", duration_ms=999.0,
         usage=Usage(input_tokens=7, output_tokens=7), **priced(999)),
]  # fmt: skip


def write_ledger(path: Path, records: list[CallRecord], names: dict[str, str]) -> Path:
    db = open_database(path)
    migrate(db)
    with db.conn:
        insert_calls(db, records)
        for key_id, name in names.items():
            save_key_name(db, (key_id, name, "team-1", f"api-{key_id}", 0.0))
    db.close()
    return path


@pytest.fixture
def small(tmp_path: Path) -> Path:
    return write_ledger(tmp_path / "small.db", SMALL, {"k_a": "prod"})


@pytest.fixture
def db(small: Path) -> Iterator[sqlite_utils.Database]:
    db = open_database(small, readonly=True)
    yield db
    db.close()


NOV_1_TO_3 = with_until(parse_window("2026-11-01", NOW), "2026-11-03", NOW)


def test_report_by_model_exact(db: sqlite_utils.Database) -> None:
    rep = report(db, NOV_1_TO_3, "model")
    assert (rep.window, rep.by) == (NOV_1_TO_3, "model")
    assert [r["model"] for r in rep.rows] == [
        "grok-4",  # 2_000_000_000 ticks
        "grok-imagine-image",  # 200_000_000
        "grok-3-mini",  # 10_000
        "grok-9-preview",  # unpriced: 0
    ]
    grok4 = rep.rows[0]
    assert grok4 == {
        "model": "grok-4",
        "calls": 3,
        "input_tokens": 4000,
        "cached_input_tokens": 400,
        "cached_share": 0.1,
        "output_tokens": 300,
        "reasoning_tokens": 50,
        "image_input_tokens": 0,
        "cost_usd": 0.2,
        "cost_ticks": 2_000_000_000,
        "batch_cost_usd": 0.0,
        "batch_cost_ticks": 0,
        "p50_ms": 200.0,
        "p95_ms": 300.0,
        "errors": 0,
        "unmetered": 1,
        "unpriced": 0,
    }
    image = rep.rows[1]
    assert (image["batch_cost_ticks"], image["batch_cost_usd"]) == (200_000_000, 0.02)
    assert (image["cached_share"], image["p50_ms"], image["p95_ms"]) == (None, None, None)
    assert (rep.rows[2]["errors"], rep.rows[3]["unpriced"]) == (1, 1)
    assert rep.total == {
        "model": None,
        "calls": 6,
        "input_tokens": 4510,
        "cached_input_tokens": 400,
        "cached_share": 400 / 4510,
        "output_tokens": 355,
        "reasoning_tokens": 50,
        "image_input_tokens": 0,
        "cost_usd": 0.220001,
        "cost_ticks": 2_200_010_000,
        "batch_cost_usd": 0.02,
        "batch_cost_ticks": 200_000_000,
        "p50_ms": 100.0,  # nearest rank over every call: 20, 50, [100], 200, 300
        "p95_ms": 300.0,
        "errors": 1,
        "unmetered": 1,
        "unpriced": 1,
    }


def test_report_by_key_names_and_ids_apart(db: sqlite_utils.Database) -> None:
    rep = report(db, NOV_1_TO_3, "key")
    got = [(r["key_id"], r["key_name"], r["calls"], r["cost_ticks"]) for r in rep.rows]
    assert got == [
        ("k_a", "prod", 3, 2_200_000_000),
        ("k_b", None, 1, 10_000),  # no name: None, not a made-up label
        (None, None, 2, 0),  # calls without a key
    ]
    assert (rep.total["key_id"], rep.total["key_name"], rep.total["calls"]) == (None, None, 6)
    assert "key" not in rep.total


@pytest.mark.parametrize("by", sorted(REPORT_GROUPS))
def test_every_grouping_sums_to_the_total(db: sqlite_utils.Database, by: str) -> None:
    rep = report(db, NOV_1_TO_3, by)
    for field in ("calls", "input_tokens", "cost_ticks", "batch_cost_ticks", "errors"):
        assert sum(r[field] for r in rep.rows) == rep.total[field]
    assert rep.total["cost_ticks"] == 2_200_010_000


def test_the_window_bounds_and_the_zone_of_a_day(db: sqlite_utils.Database) -> None:
    # since alone: c7 (Oct 31) stays out, every call after Nov 1 is in
    assert report(db, parse_window("2026-11-01", NOW), "model").total["calls"] == 6
    everything = report(db, parse_window("2026-10-01", NOW), "model").total
    assert (everything["calls"], everything["cost_ticks"]) == (7, 2_200_010_999)
    # the end is exclusive: until c3's own second leaves c3 out
    until_c3 = with_until(parse_window("2026-11-01", NOW), "2026-11-02T08:00", NOW)
    assert report(db, until_c3, "model").total["calls"] == 2
    # by day, in UTC and in Paris (c2 at 23:30 UTC is Nov 2 there)
    days = {r["day"]: r["calls"] for r in report(db, NOV_1_TO_3, "day").rows}
    assert days == {"2026-11-01": 2, "2026-11-02": 4}
    paris = with_until(parse_window("2026-11-01", NOW, "Europe/Paris"), "2026-11-03", NOW)
    days = {r["day"]: r["calls"] for r in report(db, paris, "day").rows}
    assert days == {"2026-11-01": 1, "2026-11-02": 5}


def test_yesterday_in_paris_at_a_fixed_now(db: sqlite_utils.Database) -> None:
    # at 2026-11-03 00:30 in Paris, yesterday is Nov 2 there: 2026-11-01 23:00 .. 11-02 23:00 UTC
    window = parse_window("yesterday", utc("2026-11-02T23:30"), "Europe/Paris")
    rep = report(db, window, "model")
    assert rep.total["calls"] == 5  # c2 (23:30 UTC Nov 1) to c6
    assert rep.total["cost_ticks"] == 765_432_110 + 10_000 + 200_000_000


def test_json_is_numbers_and_nulls(small: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--since", "2026-11-01", "--until", "2026-11-03", "--ledger", str(small)]
    assert main(["report", *args, "--format", "json", "--by", "key"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert set(body) == {"window", "by", "rows", "total"}
    assert body["by"] == "key"
    assert body["window"] == {
        "start": utc("2026-11-01T00:00"),
        "end": utc("2026-11-03T00:00"),
        "start_local": "2026-11-01T00:00:00+00:00",
        "end_local": "2026-11-03T00:00:00+00:00",
        "tz": "UTC",
        "label": "2026-11-01 00:00 → 2026-11-03 00:00 UTC (2026-11-01 until 2026-11-03)",
    }
    first, second, third = body["rows"]
    assert list(first) == ["key_id", "key_name", *REPORT_FIELDS]
    assert (first["key_id"], first["key_name"]) == ("k_a", "prod")
    assert (second["key_id"], second["key_name"], third["key_id"]) == ("k_b", None, None)
    assert first["cost_ticks"] == 2_200_000_000 and isinstance(first["cost_ticks"], int)
    assert first["cost_usd"] == 0.22 and isinstance(first["cost_usd"], float)
    assert first["cached_share"] == 0.1
    assert second["p50_ms"] == 50.0 and third["cached_share"] == 0.0
    total = body["total"]
    assert (total["key_id"], total["cost_ticks"], total["cost_usd"]) == (
        None,
        2_200_010_000,
        0.220001,
    )
    # every field of every row is a number or null, but the group fields
    for row in [*body["rows"], total]:
        for field in REPORT_FIELDS:
            assert row[field] is None or type(row[field]) in (int, float), (field, row[field])


def test_csv_is_plain_numbers_with_a_total_line(
    small: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--since", "2026-11-01", "--until", "2026-11-03", "--ledger", str(small)]
    assert main(["report", *args, "--format", "csv", "--by", "key"]) == 0
    out = capsys.readouterr().out
    lines = list(csv.DictReader(io.StringIO(out)))
    assert out.splitlines()[0] == ",".join(["row", "key_id", "key_name", *REPORT_FIELDS])
    assert [(r["row"], r["key_id"], r["key_name"]) for r in lines] == [
        ("group", "k_a", "prod"),
        ("group", "k_b", ""),  # missing: an empty field
        ("group", "", ""),
        ("total", "", ""),
    ]
    total = lines[-1]
    assert (total["cost_ticks"], total["cost_usd"], total["calls"]) == (
        "2200010000",
        "0.220001",
        "6",
    )
    assert (total["p50_ms"], total["p95_ms"]) == ("100.0", "300.0")
    assert lines[0]["cached_share"] == "0.1"
    assert lines[2]["cost_usd"] == "0.0" and lines[1]["batch_cost_ticks"] == "0"


def test_table_has_the_window_header_and_an_exact_total(
    small: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--since", "2026-11-01", "--until", "2026-11-03", "--tz", "Europe/Paris"]
    assert main(["report", *args, "--ledger", str(small)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        "Calls by model, 2026-11-01 00:00 → 2026-11-03 00:00 Europe/Paris "
        "(2026-11-01 until 2026-11-03)"
    )
    assert lines[1] == ""
    assert lines[2].split() == [
        "model", "calls", "input", "cached", "output", "reason", "cost", "$",
        "p50", "ms", "p95", "ms", "err", "unmet", "unpr",
    ]  # fmt: skip
    assert lines[3].startswith("------") and lines[8] == lines[3]
    assert lines[4].split() == [
        "grok-4", "3", "4000", "10.0%", "300", "50", "0.200000", "200", "300", "0", "1", "0",
    ]  # fmt: skip
    assert lines[5].split()[:7] == ["grok-imagine-image", "1", "0", "-", "0", "0", "0.020000"]
    # the total: every call of the window, not a sum of rounded lines; p50/p95 over all calls
    assert lines[9].split() == [
        "total", "6", "4510", "8.9%", "355", "50", "0.220001", "100", "300", "1", "1", "1",
    ]  # fmt: skip
    assert lines[10:] == [
        "cached: the share of input tokens read from cache; err: calls that failed; unmet: calls "
        "without",
        "usage; unpr: calls without a price.",
        "Not shown, for width: batch $ (--format json or csv has every field).",
    ]
    assert max(len(line) for line in lines) <= 100


def test_columns_with_nothing_to_show_are_left_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = [
        call(1, "2026-11-01T10:00", "grok-4", duration_ms=5.25,
             usage=Usage(input_tokens=12_345, output_tokens=678), **priced(73_100)),
    ]  # fmt: skip
    ledger = write_ledger(tmp_path / "plain.db", plain, {})
    assert main(["report", "--since", "2026-11-01", "--ledger", str(ledger)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].split() == [
        "model", "calls", "input", "cached", "output", "cost", "$", "p50", "ms", "p95", "ms"
    ]  # fmt: skip
    assert lines[4].split() == ["grok-4", "1", "12.3k", "0.0%", "678", "0.000007", "5.2", "5.2"]
    assert lines[-1] == "cached: the share of input tokens read from cache."


def test_an_empty_window_says_so(small: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--since", "2027-01-01", "--ledger", str(small)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Calls by model, 2027-01-01 00:00 → now UTC (2027-01-01)")
    assert lines[-1] == "(no calls in this window)"


# --- a realistic ledger: the table fits 100 columns -------------------------------------------

MODELS = [
    "grok-4-1-fast-non-reasoning",
    "grok-4-fast-reasoning",
    "grok-code-fast-1",
    "grok-imagine-image",
    "grok-3-mini",
    "a-fine-tuned-model-with-a-really-long-name-2026-11-01",
]
KEYS = {
    "k_0123456789abcdef": "production backend (eu-west, shared by four services)",
    "k_fedcba9876543210": "ci",
    "k_00000000deadbeef": "",
}
APPS = ["checkout-assistant", "nightly-batch-summaries", None, "support-bot"]


def realistic() -> list[CallRecord]:
    records = []
    for n in range(240):
        model = MODELS[n % len(MODELS)]
        fields: dict[str, Any] = {
            "app": APPS[n % len(APPS)],
            "key_id": list(KEYS)[n % 3] if n % 7 else None,
            "duration_ms": 35_000.0 + n * 1000.5 if n % 5 == 0 else 180.25 + n,
            "endpoint": "batches.result" if n % 11 == 0 else "chat.completions",
        }
        if n % 13 == 0:
            fields["unmetered_reason"] = Unmetered.NO_USAGE
        else:
            fields["usage"] = Usage(
                input_tokens=2_345_678 + n * 10_001,
                cached_input_tokens=1_234_567,
                output_tokens=456_789 + n,
                reasoning_tokens=123_456 if n % 2 else 0,
                image_input_tokens=98_765 if n % 3 == 0 else 0,
            )
            if n % 17 == 0:
                fields["cost_source"] = CostSource.UNPRICED
            else:
                fields.update(priced(12_345_678_901_234 + n))  # $1234.57 a call
        if n % 19 == 0:
            fields["error"] = CallError.UPSTREAM_TIMEOUT
        day = 1 + n % 28
        records.append(call(n, f"2026-11-{day:02d}T{n % 24:02d}:17", model, **fields))
    return records


@pytest.mark.parametrize("by", sorted(REPORT_GROUPS))
def test_a_realistic_table_fits_100_columns(
    by: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = write_ledger(tmp_path / "real.db", realistic(), {k: v for k, v in KEYS.items() if v})
    argv = ["report", "--since", "2026-10-01", "--by", by, "--ledger", str(ledger)]
    argv += ["--tz", "America/Argentina/Buenos_Aires"]  # a long zone name in the header
    assert main(argv) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert all(len(line) <= 100 for line in lines), "\n" + "\n".join(
        f"{len(line):3} {line}" for line in lines
    )
    assert lines[0].startswith(f"Calls by {by}, ")
    # the total is the ledger's exact sum, whatever the grouping
    db = open_database(ledger, readonly=True)
    window = parse_window("2026-10-01", NOW)
    total = report(db, window, by).total
    db.close()
    rows = realistic()
    assert total["calls"] == len(rows) == 240
    assert total["cost_ticks"] == sum(r.cost_ticks or 0 for r in rows)
    # 208 priced calls (not unmetered: n % 13, nor unpriced: n % 17), each 12_345_678_901_234 + n
    assert total["cost_ticks"] == 208 * 12_345_678_901_234 + 24_893 == 2_567_901_211_481_565
    [total_line] = [line for line in lines if line.startswith("total ")]
    assert "256790.121148" in total_line.split()  # $, to the micro-dollar
    assert total_line.split()[1] == "240"


def test_a_realistic_key_table_keeps_every_key_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = write_ledger(tmp_path / "real.db", realistic(), {k: v for k, v in KEYS.items() if v})
    assert main(["report", "--since", "2026-10-01", "--by", "key", "--ledger", str(ledger)]) == 0
    out = capsys.readouterr().out
    for key_id in KEYS:
        assert f"({key_id})" in out or f"\n{key_id} " in out
    assert "\nprodu" in out and "… (k_0123456789abcdef)" in out  # the name is cut, not the id


def test_latency_has_one_precision_per_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mixed = [
        call(1, "2026-11-01T10:00", "grok-4", duration_ms=5.25,
             usage=Usage(input_tokens=10, output_tokens=5), **priced(100)),
        call(2, "2026-11-01T11:00", "grok-3", duration_ms=250.5,
             usage=Usage(input_tokens=10, output_tokens=5), **priced(100)),
    ]  # fmt: skip
    ledger = write_ledger(tmp_path / "mixed.db", mixed, {})
    assert main(["report", "--since", "2026-11-01", "--ledger", str(ledger)]) == 0
    lines = capsys.readouterr().out.splitlines()
    # whole ms in both latency columns (it was "5.2" under "250")
    assert sorted(line.split()[-2:] for line in lines[4:6]) == [["250", "250"], ["5", "5"]]
    assert lines[7].split()[-2:] == ["5", "250"]  # the total: p50, p95 over both calls


def run_in_terminal(argv: list[str], columns: int, env_columns: str | None) -> list[str]:
    """`python -m daemon *argv` with its stdout on a pseudo-terminal `columns` wide (and
    $COLUMNS set to `env_columns`, or unset): the lines it printed there."""
    main_fd, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    if env_columns is not None:
        env["COLUMNS"] = env_columns
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon", *argv],
        stdout=terminal,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    os.close(terminal)
    out = b""
    try:
        for _ in range(100_000):  # bounded: read until the child closes the terminal
            try:
                chunk = os.read(main_fd, 65536)
            except OSError:  # EIO: the other end is closed
                break
            if not chunk:
                break
            out += chunk
        assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        os.close(main_fd)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
    return out.decode().replace("\r\n", "\n").splitlines()


@pytest.mark.parametrize(
    ("columns", "env_columns", "width"),
    [(72, None, 72), (200, None, 100), (200, "64", 64), (30, None, 40)],
)
def test_on_a_terminal_the_table_follows_its_width(
    tmp_path: Path, columns: int, env_columns: str | None, width: int
) -> None:
    ledger = write_ledger(tmp_path / "real.db", realistic(), {k: v for k, v in KEYS.items() if v})
    argv = ["report", "--since", "2026-10-01", "--by", "key", "--ledger", str(ledger)]
    lines = run_in_terminal(argv, columns, env_columns)
    assert max(len(line) for line in lines) <= width, "\n".join(lines)
    header = lines[lines.index("") + 1].split()  # after the window's line(s)
    assert header[:2] == ["key", "calls"] and "cost" in header
    if width < 100:
        assert any(line.startswith("Not shown, for width: ") for line in lines)
        assert "cached" not in header  # the least needed of the columns always shown goes first
        assert "." not in lines  # no empty legend (its only entry was cached's)
    if width >= 64:  # the key ids stay whole, a name cut before them
        for key_id in KEYS:
            assert any(key_id in line for line in lines), key_id
    total = next(line for line in lines if line.startswith("total "))
    assert "256790.121148" in total.split()  # the cost column stays, whatever the width


def test_off_a_terminal_the_table_is_100_wide_whatever_columns_says(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "60")
    ledger = write_ledger(tmp_path / "real.db", realistic(), {k: v for k, v in KEYS.items() if v})
    assert main(["report", "--since", "2026-10-01", "--by", "key", "--ledger", str(ledger)]) == 0
    assert max(len(line) for line in capsys.readouterr().out.splitlines()) == 100


def test_count_is_short() -> None:
    assert [count(n) for n in (0, 9999, 10_000, 12_345, 999_499, 999_950, 1_234_567)] == [
        "0", "9999", "10k", "12.3k", "999k", "1M", "1.23M",
    ]  # fmt: skip
    assert [count(n) for n in (4_560_000_000, 7_000_000_000_000, 12 * 10**15)] == [
        "4.56G", "7T", "1.2e+04T",
    ]  # fmt: skip


# --- the command line -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--since", "1M"],
            "xai-meter report: --since '1M': '1M' is ambiguous (minutes or months?)",
        ),
        (["--since", "2026-11-01", "--until", "1M"], "xai-meter report: --until '1M': "),
        (["--since", "yesterday-ish"], "xai-meter report: --since 'yesterday-ish': "),
        (
            ["--since", "99999999d"],  # was a traceback: year out of range
            "xai-meter report: --since '99999999d': '99999999d' reaches past the dates",
        ),
        (["--since", "9" * 400 + "d"], "xai-meter report: --since '999"),  # was OverflowError
        (
            ["--since", "7d", "--until", "9999-12-31T23:59", "--tz", "America/New_York"],
            "xai-meter report: --until '9999-12-31T23:59': '9999-12-31T23:59' reaches past",
        ),
        (["--tz", "Mars/Olympus"], "xai-meter report: --tz: unknown time zone 'Mars/Olympus'"),
        (
            ["--since", "today", "--until", "yesterday"],
            "xai-meter report: --until 'yesterday': the window would end",
        ),
    ],
)
def test_a_bad_window_is_one_line_and_exit_2(
    argv: list[str], message: str, small: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", *argv, "--ledger", str(small)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith(message), captured.err


def test_help_shows_every_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # click wraps lines
    for default in ("[default: 24h]", "[default: UTC]", "[default: model]", "[default: table]"):
        assert default in out
    assert "1M is refused" in out and "this-month" in out and "--until" in out


def test_summary_fields_match_the_spec() -> None:
    assert REPORT_FIELDS == (
        "calls", "input_tokens", "cached_input_tokens", "cached_share", "output_tokens",
        "reasoning_tokens", "image_input_tokens", "cost_usd", "cost_ticks", "batch_cost_usd",
        "batch_cost_ticks", "p50_ms", "p95_ms", "errors", "unmetered", "unpriced",
    )  # fmt: skip


def test_render_report_in_every_format_from_one_report(db: sqlite_utils.Database) -> None:
    rep = report(db, NOV_1_TO_3, "app")
    apps = [r["app"] for r in rep.rows]
    assert apps == ["web", "batch", None]  # no app: None (JSON null), "(none)" in the table
    assert json.loads(render_report(rep, "json"))["rows"][2]["app"] is None
    table = render_report(rep, "table").splitlines()
    assert table[6].split()[0] == "(none)"  # as the status page says it
    assert render_report(rep, "csv").splitlines()[3].startswith("group,,3,510,0,0.0,55,")


# --- the other commands' JSON and CSV: numbers as numbers, null for missing --------------------


def test_prices_json_and_csv_carry_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[pricing.overrides]\n"grok-3" = {input = 3.0, output = 15.0}\n')
    ledger = write_ledger(tmp_path / "empty.db", [], {})
    args = ["prices", "--config", str(config), "--ledger", str(ledger)]
    assert main([*args, "--format", "json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["model"], row["input_usd_per_1m"], row["output_usd_per_1m"]) == (
        "grok-3",
        3.0,
        15.0,
    )
    assert row["cached_input_usd_per_1m"] is None and row["image_usd"] is None
    assert main([*args, "--format", "csv"]) == 0
    [line] = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert (line["input_usd_per_1m"], line["cached_input_usd_per_1m"]) == ("3.0", "")
    assert main(["prices", "--catalog", "--format", "json", "--config", str(config)]) == 0
    catalog = json.loads(capsys.readouterr().out)
    assert all(type(r["price"]) in (int, float) for r in catalog)
    [discount] = [r for r in catalog if r["id"] == "batch_discount"]
    assert discount["price"] == 0.5


def test_fingerprints_json_carries_numbers_and_nulls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = [
        call(1, "2026-11-01T10:00", "grok-4", fingerprint="fp_a"),
        call(2, "2026-11-01T11:00", "grok-4", fingerprint="fp_a"),
    ]
    ledger = write_ledger(tmp_path / "fp.db", seen, {})
    db = open_database(ledger)
    with db.conn:
        save_fingerprint_change(db, (utc("2026-11-01T10:00"), "xai", "grok-4", None, "fp_a", "new"))
    db.close()
    assert main(["fingerprints", "--ledger", str(ledger), "--format", "json"]) == 0
    first, change = json.loads(capsys.readouterr().out)
    assert (first["record"], first["calls"], first["old"]) == ("seen", 2, None)
    assert (change["record"], change["old"], change["new"], change["calls"]) == (
        "change", None, "fp_a", None,
    )  # fmt: skip
    assert main(["fingerprints", "--ledger", str(ledger), "--format", "csv"]) == 0
    lines = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["record"], r["calls"], r["old"]) for r in lines] == [
        ("seen", "2", ""),
        ("change", "", ""),
    ]
