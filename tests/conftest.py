"""Shared fixtures: a real simulator and a real daemon on loopback ports chosen by the OS."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils
import structlog
from prometheus_client import CollectorRegistry
from tenacity import wait_none

from daemon import config, logs, simulator
from daemon.app import Daemon

TEST_KEY = "xai-test-key-0123456789abcdef"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Logs go to stderr (stdout is what CLI tests read); undo CLI set-ups after each test."""
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    yield
    logs.reset()
    for handler in logging.root.handlers[:]:
        logging.root.removeHandler(handler)


def make_settings(tmp_path: Path, upstream: str, **extra: Any) -> config.Settings:
    table: dict[str, Any] = {
        "relay": {"port": 0},
        "admin": {"port": 0},
        "upstream": {"base_url": upstream, "connect_timeout": 2, "read_timeout": 5},
        "ledger": {"path": str(tmp_path / "ledger.db"), "flush_interval": 0.0},
        "shutdown": {"grace_period": 2},
        # Off unless a test is about prices: listing fetches would interleave with the
        # requests other tests inspect on the simulator.
        "pricing": {"refresh": False},
    }
    for dotted, value in extra.items():
        *sections, key = dotted.split("__")
        node = table
        for section in sections:
            node = node.setdefault(section, {})
        node[key] = value
    return config.from_mapping(table)


@pytest.fixture
async def sim() -> AsyncIterator[simulator.Simulator]:
    s = await simulator.start()
    try:
        yield s
    finally:
        await s.close()


class RunningDaemon:
    """A daemon started in the test's loop, with helpers to read what it recorded."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.registry: CollectorRegistry = daemon.registry

    @property
    def base_url(self) -> str:
        return self.daemon.relay_url + "/v1"

    @property
    def url(self) -> str:
        return self.daemon.relay_url

    @property
    def admin_url(self) -> str:
        return self.daemon.admin_url

    async def rows(self, count: int, within: float = 5.0) -> list[dict[str, Any]]:
        """All ledger rows, once at least `count` have been written (awaits; never sleeps)."""
        async with asyncio.timeout(within):
            await self.daemon.ledger.wait_written(count)
        db = sqlite_utils.Database(self.daemon.settings["ledger.path"])
        try:
            return list(db.query("select * from calls order by started_at, id"))
        finally:
            db.close()

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)


DaemonFactory = Callable[..., Awaitable[RunningDaemon]]


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
