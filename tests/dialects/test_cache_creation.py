"""Messages usage names cache reads and writes in Anthropic's standard terms (xai-api.md,
"Anthropic-compatible"): reads are `cached_input_tokens` (``cache_read_input_tokens``), writes
`cache_creation_input_tokens`, their 1-hour part `cache_creation_1h_input_tokens`."""

from __future__ import annotations

from daemon.dialects.messages import messages_usage
from daemon.record import Usage


def test_anthropic_split_is_read() -> None:
    u = {
        "input_tokens": 12,
        "output_tokens": 7,
        "cache_read_input_tokens": 30,
        "cache_creation_input_tokens": 50,
        "cache_creation": {"ephemeral_5m_input_tokens": 20, "ephemeral_1h_input_tokens": 30},
    }
    got = messages_usage(u)
    assert got == Usage(
        input_tokens=92,
        cached_input_tokens=30,
        cache_creation_input_tokens=50,
        cache_creation_1h_input_tokens=30,
        output_tokens=7,
    )
    assert got.cache_read_input_tokens == 30


def test_total_without_split_is_all_five_minute_writes() -> None:
    u = {"input_tokens": 5, "output_tokens": 1, "cache_creation_input_tokens": 40}
    assert messages_usage(u) == Usage(
        input_tokens=45, cache_creation_input_tokens=40, output_tokens=1
    )


def test_split_without_total_adds_up() -> None:
    u = {
        "input_tokens": 5,
        "output_tokens": 1,
        "cache_creation": {"ephemeral_5m_input_tokens": 6, "ephemeral_1h_input_tokens": 4},
    }
    assert messages_usage(u) == Usage(
        input_tokens=15,
        cache_creation_input_tokens=10,
        cache_creation_1h_input_tokens=4,
        output_tokens=1,
    )


def test_xai_2026_counts_cache_reads_outside_input_too() -> None:
    """xai-api.md: "2026 docs: input_tokens excludes cache reads (Anthropic semantics)"."""
    u = {
        "input_tokens": 30,
        "output_tokens": 20,
        "cache_read_input_tokens": 20,
        "cache_creation_input_tokens": 0,
    }
    assert messages_usage(u) == Usage(input_tokens=50, cached_input_tokens=20, output_tokens=20)
