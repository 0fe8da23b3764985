"""Soak: a steady mixed load on the daemon for a long while; nothing lost, memory flat.

    python bench/soak.py                      # one hour at 200 calls/s
    python bench/soak.py --minutes 10         # the 10-minute soak of the README
    python bench/soak.py --minutes 0.1 --rate 50 --sample-every 1   # a smoke run (the test's)

Processes: the simulator (``python -m daemon simulate``: REST and its gRPC face, a real aiohttp
server that keeps no copy of what it serves) and the daemon (``python -m daemon serve``, this
tree's ``daemon/``, default settings, a temporary ledger), both on free loopback ports; this
script is the load: ``--minutes * 60 * --rate`` calls (every run of the same figures makes the
same calls), `KINDS` in their shares, at ``--rate`` calls/s. A pacer hands each call to one of
``--concurrency`` workers; when every worker is busy it waits, so the run lasts longer and says
so (the rate achieved, the calls handed out late). The mix: chat completions unary and
streamed, Responses unary and streamed, Anthropic messages unary and streamed, upstream errors
(4xx, 5xx), streams the upstream cuts, streams the client hangs up on while the upstream is
still sending, and xai-sdk's gRPC calls through the daemon's gRPC listener
(`grpc_scenario.Client`; ``--no-grpc`` leaves them out).

Every ``--sample-every`` seconds one line: calls sent and completed, ledger rows (a read-only
SQLite connection), the daemon's RSS (``/proc/PID/status`` VmRSS) and the simulator's, the
ledger's queue depth and rows written from the daemon's ``/metrics``. At the end the load stops,
every call in flight finishes, the ledger is waited for (until rows == calls, at most
``--settle-timeout`` s), the daemon is stopped with SIGTERM and its rows counted again.

Exit code 0 when every required check holds, 1 when one does not, 2 when the soak could not
run, 130 when interrupted. Required:

* rows == calls: every call the load made, whatever its ending (errors, cuts, hang-ups), is
  exactly one ledger row, counted after the daemon stopped;
* the ledger caught up before SIGTERM (rows == calls within ``--settle-timeout``);
* the daemon stopped cleanly on SIGTERM (exit code 0);
* memory is not growing without bound: the least-squares slope of the daemon's RSS over the
  second half of the load is at most ``--max-growth`` MB/hour, or RSS rose by less than
  `RSS_NOISE_MB` over that half. Judged only when the load ran ``--judge-after`` minutes
  (default 5) or more: the first half of a shorter run is mostly start-up (caches, pools,
  the allocator's arenas), and its trend says nothing.

Reported only: the rate achieved, each kind's endings (an unexpected one is flagged), latency
p50/p99 (every call but the deliberate hang-ups). Samples and summary go to ``--out`` (JSON, or
the samples alone as CSV when the name ends in ``.csv``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import datetime as dt
import json
import re
import sqlite3
import statistics
import sys
import time
import types
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc_scenario  # beside this script: its directory is first on sys.path
import harness  # beside this script too

LATE_S = 0.1  # a call handed out this much after its time is late (reported)
RSS_NOISE_MB = 2.0  # a rise smaller than this over the judged half is noise, whatever its slope
KEY = "xai-soak-000000000000000000000000000000000000000000"
_PROMPT = "Say hi in one word."
_CHAT = {"model": "grok-4-fast", "messages": [{"role": "user", "content": _PROMPT}]}
_RESPONSES = {"model": "grok-4-fast", "input": _PROMPT, "store": False}
_MESSAGES = {"model": "grok-4-fast", "max_tokens": 32, "messages": _CHAT["messages"]}
_STREAM = {"stream": True}
_USAGE = {"stream": True, "stream_options": {"include_usage": True}}
BEARER = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
ANTHROPIC = {
    "x-api-key": KEY,
    "anthropic-version": "2023-06-01",
    "Content-Type": "application/json",
}


def _json(*parts: dict[str, Any]) -> bytes:
    merged: dict[str, Any] = {}
    for part in parts:
        merged.update(part)
    return json.dumps(merged, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Kind:
    """One kind of call in the mix: `weight` calls of every 100, how it is made (`mode`) and
    which endings the load expects of it."""

    name: str
    weight: int
    what: str
    mode: str = "read"  # "read" (to the end), "hang_up", "grpc_unary", "grpc_stream"
    path: str = "/v1/chat/completions"
    body: bytes = _json(_CHAT)
    headers: tuple[tuple[str, str], ...] = tuple(BEARER.items())
    statuses: tuple[int, ...] = ()  # X-Sim-Status, one after the other
    expected: tuple[str, ...] = ("200",)

    @property
    def grpc(self) -> bool:
        return self.mode.startswith("grpc")


KINDS: tuple[Kind, ...] = (
    Kind("chat", 24, "chat completion, unary"),
    Kind("chat_stream", 20, "chat completion, streamed with usage", body=_json(_CHAT, _USAGE)),
    Kind("responses", 10, "Responses, unary", path="/v1/responses", body=_json(_RESPONSES)),
    Kind(
        "responses_stream",
        6,
        "Responses, streamed",
        path="/v1/responses",
        body=_json(_RESPONSES, _STREAM),
    ),
    Kind(
        "messages",
        10,
        "Anthropic messages, unary",
        path="/v1/messages",
        body=_json(_MESSAGES),
        headers=tuple(ANTHROPIC.items()),
    ),
    Kind(
        "messages_stream",
        5,
        "Anthropic messages, streamed",
        path="/v1/messages",
        body=_json(_MESSAGES, _STREAM),
        headers=tuple(ANTHROPIC.items()),
    ),
    Kind(
        "error_4xx",
        5,
        "chat answered 400, 404 or 429 by the upstream",
        statuses=(400, 404, 429),
        expected=("400", "404", "429"),
    ),
    Kind(
        "error_5xx",
        5,
        "chat answered 500, 503 or 529 by the upstream",
        statuses=(500, 503, 529),
        expected=("500", "503", "529"),
    ),
    Kind(
        "upstream_cut",
        3,
        "chat stream the upstream cuts after 2 events",
        body=_json(_CHAT, _USAGE),
        headers=(*BEARER.items(), ("X-Sim-Cut-After", "2")),
        expected=("cut",),
    ),
    Kind(
        "hang_up",
        4,
        "chat stream the client hangs up on after its first bytes (upstream still sending)",
        mode="hang_up",
        body=_json(_CHAT, _USAGE),
        headers=(*BEARER.items(), ("X-Sim-Stall", "body")),
        expected=("hung up",),
    ),
    Kind("grpc", 6, "xai-sdk Chat/GetCompletion (gRPC)", mode="grpc_unary", expected=("OK",)),
    Kind(
        "grpc_stream",
        2,
        "xai-sdk Chat/GetCompletionChunk (gRPC stream)",
        mode="grpc_stream",
        expected=("OK",),
    ),
)


def schedule(kinds: list[Kind]) -> list[Kind]:
    """One cycle of the mix, each kind `weight` times, spread evenly (weighted round robin)."""
    slots = [((i + 0.5) / k.weight, n, k) for n, k in enumerate(kinds) for i in range(k.weight)]
    return [k for _, _, k in sorted(slots, key=lambda s: (s[0], s[1]))]


@dataclass
class Tally:
    """One kind's calls: made, finished, their endings and latencies (ms)."""

    sent: int = 0
    done: int = 0
    endings: Counter[str] = field(default_factory=Counter)
    latency_ms: array[float] = field(default_factory=lambda: array("d"))


