"""The dashboards and rules on a real Prometheus scraping two real daemons fed with real traffic.

Two daemons, as a fleet of two hosts would run them, both relaying to the one simulator, both
scraped by the one Prometheus as targets of job xai-meter, in the two ways a fleet keeps its
ledger (the test is parametrized):

- ``sqlite``: each daemon its own SQLite ledger and salt, so one key has a key_id on each, and
  each ledger records the fingerprint change it saw;
- ``postgresql``: both on ONE PostgreSQL database (issue 15; the session's cluster, a new
  database: ``pg_url`` in tests/conftest.py), one salt file, each its own ``ledger.instance``:
  one key has one key_id on both (so the per-key series agree), and the change both see is
  one ``fingerprint_changes`` row.

Each round of traffic goes through both. The fleet recording rules must add them up (the spend
rule is the sum of both daemons' rates, and the spend Prometheus sees is the ledger's total
cost, to the tick: one SQL sum over the shared database, or both files' sums), Prometheus
itself must hold exactly one FingerprintChangedNew alert (its ALERTS series, pending: the
rule's ``for`` is a minute) for the change both see, with no instance, the ledger must hold
one row per call the daemons counted, the dashboards' queries (with $instance on All) must
have data, and the $instance variable must list both.

There is no Grafana here, so the dashboards are proven the way Grafana would run them: every
panel query, annotation and variable (with the variables set to "All" and Grafana's interval
macros to concrete durations) and every recording and alert rule expression goes through
Prometheus' HTTP API after traffic has flowed through the daemon; each must be valid PromQL and
every dashboard and recording query must return data. Prometheus must have loaded both rule
files and evaluated every rule without error, and exactly the alerts this traffic calls for must
have a non-empty expression (a new fingerprint among them; the change back to a known one is
not alerted on).

The daemon runs with a management key against the simulator's Management and Billing API, so
the Billing and API keys panels, their rules and alerts are proven the same way: the test's key
has limits and an expiry (far from alerting), and yesterday's bill holds half a cent for it
that the ledger has not (a gap below the alert's cent). Without a management key those series
do not exist; the queries are the same PromQL, valid either way.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from daemon import simulator
from daemon.ledger.engine import open_ledger
from daemon.ledger.reports import report
from daemon.ledger.store import fingerprint_history
from daemon.meter import Sink
from daemon.record import CallRecord
from daemon.simulator.auth import api_key_id
from daemon.simulator.state import ManagedKey
from daemon.testing import (
    DASHBOARDS,
    JSON_FILES,
    DaemonFactory,
    RunningDaemon,
    alerts,
    binary,
    dashboard_queries,
    label_values,
    ledger_rows,
    recordings,
)
from daemon.units import TICKS_PER_USD
from daemon.windows import parse_window

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

# Grafana's variables as a dashboard would send them with every variable on "All".
MACROS = {
    "__rate_interval": "1m",
    "__range": "1h",
    "__interval": "15s",
    "instance": ".*",
    "provider": ".*",
    "model": ".*",
    "app": ".*",
}
# The alerts this test's traffic calls for (see traffic()); every other one must stay empty.
EXPECTED_ALERTS = {
    "FingerprintChangedNew",
    "UpstreamErrorRateHigh",
    "RateLimited",
    "UnmeteredCallsHigh",
    "UnpricedCallsHigh",
}
MESSAGES = [{"role": "user", "content": "How much does this cost?"}]
NEW_FINGERPRINT = "fp_new"
APP_KEY = "test"  # the key every call of traffic() sends
YESTERDAYS_BILL_TICKS = 50_000_000  # $0.005: a gap under BillingReconciliationGap's cent


def substitute(expr: str) -> str:
    return re.sub(r"\$(\w+)", lambda m: MACROS[m.group(1)], expr)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_prometheus(tmp: Path, targets: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    """Prometheus on a loopback port with dashboards/prometheus.yml, sped up, on `targets`."""
    config = yaml.safe_load((DASHBOARDS / "prometheus.yml").read_text())
    config["global"] = {
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "evaluation_interval": "1s",
    }
    config["rule_files"] = [str(DASHBOARDS / path) for path in config["rule_files"]]
    [job] = config["scrape_configs"]
    job["static_configs"] = [{"targets": targets}]
    config_path = tmp / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    with open(tmp / "prometheus.log", "wb") as log:
        process = subprocess.Popen(
            [
                binary("prometheus"),
                f"--config.file={config_path}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return process, f"http://127.0.0.1:{port}"


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


async def until(check: Callable[[], Awaitable[bool]], what: str, within: float) -> None:
    """Poll an external process' state: short sleeps, hard deadline."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.1)


