"""Start and stop, as an operator sees them, the daemon run as a real process (`python -m daemon
serve`).

Start: every way a start can fail (a port taken, an address not of this machine, a ledger that
cannot be opened, is no database, or is read-only) exits 2 with exactly one line on stderr that
names the setting and the fix, and leaves nothing half-started.

Stop: SIGTERM ends the process within ``shutdown.grace_period`` + 2 s whatever is open (a REST
stream that never ends, a WebSocket, a gRPC stream), and every call has its row (the ones cut
short say ``shutdown``); a second signal cuts the grace period short. The times are bounds, not
benchmarks: each asserts the grace period was given and the bound kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import sqlite_utils
from xai_sdk import AsyncClient
from xai_sdk.chat import user

from daemon import simulator
from daemon.app import Daemon
from daemon.config import ConfigError
from daemon.grpc_relay.proxy import SHUTDOWN_DETAILS
from daemon.lifecycle import STOP_MARGIN, HeldLines
from daemon.testing import TEST_KEY, make_settings, missing

pytestmark = pytest.mark.slow

AUTH = {"Authorization": f"Bearer {TEST_KEY}"}
STALL = {**AUTH, "X-Sim-Stall": "body"}
STREAM = {
    "model": "grok-4.3",
    "messages": [{"role": "user", "content": "a long answer"}],
    "stream": True,
}
SHUTDOWN_REASON = "xai-meter is shutting down"  # a socket's close reason (1001) at shutdown
CREATE = json.dumps({"type": "response.create", "model": "grok-4.3", "input": "a long answer"})
# Long enough that waiting for it twice (grace + grace) breaks the bound (grace + 2 s)
GRACE = 2.5
# The daemon's own environment: grpc core's chatter off as the CLI sets it (no test override).
ENV = {k: v for k, v in os.environ.items() if k != "GRPC_VERBOSITY"}


def free_port() -> int:
    """A port free a moment ago (a subprocess's gRPC port cannot be 0: 0 turns it off)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(tmp_path: Path, **sections: dict[str, Any]) -> Path:
    """A config file: loopback ports the OS picks, a ledger in `tmp_path`, no price refresh,
    JSON logs, the upstream a closed port; `sections` add or replace keys."""
    table: dict[str, dict[str, Any]] = {
        "relay": {"port": 0},
        "admin": {"port": 0},
        "grpc": {"port": 0},
        "upstream": {"base_url": "http://127.0.0.1:9"},
        "ledger": {"path": str(tmp_path / "ledger.db")},
        "pricing": {"refresh": False},
        "shutdown": {"grace_period": GRACE},
        "log": {"format": "json"},
    }
    for name, keys in sections.items():
        table.setdefault(name, {}).update(keys)
    lines = []
    for name, keys in table.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in keys.items()]
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def start_fails(config: Path, *wrap: str) -> str:
    """Run `serve` expecting it to fail at start: its one stderr line (exit code 2, nothing on
    stdout). A daemon that starts instead fails the test at once. `wrap` goes before the
    command (``unshare ...``)."""
    proc = await asyncio.create_subprocess_exec(
        *(*wrap, sys.executable, "-m", "daemon", "serve", "--config", str(config)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=ENV,
    )
    assert proc.stdout is not None and proc.stderr is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(30):
            while line := (await proc.stderr.readline()).decode():
                lines.append(line)
                if '"listening"' in line:
                    pytest.fail(f"the daemon started: {line}")
            out = await proc.stdout.read()
            code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert (code, out) == (2, b""), "".join(lines)
    assert len(lines) == 1, "".join(lines)
    return lines[0].rstrip("\n")


# --- start-up failures ----------------------------------------------------------------------


@contextlib.contextmanager
def busy_port() -> Iterator[int]:
    """A loopback port something else listens on."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        yield int(busy.getsockname()[1])


LISTEN_FIX = {
    "relay": "--port N, or 0 for any free port",
    "admin": "--admin-port N, or 0 for any free port",
    "grpc": "--grpc-port N, or 0 for no gRPC listener",
}


@pytest.mark.parametrize("section", ["relay", "admin", "grpc"])
async def test_a_port_in_use_is_one_line_naming_the_setting(tmp_path: Path, section: str) -> None:
    with busy_port() as port:
        line = await start_fails(write_config(tmp_path, **{section: {"port": port}}))
    assert line == (
        f"xai-meter: config error: {section}.host = '127.0.0.1', {section}.port = {port}: "
        f"cannot listen there (Address already in use). Fix: stop what uses that port, or "
        f"choose another ({LISTEN_FIX[section]})."
    )


@pytest.mark.parametrize("section", ["relay", "admin", "grpc"])
async def test_an_address_not_of_this_machine_is_one_line(tmp_path: Path, section: str) -> None:
    # 192.0.2.1 (TEST-NET-1, RFC 5737) is assigned to no machine
    config = write_config(tmp_path, **{section: {"host": "192.0.2.1", "port": free_port()}})
    line = await start_fails(config)
    assert re.fullmatch(
        rf"xai-meter: config error: {section}\.host = '192\.0\.2\.1', {section}\.port = \d+: "
        rf"cannot listen there \(Cannot assign requested address\)\. Fix: stop what uses that "
        rf"port, or choose another \({re.escape(LISTEN_FIX[section])}\)\.",
        line,
    ), line


def ledger_line(path: Path, reason: str, fix: str) -> str:
    return f"xai-meter: config error: ledger.path = '{path}': {reason}. Fix: {fix}."


WRITABLE_FIX = "set ledger.path (--ledger FILE) to a file this user can create and write"


async def test_a_ledger_under_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    ledger = tmp_path / "file" / "ledger.db"
    line = await start_fails(write_config(tmp_path, ledger={"path": str(ledger)}))
    assert line == ledger_line(
        ledger,
        f"cannot open the ledger: its parent '{ledger.parent}' is a file, not a directory",
        f"set ledger.path (--ledger FILE) to a file in a directory, like "
        f"'{tmp_path / 'ledger.db'}', or move '{ledger.parent}' out of the way",
    )


async def test_a_ledger_that_is_no_database_is_one_line(tmp_path: Path) -> None:
    ledger = tmp_path / "notes.txt"
    ledger.write_text("these are my notes, not a ledger\n" * 100)
    line = await start_fails(write_config(tmp_path, ledger={"path": str(ledger)}))
    assert line == ledger_line(
        ledger,
        "cannot open the ledger (file is not a database)",
        "set ledger.path (--ledger FILE) to an xai-meter ledger or a new file",
    )
    assert ledger.read_text() == "these are my notes, not a ledger\n" * 100  # untouched


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """`path` (a file or a directory) made read-only even for root: mode 0o555 for others,
    the immutable attribute (chattr +i) for root; skips where neither can be had."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(path)]).returncode != 0:
        pytest.skip("running as root, and this file system has no immutable attribute")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


async def test_a_ledger_in_a_read_only_directory_is_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    ledger = folder / "ledger.db"
    with read_only(folder):
        line = await start_fails(write_config(tmp_path, ledger={"path": str(ledger)}))
    assert line == ledger_line(
        ledger, f"cannot open the ledger (Permission denied: '{folder}')", ACCESS_FIX
    )


ACCESS_FIX = (
    "give this user write access there, or set ledger.path (--ledger FILE) to a file it can "
    "create and write"
)


async def test_a_read_only_ledger_is_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    ledger = tmp_path / "ledger.db"
    served = await serve(config)  # a real ledger: made, salted and closed by the daemon
    await served.stop(signal.SIGTERM)
    with read_only(ledger):
        line = await start_fails(config)
    assert line == ledger_line(
        ledger, f"cannot open the ledger (Permission denied: '{ledger}')", ACCESS_FIX
    )


async def test_a_ledger_that_is_a_directory_is_one_line(tmp_path: Path) -> None:
    line = await start_fails(write_config(tmp_path, ledger={"path": str(tmp_path)}))
    assert line == ledger_line(
        tmp_path,
        "cannot open the ledger (Is a directory)",
        f"set ledger.path (--ledger FILE) to a file, like '{tmp_path / 'xai-meter.db'}'",
    )


async def test_a_ledger_directory_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    ledger = Path("/proc/xai-meter-none/ledger.db")  # no directory can be made in /proc
    line = await start_fails(write_config(tmp_path, ledger={"path": str(ledger)}))
    assert line == ledger_line(
        ledger,
        "cannot open the ledger (No such file or directory: '/proc/xai-meter-none')",
        WRITABLE_FIX,
    )


def read_only_mount(folder: Path, existing: bool) -> tuple[str, ...]:
    """A command prefix that runs what follows in a mount namespace of its own where `folder`
    is a read-only file system (EROFS, root or not): an empty tmpfs, or (`existing`) `folder`
    itself bound read-only. Where namespaces cannot be had (unshare, or user namespaces off):
    `missing` (a skip, a failure in CI)."""
    mount = (
        f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder}"
        if existing
        else f"mount -t tmpfs -o ro tmpfs {folder}"
    )
    wrap = (
        "unshare",
        "--user",
        "--map-root-user",
        "--mount",
        "sh",
        "-c",
        f'{mount} && exec "$@"',
        "sh",
    )
    probe = subprocess.run([*wrap, "touch", str(folder / "probe")], capture_output=True, text=True)
    if "Read-only file system" not in probe.stderr:
        missing(f"no read-only mount to be had here ({probe.stderr.strip()}): NOT tested")
    return wrap


