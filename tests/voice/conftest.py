"""A daemon whose wall clock is pinned, so calls are priced by the catalog entry of a known day."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from tenacity import wait_none

from daemon import simulator
from daemon.app import Clocks, Daemon
from daemon.testing import RunningDaemon, make_settings

#: 2026-11-01T00:00:00Z: TTS at $15 per 1M characters, STT at $0.10 / $0.20 per hour.
NOV_2026 = 1793491200.0


@pytest.fixture
async def meter_at(tmp_path: Path, sim: simulator.Simulator) -> AsyncIterator[Callable[..., Any]]:
    """``await meter_at(epoch, **settings)``: a daemon on the simulator whose calls start at
    ``epoch`` (the wall clock stands still; durations still run)."""
    started: list[Daemon] = []

    async def start(at: float = NOV_2026, **extra: Any) -> RunningDaemon:
        daemon = Daemon(
            make_settings(tmp_path, sim.url, **extra),
            clocks=Clocks(wall=lambda: at),
            retry_wait=wait_none(),
        )
        await daemon.start()
        started.append(daemon)
        return RunningDaemon(daemon)

    try:
        yield start
    finally:
        for daemon in started:
            await daemon.stop()
