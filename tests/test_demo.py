"""`xai-meter demo` works from a clean directory with no key and no network."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import sqlite_utils


@pytest.mark.slow
def test_demo_records_every_call(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "daemon", "demo", "--ledger", "demo.db"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for expected in (
        "grok-4-fast-reasoning",
        "upstream_stream_cut",
        "unmetered:malformed",
        "xai_meter_tokens_total",
        "xai_meter_cost_usd_total",
        "Where to look",
    ):
        assert expected in out
    rows = list(sqlite_utils.Database(tmp_path / "demo.db").query("select * from calls"))
    assert len(rows) == 9
    assert sum(r["status"] == 429 for r in rows) == 1
