"""The simulator's Management and Billing API: one bill, booked by every billed answer.

Each test pins the exact ticks: what `/usage` reports per day, key and unit type is what the
inference answers reported in ``cost_in_usd_ticks`` (split by unit type, summing exactly).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from xai_sdk import AsyncClient
from xai_sdk.chat import user

from daemon.simulator import GrpcSimulator, Simulator
from daemon.simulator.auth import api_key_id
from daemon.simulator.billing import spread
from daemon.simulator.state import ManagedKey

NOON = datetime(2026, 4, 15, 12, tzinfo=UTC).timestamp()
DAY = "2026-04-15"
MGMT = {"Authorization": "Bearer xai-mgmt-simulator"}
KEY_A, KEY_B = "xai-key-alpha-0001", "xai-key-bravo-0002"
CHAT = {"model": "grok-3", "messages": [{"role": "user", "content": "hello there"}]}


def _billing(sim: Simulator, path: str) -> str:
    return f"{sim.url}/v1/billing/teams/{sim.state.team_id}/{path}"


async def _chat(http: aiohttp.ClientSession, url: str, key: str, **extra: Any) -> int:
    headers = {"Authorization": f"Bearer {key}"}
    async with http.post(url + "/v1/chat/completions", json=CHAT, headers=headers) as resp:
        assert resp.status == 200
        body = await resp.json()
    return int(body["usage"]["cost_in_usd_ticks"])


async def _usage(http: aiohttp.ClientSession, sim: Simulator, **over: Any) -> dict[str, Any]:
    request = {
        "timeRange": {
            "startTime": f"{DAY} 00:00:00",
            "endTime": f"{DAY} 23:59:59",
            "timezone": "Etc/UTC",
        },
        "timeUnit": "TIME_UNIT_DAY",
        "values": [{"name": "usd", "aggregation": "AGGREGATION_SUM"}],
        "groupBy": ["api_key_id", "unit_type"],
        "filters": [],
        **over,
    }
    body = {"analyticsRequest": request}
    async with http.post(_billing(sim, "usage"), json=body, headers=MGMT) as resp:
        assert resp.status == 200, await resp.text()
        answer: dict[str, Any] = await resp.json()
    return answer


def _book_by_key(usage: dict[str, Any]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for series in usage["timeSeries"]:
        for point in series["dataPoints"]:
            assert point["timestamp"] == f"{DAY}T00:00:00Z"
            totals[series["group"][0]] = totals.get(series["group"][0], 0.0) + point["values"][0]
    return totals


@pytest.mark.asyncio
async def test_usage_is_what_inference_billed_per_key_and_unit(sim: Simulator) -> None:
    sim.state.billing_clock = lambda: NOON
    async with aiohttp.ClientSession() as http:
        a1 = await _chat(http, sim.url, KEY_A)
        a2 = await _chat(http, sim.url, KEY_A)
        b = await _chat(http, sim.url, KEY_B)
        usage = await _usage(http, sim)
    id_a, id_b = api_key_id(KEY_A), api_key_id(KEY_B)
    by_key: dict[str, int] = {}
    for (day, key_id, _unit), ticks in sim.state.billing_book.items():
        assert day == DAY
        by_key[key_id] = by_key.get(key_id, 0) + ticks
    assert by_key == {id_a: a1 + a2, id_b: b}
    units = {unit for (_d, _k, unit) in sim.state.billing_book}
    assert units <= {"prompt_text_tokens", "completion_text_tokens", "cached_prompt_text_tokens"}
    assert "completion_text_tokens" in units
    assert _book_by_key(usage) == pytest.approx({id_a: (a1 + a2) / 1e10, id_b: b / 1e10})
    assert usage["limitReached"] is False
    labels = {s["group"][0]: s["groupLabels"][0] for s in usage["timeSeries"]}
    assert labels[id_a] == "sim-key (xai-...0001)"


@pytest.mark.asyncio
async def test_drift_multiplies_usage_and_days_outside_the_range_are_left_out(
    sim: Simulator,
) -> None:
    sim.state.billing_clock = lambda: NOON
    async with aiohttp.ClientSession() as http:
        cost = await _chat(http, sim.url, KEY_A)
        sim.state.billing_drift[api_key_id(KEY_A)] = 1.05
        drifted = await _usage(http, sim)
        other_day = {"startTime": "2026-04-16 00:00:00", "endTime": "2026-04-16 23:59:59"}
        empty = await _usage(http, sim, timeRange={**other_day, "timezone": "Etc/UTC"})
        by_key_only = await _usage(http, sim, groupBy=["api_key_id"])
    assert _book_by_key(drifted) == {api_key_id(KEY_A): pytest.approx(cost / 1e10 * 1.05)}
    assert empty["timeSeries"] == []
    [series] = by_key_only["timeSeries"]
    assert series["group"] == [api_key_id(KEY_A)]
    assert series["dataPoints"][0]["values"] == [pytest.approx(cost * 1.05 / 1e10)]


@pytest.mark.asyncio
async def test_balance_limits_and_invoice_preview_read_the_same_book(sim: Simulator) -> None:
    sim.state.billing_clock = lambda: NOON
    sim.state.billing_book[("2026-03-31", "old-key", "prompt_text_tokens")] = 250_000_000
    sim.state.billing_book[(DAY, "k", "completion_text_tokens")] = 1_234_560_000  # 12.3456 ¢
    async with aiohttp.ClientSession(headers=MGMT) as http:
        async with http.get(_billing(sim, "prepaid/balance")) as resp:
            balance = await resp.json()
        async with http.get(_billing(sim, "postpaid/spending-limits")) as resp:
            limits = await resp.json()
        async with http.get(_billing(sim, "postpaid/invoice/preview")) as resp:
            invoice = await resp.json()
    # spent: 2.5 ¢ + 12.3456 ¢ = 14.8456 ¢ -> 15 ¢; bought 10 000 ¢ (negative, as xAI writes it)
    assert balance["total"] == {"val": "-9985"}
    assert balance["changes"][0]["amount"] == {"val": "-10000"}
    assert limits == {
        "spendingLimits": {
            "hardSlAuto": {"val": "100000"},
            "effectiveHardSl": {"val": "100000"},
            "effectiveSl": {"val": "50000"},
        }
    }
    assert invoice["coreInvoice"]["totalWithCorr"] == "12"  # April only: 12.3456 ¢
    assert invoice["effectiveSpendingLimit"] == "50000"
    assert invoice["billingCycle"] == {"year": 2026, "month": 4}


@pytest.mark.asyncio
async def test_keys_are_listed_in_pages_with_their_limits(sim: Simulator) -> None:
    sim.state.management_page_size = 2
    async with aiohttp.ClientSession() as http:
        for key in (KEY_A, KEY_B, "xai-key-charlie-03"):
            await _chat(http, sim.url, key)
        sim.state.managed_keys[api_key_id(KEY_B)].tpm = 90_000
        sim.state.managed_keys[api_key_id(KEY_B)].disabled = True
        url = f"{sim.url}/auth/teams/{sim.state.team_id}/api-keys"
        async with http.get(url, headers=MGMT) as resp:
            first = await resp.json()
        token = first["paginationToken"]
        async with http.get(url, params={"paginationToken": token}, headers=MGMT) as resp:
            second = await resp.json()
        headers = {"Authorization": f"Bearer {KEY_B}"}
        async with http.get(sim.url + "/v1/api-key", headers=headers) as resp:
            described = await resp.json()
    assert [k["apiKeyId"] for k in first["apiKeys"]] == [api_key_id(KEY_A), api_key_id(KEY_B)]
    assert "paginationToken" not in second
    [last] = second["apiKeys"]
    assert last["apiKeyId"] == api_key_id("xai-key-charlie-03")
    bravo = first["apiKeys"][1]
    assert (bravo["tpm"], bravo["disabled"], bravo["qps"]) == ("90000", True, None)
    assert bravo["teamId"] == sim.state.team_id == described["team_id"]
    assert described["api_key_id"] == bravo["apiKeyId"] and described["api_key_disabled"] is True


@pytest.mark.asyncio
async def test_only_the_management_key_for_its_own_team(sim: Simulator) -> None:
    async with aiohttp.ClientSession() as http:
        validation = f"{sim.url}/auth/management-keys/validation"
        async with http.get(validation, headers={"Authorization": "Bearer xai-other"}) as resp:
            assert resp.status == 401
            assert set(await resp.json()) == {"code", "error"}
        async with http.get(validation, headers=MGMT) as resp:
            assert (await resp.json())["teamId"] == sim.state.team_id
        other = f"{sim.url}/v1/billing/teams/another-team/prepaid/balance"
        async with http.get(other, headers=MGMT) as resp:
            assert resp.status == 403
        sim.state.management_faults = [503, 429]
        async with http.get(validation, headers=MGMT) as resp:
            assert resp.status == 503
        async with http.get(validation, headers=MGMT) as resp:
            assert (resp.status, resp.headers["retry-after"]) == (429, "1")
        async with http.get(validation, headers=MGMT) as resp:
            assert resp.status == 200
    assert sim.state.managed_keys == {}  # management calls are no inference caller


@pytest.mark.asyncio
async def test_batch_lines_book_their_discounted_cost(sim: Simulator) -> None:
    sim.state.billing_clock = lambda: NOON
    headers = {"Authorization": f"Bearer {KEY_A}"}
    async with aiohttp.ClientSession(base_url=sim.url, headers=headers) as http:
        async with http.post("/v1/batches", json={"name": "b"}) as resp:
            batch_id = (await resp.json())["batch_id"]
        lines = [{"batch_request": {"chat_get_completion": CHAT}}] * 2
        async with http.post(f"/v1/batches/{batch_id}/requests", json={"batch_requests": lines}):
            pass
        async with http.get(f"/v1/batches/{batch_id}/results") as resp:
            results = (await resp.json())["results"]
    reported = [
        r["batch_result"]["response"]["chat_get_completion"]["usage"]["cost_in_usd_ticks"]
        for r in results
    ]
    assert sum(sim.state.billing_book.values()) == sum(reported) > 0


@pytest.mark.asyncio
async def test_grpc_calls_book_what_they_report(sim: Simulator, grpc_sim: GrpcSimulator) -> None:
    sim.state.billing_clock = lambda: NOON
    client = AsyncClient(api_key=KEY_B, api_host=grpc_sim.target, use_insecure_channel=True)
    try:
        chat = client.chat.create(model="grok-3")
        chat.append(user("hello there"))
        response = await chat.sample()
    finally:
        await client.close()
    booked = {k: v for k, v in sim.state.billing_book.items() if k[1] == api_key_id(KEY_B)}
    assert sum(booked.values()) == response.usage.cost_in_usd_ticks > 0


def test_spread_sums_exactly() -> None:
    assert spread(10, {"a": 1, "b": 1, "c": 1}) == {"a": 4, "b": 3, "c": 3}
    assert spread(7, {"a": 0, "b": 5}) == {"a": 0, "b": 7}
    assert spread(5, {}) == {}


def test_a_configured_key_is_listed_before_it_calls() -> None:
    key = ManagedKey("abc", name="prod", qpm=600, expire_time="2026-05-01T00:00:00Z")
    assert (key.qpm, key.tpm, key.acls[0]) == (600, None, "api-key:model:*")
