"""Video jobs in the deferred machinery (daemon/meter/deferred.py): the POST's request carried
to its result, and its usage redone with it (``complete``), also after a restart."""

from __future__ import annotations

from typing import Any

from daemon.meter.deferred import DeferredTracker
from daemon.record import CallRecord, DeferredState, Usage
from daemon.testing import make_record


def video_post(**kw: Any) -> CallRecord:
    return make_record(
        id="post", endpoint="videos.generations", path="/v1/videos/generations",
        billable=False, deferred=True, response_id="rid", video_request="generations/720p/2",
        started_at=1000.0, **kw,
    )  # fmt: skip


def video_done() -> CallRecord:
    return make_record(
        id="done", endpoint="videos.result", method="GET", path="/v1/videos/rid",
        started_at=1010.0, duration_ms=5.0, job_status="done",
        usage=Usage(catalog_rate="video", video_seconds=6.0, reported_cost_ticks=9),
    )  # fmt: skip


def test_the_result_is_priced_as_its_post_asked() -> None:
    ops: list[Any] = []
    tracker = DeferredTracker(ops.append)
    tracker.observe(video_post())
    done = video_done()
    tracker.observe(done)
    usage = done.usage
    assert usage is not None and (done.linked_id, done.deferred_state) == (
        "post", DeferredState.RESULT,
    )  # fmt: skip
    assert (done.video_request, usage.catalog_rate, usage.video_image_inputs) == (
        "generations/720p/2", "video:720p", 2,
    )  # fmt: skip
    assert (usage.video_seconds, usage.reported_cost_ticks) == (6.0, 9)
    assert len(ops) == 1


def test_after_a_restart_the_request_comes_back_from_the_posts_row() -> None:
    tracker = DeferredTracker(lambda op: None)
    tracker.load([video_post(deferred_state=DeferredState.PENDING)], [])
    done = video_done()
    tracker.observe(done)
    assert done.usage is not None and done.usage.catalog_rate == "video:720p"
    assert (done.linked_id, done.video_request) == ("post", "generations/720p/2")
