"""A client whose base URL lacks its ``/v1``: told once, with the fix, and counted.

An OpenAI or xAI SDK pointed at ``http://127.0.0.1:8787`` (not ``.../v1``) sends
``/chat/completions``, ``/responses``, ``/models``...: paths no upstream serves, which the relay
answers with its own 404, as before. `MissingV1.notice` runs on that 404 only (never on a path
that routes): when the path would route with ``/v1`` put back, it logs one ``missing_v1``
warning per (upstream, endpoint) with the base URL to set, and counts every such call in
``xai_meter_missing_v1_total{endpoint}`` (the endpoint names of `daemon.dialects.Router`,
bounded). The path is never rewritten: a client that lacks /v1 on one call lacks it on all,
and a relay that guessed would hide the mistake until another relay did not.

The opposite mistake: an SDK that adds ``/v1`` itself (Anthropic's) with a base URL that ends in
``/v1`` sends ``/v1/v1/messages``. That path routes (it is under ``/v1/``), goes upstream and
comes back the upstream's 404, with no hint. `MissingV1.notice_doubled` runs on such an answer
only (the ``other`` dialect's tap, made once the status is 404: `daemon.dialects.OtherDialect`):
a path under ``/v1/v1/`` that routes with one ``/v1`` is logged once per (provider, endpoint) as
``doubled_v1`` with the fix, and counted in ``xai_meter_doubled_v1_total{endpoint}``. The
upstream's 404 goes back as it came.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import structlog

from daemon.dialects import Router
from daemon.record import CallRecord

log = structlog.get_logger("xai_meter.relay")

#: What the warning says to do ({base} is the base URL the client should use).
FIX = (
    "set the client's base_url to {base} (OpenAI and xAI SDKs, LangChain, most OpenAI-compatible "
    "clients); the Anthropic SDK is the exception: it adds /v1 itself, so it takes {root}"
)


#: What the doubled-/v1 warning says to do.
DOUBLED_FIX = (
    "remove the /v1 at the end of the client's base_url: its SDK adds /v1 itself (the "
    "Anthropic SDK takes http://HOST:PORT, or http://HOST:PORT/PREFIX for a prefixed upstream)"
)


class MissingV1:
    """Notices paths that lack ``/v1`` under one of `prefixes` (the upstreams' path prefixes,
    "" for the default upstream), and (on `router`'s ``other`` dialect, which it hooks) paths
    the upstream answered 404 that have it twice. ``count`` is called with the endpoint name
    of each call that lacks it, ``count_doubled`` of each that doubles it (the daemon counts
    them in metrics)."""

    def __init__(
        self,
        prefixes: Iterable[str],
        router: Router,
        count: Callable[[str], None] | None = None,
    ) -> None:
        # Longest first: /openai/chat/completions is the /openai upstream's, not the default's.
        self._prefixes = sorted(prefixes, key=len, reverse=True)
        self._router = router
        self.count: Callable[[str], None] = count or (lambda endpoint: None)
        self.count_doubled: Callable[[str], None] = lambda endpoint: None
        self._told: set[tuple[str, str]] = set()  # (prefix, endpoint): at most both tables' size
        self._told_doubled: set[tuple[str, str]] = set()  # (provider, endpoint): as bounded
        router.other.on_404 = self.notice_doubled  # upstream 404s of unknown paths only

    def notice(self, path: str, host: str) -> str | None:
        """The endpoint `path` would reach with ``/v1`` after its upstream's prefix, after
        counting it (and, the first time for that upstream and endpoint, logging the fix with
        `host`, the Host the client used); None when it is no such path. O(prefixes): the
        relay calls it only for a path that routes nowhere."""
        for prefix in self._prefixes:
            if prefix and not path.startswith(prefix + "/"):
                continue
            rest = path[len(prefix) :]
            if rest.startswith("/v1/") or rest == "/v1":
                return None  # it has its /v1: not this mistake
            endpoint = self._router.dialect("/v1" + rest).endpoint
            if endpoint == "other":
                return None  # no API path with /v1 either (a favicon, a typo)
            self.count(endpoint)
            if (prefix, endpoint) not in self._told:
                self._told.add((prefix, endpoint))
                root = f"http://{host}{prefix}"
                log.warning(
                    "missing_v1",
                    path=path,
                    endpoint=endpoint,
                    fix=FIX.format(base=f"{root}/v1", root=root),
                )
            return endpoint
        return None

    def notice_doubled(self, record: CallRecord) -> str | None:
        """The endpoint a call the upstream answered 404 meant, when its path (under its
        upstream) starts ``/v1/v1/`` and routes with one ``/v1`` less, after counting it (and,
        the first time for its provider and endpoint, logging the fix); None otherwise."""
        path = record.path
        if not path.startswith("/v1/v1/"):
            return None
        endpoint = self._router.dialect(path[3:]).endpoint
        if endpoint == "other":
            return None  # no API path with one /v1 either
        self.count_doubled(endpoint)
        if (record.provider, endpoint) not in self._told_doubled:
            self._told_doubled.add((record.provider, endpoint))
            log.warning(
                "doubled_v1",
                path=path,
                endpoint=endpoint,
                provider=record.provider,
                fix=DOUBLED_FIX,
            )
        return endpoint
