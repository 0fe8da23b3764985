"""`xai-meter demo`: simulator, daemon and a burst of traffic; no key and no network needed.

REST calls (aiohttp, as any HTTP client) go through the daemon's HTTP relay to the simulator;
calls made with xAI's own SDK (xai-sdk, gRPC) go through the daemon's gRPC listener to the
simulator's gRPC face, which shares the REST face's state. Every call is one ledger row.

Each run starts from a fresh ledger (`prepare_ledger`): the file is replaced, with its WAL
files and journal, when a demo made it (``meta.demo``, `daemon.ledger.store.mark_demo_ledger`)
or it has the default demo name; any other existing file is refused, never deleted, with the
fix for what it is (a ledger of its own: ``--append``; a directory, a database that is no
ledger, a file that is no database: another ``--ledger``). With ``append`` the run adds to an
existing ledger instead, and says that its totals include earlier runs. The line naming the
ledger is printed once the daemon has opened it: a run that stops before prints only why.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from xai_sdk import AsyncClient
from xai_sdk.chat import user

from daemon import config, simulator
from daemon.app import Daemon
from daemon.ledger.journal import default_path as journal_path
from daemon.ledger.reports import EXAMPLE_QUERY
from daemon.ledger.schema import open_database
from daemon.ledger.store import is_demo_ledger, last_calls, mark_demo_ledger
from daemon.management.report import build_report, render_table
from daemon.units import format_usd

DEFAULT_LEDGER = "xai-meter-demo.db"  # the CLI's default --ledger
DEMO_KEY = "xai-demo-key-not-a-real-one"
# The calls the simulator fails on purpose (X-Sim-* headers) use a key of their own, so the
# reconciliation at the end shows both: a zero gap for the demo key, and for this one the gap
# of the calls xAI billed whose usage the relay could not read.
FAULTS_KEY = "xai-demo-faults-key-not-real"

# (what it shows, extra headers, request body)
TRAFFIC: list[tuple[str, dict[str, str], dict[str, Any]]] = [
    (
        "chat, alias resolved",
        {},
        {
            "model": "grok-4-fast",
            "messages": [{"role": "user", "content": "What is the meaning of life?"}],
        },
    ),
    (
        "same prompt again: cached tokens",
        {},
        {
            "model": "grok-4-fast",
            "messages": [{"role": "user", "content": "What is the meaning of life?"}],
        },
    ),
    (
        "stream, app did not ask for usage",
        {},
        {
            "model": "grok-3",
            "stream": True,
            "messages": [{"role": "user", "content": "Tell me a short story about a meter."}],
        },
    ),
    (
        "stream with include_usage",
        {},
        {
            "model": "grok-3-mini",
            "stream": True,
            "stream_options": {"include_usage": True},
            "reasoning_effort": "high",
            "messages": [{"role": "user", "content": "2+2?"}],
        },
    ),
    (
        "tagged by app",
        {"X-Meter-App": "billing-bot"},
        {
            "model": "grok-code-fast-1",
            "messages": [{"role": "user", "content": "Write hello world in Go."}],
        },
    ),
    (
        "rate limited by the upstream",
        {"X-Sim-Status": "429"},
        {"model": "grok-4", "messages": [{"role": "user", "content": "hi"}]},
    ),
    (
        "stream cut by the upstream",
        {"X-Sim-Cut-After": "3"},
        {"model": "grok-3", "stream": True, "messages": [{"role": "user", "content": "Go on."}]},
    ),
    (
        "malformed upstream body",
        {"X-Sim-Malformed": "1"},
        {"model": "grok-3", "messages": [{"role": "user", "content": "hi"}]},
    ),
]


def _key_for(headers: dict[str, str]) -> str:
    return FAULTS_KEY if any(h.startswith("X-Sim-") for h in headers) else DEMO_KEY


async def _send(
    session: aiohttp.ClientSession, base: str, headers: dict[str, str], body: dict[str, Any]
) -> None:
    try:
        async with session.post(
            f"{base}/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {_key_for(headers)}", **headers},
        ) as resp:
            await resp.read()
    except aiohttp.ClientError:
        pass  # the cut stream: the app sees a broken body, the ledger records why


# (what it shows, model, stream?) of the calls made with xai-sdk, after the REST ones
SDK_TRAFFIC: list[tuple[str, str, bool]] = [
    ("xai-sdk over gRPC: chat.sample()", "grok-4.3", False),
    ("xai-sdk over gRPC: chat.stream()", "grok-4.3", True),
]


async def _sdk_calls(address: str) -> None:
    """The SDK's own calls, as xAI's examples make them, through the daemon's gRPC listener."""
    client = AsyncClient(api_key=DEMO_KEY, api_host=address, use_insecure_channel=True)
    try:
        for _, model, stream in SDK_TRAFFIC:
            chat = client.chat.create(model=model)
            chat.append(user("What is the meaning of life?"))
            try:
                if stream:
                    async for _response, _chunk in chat.stream():
                        pass
                else:
                    await chat.sample()
            except grpc.RpcError:
                pass  # recorded by the daemon like any failed call
    finally:
        await client.close()


