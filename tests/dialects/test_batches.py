"""The Batch API results dialect on its own: each result of a page becomes a derived record."""

from __future__ import annotations

import orjson

from daemon.dialects.batches import BatchResultsDialect, batch_id_of
from daemon.record import CallRecord, Transport, Unmetered
from daemon.testing import XAI_CHAT_USAGE, make_record

PATH = "/v1/batches/b1/results"


def page(answer: bytes, path: str = PATH, status: int = 200) -> CallRecord:
    record = make_record(
        endpoint="batches", method="GET", path=path, status=status, billable=False,
        key_id="k_1", app="nightly", request_id="req-1", started_at=1000.0,
    )  # fmt: skip
    tap = BatchResultsDialect().tap(record, "application/json", lambda: 0.0)
    assert tap.feed(answer) is None
    tap.finish(True)
    return record


def item(request_id: str, result: object) -> dict[str, object]:
    return {"batch_request_id": request_id, "batch_result": result}


def test_each_result_is_a_record_of_its_own_saying_where_it_was_read() -> None:
    chat = {"id": "c", "model": "grok-4-fast-reasoning", "system_fingerprint": "fp_1",
            "usage": XAI_CHAT_USAGE}  # fmt: skip
    image = {"data": [{"url": "u"}] * 3, "usage": {"cost_in_usd_ticks": 300}}
    video = {"video": {"url": "u", "duration": 6}, "model": "grok-imagine-video",
             "usage": {"cost_in_usd_ticks": 1500000000}}  # fmt: skip
    body = orjson.dumps({
        "results": [
            item("a", {"response": {"chat_get_completion": chat}}),
            item("b", {"response": {"image_generation": image}}),
            item("c", {"response": {"video_generation": video}}),
            item("d", {"error": {"code": 3, "message": "bad"}}),
            item("e", {"response": {"audio_generation": {}}}),
            {"batch_result": {}},  # no id: not a result anyone can fetch again
        ],
        "pagination_token": "x",
    })  # fmt: skip
    record = page(body)
    assert record.usage is None and record.metered
    derived = record.derived or []
    assert [
        (d.endpoint, d.method, d.path, d.status, d.transport, d.key_id, d.app, d.request_id,
         d.started_at, d.linked_id, d.response_id, d.billable, d.upstream_error)
        for d in derived
    ] == [
        ("batches.result", "GET", PATH, 200, Transport.HTTP, "k_1", "nightly", "req-1", 1000.0,
         "b1", rid, rid not in ("d",), error)
        for rid, error in (("a", None), ("b", None), ("c", None), ("d", "3"), ("e", None))
    ]  # fmt: skip
    a, b, c, d, e = derived
    assert (a.model, a.fingerprint) == ("grok-4-fast-reasoning", "fp_1")
    assert a.usage is not None and (a.usage.input_tokens, a.usage.output_tokens) == (165, 127)
    assert b.model == "grok-imagine-image" and b.usage is not None
    assert (b.usage.images, b.usage.reported_cost_ticks) == (3, 300)
    assert c.usage is not None and (c.model, c.usage.catalog_rate, c.usage.video_seconds) == (
        "grok-imagine-video", "video:unknown", 6.0,  # no request beside it: no resolution
    )  # fmt: skip
    assert (d.usage, d.unmetered_reason) == (None, None)
    assert (e.usage, e.unmetered_reason) == (None, Unmetered.NO_USAGE)
    assert len({r.id for r in derived} | {record.id}) == 6


def test_one_result_bare_or_beside_its_request() -> None:
    answer = item("a", {"response": {"image_generation": {"data": [], "model": "m2"}}})
    for body in (answer, {"request": {"batch_request_id": "a"}, "result": answer}):
        record = page(orjson.dumps(body), path=f"{PATH}/a")
        [derived] = record.derived or []
        assert (derived.linked_id, derived.response_id, derived.model) == ("b1", "a", "m2")


def test_pages_that_are_not_results() -> None:
    assert page(b'{"results":[]}').derived is None
    broken = page(b"{not json")
    assert (broken.derived, broken.unmetered_reason) == (None, Unmetered.MALFORMED)
    failed = page(b'{"code":"x","error":"y"}', status=404)
    assert (failed.derived, failed.metered) == (None, True)
    assert batch_id_of("/v1/batches/b1/results/a") == "b1"
    assert batch_id_of("/v1/batches/b1/requests") is None