@dataclass
class Sample:
    t: float  # seconds since the load began
    phase: str  # "load", "settle" or "stopped"
    sent: int
    done: int
    rows: int | None
    rss_mb: float | None
    simulator_rss_mb: float | None
    queue_depth: float | None
    rows_written: float | None

    def line(self) -> str:
        def num(value: float | None, spec: str) -> str:
            return "—" if value is None else format(value, spec)

        return (
            f"[{self.t:7.1f}s {self.phase:7}] sent {self.sent:8d}  done {self.done:8d}  "
            f"rows {num(self.rows, '8d')}  rss {num(self.rss_mb, '6.1f')} MB  "
            f"queue {num(self.queue_depth, '5.0f')}  written {num(self.rows_written, '8.0f')}  "
            f"sim rss {num(self.simulator_rss_mb, '6.1f')} MB"
        )


@dataclass
class Soak:
    """The running soak: its processes, clients and every figure collected."""

    args: argparse.Namespace
    procs: harness.Procs
    kinds: list[Kind]
    tallies: dict[str, Tally]
    base_url: str = ""
    admin_url: str = ""
    ledger: Path = Path()
    http: aiohttp.ClientSession | None = None
    scraper: aiohttp.ClientSession | None = None
    grpc: grpc_scenario.Client | None = None
    samples: list[Sample] = field(default_factory=list)
    t0: float = 0.0  # monotonic, when the load began
    paced_s: float = 0.0  # how long handing out every call took
    late: int = 0  # calls handed out more than LATE_S after their time: every worker was busy

    @property
    def total(self) -> int:
        """Calls the load makes: --minutes of --rate (at least one)."""
        return max(1, round(float(self.args.minutes) * 60.0 * float(self.args.rate)))

    @property
    def sent(self) -> int:
        return sum(t.sent for t in self.tallies.values())

    @property
    def done(self) -> int:
        return sum(t.done for t in self.tallies.values())

    def pid(self, name: str) -> int | None:
        proc = self.procs.procs.get(name)
        return proc.pid if proc is not None else None


