"""Batch API results: each one billed exactly once, however often it is fetched.

A results page (`daemon.dialects.batches`) hands the meter one derived record per result it
holds (``batches.result``, keyed by the batch id in ``linked_id`` and the ``batch_request_id``
in ``response_id``). `BatchResults.admit` lets through only the results not seen before: a page
fetched again, or a result fetched again through ``GET .../results/{batch_request_id}``, makes
no row and bills nothing. The keys seen are kept in memory (a set per batch: about 100 bytes a
result) and reloaded from the ledger at start (`daemon.ledger.store.load_batch_results`), so a
restart bills nothing again either; the ledger's unique index on the same key (migration m013)
is the last guard. A result deleted by retention (``ledger.retention_days``) is forgotten at the
next start: fetched again after that, it would be billed again.
"""

from __future__ import annotations

from collections.abc import Iterable

from daemon.record import CallRecord


class BatchResults:
    """The batch results already billed, by batch id; `admit` is the meter's gate for them."""

    def __init__(self) -> None:
        self._seen: dict[str, set[str]] = {}

    def load(self, keys: Iterable[tuple[str, str]]) -> None:
        """Remember results billed before: (batch id, batch_request_id) pairs."""
        seen = self._seen
        for batch_id, request_id in keys:
            found = seen.get(batch_id)
            if found is None:
                seen[batch_id] = {request_id}
            else:
                found.add(request_id)

    def count(self) -> int:
        """How many results are remembered."""
        return sum(len(ids) for ids in self._seen.values())

    def admit(self, derived: list[CallRecord]) -> list[CallRecord]:
        """The records of ``derived`` to meter: each result not seen before, once (a page may
        even repeat one). A record without both keys is let through (it bills nothing that
        could be fetched again under the same key)."""
        admitted = []
        seen = self._seen
        for record in derived:
            batch_id, request_id = record.linked_id, record.response_id
            if batch_id is None or request_id is None:
                admitted.append(record)
                continue
            found = seen.get(batch_id)
            if found is None:
                seen[batch_id] = {request_id}
            elif request_id in found:
                continue
            else:
                found.add(request_id)
            admitted.append(record)
        return admitted
