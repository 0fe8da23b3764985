"""Shared fixtures: a real simulator and a real daemon on loopback ports chosen by the OS, and
price listings in xAI's documented shape (each test gets its own deep copy)."""

from __future__ import annotations

import asyncio
import copy
import itertools
import logging
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from hypothesis import settings
from tenacity import wait_none

from daemon import logs, simulator, testing
from daemon.app import Daemon
from daemon.pricing.book import PriceSet
from daemon.pricing.listing import parse_image_models, parse_language_models
from daemon.testing import (
    DaemonFactory,
    Daemons,
    Driver,
    PgCluster,
    RunningDaemon,
    make_settings,
)

# Property tests draw the same examples on every run (the brief: deterministic tests); a
# failure is then a change's, never the luck of a seed.
settings.register_profile("deterministic", derandomize=True, print_blob=True)
settings.load_profile("deterministic")


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
async def grpc_sim(sim: simulator.Simulator) -> AsyncIterator[simulator.GrpcSimulator]:
    """The simulator's gRPC face on a free port, sharing `sim`'s state: ``.target``
    (``127.0.0.1:PORT``, xai-sdk's ``api_host``), ``.url`` (``http://...``, for
    ``grpc.upstream``), ``.state`` (the same `SimulatorState` as ``sim.state``)."""
    face = await simulator.start_grpc(state=sim.state)
    try:
        yield face
    finally:
        await face.close()


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
def start_priced(start_daemon: DaemonFactory, monkeypatch: pytest.MonkeyPatch) -> DaemonFactory:
    """Start a daemon that fetches the upstream's price listing (with a key from the
    environment), once its first prices are in force."""

    async def start(upstream: str, **extra: Any) -> RunningDaemon:
        monkeypatch.setenv("XAI_API_KEY", "xai-env-key")
        meter = await start_daemon(upstream, pricing__refresh=True, **extra)
        async with asyncio.timeout(5):
            await meter.daemon.prices.updated.wait()
        return meter

    return start


@pytest.fixture
async def meter(sim: simulator.Simulator, start_daemon: DaemonFactory) -> RunningDaemon:
    """A daemon relaying to the simulator."""
    return await start_daemon(sim.url)


# --- PostgreSQL: one throwaway cluster for the session, a fresh database per test ---------


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgCluster]:
    """Debian's PostgreSQL, started once: ``initdb`` in a temporary directory (as the
    ``postgres`` user; initdb refuses root), on a free loopback port, stopped by its pid at the
    end. Without PostgreSQL (or psycopg) a test using it is skipped, loudly; under CI=true it
    fails: CI must test the PostgreSQL ledger (.ci/run installs postgresql)."""
    cluster = PgCluster({"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"})
    missing = None
    if cluster.bin is None:
        missing = "PostgreSQL is not installed (apt-get install postgresql)"
    else:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            missing = "psycopg is not installed (pip install -e '.[test]')"
    if missing:
        testing.missing(f"{missing}: the PostgreSQL ledger is NOT tested")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


_databases = itertools.count()


@pytest.fixture
def pg_url(postgres: PgCluster) -> str:
    """The URL of a new, empty database on the session's cluster (`postgres`)."""
    return postgres.create_database(f"ledger_{next(_databases)}")


# --- price listings: xai-api.md's "Listings" shape (pricing and ledger tests) -----------