# --- the calls ------------------------------------------------------------------------------


async def call(soak: Soak, kind: Kind) -> None:
    """Make one call of `kind`; its ending and latency go to the kind's tally."""
    tally = soak.tallies[kind.name]
    n = tally.sent
    tally.sent += 1
    t0 = time.perf_counter()
    try:
        ending = await (grpc_call(soak, kind) if kind.grpc else http_call(soak, kind, n))
    except aiohttp.ClientPayloadError:
        ending = "cut"  # the body ended before its end: the upstream's cut, relayed
    except Exception as exc:  # any other ending is the kind's tally's to show, not a crash
        ending = type(exc).__name__
    tally.latency_ms.append((time.perf_counter() - t0) * 1000.0)
    tally.endings[ending] += 1
    tally.done += 1


async def http_call(soak: Soak, kind: Kind, n: int) -> str:
    assert soak.http is not None
    headers = dict(kind.headers)
    if kind.statuses:
        headers["X-Sim-Status"] = str(kind.statuses[n % len(kind.statuses)])
    async with soak.http.post(soak.base_url + kind.path, data=kind.body, headers=headers) as resp:
        if kind.mode == "hang_up":
            await resp.content.readany()
            resp.close()  # hang up while the upstream is still streaming
            return "hung up"
        async for _ in resp.content.iter_any():
            pass
        return str(resp.status)


async def grpc_call(soak: Soak, kind: Kind) -> str:
    client = soak.grpc
    assert client is not None
    failed = client.checks.failed
    if kind.mode == "grpc_unary":
        await client.unary(None)
    else:
        await client.stream(None)
    return "OK" if client.checks.failed == failed else "error"


async def load(soak: Soak) -> None:
    """The pacer and the workers: `Soak.total` calls at ``--rate``, then every call in flight
    finishes. When every worker is busy the pacer waits; a call handed out more than `LATE_S`
    after its time counts as late, and far behind (a second) the pacer carries on at the rate
    from where it is, without a burst to catch up."""
    args = soak.args
    cycle = schedule(soak.kinds)
    queue: asyncio.Queue[Kind | None] = asyncio.Queue(maxsize=1)

    async def pacer() -> None:
        interval, due = 1.0 / args.rate, time.monotonic()
        for i in range(soak.total):
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)
            elif now - due > 1.0:
                due = now
            await queue.put(cycle[i % len(cycle)])
            if time.monotonic() - due > LATE_S:
                soak.late += 1
            due += interval
        soak.paced_s = time.monotonic() - soak.t0
        for _ in range(args.concurrency):
            await queue.put(None)

    async def worker() -> None:
        while (kind := await queue.get()) is not None:
            await call(soak, kind)

    await asyncio.gather(pacer(), *(worker() for _ in range(args.concurrency)))


