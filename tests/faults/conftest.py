"""The fault-injection suite's fixtures: daemons as real processes, a tagging load driver, a
small tmpfs to fill, an upstream that misbehaves. The classes they build live in
`daemon.testing` (its last region), so that tests can name them.

Every test in tests/faults/ carries the ``faults`` marker: ``python -m pytest -m faults`` runs
the suite alone. Everything is loopback; every wait is bounded.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from daemon.testing import Daemons, Driver, OddUpstream


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """``tmpfs("8m", readonly=False)``: a fresh tmpfs of that size, mounted in the test's temp
    dir, read-only if asked (the suite
    runs as root, as CI does); unmounted at teardown, after every daemon ended (`daemons`
    depends on this fixture, so it is torn down first)."""
    mounted: list[Path] = []

    def mount(size: str, readonly: bool = False) -> Path:
        where = tmp_path / f"tmpfs{len(mounted)}"
        where.mkdir()
        options = f"size={size},mode=0755" + (",ro" if readonly else "")
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert done.returncode == 0, f"mount -t tmpfs (the suite needs root): {done.stderr}"
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        done = subprocess.run(["umount", str(where)], capture_output=True, timeout=10)
        if done.returncode != 0:  # still held by something: detach it now, freed when let go
            subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=10)


@pytest.fixture
async def daemons(tmp_path: Path, tmpfs: Callable[..., Path]) -> AsyncIterator[Daemons]:
    """Starts daemon processes for the test (`Daemons.start`); any still running at teardown
    is killed by its pid and reaped."""
    factory = Daemons(tmp_path)
    try:
        yield factory
    finally:
        for process in factory.started:
            await process.kill()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session without a connection cap: every call of a test may be open at once."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as client:
        yield client


@pytest.fixture
def driver(session: aiohttp.ClientSession, request: pytest.FixtureRequest) -> Driver:
    """A `Driver` whose tags start with the test's name (cut to 32 characters)."""
    return Driver(session, request.node.name.removeprefix("test_")[:32])


@pytest.fixture
async def odd_upstream() -> AsyncIterator[OddUpstream]:
    """A running `OddUpstream` on a free loopback port."""
    odd = OddUpstream()
    await odd.start()
    try:
        yield odd
    finally:
        await odd.close()
