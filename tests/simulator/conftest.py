"""Fixtures for the simulator's own tests: an openai and an aiohttp client on the simulator
(`sim` itself comes from tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest_asyncio

from daemon.simulator import Simulator


@pytest_asyncio.fixture
async def oai(sim: Simulator) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="test", max_retries=0) as c:
        yield c


@pytest_asyncio.fixture
async def http(sim: Simulator) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": "Bearer test"}
    async with aiohttp.ClientSession(base_url=sim.url, headers=headers) as session:
        yield session
