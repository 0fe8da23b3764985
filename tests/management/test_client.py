"""`ManagementClient` against the real simulator over loopback: every answer typed, pages
followed, 429/5xx retried, other 4xx raised at once, and the key in no error text."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime

import aiohttp
import pytest
import pytest_asyncio
from tenacity import wait_none

from daemon.management.client import (
    ApiKey,
    BilledUsage,
    InvoicePreview,
    ManagementClient,
    ManagementError,
    SpendingLimits,
)
from daemon.simulator import Simulator
from daemon.simulator.auth import api_key_id

MGMT_KEY = "xai-mgmt-simulator"
NOON = datetime(2026, 4, 15, 12, tzinfo=UTC).timestamp()
CHAT = {"model": "grok-3", "messages": [{"role": "user", "content": "hello there"}]}


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def _client(
    sim: Simulator, session: aiohttp.ClientSession, key: str = MGMT_KEY
) -> ManagementClient:
    return ManagementClient(session, sim.url, key, retry_wait=wait_none(), attempts=3)


async def _chat(session: aiohttp.ClientSession, sim: Simulator, key: str) -> int:
    headers = {"Authorization": f"Bearer {key}"}
    async with session.post(sim.url + "/v1/chat/completions", json=CHAT, headers=headers) as r:
        return int((await r.json())["usage"]["cost_in_usd_ticks"])


@pytest.mark.asyncio
async def test_every_answer_typed(sim: Simulator, session: aiohttp.ClientSession) -> None:
    sim.state.billing_clock = lambda: NOON
    sim.state.management_page_size = 1  # three keys: three pages
    costs = [await _chat(session, sim, f"xai-key-{n}-abcdef") for n in range(3)]
    alpha = sim.state.managed_keys[api_key_id("xai-key-0-abcdef")]
    alpha.name, alpha.qpm, alpha.tpm = "prod", 600, 2_000_000
    alpha.expire_time = "2026-05-01T00:00:00Z"
    client = _client(sim, session)

    assert await client.validate() == sim.state.team_id == client.team_id
    keys = await client.api_keys()
    assert [k.api_key_id for k in keys] == [api_key_id(f"xai-key-{n}-abcdef") for n in range(3)]
    assert keys[0] == ApiKey(
        api_key_id=alpha.api_key_id,
        name="prod",
        team_id=sim.state.team_id,
        redacted="xai-...cdef",
        disabled=False,
        qps=None,
        qpm=600,
        tpm=2_000_000,
        expire_time=datetime(2026, 5, 1, tzinfo=UTC).timestamp(),
        create_time=datetime(2025, 1, 1, tzinfo=UTC).timestamp(),
        acls=("api-key:model:*", "api-key:endpoint:*"),
    )
    # the book holds 3 chats; $100 bought: balance = 100 - spend rounded to the cent
    spent_cents = round(sum(costs) / 1e8)
    assert await client.prepaid_balance_usd() == (10_000 - spent_cents) / 100
    assert await client.spending_limits() == SpendingLimits(1000.0, 1000.0, None, 500.0)
    assert await client.invoice_preview() == InvoicePreview(
        total_usd=spent_cents / 100,
        prepaid_credits_usd=0.0,
        billing_cycle={"year": 2026, "month": 4},
        effective_limit_usd=500.0,
    )
    rows = await client.usage(date(2026, 4, 14), date(2026, 4, 15))
    by_key: dict[str, int] = {}
    for row in rows:
        assert isinstance(row, BilledUsage) and row.day == "2026-04-15"
        assert row.ticks == round(row.usd * 1e10)
        by_key[row.api_key_id] = by_key.get(row.api_key_id, 0) + row.ticks
    assert by_key == {api_key_id(f"xai-key-{n}-abcdef"): costs[n] for n in range(3)}
    assert {(r.api_key_id, r.unit_type, r.ticks) for r in rows} == {
        (key_id, unit, ticks) for (_day, key_id, unit), ticks in sim.state.billing_book.items()
    }
    assert await client.usage(date(2026, 4, 16), date(2026, 4, 20)) == []
    pages = [r for r in sim.state.requests if r.path.endswith("/api-keys")]
    assert [r.query for r in pages] == [
        "limit=100",
        "limit=100&paginationToken=1",
        "limit=100&paginationToken=2",
    ]


@pytest.mark.asyncio
async def test_a_team_call_validates_first_when_no_team_is_set(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    client = _client(sim, session)
    assert await client.api_keys() == []
    assert client.team_id == sim.state.team_id
    assert [r.path for r in sim.state.requests] == [
        "/auth/management-keys/validation",
        f"/auth/teams/{sim.state.team_id}/api-keys",
    ]


@pytest.mark.asyncio
async def test_5xx_and_429_are_retried(sim: Simulator, session: aiohttp.ClientSession) -> None:
    sim.state.management_faults = [503, 429]
    client = _client(sim, session)
    assert await client.validate() == sim.state.team_id
    assert len(sim.state.requests) == 3
    sim.state.management_faults = [500, 502, 503]
    with pytest.raises(ManagementError) as failed:
        await client.spending_limits()
    assert (failed.value.endpoint, failed.value.status) == ("spending_limits", 503)
    assert len(sim.state.requests) == 6


@pytest.mark.asyncio
async def test_a_bad_key_fails_at_once_without_the_key_in_the_error(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    secret = "xai-mgmt-wrong-secret-0123456789"
    client = _client(sim, session, key=secret)
    with pytest.raises(ManagementError) as failed:
        await client.validate()
    error = failed.value
    assert (error.endpoint, error.status, error.retryable) == ("validation", 401, False)
    assert len(sim.state.requests) == 1  # no retry
    text = str(error)
    assert secret not in text and "wrong-secret" not in text and "\n" not in text
    assert text.startswith("management API validation: HTTP 401: ")
    assert secret not in repr(client)


@pytest.mark.asyncio
async def test_no_answer_is_a_retryable_error_without_the_key(
    session: aiohttp.ClientSession, sim: Simulator
) -> None:
    url = sim.url
    await sim.close()  # nothing listens there any more
    secret = "xai-mgmt-secret-0123456789"
    client = ManagementClient(session, url, secret, team_id="t", retry_wait=wait_none(), attempts=2)
    with pytest.raises(ManagementError) as failed:
        await client.invoice_preview()
    assert (failed.value.status, failed.value.retryable) == (None, True)
    assert secret not in str(failed.value)
