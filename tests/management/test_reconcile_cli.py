"""`xai-meter reconcile`: the bill fetched with the management key, else the ledger's stored
pull (and it says so), else one line and exit 2; JSON and CSV carry numbers as numbers."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import sqlite_utils

from daemon.cli import main
from daemon.ledger import migrate, open_database
from daemon.ledger.billing import BilledRow, save_billed_usage
from daemon.ledger.store import insert_calls, save_key_name
from daemon.record import Unmetered
from daemon.simulator import Simulator
from daemon.testing import make_record, toml_text

ENV = "XAI_METER_TEST_MGMT_KEY"


def _days() -> tuple[str, float]:
    """Yesterday (UTC) and its noon: a complete day inside any --days window."""
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    noon = datetime(yesterday.year, yesterday.month, yesterday.day, 12, tzinfo=UTC)
    return yesterday.isoformat(), noon.timestamp()


def _ledger(path: Path, stored: bool) -> sqlite_utils.Database:
    """A ledger with yesterday's calls of key "api-a" (4_000 + 600 ticks; one unmetered), and
    yesterday's bill stored when `stored` (5_000 ticks: 4_000 tokens, 1_000 storage)."""
    day, noon = _days()
    db = open_database(path)
    migrate(db)
    with db.conn:
        save_key_name(db, ("kid-a", "prod", "team", "api-a", noon))
        insert_calls(
            db,
            [
                make_record(id="1", started_at=noon, key_id="kid-a", cost_ticks=4_000),
                make_record(id="2", started_at=noon + 1, key_id="kid-a", cost_ticks=600),
            ],
        )
    if stored:
        rows = [
            BilledRow(day, "api-a", "prompt_text_tokens", 4e-7, 4_000),
            BilledRow(day, "api-a", "file_storage", 1e-7, 1_000),
        ]
        save_billed_usage(db, [day], rows, fetched_at=noon + 3600)
    db.close()
    return db


def _config(tmp_path: Path, base_url: str) -> str:
    path = tmp_path / "c.toml"
    path.write_text(toml_text({"management": {"api_key_env": ENV, "base_url": base_url}}))
    return str(path)


