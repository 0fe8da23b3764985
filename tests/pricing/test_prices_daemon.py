"""Prices from the upstream's own listings, through the running daemon, against the simulator."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import openai
import pytest

from daemon import simulator
from daemon.cli import main
from daemon.pricing.cost import compute_cost
from daemon.pricing.model import ModelPrice
from daemon.record import Usage
from daemon.testing import TEST_KEY, DaemonFactory, RunningDaemon

MESSAGES: list[Any] = [{"role": "user", "content": "How much does this cost?"}]
PINNED = {"X-Sim-Cached-Tokens": "3"}


async def start_priced(
    start_daemon: DaemonFactory, sim: simulator.Simulator, **extra: Any
) -> RunningDaemon:
    meter = await start_daemon(sim.url, pricing__refresh=True, **extra)
    return meter


async def first_prices(meter: RunningDaemon) -> None:
    async with asyncio.timeout(5):
        await meter.daemon.prices.updated.wait()
    meter.daemon.prices.updated.clear()


async def refresh(meter: RunningDaemon) -> None:
    assert meter.daemon.prices.refresher is not None
    await meter.daemon.prices.refresher.refresh()
    async with asyncio.timeout(5):
        await meter.daemon.prices.updated.wait()
    meter.daemon.prices.updated.clear()


async def chat(meter: RunningDaemon, model: str, **kw: Any) -> Any:
    client = openai.AsyncOpenAI(base_url=meter.base_url, api_key=TEST_KEY, max_retries=0)
    try:
        return await client.chat.completions.create(
            model=model, messages=MESSAGES, extra_headers=PINNED, **kw
        )
    finally:
        await client.close()


def listed(sim: simulator.Simulator, model: str) -> dict[str, Any]:
    return next(m for m in sim.state.listing if m["id"] == model)


def expected_ticks(sim: simulator.Simulator, model: str, usage: dict[str, Any]) -> int:
    return simulator.price_ticks(sim.state, model, usage)


async def test_listing_is_fetched_with_the_env_key_and_prices_calls(
    sim: simulator.Simulator, start_daemon: DaemonFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XAI_API_KEY", "xai-env-key")
    meter = await start_priced(start_daemon, sim)
    await first_prices(meter)  # fetched at start, before any call
    [listing_call] = sim.state.requests_to("/v1/language-models")
    assert listing_call.headers["Authorization"] == "Bearer xai-env-key"
    assert (
        meter.metric("xai_meter_price_usd_per_million_tokens", model="grok-3", type="input") == 3.0
    )
    assert (
        meter.metric("xai_meter_price_usd_per_million_tokens", model="grok-3", type="cached_input")
        == 0.75
    )
    assert (
        meter.metric("xai_meter_price_usd_per_million_tokens", model="grok-3", type="output")
        == 15.0
    )
    assert (meter.metric("xai_meter_price_refresh_last_success_timestamp_seconds") or 0) > 0

    resp = await chat(meter, "grok-4-fast")
    [row] = await meter.rows(1)
    usage = resp.usage.model_dump()
    ticks = expected_ticks(sim, "grok-4-fast-reasoning", usage)
    assert row["reported_cost_ticks"] == usage["cost_in_usd_ticks"] == ticks
    assert row["computed_cost_ticks"] == ticks
    assert (row["cost_ticks"], row["cost_source"]) == (ticks, "reported")
    assert row["price_id"] is not None
    assert meter.metric(
        "xai_meter_cost_usd_total", provider="xai", model="grok-4-fast-reasoning"
    ) == pytest.approx(ticks / 1e10)


async def test_client_key_fetches_prices_when_no_env_key(
    sim: simulator.Simulator, start_daemon: DaemonFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XAI_API_KEY", raising=False)
    sim.state.report_cost = False
    meter = await start_priced(start_daemon, sim)
    assert sim.state.requests_to("/v1/language-models") == []
    resp = await chat(meter, "grok-3")  # priced later, by backfill, once the listing arrives
    await first_prices(meter)
    [listing_call] = sim.state.requests_to("/v1/language-models")
    assert listing_call.headers["Authorization"] == f"Bearer {TEST_KEY}"
    [row] = await meter.rows(1)
    db_row = await meter.daemon.ledger.run_in_writer(
        lambda: (
            meter.daemon.ledger.db()
            .execute("select cost_ticks, cost_source from calls where id = ?", [row["id"]])
            .fetchone()
        )
    )
    ticks = expected_ticks(sim, "grok-3", resp.usage.model_dump())
    assert tuple(db_row) == (ticks, "computed")


async def test_reported_call_before_any_price_gets_its_computed_cost_later(
    sim: simulator.Simulator, start_daemon: DaemonFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XAI_API_KEY", raising=False)
    meter = await start_priced(start_daemon, sim)
    resp = await chat(meter, "grok-3")  # its key starts the first fetch: no prices yet
    await first_prices(meter)  # the fetch, then the backfill, are done
    await meter.rows(1)
    got = await meter.daemon.ledger.run_in_writer(
        lambda: (
            meter.daemon.ledger.db()
            .execute("select computed_cost_ticks, cost_ticks from calls")
            .fetchone()
        )
    )
    ticks = expected_ticks(sim, "grok-3", resp.usage.model_dump())
    assert tuple(got) == (ticks, ticks)
    assert meter.metric("xai_meter_backfilled_total") == 0  # its spend was counted already


async def test_failing_listing_retries_keeps_old_prices_and_counts(
    sim: simulator.Simulator, start_daemon: DaemonFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XAI_API_KEY", "xai-env-key")
    meter = await start_priced(start_daemon, sim)
    await first_prices(meter)
    before = len(sim.state.requests_to("/v1/language-models"))
    sim.state.listing_status = 503
    assert meter.daemon.prices.refresher is not None
    assert await meter.daemon.prices.refresher.refresh() is None
    assert len(sim.state.requests_to("/v1/language-models")) - before == 5  # tenacity attempts
    assert meter.metric("xai_meter_price_refresh_failures_total") == 1
    assert (
        meter.metric("xai_meter_price_usd_per_million_tokens", model="grok-3", type="input") == 3.0
    )  # old prices kept
    sim.state.report_cost = False
    resp = await chat(meter, "grok-3")
    [row] = await meter.rows(1)
    assert (row["cost_source"], row["cost_ticks"]) == (
        "computed",
        expected_ticks(sim, "grok-3", resp.usage.model_dump()),
    )


async def test_price_change_mid_run_prices_each_call_at_its_time(
    sim: simulator.Simulator, start_daemon: DaemonFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XAI_API_KEY", "xai-env-key")
    sim.state.report_cost = False
    meter = await start_priced(start_daemon, sim)
    await first_prices(meter)
    before = await chat(meter, "grok-3")
    old = expected_ticks(sim, "grok-3", before.usage.model_dump())
    model = listed(sim, "grok-3")
    model["prompt_text_token_price"] //= 2
    model["completion_text_token_price"] //= 2
    await refresh(meter)
    after = await chat(meter, "grok-3")
    new = expected_ticks(sim, "grok-3", after.usage.model_dump())
    rows = await meter.rows(2)
    assert [r["computed_cost_ticks"] for r in rows] == [old, new]
    assert new < old and rows[0]["price_id"] != rows[1]["price_id"]
    assert (
        meter.metric("xai_meter_price_usd_per_million_tokens", model="grok-3", type="input") == 1.5
    )


async def test_unknown_model_is_unpriced_then_backfilled(
    sim: simulator.Simulator, start_daemon: DaemonFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XAI_API_KEY", "xai-env-key")
    sim.state.report_cost = False
    sim.state.accept_unknown_models = True
    meter = await start_priced(start_daemon, sim)
    await first_prices(meter)
    resp = await chat(meter, "grok-9-preview")
    [row] = await meter.rows(1)
    assert (row["cost_source"], row["cost_ticks"]) == ("unpriced", None)
    assert meter.metric("xai_meter_unpriced_total", model="grok-9-preview") == 1
    sim.state.listing.append(
        {
            **listed(sim, "grok-3"),
            "id": "grok-9-preview",
            "aliases": [],
            "prompt_text_token_price": 11000,
            "cached_prompt_text_token_price": 1100,
            "completion_text_token_price": 99000,
        }
    )
    await refresh(meter)
    usage = resp.usage.model_dump()
    want = compute_cost(
        Usage(
            input_tokens=usage["prompt_tokens"],
            cached_input_tokens=usage["prompt_tokens_details"]["cached_tokens"],
            output_tokens=usage["completion_tokens"]
            + usage["completion_tokens_details"]["reasoning_tokens"],
        ),
        ModelPrice("grok-9-preview", input=11000, cached_input=1100, output=99000),
    )
    got = await meter.daemon.ledger.run_in_writer(
        lambda: (
            meter.daemon.ledger.db().execute("select cost_ticks, cost_source from calls").fetchone()
        )
    )
    assert tuple(got) == (want, "computed")
    assert meter.metric("xai_meter_backfilled_total") == 1
    assert meter.metric(
        "xai_meter_cost_usd_total", provider="xai", model="grok-9-preview"
    ) == pytest.approx(want / 1e10)


async def test_reconciliation_shows_upstream_billing_differently(
    sim: simulator.Simulator, start_daemon: DaemonFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XAI_API_KEY", "xai-env-key")
    meter = await start_priced(start_daemon, sim)
    await first_prices(meter)
    await chat(meter, "grok-3")
    sim.state.billing_ratio = (11, 10)  # xAI now bills 10% more than its listing says
    await chat(meter, "grok-3")
    rows = await meter.rows(2)
    assert rows[0]["reported_cost_ticks"] == rows[0]["computed_cost_ticks"]
    assert rows[1]["reported_cost_ticks"] == rows[1]["computed_cost_ticks"] * 11 // 10
    reported = meter.metric(
        "xai_meter_reconciled_reported_usd_total", provider="xai", model="grok-3"
    )
    computed = meter.metric(
        "xai_meter_reconciled_computed_usd_total", provider="xai", model="grok-3"
    )
    assert reported is not None and computed is not None
    gap = (rows[1]["reported_cost_ticks"] - rows[1]["computed_cost_ticks"]) / 1e10
    assert reported - computed == pytest.approx(gap)


async def test_restart_without_network_still_prices(
    sim: simulator.Simulator,
    start_daemon: DaemonFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XAI_API_KEY", "xai-env-key")
    ledger = tmp_path / "kept.db"
    first = await start_priced(start_daemon, sim, ledger=ledger)
    await first_prices(first)
    await first.daemon.stop()
    sim.state.listing_status = 503
    sim.state.report_cost = False
    second = await start_priced(start_daemon, sim, ledger=ledger)
    assert (
        second.metric("xai_meter_price_usd_per_million_tokens", model="grok-3", type="output")
        == 15.0
    )  # loaded from the ledger at start
    resp = await chat(second, "grok-3")
    [row] = await second.rows(1)
    assert (row["cost_source"], row["cost_ticks"]) == (
        "computed",
        expected_ticks(sim, "grok-3", resp.usage.model_dump()),
    )


async def test_override_wins_over_the_listing(
    sim: simulator.Simulator, start_daemon: DaemonFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XAI_API_KEY", "xai-env-key")
    sim.state.report_cost = False
    meter = await start_priced(
        start_daemon, sim, pricing__overrides={"grok-3": {"input": 1.0, "output": 2.0}}
    )
    await first_prices(meter)
    resp = await chat(meter, "grok-3")
    [row] = await meter.rows(1)
    u = resp.usage.model_dump()
    cached = u["prompt_tokens_details"]["cached_tokens"]
    # input and output overridden; the cached price still comes from the listing (7500)
    want = (u["prompt_tokens"] - cached) * 10_000 + cached * 7500 + u["completion_tokens"] * 20_000
    assert row["cost_ticks"] == want and row["cost_source"] == "computed"


async def test_prices_and_report_commands(
    sim: simulator.Simulator,
    start_daemon: DaemonFactory,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("XAI_API_KEY", "xai-env-key")
    meter = await start_priced(start_daemon, sim)
    await first_prices(meter)
    r1 = await chat(meter, "grok-3")
    r2 = await chat(meter, "grok-4-fast")
    rows = await meter.rows(2)
    ledger = meter.daemon.settings.ledger.path

    assert main(["prices", "--ledger", ledger]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("grok-3 "))
    assert "3.00" in line and "0.75" in line and "15.00" in line and "grok-3-latest" in line

    assert main(["report", "--ledger", ledger, "--format", "json", "--by", "model"]) == 0
    report = {r["model"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    for resp, row in zip((r1, r2), rows, strict=True):
        got = report[resp.model]
        assert got["calls"] == 1
        assert got["input_tokens"] == resp.usage.prompt_tokens
        assert got["cost_ticks"] == row["cost_ticks"]
    assert main(["report", "--ledger", ledger, "--since", "7d", "--by", "day"]) == 0
    assert "cost $" in capsys.readouterr().out
    assert (
        main(["report", "--ledger", ledger, "--since", "yesterday-ish"]) == 2
    )  # a user error: exit 2
    assert "--since" in capsys.readouterr().err
