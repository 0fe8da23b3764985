"""The ledger's two engines: SQLite (a file, the zero-config default) and PostgreSQL (a URL,
shared by several daemons), behind one connection shape.

Every SQL statement of the ledger is written once, in the form both engines read: ``?``
placeholders, ``on conflict ... do update`` upserts, ``count(*) filter (where ...)``. A
SQLite ledger is a `sqlite_utils.Database`; a PostgreSQL one is a `PgDatabase`, which offers
the part of that class the ledger uses (``execute``, ``query``, ``conn.executemany``, ``with
db.conn:`` as one transaction, ``atomic``, ``close``) and turns ``?`` into psycopg's ``%s``.
`Database` names either. The few bits the two engines spell differently are functions here
(`utc_day`, `least`, `greatest`, `table_exists`, `serialized`), keyed by `is_pg`.

psycopg (3, sync) is imported only when a URL is opened: a SQLite user needs no driver
(``pip install 'xai-meter[postgresql]'`` brings it). Why sync, one connection: the ledger's
writer is one thread owning one connection (it batches every row, in order with the writes
queued beside them, and the journal is told after each commit); the daemon reads the ledger
only at start and in that thread; the CLI and the status page read in a thread of their own,
on a connection of their own. An async driver with a pool would serve none of these better.

Numbers: PostgreSQL's ``sum`` of a bigint is ``numeric``; a `PgDatabase` reads a whole
``numeric`` as `int` (and any other as `float`), as SQLite gives them, so exact ticks stay ints.
"""

from __future__ import annotations

import functools
import re
import socket
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

import sqlite_utils

from daemon.config import ConfigError

if TYPE_CHECKING:
    import psycopg

#: Seconds a connect to PostgreSQL may take (a URL's own ``connect_timeout`` wins).
CONNECT_TIMEOUT_S = 10
#: ``pg_advisory_lock`` keys (any 64-bit numbers no other code of the database uses).
LOCKS: dict[str, int] = {"migrations": 0x78616D_0001, "price_sets": 0x78616D_0002}


def is_url(where: str) -> bool:
    """`where` names a PostgreSQL ledger (``postgresql://`` or ``postgres://``), not a file."""
    return where.startswith(("postgresql://", "postgres://"))


def redact(url: str) -> str:
    """The URL with any password replaced by ``***`` (for logs and messages)."""
    return re.sub(r"^(postgres(?:ql)?://[^:/@]*):[^@]*@", r"\1:***@", url)


def instance_name(setting: str) -> str:
    """``ledger.instance``, or the host name when it is empty."""
    return setting or socket.gethostname()


def _sql(text: str) -> str:
    """A ledger statement in psycopg's form: ``?`` placeholders outside string literals become
    ``%s``, and every ``%`` (a LIKE pattern's) becomes ``%%``."""
    return _translate(text)


@functools.lru_cache(maxsize=512)
def _translate(text: str) -> str:
    out = []
    quoted = False
    for ch in text:
        if ch == "'":
            quoted = not quoted
        if ch == "%":
            out.append("%%")
        elif ch == "?" and not quoted:
            out.append("%s")
        else:
            out.append(ch)
    return "".join(out)


class PgCursor:
    """The rows of one statement, as a `sqlite3.Cursor` gives them: tuples."""

    def __init__(self, cursor: psycopg.Cursor[Any]) -> None:
        self._cursor = cursor

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)

    def fetchone(self) -> Any:
        return self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    def __iter__(self) -> Iterator[Any]:
        return iter(self._cursor)


