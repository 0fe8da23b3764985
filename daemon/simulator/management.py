"""The Management and Billing API, served beside inference with one consistent bill.

Paths (xai-api.md "The Management API"; the client is `daemon.management.client`):
``GET /auth/management-keys/validation``, ``GET /auth/teams/{teamId}/api-keys`` (pages of
``limit``, at most ``state.management_page_size``, ``paginationToken`` = the next offset in hex),
``GET /v1/billing/teams/{teamId}/prepaid/balance``, ``.../postpaid/spending-limits``,
``.../postpaid/invoice/preview`` and ``POST .../usage``. They answer only the management key
``state.management_key`` (``"xai-mgmt-simulator"`` by default; any other key: 401), and only for
``state.team_id`` (another team: 403). ``state.management_faults`` (statuses answered to the
next management requests, one each) and ``state.management_status`` (every one) fail them.

The story is the inference API's own bill (`daemon.simulator.billing` books every billed
answer's ``cost_in_usd_ticks`` under UTC day, the caller's ``api_key_id`` and unit type in
``state.billing_book``):

- ``usage`` reports that book per day, ``api_key_id`` and ``unit_type``, in USD, times
  ``state.billing_drift[api_key_id]`` (1 when absent: tests inject a drift);
- the invoice preview's ``totalWithCorr`` is the book's month to date (the clock's month), in
  cents, rounded to the nearest cent;
- the prepaid balance is ``state.prepaid_credits_cents`` bought (a negative change, as xAI
  writes purchases) plus the whole book spent, rounded to the nearest cent;
- keys listed: every key that called the inference API (``api_key_id`` as ``GET /v1/api-key``
  reports it, `daemon.simulator.auth.api_key_id`) and any a test put in ``state.managed_keys``.

Unit types: `daemon.simulator.billing` (names [guess]). Messages and voice are not booked: where
reconciliation is expected to see a gap.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from aiohttp import hdrs, web

from daemon.simulator.auth import api_key_id, redact
from daemon.simulator.faults import Injection
from daemon.simulator.state import ManagedKey, SimulatorState
from daemon.simulator.wire import ApiError, Reply, json_body, json_reply

TICKS_PER_USD: Final = 10_000_000_000
TICKS_PER_CENT: Final = 100_000_000
MANAGEMENT_PREFIXES: Final = ("/auth/", "/v1/billing/")


def is_management(path: str) -> bool:
    """Whether a path is the Management API's (its requests are no inference caller's)."""
    return path.startswith(MANAGEMENT_PREFIXES)


def caller(state: SimulatorState, key: str | None) -> str:
    """The ``api_key_id`` of an inference caller's key, listed from now on (a `ManagedKey`)."""
    if not key:
        return ""
    found = api_key_id(key)
    if found not in state.managed_keys:
        state.managed_keys[found] = ManagedKey(found, redacted=redact(key))
    return found


# --- the Management API ---------------------------------------------------------------------


def _check(request: web.Request, state: SimulatorState) -> None:
    """Faults first (as xAI's gateway would fail before auth), then the management key."""
    if state.management_faults:
        status = state.management_faults.pop(0)
        raise ApiError(status, f"Simulated management failure ({status})")
    if state.management_status is not None:
        status = state.management_status
        raise ApiError(status, f"Simulated management failure ({status})")
    auth = request.headers.get(hdrs.AUTHORIZATION, "")
    if auth[:7].lower() != "bearer " or auth[7:].strip() != state.management_key:
        raise ApiError(401, "Invalid management key.")
    team = request.match_info.get("team_id")
    if team is not None and team != state.team_id:
        raise ApiError(403, f"The management key has no access to team {team}.")


def _cents(value: int) -> dict[str, str]:
    return {"val": str(value)}