READ_ONLY_FIX = (
    "set ledger.path (--ledger FILE) to a file on a writable file system (a volume mounted "
    "read-write), or mount this one read-write"
)


async def test_a_ledger_on_a_read_only_file_system_is_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    ledger = folder / "ledger.db"
    config = write_config(tmp_path, ledger={"path": str(ledger)})
    line = await start_fails(config, *read_only_mount(folder, existing=False))
    assert line == ledger_line(
        ledger, f"cannot open the ledger (Read-only file system: '{folder}')", READ_ONLY_FIX
    )


async def test_a_ledger_mounted_read_only_is_one_line(tmp_path: Path) -> None:
    """A ledger the daemon wrote, its file system since mounted read-only (a container's
    read-only volume): SQLite would open it for reading, and say "unable to open"."""
    folder = tmp_path / "ro"
    folder.mkdir()
    ledger = folder / "ledger.db"
    config = write_config(tmp_path, ledger={"path": str(ledger)})
    served = await serve(config)
    await served.stop(signal.SIGTERM)
    line = await start_fails(config, *read_only_mount(folder, existing=True))
    assert line == ledger_line(
        ledger, f"cannot open the ledger (Read-only file system: '{ledger}')", READ_ONLY_FIX
    )


def open_files() -> set[str]:
    """What this process holds open (Linux: /proc/self/fd)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            found.add(os.readlink(f"/proc/self/fd/{fd}"))
    return found


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc/self/fd")
@pytest.mark.parametrize("fails", ["relay", "admin", "grpc", "ledger"])
async def test_a_failed_start_leaves_nothing_open(tmp_path: Path, fails: str) -> None:
    """In-process, each kind of failure: the ports it opened are closed again, the ledger
    file is closed and its writer thread gone."""
    ledger = tmp_path / "ledger.db"
    if fails == "ledger":
        ledger.write_text("not a database\n" * 100)
    with busy_port() as port:
        extra = {f"{fails}__port": port} if fails != "ledger" else {}
        settings = make_settings(tmp_path, "http://127.0.0.1:9", **extra)
        daemon = Daemon(settings, grpc_any_port=fails != "grpc")
        with pytest.raises(ConfigError, match=f"^{fails}\\.(host|path) = "):
            await daemon.start()
    for url in (daemon.relay_url, daemon.admin_url):
        if url:  # listened before the failure: closed again
            host, _, opened = url.removeprefix("http://").rpartition(":")
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection(host, int(opened))
    for _ in range(10):  # a connection that failed half-way is closed when collected
        gc.collect()
        if not {path for path in open_files() if path.startswith(str(ledger))}:
            break
        await asyncio.sleep(0)  # the loop drops its last reference to the failed open
    else:
        pytest.fail(f"{ledger} is still open")
    assert not [t for t in threading.enumerate() if t.name.startswith("xai-meter-ledger")]
    assert not daemon.ready


def test_held_lines_keep_their_order_until_released_or_dropped() -> None:
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)
    held = HeldLines(stream)
    held.write("text 1\n")
    held.buffer.write(b"bytes 2\n")
    held.write("text 3\n")
    assert raw.getvalue() == b""
    held.release()
    assert raw.getvalue() == b"text 1\nbytes 2\ntext 3\n"
    held.buffer.write(b"then straight through\n")
    assert raw.getvalue().endswith(b"text 3\nthen straight through\n")
    dropped = HeldLines(stream)
    dropped.write("never shown\n")
    dropped.drop()
    dropped.release()  # after a drop: nothing comes back
    dropped.write("after\n")
    assert raw.getvalue().endswith(b"straight through\nafter\n")


# --- stop -----------------------------------------------------------------------------------


class Served:
    """A daemon process, listening: its relay's base URL, its gRPC address, its log lines."""

    def __init__(self, proc: asyncio.subprocess.Process, listening: dict[str, Any]) -> None:
        self.proc = proc
        self.relay: str = listening["relay"]
        self.grpc: str | None = listening["grpc"]
        self.lines: list[dict[str, Any]] = [listening]

    async def next_event(self) -> dict[str, Any]:
        assert self.proc.stderr is not None
        line = await self.proc.stderr.readline()
        assert line, "the daemon exited"
        event: dict[str, Any] = json.loads(line)  # every line is one JSON object
        self.lines.append(event)
        return event

    async def stop(self, sig: signal.Signals) -> float:
        """Send `sig`; seconds until the process exited 0. Reads every log line left."""
        assert self.proc.stderr is not None
        loop = asyncio.get_running_loop()
        sent = loop.time()
        self.proc.send_signal(sig)
        assert await self.proc.wait() == 0
        elapsed = loop.time() - sent
        rest = (await self.proc.stderr.read()).decode()
        for line in rest.splitlines():
            try:
                self.lines.append(json.loads(line))
            except ValueError:
                raise AssertionError(f"not a JSON log line: {line!r} in\n{rest}") from None
        return elapsed


