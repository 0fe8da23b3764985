"""The video dialect on its own (xai-api.md, "Video"): what a POST asks, what a poll says."""

from __future__ import annotations

from daemon.dialects.videos import (
    VideoDialect,
    VideoResultDialect,
    complete_result,
    count_image_inputs,
    parse_request_column,
    resolution_of,
)
from daemon.record import CallRecord, Unmetered
from daemon.testing import make_record


def post(kind: str, body: bytes) -> CallRecord:
    record = make_record(endpoint=f"videos.{kind}", path=f"/v1/videos/{kind}", billable=False)
    VideoDialect(kind).inspect_request(record, body)
    return record


def poll(answer: bytes, status: int = 200, request: str | None = None) -> CallRecord:
    record = make_record(
        endpoint="videos.result", method="GET", path="/v1/videos/r1", status=status,
        billable=False, video_request=request,
    )  # fmt: skip
    tap = VideoResultDialect().tap(record, "application/json", lambda: 0.0)
    assert tap.feed(answer) is None
    tap.finish(True)
    return record


def test_a_post_is_deferred_and_keeps_what_prices_its_result() -> None:
    record = post(
        "edits",
        b'{"prompt":"p","model":"grok-imagine-video-1.5","size":"1280x720",'
        b'"image":{"url":"a"},"keyframes":[{"image":{"url":"b"}},{"image":{"url":"c"}}],'
        b'"video":{"url":"v"}}',
    )
    assert (record.deferred, record.billable, record.requested_model, record.video_request) == (
        True, False, "grok-imagine-video-1.5", "edits/720p/3",
    )  # fmt: skip
    assert post("generations", b"not json").video_request == "generations//0"
    assert parse_request_column("edits/720p/3") == ("edits", "720p", 3)
    assert parse_request_column(None) == (None, None, 0)


def test_resolution_and_inputs_as_requests_say_them() -> None:
    assert [
        resolution_of(r)
        for r in (
            {"resolution": "720P"},
            {"resolution": "1080"},
            {"resolution": "4k"},
            {"size": "848x480"},
            {"size": "1696x960"},
            {"size": "wide"},
            {},
        )
    ] == ["720p", "1080p", None, "480p", None, None, None]
    assert count_image_inputs({"reference_images": [1, 2], "last_frame": {"url": "z"}}) == 3
    assert count_image_inputs({"keyframes": {"start": 1, "end": 2}, "image": None}) == 2


def test_polls_say_pending_done_failed_or_expired() -> None:
    pending = poll(b'{"status":"pending","progress":40}')
    assert (pending.job_status, pending.billable, pending.usage) == ("pending", False, None)
    assert poll(b"", status=202).job_status is None  # a 202 is not read
    failed = poll(b'{"status":"failed","error":{"code":"moderation_blocked","message":"m"}}')
    assert (failed.job_status, failed.upstream_error, failed.usage) == (
        "failed", "moderation_blocked", None,
    )  # fmt: skip
    assert poll(b'{"status":"expired"}').job_status == "expired"

    done = poll(
        b'{"status":"done","video":{"url":"u","duration":8.5},"model":"grok-imagine-video",'
        b'"usage":{"cost_in_nano_usd":425000000}}',
        request="generations/720p/1",
    )
    usage = done.usage
    assert usage is not None and (done.job_status, done.billable, done.model) == (
        "done", True, "grok-imagine-video",
    )  # fmt: skip
    assert (usage.catalog_rate, usage.video_seconds, usage.video_image_inputs) == (
        "video:720p", 8.5, 1,
    )  # fmt: skip
    assert usage.reported_cost_ticks == 4_250_000_000

    # No duration: the one quantity of the bill is missing.
    bare = poll(b'{"status":"done","video":{"url":"u"},"model":"grok-imagine-video"}')
    assert (bare.usage, bare.unmetered_reason) == (None, Unmetered.NO_USAGE)
    assert poll(b"{nope").unmetered_reason is Unmetered.MALFORMED


def test_the_carried_request_reprices_the_result() -> None:
    record = poll(b'{"status":"done","video":{"url":"u","duration":4},"model":"m"}')
    # Its POST not (yet) known: no resolution, never the default's guess.
    assert record.usage is not None and record.usage.catalog_rate == "video:unknown"
    record.video_request = "edits/1080p/2"  # what the deferred tracker carries from the POST
    complete_result(record)
    usage = record.usage
    assert usage is not None
    assert (usage.catalog_rate, usage.video_image_inputs, usage.video_input_seconds) == (
        "video:1080p", 2, 4.0,
    )  # fmt: skip