class Prometheus:
    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url

    async def get(self, path: str, **params: str) -> dict[str, Any]:
        async with self.session.get(self.url + path, params=params) as resp:
            body: dict[str, Any] = await resp.json(content_type=None)
            return body

    async def query(self, expr: str) -> dict[str, Any]:
        return await self.get("/api/v1/query", query=expr)

    async def value(self, expr: str) -> float | None:
        result = (await self.query(expr))["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    async def ready(self) -> bool:
        try:
            async with self.session.get(self.url + "/-/ready") as resp:
                return resp.status == 200
        except aiohttp.ClientConnectionError:
            return False


async def chat(
    session: aiohttp.ClientSession,
    meter: RunningDaemon,
    model: str,
    *,
    stream: bool = False,
    headers: dict[str, str] | None = None,
) -> int:
    body = {"model": model, "messages": MESSAGES, "stream": stream}
    async with session.post(
        f"{meter.base_url}/chat/completions",
        json=body,
        headers={"Authorization": "Bearer test", **(headers or {})},
    ) as resp:
        await resp.read()
        return resp.status


async def traffic(
    session: aiohttp.ClientSession, meter: RunningDaemon, sim: simulator.Simulator
) -> None:
    """One round: priced calls with apps, cached and reasoning tokens, streams with a first
    token (one with the upstream's rate-limit and TTFT headers), a 429, a 500, a call without
    usage (unmetered) and one to an unlisted model whose cost the upstream does not report
    (unpriced)."""
    assert (
        await chat(
            session, meter, "grok-3", headers={"X-Meter-App": "demo", "X-Sim-Cached-Tokens": "3"}
        )
        == 200
    )
    assert (
        await chat(session, meter, "grok-3-mini", stream=True, headers={"X-Meter-App": "batch"})
        == 200
    )
    upstream_headers = (
        "x-ratelimit-limit-requests=480;x-ratelimit-remaining-requests=479;"
        "x-ratelimit-limit-tokens=2000000;x-ratelimit-remaining-tokens=1999000;"
        "x-metrics-ttft-ms=180"
    )
    assert (
        await chat(
            session,
            meter,
            "grok-4-fast",
            stream=True,
            headers={"X-Sim-Reply-Headers": upstream_headers},
        )
        == 200
    )
    assert await chat(session, meter, "grok-3", headers={"X-Sim-Status": "429"}) == 429
    assert await chat(session, meter, "grok-3", headers={"X-Sim-Status": "500"}) == 500
    assert await chat(session, meter, "grok-3", headers={"X-Sim-Usage": "none"}) == 200
    sim.state.report_cost = False
    try:
        assert await chat(session, meter, "grok-9-preview") == 200
    finally:
        sim.state.report_cost = True


def local_total(meter: RunningDaemon, name: str) -> float:
    return sum(
        sample.value
        for family in meter.registry.collect()
        for sample in family.samples
        if sample.name == name
    )


def admin_target(meter: RunningDaemon) -> str:
    return meter.admin_url.removeprefix("http://")


def results(body: dict[str, Any]) -> list[dict[str, Any]]:
    assert body["status"] == "success", body
    data: list[dict[str, Any]] = body["data"]["result"]
    return data


def finite(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(r["value"][1])) for r in result)


def ledger_facts(where: str) -> tuple[dict[str, Any], list[tuple[str, str, str]], set[str]]:
    """What the ledger at `where` (a SQLite file or a PostgreSQL URL) holds: `report`'s total
    over the last day (one SQL sum: ``calls``, exact ``cost_ticks``), grok-3's fingerprint
    changes as (old, new, kind), and the instances that wrote its rows."""
    db = open_ledger(where, readonly=True)
    try:
        total = report(db, parse_window("1d", time.time()), "model").total
        _, changes = fingerprint_history(db, "grok-3")
    finally:
        db.close()
    instances = {row["instance"] for row in ledger_rows(where)}
    return total, [(c["old"], c["new"], c["kind"]) for c in changes], instances


