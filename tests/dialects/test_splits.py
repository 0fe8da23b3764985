"""Every dialect's stream, as the simulator really sends it, split at any byte boundaries,
meters exactly what the unsplit stream says."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon import simulator
from daemon.dialects.base import Dialect
from daemon.dialects.chat import ChatDialect, chat_usage
from daemon.dialects.messages import MessagesDialect, messages_usage
from daemon.dialects.responses import ResponsesDialect, responses_usage
from daemon.record import CallRecord, Usage
from daemon.testing import feed_in_pieces

REQUESTS = {
    "chat": (
        "/v1/chat/completions",
        {
            "model": "grok-4-fast",
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "Tell me more"}],
        },
    ),
    "responses": (
        "/v1/responses",
        {
            "model": "grok-4-fast",
            "stream": True,
            "input": "Search the news",
            "tools": [{"type": "web_search"}],
        },
    ),
    "messages": (
        "/v1/messages",
        {
            "model": "grok-3",
            "stream": True,
            "max_tokens": 64,
            "messages": [{"role": "user", "content": "Hello there"}],
        },
    ),
}
DIALECTS: dict[str, Dialect] = {
    "chat": ChatDialect(),
    "responses": ResponsesDialect(),
    "messages": MessagesDialect(),
}


async def _capture() -> dict[str, bytes]:
    sim = await simulator.start()
    bodies = {}
    try:
        async with aiohttp.ClientSession() as http:
            for name, (path, body) in REQUESTS.items():
                async with http.post(
                    sim.url + path,
                    json=body,
                    headers={"Authorization": "Bearer k", "X-Sim-Cached-Tokens": "2"},
                ) as r:
                    assert r.status == 200
                    bodies[name] = await r.read()
    finally:
        await sim.close()
    return bodies


@pytest.fixture(scope="module")
def bodies() -> dict[str, bytes]:
    return asyncio.run(_capture())


def expected_usage(name: str, body: bytes) -> Usage:
    """The usage the stream's own final event states, read without any tap."""
    events = [
        json.loads(line[6:]) for line in body.decode().splitlines() if line.startswith("data: {")
    ]
    if name == "chat":
        return chat_usage(events[-1]["usage"])
    if name == "responses":
        final = next(e for e in events if e["type"] == "response.completed")
        return responses_usage(final["response"]["usage"])
    usage = {
        **events[0]["message"]["usage"],
        **next(e for e in events if e["type"] == "message_delta")["usage"],
    }
    return messages_usage(usage)


def meter(name: str, body: bytes, cuts: list[int]) -> tuple[CallRecord, bytes]:
    path, request = REQUESTS[name]
    record = CallRecord(
        id="t",
        started_at=0.0,
        t0=0.0,
        provider="xai",
        endpoint=name,
        method="POST",
        path=path,
        status=200,
    )
    dialect = DIALECTS[name]
    dialect.inspect_request(record, json.dumps(request).encode())
    tap = dialect.tap(record, "text/event-stream", lambda: 1.0)
    return record, feed_in_pieces(tap, body, cuts)


@pytest.mark.parametrize("name", list(REQUESTS))
def test_unsplit_stream_meters_its_final_usage(bodies: dict[str, bytes], name: str) -> None:
    record, forwarded = meter(name, bodies[name], [])
    assert forwarded == bodies[name]
    assert record.usage == expected_usage(name, bodies[name])
    assert record.usage.input_tokens > 0 and record.usage.output_tokens > 0
    assert record.metered and record.model and record.response_id and record.ttft_ms == 1000.0


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
@pytest.mark.parametrize("name", list(REQUESTS))
def test_any_split_meters_exactly(bodies: dict[str, bytes], name: str, data: st.DataObject) -> None:
    body = bodies[name]
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=40))
    whole, _ = meter(name, body, [])
    split, forwarded = meter(name, body, cuts)
    assert forwarded == body
    assert whole.usage is not None and split.usage == whole.usage
    assert (split.model, split.response_id, split.metered) == (whole.model, whole.response_id, True)


def test_byte_by_byte(bodies: dict[str, bytes]) -> None:
    for name, body in bodies.items():
        record, _ = meter(name, body, list(range(len(body))))
        assert record.usage == expected_usage(name, body), name
