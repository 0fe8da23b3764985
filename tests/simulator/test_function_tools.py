"""Function ``tool_calls`` in chat answers (xai-api.md "Chat completions": function tools work),
through the openai SDK, streamed and not, with exact tokens and ticks."""

from __future__ import annotations

from typing import Any

import openai
import orjson
import pytest

from daemon.testing import cost_by_hand

TOOLS: Any = [
    {"type": "function", "function": {"name": "read_meter", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "reset_meter", "parameters": {"type": "object"}}},
]
ASK: Any = [{"role": "user", "content": "Please read the meter in the north hall now"}]
# the query is the last message's first six words; a call costs 1 token (its name) plus one
# per space-separated piece of the arguments
ARGUMENTS = '{"query":"Please read the meter in the"}'
CALL_TOKENS = 1 + len(ARGUMENTS.split(" "))  # 1 + 6 = 7


@pytest.mark.asyncio
async def test_function_call_answer(oai: openai.AsyncOpenAI) -> None:
    reply = await oai.chat.completions.create(
        model="grok-4.20-0309-non-reasoning",
        messages=ASK,
        tools=TOOLS,
        extra_headers={"X-Sim-Cached-Tokens": "0"},
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    call: Any = calls[0]
    assert call.type == "function" and call.id.startswith("call_")
    assert (call.function.name, call.function.arguments) == ("read_meter", ARGUMENTS)
    u = reply.usage
    assert u is not None and u.completion_tokens == CALL_TOKENS == 7
    assert u.model_dump()["cost_in_usd_ticks"] == cost_by_hand(
        12500, 2000, 25000, u.prompt_tokens, 0, 7
    )

    named = await oai.chat.completions.create(
        model="grok-4.20-0309-non-reasoning",
        messages=ASK,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "reset_meter"}},
    )
    named_calls: Any = named.choices[0].message.tool_calls
    assert named_calls[0].function.name == "reset_meter"

    for messages, tool_choice in (
        (
            [
                *ASK,
                {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                {"role": "tool", "tool_call_id": call.id, "content": "42 kWh"},
            ],
            "auto",
        ),
        (ASK, "none"),
    ):
        text = await oai.chat.completions.create(
            model="grok-4.20-0309-non-reasoning",
            messages=messages,
            tools=TOOLS,
            tool_choice=tool_choice,
        )
        assert text.choices[0].finish_reason == "stop" and text.choices[0].message.content
        assert text.choices[0].message.tool_calls is None


@pytest.mark.asyncio
async def test_function_call_stream(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.chat.completions.create(
        model="grok-4.7",  # a reasoning model: thoughts first, then the call
        messages=ASK,
        tools=TOOLS,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"X-Sim-Prompt-Tokens": "50", "X-Sim-Cached-Tokens": "0"},
    )
    name = arguments = ""
    ids = set()
    finish = usage = None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                assert delta.index == 0
                if delta.id:
                    ids.add(delta.id)
                if delta.function and delta.function.name:
                    name += delta.function.name
                if delta.function and delta.function.arguments:
                    arguments += delta.function.arguments
    assert (name, arguments, finish, len(ids)) == ("read_meter", ARGUMENTS, "tool_calls", 1)
    assert orjson.loads(arguments) == {"query": "Please read the meter in the"}
    assert usage is not None and usage.completion_tokens == 7 and usage.completion_tokens_details
    reasoning = usage.completion_tokens_details.reasoning_tokens or 0
    assert reasoning > 0 and usage.total_tokens == 50 + 7 + reasoning
    assert usage.model_dump()["cost_in_usd_ticks"] == 50 * 20000 + (7 + reasoning) * 60000
