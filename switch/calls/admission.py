"""Overload shedding: admit a new INVITE only while the loop keeps up.

DESIGN.md §3: a prototype that absorbed overload went from 90 MB to 1.1 GB and
thousands of failed calls. So a new call is refused with 503 + Retry-After
*before* any task or media exists when the event loop lags, when too many calls
are live, or when the switch is draining.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)


class LoopLagMonitor:
    """Measures event-loop lateness with a periodic probe (exponentially smoothed)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float = 0.05) -> None:
        self.loop = loop
        self.interval = interval
        self.lag = 0.0
        self.recent: deque[float] = deque(maxlen=max(1, int(2.0 / interval)))  # the last ~2 s
        self._expected = 0.0
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._expected = self.loop.time() + self.interval
        self._handle = self.loop.call_at(self._expected, self._probe)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    @property
    def sustained(self) -> float:
        """Median lateness over the last ~2 s: high only when the loop is saturated,
        not after one GC pause. 0 until the probe has run for half that window: the
        median of a handful of samples is one stall, not saturation."""
        if len(self.recent) < (self.recent.maxlen or 1) // 2:
            return 0.0
        samples = sorted(self.recent)
        return samples[len(samples) // 2]

    def _probe(self) -> None:
        now = self.loop.time()
        late = max(0.0, now - self._expected)
        # Rise fast, decay slowly: one long stall should shed load for a moment.
        self.lag = late if late > self.lag else self.lag * 0.8 + late * 0.2
        self.recent.append(late)
        self._expected = now + self.interval
        self._handle = self.loop.call_at(self._expected, self._probe)


@dataclass(frozen=True, slots=True)
class Shed:
    """Why a new call is refused: ``key`` is stable (``call-limit``, ``loop-lag``...: the
    metrics' label), ``text`` says it for a human (the 503's reason phrase, the log)."""

    key: str
    text: str

    def __str__(self) -> str:
        return self.text


class Admission:
    def __init__(self, lag: LoopLagMonitor, max_calls: int, max_lag: float = 0.5,
                 max_sustained_lag: float = 0.015,
                 rtp_ports_free: Callable[[], int] = lambda: 2,
                 tasks_available: Callable[[], bool] = lambda: True) -> None:
        # Two signals. Saturation shows as a median lateness that creeps up while calls
        # stop ending on time (measured at 500 calls/s on 2 cores: 4 -> 11 -> 16 ms
        # within 6 s as live calls grew 520 -> 1450; at 400 calls/s it stays <= 7 ms).
        # A single stall shows in the smoothed lag: shed for a moment past max_lag, T1
        # (RFC 3261 §17.1.1.2): an INVITE answered later than that has been sent again,
        # and each stall that long adds retransmissions to the backlog it leaves. A
        # shorter stall only makes the INVITEs that queued meanwhile a little late.
        # It was 100 ms: on a virtual machine whose host took up to 47 % of its CPU time
        # (steal, /proc/stat), stalls of 100-150 ms at 35 % load refused 22 and 220 of
        # 1500 calls at 100 calls/s (bench/README.md), every one of them servable.
        self.max_sustained_lag = max_sustained_lag
        self.lag = lag
        self.rtp_ports_free = rtp_ports_free
        self.tasks_available = tasks_available  # a JS worker is up to run the call's task
        self.max_calls = max_calls
        self.max_lag = max_lag
        self.draining = False
        self.refused = 0
        self._last_report = -1e9
        self._unreported = 0

    def note_refusal(self, reason: Shed) -> None:
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

    def refuse_reason(self, live_calls: int) -> Shed | None:
        """None to admit; else why the call is refused (goes into the 503's reason)."""
        if self.draining:
            return Shed("draining", "shutting down")
        if live_calls >= self.max_calls:
            return Shed("call-limit", f"call limit {self.max_calls} reached")
        if not self.tasks_available():
            return Shed("no-js-worker", "no JS worker running (restarting)")
        if self.rtp_ports_free() < 2:  # a bridged call needs two legs
            return Shed("no-rtp-ports", "RTP port range exhausted (widen --rtp-ports)")
        if self.lag.lag > self.max_lag:
            return Shed("loop-lag", f"overloaded (loop lag {self.lag.lag * 1000:.0f} ms)")
        if self.lag.sustained > self.max_sustained_lag:
            return Shed("loop-lag-sustained", f"overloaded (loop lag {self.lag.sustained * 1000:.0f} ms for 2 s)")
        return None