# --- samples --------------------------------------------------------------------------------


def count_rows(ledger: Path) -> int | None:
    """Rows in the ledger's calls table; None while it cannot be read."""
    try:
        with harness.ledger_readonly(ledger) as db:
            return int(db.execute("select count(*) from calls").fetchone()[0])
    except sqlite3.Error:
        return None


def ledger_endings(ledger: Path) -> dict[str, int]:
    """Rows by (status, error), e.g. ``"200"``, ``"429"``, ``"200 client_disconnect"``."""
    try:
        with harness.ledger_readonly(ledger) as db:
            found = db.execute(
                "select status, error, count(*) from calls group by status, error"
            ).fetchall()
    except sqlite3.Error as exc:
        return {f"unreadable: {exc}": 0}
    return {" ".join(str(v) for v in (s, e) if v is not None) or "—": n for s, e, n in found}


async def sample(soak: Soak, phase: str) -> Sample:
    """Take one sample (and print its line): the load's counts, the ledger's rows, the
    processes' RSS, the daemon's ledger metrics (None when it does not answer, or is stopped)."""
    daemon, simulator = soak.pid("daemon"), soak.pid("simulator")
    metrics: dict[str, float] = {}
    if phase != "stopped" and soak.scraper is not None:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            metrics = await harness.scrape_metrics(soak.scraper, soak.admin_url)
    s = Sample(
        t=time.monotonic() - soak.t0,
        phase=phase,
        sent=soak.sent,
        done=soak.done,
        rows=await asyncio.to_thread(count_rows, soak.ledger),
        rss_mb=harness.proc_status_mb(daemon, "VmRSS") if daemon else None,
        simulator_rss_mb=harness.proc_status_mb(simulator, "VmRSS") if simulator else None,
        queue_depth=metrics.get("xai_meter_ledger_queue_depth"),
        rows_written=metrics.get("xai_meter_ledger_rows_written_total"),
    )
    soak.samples.append(s)
    print(s.line(), flush=True)
    return s


async def sampler(soak: Soak, stop: asyncio.Event) -> None:
    """A sample every ``--sample-every`` s of the load (on the clock: no drift), until `stop`."""
    every, n = soak.args.sample_every, 1
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(soak.t0 + n * every - time.monotonic(), 0.0))
        if stop.is_set():
            return
        await sample(soak, "load")
        n = max(n + 1, int((time.monotonic() - soak.t0) / every) + 1)


async def settle(soak: Soak) -> tuple[bool, float]:
    """Poll the ledger until it has a row per call (True) or `--settle-timeout` passes; and how
    long that took."""
    t0 = time.monotonic()
    deadline = t0 + soak.args.settle_timeout
    while True:
        rows = await asyncio.to_thread(count_rows, soak.ledger)
        if rows == soak.sent or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.1)
    await sample(soak, "settle")
    return rows == soak.sent, time.monotonic() - t0


# --- start, run, stop -----------------------------------------------------------------------

_SIM_REST = re.compile(r"xai simulator listening on (http://\S+)")
_SIM_GRPC = re.compile(r"xai simulator \(gRPC, xai-sdk\) listening on (\S+)")


def _found(pattern: re.Pattern[str]) -> Callable[[str], str | None]:
    def parse(line: str) -> str | None:
        m = pattern.search(line)
        return m.group(1) if m else None

    return parse


