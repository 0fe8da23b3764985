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