def dashboard_targets() -> Iterator[tuple[str, str]]:
    for path in JSON_FILES:
        for where, expr in dashboard_queries(json.loads(path.read_text())):
            if not where.startswith("variable"):
                yield f"{path.name}: {where}", expr


@pytest.mark.parametrize("ledger", ["sqlite", "postgresql"])
async def test_every_query_and_rule_on_a_real_prometheus(
    ledger: str,
    request: pytest.FixtureRequest,
    start_daemon: DaemonFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    binary("prometheus")
    shared = ledger == "postgresql"
    on_ledger: dict[str, str] = {}
    if shared:  # pg_url skips without PostgreSQL, and fails under CI=true
        on_ledger = {
            "ledger__url": request.getfixturevalue("pg_url"),
            "ledger__salt_path": str(tmp_path / "xai-meter.salt"),
        }
    monkeypatch.setenv("XAI_API_KEY", "xai-env-key")  # the daemons fetch prices at start
    sim = await simulator.start()
    sim.state.accept_unknown_models = True
    original = sim.state.fingerprints["grok-3"]
    # The Management API: the app's key with limits far above its use and an expiry a month
    # away; a bill for it yesterday, which the first refresh reconciles (hour 0: due at once).
    monkeypatch.setenv("XAI_MANAGEMENT_KEY", sim.state.management_key)
    now = datetime.now(UTC)
    app = api_key_id(APP_KEY)
    sim.state.managed_keys[app] = ManagedKey(
        app,
        name="live-test",
        tpm=10_000_000,
        qpm=100_000,
        expire_time=(now + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    yesterday = (now - timedelta(days=1)).date().isoformat()
    sim.state.billing_book[(yesterday, app, "prompt_text_tokens")] = YESTERDAYS_BILL_TICKS
    process: subprocess.Popen[bytes] | None = None
    try:
        # Two daemons, each with its own SQLite ledger (and salt beside it), or both on the
        # PostgreSQL one with one salt (each its own journal beside its ledger.path); both with
        # the management key: every daemon reports the team's billing gauges alike.
        meters: list[RunningDaemon] = []
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            meter = await start_daemon(
                sim.url,
                ledger=tmp_path / name / "ledger.db",
                ledger__instance=name,
                **on_ledger,
                pricing__refresh=True,
                management__base_url=sim.url,
                management__refresh_interval=3600,  # refreshed by hand below
                management__reconcile_hour_utc=0,
            )
            async with asyncio.timeout(10):
                await meter.daemon.prices.updated.wait()
            management = meter.daemon.management
            assert management is not None
            async with asyncio.timeout(10):
                await management.refreshed.wait()
            gap = meter.metric("xai_meter_billing_reconciliation_gap_usd", api_key_id=app)
            assert gap == -0.005
            meters.append(meter)
        first = meters[0]

        def fault(record: CallRecord) -> None:
            if record.model == "grok-3-mini":
                raise RuntimeError("a sink fault injected by test_prometheus_live")

        # A healthy daemon has no sink errors; one failing sink gives their panel data.
        first.daemon.meter.sinks = (*first.daemon.meter.sinks, Sink("live_test_fault", fault))

        targets = [admin_target(meter) for meter in meters]
        process, url = start_prometheus(tmp_path, targets)
        async with aiohttp.ClientSession() as session:
            prom = Prometheus(session, url)
            await until(prom.ready, "Prometheus to start", 20)
            await until(
                partial(_equals, prom, 'sum(up{job="xai-meter"})', 2.0),
                "the first scrape of both daemons",
                10,
            )

            # Three rounds through both daemons, each seen by a scrape before the next: every
            # counter moves between scrapes, so rates are not zero. grok-3 changes to a new
            # fingerprint in round 2 (both daemons see it) and back to its known one in round 3.
            for round_ in range(3):
                if round_ == 1:
                    sim.state.fingerprints["grok-3"] = NEW_FINGERPRINT
                elif round_ == 2:
                    sim.state.fingerprints["grok-3"] = original
                for meter in meters:
                    await traffic(session, meter, sim)
                calls = sum(local_total(meter, "xai_meter_requests_total") for meter in meters)
                await until(
                    partial(_equals, prom, "sum(xai_meter_requests_total)", calls),
                    f"a scrape of round {round_ + 1}",
                    10,
                )

            key_ids = set()
            for meter in meters:
                # The app's key is in traffic now: this refresh joins it to its api_key_id.
                management = meter.daemon.management
                assert management is not None
                await management.refresh()
                key_id = meter.daemon.keys.key_id(APP_KEY)
                key_ids.add(key_id)
                info = {
                    "key_id": key_id,
                    "api_key_id": app,
                    "name": "live-test",
                    "disabled": "false",
                }
                assert meter.registry.get_sample_value("xai_meter_api_key_info", info) == 1.0
                for kind in ("new", "known"):
                    assert (
                        meter.metric(
                            "xai_meter_fingerprint_changes_total",
                            provider="xai",
                            model="grok-3",
                            kind=kind,
                        )
                        == 1.0
                    ), kind
            # One salt (the shared ledger's): one key_id for the key; a salt each: two.
            assert len(key_ids) == (1 if shared else 2), key_ids

            async def recorded() -> bool:
                for rule in recordings():
                    if not finite(results(await prom.query(rule["record"]))):
                        return False
                return True

            await until(recorded, "every recording rule to have a value", 20)

            # The per-key series: each key_id's series comes from the daemons that know it
            # by that id, both of them on a shared salt.
            per_key = results(
                await prom.query(
                    "count by (key_id) (count by (key_id, instance) (xai_meter_key_requests_total))"
                )
            )
            assert {r["metric"]["key_id"]: float(r["value"][1]) for r in per_key} == (
                dict.fromkeys(key_ids, 2.0 if shared else 1.0)
            )

            # Both rule files loaded; every rule evaluated without error.
            groups = (await prom.get("/api/v1/rules"))["data"]["groups"]
            loaded = [rule for group in groups for rule in group["rules"]]
            assert len(loaded) == len(recordings()) + len(alerts())
            broken = [(r["name"], r.get("lastError")) for r in loaded if r["health"] != "ok"]
            assert not broken, broken

            problems = []
            for where, expr in dashboard_targets():
                body = await prom.query(substitute(expr))
                if body["status"] != "success":
                    problems.append(f"{where}: invalid: {body.get('error')}\n  {expr}")
                elif not finite(body["data"]["result"]):
                    problems.append(f"{where}: no data: {body['data']['result']}\n  {expr}")
            for rule in recordings():
                if not finite(results(await prom.query(rule["expr"]))):
                    problems.append(f"record {rule['record']}: no data\n  {rule['expr']}")
            assert not problems, "\n".join(problems)

            # The ledger: one row per call the daemons counted (each daemon's written), each
            # naming its daemon; the one shared database, or each daemon's file.
            calls = 0
            for meter in meters:
                count = int(local_total(meter, "xai_meter_requests_total"))
                async with asyncio.timeout(10):
                    await meter.daemon.ledger.wait_written(count)
                    await meter.daemon.ledger.drained()  # and the fingerprint changes
                calls += count
            ledgers = {name: meter.ledger for name, meter in zip("ab", meters, strict=True)}
            if shared:
                ledgers = {"ab": meters[0].ledger}
            ledger_ticks = 0
            for names, where in ledgers.items():
                total, changes, instances = await asyncio.to_thread(ledger_facts, where)
                ledger_ticks += total["cost_ticks"]
                calls -= total["calls"]
                assert instances == set(names), where
                # The change both daemons saw, and the change back: recorded once in a ledger,
                # however many of its daemons saw it.
                assert changes == [
                    (original, NEW_FINGERPRINT, "new"),
                    (NEW_FINGERPRINT, original, "known"),
                ], where
            assert calls == 0, "a call without its row, or a row without its call"
            assert ledger_ticks > 0
            # What Prometheus has of the fleet's spend is the ledger's, to the tick. Each daemon
            # adds cost_ticks / 1e10 per call to a float64 counter, which the exposition (repr)
            # and Prometheus' storage keep exactly, and Prometheus sums the series: with n < 100
            # additions the relative error is under n * 2**-53 (about 1e-14), far below half
            # a tick of totals this size (under 1e9 ticks), so rounding gives the exact ticks.
            seen = await prom.value("sum(xai_meter_cost_usd_total)")
            assert seen is not None and round(seen * TICKS_PER_USD) == ledger_ticks, seen

            # The fleet spend rule is the sum of the two daemons' rates, at the time it ran.
            async def fleet_rule_adds_up() -> bool:
                return await _rule_is_the_sum(
                    prom,
                    "xai_meter:spend_usd_per_hour:rate5m",
                    "sum by (provider, model) "
                    '(rate(xai_meter_cost_usd_total{{instance="{}"}}[5m])) * 3600',
                    targets,
                )

            await until(fleet_rule_adds_up, "the fleet spend rule to sum both daemons", 10)

            scopes = {rule["alert"]: rule["labels"]["scope"] for rule in alerts()}
            firing: dict[str, list[dict[str, Any]]] = {}
            for rule in alerts():
                result = results(await prom.query(rule["expr"]))  # valid PromQL, or it fails
                if result:
                    firing[rule["alert"]] = result
            assert set(firing) == EXPECTED_ALERTS, firing
            # Both daemons saw the change: one alert, for the model, of no instance.
            [change] = firing["FingerprintChangedNew"]
            assert (change["metric"]["model"], change["metric"]["kind"]) == ("grok-3", "new")
            # One change (increase() extrapolates a little past 1); a sum of the two daemons'
            # changes would read 2 and more.
            assert 1.0 <= float(change["value"][1]) < 2.0, change
            # ... and Prometheus' own evaluation of the rule holds one alert: its ALERTS series,
            # pending (the rule's `for` is a minute, longer than this test runs).
            fingerprint_alert = 'ALERTS{alertname="FingerprintChangedNew"}'

            async def alerted() -> bool:
                return bool(results(await prom.query(fingerprint_alert)))

            await until(alerted, "Prometheus to evaluate FingerprintChangedNew", 10)
            [alert] = results(await prom.query(fingerprint_alert))
            assert alert["metric"] == {
                "__name__": "ALERTS",
                "alertname": "FingerprintChangedNew",
                "alertstate": "pending",
                "provider": "xai",
                "model": "grok-3",
                "kind": "new",
                "severity": "warning",
                "scope": "fleet",
            }, alert
            for name, result in firing.items():
                if scopes[name] == "fleet":
                    assert all("instance" not in r["metric"] for r in result), (name, result)

            # The variables list what the traffic produced, and both daemons.
            for path in JSON_FILES:
                board = json.loads(path.read_text())
                for variable in board["templating"]["list"]:
                    if variable["type"] != "query":
                        continue
                    selector, label = label_values(variable["query"])
                    body = await prom.get(
                        f"/api/v1/label/{label}/values", **{"match[]": substitute(selector)}
                    )
                    want = {
                        "instance": set(targets),
                        "provider": {"xai"},
                        "model": {"grok-3", "grok-3-mini"},
                        "app": {"demo", "batch"},
                    }[variable["name"]]
                    assert want <= set(body["data"]), (variable["name"], body)
    finally:
        if process is not None:
            stop(process)
        await sim.close()


async def _rule_is_the_sum(
    prom: Prometheus, record: str, per_instance: str, instances: list[str]
) -> bool:
    """At one of the rule's evaluations in the last minute (newest first), every series of
    `record` equals the sum over `instances` of `per_instance` (a format string taking the
    instance) evaluated at that evaluation's time. An evaluation that ran while a scrape with
    an earlier timestamp was still being ingested did not see it, and never will match: the
    ones with no scrape in flight decide (False when none yet: the caller polls again)."""
    series_list = results(await prom.query(f"{record}[1m]"))
    if not series_list:
        return False
    by_time: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for series in series_list:
        labels = tuple(sorted((k, v) for k, v in series["metric"].items() if k != "__name__"))
        for at, value in series["values"]:
            by_time.setdefault(str(at), {})[labels] = float(value)
    for at in sorted(by_time, key=float, reverse=True)[:20]:
        want = by_time[at]
        if len(want) != len(series_list):
            continue  # not every series was evaluated then
        totals = dict.fromkeys(want, 0.0)
        for instance in instances:
            body = await prom.get("/api/v1/query", query=per_instance.format(instance), time=at)
            for part in results(body):
                labels = tuple(sorted(part["metric"].items()))
                if labels in totals:
                    totals[labels] += float(part["value"][1])
        if all(math.isclose(want[k], totals[k], rel_tol=1e-9) for k in want):
            return True
    return False


async def _equals(prom: Prometheus, expr: str, want: float) -> bool:
    return await prom.value(expr) == want
