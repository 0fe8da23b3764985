"""`xai-meter demo` works from a clean directory with no key and no network, starts from a
fresh ledger each run (or says it appends), and says where to look next."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import sqlite_utils

from daemon.cli import main
from daemon.demo import DemoError, _print_where, prepare_ledger
from daemon.ledger import migrate, open_database


def demo(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon", "demo", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def calls(path: Path) -> int:
    return sqlite_utils.Database(path).execute("select count(*) from calls").fetchone()[0]


@pytest.mark.slow
def test_demo_records_every_call(tmp_path: Path) -> None:
    result = demo(tmp_path, "--ledger", "demo.db")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("Ledger: demo.db (new).\n")
    assert out.endswith(
        "\nWhere to look:\n"
        f"  ledger   {tmp_path / 'demo.db'}\n"
        "  report   xai-meter report --ledger demo.db --since 1h\n"
        "  status   the status page (/) and /metrics of the admin listener: "
        "`xai-meter demo --keep-running`\n"
        "           prints their URLs, or `xai-meter serve --ledger demo.db` serves them at "
        "http://127.0.0.1:9787/\n"
        '  query    sqlite-utils query demo.db "select model, sum(output_tokens) from calls '
        'group by model"\n'
    )
    for expected in (
        "grok-4-fast-reasoning",
        "upstream_stream_cut",
        "unmetered:malformed",
        "xai_meter_tokens_total",
        "xai_meter_cost_usd_total",
        "Where to look",
        "xai-sdk over gRPC: chat.stream()",
        "xAI's bill against the ledger",
    ):
        assert expected in out
    # the reconciliation: the demo key meets the simulator's bill exactly; the faults key's gap
    # is the two calls xAI billed whose usage the relay could not read (cut stream, malformed)
    bill = out.split("xAI's bill against the ledger", 1)[1].splitlines()
    assert [line.split()[-2:] for line in bill[3:6]] == [
        ["4", "small"],
        ["9", "match"],
        ["13", "small"],
    ]
    assert "0.0010516  0.0010516       0.00    +0.00%" in bill[4]
    assert "2 unmetered call(s) (1 incomplete, 1 malformed): billed by xAI" in out
    rows = list(sqlite_utils.Database(tmp_path / "demo.db").query("select * from calls"))
    assert len(rows) == 13
    assert sum(r["status"] == 429 for r in rows) == 1
    # the xai-sdk calls, through the gRPC listener: grok-4.3 on the demo's question, 13 prompt
    # tokens, 14 completion + 84 reasoning; the stream's prompt is cached (12 of 13) by then
    sdk = [r for r in rows if r["transport"] == "grpc"]
    assert [r["path"] for r in sdk] == [
        "/xai_api.Chat/GetCompletion",
        "/xai_api.Chat/GetCompletionChunk",
    ]
    assert [(r["input_tokens"], r["cached_input_tokens"], r["reasoning_tokens"]) for r in sdk] == [
        (13, 0, 84),
        (13, 12, 84),
    ]
    assert [r["reported_cost_ticks"] for r in sdk] == [2_612_500, 2_486_500]


@pytest.mark.slow
def test_each_run_starts_fresh_or_appends_when_asked(tmp_path: Path) -> None:
    first = demo(tmp_path)  # the default file, xai-meter-demo.db
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("Ledger: xai-meter-demo.db (new).\n")
    again = demo(tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(
        "Ledger: xai-meter-demo.db, fresh: the last demo's was replaced (--append adds to it "
        "instead).\n"
    )
    assert calls(tmp_path / "xai-meter-demo.db") == 13
    more = demo(tmp_path, "--append")
    assert more.returncode == 0, more.stderr
    assert more.stdout.startswith(
        "Ledger: xai-meter-demo.db, appending (--append): the report and the reconciliation "
        "below include its earlier calls.\n"
    )
    assert calls(tmp_path / "xai-meter-demo.db") == 26
    # another name: replaced when a demo made it (it is marked), never a ledger of its own
    assert demo(tmp_path, "--ledger", "mine.db").returncode == 0
    replaced = demo(tmp_path, "--ledger", "mine.db")
    assert replaced.returncode == 0 and "fresh: the last demo's was replaced" in replaced.stdout
    assert calls(tmp_path / "mine.db") == 13
    real = tmp_path / "xai-meter.db"
    sqlite_utils.Database(real)["calls"].insert({"id": "mine"})
    refused = demo(tmp_path, "--ledger", "xai-meter.db")
    assert refused.returncode == 2
    assert refused.stdout == ""
    assert refused.stderr == (
        "xai-meter demo: xai-meter.db exists and is not a ledger a demo made: the demo "
        "replaces only its own. Fix: pass another --ledger FILE, or --append to add the "
        "demo's calls to it.\n"
    )
    assert calls(real) == 1


def test_where_to_look_while_it_runs(capsys: pytest.CaptureFixture[str]) -> None:
    _print_where("my demo.db", "http://127.0.0.1:40001")
    assert capsys.readouterr().out.splitlines()[2:] == [
        f"  ledger   {Path('my demo.db').absolute()}",
        "  report   xai-meter report --ledger 'my demo.db' --since 1h",
        "  status   http://127.0.0.1:40001/   (the status page, in a browser)",
        "  metrics  http://127.0.0.1:40001/metrics",
        "  query    sqlite-utils query 'my demo.db' \"select model, sum(output_tokens) from "
        'calls group by model"',
    ]


def test_a_ledger_it_will_not_touch_gets_the_fix_for_what_it_is(tmp_path: Path) -> None:
    """--append is suggested only for a ledger of its own; a directory, a database that is no
    ledger, or a file that is no database each get their own fix, with or without --append."""
    folder = tmp_path / "folder"
    folder.mkdir()
    text = tmp_path / "notes.db"
    text.write_text("my notes, not a database\n" * 50)
    other = tmp_path / "other.db"
    sqlite_utils.Database(other)["things"].insert({"a": 1})
    mine = tmp_path / "xai-meter.db"
    db = open_database(mine)
    migrate(db)
    db.close()
    directory = (
        f"--ledger {folder} is a directory, not a ledger file. Fix: name a file, like "
        f"--ledger {folder / 'xai-meter-demo.db'}."
    )
    not_sqlite = (
        f"{text} exists and is not an SQLite database: the demo neither replaces nor adds to a "
        "file that is no ledger. Fix: pass another --ledger FILE (a new one)."
    )
    not_ledger = (
        f"{other} is an SQLite database but not an xai-meter ledger: the demo neither replaces "
        "nor adds to it. Fix: pass another --ledger FILE (a new one)."
    )
    for append in (False, True):
        for path, message in ((folder, directory), (text, not_sqlite), (other, not_ledger)):
            with pytest.raises(DemoError) as refused:
                prepare_ledger(str(path), append)
            assert str(refused.value) == message
    with pytest.raises(DemoError) as refused:
        prepare_ledger(str(mine), append=False)
    assert str(refused.value).endswith(
        "Fix: pass another --ledger FILE, or --append to add the demo's calls to it."
    )
    assert prepare_ledger(str(mine), append=True)[0].startswith(f"Ledger: {mine}, appending")
    assert text.read_text() == "my notes, not a database\n" * 50  # nothing touched
    assert calls(mine) == 0


def test_a_run_that_cannot_go_prints_only_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every check comes before the "Ledger: ..." line: --append to a file that is no ledger,
    or a ledger the daemon then cannot open, prints one line on stderr and nothing else."""
    text = tmp_path / "text.db"
    text.write_text("not a database\n")
    assert main(["demo", "--ledger", str(text), "--append"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"xai-meter demo: {text} exists and is not an SQLite database: the demo neither "
        "replaces nor adds to a file that is no ledger. Fix: pass another --ledger FILE (a new "
        "one).\n"
    )
    assert main(["demo", "--ledger", str(text / "x.db")]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"xai-meter: config error: ledger.path = '{text / 'x.db'}': ")
    assert err.count("\n") == 1
