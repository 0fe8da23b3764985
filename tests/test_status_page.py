"""The status page in a real headless Chromium (Debian's `chromium`), driven over the DevTools
protocol (aiohttp's WebSocket client): a real daemon relays real calls to the simulator (two
named keys, three models, two apps, a fingerprint change, an error, an unmetered and an
unpriced call; then realistic sizes: 5 to 7 digit token counts, a key named as another, a model
name longer than any column), the page renders with no script error and nothing fetched from
elsewhere, every number it shows equals the ledger's exactly, it refreshes itself, and the range
picker works. At 1400 and at 800 px wide nothing scrolls sideways, every cost cell is in view,
and chart text stays in its chart.

A screenshot is kept: ``<basetemp>/status-page.png`` and ``tests/artifacts/status-page.png``;
the layout test adds ``<basetemp>/status-page-1400px.png`` and ``status-page-800px.png``.
Without chromium the test skips, loudly; under CI (``CI`` set) it fails instead.
"""

from __future__ import annotations

import asyncio
import base64
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from daemon import simulator
from daemon.report_output import count
from daemon.testing import (
    STATUS_FINGERPRINT,
    STATUS_KEYS,
    USER_MESSAGES,
    DaemonFactory,
    RunningDaemon,
    eventually,
    missing,
    status_traffic,
)
from daemon.units import format_usd
from daemon.windows import parse_window

pytestmark = pytest.mark.slow

ARTIFACT = Path(__file__).parent / "artifacts" / "status-page.png"
# As root in a container: no sandbox, no GPU, no network of its own, a fresh profile.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
]
WIDTH = 1400


