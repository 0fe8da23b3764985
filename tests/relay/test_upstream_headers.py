"""The upstream's response headers, read once per call: x-request-id on every row the upstream
answered, x-ratelimit-* as gauges, x-metrics-ttft-ms as a histogram beside our own TTFT
(xai-api.md, "Headers and errors")."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from daemon import simulator
from daemon.testing import TEST_KEY, RunningDaemon, make_record
from daemon.upstream import read_response_headers

MESSAGES: list[Any] = [{"role": "user", "content": "One word, please."}]
REPLY = (
    "x-ratelimit-limit-requests=600;x-ratelimit-remaining-requests=587;"
    "x-ratelimit-limit-tokens=4000000;x-ratelimit-remaining-tokens=3987654;"
    "x-metrics-ttft-ms=240"
)


async def test_headers_become_metrics_and_the_request_id_is_on_every_row(
    meter: RunningDaemon, sim: simulator.Simulator
) -> None:
    client = openai.AsyncOpenAI(base_url=meter.base_url, api_key=TEST_KEY, max_retries=0)
    ids = []
    raw = await client.chat.completions.with_raw_response.create(
        model="grok-4-fast", messages=MESSAGES, extra_headers={"X-Sim-Reply-Headers": REPLY}
    )
    ids.append(raw.headers["x-request-id"])
    async with client.chat.completions.with_streaming_response.create(
        model="grok-4-fast",
        messages=MESSAGES,
        stream=True,
        extra_headers={"X-Sim-Reply-Headers": REPLY.replace("587", "586")},
    ) as streamed:
        ids.append(streamed.headers["x-request-id"])
        async for _ in streamed.iter_bytes():
            pass
    with pytest.raises(openai.RateLimitError) as refused:
        await client.chat.completions.create(
            model="grok-4-fast", messages=MESSAGES, extra_headers={"X-Sim-Status": "429"}
        )
    ids.append(refused.value.response.headers["x-request-id"])
    await client.close()
    rows = await meter.rows(3)
    assert [row["request_id"] for row in rows] == ids and all(ids)
    model = rows[0]["model"]
    labels = {"provider": "xai", "model": model}
    assert meter.metric("xai_meter_ratelimit_limit", **labels, kind="requests") == 600
    assert meter.metric("xai_meter_ratelimit_remaining", **labels, kind="requests") == 586
    assert meter.metric("xai_meter_ratelimit_limit", **labels, kind="tokens") == 4_000_000
    assert meter.metric("xai_meter_ratelimit_remaining", **labels, kind="tokens") == 3_987_654
    assert meter.metric("xai_meter_upstream_ttft_seconds_count", **labels) == 2
    assert meter.metric("xai_meter_upstream_ttft_seconds_sum", **labels) == pytest.approx(0.48)
    assert meter.metric("xai_meter_time_to_first_token_seconds_count", **labels) == 1


def test_values_that_are_not_numbers_are_no_values() -> None:
    record = make_record()
    headers = CIMultiDictProxy(
        CIMultiDict(
            {
                "X-Request-Id": "b8e1c0de-0000-4000-8000-00000000abcd",
                "x-ratelimit-limit-requests": "nan",
                "x-ratelimit-remaining-requests": "-1",
                "x-ratelimit-remaining-tokens": "12.5e3",
                "x-metrics-ttft-ms": "soon",
            }
        )
    )
    read_response_headers(record, headers)
    assert record.request_id == "b8e1c0de-0000-4000-8000-00000000abcd"
    assert record.ratelimit == (None, None, None, 12500.0)
    assert record.upstream_ttft_ms is None


def test_no_headers_no_values() -> None:
    record = make_record()
    read_response_headers(record, CIMultiDictProxy(CIMultiDict()))
    assert (record.request_id, record.ratelimit, record.upstream_ttft_ms) == (None, None, None)
