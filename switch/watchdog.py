"""The loop watchdog: the last resort for a bug of ours that stalls the switch's loop.

Scripts no longer run on this loop (they run in JS workers, with a CPU budget per task:
switch/tasks/pool.py), so nothing an app does can stop it. If it stops anyway for
``timeout`` seconds (a bug in our SIP, media or engine code), a hung switch would hold
every call and refuse none: log it and end the process with exit code 70 so the
supervisor (systemd ``Restart=always``, a container runtime) starts a fresh switch.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time

logger = logging.getLogger(__name__)

EXIT_CODE = 70  # EX_SOFTWARE


class LoopWatchdog:
    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self.timeout = timeout
        self._beat = time.monotonic()
        self._handle: asyncio.TimerHandle | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="loop-watchdog", daemon=True)

    def start(self) -> None:
        self._heartbeat()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._handle is not None:
            self._handle.cancel()

    def _heartbeat(self) -> None:
        self._beat = time.monotonic()
        self._handle = self.loop.call_later(min(1.0, self.timeout / 4), self._heartbeat)

    def _watch(self) -> None:
        while not self._stop.wait(min(1.0, self.timeout / 4)):
            stalled = time.monotonic() - self._beat
            if stalled < self.timeout:
                continue
            logger.critical("event loop stuck for %.0f s (no JS runs on it: a bug of the switch); exiting "
                            "with %d so the supervisor restarts the switch", stalled, EXIT_CODE)
            for handler in logging.getLogger().handlers:
                handler.flush()
            sys.stderr.flush()
            os._exit(EXIT_CODE)
