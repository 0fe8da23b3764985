"""What the upstream billed, in every dialect's usage reader: ``cost_in_usd_ticks``, or else
``cost_in_nano_usd`` (1e-9 USD = 10 ticks; xai-api.md, "Units"); ticks win when both come."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from daemon.dialects.chat import chat_usage
from daemon.dialects.coerce import reported_ticks
from daemon.dialects.images import ImagesDialect
from daemon.dialects.messages import MessagesDialect, messages_usage
from daemon.dialects.responses import responses_usage
from daemon.record import Usage
from daemon.testing import make_record

TOKENS = {
    "chat": {"prompt_tokens": 40, "completion_tokens": 9, "total_tokens": 49},
    "responses": {"input_tokens": 40, "output_tokens": 9, "total_tokens": 49},
    "messages": {"input_tokens": 40, "output_tokens": 9},
}
READERS: dict[str, Callable[[dict[str, Any]], Usage]] = {
    "chat": chat_usage,
    "responses": responses_usage,
    "messages": lambda u: messages_usage(u),
}


@pytest.mark.parametrize("dialect", list(READERS))
@pytest.mark.parametrize(
    ("cost", "ticks"),
    [
        ({"cost_in_nano_usd": 73_100}, 731_000),  # $0.0000731 either way
        ({"cost_in_usd_ticks": 731_000}, 731_000),
        ({"cost_in_usd_ticks": 731_000, "cost_in_nano_usd": 99_999}, 731_000),  # ticks win
        ({"cost_in_nano_usd": 0}, 0),  # a free call is reported as free, not as unknown
        ({}, None),
        ({"cost_in_nano_usd": "73100"}, None),  # not a number: no reported cost
    ],
)
def test_every_usage_reader_takes_nano_usd_when_ticks_are_absent(
    dialect: str, cost: dict[str, Any], ticks: int | None
) -> None:
    usage = READERS[dialect]({**TOKENS[dialect], **cost})
    assert usage.reported_cost_ticks == ticks
    assert (usage.input_tokens, usage.output_tokens) == (40, 9)


def test_a_float_nano_value_rounds_to_the_nearest_tick() -> None:
    assert reported_ticks({"cost_in_nano_usd": 12.5}) == 125
    assert reported_ticks({"cost_in_nano_usd": 7.0}) == 70
    assert reported_ticks({"cost_in_nano_usd": True}) is None


def test_images_answer_with_nano_usd() -> None:
    record = make_record(endpoint="images.generations", path="/v1/images/generations")
    dialect = ImagesDialect("images.generations")
    dialect.inspect_request(record, b'{"model":"grok-imagine-image","prompt":"a dial","n":3}')
    tap = dialect.tap(record, "application/json", lambda: 0.0)
    tap.feed(b'{"data":[{"url":"a"},{"url":"b"},{"url":"c"}],"usage":{"cost_in_nano_usd":6e7}}')
    tap.finish(True)
    assert record.usage == Usage(images=3, reported_cost_ticks=600_000_000)  # 3 x $0.02


def test_messages_stream_takes_the_cost_of_message_delta_only() -> None:
    """A cost in message_start could only be provisional (like its 0/0 usage): never booked."""
    body = (
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"m",'
        b'"model":"grok-4.3","usage":{"input_tokens":40,"output_tokens":0,'
        b'"cost_in_nano_usd":1}}}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","delta":{},'
        b'"usage":{"output_tokens":9,"cost_in_nano_usd":7225}}\n\n'
    )
    record = make_record(endpoint="messages", path="/v1/messages")
    MessagesDialect().inspect_request(record, b'{"model":"grok-4.3","stream":true}')
    tap = MessagesDialect().tap(record, "text/event-stream", lambda: 1.0)
    tap.feed(body)
    tap.finish(True)
    assert record.usage is not None and record.usage.reported_cost_ticks == 72_250
    record = make_record(endpoint="messages", path="/v1/messages")
    MessagesDialect().inspect_request(record, b'{"model":"grok-4.3","stream":true}')
    tap = MessagesDialect().tap(record, "text/event-stream", lambda: 1.0)
    tap.feed(body.replace(b',"cost_in_nano_usd":7225', b""))
    tap.finish(True)
    assert record.usage is not None and record.usage.reported_cost_ticks is None
