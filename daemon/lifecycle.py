"""Start and stop, the parts `daemon.app` and `daemon.cli` put in order: a failed start is one
line naming the setting and the fix; a stop keeps one clock.

`serve` runs a `daemon.app.Daemon` as the process does: until SIGTERM or SIGINT (a second one
cuts the grace period short), then stops it.

Start: `listen_reason` and `daemon.ledger.writer.open_error` word what cannot be had as a
`ConfigError` (``relay.port``, ``ledger.path``, ...), `ledger_problem` says plainly what SQLite
words as "unable to open database file" (a directory, a read-only file system, no write
access), and `open_resources` closes the ledger again when its open fails; `HeldLines` holds
serve's log lines until the daemon listens (`HOLD_SECONDS` at most), so a start that fails
prints that one line alone (exit code 2).

Stop: `Shutdown` is the one clock of a shutdown. Calls in flight on every listener (REST,
WebSockets, gRPC) get the same ``shutdown.grace_period``, or less when a second signal cuts it
short (`Shutdown.cut`); then those left are cut (`cut_connections` for aiohttp's, whose own
shutdown would wait for its handlers a second grace period: it cancels only the request body),
and what follows (the cut calls' rows, the session, the gRPC channel, the ledger, the admin
listener) has `STOP_MARGIN` seconds, counted down by `Shutdown.left`.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import sqlite3
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from aiohttp import web

from daemon import logs
from daemon.config import ConfigError
from daemon.ledger.writer import open_error
from daemon.tasks import spawn

if TYPE_CHECKING:
    from daemon.app import Daemon
    from daemon.grpc_relay import GrpcRelay
    from daemon.ledger import Ledger

#: Seconds a shutdown may take beyond ``shutdown.grace_period``: the calls cut at its end write
#: their rows, the session, the gRPC channel and the ledger close, the process exits.
STOP_MARGIN = 2.0
#: Of `STOP_MARGIN`: how long calls cut get to end. Each ends its row at once when cancelled;
#: a socket may spend up to 1 s on a best-effort close frame to its upstream.
CUT_TIME = 1.0
#: Of `STOP_MARGIN`: kept for the process to exit once the ledger is closed.
EXIT_TIME = 0.3
#: Seconds serve's log lines are held while the daemon starts (`HeldLines`, `serve`).
HOLD_SECONDS = 5.0


class Shutdown:
    """One shutdown's clock: `grace` waits for the calls in flight, then `left` counts down
    what remains of `STOP_MARGIN` for everything after (in seconds, never below 0)."""

    def __init__(self) -> None:
        self._cut = asyncio.Event()
        self._by: float | None = None  # loop time everything after the grace should end by

    @property
    def is_cut(self) -> bool:
        return self._cut.is_set()

    def cut(self) -> None:
        """End the grace period now (a second SIGTERM or SIGINT), or as soon as it begins."""
        self._cut.set()

    async def grace(self, draining: list[asyncio.Task[None]], seconds: float) -> None:
        """Wait until every task of `draining` (each ends when its listener's calls have) has
        ended, `seconds` have passed, or `cut` comes, whichever is first; `left` counts from
        then."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        cut = spawn(self._cut.wait(), name="shutdown-cut")
        try:
            pending = {*draining, cut}
            while not cut.done() and pending - {cut} and loop.time() < deadline:
                _, pending = await asyncio.wait(
                    pending, timeout=deadline - loop.time(), return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            cut.cancel()
        self._by = loop.time() + STOP_MARGIN - EXIT_TIME

    def left(self) -> float:
        """Seconds left for what follows the grace period (the ledger's close gets them);
        `STOP_MARGIN` less `EXIT_TIME` before the grace period has ended."""
        if self._by is None:
            return STOP_MARGIN - EXIT_TIME
        return max(0.0, self._by - asyncio.get_running_loop().time())


def cut_connections(runner: web.BaseRunner) -> None:
    """Close every connection of `runner`'s server now. A handler still running is cancelled
    (the relay's server cancels handlers when their connection goes; the relay then records
    the call ``shutdown``)."""
    server = runner.server
    if server is None:
        return
    for connection in server.connections:
        if connection.transport is not None:
            connection.transport.abort()


async def drain(
    shutdown: Shutdown, grace: float, relay: web.BaseRunner | None, grpc: GrpcRelay | None
) -> None:
    """Stop both relays accepting and give their calls in flight `grace` seconds together (or
    less: `Shutdown.cut`); then cut the calls left, each recorded ``shutdown``, and wait
    `CUT_TIME` at most for their ends."""
    draining: list[asyncio.Task[None]] = []
    if relay is not None:  # aiohttp's cleanup: stop listening, wait for the handlers
        draining.append(spawn(relay.cleanup(), name="relay-drain"))
    if grpc is not None:
        draining.append(spawn(grpc.stop(grace), name="grpc-drain"))
    await shutdown.grace(draining, grace)
    if relay is not None:
        cut_connections(relay)
    if grpc is not None:
        grpc.end_calls()
    if draining:
        await asyncio.wait(draining, timeout=CUT_TIME)


async def close_runner(runner: web.BaseRunner, within: float) -> None:
    """Stop `runner` listening and let its requests end, for at most `within` seconds; then
    cut them (and wait `CUT_TIME` at most for their ends)."""
    closing = spawn(runner.cleanup(), name="runner-cleanup")
    done, _ = await asyncio.wait([closing], timeout=within)
    if not done:
        cut_connections(runner)
        await asyncio.wait([closing], timeout=CUT_TIME)


async def open_resources(
    stack: AsyncExitStack, resources: AbstractAsyncContextManager[None], ledger: Ledger
) -> None:
    """Enter `resources` (which open `ledger` first) on `stack`. When that fails, the ledger
    is closed again, and an `OSError` or `sqlite3.Error` becomes a `ConfigError` naming
    ``ledger.path`` (`daemon.ledger.writer.open_error`)."""
    try:
        await stack.enter_async_context(resources)
    except BaseException as exc:
        await ledger.close()  # opened before what failed (closing twice is a no-op)
        ledgers = isinstance(exc, (OSError, *ledger.errors)) or (
            isinstance(exc, ConfigError) and str(exc).startswith("ledger.path = ")
        )
        if not ledgers:
            raise
        found = None if ledger.url else ledger_problem(ledger.path)  # a SQLite file's plain cause
        if found is not None:
            error = found
        elif isinstance(exc, ConfigError):
            raise
        else:
            error = open_error(ledger.setting, ledger.where, exc)
    else:
        return
    raise error  # here, not in the handler: no context keeps the failed open's frames, and the
    # SQLite connection they hold, alive


def ledger_problem(path: str) -> ConfigError | None:
    """What SQLite words as "unable to open database file", said plainly, for a ledger at
    `path` that failed to open: a directory, under a file (its parent is no directory), a
    read-only file system (EROFS: a read-only
    mount, a container's read-only root), a directory or file this user may not write (EACCES,
    or chattr +i, which stops root too). None when none of these is so."""
    where = Path(path)
    at = f"ledger.path = {path!r}: cannot open the ledger"
    if where.is_dir():
        return ConfigError(
            f"{at} ({os.strerror(errno.EISDIR)}). Fix: set ledger.path (--ledger FILE) to a "
            f"file, like {str(where / 'xai-meter.db')!r}."
        )
    blocker = _file_above(where)
    if blocker is not None:
        return ConfigError(
            f"{at}: its parent {str(blocker)!r} is a file, not a directory. Fix: set "
            f"ledger.path (--ledger FILE) to a file in a directory, like "
            f"{str(blocker.parent / where.name)!r}, or move {str(blocker)!r} out of the way."
        )
    existing = where if where.exists() else _existing_parent(where)
    try:
        read_only = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
    except OSError:
        return None
    if read_only:
        return ConfigError(
            f"{at} ({os.strerror(errno.EROFS)}: {str(existing)!r}). Fix: set ledger.path "
            f"(--ledger FILE) to a file on a writable file system (a volume mounted "
            f"read-write), or mount this one read-write."
        )
    if not os.access(existing, os.W_OK):
        return ConfigError(
            f"{at} ({os.strerror(errno.EACCES)}: {str(existing)!r}). Fix: give this user "
            f"write access there, or set ledger.path (--ledger FILE) to a file it can create "
            f"and write."
        )
    return None


def _file_above(path: Path) -> Path | None:
    """The nearest of `path`'s parents that exists, when it is no directory (a file where a
    directory should be: SQLite says only "File exists"); None otherwise. As `path` names it
    (relative stays relative)."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def _existing_parent(path: Path) -> Path:
    """The nearest directory above `path` that exists (the daemon makes the rest)."""
    for parent in path.absolute().parents:
        if parent.exists():
            return parent
    return Path("/")


def listen_reason(exc: OSError) -> str:
    """Why an address cannot be had, in the system's words (``Address already in use``)."""
    return os.strerror(exc.errno) if exc.errno else str(exc)


class HeldLines:
    """A stand-in for stderr that holds what is written (text and bytes, in order) until
    `release` writes it out, or `drop` forgets it; after either, writes pass straight through.

    serve logs through it while the daemon starts: a start that fails prints one line (the
    `ConfigError`), not the lines before it (a ledger migrated, prices waiting for a key)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._held: list[str | bytes] | None = []
        self.buffer = _HeldBytes(self)  # what the JSON log writes to (`logs.configure`)

    def isatty(self) -> bool:
        return self._stream.isatty()

    def write(self, text: str | bytes) -> int:
        if self._held is not None:
            self._held.append(text)
        elif isinstance(text, bytes):
            self._stream.buffer.write(text)
        else:
            self._stream.write(text)
        return len(text)

    def flush(self) -> None:
        if self._held is None:
            self._stream.flush()

    def release(self) -> None:
        """Write out what is held (the start went well, or failed other than by config)."""
        logs.flush()  # lines the log's writer still buffers come here first
        held, self._held = self._held, None
        for part in held or ():
            self.write(part)
            self.flush()  # text and bytes go by different buffers: keep their order

    def drop(self) -> None:
        """Forget what is held."""
        logs.flush()
        self._held = None


class _HeldBytes:
    """`HeldLines.buffer`: the bytes side."""

    def __init__(self, lines: HeldLines) -> None:
        self._lines = lines

    def write(self, data: bytes) -> int:
        return self._lines.write(data)

    def flush(self) -> None:
        self._lines.flush()


async def serve(daemon: Daemon, started: Callable[[], None] | None = None) -> None:
    """Run `daemon` until SIGTERM or SIGINT, then stop it in order; a second signal cuts the
    grace period short (`Daemon.cut_short`). ``started`` is called once it listens (or
    `HOLD_SECONDS` into a start still under way; it may be called twice). Raises
    `ConfigError` (naming the setting and the fix) when it cannot start."""
    stop = asyncio.Event()

    def signalled() -> None:
        if stop.is_set():
            daemon.cut_short()
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, signalled)
    # A slow start (a long migration) says so after all, `HOLD_SECONDS` in.
    slow = loop.call_later(HOLD_SECONDS, started) if started is not None else None
    try:
        await daemon.start()
    except (OSError, sqlite3.Error) as exc:  # one `start` did not foresee: still one line
        raise ConfigError(
            f"cannot start ({type(exc).__name__}: {exc}). Fix: check the files and addresses "
            f"the config names (xai-meter check-config FILE shows every setting)."
        ) from None
    finally:
        if slow is not None:
            slow.cancel()
    if started is not None:
        started()
    try:
        await stop.wait()
    finally:
        await daemon.stop()
