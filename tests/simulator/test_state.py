"""What the simulator records of each request and response, for tests to inspect."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest

from daemon.simulator import Simulator
from daemon.testing import USER_MESSAGES

BOUND = 3.0  # seconds: no wait in this file may take longer

USER: Any = USER_MESSAGES


@pytest.mark.asyncio
async def test_requests_are_recorded(oai: openai.AsyncOpenAI, sim: Simulator) -> None:
    task = asyncio.create_task(oai.chat.completions.create(model="grok-3", messages=USER))
    recorded = await sim.state.wait_for_requests(1, within=BOUND)
    await task
    assert sim.port > 0 and sim.url.endswith(f":{sim.port}")
    first = recorded[0]
    assert (first.method, first.path) == ("POST", "/v1/chat/completions")
    assert first.headers["Authorization"] == "Bearer test"
    assert first.json()["messages"] == USER
    assert sim.state.requests_to("/v1/chat/completions") == [first]
    answer = await oai.chat.completions.with_raw_response.create(
        model="grok-3", messages=USER, extra_query={"limit": "5"}
    )
    assert sim.state.requests[-1].query == "limit=5"
    assert answer.http_response.content == sim.state.sent[-1]  # byte for byte
