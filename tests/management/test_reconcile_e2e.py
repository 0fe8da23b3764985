"""Reconciliation end to end: real inference calls through a real daemon to the simulator,
whose Management API bills what it answered; the ledger meets that bill with a zero gap, and
a drift injected into the bill shows as the exact gap, in the report and in the gauges."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path

import aiohttp
import pytest
from tenacity import wait_none

from daemon.app import Clocks, Daemon
from daemon.ledger import migrate, open_database
from daemon.ledger.billing import BilledRow, load_billed_usage, save_billed_usage
from daemon.management.client import ManagementClient
from daemon.management.reconcile import DailyReconciliation
from daemon.management.report import NoBill, build_report
from daemon.simulator import Simulator
from daemon.simulator.auth import api_key_id
from daemon.testing import RunningDaemon, make_settings

NOON = datetime(2026, 4, 15, 12, tzinfo=UTC).timestamp()
DAY = "2026-04-15"
NEXT_MORNING = datetime(2026, 4, 16, 2, tzinfo=UTC).timestamp()  # past reconcile_hour_utc 1
KEY_A, KEY_B = "xai-key-alpha-0001", "xai-key-bravo-0002"
ID_A, ID_B = api_key_id(KEY_A), api_key_id(KEY_B)
CHAT = {"model": "grok-3", "messages": [{"role": "user", "content": "hello there"}]}
SEARCH = {
    "model": "grok-4",
    "input": "news?",
    "tools": [{"type": "web_search"}],
}
MGMT_ENV = "XAI_METER_TEST_MGMT_KEY"


@pytest.fixture
async def daemon(sim: Simulator, tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    """A daemon before the simulator, both at noon of `DAY` (the ledger's day and the bill's)."""
    sim.state.billing_clock = lambda: NOON
    settings = make_settings(tmp_path, sim.url)
    d = Daemon(settings, clocks=Clocks(wall=lambda: NOON), retry_wait=wait_none())
    await d.start()
    try:
        yield RunningDaemon(d)
    finally:
        await d.stop()


async def _traffic(running: RunningDaemon) -> int:
    """Billed calls with two keys (chat, streamed chat, a Responses call with a search), and
    GET /v1/api-key for each key (what joins the ledger's key ids to xAI's api_key_ids).
    Returns the ledger rows written."""
    async with aiohttp.ClientSession() as http:
        for key in (KEY_A, KEY_B):
            auth = {"Authorization": f"Bearer {key}"}
            async with http.get(running.base_url + "/api-key", headers=auth) as resp:
                assert resp.status == 200
            async with http.post(
                running.base_url + "/chat/completions", json=CHAT, headers=auth
            ) as r:
                assert r.status == 200
        auth = {"Authorization": f"Bearer {KEY_A}"}
        stream = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
        async with http.post(
            running.base_url + "/chat/completions", json=stream, headers=auth
        ) as r:
            await r.read()
        async with http.post(running.base_url + "/responses", json=SEARCH, headers=auth) as r:
            assert r.status == 200
    await running.rows(6)
    await running.daemon.ledger.drained()
    return 6


def _ledger_ticks(path: str) -> dict[str, int]:
    db = open_database(path, readonly=True)
    try:
        rows = db.execute(
            "select k.api_key_id, sum(c.cost_ticks) from calls c join api_keys k "
            "using (key_id) group by k.api_key_id"
        ).fetchall()
    finally:
        db.close()
    return dict(rows)


def _billed_with_drift(sim: Simulator, key: str, drift: float) -> int:
    """What the client reads of the simulator's book under a drift: per unit type, USD as a
    float times the drift, back to ticks (the client's round(usd * 1e10))."""
    return sum(
        round(ticks / 10**10 * drift * 10**10)
        for (day, k, _unit), ticks in sim.state.billing_book.items()
        if k == key and day == DAY
    )


async def test_zero_gap_then_the_exact_drift(sim: Simulator, daemon: RunningDaemon) -> None:
    await _traffic(daemon)
    ledger = _ledger_ticks(daemon.ledger_path)
    # chat 237e4 + streamed chat (cached) 219e4 + Responses with a web search 6119e4; B: chat
    assert ledger == {ID_A: 65_750_000, ID_B: 2_190_000}
    report = await build_report(
        daemon.ledger_path, days=1, now=NEXT_MORNING, key=sim.state.management_key,
        key_env=MGMT_ENV, base_url=sim.url, retry_wait=wait_none(),
    )  # fmt: skip
    by_key = {(r.day, r.row, r.api_key_id): r for r in report.rows}
    assert [k for k in by_key if k[0] == DAY] == [
        (DAY, "key", min(ID_A, ID_B)), (DAY, "key", max(ID_A, ID_B)), (DAY, "day", None),
    ]  # fmt: skip
    a, b, day = by_key[(DAY, "key", ID_A)], by_key[(DAY, "key", ID_B)], by_key[(DAY, "day", None)]
    assert (a.billed_ticks, a.ledger_ticks, a.gap_ticks, a.status) == (
        ledger[ID_A], ledger[ID_A], 0, "match",
    )  # fmt: skip
    assert (b.gap_ticks, day.gap_ticks, day.billed_ticks) == (0, 0, ledger[ID_A] + ledger[ID_B])
    assert (a.name, a.calls, a.differs, a.note) == ("sim-key", 4, (), "")  # GET api-key too
    assert report.source["from"] == "api"
    assert by_key[("2026-04-16", "day", None)].partial  # today so far, fetched too

    sim.state.billing_drift[ID_A] = 1.25
    report = await build_report(
        daemon.ledger_path, days=1, now=NEXT_MORNING, key=sim.state.management_key,
        key_env=MGMT_ENV, base_url=sim.url, retry_wait=wait_none(),
    )  # fmt: skip
    a = next(r for r in report.rows if r.api_key_id == ID_A and r.day == DAY)
    billed = _billed_with_drift(sim, ID_A, 1.25)
    assert (a.billed_ticks, a.ledger_ticks) == (billed, ledger[ID_A])
    assert billed == 82_187_500  # 1.25 x 65_750_000, exactly
    assert (a.gap_ticks, a.gap_ratio) == (-16_437_500, -0.2)
    assert a.status == "small"  # -20%, but under $0.01
    assert [g.kind for g in a.differs] == ["text"]
    assert a.note == "unexpected gap in text: check prices and usage"


async def test_the_daily_job_stores_the_pull_and_sets_the_gauges(
    sim: Simulator, daemon: RunningDaemon
) -> None:
    await _traffic(daemon)
    ledger = _ledger_ticks(daemon.ledger_path)
    sim.state.billing_drift[ID_B] = 0.5
    now = [datetime(2026, 4, 16, 0, 30, tzinfo=UTC).timestamp()]
    d = daemon.daemon
    job = DailyReconciliation(
        d.ledger, d.metrics.reconciliation, hour_utc=1, days=2, wall=lambda: now[0]
    )
    async with aiohttp.ClientSession() as session:
        client = ManagementClient(
            session, sim.url, sim.state.management_key, retry_wait=wait_none()
        )
        assert not job.due()  # before 01:00 UTC
        assert await job.run_if_due(client.usage) is None
        now[0] = NEXT_MORNING
        assert job.due()
        rows = await job.run_if_due(client.usage)
        assert rows is not None and not job.due()  # once a day
        now[0] += 86_400
        assert job.due()  # the next day, again

    def gauge(name: str, key: str) -> float | None:
        return daemon.metric(f"xai_meter_billing_reconciliation_{name}", api_key_id=key)

    billed_b = _billed_with_drift(sim, ID_B, 0.5)
    assert gauge("billed_usd", ID_A) == ledger[ID_A] / 10**10
    assert gauge("ledger_usd", ID_A) == ledger[ID_A] / 10**10
    assert gauge("gap_usd", ID_A) == 0.0
    assert gauge("billed_usd", ID_B) == billed_b / 10**10
    assert gauge("gap_usd", ID_B) == (ledger[ID_B] - billed_b) / 10**10
    assert daemon.metric("xai_meter_billing_reconciliation_day_timestamp_seconds") == (
        datetime(2026, 4, 15, tzinfo=UTC).timestamp()
    )
    db = open_database(daemon.ledger_path, readonly=True)
    try:
        stored, fetched_at = load_billed_usage(db, "2026-04-14", "2026-04-15")
    finally:
        db.close()
    assert fetched_at == NEXT_MORNING
    assert {r.day for r in stored} == {DAY}
    assert sum(r.ticks for r in stored if r.api_key_id == ID_A) == ledger[ID_A]
    assert sum(r.ticks for r in stored if r.api_key_id == ID_B) == billed_b

    # Without the key, the report comes from that stored pull, and says so
    report = await build_report(
        daemon.ledger_path, days=7, now=NEXT_MORNING, key=None, key_env=MGMT_ENV,
        base_url=sim.url,
    )  # fmt: skip
    # every day the pull covered: 04-14 billed nothing, and shows as $0, not as unknown
    assert report.source == {
        "from": "ledger", "fetched_at": NEXT_MORNING, "api_error": None,
        "first_day": "2026-04-14", "last_day": DAY,
    }  # fmt: skip
    empty = [r for r in report.rows if r.day == "2026-04-14"]
    assert empty and all(r.billed_ticks == 0 and r.ledger_ticks == 0 for r in empty)
    assert "not fetched ($XAI_METER_TEST_MGMT_KEY is not set)" in report.line
    b = next(r for r in report.rows if r.api_key_id == ID_B)
    assert (b.billed_ticks, b.gap_ticks) == (billed_b, ledger[ID_B] - billed_b)


async def test_no_bill_from_either_source(sim: Simulator, tmp_path: Path) -> None:
    missing = tmp_path / "none.db"
    with pytest.raises(NoBill, match=r"^\$K is not set, and there is no ledger at "):
        await build_report(missing, days=1, now=NOON, key=None, key_env="K", base_url=sim.url)
    db = open_database(tmp_path / "empty.db")
    migrate(db)
    db.close()
    sim.state.management_status = 503
    with pytest.raises(NoBill) as caught:
        await build_report(
            tmp_path / "empty.db", days=1, now=NOON, key=sim.state.management_key,
            key_env="K", base_url=sim.url, team_id=sim.state.team_id, retry_wait=wait_none(),
        )  # fmt: skip
    assert str(caught.value).startswith(
        "the Management API failed (management API usage: HTTP 503: "
    )
    assert "holds no stored pull of xAI's bill for 2026-04-14 to 2026-04-14" in str(caught.value)
    assert sim.state.management_key not in str(caught.value)
    # a stored pull serves when the API fails, and the report says why it was used
    db = open_database(tmp_path / "empty.db")
    save_billed_usage(db, ["2026-04-14"], [BilledRow("2026-04-14", "k", "u", 1.0, 10**10)], 5.0)
    db.close()
    report = await build_report(
        tmp_path / "empty.db", days=1, now=NOON, key=sim.state.management_key,
        key_env="K", base_url=sim.url, team_id=sim.state.team_id, retry_wait=wait_none(),
    )  # fmt: skip
    assert report.source["api_error"].startswith("management API usage: HTTP 503")
    assert [(r.row, r.billed_ticks, r.gap_ticks) for r in report.rows] == [
        ("key", 10**10, -(10**10)), ("day", 10**10, -(10**10)),
    ]  # fmt: skip
    assert date.fromisoformat(report.source["first_day"]) == date(2026, 4, 14)


async def test_the_refresher_runs_it_daily_on_the_daemon(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a management key, the daemon's refresher joins the keys seen in traffic (its own
    GET /v1/api-key) and, past reconcile_hour_utc, reconciles: zero gap, then the drift."""
    monkeypatch.setenv(MGMT_ENV, sim.state.management_key)
    now = [datetime(2026, 4, 15, 0, 30, tzinfo=UTC).timestamp()]  # before 01:00: not due
    sim.state.billing_clock = lambda: now[0]
    settings = make_settings(
        tmp_path, sim.url, management__api_key_env=MGMT_ENV, management__base_url=sim.url,
        management__refresh_interval=3600, management__reconcile_days=1,
    )  # fmt: skip
    d = Daemon(settings, clocks=Clocks(wall=lambda: now[0]), retry_wait=wait_none())
    await d.start()
    try:
        refresher = d.management
        assert refresher is not None
        async with asyncio.timeout(5):
            await refresher.refreshed.wait()
        assert refresher.reconciliation is not None
        assert refresher.reconciliation.done_on is None  # 00:30: not yet
        running = RunningDaemon(d)
        async with aiohttp.ClientSession() as http:
            for key in (KEY_A, KEY_B):  # no GET /v1/api-key: the refresher asks itself
                auth = {"Authorization": f"Bearer {key}"}
                url = running.base_url + "/chat/completions"
                async with http.post(url, json=CHAT, headers=auth) as r:
                    assert r.status == 200
        await running.rows(2)
        sim.state.billing_drift[ID_B] = 1.5
        now[0] = NEXT_MORNING - 86_400  # 2026-04-15 02:00: reconciles 04-14, which had nothing
        await refresher.refresh()
        assert refresher.reconciliation.done_on == date(2026, 4, 15)
        assert running.metric("xai_meter_billing_reconciliation_day_timestamp_seconds") == (
            datetime(2026, 4, 14, tzinfo=UTC).timestamp()
        )
        assert running.metric("xai_meter_billing_reconciliation_gap_usd", api_key_id=ID_A) is None
        now[0] = NEXT_MORNING  # the next day: 04-15 is complete
        await refresher.refresh()
        ledger = _ledger_ticks(running.ledger_path)
        assert ledger == {ID_A: 2_370_000, ID_B: 2_190_000}
        billed_b = _billed_with_drift(sim, ID_B, 1.5)
        assert billed_b == 3_285_000
        assert running.metric("xai_meter_billing_reconciliation_gap_usd", api_key_id=ID_A) == 0.0
        assert running.metric("xai_meter_billing_reconciliation_gap_usd", api_key_id=ID_B) == (
            -1_095_000 / 10**10
        )
        assert (
            running.metric("xai_meter_management_refresh_failures_total", what="usage") == 0.0
        )  # from 0: increase() sees a first failure
        assert (
            running.metric("xai_meter_management_last_success_timestamp_seconds", what="usage")
            == NEXT_MORNING
        )
    finally:
        await d.stop()
