"""`ManagementClient`: xAI's Management and Billing API over aiohttp, retried with tenacity.

Base URL ``https://management-api.x.ai`` [doc: docs.x.ai "Management API Reference"]; the
management key (not an API key) goes as ``Authorization: Bearer`` [doc]. Paths and shapes:

==========================  ===========================================================
``validate``                ``GET /auth/management-keys/validation`` → ``{teamId, ...}``
                            [doc: the path; the field name ``teamId`` is a guess]
``api_keys``                ``GET /auth/teams/{teamId}/api-keys`` (paginated) → ``{apiKeys:
                            [{name, apiKeyId, teamId, redactedApiKey, qps, qpm, tpm (a
                            string), aclStrings, disabled, expireTime, createTime, ...}],
                            paginationToken}`` [doc: the key object, docs.x.ai "Accounts and
                            Authorization"; guess: ``apiKeys``, and the page fields ``limit`` /
                            ``paginationToken``, named as in xAI's batch API]
``prepaid_balance_usd``     ``GET /v1/billing/teams/{teamId}/prepaid/balance`` → ``{changes[],
                            total: {val}}`` in USD cents, purchases negative [doc, obs]
``spending_limits``         ``GET .../postpaid/spending-limits`` → ``{spendingLimits: {hardSlAuto,
                            effectiveHardSl, softSl?, effectiveSl}}`` in cents [doc]
``invoice_preview``         ``GET .../postpaid/invoice/preview`` → ``{coreInvoice: {lines[],
                            totalWithCorr, prepaidCredits}, effectiveSpendingLimit, billingCycle}``,
                            amounts in cents as integer strings [doc: docs.x.ai "Billing
                            Management"; obs: a client verified on the live API]
``usage``                   ``POST .../usage`` with ``{analyticsRequest: {timeRange: {startTime,
                            endTime, timezone}, timeUnit, values, groupBy, filters}}`` →
                            ``{timeSeries: [{group[], groupLabels[], dataPoints: [{timestamp,
                            values[]}]}], limitReached}``, USD as floats [doc, obs]
==========================  ===========================================================

A cents amount may come as a number, a numeric string (int64 in proto JSON) or ``{"val": ...}``
(as the balance's ``total``): `_cents` reads all three, so a guess about one field's wrapping
costs nothing. Retries: connection errors, timeouts, 429 and 5xx are tried again (up to
``attempts`` in all, tenacity's wait between); any other answer that is not 200 raises
`ManagementError` at once. The key never appears in an error: bodies are excerpted through
`_excerpt`, which masks the key itself and anything key-shaped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Final

import aiohttp
import orjson
import structlog
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential
from tenacity.wait import WaitBaseT

from daemon.keys import MASK

log = structlog.get_logger("xai_meter.management")

TICKS_PER_USD: Final = 10_000_000_000  # xAI's cost_in_usd_ticks: 1e-10 USD
PAGE_SIZE: Final = 100  # keys asked per page [guess: xAI's batch API pages take a `limit`]
MAX_PAGES: Final = 1000  # a bound on pagination, against a token that never ends
UNIT_TYPE_GROUP: Final = "unit_type"
API_KEY_GROUP: Final = "api_key_id"

_RETRY_STATUSES: Final = frozenset({408, 425, 429})
# An error body may quote a key, redacted or whole: never let any of it into an error text.
_KEYISH = re.compile(r"\b(?:xai|sk|sk-ant)-[A-Za-z0-9*._-]{4,}")
_FRACTION = re.compile(r"(\.\d{6})\d+")  # RFC 3339 nanoseconds: fromisoformat takes 6 digits


class ManagementError(Exception):
    """A Management API call failed: ``endpoint`` (short name: validation, keys, balance,
    spending_limits, invoice, usage), ``status`` (the HTTP status, None when no answer came),
    ``retryable`` (whether another try may pass). ``str()`` is one line without the key."""

    def __init__(
        self, endpoint: str, status: int | None, detail: str, *, retryable: bool = False
    ) -> None:
        where = f"HTTP {status}" if status is not None else "no answer"
        super().__init__(f"management API {endpoint}: {where}: {detail}")
        self.endpoint = endpoint
        self.status = status
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One API key of the team as the Management API lists it [doc: docs.x.ai "Accounts and
    Authorization"]. ``qps``/``qpm`` are requests per second/minute, ``tpm`` tokens per minute
    (sent as a string, read as an int); None: no limit. Times are epoch seconds (None: unset)."""

    api_key_id: str
    name: str
    team_id: str
    redacted: str
    disabled: bool
    qps: int | None
    qpm: int | None
    tpm: int | None
    expire_time: float | None
    create_time: float | None
    acls: tuple[str, ...]

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ApiKey:
        """An ``apiKeys`` item (camelCase, as the API sends it; snake_case accepted too)."""
        return cls(
            api_key_id=str(_field(obj, "apiKeyId", "api_key_id") or ""),
            name=str(_field(obj, "name") or ""),
            team_id=str(_field(obj, "teamId", "team_id") or ""),
            redacted=str(_field(obj, "redactedApiKey", "redacted_api_key") or ""),
            disabled=bool(_field(obj, "disabled", "api_key_disabled")),
            qps=_int_or_none(_field(obj, "qps")),
            qpm=_int_or_none(_field(obj, "qpm")),
            tpm=_int_or_none(_field(obj, "tpm")),
            expire_time=_epoch(_field(obj, "expireTime", "expire_time")),
            create_time=_epoch(_field(obj, "createTime", "create_time")),
            acls=tuple(str(a) for a in _field(obj, "aclStrings", "acls") or ()),
        )


