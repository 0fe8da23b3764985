"""Config price overrides: USD to ticks exactly; every mistake names the model and field."""

from __future__ import annotations

from typing import Any

import pytest

from daemon.pricing.book import PriceBook
from daemon.pricing.model import ModelPrice
from daemon.pricing.overrides import (
    OverrideError,
    parse_overrides,
    usd_per_1m_to_ticks,
    usd_to_ticks,
)


def test_override_conversion_is_exact() -> None:
    assert usd_per_1m_to_ticks(3) == 30000
    assert usd_per_1m_to_ticks(0.2) == 2000
    assert usd_per_1m_to_ticks(0.75) == 7500
    assert usd_per_1m_to_ticks(0.0001) == 1
    assert usd_per_1m_to_ticks("1.2345") == 12345
    assert usd_to_ticks(0.02) == 200000000
    assert usd_to_ticks(0.025) == 250000000
    parsed = parse_overrides(
        {
            "Grok-X": {
                "image": 0.07,
                "search": 0.025,
                "cached_input": 0.05,
                "long_context_threshold": 128000,
                "output_long_context": 30,
            }
        }
    )
    assert parsed == {
        "grok-x": ModelPrice(
            "Grok-X",
            image=700000000,
            search=250000000,
            cached_input=500,
            long_context_threshold=128000,
            output_long=300000,
            source="override",
        )
    }


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ({"grok-3": {"input": 0.00001}}, ["grok-3.input", "0.1", "whole number"]),
        ({"grok-3": {"output": 1.23456}}, ["grok-3.output", "whole number"]),
        ({"grok-3": {"image": 1e-11}}, ["grok-3.image", "whole number of ticks"]),
        ({"grok-3": {"input": -1}}, ["grok-3.input", "0 or more"]),
        ({"grok-3": {"input": True}}, ["grok-3.input"]),
        ({"grok-3": {"input": "three"}}, ["grok-3.input"]),
        ({"grok-3": {"inptu": 3}}, ["grok-3.inptu", "Did you mean input"]),
        ({"grok-3": {"long_context_threshold": 1.5}}, ["grok-3.long_context_threshold"]),
        ({"grok-3": 3}, ["grok-3"]),
        ({"grok-3": {"aliases": "x"}}, ["grok-3.aliases"]),
    ],
)
def test_override_errors_name_model_and_field(table: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(OverrideError) as err:
        PriceBook(overrides=table)
    for w in words:
        assert w in str(err.value)
