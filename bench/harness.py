"""What the benchmark (`run.py`) and the soak (`soak.py`) share: processes, ports, /proc, the
daemon's /metrics and its ledger, and the way a script starts and always cleans up.

* `Procs`: every process a script starts, each ended by its PID whatever happened (SIGTERM,
  then SIGKILL after a grace period); its stdout/stderr go to files in a work directory.
* `free_port`, `wait_listening` (a "listening" line on a process's stdout), `wait_ready` (an
  HTTP 200, e.g. the daemon's ``/readyz``), `tail` (a log's last lines, for errors).
* `serve_command`: the daemon's ``python -m daemon serve`` command line, run from a source tree
  (``python -m`` looks in the working directory first, so it is that tree's ``daemon/`` that
  runs, not whatever is installed).
* `proc_status_mb`: a ``/proc/PID/status`` memory field (VmRSS, VmHWM) in MB.
* `scrape_metrics`: each metric family on the daemon's admin ``/metrics``, labels summed away.
* `ledger_readonly`: a read-only SQLite connection (``mode=ro`` URI) to a ledger file.
* `percentile`: nearest-rank.
* `add_common_options`: ``--daemon-config``, ``--keep-logs``.
* `run_script`: the work directory, SIGTERM as an interrupt, uvloop when installed, exit codes
  (2: the script could not run, 130: interrupted) and the clean-up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


class BenchError(RuntimeError):
    """The benchmark itself could not run (a process did not start, a phase timed out)."""


# --- processes ------------------------------------------------------------------------------


class Procs:
    """Every process the benchmark starts; `stop_all` ends each by its PID, whatever happened."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(
        self,
        name: str,
        cmd: list[str],
        core: int | None,
        env: dict[str, str] | None = None,
        cwd: Path = REPO,
    ) -> subprocess.Popen[bytes]:
        out = (self.workdir / f"{name}.out").open("wb")
        err = (self.workdir / f"{name}.err").open("wb")
        # The child inherits the affinity of the thread that forks it, so all its threads
        # (the daemon's ledger writer included) are pinned from their first instruction.
        before = os.sched_getaffinity(0)
        try:
            if core is not None:
                os.sched_setaffinity(0, {core})
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        finally:
            os.sched_setaffinity(0, before)
            out.close()
            err.close()
        self.procs[name] = proc
        return proc

    def log_path(self, name: str, stream: str = "err") -> Path:
        return self.workdir / f"{name}.{stream}"

    def stop(self, name: str, timeout: float = 15.0) -> int | None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(5)
        return proc.returncode

    def stop_all(self) -> None:
        for name in list(self.procs)[::-1]:
            self.stop(name)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


def listening_event(line: str) -> str | None:
    """The URL of a ``{"event": "listening", "url": ...}`` line (bench/upstream, passthrough)."""
    with contextlib.suppress(ValueError):
        event = json.loads(line)
        if isinstance(event, dict) and event.get("event") == "listening":
            return str(event["url"])
    return None


async def wait_listening(
    procs: Procs,
    name: str,
    limit_s: float = 20.0,
    parse: Callable[[str], str | None] = listening_event,
) -> str:
    """Wait for the first line of `name`'s stdout that `parse` turns into an address."""
    proc = procs.procs[name]
    path = procs.log_path(name, "out")
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        for line in path.read_text(errors="replace").splitlines():
            found = parse(line)
            if found is not None:
                return found
        if proc.poll() is not None:
            break
        await asyncio.sleep(0.05)
    raise BenchError(f"{name} did not start:\n{tail(procs.log_path(name))}")


async def wait_ready(procs: Procs, name: str, url: str, limit_s: float = 30.0) -> None:
    proc = procs.procs[name]
    deadline = time.monotonic() + limit_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise BenchError(f"{name} did not become ready at {url}:\n{tail(procs.log_path(name))}")


def serve_command(
    port: int,
    admin_port: int,
    upstream: str,
    ledger: Path,
    grpc_port: int | None = None,
    grpc_upstream: str | None = None,
    config: str | None = None,
) -> list[str]:
    """``python -m daemon serve`` with these listeners, upstream(s), ledger and config file.

    `grpc_port` None says nothing (a revision from before the gRPC relay knows no such option);
    0 turns the gRPC listener off."""
    cmd = [sys.executable, "-m", "daemon", "serve", "--port", str(port)]
    cmd += ["--admin-port", str(admin_port), "--upstream", upstream, "--ledger", str(ledger)]
    if grpc_port is not None:
        cmd += ["--grpc-port", str(grpc_port)]
    if grpc_upstream:
        cmd += ["--grpc-upstream", grpc_upstream]
    if config:
        cmd += ["--config", config]
    return cmd


def clean_env() -> dict[str, str]:
    """This environment without XAI_METER_CONFIG: the daemons run on the settings given."""
    return {k: v for k, v in os.environ.items() if k != "XAI_METER_CONFIG"}


# --- /proc, /metrics, the ledger -------------------------------------------------------------


def proc_status_mb(pid: int, field: str) -> float | None:
    """A memory field of ``/proc/PID/status`` (``VmRSS``, ``VmHWM``: kB there) in MB; None
    when the process is gone or the field is missing."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return None


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([0-9.eE+-]+|NaN)\s*$")


async def scrape_metrics(session: aiohttp.ClientSession, admin_url: str) -> dict[str, float]:
    """Sum of each metric family's samples on the daemon's /metrics (labels summed away)."""
    sums: dict[str, float] = {}
    async with session.get(admin_url + "/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and m.group(3) != "NaN":
            sums[m.group(1)] = sums.get(m.group(1), 0.0) + float(m.group(3))
    return sums


@contextlib.contextmanager
def ledger_readonly(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to a ledger file (never creates it, never writes), closed after."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        yield db


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100.0 * len(ordered) + 0.5)))
    return ordered[rank - 1]


# --- running a script -----------------------------------------------------------------------


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """The options every script here takes: ``--daemon-config FILE``, ``--keep-logs``."""
    parser.add_argument("--daemon-config", metavar="FILE", help="config file for the daemon")
    parser.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep the processes' logs and the ledgers (the path is printed at the end)",
    )


def run_script(
    name: str, body: Callable[[Procs], Coroutine[Any, Any, int]], keep_logs: bool
) -> int:
    """Run `body(procs)` on uvloop (asyncio without it) in a fresh work directory
    (``xai-meter-NAME-*``); end every process it started, and remove the directory's files
    unless `keep_logs`. Returns body's exit code, 2 on `BenchError` (said on stderr as
    ``NAME: ...``), 130 on Ctrl-C or SIGTERM."""
    workdir = Path(tempfile.mkdtemp(prefix=f"xai-meter-{name}-"))
    procs = Procs(workdir)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        try:
            import uvloop
        except ImportError:
            return asyncio.run(body(procs))
        return uvloop.run(body(procs))
    except BenchError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        if not keep_logs:
            for path in (p for p in workdir.iterdir() if p.is_file()):
                path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                workdir.rmdir()
