"""The images dialect on its own (xai-api.md, "Images POST /v1/images/generations")."""

from __future__ import annotations

from daemon.dialects.images import ImagesDialect
from daemon.record import CallRecord
from daemon.testing import make_record


def images_call(answer: bytes) -> CallRecord:
    record = make_record(endpoint="images.generations", path="/v1/images/generations")
    dialect = ImagesDialect("images.generations")
    dialect.inspect_request(record, b'{"model":"grok-imagine-image","prompt":"a meter","n":2}')
    tap = dialect.tap(record, "application/json", lambda: 0.0)
    assert tap.feed(answer) is None
    tap.finish(True)
    return record


def test_an_answer_without_a_model_leaves_the_requested_one_to_price_it() -> None:
    record = images_call(b'{"data":[{"url":"u1"},{"url":"u2"}],"usage":{"cost_in_usd_ticks":7}}')
    assert (record.model, record.requested_model) == (None, "grok-imagine-image")
    usage = record.usage
    assert usage is not None and (usage.images, usage.reported_cost_ticks) == (2, 7)


def test_first_non_empty_model_wins() -> None:
    """The one setter policy (daemon.dialects.base.note_model_and_id): a model the answer names
    is taken; an empty one is no model."""
    named = images_call(b'{"data":[{"url":"u"}],"model":"grok-imagine-image-2"}')
    assert named.model == "grok-imagine-image-2"
    assert images_call(b'{"data":[{"url":"u"}],"model":""}').model is None
