"""Writing CDRs without ever blocking the event loop, and without losing one.

The engine tells its observers of each finished call (``CallEngine.observers``); the
``CdrWriter`` observer turns the call into its records on the loop (a few dicts) and
hands them to its thread through a queue. The thread wakes every ``LINGER`` seconds and
commits what queued meanwhile to the SQLite store (one transaction per ``BATCH`` records),
so a record is on disk within a fraction of a second of its call's end, and the loop never
waits for a disk.

Nothing is lost: ``stop()`` (SIGTERM) drains the queue into the store before the process
exits; with PostgreSQL configured (``postgres.py``) the SQLite store is the spool the
rows are shipped from, so a database that is down only delays them. A record that cannot
be committed at all (a full disk) is retried every second and logged, never dropped while
the switch runs.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any

from ..calls.call import Call
from .record import records
from .store import CdrStore

logger = logging.getLogger(__name__)

BATCH = 500  # records per transaction at most
LINGER = 0.2  # seconds a record may wait for others to share its transaction
RETRY = 1.0  # seconds between attempts when the disk refuses a commit


class CdrWriter:
    def __init__(self, path: Path, loop_time: Any) -> None:
        self.path = path
        self._loop_time = loop_time  # the loop's clock (the legs' times are on it)
        self._queue: queue.SimpleQueue[list[dict[str, Any]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()  # set by stop(): flush now and end
        self._stopping = False
        self.written = 0
        self.submitted = 0
        self.store = CdrStore(path)  # opened here: a bad data dir fails the start, not a call

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="cdr-writer", daemon=True)
        self._thread.start()

    def __call__(self, call: Call) -> None:
        """The engine's observer: the call's records, to the writer's thread."""
        batch = records(call, time.time() - self._loop_time())
        self.submitted += len(batch)
        self._queue.put(batch)

    @property
    def pending(self) -> int:
        return self.submitted - self.written

    def stop(self, timeout: float = 10.0) -> None:
        """Commit everything submitted so far, then stop the thread (SIGTERM's flush)."""
        if self._thread is None:
            return
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.error("CDR writer: %d record(s) not committed after %.0f s (disk stuck?)", self.pending, timeout)
        self._thread = None
        self.store.close()

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        # It wakes every LINGER seconds and takes whatever queued meanwhile, rather than
        # waking for each call: at 400 calls/s a wake-up per record cost the loop's thread
        # a GIL hand-off each (py-spy: ~6 % of the switch's samples), this costs five a second.
        while True:
            self._wake.wait(LINGER)
            stopping = self._stopping  # read first: what was queued before stop() is taken below
            batch: list[dict[str, Any]] = []
            while True:
                try:
                    batch.extend(self._queue.get_nowait())
                except queue.Empty:
                    break
            for i in range(0, len(batch), BATCH):
                self._commit(batch[i:i + BATCH])
            if stopping:
                return

    def _commit(self, batch: list[dict[str, Any]]) -> None:
        failures = 0
        while True:
            try:
                self.store.add(batch)
            except Exception as exc:  # sqlite3.Error, OSError: the disk, not the record
                failures += 1
                if failures == 1 or failures % 60 == 0:
                    logger.error("CDR writer: cannot commit %d record(s) to %s (%s); retrying every %.0f s",
                                 len(batch), self.path, exc, RETRY)
                time.sleep(RETRY)
                continue
            self.written += len(batch)
            if failures:
                logger.warning("CDR writer: committed %d record(s) after %d failed attempt(s)", len(batch), failures)
            return
