"""The task runtime: JS tasks as greenlets on one asyncio loop (a JS worker's, worker.py).

Each task is a greenlet (parent: the "hub", the greenlet running the event loop) that
runs one entry function of a ``JsApp`` in its OWN QuickJS context; the contexts of a
runtime share one engine runtime (``heap.SharedRuntime``: why, and how each task keeps
its own memory limit and stack frames). When JS calls a blocking verb (``ReadInput``, or
a call verb whose ``CallControl`` method returns an awaitable) the Python callable
switches to the hub; a timer, a posted event or the awaitable's done-callback later
resumes the task, always from a loop callback in the hub (never task -> task). All JS
of a runtime runs on its loop's thread.

Ending a task: when its entry returns or throws, its context is dropped, it leaves the
registry and ``leg.task_ended(error)`` is called (once). ``terminate()``/``shutdown()``
resume a suspended task with ``TaskTerminated``: every verb then returns a "terminated"
marker that the JS wrapper throws as an Error named ``TaskTerminated``, so the JS stack
unwinds and the greenlet finishes normally (a greenlet left suspended inside QuickJS
frames crashes the interpreter at exit; an ``atexit`` hook terminates leftovers). A
script that computes without calling a verb is stopped by the CPU budget (``budget.py``,
``cpu_seconds``): an uncatchable interrupt, reported as "task exceeded its CPU budget".

Measured on the shared 2-core dev box (Python 3.11, quickjs-ng 0.17, greenlet 3.5; the
perf figures are printed by ``pytest tests/unit -k "tasks_perf or 1000" -s``):

* task creation, from ``start()`` to blocked in ``ReadInput`` (500 tasks, a ~50-line
  main.js with one ``require``): 0.27 ms (2026-12-02, median of 5 runs; 0.82 ms for the
  commit before, same box and hour). Where it goes (``bench/task_cost.py``): the task's
  context in the shared runtime ~0.10-0.15 ms (``JS_NewContextRaw`` + ``INTRINSICS``; the
  binding's ``quickjs.Context``, a runtime of its own, was 0.19-0.28 ms), the prelude from
  bytecode ~0.09 ms, the app from bytecode compiled once per app version (main.js and its
  ``require``s) and the entry to its first wait the rest;
* RSS per idle task blocked in ``ReadInput``: 75 KiB (VmRSS delta over 500 tasks; 230 KiB
  with a runtime per task): the context 34 KiB, the prelude 19 KiB, the app ~5 KiB (the
  engine's own count, ``malloc_size``), the suspended greenlet's copy of its C stack
  ~9 KiB (``_stack_saved``; each JS frame on it is ~1.7 KiB, so the runtime calls the
  entry function itself), Python objects ~4 KiB;
* a verb crossing JS -> Python -> JS (``ThisTask()``): ~1 us; a raw greenlet switch out of
  a QuickJS callable and back: ~1 us (2.5 us with 20 JS frames on the stack);
  ``ReadInput`` suspend + timer + resume through the loop: 8-9 us; ``SendEvent`` +
  ``ReadInput`` of a queued event: ~10 us;
* ping-pong between two tasks: 12-18 us per event with 1-10 pairs, 40-50 us with 500
  pairs (1000 tasks x 100 rounds incl. creating them: ~5 s); the growth with the number
  of tasks is not explained yet (suspects: greenlet stack-slice copies, cache misses).
"""

from __future__ import annotations

import asyncio
import atexit
import enum
import inspect
import json
import logging
import math
import re
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from types import MappingProxyType
from typing import Any

import greenlet
import quickjs

# One empty context for our loop callbacks (media/clock.py says why: a task's
# ReadInput(3600) timer would keep a copy of its own for the whole call).
from media.clock import NO_CONTEXT

from . import api, events
from .app import MAIN, JsApp, ModuleNotFound
from .boundary import CallControl, CallError, Switchboard
from .budget import CpuBudget
from .engine import Bytecode
from .heap import HeapShare, SharedRuntime, TaskContext, compile_app_script
from .events import Event
from .prelude import PRELUDE

