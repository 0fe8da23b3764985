"""Fingerprint watch: changes counted by kind, state kept across restarts, webhook, CLI."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from daemon import simulator
from daemon.cli import main
from daemon.meter.fingerprints import FingerprintTracker
from daemon.metrics import Metrics
from daemon.testing import TEST_KEY, DaemonFactory, RunningDaemon, make_record


async def chat(meter: RunningDaemon, model: str = "grok-3") -> Any:
    client = openai.AsyncOpenAI(base_url=meter.base_url, api_key=TEST_KEY, max_retries=0)
    try:
        return await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "fingerprint?"}]
        )
    finally:
        await client.close()


def info(meter: RunningDaemon, fingerprint: str, model: str = "grok-3") -> float | None:
    return meter.metric(
        "xai_meter_fingerprint_info", provider="xai", model=model, fingerprint=fingerprint
    )


def changes(meter: RunningDaemon, kind: str, model: str = "grok-3") -> float:
    return (
        meter.metric("xai_meter_fingerprint_changes_total", provider="xai", model=model, kind=kind)
        or 0
    )


async def test_new_and_known_changes(meter: RunningDaemon, sim: simulator.Simulator) -> None:
    first = (await chat(meter)).system_fingerprint
    assert info(meter, first) == 1 and changes(meter, "new") == 0  # first sighting: no change
    sim.state.fingerprints["grok-3"] = "fp_backend_b"
    await chat(meter)
    assert info(meter, "fp_backend_b") == 1
    assert info(meter, first) is None  # the old series is removed, not left at 0
    assert (changes(meter, "new"), changes(meter, "known")) == (1, 0)
    sim.state.fingerprints["grok-3"] = first  # flapping back to a known backend
    await chat(meter)
    assert (changes(meter, "new"), changes(meter, "known")) == (1, 1)
    rows = await meter.rows(3)
    assert (
        meter.metric(
            "xai_meter_fingerprint_last_change_timestamp_seconds", provider="xai", model="grok-3"
        )
        == rows[2]["started_at"]
    )
    await meter.daemon.ledger.drained()
    got = await meter.daemon.ledger.run_in_writer(
        lambda: [
            tuple(r)
            for r in (
                meter.daemon.ledger.db().execute(
                    "select old, new, kind from fingerprint_changes order by id"
                )
            )
        ]
    )
    assert got == [(first, "fp_backend_b", "new"), ("fp_backend_b", first, "known")]


async def test_restart_raises_no_false_change(
    sim: simulator.Simulator, start_daemon: DaemonFactory, tmp_path: Path
) -> None:
    ledger = tmp_path / "fp.db"
    first = await start_daemon(sim.url, ledger=ledger)
    await chat(first)
    sim.state.fingerprints["grok-3"] = "fp_backend_b"
    await chat(first)
    await first.rows(2)
    await first.daemon.stop()

    second = await start_daemon(sim.url, ledger=ledger)
    assert info(second, "fp_backend_b") == 1  # known at start, from the ledger
    await chat(second)
    assert changes(second, "new") == changes(second, "known") == 0
    sim.state.fingerprints["grok-3"] = simulator.default_fingerprints()["grok-3"]
    await chat(second)
    assert changes(second, "known") == 1 and changes(second, "new") == 0


@pytest.fixture
async def webhook() -> AsyncIterator[tuple[str, list[dict[str, Any]], asyncio.Event]]:
    received: list[dict[str, Any]] = []
    done = asyncio.Event()
    attempts = 0

    async def hook(request: web.Request) -> web.Response:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            return web.Response(status=503)  # the first try fails: it must be retried
        received.append(await request.json())
        done.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}/hook", received, done
    await runner.cleanup()


async def test_webhook_gets_each_change(
    sim: simulator.Simulator,
    start_daemon: DaemonFactory,
    webhook: tuple[str, list[dict[str, Any]], asyncio.Event],
) -> None:
    url, received, done = webhook
    meter = await start_daemon(sim.url, alerts__webhook_url=url)
    old = (await chat(meter)).system_fingerprint
    sim.state.fingerprints["grok-3"] = "fp_backend_c"
    await chat(meter)
    async with asyncio.timeout(5):
        await done.wait()
    [event] = received
    assert {k: event[k] for k in ("event", "provider", "model", "old", "new", "kind")} == {
        "event": "fingerprint_changed",
        "provider": "xai",
        "model": "grok-3",
        "old": old,
        "new": "fp_backend_c",
        "kind": "new",
    }
    assert isinstance(event["at"], float)


def test_listing_mismatch_gauge() -> None:
    metrics = Metrics(CollectorRegistry())
    tracker = FingerprintTracker(metrics)
    record = make_record(id="1", started_at=1.0, model="grok-3-mini-high", fingerprint="fp_a")
    tracker.observe(record)
    tracker.set_listing({"grok-3-mini": "fp_a"}, lambda name: "grok-3-mini")
    labels = {"provider": "xai", "model": "grok-3-mini-high"}
    assert metrics.registry.get_sample_value("xai_meter_fingerprint_listing_mismatch", labels) == 0
    tracker.set_listing({"grok-3-mini": "fp_z"}, lambda name: "grok-3-mini")
    assert metrics.registry.get_sample_value("xai_meter_fingerprint_listing_mismatch", labels) == 1


def test_error_responses_do_not_move_the_fingerprint() -> None:
    metrics = Metrics(CollectorRegistry())
    tracker = FingerprintTracker(metrics)
    ok = make_record(id="1", started_at=1.0, model="grok-3", fingerprint="fp_a")
    bad = make_record(id="2", started_at=2.0, model="grok-3", fingerprint="fp_b", status=500)
    tracker.observe(ok)
    tracker.observe(bad)
    assert tracker.current() == {("xai", "grok-3"): "fp_a"}


async def test_fingerprints_command(
    meter: RunningDaemon, sim: simulator.Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    old = (await chat(meter)).system_fingerprint
    sim.state.fingerprints["grok-3"] = "fp_backend_d"
    await chat(meter)
    await chat(meter, "grok-4-fast")
    await meter.rows(3)
    await meter.daemon.ledger.drained()
    ledger = meter.daemon.settings.ledger.path
    assert main(["fingerprints", "--ledger", ledger, "--model", "grok-3", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    seen = {(r["fingerprint"], r["calls"]) for r in rows if r["record"] == "seen"}
    assert seen == {(old, 1), ("fp_backend_d", 1)}
    [change] = [r for r in rows if r["record"] == "change"]
    assert (change["old"], change["new"], change["kind"]) == (old, "fp_backend_d", "new")
    assert main(["fingerprints", "--ledger", ledger]) == 0
    out = capsys.readouterr().out
    assert "grok-4-fast-reasoning" in out and "fp_backend_d" in out
