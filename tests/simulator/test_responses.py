"""The Responses API: usage with reasoning, server-side tools, storage, continuation, streams."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from daemon.testing import cost_by_hand

SERVER_TOOLS: Any = [{"type": "web_search"}, {"type": "x_search"}]  # xAI's, not in the SDK types


@pytest.mark.asyncio
async def test_responses_usage_tools_store_and_continuation(oai: openai.AsyncOpenAI) -> None:
    first = await oai.responses.create(
        model="grok-4-fast",
        input="Search the news about metering",
        tools=SERVER_TOOLS,
    )
    assert first.model == "grok-4-fast-reasoning" and first.status == "completed"
    u = first.usage
    assert u is not None
    reasoning = u.output_tokens_details.reasoning_tokens
    text = first.output_text
    assert reasoning > 0 and u.output_tokens == len(text.split()) + reasoning  # includes reasoning
    assert u.total_tokens == u.input_tokens + u.output_tokens
    extra = u.model_dump()
    calls = extra["server_side_tool_usage_details"]
    assert calls["web_search_calls"] >= 1 and calls["x_search_calls"] >= 1
    assert extra["num_server_side_tools_used"] == sum(calls.values())
    fees = (calls["web_search_calls"] + calls["x_search_calls"]) * 50_000_000
    assert extra["cost_in_usd_ticks"] == fees + cost_by_hand(
        2000, 500, 5000, u.input_tokens, u.input_tokens_details.cached_tokens, u.output_tokens
    )

    fetched = await oai.responses.retrieve(first.id)
    assert fetched.usage == first.usage and fetched.output_text == text

    follow = await oai.responses.create(
        model="grok-4-fast", input="And then?", previous_response_id=first.id
    )
    assert follow.usage is not None
    history = u.input_tokens + len(text.split())
    assert follow.usage.input_tokens > history
    assert 0 < follow.usage.input_tokens_details.cached_tokens < follow.usage.input_tokens

    await oai.responses.delete(first.id)  # the SDK returns nothing; raw answer checked below
    with pytest.raises(openai.NotFoundError):
        await oai.responses.retrieve(first.id)
    raw = await oai.responses.with_raw_response.delete(follow.id)
    assert raw.http_response.json() == {"id": follow.id, "object": "response", "deleted": True}

    unstored = await oai.responses.create(model="grok-3", input="x", store=False)
    with pytest.raises(openai.NotFoundError):
        await oai.responses.retrieve(unstored.id)


@pytest.mark.asyncio
async def test_responses_stream_events_and_terminal_status(oai: openai.AsyncOpenAI) -> None:
    async with oai.responses.stream(model="grok-4", input="Stream it please") as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()
    types = [e.type for e in events]
    assert types[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert "response.output_text.delta" in types and types[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert final.usage is not None and final.model == "grok-4-0709"
    assert final.usage.total_tokens == final.usage.input_tokens + final.usage.output_tokens
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == final.output_text

    for status in ("incomplete", "failed"):
        raw = await oai.responses.create(
            model="grok-3",
            input="Stop early",
            stream=True,
            extra_headers={"X-Sim-Response-Status": status},
        )
        last: Any = [event async for event in raw][-1]
        assert last.type == f"response.{status}"
        assert last.response.status == status and last.response.usage is not None
