"""`bench/ablated.py` keeps working: the daemon with parts switched off, as `bench/run.py
--daemon-variant LABEL:bench.without=tap+sinks` runs it to show what each part costs. Without
its tap it must relay bytes as the floor does (nothing injected, nothing stripped), and without
its sinks it must still book every call (a row each): else the figures it gives are not of the
daemon minus that part.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import aiohttp
import orjson
import pytest

from daemon.simulator import Simulator
from daemon.testing import Daemons

ROOT = Path(__file__).parent.parent
ABLATED = str(ROOT / "bench" / "ablated.py")
STREAM = orjson.dumps(
    {"model": "grok-4-fast", "messages": [{"role": "user", "content": "hi"}], "stream": True}
)
PLAIN = orjson.dumps({"model": "grok-4-fast", "messages": [{"role": "user", "content": "hi"}]})


@pytest.mark.slow
async def test_without_tap_and_sinks_it_relays_untouched_and_books_every_call(
    sim: Simulator, daemons: Daemons, session: aiohttp.ClientSession
) -> None:
    daemon = await daemons.start(sim.url, launcher=(ABLATED, "--without", "tap,sinks"))
    url = f"{daemon.relay_url}/v1/chat/completions"
    headers = {"Authorization": "Bearer xai-ablated-test-key", "Content-Type": "application/json"}
    for body in (STREAM, PLAIN):
        async with session.post(url, data=body, headers=headers) as response:
            got = await response.read()
        assert response.status == 200
        assert sim.state.requests[-1].body == body  # no include_usage injected
        assert got == sim.state.sent[-1]  # nothing stripped: the upstream's bytes
    assert b'"usage"' not in sim.state.sent[0]  # (a stream nobody asked usage of has none)
    status, metrics = await daemon.get("/metrics")
    assert status == 200
    assert b"\nxai_meter_requests_total{" not in metrics  # no metrics sink: no call counted
    assert await daemon.stop() == 0
    rows = daemons.rows()
    assert [(r["status"], r["unmetered_reason"], r["input_tokens"]) for r in rows] == [
        (200, "no_usage", None),
        (200, "no_usage", None),
    ]


@pytest.mark.slow
def test_an_unknown_part_is_refused_naming_the_known_ones() -> None:
    result = subprocess.run(
        [sys.executable, ABLATED, "--without", "tap,ledger", "serve"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "parts to switch off: tap, sinks" in result.stderr
    assert "'tap,ledger'" in result.stderr
