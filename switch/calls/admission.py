"""Overload shedding: admit a new INVITE only while the loop keeps up.

DESIGN.md §3: a prototype that absorbed overload went from 90 MB to 1.1 GB and
thousands of failed calls. So a new call is refused with 503 + Retry-After
*before* any task or media exists when the event loop lags, when too many calls
are live, or when the switch is draining.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

logger = logging.getLogger(__name__)


class LoopLagMonitor:
    """Measures event-loop lateness with a periodic probe (exponentially smoothed)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float = 0.05) -> None:
        self.loop = loop
        self.interval = interval
        self.lag = 0.0
        self._expected = 0.0
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._expected = self.loop.time() + self.interval
        self._handle = self.loop.call_at(self._expected, self._probe)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _probe(self) -> None:
        now = self.loop.time()
        late = max(0.0, now - self._expected)
        # Rise fast, decay slowly: one long stall should shed load for a moment.
        self.lag = late if late > self.lag else self.lag * 0.8 + late * 0.2
        self._expected = now + self.interval
        self._handle = self.loop.call_at(self._expected, self._probe)


class Admission:
    def __init__(self, lag: LoopLagMonitor, max_calls: int, max_lag: float = 0.1,
                 rtp_ports_free: Callable[[], int] = lambda: 2) -> None:
        self.lag = lag
        self.rtp_ports_free = rtp_ports_free
        self.max_calls = max_calls
        self.max_lag = max_lag
        self.draining = False
        self.refused = 0
        self._last_report = -1e9
        self._unreported = 0

    def note_refusal(self, reason: str) -> None:
        """Count a refused call; log at most one line per 5 s so overload is visible
        without the log itself adding to it."""
        self.refused += 1
        self._unreported += 1
        now = self.lag.loop.time()
        if now - self._last_report >= 5.0:
            logger.warning("refusing new calls with 503: %s (%d refused since last report, %d in all)",
                           reason, self._unreported, self.refused)
            self._last_report = now
            self._unreported = 0

    def refuse_reason(self, live_calls: int) -> str | None:
        """None to admit; else why the call is refused (goes into the 503's reason)."""
        if self.draining:
            return "shutting down"
        if live_calls >= self.max_calls:
            return f"call limit {self.max_calls} reached"
        if self.rtp_ports_free() < 2:  # a bridged call needs two legs
            return "RTP port range exhausted (widen --rtp-ports)"
        if self.lag.lag > self.max_lag:
            return f"overloaded (loop lag {self.lag.lag * 1000:.0f} ms)"
        return None
