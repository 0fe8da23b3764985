"""Fixtures for the simulator's own tests: a simulator, and an openai and an aiohttp client on it.

`sim` is its own here (not the relay suite's), so these tests depend on nothing but the simulator.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest_asyncio

from daemon import simulator
from daemon.simulator import Simulator


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[Simulator]:
    running = await simulator.start()
    try:
        yield running
    finally:
        await running.close()


@pytest_asyncio.fixture
async def oai(sim: Simulator) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="test", max_retries=0) as c:
        yield c


@pytest_asyncio.fixture
async def http(sim: Simulator) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": "Bearer test"}
    async with aiohttp.ClientSession(base_url=sim.url, headers=headers) as session:
        yield session