async def start(soak: Soak) -> None:
    """The simulator and the daemon relaying to it, started side by side (their ports chosen
    here); each waited for until it serves."""
    args, procs, env = soak.args, soak.procs, harness.clean_env()
    port, admin, sim_port = (harness.free_port() for _ in range(3))
    grpc_port, sim_grpc = (0 if args.no_grpc else harness.free_port() for _ in range(2))
    sim = [sys.executable, "-m", "daemon", "simulate", "--port", str(sim_port)]
    procs.spawn("simulator", [*sim, "--grpc-port", str(sim_grpc)], None, env)
    soak.ledger = procs.workdir / "soak.db"
    cmd = harness.serve_command(
        port,
        admin,
        f"http://127.0.0.1:{sim_port}",
        soak.ledger,
        grpc_port=grpc_port,
        grpc_upstream=f"http://127.0.0.1:{sim_grpc}" if sim_grpc else None,
        config=args.daemon_config,
    )
    procs.spawn("daemon", cmd, None, env)
    soak.base_url, soak.admin_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}"
    await harness.wait_listening(procs, "simulator", parse=_found(_SIM_REST))
    if sim_grpc:
        await harness.wait_listening(procs, "simulator", parse=_found(_SIM_GRPC))
    await harness.wait_ready(procs, "daemon", soak.admin_url + "/readyz")
    if grpc_port:
        soak.grpc = grpc_scenario.Client(types.SimpleNamespace(sent=0), f"127.0.0.1:{grpc_port}")
        soak.grpc.open()


async def soak_run(args: argparse.Namespace, procs: harness.Procs) -> int:
    kinds = [k for k in KINDS if not (args.no_grpc and k.grpc)]
    soak = Soak(args, procs, kinds, {k.name: Tally() for k in kinds})
    say = f"soak: {args.minutes:g} min at {args.rate:g} calls/s, concurrency {args.concurrency}"
    print(say, file=sys.stderr, flush=True)
    try:
        await start(soak)
        soak.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=args.concurrency),
            timeout=aiohttp.ClientTimeout(total=60),
        )
        soak.scraper = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        soak.t0 = time.monotonic()
        await sample(soak, "load")
        stop = asyncio.Event()

        async def timed_load() -> None:
            try:
                await load(soak)
            finally:
                stop.set()

        await asyncio.gather(timed_load(), sampler(soak, stop))
        load_s = time.monotonic() - soak.t0
        if load_s - soak.samples[-1].t > 0.5:  # the load's last sample, unless just taken
            await sample(soak, "load")
        caught_up, settle_s = await settle(soak)
        daemon = soak.pid("daemon")
        peak = harness.proc_status_mb(daemon, "VmHWM") if daemon else None
    finally:
        for session in (soak.http, soak.scraper):
            if session is not None:
                await session.close()
        if soak.grpc is not None:
            await soak.grpc.close()
    t_stop = time.monotonic()
    exit_code = procs.stop("daemon", timeout=args.stop_timeout)
    stop_s = time.monotonic() - t_stop
    final = await sample(soak, "stopped")
    if exit_code != 0:
        print(
            f"daemon stderr (last lines):\n{harness.tail(procs.log_path('daemon'))}",
            file=sys.stderr,
        )
    summary = summarize(soak, load_s, settle_s, stop_s, caught_up, peak, exit_code, final)
    report(soak, summary)
    return 0 if summary["passed"] else 1


# --- the summary ----------------------------------------------------------------------------


def rss_trend(samples: list[Sample], load_s: float) -> tuple[float | None, float | None]:
    """(slope in MB/hour, rise in MB) of the daemon's RSS over the second half of the load."""
    half = [s for s in samples if s.phase == "load" and s.t >= load_s / 2 and s.rss_mb]
    if len(half) < 3:
        return None, None
    xs, ys = [s.t / 3600.0 for s in half], [float(s.rss_mb or 0.0) for s in half]
    slope = statistics.linear_regression(xs, ys).slope
    return slope, ys[-1] - ys[0]


