"""The CDR store on disk: one SQLite file under the data dir (the standard library's
``sqlite3``: no server to run, durable on commit).

It is the embedded default's store, and with ``cdr_url = "postgresql://..."`` the spool:
every record is committed here first (so the call's record survives a database that is
down), and ``postgres.py`` ships the rows whose ``shipped`` is 0, then marks them.

Written by one thread only (``writer.CdrWriter``); read by ``softswitch cdr`` (another
process: WAL mode lets it read while the switch writes).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .record import FIELDS, NAMES

FILENAME = "cdr.sqlite"
_COLUMNS = ", ".join(f'"{name}" {kind}' for name, kind in FIELDS)
_INSERT = (f'INSERT OR IGNORE INTO cdr ({", ".join(chr(34) + n + chr(34) for n in NAMES)}) '
           f'VALUES ({", ".join("?" for _ in NAMES)})')


class CdrStore:
    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = path
        if readonly:
            if not path.is_file():
                raise FileNotFoundError(f"no CDR store at {path} (has the switch run with this --data-dir?)")
            self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, check_same_thread=False)
            # WAL: readers (softswitch cdr) never block the writer; FULL: a committed
            # record survives a power cut, not only a crash of the switch.
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute(f"CREATE TABLE IF NOT EXISTS cdr ({_COLUMNS}, shipped INTEGER NOT NULL DEFAULT 0)")
            self.db.execute("CREATE INDEX IF NOT EXISTS cdr_start ON cdr (start)")
            self.db.execute("CREATE INDEX IF NOT EXISTS cdr_unshipped ON cdr (shipped) WHERE shipped = 0")
            self.db.commit()
        self.db.row_factory = sqlite3.Row

    def close(self) -> None:
        self.db.close()

    def add(self, records: Iterable[dict[str, Any]]) -> int:
        """Commit a batch (one transaction); a record already stored (same leg_id) is kept."""
        rows = [tuple(r.get(name) for name in NAMES) for r in records]
        with self.db:
            self.db.executemany(_INSERT, rows)
        return len(rows)

    def unshipped(self, limit: int) -> list[dict[str, Any]]:
        cur = self.db.execute(f"SELECT * FROM cdr WHERE shipped = 0 ORDER BY start LIMIT {int(limit)}")
        return [_row(r) for r in cur.fetchall()]

    def mark_shipped(self, leg_ids: Sequence[str]) -> None:
        with self.db:
            self.db.executemany("UPDATE cdr SET shipped = 1 WHERE leg_id = ?", [(i,) for i in leg_ids])

    def count_unshipped(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM cdr WHERE shipped = 0").fetchone()[0])

    def query(self, since: float | None = None, until: float | None = None, app: str | None = None,
              number: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Records by start time range, app, and a number (a substring of From, To or the
        Request-URI), oldest first."""
        where: list[str] = []
        args: list[object] = []
        if since is not None:
            where.append("start >= ?")
            args.append(since)
        if until is not None:
            where.append("start < ?")
            args.append(until)
        if app is not None:
            where.append("app = ?")
            args.append(app)
        if number is not None:
            where.append("(from_uri LIKE ? OR to_uri LIKE ? OR request_uri LIKE ?)")
            args += [f"%{number}%"] * 3
        sql = "SELECT * FROM cdr" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY start, leg_id" + (f" LIMIT {int(limit)}" if limit else "")
        return [_row(r) for r in self.db.execute(sql, args).fetchall()]


def _row(row: sqlite3.Row) -> dict[str, Any]:
    return {name: row[name] for name in NAMES}
