"""The simulator's price oracle: `price_ticks` reproduces a real xAI bill (xai-api.md's formula)."""

from __future__ import annotations

from daemon.simulator import SimulatorState, price_ticks


def test_price_ticks_reproduces_the_real_bill() -> None:
    state = SimulatorState()
    real = {
        "prompt_tokens": 165,
        "completion_tokens": 2,
        "total_tokens": 292,
        "prompt_tokens_details": {"cached_tokens": 156, "image_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 125},
    }
    assert price_ticks(state, "grok-4-fast-reasoning", real) == 731000
    assert price_ticks(state, "grok-4-fast", real) == 731000  # alias
    responses = {"input_tokens": 680, "output_tokens": 484, "input_tokens_details": {}}
    assert price_ticks(state, "grok-4-fast", responses) == 680 * 2000 + 484 * 5000
    long = {"prompt_tokens": 128000, "completion_tokens": 10}
    assert price_ticks(state, "grok-4", long) == 128000 * 60000 + 10 * 300000
    assert price_ticks(state, "grok-4", {**long, "prompt_tokens": 127999}) == (
        127999 * 30000 + 10 * 150000
    )
    assert price_ticks(state, "no-such-model", real) == 0
