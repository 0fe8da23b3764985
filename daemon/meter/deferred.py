"""Deferred chat completions: billed when the result arrives, once, and linked to the request.

The `POST` with `"deferred": true` answers `{"request_id"}`: its row is `pending`. Polls answering
202 are relayed and recorded, unbilled. The one 200 carries the completion: it is billed, linked
to the POST (`linked_id`, `deferred_ms` = POST to result) and the POST row becomes `completed`.
A result seen again is not billed again. A request with no result within 24 h becomes `expired`.
State is in memory (dict lookups per call) and reloaded from the ledger at start.

gRPC is the same story under other names (xai-api.md, "gRPC API"): ``Chat/StartDeferredCompletion``
and ``Video/GenerateVideo|ExtendVideo`` answer the request id; ``Chat/GetDeferredCompletion`` and
``Video/GetDeferredVideo`` are the polls, billable only once they answer ``DONE``, with the id in
the request message (``deferred_request_id``) rather than the path. Ids are shared across both
transports: a job started over gRPC and fetched over REST links all the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

import structlog

from daemon.ledger import store
from daemon.ledger.writer import LedgerOp
from daemon.record import CallRecord, DeferredState

log = structlog.get_logger("xai_meter.deferred")

RESULT_TTL = 24 * 3600.0  # xAI keeps a deferred result for 24 hours
#: Endpoints whose deferred request answers a request id; endpoints that fetch a result.
STARTS = frozenset({"chat.completions", "videos.generations", "videos.extensions"})
RESULTS = frozenset({"chat.deferred", "videos.deferred"})
_DONE_LIMIT = 100_000


@dataclass(frozen=True, slots=True)
class Pending:
    """A deferred POST awaiting its result: its call id and start (epoch seconds)."""

    call_id: str
    started_at: float


class DeferredTracker:
    """The deferred sink: keeps each deferred POST by request id until its 200 result, then links
    the result to it and has the ledger mark it completed. A result seen again is not billed
    (``duplicate``); a request with no result within `RESULT_TTL` expires (`expire`)."""

    def __init__(self, submit_op: Callable[[LedgerOp], None]) -> None:
        self._submit_op = submit_op
        self._pending: dict[str, Pending] = {}
        self._done: dict[str, float] = {}  # request ids already billed -> when

    def load(self, pending: Iterable[tuple[str, str, float]], done: Iterable[str]) -> None:
        for request_id, call_id, started_at in pending:
            self._pending[request_id] = Pending(call_id, started_at)
        for request_id in done:
            self._done[request_id] = 0.0

    def pending_count(self) -> int:
        return len(self._pending)

    def observe(self, record: CallRecord) -> None:
        """The sink (runs before pricing, so a result seen twice is never priced twice)."""
        if record.deferred and record.endpoint in STARTS:
            if record.status == 200 and record.response_id:
                record.deferred_state = DeferredState.PENDING
                self._pending[record.response_id] = Pending(record.id, record.started_at)
            return
        if record.endpoint not in RESULTS or record.status != 200:
            return
        if not record.billable and record.usage is None:
            return  # a 200 that brought no result (a gRPC poll still pending): not one either
        request_id = record.deferred_request_id or record.path.rsplit("/", 1)[-1]
        if request_id in self._done:
            record.usage = None  # already billed: this is the same result again
            record.billable = False
            record.deferred_state = DeferredState.DUPLICATE
            return
        if len(self._done) >= _DONE_LIMIT:
            self._done.clear()
        self._done[request_id] = record.started_at
        record.deferred_state = DeferredState.RESULT
        pending = self._pending.pop(request_id, None)
        if pending is None:
            return  # its POST was not seen by this ledger: bill the result all the same
        record.linked_id = pending.call_id
        end = record.started_at + (record.duration_ms or 0.0) / 1000.0
        record.deferred_ms = (end - pending.started_at) * 1000.0
        self._submit_op(partial(store.complete_deferred, call_id=pending.call_id))

    def expire(self, now: float) -> int:
        """Close requests whose result can no longer come; return how many."""
        cutoff = now - RESULT_TTL
        expired = [rid for rid, p in self._pending.items() if p.started_at < cutoff]
        ids = [self._pending.pop(rid).call_id for rid in expired]
        if ids:
            self._submit_op(partial(store.expire_deferred, call_ids=ids))
            log.info("deferred_expired", calls=len(ids))
        for rid in [rid for rid, at in self._done.items() if at and at < cutoff]:
            del self._done[rid]
        return len(ids)