log = logging.getLogger("switch.tasks")

# A task's context and its prelude, made one per task as the task starts, cost 457-512
# us of CPU each when made once per 20 ms (a JS worker's pace at 50 tasks/s), 134-272 us
# each in batches of 8: the engine's code and data are cold after every wake-up of a
# process that sleeps between calls, warm within a batch. So each runtime keeps this
# many made ahead, and makes them again, in one go, once the last is taken (~420 KiB of
# heap per runtime). At 100 calls/s the workers' user time per call went from 1.66-1.81
# to 1.63-1.69 ms (bench/README.md).
SPARE_CONTEXTS = 8

MiB = 1024 * 1024
_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}
_WHERE = re.compile(r"([^\s()]+\.js):(\d+)(?::\d+)?\)?$")


class TaskTerminated(BaseException):
    """Thrown into a suspended task to end it; BaseException so engine code can't swallow it."""


class TaskState(enum.Enum):
    PENDING = "pending"  # created, start scheduled
    RUNNING = "running"
    WAITING_INPUT = "waiting-input"  # blocked in ReadInput
    WAITING_CALL = "waiting-call"  # blocked on a verb's awaitable
    ENDED = "ended"


class TaskLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"{self.extra['prefix']} {msg}", kwargs  # type: ignore[index]


class Task:
    """One running JS entry function. Created by ``TaskRuntime.start``."""

    def __init__(
        self,
        runtime: TaskRuntime,
        tid: int,
        app: JsApp,
        entry: str,
        param: Any,
        leg: CallControl | None,
        parent: int | None,
    ) -> None:
        self.runtime = runtime
        self.tid = tid
        self.app = app
        self.entry = entry
        self.param = param
        self.leg = leg
        self.parent = parent
        self.queue: deque[Event] = deque()
        self.state = TaskState.PENDING
        self.error: str | None = None  # "file:line: message" if the task threw
        self.cpu_exceeded = False  # interrupted by the CPU budget: no verb is served any more
        self.heap = HeapShare()  # its count of the runtime's shared heap (heap.py)
        self.log = TaskLogger(log, {"prefix": f"task[{tid} {app.name}]"})
        self._greenlet: greenlet.greenlet | None = None
        self._js: TaskContext | None = None
        self._js_state: tuple[int, int, int] | None = None  # its engine frames while suspended
        self._timer: asyncio.TimerHandle | None = None
        self._future: asyncio.Future[Any] | None = None
        self._wake_pending = False
        self._terminating = False
        self._exit_exc: BaseException | None = None  # KeyboardInterrupt etc. raised in a verb

    def __repr__(self) -> str:
        return f"<Task {self.tid} {self.app.name}:{self.entry} {self.state.value}>"

    # -- used by the call engine

    def post(self, event: Event) -> bool:
        return self.runtime.post(self.tid, event)

    def attach_leg(self, leg: CallControl | None) -> None:
        """Give the task a leg (e.g. the outbound call of ``StartBridgedCall``)."""
        self.leg = leg

    @property
    def alive(self) -> bool:
        return self.state is not TaskState.ENDED

    # -- used by verb impls (run inside the task greenlet)

    def call_leg(self) -> CallControl:
        if self.leg is None:
            raise CallError("this task has no call")
        return self.leg

    def script_log(self, level: str, text: str) -> None:
        # e.stack in a script says <input>:N:C (the engine's lines): name the app's files
        self.log.log(_LEVELS.get(level, logging.INFO), "%s", self.app.map_stack(text))

    def read_input(self, timeout: float | None) -> Event | None:
        if self.queue:
            return self.queue.popleft()
        if timeout is not None:
            timeout = float(timeout)
            if math.isinf(timeout):
                timeout = None
            elif not timeout > 0:
                return None
        rt = self.runtime
        if timeout is not None:
            self._timer = rt.loop.call_later(timeout, rt._input_timeout, self, context=NO_CONTEXT)
        self._set_state(TaskState.WAITING_INPUT)
        try:
            self._suspend()
        finally:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._set_state(TaskState.RUNNING)
        return self.queue.popleft() if self.queue else None

    def wait(self, awaitable: Any) -> Any:
        """Block the task (not the loop) until ``awaitable`` is done; its result or exception."""
        rt = self.runtime
        fut = asyncio.ensure_future(awaitable, loop=rt.loop)
        if not fut.done():
            self._future = fut
            fut.add_done_callback(partial(rt._future_done, self))
            self._set_state(TaskState.WAITING_CALL)
            try:
                self._suspend()
            except BaseException:
                fut.cancel()
                raise
            finally:
                self._future = None
                self._set_state(TaskState.RUNNING)
        try:
            return fut.result()
        except asyncio.CancelledError:
            raise CallError("cancelled") from None

    def _suspend(self) -> None:
        assert self._greenlet is not None and greenlet.getcurrent() is self._greenlet
        self._greenlet.parent.switch()

    def _set_state(self, state: TaskState) -> None:
        if state is not self.state and log.isEnabledFor(logging.DEBUG):
            self.log.debug("%s -> %s", self.state.value, state.value)
        self.state = state