def _rounded_cents(ticks: float) -> int:
    return int((ticks + TICKS_PER_CENT // 2) // TICKS_PER_CENT)


async def validate_key(request: web.Request, state: SimulatorState, inj: Injection) -> Reply:
    """``GET /auth/management-keys/validation``: the key's team."""
    _check(request, state)
    return json_reply(
        {
            "teamId": state.team_id,
            "name": "sim-management-key",
            "redactedApiKey": redact(state.management_key),
            "createTime": "2025-01-01T00:00:00Z",
        }
    )


def _key_json(key: ManagedKey, team_id: str) -> dict[str, Any]:
    return {
        "name": key.name,
        "apiKeyId": key.api_key_id,
        "teamId": team_id,
        "redactedApiKey": key.redacted,
        "userId": "sim-user",
        "createTime": key.create_time,
        "modifyTime": key.create_time,
        "disabled": key.disabled,
        "expireTime": key.expire_time,
        "qps": key.qps,
        "qpm": key.qpm,
        "tpm": str(key.tpm) if key.tpm is not None else None,  # a string, as xAI sends it
        "aclStrings": list(key.acls),
    }


async def list_api_keys(request: web.Request, state: SimulatorState, inj: Injection) -> Reply:
    """``GET /auth/teams/{team_id}/api-keys?limit&paginationToken``: a page of keys, in the
    order they were first seen; ``paginationToken`` on every page but the last."""
    _check(request, state)
    try:
        limit = int(request.query.get("limit") or state.management_page_size)
        start = int(request.query.get("paginationToken") or "0", 16)
    except ValueError:
        raise ApiError(400, "Invalid limit or paginationToken") from None
    limit = max(1, min(limit, state.management_page_size))
    keys = list(state.managed_keys.values())
    page = keys[start : start + limit]
    answer: dict[str, Any] = {"apiKeys": [_key_json(k, state.team_id) for k in page]}
    if start + limit < len(keys):
        answer["paginationToken"] = format(start + limit, "x")
    return json_reply(answer)


def _spent_ticks(state: SimulatorState, month: str | None = None) -> int:
    return sum(
        ticks
        for (day, _key, _unit), ticks in state.billing_book.items()
        if month is None or day.startswith(month)
    )


async def prepaid_balance(request: web.Request, state: SimulatorState, inj: Injection) -> Reply:
    """``GET .../prepaid/balance``: the purchase (negative) and the spend, summed in ``total``."""
    _check(request, state)
    spent = _rounded_cents(_spent_ticks(state))
    changes = [
        {"changeOrigin": "PURCHASE", "amount": _cents(-state.prepaid_credits_cents)},
        {"changeOrigin": "SPEND", "amount": _cents(spent)},
    ]
    return json_reply({"changes": changes, "total": _cents(spent - state.prepaid_credits_cents)})


def _limit(value: int | None) -> dict[str, str] | None:
    return _cents(value) if value is not None else None


async def spending_limits(request: web.Request, state: SimulatorState, inj: Injection) -> Reply:
    """``GET .../postpaid/spending-limits``: ``state.spending_limits_cents`` (unset: left out)."""
    _check(request, state)
    sl = state.spending_limits_cents
    limits = {
        "hardSlAuto": _limit(sl.get("hard")),
        "effectiveHardSl": _limit(sl.get("effective_hard")),
        "softSl": _limit(sl.get("soft")),
        "effectiveSl": _limit(sl.get("effective")),
    }
    return json_reply({"spendingLimits": {k: v for k, v in limits.items() if v is not None}})


async def invoice_preview(request: web.Request, state: SimulatorState, inj: Injection) -> Reply:
    """``GET .../postpaid/invoice/preview``: the book's month to date, in cents (strings)."""
    _check(request, state)
    now = datetime.fromtimestamp(state.billing_clock(), UTC)
    month = now.strftime("%Y-%m-")
    by_unit: dict[str, int] = {}
    for (day, _key, unit), ticks in state.billing_book.items():
        if day.startswith(month):
            by_unit[unit] = by_unit.get(unit, 0) + ticks
    lines = [
        {"description": unit, "amount": str(_rounded_cents(ticks))}
        for unit, ticks in sorted(by_unit.items())
    ]
    effective = state.spending_limits_cents.get("effective")
    answer: dict[str, Any] = {
        "coreInvoice": {
            "lines": lines,
            "totalWithCorr": str(_rounded_cents(sum(by_unit.values()))),
            "prepaidCredits": "0",
        },
        "billingCycle": {"year": now.year, "month": now.month},
    }
    if effective is not None:
        answer["effectiveSpendingLimit"] = str(effective)
    return json_reply(answer)


def _day_of(text: Any) -> str:
    """The UTC day a ``timeRange`` time names (``YYYY-MM-DD HH:MM:SS`` or RFC 3339)."""
    if not isinstance(text, str) or len(text) < 10:
        raise ApiError(400, f"Invalid time {text!r}")
    try:
        return datetime.fromisoformat(text[:10]).date().isoformat()
    except ValueError:
        raise ApiError(400, f"Invalid time {text!r}") from None


_GROUPS: Final = ("api_key_id", "unit_type")
_UTC_ZONES: Final = frozenset({"Etc/UTC", "UTC", "Etc/GMT", "GMT", ""})


async def billing_usage(request: web.Request, state: SimulatorState, inj: Injection) -> Reply:
    """``POST .../usage``: the book per day (``TIME_UNIT_DAY`` only, a UTC zone only),
    grouped by any of ``api_key_id`` and ``unit_type``, one ``usd`` sum per point, both ends
    of the range inclusive; days without charges have no point; drift applied."""
    _check(request, state)
    body = json_body(await request.read(), request.headers)
    req = body.get("analyticsRequest")
    if not isinstance(req, dict):
        raise ApiError(400, "`analyticsRequest` is required")
    span = req.get("timeRange") or {}
    if not isinstance(span, dict) or span.get("timezone", "") not in _UTC_ZONES:
        raise ApiError(400, "The simulator serves UTC time ranges only")
    if req.get("timeUnit") != "TIME_UNIT_DAY":
        raise ApiError(400, "The simulator serves `timeUnit: TIME_UNIT_DAY` only")
    group_by = req.get("groupBy") or []
    if not isinstance(group_by, list) or any(g not in _GROUPS for g in group_by):
        raise ApiError(400, f"groupBy may hold only {list(_GROUPS)}")
    first, last = _day_of(span.get("startTime")), _day_of(span.get("endTime"))
    series: dict[tuple[str, ...], dict[str, float]] = {}
    for (day, key_id, unit), ticks in sorted(state.billing_book.items()):
        if not first <= day <= last:
            continue
        parts = {"api_key_id": key_id, "unit_type": unit}
        group = tuple(parts[g] for g in group_by)
        usd = ticks / TICKS_PER_USD * state.billing_drift.get(key_id, 1.0)
        points = series.setdefault(group, {})
        points[day] = points.get(day, 0.0) + usd
    time_series = [
        {
            "group": list(group),
            "groupLabels": [
                _label(state, g, name) for g, name in zip(group, group_by, strict=True)
            ],
            "dataPoints": [
                {"timestamp": f"{day}T00:00:00Z", "values": [usd]}
                for day, usd in sorted(points.items())
            ],
        }
        for group, points in series.items()
    ]
    return json_reply({"timeSeries": time_series, "limitReached": False})


def _label(state: SimulatorState, value: str, group: str) -> str:
    key = state.managed_keys.get(value) if group == "api_key_id" else None
    return f"{key.name} ({key.redacted})" if key is not None else value


def routes() -> list[tuple[str, str, Any]]:
    """The Management API's routes, for `daemon.simulator.server.build_app`."""
    billing_root = "/v1/billing/teams/{team_id}"
    return [
        ("GET", "/auth/management-keys/validation", validate_key),
        ("GET", "/auth/teams/{team_id}/api-keys", list_api_keys),
        ("GET", billing_root + "/prepaid/balance", prepaid_balance),
        ("GET", billing_root + "/postpaid/spending-limits", spending_limits),
        ("GET", billing_root + "/postpaid/invoice/preview", invoice_preview),
        ("POST", billing_root + "/usage", billing_usage),
    ]