def summarize(
    soak: Soak,
    load_s: float,
    settle_s: float,
    stop_s: float,
    caught_up: bool,
    peak_mb: float | None,
    exit_code: int | None,
    final: Sample,
) -> dict[str, Any]:
    args = soak.args
    rss = [s.rss_mb for s in soak.samples if s.rss_mb is not None]
    slope, rise = rss_trend(soak.samples, load_s)
    judged = load_s >= args.judge_after * 60.0 and slope is not None and rise is not None
    bounded = None if not judged else bool(slope <= args.max_growth or (rise or 0.0) < RSS_NOISE_MB)
    latencies = [
        v for k in soak.kinds if k.mode != "hang_up" for v in soak.tallies[k.name].latency_ms
    ]
    unexpected = {
        k.name: {e: n for e, n in soak.tallies[k.name].endings.items() if e not in k.expected}
        for k in soak.kinds
    }
    checks = {
        "rows == calls": final.rows == soak.sent,
        "ledger caught up before SIGTERM": caught_up,
        "daemon stopped cleanly on SIGTERM": exit_code == 0,
        "RSS growth bounded": bounded,
    }
    return {
        "load_s": round(load_s, 1),
        "settle_s": round(settle_s, 2),
        "stop_s": round(stop_s, 2),
        "calls": soak.sent,
        "completed": soak.done,
        "rate_achieved": round(soak.sent / soak.paced_s, 1) if soak.paced_s else None,
        "late_calls": soak.late,
        "rows": final.rows,
        "rows_before_sigterm": next(s.rows for s in reversed(soak.samples) if s.phase == "settle"),
        "ledger_endings": ledger_endings(soak.ledger),
        "daemon_exit_code": exit_code,
        "rss_start_mb": rss[0] if rss else None,
        "rss_peak_mb": peak_mb,
        "rss_end_mb": rss[-1] if rss else None,
        "rss_growth_mb_per_h": None if slope is None else round(slope, 2),
        "rss_rise_second_half_mb": None if rise is None else round(rise, 2),
        "rss_judged": judged,
        "latency_p50_ms": round(harness.percentile(latencies, 50), 2) if latencies else None,
        "latency_p99_ms": round(harness.percentile(latencies, 99), 2) if latencies else None,
        "kinds": {
            k.name: {
                "calls": soak.tallies[k.name].sent,
                "endings": dict(soak.tallies[k.name].endings),
                "p50_ms": _p(soak.tallies[k.name].latency_ms, 50),
                "p99_ms": _p(soak.tallies[k.name].latency_ms, 99),
            }
            for k in soak.kinds
        },
        "unexpected_endings": {k: v for k, v in unexpected.items() if v},
        "grpc_first_problem": soak.grpc.checks.first_problem if soak.grpc else None,
        "checks": checks,
        "passed": all(v is not False for v in checks.values()),
    }


def _p(values: array[float], q: float) -> float | None:
    return round(harness.percentile(list(values), q), 2) if values else None


