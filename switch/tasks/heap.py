"""One QuickJS runtime for all tasks of a ``TaskRuntime``, a context per task, and each
task's share of the heap (``--task-memory-mb``).

Why one runtime (issue 7, point 4). Measured on the dev box (500 of each, RSS delta,
quickjs-ng 0.17): the binding's ``quickjs.Context`` (a ``JSRuntime`` and a full
``JSContext``) costs 166 KiB and ~0.19 ms; a ``JSRuntime`` alone 38 KiB; a context
with only the base objects in a runtime of its own 131 KiB, but in a shared runtime
25 KiB (the first context of a runtime pays ~90 KiB of runtime-wide tables). A runtime
per task cannot reach 150 KiB per idle task once the prelude and the app are in, so all
tasks of a worker share the runtime of one binding Context (the *host*), each in its own
``JSContext`` made with ``JS_NewContextRaw`` plus ``engine.INTRINSICS``: its own globals,
nothing shared with other tasks but immutable atoms and strings.

How a task still has its own memory limit. The engine enforces one limit per runtime
(``JS_SetMemoryLimit``) and counts every allocation in ``malloc_size``. Only one task
runs at a time on the runtime's thread, so ``enter``/``leave`` around every switch into
a task (``TaskRuntime._switch``) set the limit to what that task may still allocate (its
limit minus its ``used``) and add what ``malloc_size`` grew by to its ``used``. A bomb
therefore fails its own allocations at its own limit, and the others are untouched
(tests/unit/test_tasks_heap.py). What blurs the count is the cycle collector, which
frees whatever garbage the whole runtime holds:

* between tasks it runs only from ``collect()``: when ended tasks left enough garbage or
  the heap doubled (``GC_ENDED``, ``GC_GROWTH``); a task's context is freed by it (the
  context's functions keep it alive, in cycles with its global object). What a pass frees
  is credited first to the ended tasks, then to the live tasks in proportion to what each
  grew by since the last pass: their own cycles (a ``function`` expression and its
  prototype) are freed only by such passes, and without the credit a long call making a
  little cyclic garbage per event would be stopped as a bomb after hours;
* inside a task the engine may collect once the task grew by half of what it may still
  allocate (``SEGMENT_GC`` at least), so that a long computation making cyclic garbage
  runs as it would in a runtime of its own. What the ended tasks left is then freed
  too; it is not counted as the task's own shrinking, but the task may allocate into
  that room within the same segment: a bomb can so pass its limit by at most the ended
  tasks' garbage of that moment (bounded by the rule above), and its next segment is
  then refused every allocation.

The engine also keeps one chain of JS stack frames and one stack limit per runtime, and
a task suspended in a verb has its frames on its greenlet's stack, which greenlet copies
away: ``suspended``/``resumed`` take them off the runtime and put them back, so the next
task's frames (and its error stacks) never link to another task's.

The verb gate: the binding's Python-callable class is registered in the host's runtime
only, and a ctypes callback cannot return a ``JSValue`` (ctypes allows no struct
results for callbacks), so every task context gets the *same* function object,
``__sw_py`` of the host (objects may cross contexts of one runtime); the Python callable
behind it finds the task from ``TaskRuntime.running``. The binding's callable takes the
GIL back from ``RuntimeData.thread_state``, which the binding sets in its own eval; for
our calls into JS (``JS_RUN``, which release the GIL) ``_run_js`` sets it the same way.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

import quickjs

from .engine import (
    ENGINE,
    INTRINSICS,
    JS_READ_OBJ_BYTECODE,
    JS_RUN,
    JS_TAG_EXCEPTION,
    BindingMismatch,
    MALLOC_LIMIT_OFFSET,
    MALLOC_SIZE_OFFSET,
    JSValue,
    _exception,
    compile_script,
    pointers,
)

MiB = 1024 * 1024
# When the cycle collector runs (between tasks). Its pass walks every object of every
# live task (~50 us per idle task's context on the dev box), so it waits for garbage to
# be worth it: ended tasks' contexts of at least GC_ENDED bytes and at least what the
# live tasks hold (a pass then costs ~2 walks of each ended task's objects; RSS holds
# at most twice the live heap), or the heap having doubled (live tasks' own cycles).
GC_ENDED = 4 * MiB
GC_GROWTH = 64 * MiB
SEGMENT_GC = 1 * MiB  # least growth of one task before the engine may collect inside it
SIZE_MAX = 2**64 - 1
# Private fields we read and write, each checked at start-up (``_check_*``); quickjs-ng
# 0.17 on LP64, from ``ptype/o struct JSRuntime`` / ``JSJobEntry`` in gdb on the wheel's
# debug info. JSRuntime: malloc_size/malloc_limit (engine.py), size_t
# malloc_gc_threshold, uintptr_t stack_size/stack_top/stack_limit, JSStackFrame
# *current_stack_frame, struct list_head job_list, whose entries are JSJobEntry
# {list_head link; JSContext *ctx; JSJobFunc *job_func; int argc; JSValue argv[]}.
# The binding's RuntimeData: {runtime, context, int has_time_limit, clock_t time_limit,
# PyThreadState *thread_state, ...} after the object header.
GC_THRESHOLD_OFFSET = 1208
STACK_SIZE_OFFSET = 1216
CURRENT_FRAME_OFFSET = 1264
JOB_LIST_OFFSET = 1328
JOB_CTX, JOB_ARGC, JOB_ARGV = 16, 32, 40
TIME_LIMIT_OFFSET = 16 + 24  # after int has_time_limit and its padding
THREAD_STATE_OFFSET = 16 + 32

# After a task that hit its heap limit or CPU budget (``reclaim``), or a collection that
# freed this much, the free pages go back to the system: glibc returns the middle of its
# heap only on malloc_trim (measured: a worker stayed 41 MiB up after two 32 MiB bombs
# whose blocks were interleaved with other tasks').
TRIM_AFTER = 8 * MiB
_malloc_trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc only
if _malloc_trim is not None:
    _malloc_trim.argtypes, _malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int

_get_thread_state = ctypes.pythonapi.PyThreadState_Get
_get_thread_state.restype = ctypes.c_void_p
_get_thread_state.argtypes = []

UNDEFINED = JSValue(0, 3)


class HeapShare:
    """A task's count of the shared heap (bytes of ``malloc_size``)."""

    __slots__ = ("used", "grown")

    def __init__(self) -> None:
        self.used = 0  # what the task holds, as far as the counts tell
        self.grown = 0  # what it grew by since the last collection (for the credit)


