"""The Anthropic-compatible `/v1/messages`, driven by the anthropic SDK."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from daemon.simulator import Simulator
from daemon.testing import USER_MESSAGES

USER: Any = USER_MESSAGES


@pytest.mark.asyncio
async def test_messages_create_stream_and_gone(sim: Simulator) -> None:
    async with anthropic.AsyncAnthropic(base_url=sim.url, api_key="test", max_retries=0) as client:
        message = await client.messages.create(model="grok-3-latest", max_tokens=200, messages=USER)
        assert message.model == "grok-3" and message.stop_reason == "end_turn"
        block = message.content[0]
        assert isinstance(block, anthropic.types.TextBlock)
        text = block.text
        assert message.usage.output_tokens == len(text.split())
        assert message.usage.cache_read_input_tokens == 0
        assert message.usage.cache_creation_input_tokens == 0

        async with client.messages.stream(model="grok-3", max_tokens=200, messages=USER) as stream:
            streamed = "".join([chunk async for chunk in stream.text_stream])
            final = await stream.get_final_message()
        assert streamed == text
        # the same prompt again: now partly read from the cache, which 2026 xAI counts outside
        # input_tokens (xai-api.md), so the whole prompt is input + cache reads
        read = final.usage.cache_read_input_tokens or 0
        assert read > 0 and final.usage.input_tokens + read == message.usage.input_tokens
        assert final.usage.output_tokens == message.usage.output_tokens

        short = await client.messages.create(model="grok-3", max_tokens=2, messages=USER)
        assert short.stop_reason == "max_tokens" and short.usage.output_tokens == 2

        sim.state.messages_gone = True
        with pytest.raises(anthropic.APIStatusError) as gone:
            await client.messages.create(model="grok-3", max_tokens=20, messages=USER)
        assert gone.value.status_code == 410
