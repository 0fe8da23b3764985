"""What the tests share: factories for records and usage, a daemon run in the test's loop,
readers of the monitoring files in dashboards/ (dashboards, rules, alerts), and the harness of
the fault-injection suite (tests/faults/: the daemon as a real process, a load driver that tags
every call, the ledger compared with what the clients saw, an upstream that misbehaves).

Kept in the package, not in `tests/`, so that no test module imports another: pytest's
`conftest.py` injects the fixtures, and test modules import these names from here. Nothing in
the daemon imports this module.

Why it is long: it is the one importable home of every helper the test tree shares (a test
module may import no other), in regions, each under its own heading.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import importlib
import itertools
import json
import os
import re
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from unittest import mock

import aiohttp
import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from daemon import config
from daemon.app import Daemon
from daemon.dialects import sse
from daemon.dialects.base import MAX_SCAN_BYTES, Tap
from daemon.dialects.chat import ChatStream
from daemon.dialects.coerce import loads_object
from daemon.dialects.sse import split_events, sse_data
from daemon.ledger.engine import open_ledger
from daemon.ledger.schema import open_database
from daemon.ledger.store import all_calls
from daemon.record import CallRecord

TEST_KEY = "xai-test-key-0123456789abcdef"

# The real grok-4-fast-reasoning chat usage sample of xai-api.md ("usage" of a chat completion):
# reasoning tokens sit outside completion_tokens, and the upstream reports its own cost.
XAI_CHAT_USAGE: dict[str, Any] = {
    "prompt_tokens": 165,
    "completion_tokens": 2,
    "total_tokens": 292,
    "prompt_tokens_details": {
        "text_tokens": 165,
        "audio_tokens": 0,
        "image_tokens": 0,
        "cached_tokens": 156,
    },
    "completion_tokens_details": {
        "reasoning_tokens": 125,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
    "num_sources_used": 0,
    "cost_in_usd_ticks": 731000,
}


# A user turn for the simulator tests.
USER_MESSAGES: list[dict[str, str]] = [
    {"role": "user", "content": "How many tokens does a metering relay count?"}
]


def cost_by_hand(
    p_in: int, p_cached: int, p_out: int, prompt: int, cached: int, output: int
) -> int:
    """xai-api.md's token formula written out, independent of any price code: ticks for
    `prompt` input tokens of which `cached` were cached, and `output` output tokens."""
    return (prompt - cached) * p_in + cached * p_cached + output * p_out


def sse_payloads(raw: bytes) -> list[str]:
    """The ``data:`` payloads of an LF-framed SSE body, in order."""
    return [
        line[6:].decode()
        for frame in raw.split(b"\n\n")
        for line in frame.split(b"\n")
        if line.startswith(b"data: ")
    ]


def make_record(**fields: Any) -> CallRecord:
    """A finished-looking chat completion record (200, billable); `fields` override any field."""
    base: dict[str, Any] = {
        "id": "t",
        "started_at": 0.0,
        "t0": 0.0,
        "provider": "xai",
        "endpoint": "chat.completions",
        "method": "POST",
        "path": "/v1/chat/completions",
        "billable": True,
        "status": 200,
    }
    return CallRecord(**{**base, **fields})


def feed_in_pieces(tap: Tap, body: bytes, cuts: Iterable[int], complete: bool = True) -> bytes:
    """What the client gets of `body` through `tap`, fed in the pieces `cuts` (offsets; out of
    range or repeated ones ignored) makes: each piece as the tap returns it (or as is, when it
    returns None), then the tap's tail at a clean end. Cut short (`complete` False): the body
    after the last cut never comes, and the tap finishes incomplete."""
    out = []
    points = sorted({c for c in cuts if 0 < c < len(body)})
    ends = [*points, len(body)] if complete else points
    for start, end in zip([0, *points][: len(ends)], ends, strict=True):
        got = tap.feed(body[start:end])
        out.append(body[start:end] if got is None else got)
    out.append(tap.finish(complete) or b"")
    return b"".join(out)


class SlowChatStream(ChatStream):
    """A chat stream tap that never goes quiet: it reads every event in turn. The reference
    the quiet path (`daemon.dialects.sse`: needles, runs read in one go) must agree with."""

    def quiet_needles(self) -> tuple[bytes, ...] | None:
        return None


def booked(record: CallRecord) -> tuple[object, ...]:
    """What a tap books on a record: usage, why unmetered, model, response id, fingerprint,
    service tier, time to first token and upstream error (to compare two taps)."""
    return (
        record.usage,
        record.unmetered_reason,
        record.model,
        record.response_id,
        record.fingerprint,
        record.service_tier,
        record.ttft_ms,
        record.upstream_error,
    )


def meter_chat_stream(
    kind: type[ChatStream],
    body: bytes,
    cuts: Iterable[int],
    filtering: bool,
    cap: int = MAX_SCAN_BYTES,
    coding: str = "",
    hold: int | None = None,
    complete: bool = True,
) -> tuple[CallRecord, bytes]:
    """The record a chat stream tap of `kind` books and the bytes its client gets, `body` (sent
    with Content-Encoding `coding`) fed in the pieces `cuts` makes (`feed_in_pieces`).
    `filtering`: the relay injected usage (the tap strips the usage chunk); `cap`: its
    `max_scan_bytes`; `hold`: its `unverified_hold`."""
    record = make_record(stream=True)
    record.usage_injected = filtering
    tap = kind(record, lambda: 2.0, coding, filtering=filtering)
    tap.max_scan_bytes = cap
    if hold is not None:
        tap.unverified_hold = hold
    return record, feed_in_pieces(tap, body, cuts, complete)


def quiet_as_slow(
    body: bytes,
    cuts: Iterable[int],
    filtering: bool,
    cap: int = MAX_SCAN_BYTES,
    hold: int | None = None,
    quiet_hold: int | None = None,
    complete: bool = True,
    gzipped: bool = False,
) -> CallRecord:
    """The quiet chat tap against `SlowChatStream` (`meter_chat_stream`'s arguments;
    `quiet_hold`: `daemon.dialects.sse._QUIET_HOLD`; `gzipped`: `body` is sent gzip-encoded,
    `cuts` falling in the encoded bytes): the same bytes out (once it ended whole, what was
    sent; filtering, the body decoded, less its usage chunks) and the same record (`booked`),
    or AssertionError. Returns the quiet tap's record."""
    cuts = list(cuts)
    sent, coding = (gzip.compress(body), "gzip") if gzipped else (body, "")
    args = (sent, cuts, filtering, cap, coding, hold, complete)
    with mock.patch.object(sse, "_QUIET_HOLD", quiet_hold or sse._QUIET_HOLD):
        quiet, out = meter_chat_stream(ChatStream, *args)
        slow, slow_out = meter_chat_stream(SlowChatStream, *args)
    assert out == slow_out
    if complete:
        assert out == (without_usage_chunks(body, cap) if filtering else sent)
    assert booked(quiet) == booked(slow)
    return quiet


