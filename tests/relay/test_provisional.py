"""Provisional usage through the daemon, with the real SDKs against the simulator: a stream that
ends before its final usage is unmetered (``incomplete``) with no tokens and no cost; the same
stream ended by its final usage is metered with exactly the final counts.

Every prompt is forced to 40 tokens, 8 of them cached, and every reply cut to 5 tokens by the
request's limit (grok-3 does not reason), so the final counts are 40 / 8 / 5.
"""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

from daemon.testing import TEST_KEY, RunningDaemon, stream_cut_errors

FORCED = {"X-Sim-Prompt-Tokens": "40", "X-Sim-Cached-Tokens": "8"}
USER: Any = [{"role": "user", "content": "Count the tokens, please."}]


def counts(row: dict[str, Any]) -> tuple[Any, ...]:
    return (
        row["input_tokens"],
        row["cached_input_tokens"],
        row["output_tokens"],
        row["cost_ticks"],
        row["metered"],
        row["unmetered_reason"],
    )


UNBOOKED = (None, None, None, None, 0, "incomplete")


def ant(meter: RunningDaemon) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=meter.url, api_key=TEST_KEY, max_retries=0)


def oai(meter: RunningDaemon) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=meter.base_url, api_key=TEST_KEY, max_retries=0)


async def test_messages_stream_final_usage_is_metered(meter: RunningDaemon) -> None:
    async with (
        ant(meter) as client,
        client.messages.stream(
            model="grok-3", max_tokens=5, messages=USER, extra_headers=FORCED
        ) as stream,
    ):
        final = await stream.get_final_message()
    # 2026 xAI (and Anthropic) count cache reads outside input_tokens: 32 + 8 read = 40
    usage = final.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.output_tokens) == (32, 8, 5)
    [row] = await meter.rows(1)
    assert counts(row)[:3] + counts(row)[4:] == (40, 8, 5, 1, None)


async def test_messages_stream_without_message_delta_usage_is_incomplete(
    meter: RunningDaemon,
) -> None:
    """xAI's message_start says 0/0; the stream ends cleanly but without its message_delta:
    before the fix this was booked as a metered call of 0 tokens."""
    async with (
        ant(meter) as client,
        client.messages.stream(
            model="grok-3",
            max_tokens=5,
            messages=USER,
            extra_headers={**FORCED, "X-Sim-Usage": "provisional"},
        ) as stream,
    ):
        final = await stream.get_final_message()
    assert final.usage.output_tokens == 0  # all the client ever saw: the provisional 0/0
    [row] = await meter.rows(1)
    assert counts(row) == UNBOOKED and row["error"] is None
    assert meter.metric("xai_meter_unmetered_total", endpoint="messages", reason="incomplete") == 1


async def test_messages_stream_cut_after_message_start_is_incomplete(
    meter: RunningDaemon,
) -> None:
    raised = None
    try:
        async with (
            ant(meter) as client,
            client.messages.stream(
                model="grok-3",
                max_tokens=5,
                messages=USER,
                extra_headers={**FORCED, "X-Sim-Cut-After": "3"},
            ) as stream,
        ):
            await stream.get_final_message()
    except Exception as exc:  # the SDK passes its HTTP library's own error through
        raised = exc
    assert raised is not None
    [row] = await meter.rows(1)
    assert counts(row) == UNBOOKED and row["error"] == "upstream_stream_cut"


async def test_chat_cumulative_stream_cut_before_done_is_incomplete(meter: RunningDaemon) -> None:
    """Nov 2024 style: usage on every chunk. Cut after 3 chunks, the usage seen was a running
    count: before the fix it was booked as final."""
    client = oai(meter)
    with pytest.raises(stream_cut_errors()):
        stream = await client.chat.completions.create(
            model="grok-3",
            messages=USER,
            max_tokens=5,
            stream=True,
            extra_headers={**FORCED, "X-Sim-Usage": "every", "X-Sim-Cut-After": "3"},
        )
        async for _ in stream:
            pass
    [row] = await meter.rows(1)
    assert counts(row) == UNBOOKED
    await client.close()


async def test_chat_cumulative_stream_to_done_is_metered(meter: RunningDaemon) -> None:
    client = oai(meter)
    stream = await client.chat.completions.create(
        model="grok-3",
        messages=USER,
        max_tokens=5,
        stream=True,
        extra_headers={**FORCED, "X-Sim-Usage": "every"},
    )
    async for _ in stream:
        pass
    [row] = await meter.rows(1)
    assert counts(row)[:3] + counts(row)[4:] == (40, 8, 5, 1, None)
    await client.close()


async def test_responses_stream_cut_before_the_terminal_event_is_incomplete(
    meter: RunningDaemon,
) -> None:
    client = oai(meter)
    with pytest.raises(stream_cut_errors()):
        async with client.responses.stream(
            model="grok-3", input="hi", extra_headers={**FORCED, "X-Sim-Cut-After": "3"}
        ) as stream:
            async for _ in stream:
                pass
    [row] = await meter.rows(1)
    assert counts(row) == UNBOOKED
    await client.close()


async def test_responses_stream_to_the_terminal_event_is_metered(meter: RunningDaemon) -> None:
    client = oai(meter)
    async with client.responses.stream(
        model="grok-3", input="hi", max_output_tokens=5, extra_headers=FORCED
    ) as stream:
        final = await stream.get_final_response()
    assert final.usage is not None
    [row] = await meter.rows(1)
    assert counts(row)[:3] + counts(row)[4:] == (40, 8, final.usage.output_tokens, 1, None)
    await client.close()
