"""Anthropic prompt-cache writes through the daemon, with the anthropic SDK, to an upstream
configured ``provider = "anthropic"`` (the simulator in Anthropic mode: cache reads and writes
outside ``input_tokens``, writes split by duration in ``usage.cache_creation``).

The prompt is forced to 1000 tokens: 100 read from the cache, 300 written for 5 minutes, 200 for
1 hour, 400 plain; the reply is cut to 5 tokens. Priced by ``[pricing.overrides]`` only (no
listing for this upstream): input $3, cached $0.30, output $15 per 1M tokens, that is 30000 /
3000 / 150000 ticks per token. Writes at the derived 1.25x / 2x input (37500 / 60000 ticks):

    400·30000 + 100·3000 + 300·37500 + 200·60000 + 5·150000 = 36,300,000 ticks

and with ``cache_write = 4.0``, ``cache_write_1h = 7.0`` (40000 / 70000 ticks):

    400·30000 + 100·3000 + 300·40000 + 200·70000 + 5·150000 = 39,050,000 ticks
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pytest

from daemon import simulator
from daemon.testing import TEST_KEY, DaemonFactory

BASE = {"input": 3.0, "cached_input": 0.3, "output": 15.0}
HEADERS = {
    "X-Sim-Prompt-Tokens": "1000",
    "X-Sim-Cached-Tokens": "100",
    "X-Sim-Cache-Write-5m": "300",
    "X-Sim-Cache-Write-1h": "200",
}


@pytest.fixture
async def anthropic_sim() -> AsyncIterator[simulator.Simulator]:
    s = await simulator.start()
    s.state.messages_input_includes_cache = False  # Anthropic's own convention
    try:
        yield s
    finally:
        await s.close()


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("prices", "ticks"),
    [
        (BASE, 36_300_000),
        ({**BASE, "cache_write": 4.0, "cache_write_1h": 7.0}, 39_050_000),
    ],
    ids=["derived", "overridden"],
)
async def test_cache_writes_are_priced_by_duration(
    sim: simulator.Simulator,
    anthropic_sim: simulator.Simulator,
    start_daemon: DaemonFactory,
    prices: dict[str, Any],
    ticks: int,
    stream: bool,
) -> None:
    meter = await start_daemon(
        sim.url,
        upstreams={
            "anthropic": {
                "base_url": anthropic_sim.url,
                "prefix": "/anthropic",
                "provider": "anthropic",
            }
        },
        pricing__overrides={"grok-3": prices},
    )
    async with anthropic.AsyncAnthropic(
        base_url=f"{meter.url}/anthropic", api_key=TEST_KEY, max_retries=0
    ) as client:
        user: Any = [{"role": "user", "content": "Cache this long prompt, please."}]
        if stream:
            async with client.messages.stream(
                model="grok-3", max_tokens=5, messages=user, extra_headers=HEADERS
            ) as s:
                msg = await s.get_final_message()
        else:
            msg = await client.messages.create(
                model="grok-3", max_tokens=5, messages=user, extra_headers=HEADERS
            )
    u = msg.usage
    assert (u.input_tokens, u.cache_read_input_tokens, u.cache_creation_input_tokens) == (
        400,
        100,
        500,
    )
    split = msg.model_dump()["usage"]["cache_creation"]  # (older SDKs keep it as a plain dict)
    assert (split["ephemeral_5m_input_tokens"], split["ephemeral_1h_input_tokens"]) == (300, 200)
    [row] = await meter.rows(1)
    assert (
        row["provider"],
        row["input_tokens"],
        row["cached_input_tokens"],
        row["cache_creation_input_tokens"],
        row["cache_creation_1h_input_tokens"],
        row["output_tokens"],
    ) == ("anthropic", 1000, 100, 500, 200, 5)
    assert (row["cost_ticks"], row["computed_cost_ticks"], row["cost_source"]) == (
        ticks,
        ticks,
        "computed",
    )
    assert row["metered"] == 1
