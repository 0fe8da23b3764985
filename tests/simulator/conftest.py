"""Fixtures for the simulator's own tests: an openai and an aiohttp client on the simulator,
xai-sdk clients (sync and async) and a bare gRPC channel on its gRPC face (`sim` and `grpc_sim`
themselves come from tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import grpc
import openai
import pytest
import pytest_asyncio
from xai_sdk import AsyncClient, Client

from daemon.simulator import GrpcSimulator, Simulator


@pytest_asyncio.fixture
async def oai(sim: Simulator) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="test", max_retries=0) as c:
        yield c


@pytest_asyncio.fixture
async def http(sim: Simulator) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": "Bearer test"}
    async with aiohttp.ClientSession(base_url=sim.url, headers=headers) as session:
        yield session


@pytest.fixture
def xai(grpc_sim: GrpcSimulator) -> Iterator[Client]:
    """The sync xai-sdk client on the gRPC face (call it from a thread: the face runs in the
    test's loop)."""
    client = Client(api_key="test", api_host=grpc_sim.target, use_insecure_channel=True)
    try:
        yield client
    finally:
        client.close()


@pytest_asyncio.fixture
async def axai(grpc_sim: GrpcSimulator) -> AsyncIterator[AsyncClient]:
    """The async xai-sdk client on the gRPC face."""
    client = AsyncClient(api_key="test", api_host=grpc_sim.target, use_insecure_channel=True)
    try:
        yield client
    finally:
        await client.close()


@pytest_asyncio.fixture
async def channel(grpc_sim: GrpcSimulator) -> AsyncIterator[grpc.aio.Channel]:
    """A bare grpc.aio channel on the gRPC face: metadata and statuses as the wire has them."""
    async with grpc.aio.insecure_channel(grpc_sim.target) as chan:
        yield chan