def test_neither_source_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    config = _config(tmp_path, "http://127.0.0.1:9")
    assert main(["reconcile", "-c", config, "--ledger", str(tmp_path / "no.db")]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"xai-meter: reconcile: ${ENV} is not set, and there is no ledger at "
        f"{tmp_path / 'no.db'} to hold a stored pull of xAI's bill. Fix: export "
        f"{ENV}=<management key>, or pass --ledger FILE.\n"
    )
    _ledger(tmp_path / "l.db", stored=False)
    assert main(["reconcile", "-c", config, "--ledger", str(tmp_path / "l.db")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"xai-meter: reconcile: ${ENV} is not set, and the ledger ")
    assert err.count("\n") == 1


def test_from_the_stored_pull_without_a_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    day, noon = _days()
    _ledger(tmp_path / "l.db", stored=True)
    args = ["reconcile", "-c", _config(tmp_path, "http://127.0.0.1:9"), "--ledger"]
    assert main([*args, str(tmp_path / "l.db"), "--format", "json"]) == 0
    doc = orjson.loads(capsys.readouterr().out)
    assert doc["source"] == {
        "from": "ledger", "fetched_at": noon + 3600, "api_error": None,
        "first_day": day, "last_day": day,
    }  # fmt: skip
    key, total = doc["rows"]
    assert (key["api_key_id"], key["name"], key["row"], total["row"]) == (
        "api-a", "prod", "key", "day",
    )  # fmt: skip
    assert {k: key[k] for k in ("billed_ticks", "ledger_ticks", "gap_ticks", "calls")} == {
        "billed_ticks": 5_000, "ledger_ticks": 4_600, "gap_ticks": -400, "calls": 2,
    }  # fmt: skip
    assert (key["billed_usd"], key["gap_usd"], key["gap_ratio"]) == (5e-7, -4e-8, -0.08)
    assert [(g["class"], g["gap_ticks"], g["expected"]) for g in key["differs"]] == [
        ("text", 600, False), ("storage", -1_000, True),
    ]  # fmt: skip
    assert main([*args, str(tmp_path / "l.db"), "--format", "csv"]) == 0
    [line, _] = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert (line["billed_ticks"], line["gap_usd"], line["differs"]) == (
        "5000", "-4e-08", "text:600!;storage:-1000",
    )  # fmt: skip
    assert main([*args, str(tmp_path / "l.db")]) == 0
    table = capsys.readouterr().out
    assert f"{day}  prod (api-a)" in table
    assert "storage: files and collections never cross the relay" in table
    assert f"not fetched (${ENV} is not set); the pull the daemon stored in the ledger" in table


async def test_fetched_with_the_key(
    sim: Simulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(ENV, sim.state.management_key)
    day, _ = _days()
    today = datetime.now(UTC).date().isoformat()
    _ledger(tmp_path / "l.db", stored=True)  # the bill fetched wins over the stored one
    sim.state.billing_book[(day, "api-a", "prompt_text_tokens")] = 4_600
    args = ["reconcile", "-c", _config(tmp_path, sim.url), "--ledger", str(tmp_path / "l.db")]
    # in a thread: the CLI runs its own event loop, the simulator serves from this one
    assert await asyncio.to_thread(main, [*args, "--days", "2", "--format", "json"]) == 0
    doc = orjson.loads(capsys.readouterr().out)
    assert (doc["source"]["from"], doc["source"]["last_day"]) == ("api", today)
    key = next(r for r in doc["rows"] if r["day"] == day and r["row"] == "key")
    assert (key["billed_ticks"], key["ledger_ticks"], key["gap_ticks"], key["status"]) == (
        4_600, 4_600, 0, "match",
    )  # fmt: skip
    assert [r["partial"] for r in doc["rows"] if r["day"] == today] == [True]
    assert len({r["day"] for r in doc["rows"]}) == 3  # two complete days and today
    assert await asyncio.to_thread(main, args) == 0
    table = capsys.readouterr().out
    assert f"xAI's bill: fetched now from the Management API ({sim.url})." in table
    assert f"{today}*" in table
    # the key set but no ledger: a command error (exit 2)
    args[-1] = str(tmp_path / "none.db")
    assert await asyncio.to_thread(main, args) == 2
    assert capsys.readouterr().err == (
        f"xai-meter reconcile: no ledger at {tmp_path / 'none.db'}. Run `xai-meter serve` "
        "first, or pass --ledger FILE.\n"
    )


async def test_a_refused_management_key_is_told_apart_from_a_missing_one(
    sim: Simulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A key the API answers 401 is set: the fix is a valid management key (and where to make
    one), not "export" it."""
    monkeypatch.setenv(ENV, "wrong")
    config = _config(tmp_path, sim.url)
    args = ["reconcile", "-c", config, "--ledger", str(tmp_path / "no.db")]
    assert await asyncio.to_thread(main, args) == 2
    err = capsys.readouterr().err
    fix = (
        f"Fix: set ${ENV} to a valid management key (console.x.ai, Settings, Management Keys: "
        "a management key, not an API key)"
    )
    refused = (
        f"the Management API refused ${ENV} (management API validation: HTTP 401: "
        '{"code":"The request does not have valid authentication credentials for the '
        'operation","error":"Invalid management key."})'
    )
    assert err == (
        f"xai-meter: reconcile: {refused}, and there is no ledger at {tmp_path / 'no.db'} to "
        f"hold a stored pull of xAI's bill. {fix}, or pass --ledger FILE.\n"
    )
    assert "export" not in err
    _ledger(tmp_path / "l.db", stored=False)
    args[-1] = str(tmp_path / "l.db")
    assert await asyncio.to_thread(main, args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"xai-meter: reconcile: {refused}, and the ledger "), err
    assert err.endswith(
        f"{fix} (a daemon with a working management key stores a pull every day).\n"
    )
    # from the stored pull, the table says why the bill was not fetched
    _ledger(tmp_path / "s.db", stored=True)
    args[-1] = str(tmp_path / "s.db")
    db = open_database(tmp_path / "s.db")
    with db.conn:  # two calls whose usage could not be read, for different reasons
        insert_calls(
            db,
            [
                make_record(id=str(n), started_at=_days()[1] + n, key_id="kid-a",
                            unmetered_reason=reason)
                for n, reason in ((3, Unmetered.NO_USAGE), (4, Unmetered.MALFORMED))
            ],
        )  # fmt: skip
    db.close()
    assert await asyncio.to_thread(main, args) == 0
    table = capsys.readouterr().out
    assert f"xAI's bill: not fetched ({refused}); the pull the daemon stored" in table
    assert "2 unmetered call(s) (1 malformed, 1 no_usage): billed by xAI" in table
