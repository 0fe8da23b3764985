"""The gRPC relay's fixtures: a daemon whose gRPC listener relays to the simulator's gRPC face."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tenacity import wait_none

from daemon import simulator
from daemon.app import Daemon
from daemon.testing import DaemonFactory, RunningDaemon, make_settings


@pytest.fixture
async def start_grpc_daemon(
    tmp_path: Path, sim: simulator.Simulator, grpc_sim: simulator.GrpcSimulator
) -> AsyncIterator[DaemonFactory]:
    """``await start_grpc_daemon(**settings)``: a daemon relaying REST to `sim` and gRPC to
    `grpc_sim` (or to ``grpc__upstream=...``), its gRPC listener on a free port."""
    started: list[Daemon] = []

    async def start(**extra: Any) -> RunningDaemon:
        extra.setdefault("grpc__upstream", grpc_sim.url)
        daemon = Daemon(
            make_settings(tmp_path, sim.url, **extra), retry_wait=wait_none(), grpc_any_port=True
        )
        await daemon.start()
        started.append(daemon)
        return RunningDaemon(daemon)

    try:
        yield start
    finally:
        for daemon in started:
            await daemon.stop()


@pytest.fixture
async def grpc_meter(start_grpc_daemon: DaemonFactory) -> RunningDaemon:
    """A daemon relaying gRPC to the simulator's gRPC face."""
    return await start_grpc_daemon()
