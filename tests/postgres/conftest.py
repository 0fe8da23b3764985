"""Fixtures of the PostgreSQL ledger's tests: daemons as real processes (`Daemons`, each
killed by its pid at teardown if still running), and a tagging load driver. The cluster and a
fresh database per test come from tests/conftest.py (``postgres``, ``pg_url``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from daemon.testing import Daemons, Driver


@pytest.fixture
async def daemons(tmp_path: Path) -> AsyncIterator[Daemons]:
    factory = Daemons(tmp_path)
    try:
        yield factory
    finally:
        for process in factory.started:
            await process.kill()


@pytest.fixture
async def driver(request: pytest.FixtureRequest) -> AsyncIterator[Driver]:
    """A `Driver` whose tags start with the test's name, on a session without a cap."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        yield Driver(session, request.node.name.removeprefix("test_")[:32])
