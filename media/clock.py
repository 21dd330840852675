"""One periodic ticker driving every outgoing media stream.

One timer for all streams is the cheapest way to send 2000 x 50 packets/s (one loop
wake-up per 20 ms instead of one per stream). It is then a single point of failure, so:
an exception in one stream's tick removes that stream (logged once) and never stops the
clock. That guard is for bugs: an expected failure such as a send error is the stream's
to handle (MediaSession counts and logs it and keeps ticking), since removal is for good
and the call would be silent from then on. A late tick sends the frames it missed, up to
``max_catchup``, and beyond that resyncs to the grid (the skipped frames are dropped,
never sent twice).

Measured (uvloop, 2-core box, MediaSession looping PCMU to a loopback sink): 1000 streams
= 50k packets/s at 38% of a core, 2000 streams = 100k packets/s at 66% (~6.6 µs per
packet, mostly the sendto syscall), no late ticks.

Phases: with every stream due on the same 20 ms grid point, the last packet of a tick
leaves a whole tick's work after its due time (1000 streams: ~7 ms; measured p50 send
lateness 9.9 ms, p99 17 ms). So streams are spread over up to ``slots`` phases of the
frame period (4: a wake-up every 5 ms serving a quarter of the streams): each stream
still gets one frame per ``ptime``, and a tick's work, hence the lateness it adds, is a
quarter. A phase is opened only when the ones in use hold ``streams_per_phase`` streams
each (250: ~1.7 ms of sending, a lateness no receiver's jitter buffer notices): a phase
costs a wake-up per ``ptime`` whatever it serves. Measured (bench/rtp_send_cost.py, a
process doing nothing else): at 100 streams a packet cost 19.9-22.4 us with 4 phases and
11.7-13.8 us with one; at 500 streams 12.6-12.9 us with 4 and 11.0-11.4 us with 2. In the
switch, which SIP and its workers wake anyway, it saved wake-ups but no CPU beyond the
host's noise. A stream keeps its phase for life (moving it would send a frame early or late).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import deque
from typing import Protocol

logger = logging.getLogger(__name__)

# Every loop callback otherwise runs in a copy of the current contextvars.Context, and a
# timer armed for a call (its RTCP report, its keepalive, a task's ReadInput timeout)
# keeps that copy, a GC-tracked object, for as long as it waits. Nothing in the switch
# or its workers uses context variables, so their callbacks share this one empty context.
NO_CONTEXT = contextvars.Context()


class ClockedStream(Protocol):
    def tick(self, frames: int, now: float) -> bool:
        """Send ``frames`` frames (usually 1); return False when finished."""
        ...


class MediaClock:
    def __init__(
        self, loop: asyncio.AbstractEventLoop, ptime: float = 0.020, max_catchup: int = 5,
        slots: int = 4, streams_per_phase: int = 250,
    ) -> None:
        if ptime <= 0 or max_catchup < 1 or slots < 1 or streams_per_phase < 1:
            raise ValueError("MediaClock needs ptime > 0, max_catchup >= 1, slots >= 1 "
                             "and streams_per_phase >= 1")
        self._loop = loop
        self.ptime = ptime
        self.max_catchup = max_catchup
        self.slots = slots
        self.streams_per_phase = streams_per_phase
        self._step = ptime / slots  # one wake-up per phase
        # Per phase, an insertion-ordered set: streams tick in the order they were added.
        self._slots: list[dict[ClockedStream, None]] = [{} for _ in range(slots)]
        self._slot_of: dict[ClockedStream, int] = {}
        self._handle: asyncio.TimerHandle | None = None
        self._ticking = False
        self._start = 0.0  # loop time of step 0
        self._done = -1  # index of the last step handled
        self._due = 0.0  # loop time the armed timer fires at
        # Stats for monitoring: late ticks (caught up) and resyncs (frames dropped).
        self.late_ticks = 0
        self.resyncs = 0
        self.frames_dropped = 0
        # Send lateness of the last ~60 s of slot runs (s): how late a run's last packet
        # left compared with the step it was due at (start lateness + work so far).
        self.lateness: deque[float] = deque(maxlen=3000 * slots)

    def __len__(self) -> int:
        return len(self._slot_of)

    @property
    def running(self) -> bool:
        return self._handle is not None

    def add(self, stream: ClockedStream) -> None:
        """Start ticking ``stream`` from the next step of the least busy phase in use
        (the first ``1 + streams // streams_per_phase`` of them, see the module doc)."""
        if stream in self._slot_of:
            return
        in_use = min(self.slots, 1 + len(self._slot_of) // self.streams_per_phase)
        slots = self._slots
        slot = min(range(in_use), key=lambda k: len(slots[k]))
        opened = not slots[slot]
        slots[slot][stream] = None
        self._slot_of[stream] = slot
        if self._ticking:  # _tick re-arms itself
            return
        if self._handle is None:
            self._start = self._loop.time()
            self._done = -1
            self._arm()
        elif opened and self._next_due() < self._due:
            # A phase that was empty (skipped by the armed timer) falls due first.
            self._handle.cancel()
            self._arm()

    def _arm(self) -> None:
        self._due = self._next_due()
        self._handle = self._loop.call_at(self._due, self._tick)

    def discard(self, stream: ClockedStream) -> None:
        slot = self._slot_of.pop(stream, None)
        if slot is not None:
            self._slots[slot].pop(stream, None)
        # The timer stops itself at the next tick if nothing is left.

    def stop(self) -> None:
        """Drop every stream and the timer (process shutdown)."""
        for slot in self._slots:
            slot.clear()
        self._slot_of.clear()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _next_due(self) -> float:
        """Loop time of the next step whose phase has streams (empty phases are skipped)."""
        j = self._done + 1
        for _ in range(self.slots):
            if self._slots[j % self.slots]:
                break
            j += 1
        return self._start + j * self._step

    def _tick(self) -> None:
        self._handle = None
        now = self._loop.time()
        # The loop may fire a timer up to its clock resolution early: tolerate 0.1% of a step.
        index = int((now - self._start) / self._step + 0.001)
        missed = index - self._done
        limit = self.max_catchup * self.slots
        if missed > limit:
            # Too late to catch up without a burst: send max_catchup frames, drop the rest.
            dropped = (missed - limit) // self.slots
            self.resyncs += 1
            self.frames_dropped += dropped
            logger.warning("media clock %.0f ms late: resync, %d frames per stream dropped",
                           (missed - 1) * self._step * 1000, dropped)
            self._done = index - limit
        if missed > 0:
            first = self._done + 1
            self._done = index
            self._ticking = True
            began = time.perf_counter()
            try:
                # Each step j in (first-1, index] owes one frame to phase j % slots; serve
                # the phases in the order they fell due.
                for j in range(first, min(first + self.slots, index + 1)):
                    slot = j % self.slots
                    if not self._slots[slot]:
                        continue
                    frames = (index - j) // self.slots + 1
                    if frames > 1:
                        self.late_ticks += 1
                    self._run(slot, frames, now)
                    due = self._start + j * self._step
                    self.lateness.append(max(0.0, now - due) + time.perf_counter() - began)
            finally:
                self._ticking = False
        if self._slot_of:
            self._arm()

    def lateness_ms(self) -> dict[str, float]:
        """p50/p99/max send lateness over the recent ticks, in ms (loop clock: ~1 ms steps)."""
        samples = sorted(self.lateness)
        if not samples:
            return {"p50": 0.0, "p99": 0.0, "max": 0.0, "ticks": 0}
        def pick(q: float) -> float:
            return round(1000 * samples[min(len(samples) - 1, int(q * len(samples)))], 2)

        return {"p50": pick(0.5), "p99": pick(0.99), "max": round(1000 * samples[-1], 2),
                "ticks": len(samples)}

    def _run(self, slot: int, frames: int, now: float) -> None:
        streams = self._slots[slot]
        for stream in list(streams):
            if stream not in streams:  # discarded by an earlier stream's tick
                continue
            try:
                keep = stream.tick(frames, now)
            except Exception:
                # A bug in the stream (send errors never get here, see the module doc):
                # removed right away, so this is logged once per stream.
                logger.exception("media stream %r failed in tick; removed", stream)
                keep = False
            if not keep:
                self.discard(stream)