async def serve(config: Path) -> Served:
    """`python -m daemon serve --config CONFIG`, once it listens."""
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "daemon", "serve", "--config", str(config)),
        stderr=asyncio.subprocess.PIPE,
        env={**ENV, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(30):
            while True:
                line = await proc.stderr.readline()
                assert line, "the daemon exited before listening"
                event = json.loads(line)
                if event.get("event") == "listening":
                    return Served(proc, event)
    except BaseException:
        proc.kill()
        await proc.wait()
        raise


@contextlib.asynccontextmanager
async def served(config: Path) -> AsyncIterator[Served]:
    daemon = await serve(config)
    try:
        yield daemon
    finally:
        if daemon.proc.returncode is None:
            daemon.proc.kill()
            await daemon.proc.wait()


async def closed_with(
    ws: aiohttp.ClientWebSocketResponse,
) -> tuple[aiohttp.WSMsgType, int, str | None]:
    """Read past any messages to the close frame; its (type, code, reason)."""
    while (msg := await ws.receive()).type is aiohttp.WSMsgType.TEXT:
        pass
    return msg.type, msg.data, msg.extra


def rows(ledger: Path) -> list[dict[str, Any]]:
    db = sqlite_utils.Database(ledger)
    try:
        return list(db.query("select * from calls order by started_at"))
    finally:
        db.close()


async def open_rest_stream(http: aiohttp.ClientSession, relay: str) -> aiohttp.ClientResponse:
    """A chat stream whose upstream stalls after its first frame, until the test ends."""
    resp = await http.post(f"{relay}/chat/completions", json=STREAM, headers=STALL)
    assert (await resp.content.readany()).startswith(b"data: ")
    return resp


async def open_websocket(
    http: aiohttp.ClientSession, relay: str
) -> aiohttp.ClientWebSocketResponse:
    """A Responses socket whose turn stalls after ``response.created``."""
    ws = await http.ws_connect(f"{relay}/responses", headers=STALL)
    await ws.send_str(CREATE)
    msg = await ws.receive()
    assert json.loads(msg.data)["type"] == "response.created", msg
    return ws


async def open_grpc_stream(address: str) -> Any:
    """An xai-sdk chat stream whose upstream stalls after its first chunk."""
    sdk = AsyncClient(
        api_key=TEST_KEY,
        api_host=address,
        use_insecure_channel=True,
        metadata=(("x-sim-stall", "body"),),
        channel_options=[("grpc.enable_retries", 0)],
    )
    chat = sdk.chat.create(model="grok-4.3")
    chat.append(user("a long answer"))
    stream = chat.stream().__aiter__()
    await stream.__anext__()  # the first chunk came; the rest stalls
    return stream


CUT = {  # the row of each kind of call cut at the end of the grace period
    "rest": ("http", "/v1/chat/completions", 200, "shutdown", 0, "incomplete"),
    "websocket": ("websocket", "/v1/responses", 200, "shutdown", 0, "incomplete"),
    "grpc": ("grpc", "/xai_api.Chat/GetCompletionChunk", 499, "shutdown", 0, "incomplete"),
}


@pytest.mark.parametrize(
    "kinds", [("rest",), ("websocket",), ("grpc",), ("rest", "websocket", "grpc")], ids="+".join
)
async def test_sigterm_ends_within_the_grace_period_and_two_seconds(
    sim: simulator.Simulator,
    grpc_sim: simulator.GrpcSimulator,
    tmp_path: Path,
    kinds: tuple[str, ...],
) -> None:
    ledger = tmp_path / "ledger.db"
    config = write_config(
        tmp_path,
        upstream={"base_url": sim.url},
        grpc={"port": free_port(), "upstream": grpc_sim.url},
    )
    async with served(config) as daemon, aiohttp.ClientSession() as http:
        done = await http.post(f"{daemon.relay}/chat/completions", json=STREAM, headers=AUTH)
        await done.read()  # one call that ended before the signal
        opened: list[Any] = []
        if "rest" in kinds:
            opened.append(await open_rest_stream(http, daemon.relay))
        if "websocket" in kinds:
            opened.append(await open_websocket(http, daemon.relay))
        if "grpc" in kinds:
            assert daemon.grpc is not None
            opened.append(await open_grpc_stream(daemon.grpc))
        # No client reads (a socket's close frame waits for its answer): the grace runs out
        elapsed = await daemon.stop(signal.SIGTERM)
        # what each client saw: its stream cut; its socket closed going away; CANCELLED
        if "rest" in kinds:
            with pytest.raises(aiohttp.ClientPayloadError):
                await opened.pop(0).read()
        if "websocket" in kinds:
            ws = opened.pop(0)
            assert await closed_with(ws) == (aiohttp.WSMsgType.CLOSE, 1001, SHUTDOWN_REASON)
        if "grpc" in kinds:
            with pytest.raises(grpc.aio.AioRpcError) as cancelled:
                await opened.pop(0).__anext__()
            assert cancelled.value.code() is grpc.StatusCode.CANCELLED
            assert cancelled.value.details() == SHUTDOWN_DETAILS
    sim.state.release.set()
    assert GRACE <= elapsed < GRACE + STOP_MARGIN, elapsed
    found = rows(ledger)
    assert [(r["transport"], r["path"], r["status"], r["error"]) for r in found[:1]] == [
        ("http", "/v1/chat/completions", 200, None)
    ]
    cut = sorted(
        (r["transport"], r["path"], r["status"], r["error"], r["metered"], r["unmetered_reason"])
        for r in found[1:]
    )
    assert cut == sorted(CUT[kind] for kind in kinds)
    events = [line["event"] for line in daemon.lines]
    assert events.count("draining") == 1 and events[-1] == "stopped"


async def test_a_second_signal_cuts_the_grace_period_short(
    sim: simulator.Simulator, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.db"
    config = write_config(tmp_path, upstream={"base_url": sim.url}, shutdown={"grace_period": 600})
    async with served(config) as daemon, aiohttp.ClientSession() as http:
        await open_rest_stream(http, daemon.relay)
        daemon.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            while (await daemon.next_event())["event"] != "draining":
                pass
        elapsed = await daemon.stop(signal.SIGINT)  # the second signal, 600 s early
    sim.state.release.set()
    assert elapsed < STOP_MARGIN, elapsed
    [cut] = [line for line in daemon.lines if line["event"] == "cut_short"]
    assert cut["in_flight"] == 1
    assert [(r["status"], r["error"], r["unmetered_reason"]) for r in rows(ledger)] == [
        (200, "shutdown", "incomplete")
    ]
