"""`xai-meter backup`: an online, consistent copy of the ledger, safe while the daemon writes.

Why not ``cp``: the ledger runs in WAL mode, so rows the daemon committed may still live in
``ledger.db-wal`` rather than the main file; a copy of the main file alone misses them, and a
copy taken while a checkpoint writes pages back can be torn (half old, half new). SQLite's
online backup API (Python's `sqlite3.Connection.backup`) reads the ledger through SQLite as
one read transaction: one consistent snapshot holding every transaction committed before it
began, never half of one. A WAL reader never blocks the writer, so the daemon keeps writing
meanwhile (``sqlite3 ledger.db ".backup copy.db"`` does the same from the shell).

The copy is taken in one step (``pages=-1``): a step-wise backup restarts from the first page
whenever another connection writes between steps, and the daemon writes every
``ledger.flush_interval``. It is written to a temporary file beside DEST, switched to
rollback-journal mode (a backup is one self-contained file, no ``-wal`` beside it), checked
(``pragma quick_check``), fsynced and then renamed over DEST, so DEST is never half-written.

Not in the copy: calls still in flight or in the journal only (the last
``ledger.flush_interval`` seconds, `daemon.ledger.journal`), and the key-id salt
(``ledger.salt_path``), a secret kept apart from the ledger on purpose: back it up apart too.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from daemon.ledger.schema import open_database


class BackupError(Exception):
    """The copy cannot be made as asked; ``str()`` is one line saying why and what to do."""


@dataclass(frozen=True, slots=True)
class Backup:
    """A finished copy: where it is, how many call rows it holds, its size in bytes."""

    dest: Path
    calls: int
    size: int


def backup_ledger(
    source: str | os.PathLike[str], dest: str | os.PathLike[str], *, force: bool = False
) -> Backup:
    """Copy the ledger at `source` to `dest` with SQLite's backup API (see the module).

    Refuses (`BackupError`) an existing `dest` unless `force`, a `dest` that is a directory or
    the ledger itself, a missing `source`, a `source` with no ``calls`` table (not a ledger)
    and a `dest` it cannot write. `sqlite3.DatabaseError` propagates for a `source` that is
    not SQLite at all. Waits up to 5 s for a lock held by a writer outside WAL mode."""
    source, dest = Path(source), Path(dest)
    if not source.is_file():
        raise BackupError(f"no ledger at {source}. Fix: pass --ledger FILE (or set ledger.path).")
    if dest.is_dir():
        raise BackupError(
            f"{dest} is a directory. Fix: name the file to write, e.g. {dest / 'copy.db'}."
        )
    if dest.exists() and dest.resolve() == source.resolve():
        raise BackupError(f"{dest} is the ledger itself. Fix: name another file.")
    if dest.exists() and not force:
        raise BackupError(f"{dest} exists. Fix: name another file, or pass --force to replace it.")
    src = open_database(source, readonly=True)
    try:
        if not src["calls"].exists():
            raise BackupError(
                f"{source} is not an xai-meter ledger (no calls table). "
                "Fix: pass --ledger FILE naming one `xai-meter serve` wrote."
            )
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.backup-tmp")
        try:
            calls = _copy(src.conn, tmp)
            os.replace(tmp, dest)
        except sqlite3.OperationalError as exc:
            raise BackupError(
                f"cannot write {dest} ({exc}). Fix: name a file in a directory you can write."
            ) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    finally:
        src.close()
    return Backup(dest, calls, dest.stat().st_size)


def _copy(source: sqlite3.Connection, tmp: Path) -> int:
    """The backup itself, into `tmp`: one step, then rollback-journal mode, checked and
    fsynced; returns the copy's call rows."""
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    target = sqlite3.connect(tmp)
    try:
        source.backup(target, pages=-1)  # one step: one snapshot (see the module docstring)
        target.execute("pragma journal_mode = delete")
        check = target.execute("pragma quick_check").fetchone()[0]
        if check != "ok":  # pragma: no cover - a snapshot SQLite read itself
            raise BackupError(f"the copy failed SQLite's check ({check}); the ledger was kept.")
        calls: int = target.execute("select count(*) from calls").fetchone()[0]
    finally:
        target.close()
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return calls