# A listing in the documented shape, with the junk a tolerant parser must survive.
_LANGUAGE_LISTING: dict[str, Any] = {
    "models": [
        {
            "id": "grok-4-fast-reasoning",
            "fingerprint": "fp_9362061f30",
            "created": 1756771200,
            "object": "model",
            "owned_by": "xai",
            "version": "1.0",
            "input_modalities": ["text", "image"],
            "output_modalities": ["text"],
            "prompt_text_token_price": 2000,
            "cached_prompt_text_token_price": 500,
            "prompt_image_token_price": 2000,
            "completion_text_token_price": 5000,
            "search_price": 250000000,
            "aliases": ["grok-4-fast", "grok-4-fast-reasoning-latest"],
        },
        {
            "id": "grok-3",
            "fingerprint": "fp_0d42a4eb3d",
            "prompt_text_token_price": 30000,
            "cached_prompt_text_token_price": 7500,
            "completion_text_token_price": 150000,
            "search_price": 250000000,
            "aliases": ["grok-3-latest", "grok-3-beta"],
        },
        {
            "id": "grok-3-mini",
            "prompt_text_token_price": 3000,
            "cached_prompt_text_token_price": 750,
            "completion_text_token_price": 5000,
            "aliases": ["grok-3-mini-latest"],
        },
        {
            "id": "grok-4-0709",
            "prompt_text_token_price": 30000,
            "cached_prompt_text_token_price": 7500,
            "completion_text_token_price": 150000,
            "long_context_threshold": 128000,
            "prompt_text_token_price_long_context": 60000,
            "cached_prompt_text_token_price_long_context": 15000,
            "completion_text_token_price_long_context": 300000,
            "context_length": 256000,
            "aliases": ["grok-4", "grok-4-latest"],
        },
        {"object": "model"},  # no id: skipped
        "not an object",  # skipped
        {"id": "   "},  # blank id: skipped
        {
            "id": "grok-odd",
            "prompt_text_token_price": "abc",
            "completion_text_token_price": -5,
            "cached_prompt_text_token_price": "1200",
            "brand_new_field": {"x": 1},
        },
    ]
}

_IMAGE_LISTING: dict[str, Any] = {
    "models": [
        {"id": "grok-imagine-image", "image_price": 200000000, "aliases": ["grok-imagine"]},
        {"id": "grok-2-image-1212", "image_price": 700000000, "aliases": ["grok-2-image"]},
    ]
}


@pytest.fixture
def language_listing() -> dict[str, Any]:
    """A ``/v1/language-models`` answer: four priced models and five entries to skip or repair."""
    return copy.deepcopy(_LANGUAGE_LISTING)


@pytest.fixture
def image_listing() -> dict[str, Any]:
    """A ``/v1/image-generation-models`` answer: two models, ``image_price`` in ticks."""
    return copy.deepcopy(_IMAGE_LISTING)


@pytest.fixture
def listing_set(
    language_listing: dict[str, Any], image_listing: dict[str, Any]
) -> Callable[..., PriceSet]:
    """``listing_set(effective_at=1000.0)``: both listings parsed into one `PriceSet` (no id)."""

    def make(effective_at: float = 1000.0) -> PriceSet:
        models = parse_language_models(language_listing) + parse_image_models(image_listing)
        return PriceSet.of(models, effective_at=effective_at)

    return make


@pytest.fixture
def two_sets(listing_set: Callable[..., PriceSet]) -> tuple[PriceSet, PriceSet]:
    """The listing in force from 1000 (id 1), then from 2000 with grok-3 cheaper (id 2)."""
    old = replace(listing_set(1000.0), id=1)
    cheaper = [
        replace(mp, input=20000) if mp.model == "grok-3" else mp for mp in old.models.values()
    ]
    new = PriceSet.of(cheaper, effective_at=2000.0, id=2)
    return old, new


# --- daemons as real processes, and a tagging load driver (tests/faults, tests/postgres) ---


@pytest.fixture
async def daemons(tmp_path: Path) -> AsyncIterator[Daemons]:
    """Starts daemon processes for the test (`Daemons.start`); any still running at teardown
    is killed by its pid and reaped."""
    factory = Daemons(tmp_path)
    try:
        yield factory
    finally:
        await factory.kill_all()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session without a connection cap: every call of a test may be open at once."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as client:
        yield client


@pytest.fixture
def driver(session: aiohttp.ClientSession, request: pytest.FixtureRequest) -> Driver:
    """A `Driver` whose tags start with the test's name (cut to 32 characters)."""
    return Driver(session, request.node.name.removeprefix("test_")[:32])
