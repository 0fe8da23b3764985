"""A client whose base URL lacks its ``/v1``: told once, with the fix, and counted.

An OpenAI or xAI SDK pointed at ``http://127.0.0.1:8787`` (not ``.../v1``) sends
``/chat/completions``, ``/responses``, ``/models``...: paths no upstream serves, which the relay
answers with its own 404, as before. `MissingV1.notice` runs on that 404 only (never on a path
that routes): when the path would route with ``/v1`` put back, it logs one ``missing_v1``
warning per (upstream, endpoint) with the base URL to set, and counts every such call in
``xai_meter_missing_v1_total{endpoint}`` (the endpoint names of `daemon.dialects.Router`,
bounded). The path is never rewritten: a client that lacks /v1 on one call lacks it on all,
and a relay that guessed would hide the mistake until another relay did not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import structlog

from daemon.dialects import Router

log = structlog.get_logger("xai_meter.relay")

#: What the warning says to do ({base} is the base URL the client should use).
FIX = (
    "set the client's base_url to {base} (OpenAI and xAI SDKs, LangChain, most OpenAI-compatible "
    "clients); the Anthropic SDK is the exception: it adds /v1 itself, so it takes {root}"
)


class MissingV1:
    """Notices paths that lack ``/v1`` under one of `prefixes` (the upstreams' path prefixes,
    "" for the default upstream). ``count`` is called with the endpoint name of each such
    call (the daemon counts it in a metric)."""

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
        self._told: set[tuple[str, str]] = set()  # (prefix, endpoint): at most both tables' size

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