class PgTransactions:
    """``db.conn`` of a `PgDatabase`: ``with db.conn:`` is one transaction (nested: a
    savepoint), as ``with sqlite3_connection:`` is; ``execute``/``executemany`` as sqlite3's."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn
        self._open: list[AbstractContextManager[Any]] = []

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> PgCursor:
        """One statement, its values bound on the client (as SQLite binds them: a ``? is
        null`` needs no type, which the server could not infer)."""
        import psycopg

        cursor = psycopg.ClientCursor(self._conn)
        cursor.execute(_sql(sql), tuple(parameters))
        return PgCursor(cursor)

    def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> PgCursor:
        """One statement for many rows, bound on the server and sent in one pipeline
        (measured: ~4x the rows/s of client-side binding, which sends them one by one)."""
        cursor = self._conn.cursor()
        cursor.executemany(_sql(sql), [tuple(row) for row in seq])
        return PgCursor(cursor)

    def __enter__(self) -> PgTransactions:
        transaction = self._conn.transaction()
        transaction.__enter__()
        self._open.append(transaction)
        return self

    def __exit__(self, *exc: Any) -> bool:
        return bool(self._open.pop().__exit__(*exc))


class PgDatabase:
    """A PostgreSQL ledger connection shaped like the part of `sqlite_utils.Database` the
    ledger uses. Autocommit outside ``with db.conn:`` / ``db.atomic()`` (each a transaction).
    ``where``: the URL with its password hidden (`redact`), for logs and messages."""

    def __init__(self, conn: psycopg.Connection[Any], where: str) -> None:
        self._raw = conn
        self.conn = PgTransactions(conn)
        self.where = where

    @classmethod
    def connect(cls, url: str, *, readonly: bool = False) -> PgDatabase:
        """Connect to `url`. Raises `ConfigError` when psycopg is not installed, and psycopg's
        `psycopg.OperationalError` when the server cannot be reached or refuses the login."""
        try:
            import psycopg
        except ImportError:
            raise ConfigError(
                f"ledger.url = {redact(url)!r}: the PostgreSQL driver (psycopg) is not "
                "installed. Fix: pip install 'xai-meter[postgresql]', or remove ledger.url to "
                "use the SQLite ledger at ledger.path."
            ) from None
        options: dict[str, Any] = {"autocommit": True, "application_name": "xai-meter"}
        if "connect_timeout" not in url:
            options["connect_timeout"] = CONNECT_TIMEOUT_S
        conn = psycopg.connect(url, **options)
        conn.adapters.register_loader("numeric", _numeric_loader())
        if readonly:
            conn.execute("set default_transaction_read_only = on")
        return cls(conn, redact(url))

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> PgCursor:
        return self.conn.execute(sql, parameters)

    def query(self, sql: str, parameters: Sequence[Any] = ()) -> Iterator[dict[str, Any]]:
        """Rows as dicts, as `sqlite_utils.Database.query` gives them."""
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.ClientCursor(self._raw, row_factory=dict_row) as cursor:
            cursor.execute(_sql(sql), tuple(parameters))
            rows = cursor.fetchall()
        yield from rows

    def atomic(self) -> AbstractContextManager[Any]:
        """One transaction (as `sqlite_utils.Database.atomic`)."""
        return self._raw.transaction()

    @property
    def broken(self) -> bool:
        """The connection is lost (closed, or broken by the server or the network)."""
        return bool(self._raw.closed or self._raw.broken)

    def close(self) -> None:
        self._raw.close()


#: A ledger connection of either engine.
Database = sqlite_utils.Database | PgDatabase


def _numeric_loader() -> type[Any]:
    """psycopg's loader of ``numeric`` values: a whole number as `int`, else `float`."""
    from psycopg.adapt import Loader

    class NumericLoader(Loader):
        def load(self, data: Any) -> int | float:
            text = bytes(data)
            try:
                return int(text)
            except ValueError:
                return float(text)

    return NumericLoader


def is_pg(db: Database) -> bool:
    return isinstance(db, PgDatabase)


def open_ledger(where: str, *, readonly: bool = False) -> Database:
    """A connection to the ledger `where` names: a PostgreSQL URL (`is_url`) or a SQLite file
    (`daemon.ledger.schema.open_database`). The CLI's and the status page's read-only handle."""
    if is_url(where):
        return PgDatabase.connect(where, readonly=readonly)
    from daemon.ledger.schema import open_database

    return open_database(where, readonly=readonly)


