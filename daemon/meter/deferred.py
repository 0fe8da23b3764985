"""Deferred requests: billed when the result arrives, once, and linked to the request.

One machinery for every kind of deferred job (`DeferredKind`): chat completions
(``"deferred": true`` → ``GET /v1/chat/deferred-completion/{id}``), images (``"deferred": true``
on ``POST /v1/images/generations`` → ``GET /v1/images/{id}``) and any other kind added to
`DEFERRED_KINDS` (video jobs poll ``GET /v1/videos/{id}`` the same way). xai-api.md, "Chat
completions", "Images" and "Video" give the shapes.

The POST answers ``{"request_id"}``: its row is ``pending`` (the dialect notes the id as the
``response_id`` and bills nothing). Polls answering 202, or 200 with a job ``status`` of
``pending``, are relayed and recorded, unbilled. The poll that first brings the result (a chat
200; an image or video 200 whose ``status`` is ``done``) is billed, linked to the POST
(``linked_id``, ``deferred_ms`` = POST to result) and the POST row becomes ``completed``. A job
that says ``failed`` or ``expired`` bills nothing, and its POST row says so. A result seen again
is not billed again (``duplicate``). A request with no result within `RESULT_TTL` becomes
``expired``. State is in memory (dict lookups per call) and reloaded from the ledger at start,
so a restart between the POST and its result still links and bills the result once.

The dialects say what a poll brought: ``record.status`` and, for jobs that report one,
``record.job_status`` (done | pending | failed | expired); the usage of a done job.

gRPC is the same story under other names (xai-api.md, "gRPC API"): ``Chat/StartDeferredCompletion``
and ``Video/GenerateVideo|ExtendVideo`` answer the request id (endpoints ``chat.completions``,
``videos.generations|extensions``); ``Chat/GetDeferredCompletion`` and ``Video/GetDeferredVideo``
are the polls (``chat.deferred``, ``videos.result``), every one an OK status whose
``DeferredStatus`` gives ``job_status``, with the id in the request message
(``deferred_request_id``) rather than the path. Ids are shared across both transports: a job
started over gRPC and fetched over REST links all the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Final

import structlog

from daemon.dialects import videos
from daemon.ledger import store
from daemon.ledger.writer import LedgerOp
from daemon.record import CallRecord, DeferredState

log = structlog.get_logger("xai_meter.deferred")

RESULT_TTL = 24 * 3600.0  # xAI keeps a deferred result for 24 hours
_DONE_LIMIT = 100_000


@dataclass(frozen=True, slots=True)
class DeferredKind:
    """One kind of deferred job: the endpoints whose deferred POST starts one (``requests``)
    and the endpoint of its poll (``result``), as the dialects name them (`daemon.dialects`).
    ``name`` keys its request ids apart from other kinds'. ``carry`` names `CallRecord`
    attributes the result takes from its POST when it has none of its own (what the request
    said that prices the result: an image's model and quality x resolution, a video's
    ``video_request``); after a restart they come from the POST's row
    (`daemon.ledger.store.record_from_row`), so each must be one that function restores.
    ``complete``, when set, runs on a result after the carry and before pricing: it finishes
    what the carried values change (a video result's usage, priced by the POST's resolution and
    input images)."""

    name: str
    requests: tuple[str, ...]
    result: str
    carry: tuple[str, ...] = ()
    complete: Callable[[CallRecord], None] | None = None


#: Every kind the tracker follows. To add one: a dialect for its POST that sets
#: ``record.deferred`` and notes the request id as ``response_id`` (billing nothing), and one
#: for its poll that sets ``record.job_status`` and, when done, the usage; then a line here.
DEFERRED_KINDS: Final[tuple[DeferredKind, ...]] = (
    DeferredKind("chat", ("chat.completions",), "chat.deferred"),
    DeferredKind(
        "image",
        ("images.generations", "images.edits"),
        "images.deferred",
        carry=("requested_model", "image_tier"),  # a result names neither; they price it
    ),
    DeferredKind(
        "video",
        ("videos.generations", "videos.edits", "videos.extensions"),
        videos.RESULT_ENDPOINT,
        carry=("video_request",),
        complete=videos.complete_result,
    ),
)

# A job status that ends it without a result: what its POST row becomes.
_ENDED: Final = {"failed": DeferredState.FAILED, "expired": DeferredState.EXPIRED}


@dataclass(frozen=True, slots=True)
class Pending:
    """A deferred POST awaiting its result: its call id, start (epoch seconds) and the values of
    its kind's ``carry`` attributes."""

    call_id: str
    started_at: float
    carried: tuple[tuple[str, object], ...] = ()