def sse_frames(
    draw: Callable[[Any], Any], events: list[list[bytes]], endings: str, most_odd: int = 1
) -> bytes:
    """A hypothesis-drawn SSE body: each event's lines, each with a line ending (`endings`
    "lf": LF only; else drawn from LF, CRLF and CR, never an LF right after a CR ending, which
    would make one CRLF of the two: no server writes that), a blank line after each event, and
    sometimes 1 to `most_odd` more (odd runs of endings). `draw`: hypothesis's ``draw``."""
    from hypothesis import strategies as st  # (a test dependency: imported only when drawn)

    out: list[bytes] = []
    previous: bytes | None = None

    def ending() -> bytes:
        nonlocal previous
        if endings == "lf":
            previous = b"\n"
        else:
            choices = [b"\r\n", b"\r"] if previous == b"\r" else [b"\n"] * 4 + [b"\r\n", b"\r"]
            previous = draw(st.sampled_from(choices))
        return previous

    for lines in events:
        for line in [*lines, b""]:
            out.append(line + ending())
        if draw(st.integers(0, 6)) == 0:
            out.extend(ending() for _ in range(draw(st.integers(1, most_odd))))
    return b"".join(out)


def event_ends(body: bytes) -> list[int]:
    """Where each event of an SSE body ends (`split_events`; a last unended one too): the
    reads of a paced stream, one event each."""
    ends, at = [], 0
    for event in split_events(body):
        at += len(event)
        ends.append(at)
    return ends


def drawn_cuts(
    draw: Callable[[Any], Any], body: bytes, needles: Sequence[bytes] = (), spread: int = 3
) -> list[int]:
    """Where a hypothesis-drawn SSE body is cut into chunks: anywhere, every few bytes, or
    within `spread` bytes of an event's end or of a needle's start or end (where a tap decides
    most). `draw`: hypothesis's."""
    from hypothesis import strategies as st  # (a test dependency: imported only when drawn)

    how = draw(st.integers(0, 3))
    if how == 0:
        anywhere: list[int] = draw(st.lists(st.integers(0, len(body)), max_size=10))
        return anywhere
    if how == 1:
        step = draw(st.integers(1, 40))
        return list(range(draw(st.integers(0, step)), len(body), step))
    marks = event_ends(body)
    for needle in needles:
        at = body.find(needle)
        while at >= 0:
            marks += [at, at + len(needle)]
            at = body.find(needle, at + 1)
    picked = draw(st.lists(st.sampled_from(marks), max_size=6))
    return [mark + draw(st.integers(-spread, spread)) for mark in picked]


def cap_clear_of_the_edge(body: bytes, cap: int) -> int:
    """`cap`, raised past the one known edge of the scan cap, which the quiet-path tests leave
    out: an event one byte over it by the LF of a CRLF cut in two."""
    while any(len(event) == cap + 1 for event in split_events(body)):
        cap += 2
    return cap


def without_usage_chunks(body: bytes, cap: int) -> bytes:
    """An SSE body without its usage chunks (``choices: []`` and a usage object), as a
    filtering chat tap must send it: an event over `cap` bytes is never read, so never
    stripped."""
    kept = []
    for event in split_events(body):
        obj = loads_object(sse_data(event)) if len(event) <= cap else None
        if obj is None or obj.get("choices") != [] or type(obj.get("usage")) is not dict:
            kept.append(event)
    return b"".join(kept)


def stream_cut_errors() -> tuple[type[BaseException], ...]:
    """What the openai SDK raises while reading a stream the server cut short: its own
    `APIError` on newer releases, httpx's `RemoteProtocolError` on older ones (our floor, whose
    transport is httpx; newer ones may not install httpx at all)."""
    import openai

    errors: list[type[BaseException]] = [openai.APIError]
    with contextlib.suppress(ImportError):
        errors.append(importlib.import_module("httpx").RemoteProtocolError)
    return tuple(errors)