@contextmanager
def open_pg_reader(url: str) -> Iterator[PgDatabase]:
    """A read-only connection to the PostgreSQL ledger at `url`, closed after the block (the
    CLI's reports). Raises `ConfigError` naming ``ledger.url`` and the fix when the server
    cannot be reached or refuses the login, or holds no ledger."""
    import psycopg

    at = f"ledger.url = {redact(url)!r}"
    try:
        db = PgDatabase.connect(url, readonly=True)
    except psycopg.Error as exc:
        raise ConfigError(
            f"{at}: cannot read the ledger ({' '.join(str(exc).split())}). Fix: check that "
            "PostgreSQL runs there and this user may log in (PGPASSWORD or ~/.pgpass)."
        ) from None
    try:
        yield db
    except psycopg.errors.UndefinedTable:
        raise ConfigError(
            f"{at}: that database holds no xai-meter ledger. Fix: pass the URL `xai-meter "
            "serve` writes to (ledger.url), or run serve with this one first."
        ) from None
    finally:
        db.close()


def create_database(url: str, name: str) -> None:
    """Create the database `name` on the server at `url` (tests and the benchmark make a new
    one each; the daemon never creates a database)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("create database {}").format(psycopg.sql.Identifier(name)))


def ledger_errors(db_or_url: Database | str | None = None) -> tuple[type[BaseException], ...]:
    """The exceptions a ledger of this engine raises (sqlite3's; psycopg's too when it is
    installed and the ledger is PostgreSQL)."""
    found: tuple[type[BaseException], ...] = (sqlite3.Error,)
    pg = isinstance(db_or_url, PgDatabase) or (isinstance(db_or_url, str) and is_url(db_or_url))
    if pg:
        import psycopg

        found += (psycopg.Error,)
    return found


# --- what the two engines spell differently -------------------------------------------------


def table_exists(db: Database, name: str) -> bool:
    """The ledger has table `name` (a ledger migrated that far)."""
    if isinstance(db, sqlite_utils.Database):
        return bool(db[name].exists())
    return db.execute("select to_regclass(?) is not null", [name]).fetchone()[0] is True


def utc_day(db: Database, epoch: str) -> str:
    """SQL of the UTC day (``YYYY-MM-DD``) of the epoch-seconds expression `epoch`."""
    if is_pg(db):
        return f"to_char(to_timestamp({epoch}) at time zone 'UTC', 'YYYY-MM-DD')"
    return f"date({epoch}, 'unixepoch')"


def whole(db: Database, number: str) -> str:
    """SQL of a non-negative number's whole part, as an integer (SQLite's cast truncates;
    PostgreSQL's rounds, so it truncates first)."""
    if is_pg(db):
        return f"cast(trunc({number}) as bigint)"
    return f"cast({number} as integer)"


def least(db: Database, a: str, b: str) -> str:
    """SQL of the smaller of two values (SQLite's two-argument ``min``)."""
    return f"least({a}, {b})" if is_pg(db) else f"min({a}, {b})"


def greatest(db: Database, a: str, b: str) -> str:
    """SQL of the larger of two values (SQLite's two-argument ``max``)."""
    return f"greatest({a}, {b})" if is_pg(db) else f"max({a}, {b})"


def serialized(db: Database, name: str) -> None:
    """Within the caller's transaction, wait for and hold the lock `name` (`LOCKS`) until it
    ends, so that of several daemons sharing a PostgreSQL ledger one at a time runs it
    (``pg_advisory_xact_lock``: a transaction's, so it also holds behind a pooler such as
    PgBouncer in transaction mode, and the server drops it with a lost connection). SQLite:
    one writer per file; nothing."""
    if is_pg(db):
        db.execute("select pg_advisory_xact_lock(?)", [LOCKS[name]])