@dataclass(frozen=True, slots=True)
class BilledUsage:
    """What xAI billed one key for one unit type on one UTC day: ``usd`` as the API gives it
    (a float), ``ticks`` = ``round(usd * 1e10)``, the ledger's unit. ``unit_type`` is xAI's
    name for the billed unit (e.g. tokens of a kind, images, searches) [doc: the group name
    ``unit_type``; the values are xAI's]."""

    day: str  # "YYYY-MM-DD", UTC
    api_key_id: str
    unit_type: str
    usd: float
    ticks: int


@dataclass(frozen=True, slots=True)
class SpendingLimits:
    """The team's monthly postpaid spending limits in USD (the API gives cents) [doc]: ``hard``
    (``hardSlAuto``, set by xAI), ``effective_hard`` (``effectiveHardSl``), ``soft`` (``softSl``,
    the team's own; None when unset), ``effective`` (``effectiveSl``, the one in force)."""

    hard: float | None
    effective_hard: float | None
    soft: float | None
    effective: float | None


@dataclass(frozen=True, slots=True)
class InvoicePreview:
    """The current billing period's postpaid invoice so far [doc: "Preview postpaid invoice of
    the month"]: ``total_usd`` (``coreInvoice.totalWithCorr``, month to date),
    ``prepaid_credits_usd`` (``coreInvoice.prepaidCredits``, as signed by xAI),
    ``billing_cycle`` (as sent, e.g. ``{"year": 2026, "month": 4}``), ``effective_limit_usd``
    (``effectiveSpendingLimit``). Cents in the API, USD here."""

    total_usd: float
    prepaid_credits_usd: float | None
    billing_cycle: dict[str, Any] | None
    effective_limit_usd: float | None


def _default_wait() -> WaitBaseT:
    return wait_random_exponential(multiplier=1, max=30)