def make_settings(tmp_path: Path, upstream: str, **extra: Any) -> config.Settings:
    """Settings for a daemon under test: OS-chosen loopback ports, a ledger in `tmp_path`,
    short timeouts, no price refresh. `extra` sets more keys, sections joined by ``__``
    (``ledger__batch_size=1``)."""
    table: dict[str, Any] = {
        "relay": {"port": 0},
        "admin": {"port": 0},
        # No gRPC listener unless a test asks for one (`Daemon(grpc_any_port=True)`).
        "grpc": {"port": 0},
        "upstream": {"base_url": upstream, "connect_timeout": 2, "read_timeout": 5},
        "ledger": {"path": str(tmp_path / "ledger.db"), "flush_interval": 0.0},
        "shutdown": {"grace_period": 2},
        # Off unless a test is about prices: listing fetches would interleave with the
        # requests other tests inspect on the simulator.
        "pricing": {"refresh": False},
    }
    for dotted, value in extra.items():
        *sections, key = dotted.split("__")
        node = table
        for section in sections:
            node = node.setdefault(section, {})
        node[key] = value
    return config.from_mapping(table)


class RunningDaemon:
    """A daemon started in the test's loop, with helpers to read what it recorded."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.registry: CollectorRegistry = daemon.registry

    @property
    def base_url(self) -> str:
        return self.daemon.relay_url + "/v1"

    @property
    def url(self) -> str:
        return self.daemon.relay_url

    @property
    def grpc_address(self) -> str:
        """``host:port`` of its gRPC listener (xai-sdk's ``api_host``); "" when it has none."""
        return self.daemon.grpc_address

    @property
    def admin_url(self) -> str:
        return self.daemon.admin_url

    @property
    def ledger_path(self) -> str:
        return self.daemon.settings.ledger.path

    @property
    def ledger(self) -> str:
        """The ledger it writes: its ``ledger.url`` (PostgreSQL, shared), else its SQLite file."""
        return self.daemon.settings.ledger.url or self.ledger_path

    async def rows(self, count: int, within: float = 5.0) -> list[dict[str, Any]]:
        """All rows of the ledger it writes (on a shared PostgreSQL ledger, the other daemons'
        too), once at least `count` of its own have been written (awaits; never sleeps)."""
        async with asyncio.timeout(within):
            await self.daemon.ledger.wait_written(count)
        db = open_ledger(self.ledger, readonly=True)
        try:
            return all_calls(db)
        finally:
            db.close()

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)


DaemonFactory = Callable[..., Awaitable[RunningDaemon]]


# --- the status page (tests/test_status_api.py, tests/test_status_page.py) -------------------

STATUS_KEYS = {"xai-status-key-prod-0001": "prod-backend", "xai-status-key-jobs-0002": "batch-jobs"}
STATUS_FINGERPRINT = "fp_status0new"  # what grok-3-mini answers with after the change


async def status_traffic(state: Any, relay_base: str) -> int:
    """Real calls through the daemon at `relay_base` (``.../v1``) to the simulator whose
    `SimulatorState` is `state`, as a status page should show them: two keys
    named by GET /v1/api-key (`STATUS_KEYS`), three models, two apps, streamed calls (TTFT),
    a fingerprint change on grok-3-mini (to `STATUS_FINGERPRINT`), an upstream 500 (error),
    a chat answer without usage (unmetered) and an Anthropic message (no reported cost, no
    price list: unpriced). Returns the number of ledger rows it makes."""
    from daemon.simulator.auth import api_key_id  # the simulator is a test dependency here
    from daemon.simulator.state import ManagedKey

    rows = 0
    async with aiohttp.ClientSession() as http:

        async def call(
            key: str, path: str, body: dict[str, Any] | None = None, **headers: str
        ) -> None:
            nonlocal rows
            auth = {"Authorization": f"Bearer {key}", **headers}
            if body is None:
                async with http.get(relay_base + path, headers=auth) as response:
                    await response.read()
            else:
                async with http.post(relay_base + path, json=body, headers=auth) as response:
                    await response.read()
            rows += 1

        for key, name in STATUS_KEYS.items():
            state.managed_keys[api_key_id(key)] = ManagedKey(api_key_id=api_key_id(key), name=name)
            await call(key, "/api-key")
        prod, jobs = STATUS_KEYS
        plan = [
            (prod, "grok-4-fast-reasoning", "web", False),
            (prod, "grok-4-fast-reasoning", "web", True),
            (prod, "grok-4-0709", "web", True),
            (jobs, "grok-3-mini", "worker", False),
            (jobs, "grok-3-mini", "worker", True),
            (jobs, "grok-4-0709", "worker", False),
        ]
        for key, model, app, stream in plan:
            body = {"model": model, "messages": USER_MESSAGES, "stream": stream}
            await call(key, "/chat/completions", body, **{"X-Meter-App": app})
        state.fingerprints["grok-3-mini"] = STATUS_FINGERPRINT
        body = {"model": "grok-3-mini", "messages": USER_MESSAGES}
        await call(jobs, "/chat/completions", body, **{"X-Meter-App": "worker"})
        await call(prod, "/chat/completions", body, **{"X-Sim-Status": "500"})
        await call(prod, "/chat/completions", body, **{"X-Sim-Usage": "none"})
        message = {"model": "grok-4-0709", "max_tokens": 16, "messages": USER_MESSAGES}
        await call(jobs, "/messages", message, **{"X-Meter-App": "worker"})
    return rows