def _mb(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def _mark(ok: bool | None) -> str:
    return "—" if ok is None else ("✓" if ok else "✗")


def report(soak: Soak, s: dict[str, Any]) -> None:
    args, checks = soak.args, s["checks"]
    growth = (
        "—"
        if s["rss_growth_mb_per_h"] is None
        else f"{s['rss_growth_mb_per_h']:+.1f} MB/h ({s['rss_rise_second_half_mb']:+.1f} MB)"
    )
    judged = (
        f"limit {args.max_growth:g} MB/h"
        if s["rss_judged"]
        else f"not judged: the load ran under {args.judge_after:g} min"
    )
    rows = [
        (
            "duration",
            f"{s['load_s']:.0f} s of load, {s['settle_s']:.1f} s to settle, "
            f"{s['stop_s']:.1f} s to stop",
        ),
        (
            "calls",
            f"{s['calls']} ({s['rate_achieved']}/s achieved of {args.rate:g}/s; "
            f"{s['late_calls']} handed out late)",
        ),
        ("rows", f"{s['rows']} after SIGTERM ({s['rows_before_sigterm']} before)"),
        ("rows == calls", _mark(checks["rows == calls"])),
        ("ledger caught up before SIGTERM", _mark(checks["ledger caught up before SIGTERM"])),
        (
            "daemon exit code on SIGTERM",
            f"{s['daemon_exit_code']} {_mark(checks['daemon stopped cleanly on SIGTERM'])}",
        ),
        (
            "RSS start / peak / end",
            f"{_mb(s['rss_start_mb'])} / {_mb(s['rss_peak_mb'])} / {_mb(s['rss_end_mb'])} MB",
        ),
        ("RSS growth, second half", f"{growth}, {judged} {_mark(checks['RSS growth bounded'])}"),
        (
            "latency p50 / p99",
            f"{s['latency_p50_ms']} / {s['latency_p99_ms']} ms (every call but the hang-ups)",
        ),
    ]
    print(f"\n### xai-meter soak ({args.minutes:g} min at {args.rate:g} calls/s)\n")
    print("| figure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    print("\n| kind | calls | endings | p50 ms | p99 ms |\n|---|---|---|---|---|")
    for name, k in s["kinds"].items():
        endings = ", ".join(f"{e} ×{n}" for e, n in sorted(k["endings"].items()))
        print(f"| {name} | {k['calls']} | {endings} | {k['p50_ms']} | {k['p99_ms']} |")
    print(
        "\nledger rows by status and error: "
        + ", ".join(f"{e} ×{n}" for e, n in sorted(s["ledger_endings"].items()))
    )
    if s["unexpected_endings"]:
        print(f"unexpected endings (reported, not failed): {s['unexpected_endings']}")
    if s["grpc_first_problem"]:
        print(f"first gRPC problem: {s['grpc_first_problem']}")
    print()
    for name, ok in checks.items():
        print(f"{'—' if ok is None else 'PASS' if ok else 'FAIL':4}  {name}")
    write_out(soak, s)


def write_out(soak: Soak, summary: dict[str, Any]) -> None:
    out: Path = soak.args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    samples = [asdict(x) for x in soak.samples]
    if out.suffix == ".csv":
        with out.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(samples[0]))
            writer.writeheader()
            writer.writerows(samples)
    else:
        meta = {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(soak.args).items()},
            "mix": {k.name: {"weight": k.weight, "what": k.what} for k in soak.kinds},
        }
        out.write_text(
            json.dumps({"meta": meta, "summary": summary, "samples": samples}, indent=2) + "\n"
        )
    print(f"\nsamples and summary: {out}")
    if soak.args.keep_logs:
        print(f"logs and ledger kept in {soak.procs.workdir}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Soak the xai-meter daemon: a steady mixed load on the simulator; "
        "every call one ledger row, memory flat."
    )
    parser.add_argument(
        "--minutes", type=float, default=60.0, help="how long the load runs (default %(default)s)"
    )
    parser.add_argument(
        "--rate", type=float, default=200.0, help="calls per second (default %(default)s)"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=64,
        help="calls in flight at most (default %(default)s)",
    )
    parser.add_argument(
        "--sample-every",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds between samples (default %(default)s)",
    )
    parser.add_argument(
        "--settle-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="how long the ledger may take to catch up after the load (default %(default)s)",
    )
    parser.add_argument(
        "--stop-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="how long the daemon may take to exit on SIGTERM before SIGKILL (default %(default)s)",
    )
    parser.add_argument(
        "--max-growth",
        type=float,
        default=20.0,
        metavar="MB_PER_H",
        help="RSS slope over the load's second half that fails the soak (default %(default)s)",
    )
    parser.add_argument(
        "--judge-after",
        type=float,
        default=5.0,
        metavar="MIN",
        help="judge the RSS trend only when the load ran this long (default %(default)s)",
    )
    parser.add_argument("--no-grpc", action="store_true", help="leave the gRPC calls out")
    parser.add_argument(
        "--out",
        type=Path,
        default=harness.HERE / "soak.json",
        help="samples and summary: JSON, or CSV samples if it ends in .csv (default %(default)s)",
    )
    harness.add_common_options(parser)
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.rate <= 0 or args.concurrency < 1 or args.sample_every <= 0:
        parser.error("--minutes, --rate, --concurrency and --sample-every must be positive")
    return harness.run_script("soak", lambda procs: soak_run(args, procs), args.keep_logs)


if __name__ == "__main__":
    sys.exit(main())
