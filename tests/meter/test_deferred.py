"""Deferred chat completions (daemon/meter/deferred.py): a result billed once, requests expire."""

from __future__ import annotations

from typing import Any

import pytest

from daemon.meter.deferred import RESULT_TTL, DeferredTracker
from daemon.record import CallRecord, DeferredState, Usage
from daemon.testing import make_record


def _record(**kw: Any) -> CallRecord:
    return make_record(**{"id": "x", "started_at": 1000.0, "billable": False, **kw})


def test_deferred_result_seen_twice_is_billed_once() -> None:
    ops: list[Any] = []
    tracker = DeferredTracker(ops.append)
    tracker.observe(_record(id="post", deferred=True, response_id="rid"))
    results = [
        _record(
            id=f"r{i}",
            endpoint="chat.deferred",
            method="GET",
            started_at=1010.0,
            path="/v1/chat/deferred-completion/rid",
            usage=Usage(input_tokens=5),
            duration_ms=20.0,
        )
        for i in range(2)
    ]
    for r in results:
        tracker.observe(r)
    assert results[0].usage is not None and results[0].linked_id == "post"
    assert results[0].deferred_ms == pytest.approx(10_020.0)
    assert results[1].usage is None and results[1].deferred_state is DeferredState.DUPLICATE
    assert results[0].deferred_state is DeferredState.RESULT
    assert len(ops) == 1  # the POST row marked completed


def test_deferred_requests_expire_after_a_day() -> None:
    ops: list[Any] = []
    tracker = DeferredTracker(ops.append)
    tracker.observe(_record(id="old", deferred=True, response_id="a", started_at=0.0))
    tracker.observe(_record(id="new", deferred=True, response_id="b", started_at=RESULT_TTL))
    assert tracker.expire(RESULT_TTL + 1.0) == 1 and tracker.pending_count() == 1
    assert len(ops) == 1


def _image_poll(call_id: str, job: str | None, **kw: Any) -> CallRecord:
    done = Usage(images=2, reported_cost_ticks=400_000_000) if job == "done" else None
    fields: dict[str, Any] = {
        "id": call_id,
        "endpoint": "images.deferred",
        "method": "GET",
        "path": "/v1/images/img-1",
        "started_at": 1030.0,
        "job_status": job,
        "usage": done,
    }
    return _record(**{**fields, **kw})


def test_an_image_job_carries_its_posts_model_and_tier_to_the_result_billed_once() -> None:
    ops: list[Any] = []
    tracker = DeferredTracker(ops.append)
    tracker.observe(
        _record(
            id="post",
            endpoint="images.generations",
            path="/v1/images/generations",
            deferred=True,
            response_id="img-1",
            requested_model="grok-imagine-image-2.0",
            image_tier=("low", "1k"),
        )
    )
    polls = [_image_poll("p1", "pending"), _image_poll("p2", "done"), _image_poll("p3", "done")]
    for poll in polls:
        tracker.observe(poll)
    pending, done, again = polls
    assert (pending.deferred_state, pending.linked_id, pending.usage) == (None, None, None)
    assert (done.deferred_state, done.linked_id) == (DeferredState.RESULT, "post")
    assert (done.requested_model, done.image_tier) == ("grok-imagine-image-2.0", ("low", "1k"))
    assert done.deferred_ms == pytest.approx(30_000.0)
    assert (again.deferred_state, again.usage, again.billable) == (
        DeferredState.DUPLICATE,
        None,
        False,
    )
    assert len(ops) == 1 and tracker.pending_count() == 0
    # a chat result with the same request id is another kind's: not a duplicate of the image
    chat = _record(id="c", endpoint="chat.deferred", path="/v1/chat/deferred-completion/img-1")
    tracker.observe(chat)
    assert chat.deferred_state is DeferredState.RESULT


@pytest.mark.parametrize("job", ["failed", "expired"])
def test_a_job_that_ends_without_a_result_bills_nothing_and_closes_its_post(job: str) -> None:
    ops: list[Any] = []
    tracker = DeferredTracker(ops.append)
    tracker.observe(
        _record(id="post", endpoint="images.generations", deferred=True, response_id="img-1")
    )
    ended = _image_poll("p1", job, usage=Usage(images=1))
    tracker.observe(ended)
    assert (ended.usage, ended.billable, ended.linked_id) == (None, False, "post")
    assert ended.deferred_state == DeferredState(job)
    [op] = ops
    assert op.func.__name__ == "end_deferred" and op.keywords == {"call_id": "post", "state": job}
    assert tracker.pending_count() == 0


def test_state_reloaded_from_the_ledger_links_and_dedupes_by_kind() -> None:
    ops: list[Any] = []
    tracker = DeferredTracker(ops.append)
    post = _record(
        id="post",
        endpoint="images.generations",
        response_id="img-1",
        requested_model="grok-imagine-image",
    )
    tracker.load([post], [("chat.completions", "rid"), ("no.such.endpoint", "x")])
    assert tracker.pending_count() == 1
    result = _image_poll("p1", "done")
    tracker.observe(result)
    assert (result.linked_id, result.requested_model) == ("post", "grok-imagine-image")
    seen = _record(id="c", endpoint="chat.deferred", path="/v1/chat/deferred-completion/rid")
    seen.usage = Usage(input_tokens=3)
    tracker.observe(seen)
    assert (seen.deferred_state, seen.usage) == (DeferredState.DUPLICATE, None)
