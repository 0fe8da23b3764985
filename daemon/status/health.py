"""The daemon's health for `GET /api/health`, read from its in-memory state and metrics (no
ledger query): the ledger's writer, price refresh, upstream errors since start, uptime, version.

Reads plain attributes and collects a few single metrics; safe from a worker thread, as a
Prometheus scrape is (`daemon.metrics.loop`: the loop metrics export a snapshot).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client.registry import Collector

from daemon import __version__

if TYPE_CHECKING:
    from daemon.app import Daemon

# Error kinds (`daemon.record.CallError`) that say the upstream failed us, not the client.
UPSTREAM_ERRORS = frozenset(
    {"upstream_unreachable", "upstream_timeout", "upstream_stream_cut", "upstream_pool_exhausted"}
)


def _value(metric: Collector) -> float:
    """The one sample of an unlabelled prometheus_client metric (a counter's ``_total``)."""
    for family in metric.collect():
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                return float(sample.value)
    return 0.0


def _sum_by(values: Iterable[tuple[tuple[str, ...], float]], index: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for labels, value in values:
        out[labels[index]] = out.get(labels[index], 0) + int(value)
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def health(daemon: Daemon, started_at: float, now: float) -> dict[str, Any]:
    """`GET /api/health`. Fields:

    ``status``: "ok", "degraded" (the ledger cannot write), "starting" or "draining";
    ``version``; ``started_at``, ``now`` (epoch s) and ``uptime_s``;
    ``ledger``: ``healthy`` bool, ``failing_for_s``, ``queue_depth`` (rows waiting),
    ``rows_written`` and ``write_errors`` since start, ``path``;
    ``prices``: ``refresh`` (bool, pricing.refresh), ``last_success`` (epoch s, null: never),
    ``age_s`` (null: never), ``refresh_interval_s``, ``failures`` since start;
    ``upstream``: ``url``, ``errors`` (calls the upstream failed: unreachable, timeout, stream
    cut, pool exhausted), ``http_5xx`` (calls answered 5xx), ``errors_by_kind`` (every
    `CallError` kind counted since start), ``in_flight``. Counts since this process started.
    """
    m = daemon.metrics
    ledger = daemon.ledger
    last = _value(m.price_refresh_last_success)
    by_kind = _sum_by(list(m.errors.values.items()), 2)
    five_xx = sum(
        int(n) for labels, n in list(m.requests.values.items()) if labels[3].startswith("5")
    )
    if daemon.relay.draining:
        status = "draining"
    elif not daemon.ready:
        status = "starting"
    elif not ledger.healthy:
        status = "degraded"
    else:
        status = "ok"
    s = daemon.settings
    return {
        "status": status,
        "version": __version__,
        "started_at": started_at,
        "now": now,
        "uptime_s": max(now - started_at, 0.0),
        "ledger": {
            "healthy": ledger.healthy,
            "failing_for_s": ledger.unhealthy_for(),
            "queue_depth": ledger.depth(),
            "rows_written": ledger.rows_written,
            "write_errors": int(_value(m.ledger_errors)),
            "path": s.ledger.path,
        },
        "prices": {
            "refresh": s.pricing.refresh,
            "last_success": last or None,
            "age_s": max(now - last, 0.0) if last else None,
            "refresh_interval_s": s.pricing.refresh_interval,
            "failures": int(_value(m.price_refresh_failures)),
        },
        "upstream": {
            "url": str(s.upstream.base_url),
            "errors": sum(n for kind, n in by_kind.items() if kind in UPSTREAM_ERRORS),
            "http_5xx": five_xx,
            "errors_by_kind": by_kind,
            "in_flight": int(daemon.relay.in_flight),
        },
    }