# --- the monitoring files (dashboards/): what the dashboard and Prometheus tests read -------

ROOT = Path(__file__).parent.parent  # the repository (tests run from a clone)
DASHBOARDS = ROOT / "dashboards"
RULE_FILES = sorted((DASHBOARDS / "rules").glob("*.yml"))
UNIT_TESTS = sorted((DASHBOARDS / "tests").glob("*.yaml"))
JSON_FILES = sorted((DASHBOARDS / "grafana").glob("*.json"))
RUNBOOK = DASHBOARDS / "RUNBOOK.md"
TARGET_LABELS = {"job", "instance"}  # added by Prometheus to every scraped series


def missing(reason: str) -> NoReturn:
    """Something a test needs is not on this machine (`reason` says what, and what goes
    untested): a loud skip on a developer's machine, a failure in CI, where `.ci/run`
    installs it (a skipped check must never pass for a tested one there)."""
    import pytest  # only the tests call this; the package does not depend on pytest

    if os.environ.get("CI"):
        pytest.fail(f"{reason}, and CI must test it")
    pytest.skip(reason)


def binary(name: str) -> str:
    """The path of a Prometheus binary; `missing` without it."""
    path = shutil.which(name)
    if path is None:
        missing(
            f"`{name}` is not installed (apt-get install prometheus): the dashboards, "
            "rules and alerts are NOT tested"
        )
    return path


def load_yaml(path: Path) -> Any:
    import yaml  # type: ignore[import-untyped]  # a test extra, not a dependency of the daemon

    return yaml.safe_load(path.read_text())


def rules() -> Iterator[dict[str, Any]]:
    for path in RULE_FILES:
        for group in load_yaml(path)["groups"]:
            yield from group["rules"]


def alerts() -> list[dict[str, Any]]:
    return [r for r in rules() if "alert" in r]


def recordings() -> list[dict[str, Any]]:
    return [r for r in rules() if "record" in r]


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