class DemoError(Exception):
    """The demo cannot run as asked (one line: why, and the fix)."""


def prepare_ledger(ledger_path: str, append: bool) -> tuple[str, bool]:
    """Make way for the run's ledger; return the line that says which ledger it is, and
    whether the demo makes the file (then `mark_demo_ledger` marks it).

    Without `append`, an existing file is deleted (with its ``-wal``, ``-shm`` and journal
    directory) when a demo made it or it is named `DEFAULT_LEDGER`; any other raises
    `DemoError`, with the fix for what it is: a ledger of its own (``--append`` adds to it),
    an SQLite database that is no ledger, a file that is no database. With `append`, an
    existing ledger is kept and added to; anything else (no ledger, a directory) raises
    `DemoError`. Nothing is changed before every check has passed."""
    path = Path(ledger_path)
    if path.is_dir():
        raise DemoError(
            f"--ledger {ledger_path} is a directory, not a ledger file. Fix: name a file, "
            f"like --ledger {shlex.quote(str(path / DEFAULT_LEDGER))}."
        )
    if not path.exists():
        return f"Ledger: {ledger_path} (new).", True
    kind = _ledger_kind(path)
    if append and kind in ("demo", "ledger"):
        return (
            f"Ledger: {ledger_path}, appending (--append): the report and the reconciliation "
            "below include its earlier calls.",
            False,
        )
    if kind == "not sqlite":
        raise DemoError(
            f"{ledger_path} exists and is not an SQLite database: the demo neither replaces "
            "nor adds to a file that is no ledger. Fix: pass another --ledger FILE (a new one)."
        )
    if kind == "other sqlite":
        raise DemoError(
            f"{ledger_path} is an SQLite database but not an xai-meter ledger: the demo "
            "neither replaces nor adds to it. Fix: pass another --ledger FILE (a new one)."
        )
    if not (path.name == DEFAULT_LEDGER or kind == "demo"):
        raise DemoError(
            f"{ledger_path} exists and is not a ledger a demo made: the demo replaces only "
            "its own. Fix: pass another --ledger FILE, or --append to add the demo's calls to it."
        )
    for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
    shutil.rmtree(journal_path(ledger_path), ignore_errors=True)
    return (
        f"Ledger: {ledger_path}, fresh: the last demo's was replaced (--append adds to it "
        "instead).",
        True,
    )


def _ledger_kind(path: Path) -> str:
    """What the existing file at `path` is: ``demo`` (a ledger a demo made), ``ledger`` (an
    xai-meter ledger, or an empty file: one to be), ``other sqlite`` (a database without the
    ledger's ``calls`` table) or ``not sqlite``."""
    if path.stat().st_size == 0:
        return "ledger"  # SQLite's empty database: nothing in it to keep apart
    try:
        db = open_database(path, readonly=True)
    except sqlite3.Error:
        return "not sqlite"
    try:
        if is_demo_ledger(db):
            return "demo"
        return "ledger" if db["calls"].exists() else "other sqlite"
    except sqlite3.Error:  # not SQLite at all
        return "not sqlite"
    finally:
        db.close()


async def run_demo(ledger_path: str, keep_running: bool = False, append: bool = False) -> None:
    """The demo (see the module). Raises `DemoError` for a ledger it must not replace."""
    which, fresh = prepare_ledger(ledger_path, append)  # every check first, then one line
    state = simulator.SimulatorState(record_requests=False)
    sim = await simulator.start(state=state)
    face = await simulator.start_grpc(state=state)
    settings = config.from_mapping(
        {
            "relay": {"port": 0},
            "admin": {"port": 0},
            "upstream": {"base_url": sim.url},
            "grpc": {"upstream": face.url},
            "ledger": {"path": ledger_path},
            "log": {"calls": False},
        }
    )
    daemon = Daemon(settings, grpc_any_port=True)  # a free port, as the others here
    calls = len(TRAFFIC) + 3 + len(SDK_TRAFFIC)
    try:
        await daemon.start()
    except BaseException:
        await face.close()
        await sim.close()
        raise
    print(which)  # the ledger opened: what follows is about it
    before = daemon.ledger.rows_written
    try:
        if fresh:
            await daemon.ledger.run_in_writer(lambda: mark_demo_ledger(daemon.ledger.db()))
        async with aiohttp.ClientSession() as session:
            for _, headers, body in TRAFFIC:
                await _send(session, daemon.relay_url + "/v1", headers, body)
            # relayed, not billed; api-key names each key (the join to xAI's bill)
            for path, key in (("models", DEMO_KEY), ("api-key", DEMO_KEY), ("api-key", FAULTS_KEY)):
                async with session.get(
                    f"{daemon.relay_url}/v1/{path}", headers={"Authorization": f"Bearer {key}"}
                ) as resp:
                    await resp.read()
        await _sdk_calls(daemon.grpc_address)
        async with asyncio.timeout(10):
            await daemon.ledger.wait_written(before + calls)
        await daemon.ledger.drained()  # the key's name (GET /v1/api-key) is in the ledger too
        _print_report(ledger_path, calls)
        _print_metrics(daemon)
        await _print_reconciliation(ledger_path, sim.url, state.management_key)
        _print_where(ledger_path, daemon.admin_url if keep_running else None)
        if keep_running:
            print(
                f"  relay    {daemon.relay_url}/v1   (simulator behind it: {sim.url})\n"
                f"  gRPC     {daemon.grpc_address}   (xai-sdk: api_host={daemon.grpc_address!r}, "
                f"use_insecure_channel=True; simulator behind it: {face.target})\n"
                "Ctrl-C to stop."
            )
            await asyncio.Event().wait()
    finally:
        await daemon.stop()
        await face.close()
        await sim.close()


