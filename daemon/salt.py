"""The key-id salt: a secret of its own, in a 0600 file (``ledger.salt_path``), never in the ledger.

Why a file of its own: with the salt in the ledger, anyone holding the DB file could confirm a
guessed key (HMAC it, look for the id); kept apart, the ledger alone tells nothing, and a
ledger replaced or deleted keeps every key id. Where by default: ``xai-meter.salt`` in the
ledger's directory, the state directory the daemon already writes to (the config file may be
read-only, or there may be none); back the two up together.

- `salt_file(settings)`: the path in force.
- `check_salt_file(path)`: at start, before anything opens: an existing file must be the
  daemon's (no group or other permission bits, one line of at least 32 hex digits), else
  `ConfigError` naming ``ledger.salt_path`` and the fix.
- `settle_salt(path, db)`: in the ledger's writer thread: the salt in force. It makes the file
  once (written whole under a temporary name, then linked into place: a crash leaves no half
  file, and of two daemons racing, one salt wins), and moves an older version's
  ``meta.key_salt`` into it (key ids stay the same across the upgrade), deleting that row.
- `check_fleet_salt(path, salt, db)`: daemons sharing a PostgreSQL ledger must give a key the
  same key id, so they share one salt file (``ledger.salt_path``: a mounted secret, say). The
  ledger keeps only a check value of it (`salt_check`, an HMAC under the salt: it confirms no
  guessed key), recorded by the first daemon; a daemon whose salt differs does not start.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

import structlog

from daemon.config import ConfigError, Settings
from daemon.ledger import store
from daemon.ledger.engine import Database

log = structlog.get_logger("xai_meter.salt")

SALT_BYTES = 16  # a new salt; a file may hold more (at least this many)
DEFAULT_NAME = "xai-meter.salt"


def salt_file(settings: Settings) -> Path:
    """``ledger.salt_path``, or ``xai-meter.salt`` in the directory of ``ledger.path``."""
    chosen = settings.ledger.salt_path
    return Path(chosen) if chosen else Path(settings.ledger.path).parent / DEFAULT_NAME


def _fail(path: Path, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"ledger.salt_path = {str(path)!r}: {problem}. Fix: {fix}.")


def check_salt_file(path: Path) -> bytes | None:
    """The salt in the file at `path`, or None when there is no file yet.

    Raises `ConfigError` when the file is not a regular file, grants group or other any
    permission (mode & 0o077), cannot be read, or is not one line of >= 32 hex digits.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _fail(path, f"cannot be checked ({exc.strerror})", "make it readable") from None
    if not stat.S_ISREG(st.st_mode):
        raise _fail(path, "is not a file", "point ledger.salt_path at a file, or remove it")
    if st.st_mode & 0o077:
        raise _fail(
            path,
            f"the key-id salt is open to others (mode {stat.S_IMODE(st.st_mode):04o})",
            f"chmod 600 {path}",
        )
    try:
        text = path.read_text(encoding="ascii")
        salt = bytes.fromhex(text.strip())
    except OSError as exc:
        raise _fail(path, f"cannot be read ({exc.strerror})", "make it readable") from None
    except ValueError:  # not ASCII, or not hex
        salt = b""
    if len(salt) < SALT_BYTES:
        raise _fail(
            path,
            f"not a key-id salt (expected one line of at least {2 * SALT_BYTES} hex digits)",
            "restore it from a backup, or delete it to make a new salt (every key id changes)",
        )
    return salt


def _create(path: Path, salt: bytes) -> bytes:
    """Make the salt file (mode 0600) holding `salt`, unless one appeared meanwhile; the
    salt the file holds afterwards."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, (salt.hex() + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # fails if the file exists: created once, whole
        except FileExistsError:
            pass  # another daemon made it first: its salt wins
        else:
            with contextlib.suppress(OSError):  # the link is durable once the directory is
                dir_fd = os.open(path.parent, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
            log.info("key_salt_created", path=str(path))
    except OSError as exc:
        raise _fail(
            path,
            f"cannot make the key-id salt file ({exc.strerror})",
            "make its directory writable, or set ledger.salt_path to a writable place",
        ) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    found = check_salt_file(path)
    assert found is not None  # just linked, or made by the daemon that won
    return found


def settle_salt(path: Path, db: Database) -> bytes:
    """The key-id salt in force (run in the ledger's writer thread, at start).

    No file yet: made from the ledger's old ``meta.key_salt`` when it has one, else new. A file
    and a different old salt: the file wins (logged once: the row is then gone). Either way the
    old row is deleted only after the file holds a salt. Raises `ConfigError` (see
    `check_salt_file`, or a file that cannot be made).
    """
    legacy = store.legacy_salt(db)
    salt = check_salt_file(path)
    if salt is None:
        salt = _create(path, legacy if legacy is not None else secrets.token_bytes(SALT_BYTES))
        if legacy is not None and salt == legacy:
            log.info("key_salt_moved_out_of_ledger", path=str(path))
    if legacy is not None and legacy != salt:
        log.warning(
            "key_salt_conflict",
            path=str(path),
            detail="the ledger held another key-id salt; the file's is kept, and key ids of "
            "calls recorded with the ledger's salt differ from new ones",
        )
    if legacy is not None:
        store.forget_legacy_salt(db)
    return salt


def salt_check(salt: bytes) -> str:
    """What the ledger keeps of a salt: HMAC-SHA256 under the salt of a fixed text, hex. It
    tells two salts apart and nothing of a key (no key goes into it)."""
    return hmac.new(salt, b"xai-meter salt check", hashlib.sha256).hexdigest()


def check_fleet_salt(path: Path, salt: bytes, db: Database) -> None:
    """Refuse a salt unlike the one of the other daemons sharing this ledger (run in the
    ledger's writer thread, at start, on a PostgreSQL ledger). The first daemon records its
    salt's check value. Raises `ConfigError` naming ``ledger.salt_path`` and the fix."""
    if store.fleet_salt_check(db, salt_check(salt)) != salt_check(salt):
        raise _fail(
            path,
            "this key-id salt differs from the one the other daemons sharing the ledger use "
            "(the same key would get another key id)",
            "give every daemon the same salt file (copy it from one that runs, or mount one "
            "secret at ledger.salt_path on each)",
        )