class ManagementClient:
    """xAI's Management API for one team, through a shared ``session``.

    ``base_url``: the API's origin (``https://management-api.x.ai``; the simulator's URL in
    tests). ``key``: the management key, kept only inside the ``Authorization`` header this
    client sends. ``team_id``: empty until `validate` finds it (every team call validates
    first when it is empty). ``retry_wait``: tenacity's wait between tries (tests pass
    ``tenacity.wait_none()``); ``attempts``: tries per call in all; ``timeout``: seconds per try.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        key: str,
        team_id: str = "",
        retry_wait: WaitBaseT | None = None,
        attempts: int = 3,
        *,
        timeout: float = 30.0,
    ) -> None:
        self._session = session
        self.base_url = base_url.rstrip("/")
        self._headers = {
            "Authorization": f"Bearer {key}",
            "Accept": "application/json",
            "Accept-Encoding": "identity",  # the daemon's shared session does not decompress
        }
        self._key = key  # for `_excerpt` only: masked out of every error text
        self.team_id = team_id
        self.retry_wait: WaitBaseT = retry_wait if retry_wait is not None else _default_wait()
        self.attempts = max(attempts, 1)
        self.timeout = timeout

    def __repr__(self) -> str:  # never the key
        return f"ManagementClient({self.base_url!r}, team_id={self.team_id!r})"

    # -- the endpoints ------------------------------------------------------------------

    async def validate(self) -> str:
        """``GET /auth/management-keys/validation``: the key's team id [doc: the path; guess:
        the field ``teamId``]. Sets ``self.team_id`` when it was empty. Raises
        `ManagementError` (``endpoint`` "validation"; 401/403 for a bad key)."""
        obj = await self._call("validation", "GET", "/auth/management-keys/validation")
        team = _field(obj, "teamId", "team_id") if isinstance(obj, Mapping) else None
        if not team:
            raise ManagementError("validation", 200, "the answer names no teamId")
        if not self.team_id:
            self.team_id = str(team)
        return str(team)

    async def api_keys(self) -> list[ApiKey]:
        """Every API key of the team, all pages (``limit`` = `PAGE_SIZE` per page, following
        ``paginationToken`` until it is empty or repeats; at most `MAX_PAGES`). Raises
        `ManagementError` (``endpoint`` "keys")."""
        team = await self._team()
        keys: list[ApiKey] = []
        token = ""
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            params = {"limit": str(PAGE_SIZE)}
            if token:
                params["paginationToken"] = token
            obj = _mapping(
                "keys",
                await self._call("keys", "GET", f"/auth/teams/{team}/api-keys", params=params),
            )
            items = _field(obj, "apiKeys", "api_keys", "keys") or []
            keys.extend(ApiKey.from_json(item) for item in items if isinstance(item, Mapping))
            token = str(_field(obj, "paginationToken", "nextPageToken", "next_page_token") or "")
            if not token or token in seen:
                break
            seen.add(token)
        return keys

    async def prepaid_balance_usd(self) -> float:
        """The prepaid credit left, in USD. The API sums the balance changes in ``total.val``
        (cents) with purchases negative and spend positive [doc: xai-api.md], so credit left
        is ``-total / 100``: a team with $25 of credit reads ``total.val == "-2500"`` → 25.0;
        a negative result means spend beyond the credits. Raises `ManagementError`
        (``endpoint`` "balance")."""
        team = await self._team()
        obj = _mapping(
            "balance",
            await self._call("balance", "GET", f"/v1/billing/teams/{team}/prepaid/balance"),
        )
        cents = _cents(_field(obj, "total"))
        if cents is None:
            raise ManagementError("balance", 200, "the answer has no total")
        return -cents / 100

    async def spending_limits(self) -> SpendingLimits:
        """The monthly postpaid spending limits, USD (cents in the API) [doc]. Raises
        `ManagementError` (``endpoint`` "spending_limits")."""
        team = await self._team()
        path = f"/v1/billing/teams/{team}/postpaid/spending-limits"
        obj = _mapping("spending_limits", await self._call("spending_limits", "GET", path))
        limits = _field(obj, "spendingLimits", "spending_limits")
        if not isinstance(limits, Mapping):
            raise ManagementError("spending_limits", 200, "the answer has no spendingLimits")
        return SpendingLimits(
            hard=_usd(_field(limits, "hardSlAuto", "hard_sl_auto")),
            effective_hard=_usd(_field(limits, "effectiveHardSl", "effective_hard_sl")),
            soft=_usd(_field(limits, "softSl", "soft_sl")),
            effective=_usd(_field(limits, "effectiveSl", "effective_sl")),
        )

    async def invoice_preview(self) -> InvoicePreview:
        """The month's postpaid invoice so far (see `InvoicePreview`). Raises
        `ManagementError` (``endpoint`` "invoice")."""
        team = await self._team()
        path = f"/v1/billing/teams/{team}/postpaid/invoice/preview"
        obj = _mapping("invoice", await self._call("invoice", "GET", path))
        core = _field(obj, "coreInvoice", "core_invoice")
        if not isinstance(core, Mapping):
            raise ManagementError("invoice", 200, "the answer has no coreInvoice")
        cycle = _field(obj, "billingCycle", "billing_cycle")
        return InvoicePreview(
            total_usd=_usd(_field(core, "totalWithCorr", "total_with_corr")) or 0.0,
            prepaid_credits_usd=_usd(_field(core, "prepaidCredits", "prepaid_credits")),
            billing_cycle=dict(cycle) if isinstance(cycle, Mapping) else None,
            effective_limit_usd=_usd(
                _field(obj, "effectiveSpendingLimit", "effective_spending_limit")
            ),
        )

    async def usage(self, start_day: date, end_day: date) -> list[BilledUsage]:
        """xAI's bill per UTC day, ``api_key_id`` and ``unit_type``, for ``start_day`` through
        ``end_day``, **both inclusive**: the range sent is ``start_day 00:00:00`` to
        ``end_day 23:59:59`` in ``Etc/UTC`` (times as ``YYYY-MM-DD HH:MM:SS`` [obs: a client
        verified on the live API]), ``timeUnit`` ``TIME_UNIT_DAY``, one value ``usd`` summed,
        grouped by ``api_key_id`` then ``unit_type`` (a series' ``group`` in that order [guess]).
        A point's ``timestamp`` (RFC 3339, or epoch seconds) names its day. Every point is
        returned, zeros too, in the API's order. ``limitReached`` true (the API cut the
        answer short) is logged. Raises `ManagementError` (``endpoint`` "usage")."""
        if end_day < start_day:
            return []
        team = await self._team()
        body = {
            "analyticsRequest": {
                "timeRange": {
                    "startTime": f"{start_day.isoformat()} 00:00:00",
                    "endTime": f"{end_day.isoformat()} 23:59:59",
                    "timezone": "Etc/UTC",
                },
                "timeUnit": "TIME_UNIT_DAY",
                "values": [{"name": "usd", "aggregation": "AGGREGATION_SUM"}],
                "groupBy": [API_KEY_GROUP, UNIT_TYPE_GROUP],
                "filters": [],
            }
        }
        path = f"/v1/billing/teams/{team}/usage"
        obj = _mapping("usage", await self._call("usage", "POST", path, json=body))
        if _field(obj, "limitReached", "limit_reached"):
            log.warning("management_usage_limit_reached", start=str(start_day), end=str(end_day))
        rows: list[BilledUsage] = []
        for series in _field(obj, "timeSeries", "time_series") or ():
            if not isinstance(series, Mapping):
                continue
            group = [str(g) for g in _field(series, "group") or ()]
            api_key_id = group[0] if group else ""
            unit_type = group[1] if len(group) > 1 else ""
            for point in _field(series, "dataPoints", "data_points") or ():
                if not isinstance(point, Mapping):
                    continue
                day = _day(_field(point, "timestamp"))
                values = _field(point, "values") or ()
                usd = _float(values[0]) if values else None
                if day is None or usd is None:
                    raise ManagementError("usage", 200, f"unreadable data point: {_short(point)}")
                rows.append(
                    BilledUsage(day, api_key_id, unit_type, usd, round(usd * TICKS_PER_USD))
                )
        return rows

    # -- plumbing -----------------------------------------------------------------------

    async def _team(self) -> str:
        return self.team_id or await self.validate()

    async def _call(
        self,
        endpoint: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
    ) -> Any:
        """One request with retries; the answer's JSON. Raises `ManagementError`."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=self.retry_wait,
            retry=retry_if_exception(
                lambda exc: isinstance(exc, ManagementError) and exc.retryable
            ),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._once(endpoint, method, path, params, json)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def _once(
        self,
        endpoint: str,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        json: Any,
    ) -> Any:
        url = self.base_url + path
        data = orjson.dumps(json) if json is not None else None
        headers = (
            self._headers if data is None else {**self._headers, "Content-Type": "application/json"}
        )
        try:
            async with self._session.request(
                method,
                url,
                params=params,
                data=data,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as resp:
                body = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            detail = self._excerpt(f"{type(exc).__name__}: {exc}".encode())
            raise ManagementError(endpoint, None, detail, retryable=True) from None
        if status != 200:
            raise ManagementError(
                endpoint,
                status,
                self._excerpt(body) or "(no body)",
                retryable=status >= 500 or status in _RETRY_STATUSES,
            )
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ManagementError(
                endpoint, status, "not JSON: " + self._excerpt(body), retryable=True
            ) from None

    def _excerpt(self, body: bytes, limit: int = 200) -> str:
        text = " ".join(body.decode("utf-8", "replace").split())
        if self._key:
            text = text.replace(self._key, MASK)
        text = _KEYISH.sub(MASK, text)
        return text if len(text) <= limit else text[:limit] + "…"


# -- reading the answers --------------------------------------------------------------------


def _field(obj: Mapping[str, Any], *names: str) -> Any:
    """The first of ``names`` present (and not None) in ``obj``."""
    for name in names:
        value = obj.get(name)
        if value is not None:
            return value
    return None


def _mapping(endpoint: str, obj: Any) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise ManagementError(endpoint, 200, "the answer is not a JSON object")
    return obj


def _float(value: Any) -> float | None:
    """A number, a numeric string, or ``{"val": ...}`` → float; anything else → None."""
    if isinstance(value, Mapping):
        value = value.get("val")
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _cents(value: Any) -> float | None:
    return _float(value)


def _usd(cents: Any) -> float | None:
    amount = _cents(cents)
    return None if amount is None else amount / 100


def _int_or_none(value: Any) -> int | None:
    """A limit (an int, or a string as ``tpm`` is sent); None, "" or 0 → None (no limit)."""
    number = _float(value)
    return int(number) if number else None


def _parse_time(value: Any) -> datetime | None:
    """RFC 3339 (``Z`` or an offset, any fraction), ``YYYY-MM-DD HH:MM:SS`` (UTC), or epoch
    seconds (a number or numeric string; milliseconds above 1e11) → an aware datetime."""
    if value is None or value == "":
        return None
    number = _float(value) if not isinstance(value, Mapping) else None
    if number is not None:
        seconds = number / 1000 if number > 1e11 else number
        return datetime.fromtimestamp(seconds, UTC)
    if not isinstance(value, str):
        return None
    text = _FRACTION.sub(r"\1", value.strip())
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _epoch(value: Any) -> float | None:
    parsed = _parse_time(value)
    return parsed.timestamp() if parsed is not None else None


def _day(value: Any) -> str | None:
    """The UTC day a usage point's timestamp names (the request asked for Etc/UTC)."""
    parsed = _parse_time(value)
    return parsed.astimezone(UTC).date().isoformat() if parsed is not None else None


def _short(obj: Any) -> str:
    text = orjson.dumps(obj, default=str).decode()
    return text if len(text) <= 120 else text[:120] + "…"


def day_start(day: date) -> float:
    """Epoch seconds of ``day`` 00:00 UTC."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