class SharedRuntime:
    """The host binding Context whose runtime every task context lives in."""

    def __init__(self, gate: Callable[..., Any], memory_limit: int, max_stack: int) -> None:
        self.memory_limit = memory_limit  # per task; 0: none
        self._host = quickjs.Context()
        self._host.add_callable("__sw_py", gate)
        self.runtime, self._host_context = pointers(self._host)
        self._check_layout()
        self._size = (ctypes.c_size_t * 1).from_address(self.runtime + MALLOC_SIZE_OFFSET)
        self._stack = (ctypes.c_size_t * 3).from_address(self.runtime + STACK_SIZE_OFFSET)
        self._frame = (ctypes.c_size_t * 1).from_address(self.runtime + CURRENT_FRAME_OFFSET)
        self._jobs = (ctypes.c_size_t * 2).from_address(self.runtime + JOB_LIST_OFFSET)  # prev, next
        # written directly on every task switch (JS_SetMemoryLimit and JS_SetGCThreshold
        # only store them; a ctypes call costs ~0.7 us, a field write ~0.1 us)
        self._limit = (ctypes.c_size_t * 1).from_address(self.runtime + MALLOC_LIMIT_OFFSET)
        self._gc_threshold = (ctypes.c_size_t * 1).from_address(self.runtime + GC_THRESHOLD_OFFSET)
        self._thread_state = ctypes.c_void_p.from_address(id(self._host) + THREAD_STATE_OFFSET)
        glob = ENGINE.JS_GetGlobalObject(self._host_context)
        self._gate = ENGINE.JS_GetPropertyStr(self._host_context, glob, b"__sw_py")
        ENGINE.JS_FreeValue(self._host_context, glob)
        ENGINE.JS_SetMaxStackSize(self.runtime, max_stack)
        self._check_execution_state(max_stack)
        self._check_jobs()
        ENGINE.JS_SetGCThreshold(self.runtime, SIZE_MAX)  # collect() runs it, between tasks
        if self._gc_threshold[0] != SIZE_MAX:
            raise BindingMismatch("quickjs engine: JSRuntime's malloc_gc_threshold is not where expected; "
                                  "install the quickjs-ng version pinned in pyproject.toml")
        self._ended_garbage = 0  # what ended tasks still hold until the next collection
        self._collect_at = self.size + GC_GROWTH
        self._segment_gc_at = SIZE_MAX
        self._shares: dict[int, HeapShare] = {}  # live contexts -> their counts
        self.collections = 0

    def __del__(self) -> None:
        # The host's dealloc frees the runtime, which must hold no object by then.
        for context in list(self._shares):
            ENGINE.JS_FreeContext(context)
        self._shares.clear()
        ENGINE.JS_FreeValue(self._host_context, self._gate)
        ENGINE.JS_RunGC(self.runtime)

    def _check_layout(self) -> None:
        hint = "install the quickjs-ng version pinned in pyproject.toml"
        limit = ctypes.c_size_t.from_address(self.runtime + MALLOC_LIMIT_OFFSET)
        ENGINE.JS_SetMemoryLimit(self.runtime, 123456789)
        ok = limit.value == 123456789
        ENGINE.JS_SetMemoryLimit(self.runtime, 0)
        self._host.set_time_limit(2.0)
        clock = ctypes.c_long.from_address(id(self._host) + TIME_LIMIT_OFFSET).value
        self._host.set_time_limit(-1)
        state = ctypes.c_void_p.from_address(id(self._host) + THREAD_STATE_OFFSET).value
        if not ok or clock != 2_000_000 or state:
            raise BindingMismatch(f"quickjs binding: JSRuntime or RuntimeData not laid out as expected; {hint}")

    def _check_execution_state(self, max_stack: int) -> None:
        seen: list[int] = []
        self._host.add_callable("__sw_probe", lambda: seen.append(int(self._frame[0])))
        self._host.eval("__sw_probe()")
        size, top, limit = self._stack
        if not (size == max_stack and limit == top - size and self._frame[0] == 0 and seen and seen[0]):
            raise BindingMismatch("quickjs engine: JSRuntime's stack fields are not laid out as expected; "
                                  "install the quickjs-ng version pinned in pyproject.toml")

    def _check_jobs(self) -> None:
        head = self.runtime + JOB_LIST_OFFSET
        empty = self._jobs[0] == head and self._jobs[1] == head
        self._host.eval("(async function () { await 1; })(); void 0")
        entry = self._jobs[1]
        ok = empty and entry != head and ctypes.c_size_t.from_address(entry + JOB_CTX).value == self._host_context
        if ok:
            self.discard_jobs()
        if not ok or self._jobs[1] != head:
            raise BindingMismatch("quickjs engine: JSRuntime's job list is not laid out as expected; "
                                  "install the quickjs-ng version pinned in pyproject.toml")

    # -- the running task's execution state

    @property
    def jobs_pending(self) -> bool:
        return bool(self._jobs[1] != self.runtime + JOB_LIST_OFFSET)

    def discard_jobs(self) -> None:
        """Drop the pending jobs (at the end of each task's segment, so they are all
        that task's). Task contexts have no Promise (``engine.INTRINSICS``), so today no
        job is ever queued in them (the start-up check queues one in the host); this
        keeps that safe if an intrinsic that queues jobs is added: nothing runs the
        queue between verbs, and its entries name their context without holding it, so
        a job left behind would outlive its task's context."""
        head = self.runtime + JOB_LIST_OFFSET
        node = self._jobs[1]
        while node != head:
            following = ctypes.c_size_t.from_address(node + 8).value
            context = ctypes.c_size_t.from_address(node + JOB_CTX).value
            argc = ctypes.c_int.from_address(node + JOB_ARGC).value
            for value in (JSValue * argc).from_address(node + JOB_ARGV):
                ENGINE.JS_FreeValue(context, value)
            ENGINE.js_free(context, node)
            node = following
        self._jobs[0] = self._jobs[1] = head


    def suspended(self) -> tuple[int, int, int]:
        """A task gave the thread back in the middle of its JS (a blocking verb): take
        its frames off the runtime. The engine keeps ONE chain of stack frames and one
        stack limit per runtime; the next task's frames must not link to these (they
        are on the suspended greenlet's stack, which is copied away)."""
        state = (int(self._frame[0]), int(self._stack[1]), int(self._stack[2]))
        self._frame[0] = 0
        if self.jobs_pending:
            self.discard_jobs()
        return state

    def resumed(self, state: tuple[int, int, int]) -> None:
        """Put a suspended task's frames and stack limit back before it continues."""
        self._frame[0], self._stack[1], self._stack[2] = state

    @property
    def size(self) -> int:
        """Bytes the engine counts as allocated in the runtime (``malloc_size``)."""
        return int(self._size[0])

    @property
    def context_count(self) -> int:
        return len(self._shares)

    # -- contexts

    def new_context(self, share: HeapShare) -> TaskContext:
        """A context for a task; what it costs is counted in ``share`` (by ``leave``)."""
        return TaskContext(self, share)

    def _run_js(self, call: Callable[[], JSValue]) -> JSValue:
        """Run JS with the GIL released, as the binding's own eval does (module
        docstring: the verb gate takes the GIL back from the thread state set here)."""
        ENGINE.JS_UpdateStackTop(self.runtime)  # greenlets move the C stack between calls
        self._thread_state.value = _get_thread_state()
        try:
            return call()
        finally:
            self._thread_state.value = None

    # -- the heap shares

    def enter(self, share: HeapShare) -> int:
        """A task is about to run: limit the heap to what it may still allocate, and let
        the engine collect cycles inside it only once it grew by half of that. Returns
        the size to give ``leave``."""
        size = self.size
        if self.memory_limit:
            allowance = max(1, self.memory_limit - share.used)
            self._limit[0] = size + allowance
        else:
            allowance = max(2 * GC_ENDED, size)
        self._segment_gc_at = size + max(SEGMENT_GC, allowance // 2)
        self._gc_threshold[0] = self._segment_gc_at
        return size

    def leave(self, share: HeapShare, entered: int) -> None:
        """The task gave the thread back (a verb, or it ended): count its growth."""
        if self.memory_limit:
            self._limit[0] = 0  # none
        size = self.size
        grown = size - entered
        if self._gc_threshold[0] != self._segment_gc_at:
            # The engine collected inside the task (it then sets a new threshold): the
            # ended tasks' garbage went too, which is not the task's own shrinking. The
            # others' cycles went as well, uncounted (no credit for them at the next pass).
            grown += self._ended_garbage
            self._ended_garbage = 0
            for other in self._shares.values():
                other.grown = 0
        self._gc_threshold[0] = SIZE_MAX  # between tasks: collect() only
        share.used = max(0, share.used + grown)
        share.grown += max(0, grown)
        if size >= self._collect_at or self._ended_garbage >= max(GC_ENDED, size - self._ended_garbage):
            self.collect()

    def reclaim(self) -> None:
        """A task that filled its heap (or ran away) ended: free and return its memory now."""
        self.collect()
        if _malloc_trim is not None:
            _malloc_trim(0)

    def collect(self) -> None:
        """Run the cycle collector (never inside a task) and credit what it freed."""
        before = self.size
        ENGINE.JS_RunGC(self.runtime)
        freed = before - self.size
        self.collections += 1
        if freed >= TRIM_AFTER and _malloc_trim is not None:
            _malloc_trim(0)
        to_ended = min(freed, self._ended_garbage)
        self._ended_garbage -= to_ended
        freed -= to_ended
        grown = sum(s.grown for s in self._shares.values())
        for share in self._shares.values():
            if freed > 0 and grown > 0:
                share.used = max(0, share.used - min(share.grown, freed * share.grown // grown))
            share.grown = 0
        self._collect_at = self.size + max(GC_GROWTH, self.size)


class TaskContext:
    """One task's ``JSContext`` in the shared runtime."""

    __slots__ = ("shared", "context", "share")

    def __init__(self, shared: SharedRuntime, share: HeapShare) -> None:
        self.shared = shared
        self.share = share
        context = ENGINE.JS_NewContextRaw(shared.runtime)
        if not context:
            raise MemoryError("JS_NewContextRaw failed")
        self.context = context
        shared._shares[context] = self.share
        for name in INTRINSICS:
            if getattr(ENGINE, f"JS_AddIntrinsic{name}")(context) < 0:
                ENGINE.JS_FreeValue(context, ENGINE.JS_GetException(context))
                self.free()
                raise MemoryError(f"JS_AddIntrinsic{name} failed (the task's heap limit is too small)")
        glob = ENGINE.JS_GetGlobalObject(context)
        ENGINE.JS_SetPropertyStr(context, glob, b"__sw_py", ENGINE.JS_DupValue(context, shared._gate))
        ENGINE.JS_FreeValue(context, glob)

    def adopt(self, share: HeapShare) -> None:
        """Count this context in ``share`` from now on, with what its own share counted so
        far (a spare made before its task: its intrinsics and prelude)."""
        share.used += self.share.used
        share.grown += self.share.grown
        self.share = share
        self.shared._shares[self.context] = share

    @property
    def pointers(self) -> tuple[int, int]:
        """(JSRuntime*, JSContext*), for the CPU budget."""
        return self.shared.runtime, self.context

    def run(self, bytecode: bytes, keep: bytes | None = None) -> None:
        """Evaluate a compiled global script; a JS exception raises ``quickjs.JSException``.
        ``keep``: the global to store the script's value in (else it is dropped)."""
        context = self.context
        fn = ENGINE.JS_ReadObject(context, bytecode, len(bytecode), JS_READ_OBJ_BYTECODE)
        if fn.tag == JS_TAG_EXCEPTION:
            raise _exception(context)
        result = self.shared._run_js(lambda: JS_RUN.JS_EvalFunction(context, fn))  # owns fn
        if result.tag == JS_TAG_EXCEPTION:
            raise _exception(context)
        if keep is None:
            ENGINE.JS_FreeValue(context, result)
        else:
            glob = ENGINE.JS_GetGlobalObject(context)
            ENGINE.JS_SetPropertyStr(context, glob, keep, result)  # takes the value
            ENGINE.JS_FreeValue(context, glob)

    def enter(self, entry: str, param_json: str | None) -> None:
        """Run the task's entry function (found by the prelude's ``__sw_entry``) with its
        parameter given as JSON: called from here, not from JS, for one JS frame less
        on the stack of a task waiting in a verb (each is ~1.7 KiB of C stack, which the
        greenlet keeps a copy of while the task waits)."""
        context = self.context
        fn = self._call_global(b"__sw_entry", (entry,))
        argv = (JSValue * 1)()
        argc = 0
        try:
            if param_json is not None:
                data = param_json.encode()
                argv[0] = ENGINE.JS_ParseJSON(context, data, len(data), b"<param>")
                if argv[0].tag == JS_TAG_EXCEPTION:
                    raise _exception(context)
                argc = 1
            result = self.shared._run_js(lambda: JS_RUN.JS_Call(context, fn, UNDEFINED, argc, argv))
        finally:
            if argc:
                ENGINE.JS_FreeValue(context, argv[0])
            ENGINE.JS_FreeValue(context, fn)
        if result.tag == JS_TAG_EXCEPTION:
            raise _exception(context)
        ENGINE.JS_FreeValue(context, result)

    def _call_global(self, name: bytes, args: tuple[str, ...]) -> JSValue:
        """The result of the global function ``name`` called with string arguments (the
        caller frees it); a JS exception raises ``quickjs.JSException``."""
        context = self.context
        glob = ENGINE.JS_GetGlobalObject(context)
        fn = ENGINE.JS_GetPropertyStr(context, glob, name)
        ENGINE.JS_FreeValue(context, glob)
        argv = (JSValue * max(1, len(args)))()
        for i, arg in enumerate(args):
            data = arg.encode()
            argv[i] = ENGINE.JS_NewStringLen(context, data, len(data))
        try:
            result = self.shared._run_js(lambda: JS_RUN.JS_Call(context, fn, UNDEFINED, len(args), argv))
        finally:
            for i in range(len(args)):
                ENGINE.JS_FreeValue(context, argv[i])
            ENGINE.JS_FreeValue(context, fn)
        if result.tag == JS_TAG_EXCEPTION:
            raise _exception(context)
        return result

    def free(self) -> None:
        """Drop the context. Its objects go with the next collection (functions keep
        their context alive, and they sit in cycles with the global object)."""
        shared = self.shared
        if shared._shares.pop(self.context, None) is None:
            return
        before = shared.size
        if shared.jobs_pending:
            shared.discard_jobs()  # this task's: their entries name this context
        ENGINE.JS_FreeContext(self.context)
        shared._ended_garbage += max(0, self.share.used - (before - shared.size))


def compile_app_script(shared: SharedRuntime, source: str) -> bytes:
    """An app's script as bytecode with line numbers, compiled in the host context."""
    return compile_script(shared._host_context, source, debug=True)
