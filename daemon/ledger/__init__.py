"""The ledger: one row per relayed call, and the one owner of every SQL statement.

- `schema`: every table and the named, ordered migrations; `open_database`.
- `writer`: `Ledger`, the queue the hot path feeds and the one thread that writes in batches.
- `store`: every other statement (inserts, fingerprints, deferred links, key names, repricing,
  retention, an older version's key salt), run in the writer thread or on a read-only connection.
- `prices`: the price history (price sets and their prices).
- `reports`: `xai-meter report`, read-only.

- `engine`: SQLite or PostgreSQL (``ledger.url``) behind one connection shape; the few
  spellings that differ; the advisory locks of daemons sharing a PostgreSQL ledger.

SQLite by default (WAL; readers never block the writer); PostgreSQL by URL, shared by several
daemons (each row names its ``instance``).
"""

from daemon.ledger.reports import REPORT_GROUPS, report
from daemon.ledger.schema import CALL_COLUMNS, MIGRATIONS, migrate, open_database
from daemon.ledger.store import fingerprint_history
from daemon.ledger.writer import Ledger, LedgerOp

__all__ = [
    "CALL_COLUMNS",
    "MIGRATIONS",
    "REPORT_GROUPS",
    "Ledger",
    "LedgerOp",
    "fingerprint_history",
    "migrate",
    "open_database",
    "report",
]
