"""`ManagementRefresher`: every ``management.refresh_interval`` seconds, xAI's word on the
team's keys, limits and bill, as gauges; never on the hot path, never fatal.

Started by `daemon.app` only when the env var named by ``management.api_key_env`` holds a key
(`management_key`); then, each round, in this order, each fetch on its own (one failing leaves
the others' gauges as they were):

- ``validation`` (only while no ``team_id`` is known; without one nothing else can run),
- ``keys``: every API key of the team → ``xai_meter_api_key_info{key_id, api_key_id, name,
  disabled}``, ``xai_meter_api_key_limit{api_key_id, limit}`` (tpm, qpm, qps; absent when
  unset) and ``xai_meter_api_key_expiry_timestamp_seconds{api_key_id}`` (keys that expire);
  the series are rebuilt whole, so a deleted key's go away,
- ``balance``, ``spending_limits``, ``invoice``: the billing gauges,
- ``usage``: once a day, after ``management.reconcile_hour_utc``, the reconciliation
  (`daemon.management.reconcile.DailyReconciliation`: pull, store, gauges; a failure is retried
  the next round).

The key join. ``key_id`` (our salted hash of a key) ↔ xAI's ``api_key_id`` is the ledger's
``api_keys`` table, which the ``key_names`` sink fills from ``GET /v1/api-key`` answers relayed
for apps. For a key seen in traffic (a ``key_id`` label of ``xai_meter_key_requests_total``)
that the table does not name, the refresher asks the default upstream's ``GET /v1/api-key``
itself, once per key (``key_lookup``), with the key `daemon.keys.KNOWN_KEYS` holds in memory for
masking, and records the answer through the same ledger op. A key the process no longer holds
(a restart, or one of many) waits until it is seen again.

Failures: ``xai_meter_management_refresh_failures_total{what}`` counts each fetch that failed
after the client's retries; the first failure of a kind is logged (warning, the error's one
line: never the key), the next success of it logs ``management_recovered``. Each success sets
``xai_meter_management_last_success_timestamp_seconds{what}``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any

import aiohttp
import orjson
import structlog

from daemon.config import Settings
from daemon.keys import KNOWN_KEYS, KnownKeys
from daemon.ledger import store
from daemon.management.client import ApiKey, ManagementClient, ManagementError
from daemon.management.reconcile import DailyReconciliation
from daemon.metrics import Metrics

log = structlog.get_logger("xai_meter.management")

OTHER_KEY = "other"  # the key label past metrics.max_keys: no key behind it to join
#: What a round fetches, the ``what`` label of the failure counter and success timestamp.
FETCHES = ("validation", "keys", "balance", "spending_limits", "invoice", "usage", "key_lookup")


def management_key(settings: Settings, environ: Mapping[str, str] = os.environ) -> str | None:
    """The management key from the env var ``management.api_key_env`` names; None (feature
    off) when the name is empty or the variable unset, empty or only white space."""
    name = settings.management.api_key_env
    # white space around it (a key pasted from a file with CRLF ends) is no part of a key
    return (environ.get(name, "").strip() or None) if name else None


class ManagementRefresher:
    """One team's keys, limits and bill as gauges (`daemon.metrics.Metrics`), refreshed by
    `run` every ``interval`` seconds.

    ``lookup(key)`` answers ``GET /v1/api-key`` for a key as a dict (`lookup_api_key`);
    ``names()`` reads the ledger's key join ``{key_id: api_key_id}``; ``save(row)`` records a
    lookup's answer ``(key_id, name, team_id, api_key_id, at)`` in it. ``wall`` is the clock
    of the success timestamps. `refreshed` is set after each round (tests await it).
    """

    def __init__(
        self,
        client: ManagementClient,
        metrics: Metrics,
        *,
        interval: float,
        lookup: Callable[[str], Awaitable[dict[str, Any]]],
        names: Callable[[], Awaitable[dict[str, str]]],
        save: Callable[[tuple[Any, ...]], None],
        wall: Callable[[], float],
        known: KnownKeys = KNOWN_KEYS,
        reconciliation: DailyReconciliation | None = None,
    ) -> None:
        self.reconciliation = reconciliation  # the daily run, when due (``usage``)
        self.client = client
        self.metrics = metrics
        self.interval = interval
        self._lookup = lookup
        self._names = names
        self._save = save
        self._wall = wall
        self._known = known
        self._looked_up: set[str] = set()  # key ids asked about once (answered or not)
        self._failing: set[str] = set()  # kinds whose last try failed (logged once)
        failures = metrics.management_failures.values
        for what in FETCHES:  # from 0, so increase() sees the first failure of each
            failures.setdefault((what,), 0.0)
        self.refreshed = asyncio.Event()
        self.rounds = 0

    async def run(self) -> None:
        """Refresh now, then every ``interval`` seconds, until cancelled."""
        while True:
            await self.refresh()
            await asyncio.sleep(self.interval)

    async def refresh(self) -> None:
        """One round (see the module's docstring); never raises but for cancellation."""
        try:
            if not self.client.team_id and not await self._fetch("validation", self._validate):
                return
            await self._fetch("keys", self._keys)
            await self._fetch("balance", self._balance)
            await self._fetch("spending_limits", self._spending_limits)
            await self._fetch("invoice", self._invoice)
            if self.reconciliation is not None and self.reconciliation.due():
                await self._fetch("usage", self._reconcile)
        finally:
            self.rounds += 1
            self.refreshed.set()

    async def _fetch(self, what: str, step: Callable[[], Awaitable[None]]) -> bool:
        try:
            await step()
        except Exception as exc:  # a ManagementError, or a bug: either way the others go on
            self._failed(what, exc)
            return False
        self.metrics.management_last_success.set((what,), self._wall())
        if what in self._failing:
            self._failing.discard(what)
            log.info("management_recovered", what=what)
        return True

    def _failed(self, what: str, exc: Exception) -> None:
        self.metrics.management_failures.inc((what,))
        if what not in self._failing:
            self._failing.add(what)
            status = exc.status if isinstance(exc, ManagementError) else None
            log.warning(
                "management_refresh_failed",
                what=what,
                status=status,
                error=self._known.scrub(str(exc)),
                error_type=type(exc).__name__,
            )

    async def _validate(self) -> None:
        await self.client.validate()

    async def _keys(self) -> None:
        keys = await self.client.api_keys()
        joined = await self._join(keys)
        m = self.metrics
        info, limits, expiry = (
            m.api_key_info.values,
            m.api_key_limit.values,
            m.api_key_expiry.values,
        )
        info.clear()
        limits.clear()
        expiry.clear()
        for key in keys:
            disabled = "true" if key.disabled else "false"
            info[(joined.get(key.api_key_id, ""), key.api_key_id, key.name, disabled)] = 1.0
            for kind, value in (("tpm", key.tpm), ("qpm", key.qpm), ("qps", key.qps)):
                if value is not None:
                    limits[(key.api_key_id, kind)] = float(value)
            if key.expire_time is not None:
                expiry[(key.api_key_id,)] = key.expire_time

    async def _join(self, keys: list[ApiKey]) -> dict[str, str]:
        """``{api_key_id: key_id}`` for the keys seen in traffic, looking up the unnamed."""
        try:
            named = await self._names()  # key_id -> api_key_id
        except Exception as exc:  # the ledger's trouble: the info series go without key ids
            self._failed("key_lookup", exc)
            named = {}
        seen = {kid for (_provider, kid) in self.metrics.key_requests.values if kid != OTHER_KEY}
        for key_id in sorted(seen - set(named) - self._looked_up):
            key = self._known.key_of(key_id)
            if key is None:
                continue  # not held in memory (any more): wait until it is seen again
            self._looked_up.add(key_id)
            try:
                answer = await self._lookup(key)
            except Exception as exc:
                self._failed("key_lookup", exc)
                continue
            api_key_id = str(answer.get("api_key_id") or "")
            if api_key_id:
                named[key_id] = api_key_id
                row = (key_id, answer.get("name"), answer.get("team_id"), api_key_id, self._wall())
                self._save(row)
        listed = {key.api_key_id for key in keys}
        join: dict[str, str] = {}
        for key_id, api_key_id in named.items():  # a key seen in traffic wins (a new salt)
            if api_key_id in listed and (api_key_id not in join or key_id in seen):
                join[api_key_id] = key_id
        return join

    async def _balance(self) -> None:
        self.metrics.billing_prepaid_balance.set((), await self.client.prepaid_balance_usd())

    async def _spending_limits(self) -> None:
        limits = await self.client.spending_limits()
        gauge = self.metrics.billing_spending_limit.values
        gauge.clear()
        for kind in ("hard", "effective_hard", "soft", "effective"):
            value = getattr(limits, kind)
            if value is not None:
                gauge[(kind,)] = value

    async def _reconcile(self) -> None:
        assert self.reconciliation is not None  # only called with one
        await self.reconciliation.run(self.client.usage)

    async def _invoice(self) -> None:
        preview = await self.client.invoice_preview()
        self.metrics.billing_invoice_preview.set((), preview.total_usd)


async def lookup_api_key(
    session: aiohttp.ClientSession, base_url: str, key: str, request_timeout: float = 30.0
) -> dict[str, Any]:
    """``GET {base_url}/v1/api-key`` with ``key``: xAI's description of it (``api_key_id``,
    ``name``, ``team_id``, ...). Raises `ManagementError` (``endpoint`` "key_lookup"; the
    key is in no error)."""
    url = base_url.rstrip("/") + "/v1/api-key"
    headers = {"Authorization": f"Bearer {key}", "Accept-Encoding": "identity"}
    try:
        async with session.get(
            url, headers=headers, timeout=aiohttp.ClientTimeout(total=request_timeout)
        ) as resp:
            status, body = resp.status, await resp.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ManagementError("key_lookup", None, type(exc).__name__, retryable=True) from None
    if status != 200:
        raise ManagementError("key_lookup", status, "GET /v1/api-key refused")
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ManagementError("key_lookup", status, "not JSON") from None
    if not isinstance(answer, dict):
        raise ManagementError("key_lookup", status, "not a JSON object")
    return answer


def ledger_names(
    run: Callable[..., Awaitable[Any]], db: Callable[[], Any]
) -> Callable[[], Awaitable[dict[str, str]]]:
    """``names`` for `ManagementRefresher`: the ledger's key join, read in its writer thread."""

    async def names() -> dict[str, str]:
        found: dict[str, str] = await run(lambda: store.key_join(db()))
        return found

    return names


def ledger_save(submit: Callable[[Any], None]) -> Callable[[tuple[Any, ...]], None]:
    """``save`` for `ManagementRefresher`: one `store.save_key_name` op on the ledger's queue."""
    return lambda row: submit(partial(store.save_key_name, row=row))
