"""`bench/soak.py` keeps working: a six-second soak, run as a user would, ends with one ledger
row per call and exit code 0 (the long soaks stay in bench/; this keeps the script from rotting).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent

# 0.1 min at 50 calls/s: 300 calls, three turns of the 100-call mix (bench/soak.py KINDS).
MIX = {
    "chat": 24,
    "chat_stream": 20,
    "responses": 10,
    "responses_stream": 6,
    "messages": 10,
    "messages_stream": 5,
    "error_4xx": 5,
    "error_5xx": 5,
    "upstream_cut": 3,
    "hang_up": 4,
    "grpc": 6,
    "grpc_stream": 2,
}


@pytest.mark.slow
def test_a_short_soak_keeps_one_row_per_call(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    figures = ["--minutes", "0.1", "--rate", "50", "--sample-every", "1", "--out", str(out)]
    result = subprocess.run(
        [sys.executable, "bench/soak.py", *figures],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| rows == calls | ✓ |" in result.stdout
    summary = json.loads(out.read_text())["summary"]
    assert (summary["calls"], summary["completed"], summary["rows"]) == (300, 300, 300)
    assert summary["rows_before_sigterm"] == 300
    assert summary["daemon_exit_code"] == 0
    assert summary["checks"] == {
        "rows == calls": True,
        "ledger caught up before SIGTERM": True,
        "daemon stopped cleanly on SIGTERM": True,
        "RSS growth bounded": None,  # not judged: six seconds say nothing about a trend
    }
    kinds = summary["kinds"]
    assert {name: k["calls"] for name, k in kinds.items()} == {n: 3 * w for n, w in MIX.items()}
    assert kinds["error_4xx"]["endings"] == {"400": 5, "404": 5, "429": 5}
    assert kinds["error_5xx"]["endings"] == {"500": 5, "503": 5, "529": 5}
    assert kinds["upstream_cut"]["endings"] == {"cut": 9}
    assert kinds["hang_up"]["endings"] == {"hung up": 12}
    assert summary["unexpected_endings"] == {}
    # Each ending is its own row: the upstream's errors with their status, the cuts and the
    # hang-ups told apart; every other call (REST and gRPC) a 200.
    assert summary["ledger_endings"] == {
        "200": 249,
        "200 client_disconnect": 12,
        "200 upstream_stream_cut": 9,
        "400 http_error": 5,
        "404 http_error": 5,
        "429 http_error": 5,
        "500 http_error": 5,
        "503 http_error": 5,
        "529 http_error": 5,
    }
