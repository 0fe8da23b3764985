"""A real daemon with a management key, against the simulator: the gauges say exactly what
the Management API serves, a failing Management API is counted and harms no call, and without
a key nothing of it runs."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import aiohttp
import pytest

from daemon.keys import KNOWN_KEYS
from daemon.management.refresh import ManagementRefresher
from daemon.simulator import Simulator
from daemon.simulator.auth import api_key_id
from daemon.testing import DaemonFactory, RunningDaemon

MGMT_KEY = "xai-mgmt-simulator"
APP_KEY = "xai-app-key-for-headroom-01"
CHAT = {"model": "grok-3", "messages": [{"role": "user", "content": "hello there"}]}


async def _refreshed(d: RunningDaemon) -> ManagementRefresher:
    refresher = d.daemon.management
    assert refresher is not None
    async with asyncio.timeout(5):
        await refresher.refreshed.wait()
    return refresher


async def _chat(d: RunningDaemon, key: str) -> int:
    headers = {"Authorization": f"Bearer {key}"}
    url = d.base_url + "/chat/completions"
    async with aiohttp.ClientSession() as http, http.post(url, json=CHAT, headers=headers) as r:
        assert r.status == 200
        body = await r.json()
    return int(body["usage"]["total_tokens"])


async def _scrape(d: RunningDaemon) -> str:
    async with aiohttp.ClientSession() as http, http.get(d.admin_url + "/metrics") as resp:
        return await resp.text()


@pytest.mark.asyncio
async def test_gauges_say_what_the_management_api_serves(
    sim: Simulator, start_daemon: DaemonFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XAI_MANAGEMENT_KEY", MGMT_KEY)
    sim.state.billing_clock = lambda: datetime(2026, 4, 15, 12, tzinfo=UTC).timestamp()
    sim.state.prepaid_credits_cents = 2_500
    sim.state.billing_book[("2026-04-02", "someone", "prompt_text_tokens")] = 12_345_678_900
    d = await start_daemon(sim.url, management__base_url=sim.url, management__refresh_interval=3600)
    refresher = await _refreshed(d)
    assert refresher.client.team_id == sim.state.team_id
    tokens = await _chat(d, APP_KEY)
    await d.rows(1)
    app = sim.state.managed_keys[api_key_id(APP_KEY)]
    app.name, app.tpm, app.qpm, app.expire_time = "checkout", 90_000, 600, "2026-05-01T00:00:00Z"
    await refresher.refresh()  # now the app's key is in traffic: joined through GET /v1/api-key

    key_id = d.daemon.keys.key_id(APP_KEY)
    assert key_id is not None
    m = d.metric
    assert m("xai_meter_key_requests_total", provider="xai", key_id=key_id) == 1.0
    assert m("xai_meter_key_tokens_total", provider="xai", key_id=key_id) == tokens
    info = {"key_id": key_id, "api_key_id": app.api_key_id, "name": "checkout", "disabled": "false"}
    assert d.registry.get_sample_value("xai_meter_api_key_info", info) == 1.0
    assert m("xai_meter_api_key_limit", api_key_id=app.api_key_id, limit="tpm") == 90_000
    assert m("xai_meter_api_key_limit", api_key_id=app.api_key_id, limit="qpm") == 600
    assert m("xai_meter_api_key_limit", api_key_id=app.api_key_id, limit="qps") is None
    expiry = datetime(2026, 5, 1, tzinfo=UTC).timestamp()
    assert m("xai_meter_api_key_expiry_timestamp_seconds", api_key_id=app.api_key_id) == expiry
    # The book: 123.456789 ¢ from someone + the chat's own cost, whole cents in the API
    spent_cents = round(
        (
            12_345_678_900
            + sum(t for (day, k, _u), t in sim.state.billing_book.items() if k != "someone")
        )
        / 1e8
    )
    assert m("xai_meter_billing_prepaid_balance_usd") == (2_500 - spent_cents) / 100
    assert m("xai_meter_billing_invoice_preview_usd") == spent_cents / 100
    assert m("xai_meter_billing_spending_limit_usd", kind="hard") == 1000.0
    assert m("xai_meter_billing_spending_limit_usd", kind="effective") == 500.0
    assert m("xai_meter_billing_spending_limit_usd", kind="soft") is None
    for what in ("validation", "keys", "balance", "spending_limits", "invoice"):
        assert m("xai_meter_management_last_success_timestamp_seconds", what=what)
    lookups = [r for r in sim.state.requests_to("/v1/api-key")]
    assert len(lookups) == 1  # once per key
    await refresher.refresh()
    assert len(sim.state.requests_to("/v1/api-key")) == 1
    rows = await d.rows(1)
    assert len(rows) == 1  # the lookup is no relayed call
    assert KNOWN_KEYS.scrub(f"key {MGMT_KEY}!") == "key [key]!"  # masked everywhere


@pytest.mark.asyncio
async def test_a_failing_management_api_is_counted_and_harms_no_call(
    sim: Simulator, start_daemon: DaemonFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XAI_MANAGEMENT_KEY", MGMT_KEY)
    sim.state.management_status = 500
    d = await start_daemon(
        sim.url,
        management__base_url=sim.url,
        management__team_id=sim.state.team_id,
        management__refresh_interval=3600,
    )
    refresher = await _refreshed(d)
    for what in ("keys", "balance", "spending_limits", "invoice"):
        assert d.metric("xai_meter_management_refresh_failures_total", what=what) == 1.0
    assert (
        d.metric("xai_meter_management_refresh_failures_total", what="validation") == 0.0
    )  # from 0
    assert await _chat(d, APP_KEY) > 0  # the relay is unaffected
    await refresher.refresh()
    assert d.metric("xai_meter_management_refresh_failures_total", what="keys") == 2.0
    sim.state.management_status = None
    await refresher.refresh()
    assert d.metric("xai_meter_management_refresh_failures_total", what="keys") == 2.0
    assert d.metric("xai_meter_billing_prepaid_balance_usd") is not None
    # 3 tries per fetch (retries), 4 fetches, 2 failing rounds; then 4 good ones (the daily
    # reconciliation's /usage aside: whether it is due depends on the hour of the real clock)
    asked = [r for r in sim.state.requests if "/auth/" in r.path or "/billing/" in r.path]
    assert len([r for r in asked if not r.path.endswith("/usage")]) == 28
    await d.rows(1)


@pytest.mark.asyncio
async def test_without_a_management_key_nothing_runs(
    sim: Simulator, start_daemon: DaemonFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XAI_MANAGEMENT_KEY", raising=False)
    d = await start_daemon(sim.url, management__base_url=sim.url)
    assert d.daemon.management is None
    await _chat(d, APP_KEY)
    await d.rows(1)
    text = await _scrape(d)
    samples = [
        line
        for line in text.splitlines()
        if not line.startswith("#")
        and line.startswith(("xai_meter_api_key", "xai_meter_billing", "xai_meter_management"))
    ]
    assert samples == []
    assert "xai_meter_key_requests_total{" in text  # measured per key either way
    assert [r.path for r in sim.state.requests] == ["/v1/chat/completions"]