def chromium() -> str:
    """The chromium binary; a loud skip without it, a failure in CI."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        missing(
            "`chromium` is not installed (apt-get install chromium): the status page is NOT tested"
        )
    return path


class Page:
    """One browser tab over the DevTools protocol: `call` sends a command and reads until its
    answer, keeping the events read meanwhile in `events` (no background task)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None
        self._ids = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._ids += 1
        message: dict[str, Any] = {"id": self._ids, "method": method, "params": params}
        if self.session is not None and not method.startswith("Target."):
            message["sessionId"] = self.session
        await self.ws.send_str(orjson.dumps(message).decode())  # CDP reads text frames only
        async with asyncio.timeout(15):
            while True:
                frame = await self.ws.receive()
                assert frame.type == aiohttp.WSMsgType.TEXT, f"DevTools closed: {frame}"
                answer = orjson.loads(frame.data)
                if answer.get("id") == self._ids:
                    assert "error" not in answer, (method, answer["error"])
                    return dict(answer.get("result", {}))
                if "method" in answer:
                    self.events.append(answer)

    async def js(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-able)."""
        result = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def problems(self) -> list[str]:
        """Script exceptions, console errors and failed loads seen so far."""
        found = []
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(str(params["exceptionDetails"]))
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                found.append(str(params.get("args")))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(str(params["entry"]))
            elif method == "Network.loadingFailed":
                found.append(str(params))
        return found

    def requested(self) -> list[str]:
        return [
            e["params"]["request"]["url"]
            for e in self.events
            if e["method"] == "Network.requestWillBeSent"
        ]


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    """A tab in a fresh headless Chromium, closed (and the browser with it) afterwards."""
    binary = chromium()
    with tempfile.TemporaryDirectory(prefix="status-chromium-") as profile:
        proc = await asyncio.create_subprocess_exec(
            binary,
            *FLAGS,
            f"--user-data-dir={profile}",
            "about:blank",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stderr is not None
        drain: asyncio.Task[bytes] | None = None
        try:
            url = ""
            async with asyncio.timeout(20):
                while not url:
                    line = (await proc.stderr.readline()).decode(errors="replace")
                    assert line, "chromium exited before it listened"
                    if line.startswith("DevTools listening on "):
                        url = line.split(" on ", 1)[1].strip()
            # Keep reading its stderr (else a full pipe could stall it); what it says is noise.
            drain = asyncio.get_running_loop().create_task(proc.stderr.read())
            async with aiohttp.ClientSession() as http, http.ws_connect(url, max_msg_size=0) as ws:
                tab = Page(ws)
                target = await tab.call("Target.createTarget", url="about:blank")
                attached = await tab.call(
                    "Target.attachToTarget", targetId=target["targetId"], flatten=True
                )
                tab.session = attached["sessionId"]
                for domain in ("Page", "Runtime", "Log", "Network"):
                    await tab.call(f"{domain}.enable")
                await tab.call(
                    "Emulation.setDeviceMetricsOverride",
                    width=WIDTH,
                    height=1000,
                    deviceScaleFactor=1,
                    mobile=False,
                )
                yield tab
                tab.session = None
                await tab.call("Target.closeTarget", targetId=target["targetId"])
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            if drain is not None:
                await drain


async def state(tab: Page) -> str | None:
    value = await tab.js("document.body ? document.body.dataset.state : null")  # mid-load: none
    return value if value in ("ready", "error") else None


# What the page shows, read from the DOM: the figures' exact ticks (data-*) and their text.
READ = """(() => {
  const fig = (id) => {
    const n = document.getElementById(id);
    return {text: n.textContent, ticks: n.dataset.ticks, value: n.dataset.value, title: n.title};
  };
  const rows = (sel, f) => Array.from(document.querySelectorAll(sel)).map(f);
  return {
    renders: Number(document.body.dataset.renders),
    today: fig("spend-today"), month: fig("spend-month"), window: fig("spend-window"),
    burn: fig("burn-hour"), burn_window: fig("burn-window"), calls: fig("calls-window"),
    unmetered: fig("count-unmetered"), unpriced: fig("count-unpriced"),
    errors: fig("count-errors"), title: fig("window-title"),
    models: rows("#table-model tbody tr[data-model]", (r) => ({
      model: r.dataset.model, ticks: r.dataset.ticks, calls: r.dataset.calls,
      cost: r.querySelector("td.cost").textContent,
      share: r.querySelector("td.share").dataset.share,
      pct: r.querySelector("td.share .pct").textContent,
      bar: r.querySelector("td.share .bar").style.width,
      tokens: Array.from(r.querySelectorAll("td.tokens"), (td) => [td.textContent, td.title])})),
    keys: rows("#table-key tbody tr[data-key-id]", (r) => ({
      id: r.dataset.keyId, name: r.dataset.keyName, ticks: r.dataset.ticks,
      shown: r.querySelector("td.name").textContent,
      pct: r.querySelector("td.share .pct").textContent,
      cost: r.querySelector("td.cost").textContent})),
    apps: rows("#table-app tbody tr[data-ticks]", (r) => ({app: r.dataset.app || null,
      ticks: r.dataset.ticks})),
    calls_shown: rows("#table-calls tr.call", (r) => ({id: r.dataset.id, ticks: r.dataset.ticks,
      cost: r.querySelector("td.cost").textContent})),
    bars: rows("#chart-series rect[data-model]", (r) => r.dataset.model).length,
    fp_changes: rows("#chart-fingerprints g.fp-change", (g) => ({
      model: g.dataset.model, at: Number(g.dataset.at), new: g.dataset.new})),
    fp_lanes: rows("#chart-fingerprints g.fp-seg", (g) => g.dataset.fingerprint),
    latency: rows("#chart-latency g[data-kind]", (g) => g.dataset.model + " " + g.dataset.kind),
    health: document.getElementById("health-pill").dataset.status,
    problems: rows("#problems li[data-name]", (li) => li.dataset.name + "=" + li.dataset.value),
    hash: location.hash,
  };
})()"""


# A third key named as the first: two rows "prod-backend" in "Per key", told apart by key id.
TWIN_KEY = "xai-status-key-prod-0003"
LONG_MODEL = "a-very-long-model-name-that-nobody-has-priced-yet-0123456789"


async def realistic_traffic(state: Any, relay_base: str) -> int:
    """Calls with realistic sizes on top of `status_traffic`: prompts of 5 to 7 digits of
    tokens (the simulator's ``X-Sim-Prompt-Tokens``), a key sharing another's name, a model
    name too long for any column (the simulator answers it 404). Returns the rows it makes."""
    from daemon.simulator.auth import api_key_id
    from daemon.simulator.state import ManagedKey

    prod = next(iter(STATUS_KEYS))
    state.managed_keys[api_key_id(TWIN_KEY)] = ManagedKey(
        api_key_id=api_key_id(TWIN_KEY), name=STATUS_KEYS[prod]
    )
    plan = [
        (TWIN_KEY, "/api-key", None, {}),
        (prod, "/chat/completions", "grok-4-fast-reasoning", {"X-Sim-Prompt-Tokens": "2345678"}),
        (prod, "/chat/completions", "grok-4-fast-reasoning", {"X-Sim-Prompt-Tokens": "1876543"}),
        (TWIN_KEY, "/chat/completions", "grok-3-mini", {"X-Sim-Prompt-Tokens": "98765"}),
        (TWIN_KEY, "/chat/completions", "grok-3-mini", {"X-Sim-Prompt-Tokens": "123456"}),
        (prod, "/chat/completions", LONG_MODEL, {}),
    ]
    async with aiohttp.ClientSession() as http:
        for key, path, model, extra in plan:
            headers = {"Authorization": f"Bearer {key}", "X-Meter-App": "web", **extra}
            if model is None:
                async with http.get(relay_base + path, headers=headers) as response:
                    await response.read()
                continue
            body = {"model": model, "messages": USER_MESSAGES}
            async with http.post(relay_base + path, json=body, headers=headers) as response:
                await response.read()
    return len(plan)


def dollars(ticks: int) -> str:
    return "$" + format_usd(ticks, places=6)


def short(n: int) -> str:
    """A token count as the page shows it: `xai-meter report`'s, with separators below 10k."""
    return f"{n:,}" if n < 10_000 else count(n)


async def test_the_page_shows_the_ledgers_numbers(
    sim: simulator.Simulator,
    start_daemon: DaemonFactory,
    page: Page,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    meter: RunningDaemon = await start_daemon(sim.url)
    count = await status_traffic(sim.state, meter.base_url)
    count += await realistic_traffic(sim.state, meter.base_url)
    rows = await meter.rows(count)
    total = sum(r["cost_ticks"] or 0 for r in rows)

    await page.call("Page.navigate", url=meter.admin_url + "/#since=24h&tz=UTC&refresh=1")
    assert await eventually(lambda: state(page), "the page rendered", within=10) == "ready"
    shown = await page.js(READ)

    now = rows[-1]["started_at"]
    today = parse_window("today", now)
    assert all(r["started_at"] >= today.start for r in rows)  # all made just now
    for figure in ("today", "month", "window", "burn"):
        assert shown[figure]["ticks"] == str(total), figure
        assert shown[figure]["text"] == dollars(total), figure
        assert shown[figure]["title"] == "exactly $" + format_usd(total), figure
    # the range's burn rate to the micro-dollar too (it was "$0.00019/h" beside "$0.032408")
    assert re.fullmatch(r"\$\d+\.\d{6}", shown["burn_window"]["text"]), shown["burn_window"]
    assert shown["burn_window"]["text"] == dollars(int(shown["burn_window"]["ticks"]))
    assert shown["calls"]["value"] == str(len(rows))
    assert (shown["unmetered"]["value"], shown["unpriced"]["value"]) == ("1", "1")
    assert shown["errors"]["value"] == "2"  # the 500, and the long model's 404
    assert sorted(shown["problems"]) == [
        "grok-4-0709=1",  # unpriced, by model
        "http_error=2",
        "no_usage=1",
    ]

    per_model: dict[str, int] = {}
    for r in rows:
        name = r["model"] or r["requested_model"]
        if name:
            per_model[name] = per_model.get(name, 0) + (r["cost_ticks"] or 0)
    assert {m["model"]: int(m["ticks"]) for m in shown["models"]} == per_model
    tokens = {name: [0, 0, 0] for name in per_model}
    for r in rows:
        if r["model"] or r["requested_model"]:
            for i, field in enumerate(("input_tokens", "output_tokens", "reasoning_tokens")):
                tokens[r["model"] or r["requested_model"]][i] += r[field] or 0
    assert max(n for counts in tokens.values() for n in counts) >= 1_000_000  # 7 digits
    for m in shown["models"]:
        assert m["cost"] == dollars(int(m["ticks"]))
        # each row's share of the range's total (not of the largest row), printed and drawn
        share = int(m["ticks"]) / total
        assert float(m["share"]) == pytest.approx(share, abs=1e-12)
        assert m["pct"] == f"{share * 100:.1f}%"
        assert float(m["bar"].removesuffix("%")) == float(f"{share * 100:.1f}")  # "0.0%": "0%"
        # tokens short, as `xai-meter report` prints them, the exact count in the tooltip
        expected = [(short(n), f"{n:,} tokens") for n in tokens[m["model"]]]
        assert [tuple(t) for t in m["tokens"]] == expected, m
    assert any(t[0].endswith("M") for m in shown["models"] for t in m["tokens"])
    by_key_id = {r["key_id"]: 0 for r in rows}
    for r in rows:
        by_key_id[r["key_id"]] += r["cost_ticks"] or 0
    assert {k["id"]: int(k["ticks"]) for k in shown["keys"]} == by_key_id
    # two keys named alike: told apart by the start of their ids
    assert sorted(k["name"] for k in shown["keys"]) == sorted(
        [*STATUS_KEYS.values(), STATUS_KEYS[next(iter(STATUS_KEYS))]]
    )
    for k in shown["keys"]:
        assert k["shown"] == f"{k['name']}·{k['id'][:8]}…", k
        assert k["pct"] == f"{int(k['ticks']) / total * 100:.1f}%"
    assert len({k["shown"] for k in shown["keys"]}) == len(shown["keys"])
    apps: dict[str | None, int] = {}
    for r in rows:
        apps[r["app"]] = apps.get(r["app"], 0) + (r["cost_ticks"] or 0)
    assert {a["app"]: int(a["ticks"]) for a in shown["apps"]} == apps

    newest = sorted(rows, key=lambda r: (r["started_at"], r["id"]), reverse=True)
    assert [c["id"] for c in shown["calls_shown"]] == [r["id"] for r in newest]
    for c, r in zip(shown["calls_shown"], newest, strict=True):
        if r["cost_ticks"] is not None:
            assert (c["ticks"], c["cost"]) == (str(r["cost_ticks"]), dollars(r["cost_ticks"]))

    assert shown["bars"] >= 3  # a stacked bar per model with spend
    (change,) = shown["fp_changes"]
    assert (change["model"], change["new"]) == ("grok-3-mini", STATUS_FINGERPRINT)
    assert STATUS_FINGERPRINT in shown["fp_lanes"]
    assert "grok-4-fast-reasoning TTFT" in shown["latency"]
    assert shown["health"] == "ok"

    # It refreshes itself (every second here): a new call shows up without a reload.
    async with aiohttp.ClientSession() as http:
        body = {"model": "grok-3-mini", "messages": USER_MESSAGES}
        headers = {"Authorization": f"Bearer {next(iter(STATUS_KEYS))}"}
        async with http.post(meter.base_url + "/chat/completions", json=body, headers=headers):
            pass
    grown = sum(r["cost_ticks"] or 0 for r in await meter.rows(count + 1))
    assert grown > total

    async def refreshed() -> bool:
        return bool(
            await page.js("document.getElementById('spend-today').dataset.ticks") == str(grown)
        )

    await eventually(refreshed, "the page refreshed itself", within=10)

    # The range picker: "last hour" in the select asks the API for since=1h.
    before = await page.js("Number(document.body.dataset.renders)")
    await page.js(
        "(() => { const s = document.getElementById('since'); s.value = '1h';"
        " s.dispatchEvent(new Event('change')); })()"
    )

    async def picked() -> bool:
        title = await page.js("document.getElementById('window-title').textContent")
        renders = await page.js("Number(document.body.dataset.renders)")
        return bool(title == "Range · 1h" and renders > before)

    await eventually(picked, "the range picker took effect", within=10)
    again = await page.js(READ)
    assert again["window"]["ticks"] == str(grown) and "since=1h" in again["hash"]

    # No script error, nothing failed to load, nothing asked of anyone but the daemon.
    assert await page.js("document.body.dataset.state") == "ready"
    assert page.problems() == []
    requested = page.requested()
    assert requested and all(u.startswith(meter.admin_url + "/") for u in requested), requested

    # The screenshot, the whole page: kept under the run's basetemp and in tests/artifacts/.
    await page.js("window.scrollTo(0, 0)")
    height = await page.js("document.documentElement.scrollHeight")
    await page.call(
        "Emulation.setDeviceMetricsOverride",
        width=WIDTH,
        height=int(height),
        deviceScaleFactor=1,
        mobile=False,
    )
    await eventually(lambda: state(page), "the page redrawn at full height", within=5)
    shot = await page.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    png = base64.b64decode(shot["data"])
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
    kept = tmp_path_factory.getbasetemp() / "status-page.png"
    kept.write_bytes(png)
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_bytes(png)


# Where everything sits: each table's scroll box and cost cells, each chart's text.
LAYOUT = """(() => {
  const rect = (n) => n.getBoundingClientRect();
  const tables = Array.from(document.querySelectorAll("table.data"), (t) => {
    const box = t.closest(".scroll");
    return {id: t.id, boxRight: rect(box).right, overflow: box.scrollWidth - box.clientWidth,
      costs: Array.from(t.querySelectorAll("tbody td.cost"), (td) => rect(td).right)};
  });
  const charts = Array.from(document.querySelectorAll(".chart svg"), (s) => ({
    id: s.parentElement.id, left: rect(s).left, right: rect(s).right,
    texts: Array.from(s.querySelectorAll("text"), (t) => [t.textContent, rect(t).left,
      rect(t).right])}));
  const latency = document.getElementById("chart-latency");
  return {
    innerWidth: window.innerWidth,
    scrollWidth: document.documentElement.scrollWidth,
    tables, charts,
    labels: Array.from(latency.querySelectorAll("text.label"), (t) => ({
      text: t.textContent, full: t.dataset.full, right: rect(t).right,
      tooltip: t.querySelector("title") ? t.querySelector("title").textContent : null})),
    dots: Math.min(...Array.from(latency.querySelectorAll("circle"), (c) => rect(c).left)),
  };
})()"""


async def test_the_tables_and_charts_fit_at_1400_and_800_px(
    sim: simulator.Simulator,
    start_daemon: DaemonFactory,
    page: Page,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """With 5 to 7 digit token counts, a key sharing another's name and a model name longer
    than any column: at 1400 and at 800 px wide nothing scrolls sideways, every cost cell is
    in view (it was cut to "$0" behind a scroll bar), chart text stays inside its chart (the
    last x label was cut at 800 px) and no latency label runs over the dots."""
    meter: RunningDaemon = await start_daemon(sim.url)
    count = await status_traffic(sim.state, meter.base_url)
    count += await realistic_traffic(sim.state, meter.base_url)
    await meter.rows(count)
    for width in (1400, 800):
        await page.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=1000,
            deviceScaleFactor=1,
            mobile=False,
        )
        await page.call("Page.navigate", url="about:blank")  # then the page, loaded anew
        await page.call("Page.navigate", url=meter.admin_url + "/#since=24h&tz=UTC")
        assert await eventually(lambda: state(page), f"rendered at {width}", within=10) == "ready"
        at = await page.js(LAYOUT)
        assert at["innerWidth"] == width
        assert at["scrollWidth"] <= width, f"{width} px: the page scrolls sideways"
        with_costs = set()
        for table in at["tables"]:
            assert table["overflow"] <= 0, f"{width} px: #{table['id']} scrolls sideways"
            for right in table["costs"]:
                assert right <= min(width, table["boxRight"]) + 0.5, (width, table)
            if table["costs"]:
                with_costs.add(table["id"])
        assert with_costs == {"table-model", "table-app", "table-key", "table-calls"}
        for chart in at["charts"]:
            for text, left, right in chart["texts"]:
                inside = chart["left"] - 0.5 <= left and right <= chart["right"] + 0.5
                assert inside, f"{width} px: {text!r} runs out of #{chart['id']}"
        (long,) = [label for label in at["labels"] if label["full"] == LONG_MODEL]
        assert long["text"].endswith("…") and long["tooltip"] == LONG_MODEL
        for label in at["labels"]:
            assert label["right"] < at["dots"], f"{width} px: {label['text']!r} runs over the dots"
        assert page.problems() == []
        await page.js("window.scrollTo(0, 0)")
        height = await page.js("document.documentElement.scrollHeight")
        await page.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=int(height),
            deviceScaleFactor=1,
            mobile=False,
        )
        shot = await page.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        name = f"status-page-{width}px.png"
        (tmp_path_factory.getbasetemp() / name).write_bytes(base64.b64decode(shot["data"]))
