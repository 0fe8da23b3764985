"""Real xAI usage objects, through the dialect parsers and the price formula, reproduce what xAI
billed (`cost_in_usd_ticks`) to the tick."""

from __future__ import annotations

from typing import Any

import pytest

from daemon.dialects.chat import chat_usage
from daemon.dialects.responses import responses_usage
from daemon.pricing.cost import compute_cost
from daemon.pricing.model import ModelPrice
from daemon.record import Usage
from daemon.testing import XAI_CHAT_USAGE as XAI_USAGE  # xai-api.md's real chat sample

# (name, dialect normalizer, real usage object, prices in ticks per token, when it was billed)
BILLS: list[tuple[str, Any, dict[str, Any], ModelPrice, float]] = [
    # xai-api.md's chat sample, grok-4-fast-reasoning: reasoning outside completion_tokens.
    (
        "chat, grok-4-fast-reasoning",
        chat_usage,
        XAI_USAGE,
        ModelPrice("grok-4-fast-reasoning", input=2000, cached_input=500, output=5000),
        1764136286.0,  # any time: no tools
    ),
    # A public Responses transcript (grok-4.3 with x_search, 2026-08): three x_search calls at
    # $5 per 1,000 and tokens at $1.25 in / $0.20 cached / $2.50 out per 1M (the one set of
    # listing-shaped prices that fits); output_tokens already holds reasoning (0 here).
    (
        "responses with x_search, grok-4.3",
        responses_usage,
        {
            "input_tokens": 9212,
            "input_tokens_details": {"cached_tokens": 3072},
            "output_tokens": 3417,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 12629,
            "num_sources_used": 0,
            "num_server_side_tools_used": 3,
            "cost_in_usd_ticks": 318319000,
            "server_side_tool_usage_details": {
                "web_search_calls": 0,
                "x_search_calls": 3,
                "code_interpreter_calls": 0,
                "file_search_calls": 0,
                "mcp_calls": 0,
                "document_search_calls": 0,
                "image_generation_calls": 0,
            },
            "context_details": {"input_tokens": 7622, "output_tokens": 3219},
        },
        ModelPrice("grok-4.3", input=12500, cached_input=2000, output=25000),
        1786579200.0,  # 2026-08-13: x_search still billed per call
    ),
]


@pytest.mark.parametrize(
    ("normalize", "usage", "price", "at"), [b[1:] for b in BILLS], ids=[b[0] for b in BILLS]
)
def test_real_bill_reproduces_to_the_tick(
    normalize: Any, usage: dict[str, Any], price: ModelPrice, at: float
) -> None:
    normalized: Usage = normalize(usage)
    assert normalized.reported_cost_ticks == usage["cost_in_usd_ticks"]
    assert compute_cost(normalized, price, at=at) == usage["cost_in_usd_ticks"]
