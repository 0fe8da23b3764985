"""Shared fixtures: a real simulator and a real daemon on loopback ports chosen by the OS."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from tenacity import wait_none

from daemon import logs, simulator
from daemon.app import Daemon
from daemon.testing import DaemonFactory, RunningDaemon, make_settings


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Logs go to stderr (stdout is what CLI tests read); undo CLI set-ups after each test."""
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    yield
    logs.reset()
    for handler in logging.root.handlers[:]:
        logging.root.removeHandler(handler)


@pytest.fixture
async def sim() -> AsyncIterator[simulator.Simulator]:
    s = await simulator.start()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def start_daemon(tmp_path: Path) -> AsyncIterator[DaemonFactory]:
    started: list[Daemon] = []

    async def start(
        upstream: str, api_key: str | None = None, ledger: Path | None = None, **extra: Any
    ) -> RunningDaemon:
        if ledger is not None:
            extra["ledger__path"] = str(ledger)
        daemon = Daemon(
            make_settings(tmp_path, upstream, **extra), api_key=api_key, retry_wait=wait_none()
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
async def meter(sim: simulator.Simulator, start_daemon: DaemonFactory) -> RunningDaemon:
    """A daemon relaying to the simulator."""
    return await start_daemon(sim.url)
