"""Per-task CPU budget: stop a script that computes too long without calling a verb.

QuickJS polls an *interrupt handler* every 10,000 bytecode operations (quickjs.c
``js_poll_interrupts``); when the handler returns non-zero the engine throws an
*uncatchable* ``InternalError: interrupted`` (``JS_ThrowInterrupted`` marks it so: no
``catch`` or ``finally`` of the script runs), which unwinds the whole eval.

The quickjs-ng binding only installs that handler for its own ``set_time_limit``, which
measures process CPU time from the start of an eval and refuses every call into Python
while set: useless for a task that calls verbs (DESIGN.md §4). So we install our own on
the tasks' runtime (one for all tasks of a thread, ``heap.py``) through the engine's C
API (``engine.py``); the running task's segment says whose budget is being spent.

Why CPU time of the thread, not wall time: a task waiting for the GIL or descheduled on
a busy host has not used its budget. Cost: one Python callback per 10,000 operations
(~1 us; under 2% of a tight JS loop).

The engine polls per operation count, not per time, and one operation can be a native
call that runs long (``new Array(1e5).join('x')``: 10,000 such operations ran 8.5 s
between two polls in a catch-all allocation loop). So a watcher thread checks the JS
thread's CPU clock every ``WATCH_INTERVAL``; a segment ``GRACE`` past its budget has its
context's interrupt counter set to 1 (``engine.request_poll``: the next operation
polls) and its runtime's memory limit cut to nothing (its allocations fail at once, so
natives that allocate return at once).

A heap at its limit cannot allocate the interrupt's error, and an error that cannot be
allocated is thrown as a plain, catchable value: a script catching its own out-of-memory
errors in a loop would then never stop. So when the budget trips, the runtime's memory
limit is raised by ``HEADROOM`` for the error to be built; the task ends right after and
its whole heap is freed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from .engine import ENGINE, INTERRUPT_HANDLER, counter_offset, heap_size, request_poll

HEADROOM = 1024 * 1024
WATCH_INTERVAL = 0.1
GRACE = 0.25  # seconds of CPU past the budget before the heap is squeezed


class CpuBudget:
    """One per task runtime (one JS thread): the running task's segment of JS CPU time.

    ``start_segment()`` is called whenever control enters JS for a task (its start, and
    every return from a verb); the handler interrupts once ``seconds`` of thread CPU time
    have passed since, and calls ``on_exceeded`` once for that segment so the runtime can
    mark the task (its later verb calls, if any, are refused)."""

    def __init__(self, seconds: float, on_exceeded: Callable[[], None], memory_limit: int = 0) -> None:
        self.seconds = seconds
        self.memory_limit = memory_limit
        self._on_exceeded = on_exceeded
        self._deadline = float("inf")  # thread CPU time at which the segment is over
        self._runtime = 0  # JSRuntime* of the segment's task; 0: no JS is running
        self._context = 0  # and its JSContext*
        self._counter = counter_offset()  # None: the watcher can only squeeze the heap
        self._tripped = False  # the segment is over: every poll interrupts
        self._handler = INTERRUPT_HANDLER(self._poll)  # kept alive as long as the budget
        self._clock: int | None = None  # CPU clock of the JS thread, for the watcher
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        # The watcher's check-and-squeeze must not interleave with the JS thread moving to
        # another segment (the GIL alone can switch between two bytecodes of either).
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the watcher for the calling thread (the one that runs JS)."""
        self._clock = time.pthread_getcpuclockid(threading.get_ident())
        self._watcher = threading.Thread(target=self._watch, name="cpu-budget", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=1)

    def attach(self, runtime: int) -> None:
        """Install the handler on the tasks' ``JSRuntime`` (``heap.SharedRuntime``: one
        for all tasks of the thread)."""
        ENGINE.JS_SetInterruptHandler(runtime, self._handler, None)

    def start_segment(self, engine_ptrs: tuple[int, int]) -> None:
        """Control enters JS for the task whose (JSRuntime*, JSContext*) these are
        (``heap.TaskContext.pointers``)."""
        with self._lock:
            self._tripped = False
            self._runtime, self._context = engine_ptrs
            self._deadline = time.thread_time() + self.seconds

    def pause(self) -> None:
        """Control left JS (a verb was called, or the task ended)."""
        with self._lock:
            if not self._tripped:
                self._deadline = float("inf")
                self._runtime = self._context = 0

    def _trip(self) -> None:
        self._tripped = True
        try:
            self._on_exceeded()
        except Exception:  # never let an exception cross the C callback or kill the watcher
            pass

    def _poll(self, runtime: Any, opaque: Any) -> int:
        """The engine's interrupt handler (the JS thread, every 10,000 operations)."""
        if not self._tripped:
            if time.thread_time() < self._deadline:
                return 0
            with self._lock:
                if not self._tripped:
                    self._trip()
        if self.memory_limit:  # every time: the watcher may have squeezed the heap since
            # the runtime is shared: room above what it holds now, for the running task
            ENGINE.JS_SetMemoryLimit(runtime, heap_size(runtime) + HEADROOM)
        return 1

    def _watch(self) -> None:
        assert self._clock is not None
        while not self._stop.wait(WATCH_INTERVAL):
            with self._lock:
                runtime, context = self._runtime, self._context
                if runtime and not self._tripped and time.clock_gettime(self._clock) > self._deadline + GRACE:
                    if self.memory_limit:  # the handler gives it back, with headroom
                        ENGINE.JS_SetMemoryLimit(runtime, 1)  # allocations fail at once
                    if self._counter is not None:
                        request_poll(context, self._counter)  # the next operation polls
                    self._trip()
