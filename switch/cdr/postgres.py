"""Shipping CDRs from the SQLite spool to PostgreSQL (``cdr_url``), losing none.

Every record is committed to the spool first (``writer.py``); this thread copies the rows
not yet shipped to the ``cdr`` table of the database in batches, and marks them shipped
only after PostgreSQL committed them. The insert is ``ON CONFLICT (leg_id) DO NOTHING``,
so a batch retried after a lost commit acknowledgement is not doubled. When the database
is down or refuses, the rows wait in the spool (on disk: a restart of the switch keeps
them too) and the thread retries with a backoff of up to ``MAX_BACKOFF`` seconds; one
log line when it fails, one when it is back.

The driver is psycopg 3 (``pip install 'psycopg[binary]'``, the ``postgres`` extra):
the maintained PostgreSQL driver for Python, used here from a thread of its own, so its
blocking calls never touch the event loop.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from .record import FIELDS, NAMES
from .store import CdrStore

logger = logging.getLogger(__name__)

BATCH = 500
INTERVAL = 0.5  # seconds between looks at the spool when it is empty
MAX_BACKOFF = 10.0
CONNECT_TIMEOUT = 5  # seconds

_PG_TYPES = {"TEXT PRIMARY KEY": "text PRIMARY KEY", "TEXT": "text", "REAL": "double precision",
             "INTEGER": "bigint"}
CREATE = ('CREATE TABLE IF NOT EXISTS cdr ('
          + ", ".join(f'"{name}" {_PG_TYPES[kind]}' for name, kind in FIELDS) + ")")
INSERT = (f'INSERT INTO cdr ({", ".join(chr(34) + n + chr(34) for n in NAMES)}) '
          f'VALUES ({", ".join("%s" for _ in NAMES)}) ON CONFLICT (leg_id) DO NOTHING')


def driver_missing() -> str | None:
    """Why ``cdr_url`` cannot work here, or None."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "cdr_url needs the PostgreSQL driver: pip install 'psycopg[binary]' (softswitch[postgres])"
    return None


class PostgresShipper:
    def __init__(self, spool: Path, url: str) -> None:
        self.spool = spool
        self.url = url
        self.shipped = 0
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._conn: Any = None
        self._failing = False

    @property
    def where(self) -> str:
        """The database, for log lines: never the password."""
        return self.url.rsplit("@", 1)[-1]

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="cdr-postgres", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """One last attempt to ship what is spooled (bounded), then stop. What is still
        unshipped stays in the spool and goes at the next start."""
        if self._thread is None:
            return
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        store = CdrStore(self.spool)
        store.db.execute("PRAGMA busy_timeout = 5000")  # the writer thread commits too
        backoff = INTERVAL
        try:
            while True:
                try:
                    sent = self._ship(store)
                except Exception as exc:  # psycopg.Error, OSError: the database, not us
                    self._close()
                    if not self._failing:
                        logger.error("CDR: cannot write to PostgreSQL at %s (%s); %d record(s) wait in %s, "
                                     "retrying", self.where, str(exc).strip().splitlines()[0] if str(exc) else
                                     type(exc).__name__, store.count_unshipped(), self.spool)
                        self._failing = True
                    backoff = min(MAX_BACKOFF, backoff * 2)
                    if self._stopping:
                        return
                    self._wake.wait(backoff)
                    self._wake.clear()
                    continue
                if self._failing:
                    logger.warning("CDR: PostgreSQL at %s is back; shipping the spooled records", self.where)
                    self._failing = False
                backoff = INTERVAL
                if sent:
                    continue  # more may be waiting
                if self._stopping:
                    return
                self._wake.wait(INTERVAL)
                self._wake.clear()
        finally:
            self._close()
            store.close()

    def _ship(self, store: CdrStore) -> int:
        rows = store.unshipped(BATCH)
        if not rows:
            return 0
        conn = self._connect()
        with conn.cursor() as cur:
            cur.executemany(INSERT, [tuple(r[name] for name in NAMES) for r in rows])
        conn.commit()
        store.mark_shipped([r["leg_id"] for r in rows])
        self.shipped += len(rows)
        return len(rows)

    def _connect(self) -> Any:
        if self._conn is None:
            import psycopg

            conn = psycopg.connect(self.url, connect_timeout=CONNECT_TIMEOUT)
            with conn.cursor() as cur:
                cur.execute(CREATE)
            conn.commit()
            self._conn = conn
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # already broken: nothing to release
                pass
            self._conn = None
