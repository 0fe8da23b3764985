"""The journal: each call's start and end, appended beside the ledger before SQLite sees them.

SQLite can be slow, locked, full or gone; the journal is what makes a call survive that, and
the death of the process. The ledger is built from it (`daemon.ledger.writer`), and it is
trimmed once what it holds is committed.

Layout: a directory (``ledger.journal_path``; default ``<ledger.path>.journal``) of segment
files ``0000000001.jsonl``, ``0000000002.jsonl``, …, written one after the other. Each line is
one JSON value:

- ``{"journal": 1, "columns": [...]}``: a segment's first line, the ``calls`` columns (by name)
  of the end lines below it, so a segment outlives a schema change;
- ``["S", id, started_at, provider, endpoint, method, path, transport, key_id, app,
  requested_model, stream]``: a call was sent to its upstream (`START_FIELDS`);
- ``["E", value, ...]``: a call ended: its ledger row, in the header's column order;
- ``["V", id]``: a call begun will have no row of its own (a WebSocket's upgrade, once the
  session's turns are its rows): its start is void.

Writes: the ends of a loop iteration go out in one ``os.write`` (appends on an ``O_APPEND``
descriptor: the page cache, no lock, no fsync on the event loop). Starts are written by a timer,
once per `START_DELAY` while calls are sent, for the calls still in flight then: a call that
ends sooner (most do) never has a start line, its end says it all. So a process death (SIGKILL,
OOM) loses nothing the kernel was handed but the calls sent in its last `START_DELAY` (at most
5 ms: no row; their clients saw no answer); a power loss can lose the last ``fsync_interval``
seconds (``fsync`` runs on a timer in a worker thread).

Trimming: a segment is closed when it passes ``segment_bytes`` (the starts of calls still in
flight are written again at the top of the next one), and deleted once every end it holds is
committed to SQLite (`committed`). A start without an end in any segment, left by an earlier
run, is a call the daemon died in: the writer books it as ``crash``.

A write that fails (disk full) keeps its bytes in memory, bounded by ``max_pending_bytes``,
and is tried again at the next flush; past the bound the oldest rows are dropped and counted
(`lost_rows`): memory stays bounded whatever the disk does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import structlog

from daemon.keys import MASK, key_bytes
from daemon.record import ROW_COLUMNS, CallRecord

log = structlog.get_logger("xai_meter.journal")

VERSION = 1
RETRY_SECONDS = 0.5  # a write the disk refused is tried again this often
#: Seconds a start may wait for its line (a call that ends sooner never needs one).
START_DELAY = 0.005
SUFFIX = ".jsonl"
#: The fields of a start line after its "S", in order: enough for a ``crash`` row.
START_FIELDS = (
    "id",
    "started_at",
    "provider",
    "endpoint",
    "method",
    "path",
    "transport",
    "key_id",
    "app",
    "requested_model",
    "stream",
)
_HEADER = orjson.dumps({"journal": VERSION, "columns": ROW_COLUMNS}) + b"\n"


def default_path(ledger_path: str) -> str:
    """Where the journal of a ledger lives unless ``ledger.journal_path`` says: beside it."""
    return ledger_path + ".journal"


@dataclass
class Replay:
    """What segments hold: the ends (rows by call id, in `ROW_COLUMNS` order), the starts
    without an end (`START_FIELDS` by call id), and the lines that could not be read."""

    ends: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    starts: dict[str, dict[str, Any]] = field(default_factory=dict)
    bad_lines: int = 0


def read_segments(paths: Iterable[Path], crash_before: int | None = None) -> Replay:
    """Read segments, oldest first. A start counts (`Replay.starts`) only when its segment's
    number is below ``crash_before`` (an earlier run's: that call never ended) and no segment
    holds its end. A torn last line (the process died mid-write) is counted, not fatal."""
    replay = Replay()
    void: set[str] = set()
    for path in paths:
        seq = segment_number(path)
        columns: Sequence[str] = ROW_COLUMNS
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        for line in data.splitlines():
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError:
                replay.bad_lines += 1
                continue
            if isinstance(value, dict):
                columns = value.get("columns") or ROW_COLUMNS
            elif isinstance(value, list) and value and value[0] == "E":
                row = _aligned(columns, value[1:])
                if row is None:
                    replay.bad_lines += 1
                else:
                    replay.ends[row[0]] = row
            elif (
                isinstance(value, list)
                and len(value) == len(START_FIELDS) + 1
                and value[0] == "S"
                and crash_before is not None
                and seq < crash_before
            ):
                replay.starts[value[1]] = dict(zip(START_FIELDS, value[1:], strict=True))
            elif isinstance(value, list) and len(value) == 2 and value[0] == "V":
                void.add(value[1])
            elif not (isinstance(value, list) and value[:1] == ["S"]):
                replay.bad_lines += 1
    for call_id in (replay.ends.keys() | void) & replay.starts.keys():
        del replay.starts[call_id]
    return replay


def _aligned(columns: Sequence[str], values: list[Any]) -> tuple[Any, ...] | None:
    """An end line's values in today's `ROW_COLUMNS` order (a column it lacks is NULL)."""
    if len(values) != len(columns) or not values or not isinstance(values[0], str):
        return None
    if columns is ROW_COLUMNS or tuple(columns) == ROW_COLUMNS:
        return tuple(values)
    by_name = dict(zip(columns, values, strict=True))
    return tuple(by_name.get(name) for name in ROW_COLUMNS)


def segment_number(path: Path) -> int:
    """The number in a segment's name (``0000000042.jsonl`` is 42)."""
    return int(path.name.removesuffix(SUFFIX))


def start_line(record: CallRecord, keys: Iterable[str] = ()) -> bytes:
    """The start line of a call that was sent (see the module docstring), newline included,
    with ``keys`` masked (`daemon.keys.MASK`) wherever the client's text holds one."""
    fields = (
        "S",
        record.id,
        record.started_at,
        record.provider,
        record.endpoint,
        record.method,
        record.path,
        record.transport.value,
        record.key_id,
        record.app,
        record.requested_model,
        record.stream,
    )
    try:
        line = orjson.dumps(fields, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:  # a header's odd bytes (surrogates): kept readable, not exact
        line = orjson.dumps([_text(v) for v in fields], option=orjson.OPT_APPEND_NEWLINE)
    for key in keys:
        raw = key_bytes(key)
        if raw in line:
            line = line.replace(raw, MASK.encode())
    return line


def _text(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return value


class Journal:
    """The append-only journal of one ledger (see the module docstring).

    Runs on the event loop; `fsync` is the only call meant for a worker thread. Raises
    `OSError` from `open` when the directory cannot be made or written (a start-up failure).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        segment_bytes: int = 8 << 20,
        max_pending_bytes: int = 64 << 20,
        on_error: Callable[[OSError], None] | None = None,
        on_recovered: Callable[[], None] | None = None,
        keys_for: Callable[[str | None], Iterable[str]] = lambda key_id: (),
    ) -> None:
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self.max_pending_bytes = max_pending_bytes
        self._on_error = on_error or (lambda exc: None)
        self._on_recovered = on_recovered or (lambda: None)
        self._fd = -1
        self.seq = 0  # the segment being written
        self.first_seq = 0  # this run's first segment: those below it are an earlier run's
        self._size = 0  # bytes of the segment being written (what went out)
        self._pending = bytearray()  # lines not written yet
        self._rotate_at = segment_bytes
        self._keys_for = keys_for  # the keys a start line is masked for, by the call's key id
        self._fresh: dict[str, CallRecord] = {}  # calls in flight, their start not written yet
        self._open_starts: dict[str, bytes] = {}  # calls in flight: their start lines written
        self._outstanding: dict[int, int] = {}  # segment -> ends not committed yet
        self._scheduled = False
        self._retry: asyncio.TimerHandle | None = None
        self.failing = False  # the last write failed (disk full, I/O error)
        self.lost_rows = 0  # rows dropped past max_pending_bytes while the disk refused

    # --- lifecycle ------------------------------------------------------------------------

    def earlier_segments(self) -> list[Path]:
        """Segments an earlier run left (call before `open`), oldest first."""
        if not self.directory.is_dir():
            return []
        found = [p for p in self.directory.iterdir() if _is_segment(p)]
        return sorted(found, key=segment_number)

    def open(self) -> None:
        """Make the directory and begin a new segment after any left by an earlier run."""
        self.directory.mkdir(parents=True, exist_ok=True)
        earlier = self.earlier_segments()
        self.seq = segment_number(earlier[-1]) if earlier else 0
        self.first_seq = self.seq + 1
        for path in earlier:  # kept until a replay has written them (`forget`)
            self._outstanding[segment_number(path)] = 1
        self._begin_segment()

    def close(self) -> None:
        """Write what is pending, fsync, close; the last segment goes too when nothing in it
        waits for SQLite and no call is in flight."""
        self.flush()
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._fd < 0:
            return
        try:
            os.fsync(self._fd)
        except OSError as exc:
            self._on_error(exc)
        os.close(self._fd)
        self._fd = -1
        if not self._pending and not self._open_starts and not self._outstanding.get(self.seq):
            self._outstanding.pop(self.seq, None)
            _unlink(self._path(self.seq))

    # --- appending (the event loop) ------------------------------------------------------

    def begin(self, record: CallRecord) -> None:
        """A call was sent to its upstream: its start line is written within `START_DELAY`
        unless the call ends first (then its end line alone says everything). The line is
        made when written, with the call's keys masked (``keys_for``) wherever the client's
        text holds one."""
        self._fresh[record.id] = record
        if not self._scheduled:
            # One timer per START_DELAY writes the starts of the calls still in flight: most
            # calls end sooner and cost a dict entry, not a line, a write and a wake-up each.
            self._scheduled = True
            try:
                asyncio.get_running_loop().call_later(START_DELAY, self._flush_starts)
            except RuntimeError:  # no loop (tools): write now
                self.flush()

    def end(self, ids: Iterable[str], lines: list[bytes]) -> int:
        """Calls ended (``lines``: their end lines, newline included): written now, in one
        write. Returns the segment they went to, which `committed` is told once SQLite has
        them."""
        fresh, started = self._fresh, self._open_starts
        for call_id in ids:
            if fresh.pop(call_id, None) is None:
                started.pop(call_id, None)
        self._pending += b"".join(lines)
        seq = self.seq
        self._outstanding[seq] = self._outstanding.get(seq, 0) + len(lines)
        self._write()
        return seq

    def unstarted(self, call_id: str) -> bool:
        """Whether a call in flight has no start line on disk yet (it began less than
        `START_DELAY` ago): nothing of it would survive a SIGKILL before its end line."""
        return call_id in self._fresh

    def void(self, call_id: str) -> None:
        """A call begun will have no row of its own (a WebSocket's upgrade whose turns are
        the rows): its start, if written, is made void by a ``V`` line, so no ``crash`` row
        is ever booked for it."""
        if self._fresh.pop(call_id, None) is not None:
            return  # its start was never written
        if self._open_starts.pop(call_id, None) is not None:
            self._pending += orjson.dumps(("V", call_id), option=orjson.OPT_APPEND_NEWLINE)
            self._write()

    def _flush_starts(self) -> None:
        self._scheduled = False
        self.flush()

    def flush(self) -> None:
        """Write the starts not written yet and everything pending, in one write."""
        fresh = self._fresh
        if fresh:
            self._fresh = {}
            keys_for, started, pending = self._keys_for, self._open_starts, self._pending
            for call_id, record in fresh.items():
                line = start_line(record, keys_for(record.key_id))
                started[call_id] = line
                pending += line
        self._write()

    def _write(self) -> None:
        """Hand what is pending to the kernel in one write (a short write keeps the rest)."""
        if not self._pending or self._fd < 0:
            return
        try:
            written = os.write(self._fd, self._pending)
        except OSError as exc:
            self.failing = True
            self._on_error(exc)
            self._bound_pending()
            self._retry_later()
            return
        if self.failing:
            self.failing = False
            self._on_recovered()
        self._size += written
        if written == len(self._pending):
            self._pending.clear()
        else:
            del self._pending[:written]
        if self._size >= self._rotate_at and not self._pending:
            self.rotate()

    def _retry_later(self) -> None:
        """Try the write again in `RETRY_SECONDS`, new calls or not (a disk that frees up)."""
        if self._retry is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._retry = loop.call_later(RETRY_SECONDS, self._retried)

    def _retried(self) -> None:
        self._retry = None
        self.flush()

    def _bound_pending(self) -> None:
        """The disk refuses: keep at most `max_pending_bytes`, dropping the oldest whole lines
        (the end rows among them are counted in `lost_rows`)."""
        excess = len(self._pending) - self.max_pending_bytes
        if excess <= 0:
            return
        cut = self._pending.find(b"\n", excess) + 1
        if cut <= 0:
            return
        dropped = bytes(self._pending[:cut])
        lost = dropped.count(b'\n["E"') + dropped.startswith(b'["E"')
        self.lost_rows += lost
        del self._pending[:cut]
        if lost:
            log.error(
                "journal_rows_dropped",
                rows=lost,
                rows_dropped_so_far=self.lost_rows,
                max_pending_bytes=self.max_pending_bytes,
                journal=str(self.directory),
            )

    # --- trimming ---------------------------------------------------------------------------

    def rotate(self) -> list[Path] | None:
        """Close the segment being written and begin the next (with the starts of the calls
        in flight). Returns every closed segment still on disk, oldest first; None when the
        disk refuses what is pending (nothing can be closed cleanly now). Starts not written
        yet go to the next segment."""
        self._write()
        if self._pending:
            return None
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1
        self._begin_segment()
        return [p for p in self.earlier_segments() if segment_number(p) < self.seq]

    def committed(self, seq: int, rows: int) -> None:
        """``rows`` ends of segment ``seq`` are in SQLite; a closed segment with none left
        waiting is deleted."""
        left = self._outstanding.get(seq, 0) - rows
        if left > 0 or seq == self.seq:
            self._outstanding[seq] = max(left, 0)
            return
        self._outstanding.pop(seq, None)
        if not any(s <= seq for s in self._outstanding):
            # every segment up to this one is done: their starts are carried forward
            for path in self.earlier_segments():
                if segment_number(path) <= seq:
                    _unlink(path)

    def forget(self, paths: Iterable[Path]) -> None:
        """Segments whose every end is in SQLite (a replay wrote them): delete them."""
        for path in paths:
            self._outstanding.pop(segment_number(path), None)
            _unlink(path)

    # --- durability (a worker thread) --------------------------------------------------------

    def fsync(self) -> None:
        """Make what was written survive a power loss (a worker thread: it may take long)."""
        fd = self._fd
        if fd >= 0:
            # closed by a rotation meanwhile, or the disk: the next one tries
            with contextlib.suppress(OSError):
                os.fsync(fd)

    # --- internals -----------------------------------------------------------------------

    def _path(self, seq: int) -> Path:
        return self.directory / f"{seq:010d}{SUFFIX}"

    def _begin_segment(self) -> None:
        self.seq += 1
        self._fd = os.open(
            self._path(self.seq), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600
        )
        self._size = 0
        first = _HEADER + b"".join(self._open_starts.values())
        self._rotate_at = len(first) + self.segment_bytes  # however many calls are in flight
        self._pending[:0] = first
        self._write()


def _is_segment(path: Path) -> bool:
    return path.name.endswith(SUFFIX) and path.name.removesuffix(SUFFIX).isdigit()


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def lines_of(rows: Iterable[tuple[Any, ...]]) -> list[bytes]:
    """End lines for ledger rows (`ROW_COLUMNS` order), newline included. Raises `TypeError`
    for an integer past 64 bits (orjson's limit)."""
    return [orjson.dumps(("E", *row), option=orjson.OPT_APPEND_NEWLINE) for row in rows]