class DeferredTracker:
    """The deferred sink: keeps each deferred POST by (kind, request id) until its result, then
    links the result to it and has the ledger mark it completed (or failed, or expired). A
    result seen again is not billed (``duplicate``); a request with no result within
    `RESULT_TTL` expires (`expire`)."""

    def __init__(
        self,
        submit_op: Callable[[LedgerOp], None],
        kinds: Iterable[DeferredKind] = DEFERRED_KINDS,
    ) -> None:
        self._submit_op = submit_op
        self._by_request: dict[str, DeferredKind] = {}
        self._by_result: dict[str, DeferredKind] = {}
        for kind in kinds:
            self._by_result[kind.result] = kind
            for endpoint in kind.requests:
                self._by_request[endpoint] = kind
        self._pending: dict[tuple[str, str], Pending] = {}
        self._done: dict[tuple[str, str], float] = {}  # (kind, request id) billed -> when

    def kind_of(self, endpoint: str) -> DeferredKind | None:
        """The kind whose POST or poll ``endpoint`` is; None when none."""
        return self._by_request.get(endpoint) or self._by_result.get(endpoint)

    def load(self, pending: Iterable[CallRecord], done: Iterable[tuple[str, str]]) -> None:
        """State from the ledger (`daemon.ledger.store.load_deferred`): the records of pending
        POST rows (their ``response_id`` is the request id; their kind's ``carry`` attributes
        are read from them), and (endpoint, request id) of POSTs whose result was billed. Rows
        of endpoints no kind knows are skipped."""
        for record in pending:
            kind = self._by_request.get(record.endpoint)
            if kind is not None and record.response_id:
                carried = tuple((name, getattr(record, name)) for name in kind.carry)
                key = (kind.name, record.response_id)
                self._pending[key] = Pending(record.id, record.started_at, carried)
        for endpoint, request_id in done:
            kind = self._by_request.get(endpoint)
            if kind is not None:
                self._done[(kind.name, request_id)] = 0.0

    def pending_count(self) -> int:
        return len(self._pending)

    def observe(self, record: CallRecord) -> None:
        """The sink (runs before pricing, so a result seen twice is never priced twice)."""
        endpoint = record.endpoint
        kind = self._by_request.get(endpoint)
        if kind is not None:
            if record.deferred and record.status == 200 and record.response_id:
                record.deferred_state = DeferredState.PENDING
                carried = tuple((name, getattr(record, name)) for name in kind.carry)
                self._pending[(kind.name, record.response_id)] = Pending(
                    record.id, record.started_at, carried
                )
            return
        kind = self._by_result.get(endpoint)
        if kind is None or record.status != 200:
            return
        job = record.job_status
        if job is not None and job != "done" and job not in _ENDED:
            return  # still pending (a 200 that says so): nothing to link or bill
        request_id = record.deferred_request_id or record.path.rsplit("/", 1)[-1]
        key = (kind.name, request_id)
        if key in self._done:
            record.usage = None  # already billed: this is the same result again
            record.billable = False
            record.deferred_state = DeferredState.DUPLICATE
            return
        ended = _ENDED.get(job) if job is not None else None
        if ended is not None:
            record.usage = None  # a failed or expired job bills nothing
            record.billable = False
            record.deferred_state = ended
        else:
            if len(self._done) >= _DONE_LIMIT:
                self._done.clear()
            self._done[key] = record.started_at
            record.deferred_state = DeferredState.RESULT
        pending = self._pending.pop(key, None)
        if pending is None:
            return  # its POST was not seen by this ledger: bill a result all the same
        record.linked_id = pending.call_id
        for name, value in pending.carried:
            if getattr(record, name) is None:
                setattr(record, name, value)
        if kind.complete is not None and ended is None:
            kind.complete(record)
        end = record.started_at + (record.duration_ms or 0.0) / 1000.0
        record.deferred_ms = (end - pending.started_at) * 1000.0
        if ended is None:
            self._submit_op(partial(store.complete_deferred, call_id=pending.call_id))
        else:
            self._submit_op(partial(store.end_deferred, call_id=pending.call_id, state=ended.value))

    def expire(self, now: float) -> int:
        """Close requests whose result can no longer come; return how many."""
        cutoff = now - RESULT_TTL
        expired = [key for key, p in self._pending.items() if p.started_at < cutoff]
        ids = [self._pending.pop(key).call_id for key in expired]
        if ids:
            self._submit_op(partial(store.expire_deferred, call_ids=ids))
            log.info("deferred_expired", calls=len(ids))
        for key in [key for key, at in self._done.items() if at and at < cutoff]:
            del self._done[key]
        return len(ids)
