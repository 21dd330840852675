"""The loop watchdog: a script that never yields must not hang the switch for ever.

Every task runs on the one event loop, and a JS ``while (true) {}`` that calls no verb
never gives it back. quickjs-ng offers no way to interrupt a running context from
another thread (its time limit is armed only when an eval starts, and forbids calls into
Python), so the watchdog cannot stop the script. What it can do: notice that the loop
has not turned for ``timeout`` seconds, log which task (app, entry, tid) holds it, and
end the process with exit code 70 so the supervisor (systemd ``Restart=always``, a
container runtime) starts a fresh switch. A hung switch would hold every call and
refuse none; a restart loses the calls once and serves again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time

from .tasks.runtime import TaskRuntime

logger = logging.getLogger(__name__)

EXIT_CODE = 70  # EX_SOFTWARE


class LoopWatchdog:
    def __init__(self, loop: asyncio.AbstractEventLoop, runtime: TaskRuntime, timeout: float) -> None:
        self.loop = loop
        self.runtime = runtime
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
            task = self.runtime.running
            culprit = (f"task {task.tid} of app {task.app.name}@{task.app.version} running "
                       f"{task.entry}() (a loop that calls no verb?)" if task else "no JS task (a bug of ours)")
            logger.critical("event loop stuck for %.0f s: %s; exiting with %d so the supervisor "
                            "restarts the switch", stalled, culprit, EXIT_CODE)
            for handler in logging.getLogger().handlers:
                handler.flush()
            sys.stderr.flush()
            os._exit(EXIT_CODE)
