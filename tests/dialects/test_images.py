"""The images dialect on its own (xai-api.md, "Images POST /v1/images/generations")."""

from __future__ import annotations

from daemon.dialects.images import DEFAULT_IMAGE_MODEL, ImageResultDialect, ImagesDialect
from daemon.record import CallRecord, Unmetered
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


def inspect(body: bytes) -> CallRecord:
    record = make_record(endpoint="images.generations", path="/v1/images/generations")
    ImagesDialect("images.generations").inspect_request(record, body)
    return record


def test_quality_and_resolution_are_read_for_the_price_tier() -> None:
    both = inspect(
        b'{"model":"grok-imagine-image-2.0","prompt":"p","quality":"Low","resolution":"2K"}'
    )
    assert (both.requested_model, both.image_tier) == ("grok-imagine-image-2.0", ("low", "2k"))
    assert inspect(b'{"prompt":"p","quality":"medium"}').image_tier == ("medium", None)
    assert inspect(b'{"prompt":"p","resolution":"1.5k"}').image_tier == (None, "1.5k")
    assert inspect(b'{"prompt":"p","quality":7}').image_tier is None  # not a string: none
    assert inspect(b'{"prompt":"p"}').image_tier is None  # pricing's defaults apply


def test_multipart_edit_fields() -> None:
    body = (
        b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
        b"Content-Type: image/png\r\n\r\n\x89PNG\r\n"
        b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\ngrok-imagine-image-2.0\r\n'
        b'--b\r\nContent-Disposition: form-data; name="quality"\r\n\r\nlow\r\n'
        b'--b\r\nContent-Disposition: form-data; name="resolution"\r\n\r\n1k\r\n--b--\r\n'
    )
    record = inspect(body)
    assert (record.requested_model, record.image_tier) == ("grok-imagine-image-2.0", ("low", "1k"))


def test_a_request_without_a_model_bills_the_default_model() -> None:
    record = make_record(endpoint="images.generations", path="/v1/images/generations")
    dialect = ImagesDialect("images.generations")
    dialect.inspect_request(record, b'{"prompt":"a meter"}')
    tap = dialect.tap(record, "application/json", lambda: 0.0)
    assert tap.feed(b'{"data":[{"url":"u"}]}') is None
    tap.finish(True)
    assert (record.requested_model, record.model) == (None, DEFAULT_IMAGE_MODEL)
    assert DEFAULT_IMAGE_MODEL == "grok-imagine-image"


def test_a_json_body_with_leading_white_space_is_still_json() -> None:
    record = make_record(endpoint="images.generations", path="/v1/images/generations")
    ImagesDialect("images.generations").inspect_request(
        record, b'  \n{"model":"grok-imagine-image-2.0","prompt":"a gauge","quality":"low"}'
    )
    assert record.requested_model == "grok-imagine-image-2.0"
    assert record.image_tier == ("low", None)


# --- deferred images (xai-api.md "Images": `"deferred": true`, then GET /v1/images/{id}) ------


def test_a_deferred_post_notes_its_request_id_and_bills_nothing() -> None:
    record = make_record(endpoint="images.generations", path="/v1/images/generations")
    dialect = ImagesDialect("images.generations")
    dialect.inspect_request(record, b'{"model":"grok-imagine-image","prompt":"p","deferred":true}')
    assert (record.deferred, record.billable) == (True, False)
    tap = dialect.tap(record, "application/json", lambda: 0.0)
    tap.feed(b'{"request_id":"5f0c-img"}')
    tap.finish(True)
    assert (record.response_id, record.usage, record.unmetered_reason) == ("5f0c-img", None, None)
    assert record.model is None  # the POST bills nothing: no default model to label it by


def poll(status: int, answer: bytes) -> CallRecord:
    record = make_record(
        endpoint="images.deferred",
        method="GET",
        path="/v1/images/5f0c-img",
        status=status,
        billable=False,
    )
    dialect = ImageResultDialect()
    tap = dialect.tap(record, "application/json", lambda: 0.0)
    tap.feed(answer)
    tap.finish(True)
    return record


def test_a_done_poll_is_billed_per_image_and_other_polls_are_not() -> None:
    done = poll(200, b'{"status":"done","data":[{"url":"a"}],"usage":{"cost_in_usd_ticks":9}}')
    assert (done.job_status, done.billable) == ("done", True)
    assert done.usage is not None and (done.usage.images, done.usage.reported_cost_ticks) == (1, 9)
    assert poll(200, b'{"data":[{"url":"a"}]}').job_status == "done"  # no status: a result
    for status, answer, job in (
        (202, b"", None),
        (200, b'{"status":"pending"}', "pending"),
        (200, b'{"status":"failed","error":"moderated"}', "failed"),
        (200, b'{"status":"Expired"}', "expired"),
    ):
        record = poll(status, answer)
        assert (record.job_status, record.usage, record.billable) == (job, None, False)
        assert record.unmetered_reason is None
    empty = poll(200, b'{"status":"done"}')  # done without images: nothing to bill it by
    assert (empty.usage, empty.unmetered_reason) == (None, Unmetered.NO_USAGE)
