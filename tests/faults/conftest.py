"""The fault-injection suite's fixtures: a small tmpfs to fill, an upstream that misbehaves,
and the suite's `daemons` ordered before the tmpfs (daemons as real processes and the tagging
load driver themselves are tests/conftest.py's). The classes they build live in
`daemon.testing` (its last region), so that tests can name them.

Every test in tests/faults/ carries the ``faults`` marker: ``python -m pytest -m faults`` runs
the suite alone. Everything is loopback; every wait is bounded.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from daemon.testing import Daemons, OddUpstream


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
def daemons(tmpfs: Callable[..., Path], daemons: Daemons) -> Daemons:
    """The suite's `daemons` (tests/conftest.py), set up after `tmpfs` so that it is torn
    down first: every daemon has ended before a tmpfs it wrote to is unmounted."""
    return daemons


@pytest.fixture
async def odd_upstream() -> AsyncIterator[OddUpstream]:
    """A running `OddUpstream` on a free loopback port."""
    odd = OddUpstream()
    await odd.start()
    try:
        yield odd
    finally:
        await odd.close()