def dashboard_queries(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target, annotation and variable of a dashboard."""
    for panel in panels(board["panels"]):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for annotation in board["annotations"]["list"]:
        if annotation.get("expr"):
            yield f"annotation {annotation['name']!r}", annotation["expr"]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            selector, _label = label_values(variable["query"])
            yield f"variable ${variable['name']}", selector


def label_values(query: str) -> tuple[str, str]:
    match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
    assert match, f"not a label_values(selector, label) query: {query}"
    return match.group(1), match.group(2)


def all_expressions() -> list[tuple[str, str]]:
    found = [
        (f"{path.name}: {where}", expr)
        for path in JSON_FILES
        for where, expr in dashboard_queries(json.loads(path.read_text()))
    ]
    found += [(f"record {r['record']}", r["expr"]) for r in recordings()]
    found += [(f"alert {r['alert']}", r["expr"]) for r in alerts()]
    return found


# --- a small PromQL reader: metric names, selectors' labels, grouping labels --------------------


# --- the fault-injection suite (tests/faults/): the daemon as a process, tagged load --------
# The fixtures that build these are in tests/faults/conftest.py.

FAULTS_MODEL = "grok-4-fast-reasoning"  # what the suite's calls ask for
_T = TypeVar("_T")


async def eventually(
    probe: Callable[[], Awaitable[_T | None]], what: str, within: float, every: float = 0.05
) -> _T:
    """Poll `probe` until it returns something truthy, and return it; AssertionError naming
    `what` and the last value seen when `within` seconds pass first."""
    deadline = time.monotonic() + within
    while True:
        last = await probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within} s (last seen: {last!r})")
        await asyncio.sleep(every)


def free_port() -> int:
    """A loopback port free right now (`DaemonProcess.start` retries the rare clash)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def toml_text(table: Mapping[str, Mapping[str, Any]]) -> str:
    """A two-level table (section -> key -> scalar) as TOML (JSON's scalars are TOML's)."""
    lines = []
    for section, values in table.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


# How `DaemonProcess` runs the daemon by default: ``python -m daemon`` (a `launcher` replaces it).
DAEMON_MODULE = ("-m", "daemon")


class DaemonProcess:
    """One ``python -m daemon serve --config FILE`` process of this tree (PYTHONPATH), its
    ports (loopback, free), its log (stdout and stderr into `log_path`). `nofile`: the file
    limit (RLIMIT_NOFILE, soft and hard) it starts with; None: the test's own. `relay_port`:
    the relay's port, fixed (another daemon names it as its upstream); 0: a free one.
    `launcher`: what runs it in place of ``-m daemon`` (e.g. ``bench/ablated.py`` and its
    options), given ``serve --config FILE``."""

    def __init__(
        self,
        config_path: Path,
        log_path: Path,
        nofile: int | None = None,
        relay_port: int = 0,
        launcher: Sequence[str] = DAEMON_MODULE,
    ) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.nofile = nofile
        self.launcher = tuple(launcher)
        self.process: asyncio.subprocess.Process | None = None
        self.fixed_relay_port = relay_port
        self.relay_port = 0
        self.admin_port = 0

    @property
    def relay_url(self) -> str:
        return f"http://127.0.0.1:{self.relay_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def returncode(self) -> int | None:
        return self.process.returncode if self.process is not None else None

    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def log(self) -> str:
        """Everything it wrote so far (JSON log lines), as text."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def start(self, table: dict[str, dict[str, Any]], within: float = 30.0) -> None:
        """Write `table` as its config with fresh ports, start it, and return once /readyz
        says ready (bounded); AssertionError with the log's tail when it exits or hangs. A
        port taken between `free_port` and the bind is tried again, 3 times at most."""
        for _ in range(3):
            await self._launch(table, within)
            if self.running():
                return
            if "cannot listen" not in self.log():
                raise AssertionError(f"exit {self.returncode} at start:\n{self.log()[-3000:]}")
        raise AssertionError(f"no free ports in 3 tries:\n{self.log()[-3000:]}")

    async def fail_to_start(self, table: dict[str, dict[str, Any]], within: float = 30.0) -> int:
        """Start it with `table` where it must not start: its exit code, once it exited
        (bounded); AssertionError when it got ready instead."""
        await self._launch(table, within)
        if self.running():
            await self.kill()
            raise AssertionError(f"it started (ready):\n{self.log()[-3000:]}")
        assert self.returncode is not None
        return self.returncode

    async def _launch(self, table: dict[str, dict[str, Any]], within: float) -> None:
        """Start it on fresh ports; return once it is ready or has exited (bounded)."""
        self.relay_port, self.admin_port = self.fixed_relay_port or free_port(), free_port()
        table["relay"]["port"], table["admin"]["port"] = self.relay_port, self.admin_port
        self.config_path.write_text(toml_text(table))
        await self._spawn()
        try:
            await eventually(self._ready_or_gone, "the daemon says ready", within)
        except AssertionError:
            await self.kill()
            raise AssertionError(f"the daemon never got ready:\n{self.log()[-3000:]}") from None

    async def _spawn(self) -> None:
        nofile = self.nofile

        def limit_files() -> None:  # in the child, before exec: the limit the daemon reads
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        paths = [str(ROOT), os.environ.get("PYTHONPATH", "")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
        env.pop("XAI_METER_CONFIG", None)
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *(sys.executable, *self.launcher, "serve", "--config", str(self.config_path)),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                cwd=self.config_path.parent,
                preexec_fn=limit_files if nofile is not None else None,
            )

    async def _ready_or_gone(self) -> bool:
        if not self.running():
            return True  # `start` tells an exit from readiness
        status, _ = await self.readyz()
        return status == 200

    async def get(self, path: str, within: float = 5.0) -> tuple[int, bytes]:
        """GET `path` on the admin port on a new connection: (status, body); (0, b"") when
        there is no answer within `within` seconds."""
        timeout = aiohttp.ClientTimeout(total=within)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(self.admin_url + path) as response,
            ):
                return response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError):
            return 0, b""

    async def readyz(self) -> tuple[int, dict[str, Any]]:
        """/readyz: (status, its JSON object); (0, {}) without an answer."""
        status, body = await self.get("/readyz", within=2.0)
        try:
            parsed = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            parsed = {"body": body.decode(errors="replace")}
        return status, parsed if isinstance(parsed, dict) else {"body": parsed}

    async def metric(self, name: str) -> float | None:
        """The unlabelled sample `name` on /metrics; None when absent or no answer."""
        status, body = await self.get("/metrics")
        if status != 200:
            return None
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                if sample.name == name and not sample.labels:
                    return float(sample.value)
        return None

    def signal(self, signum: int) -> None:
        """Send `signum` to this process (by its pid), if it still runs."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signum)

    async def wait_exit(self, within: float) -> int:
        """Its exit code, once it exited (TimeoutError after `within` seconds)."""
        assert self.process is not None
        async with asyncio.timeout(within):
            return await self.process.wait()

    async def stop(self, within: float = 20.0) -> int:
        """SIGTERM, then its exit code (bounded)."""
        self.signal(signal.SIGTERM)
        return await self.wait_exit(within)

    async def kill(self) -> None:
        """SIGKILL and reap (bounded); nothing when it already ended."""
        self.signal(signal.SIGKILL)
        if self.process is not None:
            with contextlib.suppress(TimeoutError):
                await self.wait_exit(10.0)


class Daemons:
    """Starts the daemons of one test, each with a config of its own in `workdir`: free
    loopback ports, no gRPC listener, no price refresh, JSON logs, ledger rows flushed every
    50 ms, a 2 s grace period; `ledger` is the ledger path of the last one started."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.ledger = workdir / "ledger.db"
        self.where: Path | str = self.ledger  # the ledger the rows are read from (a URL too)
        self.started: list[DaemonProcess] = []

    async def kill_all(self) -> None:
        """Kill (by pid) and reap every daemon this started that still runs (teardown)."""
        for process in self.started:
            await process.kill()

    async def start(
        self,
        upstream: str,
        ledger: Path | None = None,
        nofile: int | None = None,
        launcher: Sequence[str] = DAEMON_MODULE,
        **extra: Any,
    ) -> DaemonProcess:
        """A ready daemon relaying to `upstream`, on `ledger` (default: ledger.db in
        `workdir`); `extra` sets more keys, the section joined by ``__``
        (``ledger__flush_interval=5``); `nofile` and `launcher` as `DaemonProcess`."""
        process, table = self._new(upstream, ledger, nofile, extra, launcher)
        await process.start(table)
        return process

    async def fail_to_start(
        self, upstream: str, ledger: Path | None = None, **extra: Any
    ) -> DaemonProcess:
        """A daemon (`start`'s settings) that exited at start, as it must; AssertionError
        when it got ready instead. Its `returncode` and `log` say how it went."""
        process, table = self._new(upstream, ledger, None, extra)
        await process.fail_to_start(table)
        return process

    def _new(
        self,
        upstream: str,
        ledger: Path | None,
        nofile: int | None,
        extra: dict[str, Any],
        launcher: Sequence[str] = DAEMON_MODULE,
    ) -> tuple[DaemonProcess, dict[str, dict[str, Any]]]:
        self.ledger = ledger or self.workdir / "ledger.db"
        table: dict[str, dict[str, Any]] = {
            "relay": {"host": "127.0.0.1"},
            "admin": {"host": "127.0.0.1"},
            "grpc": {"port": 0},
            "upstream": {"base_url": upstream, "connect_timeout": 2, "read_timeout": 30},
            "ledger": {"path": str(self.ledger), "flush_interval": 0.05},
            "shutdown": {"grace_period": 2},
            "pricing": {"refresh": False},
            "log": {"level": "info", "format": "json"},
        }
        for dotted, value in extra.items():
            section, key = dotted.split("__", 1)
            table.setdefault(section, {})[key] = value
        self.where = table["ledger"].get("url") or self.ledger
        n = len(self.started)
        process = DaemonProcess(
            self.workdir / f"daemon{n}.toml", self.workdir / f"daemon{n}.log", nofile, 0, launcher
        )
        self.started.append(process)
        return process, table

    def rows(self) -> list[dict[str, Any]]:
        """The rows of the current ledger (`ledger_rows`)."""
        return ledger_rows(self.where)

    async def rows_with(self, tags: Iterable[str], within: float = 10.0) -> list[dict[str, Any]]:
        """The current ledger's rows once each of `tags` has one (polled, bounded)."""
        wanted = set(tags)
        missing = wanted

        async def probe() -> list[dict[str, Any]] | None:
            nonlocal missing
            rows = await asyncio.to_thread(ledger_rows, self.where)
            missing = wanted - {row["app"] for row in rows}
            return rows if not missing else None

        try:
            return await eventually(probe, f"rows for {len(wanted)} calls", within)
        except AssertionError:
            shown = sorted(missing)[:5]
            raise AssertionError(
                f"{len(missing)} of {len(wanted)} calls have no row in {self.ledger.name} after "
                f"{within} s, e.g. {shown}"
            ) from None


@dataclass
class Seen:
    """What the client saw of one call: its tag, the status (None: no answer), whether it saw
    the answer end (the whole body; a stream's ``[DONE]``), the bytes, the exception's name,
    and the headers it sent."""

    tag: str
    status: int | None = None
    ended: bool = False
    body: bytes = b""
    error: str | None = None
    sent: dict[str, str] = field(default_factory=dict)

    def usage(self) -> dict[str, Any]:
        """The usage the client got: the JSON body's, or the stream's last usage chunk's."""
        if self.body.startswith(b"{"):
            return dict(orjson.loads(self.body).get("usage") or {})
        found: dict[str, Any] = {}
        for line in self.body.split(b"\n"):
            if line.startswith(b"data: {"):
                found = orjson.loads(line[6:]).get("usage") or found
        return found

    def row(self) -> dict[str, Any]:
        """The fields the ledger row of a call the client saw end well must have: 200, no
        error, metered, the prompt tokens the client was told."""
        assert self.status == 200 and self.ended, self
        return {**NORMAL_ROW, "input_tokens": self.usage()["prompt_tokens"]}


NORMAL_ROW: dict[str, Any] = {"status": 200, "error": None, "metered": 1, "unmetered_reason": None}
CRASH_ROW: dict[str, Any] = {"error": "crash", "metered": 0, "unmetered_reason": "crash"}


class HeldStream:
    """A streamed call held open after its first bytes (`Driver.open_stream`)."""

    def __init__(self, seen: Seen, response: aiohttp.ClientResponse) -> None:
        self.seen = seen
        self.response = response

    def leave(self) -> None:
        """The client goes now, mid-stream: its connection is closed."""
        self.response.close()

    async def finish(self, within: float = 10.0) -> Seen:
        """Read the rest (bounded); `seen.ended`: the stream ended with ``[DONE]``."""
        try:
            async with asyncio.timeout(within):
                self.seen.body += await self.response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.seen.error = type(exc).__name__
        finally:
            self.response.close()
        self.seen.ended = b"data: [DONE]" in self.seen.body
        return self.seen


class Driver:
    """Chat completions through a daemon's relay (`use`), each tagged ``X-Meter-App:
    PREFIX-KIND-N`` (unique, at most 64 characters, stored in ``calls.app``), and what the
    client saw of each, by tag (`seen`)."""

    def __init__(self, session: aiohttp.ClientSession, prefix: str) -> None:
        self.session = session
        self.prefix = prefix
        self.url = ""
        self.seen: dict[str, Seen] = {}
        self._numbers = itertools.count()

    def use(self, daemon: DaemonProcess) -> None:
        """Send the calls that follow to `daemon` (a restarted one has new ports)."""
        self.url = daemon.relay_url

    def new(self, kind: str) -> Seen:
        """A new tag of `kind` (``PREFIX-KIND-N``), remembered with nothing seen yet."""
        tag = f"{self.prefix}-{kind}-{next(self._numbers)}"
        assert len(tag) <= 64, tag
        seen = self.seen[tag] = Seen(tag)
        return seen

    def tags(self, kind: str) -> list[str]:
        """Every tag of `kind` so far, in order."""
        return [tag for tag in self.seen if tag.startswith(f"{self.prefix}-{kind}-")]

    def request(
        self, tag: str, stream: bool = False, key: str = TEST_KEY, **headers: str
    ) -> tuple[dict[str, str], bytes]:
        """The headers and body of a chat completion tagged `tag` (`headers` added)."""
        body: dict[str, Any] = {"model": FAULTS_MODEL, "messages": USER_MESSAGES}
        if stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        sent = {
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "X-Meter-App": tag,
        }
        return sent | headers, orjson.dumps(body)

    async def chat(
        self,
        kind: str = "call",
        *,
        stream: bool = False,
        key: str = TEST_KEY,
        headers: Mapping[str, str] | None = None,
        within: float = 15.0,
    ) -> Seen:
        """One chat completion, read to its end (bounded): what the client saw. The call's
        own failure is not raised: it is in the `Seen`."""
        seen = self.new(kind)
        sent, body = self.request(seen.tag, stream, key, **(headers or {}))
        seen.sent = sent
        try:
            async with asyncio.timeout(within):
                url = self.url + "/v1/chat/completions"
                async with self.session.post(url, data=body, headers=sent) as response:
                    seen.status = response.status
                    seen.body = await response.read()
            seen.ended = b"data: [DONE]" in seen.body if stream else True
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            seen.error = type(exc).__name__
        return seen

    async def many(self, count: int, kind: str = "call", **options: Any) -> list[Seen]:
        """`count` calls at once (`chat`'s options)."""
        return list(await asyncio.gather(*(self.chat(kind, **options) for _ in range(count))))

    async def open_stream(
        self, kind: str = "stream", headers: Mapping[str, str] | None = None, within: float = 15.0
    ) -> HeldStream:
        """A streamed call, returned once its headers and first bytes arrived (so the daemon
        certainly started it)."""
        seen = self.new(kind)
        sent, body = self.request(seen.tag, True, **(headers or {}))
        async with asyncio.timeout(within):
            url = self.url + "/v1/chat/completions"
            response = await self.session.post(url, data=body, headers=sent)
            seen.status = response.status
            seen.body = await response.content.readany()
        assert seen.status == 200 and seen.body, (seen.status, seen.body)
        return HeldStream(seen, response)

    async def held_streams(self, count: int, kind: str = "stream") -> list[HeldStream]:
        """`count` streams held open at once: the simulator stalls each after its first frame
        (``X-Sim-Stall: body``) until its client leaves."""
        stall = {"X-Sim-Stall": "body"}
        return list(await asyncio.gather(*(self.open_stream(kind, stall) for _ in range(count))))


def ledger_rows(path: Path | str) -> list[dict[str, Any]]:
    """Every call row of the ledger at `path` (a file, or a PostgreSQL URL), read-only; []
    when there is none (yet) or it cannot be read right now."""
    if isinstance(path, str):
        db = open_ledger(path, readonly=True)
        try:
            return all_calls(db)
        except Exception:  # no calls table yet (psycopg's UndefinedTable)
            return []
        finally:
            db.close()
    if not path.exists():
        return []
    try:
        db = open_database(path, readonly=True)
    except sqlite3.Error:
        return []
    try:
        return all_calls(db)
    except sqlite3.Error:
        return []
    finally:
        db.close()


def expect_rows(
    rows: list[dict[str, Any]],
    exact: Mapping[str, Mapping[str, Any]],
    maybe: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    one_of: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> None:
    """Assert the ledger's `rows` hold exactly one row for each tag (``app``) of `exact`,
    with those field values; at most one for each tag of `maybe`, and exactly one for each
    tag of `one_of`, with one of its sets of field values; and no other row."""
    grouped: dict[str | None, list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(row["app"], []).append(row)
    problems: list[str] = []
    for tag, fields in exact.items():
        found = grouped.get(tag, [])
        if len(found) != 1:
            problems.append(f"{tag}: {len(found)} rows, want 1")
        elif wrong := {k: found[0].get(k) for k, v in fields.items() if found[0].get(k) != v}:
            problems.append(f"{tag}: {wrong}, want {dict(fields)}")
    for tag, choices, least in [
        *((t, c, 0) for t, c in (maybe or {}).items()),
        *((t, c, 1) for t, c in (one_of or {}).items()),
    ]:
        found = grouped.get(tag, [])
        if not least <= len(found) <= 1:
            problems.append(f"{tag}: {len(found)} rows, want {'1' if least else 'at most 1'}")
        elif found and not any(all(found[0].get(k) == v for k, v in c.items()) for c in choices):
            problems.append(f"{tag}: {found[0]} matches none of {list(choices)}")
    known = {*exact, *(maybe or {}), *(one_of or {})}
    strays = [str(tag) for tag in grouped if tag not in known]
    if strays:
        problems.append(f"rows of calls no client made: {strays[:10]} ({len(strays)} tags)")
    assert not problems, f"{len(problems)} mismatches:\n" + "\n".join(problems[:20])


ODD_PROMPT_TOKENS = "X-Odd-Prompt-Tokens"  # `OddUpstream`: the literal prompt_tokens it answers
ODD_ECHO_KEY = "X-Odd-Echo-Key"  # `OddUpstream`: 1 = a 400 that echoes the caller's key


class OddUpstream:
    """A real upstream (aiohttp, loopback) that answers what the simulator never would.

    ``POST /v1/chat/completions`` (JSON or SSE, as asked) carries ``prompt_tokens`` written as
    the request's ``X-Odd-Prompt-Tokens`` says, digit for digit (2^64 and beyond, which no
    JSON library writes from a number); with ``X-Odd-Echo-Key: 1`` it answers 400 with the
    caller's key in ``code`` and ``error``, as every other path does (listings included).
    `requests`: (path, headers) of each request, in order."""

    def __init__(self) -> None:
        self.url = ""
        self.requests: list[tuple[str, dict[str, str]]] = []
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_route("*", "/{tail:.*}", self._echo)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _echo(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, dict(request.headers)))
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        body = {"code": f"invalid api key {key}", "error": f"Incorrect API key provided: {key}."}
        return web.json_response(body, status=400)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get(ODD_ECHO_KEY) == "1":
            return await self._echo(request)
        self.requests.append((request.path, dict(request.headers)))
        stream = (await request.json()).get("stream") is True
        prompt = request.headers.get(ODD_PROMPT_TOKENS, "11")
        if not prompt.isdigit():
            return web.json_response({"error": f"{ODD_PROMPT_TOKENS}: digits"}, status=422)
        usage = b'{"prompt_tokens": %s, "completion_tokens": 2, "total_tokens": 13}' % (
            prompt.encode()
        )
        head = b'{"id": "chatcmpl-odd", "created": 1, "model": "%s", ' % FAULTS_MODEL.encode()
        if not stream:
            return web.Response(
                body=head + b'"object": "chat.completion", "choices": [{"index": 0, "message": '
                b'{"role": "assistant", "content": "ok"}, "finish_reason": "stop"}], '
                b'"usage": ' + usage + b"}",
                content_type="application/json",
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        chunk = b"data: " + head + b'"object": "chat.completion.chunk", "choices": '
        await response.write(
            chunk + b'[{"index": 0, "delta": {"role": "assistant", "content": "ok"}, '
            b'"finish_reason": "stop"}]}\n\n'
        )
        await response.write(chunk + b'[], "usage": ' + usage + b"}\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


# --- PostgreSQL: a throwaway cluster for the ledger's PostgreSQL engine (issue 15) ----------


def postgres_bin() -> Path | None:
    """The directory of Debian's PostgreSQL server binaries (``initdb``, ``pg_ctl``), the
    newest version installed (``/usr/lib/postgresql/<version>/bin``), else one on PATH."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


class PgCluster:
    """A throwaway PostgreSQL cluster: ``initdb`` in a new temporary directory (as the
    ``postgres`` user when run as root: initdb refuses root), started by ``pg_ctl`` on a free
    loopback port, trust authentication, its unix socket in that directory. `settings` are
    extra ``-c`` server settings (the tests turn fsync off; a benchmark keeps the defaults).
    ``stop`` ends the server by its pid (SIGINT: PostgreSQL's fast shutdown) and deletes the
    directory; ``stop_server`` and ``start_server`` stop and start it again on its port."""

    def __init__(self, settings: Mapping[str, str] | None = None) -> None:
        self.bin = postgres_bin()
        self.settings = dict(settings or {})
        self.root: Path | None = None
        self.port = 0
        self.pid: int | None = None

    def _as_owner(self, *argv: str | Path) -> list[str]:
        args = [str(a) for a in argv]
        return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args

    def start(self, within: float = 60.0) -> None:
        """initdb, then start the server; RuntimeError (with its log) when it cannot."""
        import tempfile

        if self.bin is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        self.root = Path(tempfile.mkdtemp(prefix="xai-meter-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        initdb: list[str | Path] = [self.bin / "initdb", "-D", self.root / "data", "-U", "postgres"]
        subprocess.run(
            self._as_owner(*initdb, "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"),
            check=True,
            capture_output=True,
            timeout=within,
        )
        for attempt in range(3):  # a free port may be taken before the server binds it
            self.port = free_port()
            try:
                self.start_server(within)
                return
            except RuntimeError:
                if attempt == 2:
                    raise

    def start_server(self, within: float = 60.0) -> None:
        """Start the server of the cluster made, on ``port`` (again, after `stop_server`)."""
        assert self.bin is not None and self.root is not None
        data = self.root / "data"
        options = [
            "-c listen_addresses=127.0.0.1",
            f"-p {self.port}",
            f"-k {self.root}",
            *(f"-c {key}={value}" for key, value in self.settings.items()),
        ]
        pg_ctl: list[str | Path] = [
            self.bin / "pg_ctl",
            "-D",
            data,
            "-l",
            self.root / "server.log",
            "-w",
        ]
        done = subprocess.run(
            self._as_owner(*pg_ctl, "-t", str(int(within)), "-o", " ".join(options), "start"),
            capture_output=True,
            timeout=within + 5,
        )
        if done.returncode != 0:
            log = (self.root / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"PostgreSQL did not start:\n{done.stderr!r}\n{log}")
        self.pid = int((data / "postmaster.pid").read_text().split()[0])

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new, empty database; its URL."""
        from daemon.ledger.engine import create_database

        create_database(self.url(), name)
        return self.url(name)

    def stop_server(self, within: float = 30.0) -> None:
        """Stop the server (SIGINT to its pid: a fast shutdown), keeping the cluster."""
        if self.pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGINT)
        deadline = time.monotonic() + within
        while _alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.pid = None

    def stop(self, within: float = 30.0) -> None:
        """Stop the server and delete the cluster."""
        self.stop_server(within)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None


def _alive(pid: int) -> bool:
    """The process runs (a zombie no longer does: its parent may never reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
