"""Per-task CPU budget: stop a script that computes too long without calling a verb.

QuickJS polls an *interrupt handler* every 10,000 bytecode operations (quickjs.c
``js_poll_interrupts``); when the handler returns non-zero the engine throws an
*uncatchable* ``InternalError: interrupted`` (``JS_ThrowInterrupted`` marks it so: no
``catch`` or ``finally`` of the script runs), which unwinds the whole eval.

The quickjs-ng binding only installs that handler for its own ``set_time_limit``, which
measures process CPU time from the start of an eval and refuses every call into Python
while set: useless for a task that calls verbs (DESIGN.md §4). But the wheel's extension
module exports the engine's C API (``JS_SetInterruptHandler`` among it), and every
``quickjs.Context`` owns its own ``JSRuntime``, whose pointer is the first field after
the object header (``module.c``: ``RuntimeData { PyObject_HEAD; JSRuntime *runtime;
JSContext *context; ...}``). So we install our handler on each task's runtime with
ctypes. ``CpuBudget.check_binding()`` verifies that layout (the struct size, and that
``JS_GetRuntime(context) == runtime``) once at start-up, so a binding whose layout
changed fails loudly instead of corrupting memory; pyproject pins the version range.

Why not our own C binding: this needs no compiler at install time and keeps the
maintained wheel; the handler is one Python callback per 10,000 operations (~1 us each,
measured: under 2% of a tight JS loop). Why CPU time of the thread, not wall time: a task
waiting for the GIL or descheduled on a busy host has not used its budget.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable
from typing import Any

import _quickjs  # the binding's extension module, which carries the engine
import quickjs

_HANDLER = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
_RUNTIME_DATA_SIZE = 80  # sizeof(RuntimeData) in quickjs-ng 0.17's module.c (x86-64/arm64)


class BindingMismatch(RuntimeError):
    """The installed quickjs binding is not laid out as this module expects."""


def _engine() -> ctypes.CDLL:
    lib = ctypes.CDLL(_quickjs.__file__)
    lib.JS_SetInterruptHandler.argtypes = [ctypes.c_void_p, _HANDLER, ctypes.c_void_p]
    lib.JS_SetInterruptHandler.restype = None
    lib.JS_GetRuntime.argtypes = [ctypes.c_void_p]
    lib.JS_GetRuntime.restype = ctypes.c_void_p
    return lib


def _pointers(ctx: quickjs.Context) -> tuple[int, int]:
    """(JSRuntime*, JSContext*) of a binding Context."""
    fields = ctypes.cast(id(ctx) + object.__basicsize__, ctypes.POINTER(ctypes.c_void_p))
    return fields[0] or 0, fields[1] or 0


class CpuBudget:
    """One per task runtime (one JS thread): the running task's segment of JS CPU time.

    ``start_segment()`` is called whenever control enters JS for a task (its start, and
    every return from a verb); the handler interrupts once ``seconds`` of thread CPU time
    have passed since, and calls ``on_exceeded`` once for that segment so the runtime can
    mark the task (its later verb calls, if any, are refused)."""

    def __init__(self, seconds: float, on_exceeded: Callable[[], None]) -> None:
        self.seconds = seconds
        self._on_exceeded = on_exceeded
        self._deadline = float("inf")
        self._lib = _engine()
        self._handler = _HANDLER(self._poll)  # kept alive as long as the budget

    @staticmethod
    def check_binding() -> None:
        if type(quickjs.Context()).__basicsize__ != _RUNTIME_DATA_SIZE:
            raise BindingMismatch(
                f"quickjs binding {getattr(quickjs, '__version__', '?')}: Context is "
                f"{type(quickjs.Context()).__basicsize__} bytes, expected {_RUNTIME_DATA_SIZE}; "
                "install the quickjs-ng version pinned in pyproject.toml")
        ctx = quickjs.Context()
        runtime, context = _pointers(ctx)
        if not runtime or not context or _engine().JS_GetRuntime(context) != runtime:
            raise BindingMismatch("quickjs binding: Context fields are not (runtime, context); "
                                  "install the quickjs-ng version pinned in pyproject.toml")

    def attach(self, ctx: quickjs.Context) -> None:
        """Install the handler on ``ctx``'s runtime (one runtime per binding Context)."""
        runtime, _ = _pointers(ctx)
        self._lib.JS_SetInterruptHandler(runtime, self._handler, None)

    def start_segment(self) -> None:
        self._deadline = time.thread_time() + self.seconds

    def stop_segment(self) -> None:
        self._deadline = float("inf")

    def _poll(self, runtime: Any, opaque: Any) -> int:
        if time.thread_time() < self._deadline:
            return 0
        if self._deadline != float("-inf"):
            # Tripped: stays so (every later poll interrupts again) until the runtime
            # starts the next task's segment; the task itself never gets a new one.
            self._deadline = float("-inf")
            try:
                self._on_exceeded()
            except Exception:  # an exception must never cross the C callback
                pass
        return 1
