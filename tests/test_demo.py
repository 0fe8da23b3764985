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
    assert "2 unmetered call(s): billed by xAI" in out
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