_RUNTIMES: weakref.WeakSet[TaskRuntime] = weakref.WeakSet()


class TaskRuntime:
    """Runs JS tasks on ``loop``; one per process (or per worker)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, memory_limit: int = 32 * MiB, max_stack: int = 1 * MiB,
                 cpu_seconds: float | None = None) -> None:
        self.loop = loop
        self.memory_limit = memory_limit
        self.max_stack = max_stack
        self._tasks: dict[int, Task] = {}
        self.switchboard: Switchboard | None = None  # bridging, provided by the call engine
        self.running: Task | None = None  # the task whose greenlet is executing, if any
        # Where tids come from: a counter here; a JS worker draws them from blocks the
        # switch hands out, so tids stay unique across workers (switch/tasks/worker.py),
        # and returns an awaitable tid when it must wait for the next block.
        self.allocate_tid: Callable[[], int | Awaitable[int]] = self._count_tid
        self.on_started: Callable[[Task], None] | None = None  # a script started a task (Spawn)
        self.on_ended: Callable[[Task], None] | None = None  # after every task's end
        # SendEvent to a tid this runtime does not have (a JS worker asks the switch):
        # returns whether it was delivered, or an awaitable of that.
        self.forward: Callable[[int, Event], Any] | None = None
        self.budget = CpuBudget(cpu_seconds, self._cpu_exceeded, memory_limit) if cpu_seconds else None
        if self.budget is not None:
            self.budget.start()  # its watcher: this thread runs the JS
        self._next_tid = 1
        self._hub: greenlet.greenlet | None = None
        self._impls: dict[str, Callable[..., Any]] = {v.name: v.impl for v in api.python_verbs()}  # type: ignore[misc]
        self._impls["$resolve"] = _resolve
        self._impls["$load"] = _load_module
        self._json_args = {v.name: api.json_params(v) for v in api.python_verbs()}
        self._specs = {name: _VerbSpec(name, impl, self._json_args.get(name, ()))
                       for name, impl in self._impls.items()}
        # Every task's context lives in this one JSRuntime (heap.py says why and how each
        # task keeps its own memory limit); each app version is compiled once, here.
        self._shared = SharedRuntime(_Gate(self), memory_limit, max_stack)
        # app version -> file -> bytecode (None: does not compile); gone with the version
        self._code: weakref.WeakKeyDictionary[JsApp, dict[str, bytes | None]] = weakref.WeakKeyDictionary()
        if self.budget is not None:
            self.budget.attach(self._shared.runtime)
        # Contexts with the prelude evaluated, made SPARE_CONTEXTS at a time before the
        # tasks that take them (see SPARE_CONTEXTS).
        self._spares: list[TaskContext] = []
        self._refilling = False
        _RUNTIMES.add(self)

    def _count_tid(self) -> int:
        tid = self._next_tid
        self._next_tid += 1
        return tid

    def _cpu_exceeded(self) -> None:
        # Called from the interrupt handler, inside the running task's JS.
        if self.running is not None:
            self.running.cpu_exceeded = True

    # -- registry

    @property
    def tasks(self) -> Mapping[int, Task]:
        return MappingProxyType(self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)

    def get(self, tid: int) -> Task | None:
        return self._tasks.get(tid)

    # -- the call engine's side

    def start(
        self,
        app: JsApp,
        entry: str,
        param: Any = None,
        leg: CallControl | None = None,
        parent: int | None = None,
    ) -> Task:
        """Create a task running ``entry(param)``; it starts on the next loop iteration."""
        tid = self.allocate_tid()
        if not isinstance(tid, int):
            raise RuntimeError("start() needs a tid at once; use spawn() where waiting is possible")
        return self._started(self.start_with_tid(tid, app, entry, param, leg, parent))

    def spawn(self, app: JsApp, entry: str, param: Any, parent: int) -> int | Awaitable[int]:
        """``Spawn``: the new task's tid, or an awaitable of it when tids must be waited for."""
        tid = self.allocate_tid()
        if isinstance(tid, int):
            return self._started(self.start_with_tid(tid, app, entry, param, None, parent)).tid

        async def when_allocated(pending: Awaitable[int]) -> int:
            return self._started(self.start_with_tid(await pending, app, entry, param, None, parent)).tid

        return when_allocated(tid)

    def _started(self, task: Task) -> Task:
        if self.on_started is not None:
            self.on_started(task)
        return task

    def start_with_tid(self, tid: int, app: JsApp, entry: str, param: Any = None,
                       leg: CallControl | None = None, parent: int | None = None) -> Task:
        """``start`` with a tid chosen by the caller (the switch, for a worker's root task)."""
        if tid in self._tasks:
            raise ValueError(f"task {tid} exists")
        task = Task(self, tid, app, entry, param, leg, parent)
        self._tasks[tid] = task
        self.loop.call_soon(self._begin, task, context=NO_CONTEXT)
        return task

    def post(self, tid: int, event: Event) -> bool:
        """Queue ``event`` for task ``tid``; False if there is no such task."""
        task = self._tasks.get(tid)
        if task is None:
            return False
        task.queue.append(events.check(event))
        if task.state is TaskState.WAITING_INPUT and not task._wake_pending:
            task._wake_pending = True
            if task._timer is not None:
                task._timer.cancel()
                task._timer = None
            self.loop.call_soon(self._wake, task, context=NO_CONTEXT)
        return True

    def send_event(self, tid: int, event: Event) -> Any:
        """``SendEvent``: post here, or forward to the task's runtime elsewhere."""
        if tid not in self._tasks and self.forward is not None:
            return self.forward(tid, event)
        return self.post(tid, event)

    def terminate(self, tid: int) -> bool:
        task = self._tasks.get(tid)
        if task is None:
            return False
        self._terminate(task)
        return True

    def terminate_all(self) -> None:
        """End every task (each leg still gets ``task_ended``). Call from the loop's greenlet."""
        for task in list(self._tasks.values()):
            self._terminate(task)

    async def shutdown(self, timeout: float = 5.0) -> None:
        self.terminate_all()
        deadline = self.loop.time() + timeout
        while self._tasks and self.loop.time() < deadline:
            await asyncio.sleep(0.01)
        if self._tasks:
            log.error("shutdown: %d task(s) did not end: %s", len(self._tasks), list(self._tasks.values()))
        if self.budget is not None:
            self.budget.stop()
        for spare in self._spares:
            spare.free()
        self._spares.clear()

    # -- task contexts

    def _context_for(self, task: Task) -> TaskContext:
        """A spare context for ``task`` (its memory moves to the task's share), else a new
        one evaluating the prelude now; the spares are made again once the last is taken."""
        spares = self._spares
        if spares:
            js = spares.pop()
            js.adopt(task.heap)
            if self.budget is not None:
                self.budget.start_segment(js.pointers)
        else:
            js = self._prepared(task.heap)
        if not spares and not self._refilling:
            self._refilling = True
            self.loop.call_soon(self._make_spares, context=NO_CONTEXT)
        return js

    def _make_spares(self) -> None:
        """SPARE_CONTEXTS contexts back to back, each with the prelude, between tasks (a
        loop callback, in the hub): what each holds is counted in its own share, which
        the task that takes it adopts, so the memory limit sees what it always saw."""
        self._refilling = False
        shared = self._shared
        try:
            while len(self._spares) < SPARE_CONTEXTS:
                share = HeapShare()
                before = shared.size
                try:  # a budget segment of its own: a tripped one would interrupt the prelude
                    js = self._prepared(share)
                finally:
                    if self.budget is not None:
                        self.budget.pause()
                share.used = max(0, shared.size - before)
                self._spares.append(js)
        except Exception:  # (MemoryError from the engine): tasks make their own meanwhile
            log.exception("cannot make spare task contexts")

    def _prepared(self, share: HeapShare) -> TaskContext:
        """A new context counted in ``share``, the prelude evaluated in it (compiled once
        per process, engine.Bytecode) in a CPU budget segment that stays open."""
        js = self._shared.new_context(share)
        if self.budget is not None:
            self.budget.start_segment(js.pointers)
        try:
            js.run(_prelude().data)
        except BaseException:
            js.free()
            raise
        return js

    # -- greenlet plumbing (all of it runs in the hub, from loop callbacks)

    def _begin(self, task: Task) -> None:
        if task.state is not TaskState.PENDING:
            return  # terminated before it started
        self._hub = greenlet.getcurrent()
        task._greenlet = greenlet.greenlet(partial(self._run, task), parent=self._hub)
        task._set_state(TaskState.RUNNING)
        self._switch(task)

    def _switch(self, task: Task, exc: BaseException | None = None) -> None:
        g = task._greenlet
        if g is None or g.dead:
            return
        self.running = task  # for the watchdog and the verb gate: who holds the loop right now
        shared = self._shared
        entered = shared.enter(task.heap)
        if task._js_state is not None:
            shared.resumed(task._js_state)
        try:
            if exc is None:
                g.switch()
            else:
                g.throw(exc)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # _run catches everything; this is a last line of defence
            task.log.exception("task greenlet failed")
        finally:
            self.running = None
            task._js_state = shared.suspended() if not g.dead else None
            shared.leave(task.heap, entered)

    def _wake(self, task: Task) -> None:
        task._wake_pending = False
        if task.state is TaskState.WAITING_INPUT:
            self._switch(task)

    def _input_timeout(self, task: Task) -> None:
        task._timer = None
        if task.state is TaskState.WAITING_INPUT and not task._wake_pending:
            self._switch(task)

    def _future_done(self, task: Task, fut: asyncio.Future[Any]) -> None:
        if task._future is fut and task.state is TaskState.WAITING_CALL:
            self._switch(task)

    def _terminate(self, task: Task) -> None:
        if task.state is TaskState.ENDED:
            return
        task._terminating = True
        if task.state is TaskState.PENDING:
            self._finish(task, None, "terminated before it started")
            return
        if task.state is TaskState.RUNNING:
            return  # it is the running greenlet: its next verb call unwinds it
        g = greenlet.getcurrent()
        if self._hub is not None and g is not self._hub:
            self.loop.call_soon(self._terminate, task)  # never switch task -> task
            return
        self._switch(task, TaskTerminated())

    # -- inside the task greenlet

    def _run(self, task: Task) -> None:
        error: tuple[str, str] | None = None
        try:
            js = task._js = self._context_for(task)
            js.run(self._main_code(task.app))
            js.enter(task.entry, None if task.param is None else json.dumps(task.param))
        except quickjs.JSException as e:
            if task.cpu_exceeded:
                where, stack = self._describe(task, str(e))
                assert self.budget is not None
                error = (f"{where.split(': ', 1)[0]}: task exceeded its CPU budget ({self.budget.seconds:g} s of "
                         f"JS without calling a verb, --task-cpu-seconds) in app {task.app.name}@"
                         f"{task.app.version}: interrupted", stack)
            elif not task._terminating:
                error = self._describe(task, str(e))
        except BaseException as e:  # a bug of ours or the binding: still end the task cleanly
            if not task._terminating:
                error = (f"{MAIN}: internal error: {type(e).__name__}: {e}", "")
                task.log.exception("runtime error")
        if self.budget is not None:
            self.budget.pause()
        self._finish(task, error, "terminated" if task._terminating else None)
        if task._exit_exc is not None and not isinstance(task._exit_exc, greenlet.GreenletExit):
            raise task._exit_exc  # KeyboardInterrupt/SystemExit raised inside a verb: re-raise now

    def _finish(self, task: Task, error: tuple[str, str] | None, note: str | None) -> None:
        task._set_state(TaskState.ENDED)
        self._tasks.pop(task.tid, None)
        if task._timer is not None:
            task._timer.cancel()
            task._timer = None
        if task._js is not None:  # the JS frames are gone: drop the context
            task._js.free()
            task._js = None
            if task.cpu_exceeded or (error is not None and "out of memory" in error[0]):
                self._shared.reclaim()  # a bomb or a runaway: its heap goes back at once
        if error is not None:
            task.error = error[0]
            task.log.error("%s%s", error[0], "\n" + error[1] if error[1] else "")
        elif note:
            task.log.info("%s", note)
        if task.leg is not None:
            try:
                task.leg.task_ended(task.error)
            except Exception:
                task.log.exception("leg.task_ended failed")
        if self.switchboard is not None:
            try:
                self.switchboard.task_ended(task.tid)
            except Exception:
                task.log.exception("switchboard.task_ended failed")
        if self.on_ended is not None:
            try:
                self.on_ended(task)
            except Exception:
                task.log.exception("on_ended failed")

    def _main_code(self, app: JsApp) -> bytes:
        """The app version's main.js as bytecode, compiled for its first task only (a
        syntax error raises ``quickjs.JSException`` naming the line, for every task)."""
        codes = self._code.setdefault(app, {})
        code = codes.get(MAIN)
        if code is None:
            code = codes[MAIN] = compile_app_script(self._shared, app.files[MAIN].code)
        return code

    def _module_code(self, app: JsApp, path: str) -> bytes | None:
        """A library's bytecode (None if it does not compile), per app version and path."""
        codes = self._code.setdefault(app, {})
        if path not in codes:
            try:
                codes[path] = compile_app_script(self._shared, app.files[path].code)
            except quickjs.JSException:
                codes[path] = None
        return codes[path]

    def _describe(self, task: Task, text: str) -> tuple[str, str]:
        """JSException text -> ('file:line: message', mapped stack)."""
        text = task.app.map_text(text)
        lines = text.rstrip("\n").split("\n")
        i = next((k for k, ln in enumerate(lines) if ln.startswith(" ") and ln.lstrip().startswith("at ")), len(lines))
        head = lines[:i]
        # our own frames: the prelude's lines (<runtime>) and its bytecode (<null>)
        frames = [ln for ln in lines[i:] if "<runtime>" not in ln and "<null>" not in ln and ln.strip()]
        n = len(head)
        if n and n % 2 == 0 and head[: n // 2] == head[n // 2 :]:
            head = head[: n // 2]  # the binding prints String(e) and then e.stack, which repeats it
        if len(head) > 1 and head[-1] in ("undefined", "null") and not frames:
            head = head[:-1]  # a thrown non-Error has no stack; at the stack limit it is null
        message = "\n".join(head).strip() or "unknown error"
        if message == "null" and not frames:
            # quickjs-ng throws null when it cannot even allocate the InternalError
            message = f"out of memory (uncaught null; the JS heap limit is {self.memory_limit // MiB} MiB)"
        where = MAIN
        for ln in frames:
            m = _WHERE.search(ln.strip())
            if m:
                where = f"{m.group(1)}:{m.group(2)}"
                break
        return f"{where}: {message}", "\n".join(frames)


_PLAIN = frozenset((type(None), bool, int, float, str))  # verb results that need no waiting
_PRELUDE_CODE: list[Bytecode] = []


def _prelude() -> Bytecode:
    if not _PRELUDE_CODE:
        _PRELUDE_CODE.append(Bytecode(PRELUDE))
    return _PRELUDE_CODE[0]


class _VerbSpec:
    """What every task's binding of one verb shares."""

    __slots__ = ("name", "impl", "json_args", "prefix")

    def __init__(self, name: str, impl: Callable[..., Any], json_args: tuple[int, ...]) -> None:
        self.name = name
        self.impl = impl
        self.json_args = json_args
        self.prefix = "" if name.startswith("$") else f"{name}: "


class _Gate:
    """The one Python callable behind every task's verbs: ``gate(verb, *args)``.

    One for the whole runtime: every task context holds the same JS function object
    (heap.py says why), and the task calling it is the one running (``running``). No
    closure or bound object per task: every GC-tracked object is walked by each full
    collection, which stalls RTP (measured: 42 ms pauses at 2000 tasks)."""

    __slots__ = ("runtime",)

    def __init__(self, runtime: TaskRuntime) -> None:
        self.runtime = runtime

    def __call__(self, name: str, *args: Any) -> Any:
        rt = self.runtime
        task = rt.running
        if task is None:
            return "einternal error (a verb called with no task running)"
        if task._terminating or task.cpu_exceeded:
            return "x"
        budget = rt.budget
        if budget is not None:
            budget.pause()  # Python time (and waiting) is not the script's
        try:
            return self._call(task, rt._specs, name, args)
        finally:
            # Back into JS: a new segment of the task's CPU budget (a verb is a yield point).
            if budget is not None and not task.cpu_exceeded and task._js is not None:
                budget.start_segment(task._js.pointers)

    @staticmethod
    def _call(task: Task, specs: dict[str, _VerbSpec], name: str, args: tuple[Any, ...]) -> Any:
        # Never raise: a Python exception reaches JS as an anonymous InternalError and,
        # if JS catches it, breaks the next eval (DESIGN §4). See prelude.py for the tags.
        spec = specs.get(name)
        if spec is None:
            return f"einternal error (no verb {name!r})"
        try:
            if spec.json_args:
                args = tuple(json.loads(a) if i in spec.json_args and a is not None else a
                             for i, a in enumerate(args))
            result = spec.impl(task, *args)
            if type(result) not in _PLAIN and inspect.isawaitable(result):  # the type test is cheaper
                result = task.wait(result)
            t = type(result)
            if result is None or t is bool or t is int or t is float:
                return result
            if t is str:
                return "s" + result
            return "j" + _encode(result)
        except BaseException as e:
            if task._terminating or not isinstance(e, Exception):
                task._terminating = True
                if not isinstance(e, TaskTerminated) and task._exit_exc is None:
                    task._exit_exc = e
                return "x"
            tag = "e"
            if isinstance(e, (CallError, ModuleNotFound)):
                msg = str(e)
            elif isinstance(e, api.ScriptTypeError):
                msg, tag = str(e), "t"
            else:
                task.log.error("%s: error in the call engine", spec.name, exc_info=True)
                msg = f"internal error ({type(e).__name__}: {e})"
            if not msg.startswith(spec.prefix):
                msg = spec.prefix + msg
            return tag + msg


def _resolve(task: Task, from_path: str, spec: str) -> str:
    return task.app.resolve(from_path, spec)


def _load_module(task: Task, path: str) -> str | None:
    """``require``: put the module's function in ``__sw_module`` (from its bytecode,
    compiled for the app version's first task), or return its source when it does not
    compile (the prelude then evals it, and the engine throws the SyntaxError there)."""
    code = task.runtime._module_code(task.app, path)
    if code is None or task._js is None:
        return task.app.files[path].code
    task._js.run(code, keep=b"__sw_module")
    return None


@atexit.register
def _terminate_leftovers() -> None:
    # A greenlet suspended inside QuickJS frames crashes the interpreter at teardown.
    for rt in list(_RUNTIMES):
        if rt._tasks and (rt._hub is None or greenlet.getcurrent() is rt._hub):
            try:
                rt.terminate_all()
            except Exception:
                log.exception("terminating tasks at exit")