def _print_where(ledger_path: str, admin_url: str | None) -> None:
    """Where to look next: the ledger, `xai-meter report` on it, the status page and /metrics
    (`admin_url`: the running daemon's, or None when the demo stops: then how to see them)."""
    quoted = shlex.quote(ledger_path)
    lines = [
        "",
        "Where to look:",
        f"  ledger   {Path(ledger_path).absolute()}",
        f"  report   xai-meter report --ledger {quoted} --since 1h",
    ]
    if admin_url is not None:
        lines += [
            f"  status   {admin_url}/   (the status page, in a browser)",
            f"  metrics  {admin_url}/metrics",
        ]
    else:
        lines += [
            "  status   the status page (/) and /metrics of the admin listener: "
            "`xai-meter demo --keep-running`",
            f"           prints their URLs, or `xai-meter serve --ledger {quoted}` "
            "serves them at http://127.0.0.1:9787/",
        ]
    lines.append(f'  query    sqlite-utils query {quoted} "{EXAMPLE_QUERY}"')
    print("\n".join(lines))


def _usd(ticks: int | None) -> str:
    return "-" if ticks is None else "$" + format_usd(ticks, places=6)


def _print_report(ledger_path: str, last: int) -> None:
    db = open_database(ledger_path, readonly=True)
    try:
        rows = last_calls(db, last)
    finally:
        db.close()
    head = (
        f"{'via':<5}{'endpoint':<17}{'model':<24}{'status':>6}{'in':>6}{'cached':>7}{'out':>6}"
        f"{'reason':>7}{'billed':>12}  {'fingerprint':<14}{'ttft ms':>8}  note"
    )
    print("Recorded calls (one ledger row each):\n" + head + "\n" + "-" * len(head))
    notes = [label for label, _, _ in TRAFFIC] + ["models list (relayed, not billed)"]
    notes += ["who is this key (relayed, not billed; joins it to xAI's bill)"] * 2
    notes += [label for label, _, _ in SDK_TRAFFIC]
    for row, note in zip(rows, notes, strict=False):
        detail = row["error"] or ""
        if not row["metered"]:
            detail += f" unmetered:{row['unmetered_reason']}"

        def n(col: str, r: dict[str, Any] = row) -> str:
            return "-" if r[col] is None else str(r[col])

        print(
            f"{row.get('transport') or 'http':<5}{row['endpoint']:<17}"
            f"{(row['model'] or row['requested_model'] or '-'):<24}"
            f"{n('status'):>6}{n('input_tokens'):>6}{n('cached_input_tokens'):>7}"
            f"{n('output_tokens'):>6}{n('reasoning_tokens'):>7}"
            f"{_usd(row['reported_cost_ticks']):>12}  {(row['fingerprint'] or '-'):<14}"
            f"{n('ttft_ms'):>8}  {note}{' [' + detail.strip() + ']' if detail else ''}"
        )


async def _print_reconciliation(ledger_path: str, management_url: str, key: str) -> None:
    """`xai-meter reconcile` for today, with the simulator's management key: its bill is what
    it answered, so the ledger meets it with a zero gap, but for the calls whose usage the
    relay could not read (the faults key's)."""
    report = await build_report(
        ledger_path,
        days=0,
        now=time.time(),
        key=key,
        key_env="XAI_MANAGEMENT_KEY",
        base_url=management_url,
    )
    print(
        "\nxAI's bill against the ledger (xai-meter reconcile, with the simulator's management "
        f"key {key!r}):"
    )
    print(render_table(report.rows, report.line), end="")


def _print_metrics(daemon: Daemon) -> None:
    print("\nMetrics (excerpt of /metrics):")
    for family in daemon.registry.collect():
        if family.name not in (
            "xai_meter_tokens",
            "xai_meter_unmetered",
            "xai_meter_requests",
            "xai_meter_cost_usd",
        ):
            continue
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            print(f"  {sample.name}{{{labels}}} {sample.value:.10g}")
