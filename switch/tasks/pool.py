"""The switch's side of the JS workers: start them, place tasks, serve their verbs.

Why worker processes (issue 7, DESIGN.md §3): JS on the loop that keeps SIP and media
time stalls every call while one script computes (measured: 0.8 s of compute was a
0.8 s RTP gap in every call), and a segfault or OOM kill inside the engine would take
every call with it. Here the switch process keeps SIP, RTP and every leg; each task runs
in one of ``count`` worker processes (``worker.py``), which also puts JS on every core.

What this module guarantees:

* a task family (a root task and what it spawns) lives in one worker; the worker for a
  new call is the one with the fewest tasks;
* tids are unique switch-wide: they come in blocks of ``TID_BLOCK`` owned by one worker,
  so ``owner(tid)`` is a dict lookup;
* a verb arrives as ``verb`` and runs on the task's leg (``CallControl``) or the
  switchboard exactly as an in-process call would; its result or ``CallError`` goes back
  as ``reply``. Events posted to a tid go to its worker;
* when a worker dies (crash, SIGKILL, OOM kill, or no ``pong`` for ``stall_timeout``
  seconds, after which it is killed), each of its tasks ends as if it had thrown
  ("JS worker died"): its leg hangs up (500 unanswered, BYE answered) and its bridge
  breaks; the worker is started again (after 0.5 s, doubling while it keeps dying,
  at most 10 s). Calls in other workers never notice;
* the workers run at a lower CPU priority than the switch (``nice``, default +5): on a
  saturated host the kernel gives SIP and media the CPU first, and a woken worker does
  not preempt the switch process mid-tick. Measured (bench/README.md): at 550 calls/s
  on the 2-core box, 1960 failed calls (the switch's loop lag shedding with 503) with
  the workers at the switch's priority, 0 with them at +5.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import os
import signal
import socket
import sys
import time
import weakref
from functools import partial
from collections.abc import Iterator, Mapping
from typing import Any

from .app import JsApp
from .api import LEG_METHODS
from .boundary import CallControl, CallError, Switchboard
from . import events
from .events import Event
from .wire import Message, MessageLink

log = logging.getLogger("switch.tasks.pool")

TID_BLOCK = 4096
READY_TIMEOUT = 20.0  # a worker's start-up (imports) on a loaded box
RESTART_BACKOFF = (0.5, 10.0)
PING_INTERVAL = 1.0
WORKER_DIED = "JS worker died"  # the error of every task a dead worker took with it



def task_outcome(error: str | None) -> str:
    """How a task ended, for the metrics: ``ok`` (returned, or ended with its call),
    ``error`` (it threw), or a kill: ``cpu_budget``, ``memory_limit`` (QuickJS's heap
    limit), ``worker_died``. Read from the error text the runtime reports (runtime.py
    ``_run``/``_describe``; pool.py ``on_worker_exit``), the one thing that crosses the wire."""
    if error is None:
        return "ok"
    if error == WORKER_DIED:
        return "worker_died"
    if "task exceeded its CPU budget" in error:
        return "cpu_budget"
    if "out of memory" in error:
        return "memory_limit"
    return "error"


class WorkerStartError(RuntimeError):
    """A JS worker did not come up (it exited, or said nothing in READY_TIMEOUT)."""


class TaskRecord:
    """What the switch knows of a task that runs in a worker (the ``BridgingTask`` the
    switchboard sees: ``tid``, ``post``, ``attach_leg``)."""

    __slots__ = ("pool", "tid", "worker", "app", "entry", "parent", "leg", "started")

    def __init__(self, pool: WorkerPool, tid: int, worker: JsWorker, app: JsApp | None, entry: str,
                 parent: int | None, leg: CallControl | None) -> None:
        self.pool = pool
        self.tid = tid
        self.worker = worker
        self.app = app
        self.entry = entry
        self.parent = parent
        self.leg = leg
        self.started = time.monotonic()

    def __repr__(self) -> str:
        return f"<TaskRecord {self.tid} {self.app.name if self.app else '?'}:{self.entry} worker {self.worker.index}>"

    def post(self, event: Event) -> bool:
        return self.pool.post(self.tid, event)

    def attach_leg(self, leg: CallControl | None) -> None:
        self.leg = leg
        if leg is not None:
            self.worker.send(["attach", self.tid])
            self.watch(leg)

    def watch(self, leg: CallControl) -> None:
        """Tell the worker when the leg ends, so ``IsConnected()`` needs no round trip.
        Sent before any event about the ending and before the reply of the verb that
        ended it: the worker sees them in that order."""
        leg.on_end(partial(self._leg_ended, leg))

    def _leg_ended(self, leg: CallControl) -> None:
        if self.leg is leg:
            self.worker.send(["leg-ended", self.tid])


class JsWorker:
    """One worker slot: its process (restarted when it dies), link and tasks."""

    def __init__(self, pool: WorkerPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.proc: asyncio.subprocess.Process | None = None
        self.link: MessageLink | None = None
        self.pid: int | None = None
        self.alive = False
        self.restarts = 0
        self.tasks: set[int] = set()
        self.apps_sent: set[str] = set()
        self.root_tids: Iterator[int] = iter(())
        self.ready: asyncio.Future[bool] | None = None  # True: said ready; False: exited first
        self.last_pong = time.monotonic()
        self._ping = 0
        self._watch: asyncio.Task[None] | None = None
        self.lost_reason = ""

    def __repr__(self) -> str:
        return f"<JsWorker {self.index} pid {self.pid} {'up' if self.alive else 'down'} {len(self.tasks)} tasks>"

    def send(self, message: Message) -> None:
        if self.link is not None:
            self.link.send(message)

    def info(self) -> dict[str, Any]:
        return {"index": self.index, "pid": self.pid, "alive": self.alive, "tasks": len(self.tasks),
                "restarts": self.restarts}

    async def start(self) -> None:
        pool = self.pool
        loop = pool.loop
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.ready = loop.create_future()
        self.lost_reason = ""
        link = MessageLink(f"js worker {self.index}", self._on_message, self._on_link_lost, coalesce=True)
        self.link = link
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "switch.tasks.worker", "--fd", str(theirs.fileno()),
                "--index", str(self.index), "--memory-mb", str(pool.memory_mb),
                "--cpu-seconds", str(pool.cpu_seconds), "--log-level", pool.log_level,
                "--log-format", pool.log_format, "--nice", str(pool.nice),
                pass_fds=(theirs.fileno(),), stdin=asyncio.subprocess.DEVNULL)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        await loop.connect_accepted_socket(lambda: link, ours)
        self.pid = self.proc.pid
        self._watch = loop.create_task(self._watch_process(self.proc, link))
        try:
            ready = await asyncio.wait_for(asyncio.shield(self.ready), READY_TIMEOUT)
        except TimeoutError:
            self.kill()
            raise WorkerStartError(f"js worker {self.index} did not start in {READY_TIMEOUT:.0f} s") from None
        if not ready:
            raise WorkerStartError(f"js worker {self.index} exited with {self.proc.returncode} while starting")
        self.alive = True
        self.last_pong = time.monotonic()
        self.apps_sent.clear()
        self.root_tids = iter(pool.tid_block(self))
        low, high = pool.tid_range(self)
        self.send(["tids", low, high])
        log.info("js worker %d started (pid %d)", self.index, self.pid)

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass

    def _on_message(self, message: Message) -> None:
        kind = message[0]
        if kind == "verb":
            self.pool.on_verb(self, message[1], message[2], message[3], message[4])
        elif kind == "ended":
            self.pool.on_task_ended(self, message[1], message[2])
        elif kind == "spawned":
            self.pool.on_spawned(self, message[1], message[2], message[3])
        elif kind == "more-tids":
            low, high = self.pool.tid_range(self)
            self.send(["tids", low, high])
        elif kind == "pong":
            self.last_pong = time.monotonic()
        elif kind == "ready":
            if self.ready is not None and not self.ready.done():
                self.ready.set_result(True)
        else:
            log.warning("js worker %d: unexpected %r", self.index, kind)

    def _on_link_lost(self, reason: str) -> None:
        self.lost_reason = self.lost_reason or reason
        self.kill()  # a worker we cannot talk to is of no use; the process watcher reports it

    async def _watch_process(self, proc: asyncio.subprocess.Process, link: MessageLink) -> None:
        rc = await proc.wait()
        link.close("process exited")
        if self.ready is not None and not self.ready.done():
            self.ready.set_result(False)
        self.pool.on_worker_exit(self, rc)

    def check_alive(self, now: float) -> None:
        """Called every PING_INTERVAL: ping, and kill a worker whose loop stopped answering."""
        if not self.alive:
            return
        if now - self.last_pong > self.pool.stall_timeout:
            self.lost_reason = f"no answer for {now - self.last_pong:.0f} s"
            log.error("js worker %d (pid %s): its loop has not answered for %.0f s; killing it",
                      self.index, self.pid, now - self.last_pong)
            self.kill()
            return
        self._ping += 1
        self.send(["ping", self._ping])


class WorkerPool:
    """The task runtime as the switch sees it (``start_task``, ``post``, ``tasks``), with the
    tasks running in worker processes. ``switchboard`` is set by the switch."""

    def __init__(self, loop: asyncio.AbstractEventLoop, count: int, *, memory_mb: int = 32,
                 cpu_seconds: float = 5.0, stall_timeout: float = 10.0, log_level: str = "info",
                 log_format: str = "text", nice: int = 5) -> None:
        if count < 1:
            raise ValueError("at least one JS worker is needed")
        self.loop = loop
        self.memory_mb = memory_mb
        self.cpu_seconds = cpu_seconds
        # A task may hold its worker for its whole CPU budget: only a longer silence is a fault.
        self.stall_timeout = max(stall_timeout, cpu_seconds * 2 + 2) if cpu_seconds else stall_timeout
        self.log_level = log_level
        self.log_format = log_format
        self.nice = nice  # added to the switch's own niceness by each worker (module doc)
        self.switchboard: Switchboard | None = None
        self.workers = [JsWorker(self, i) for i in range(count)]
        self._tasks: dict[int, TaskRecord] = {}
        self._block_owner: dict[int, JsWorker] = {}
        self._blocks = itertools.count(0)
        self._app_keys: weakref.WeakKeyDictionary[JsApp, str] = weakref.WeakKeyDictionary()
        self._app_serial = itertools.count(1)
        self._background: set[asyncio.Task[Any]] = set()
        self._pinger: asyncio.TimerHandle | None = None
        self.stopping = False
        self.deaths = 0
        # For the metrics, by app name ("-": a task without one): tasks started (roots and
        # spawned), and ended by app and task_outcome().
        self.started: dict[str, int] = {}
        self.ended: dict[tuple[str, str], int] = {}

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        await asyncio.gather(*(w.start() for w in self.workers))
        self._pinger = self.loop.call_later(PING_INTERVAL, self._ping)

    async def shutdown(self, timeout: float = 5.0) -> None:
        """End every task (its leg gets ``task_ended``) and stop the workers."""
        self.stopping = True
        if self._pinger is not None:
            self._pinger.cancel()
        for w in self.workers:
            w.send(["shutdown"])
        procs = [w.proc for w in self.workers if w.proc is not None and w.proc.returncode is None]
        if procs:
            done, pending = await asyncio.wait([self.loop.create_task(p.wait()) for p in procs], timeout=timeout)
            if pending:
                log.error("shutdown: %d js worker(s) did not exit in %.0f s; killing them", len(pending), timeout)
                for w in self.workers:
                    w.kill()
                await asyncio.wait(pending, timeout=2)
        for w in self.workers:
            if w._watch is not None:
                await asyncio.wait([w._watch], timeout=1)
        for task in list(self._background):
            task.cancel()
        if self._tasks:
            log.error("shutdown: %d task(s) still recorded: %s", len(self._tasks), list(self._tasks.values()))

    def _ping(self) -> None:
        now = time.monotonic()
        for w in self.workers:
            w.check_alive(now)
        self._pinger = self.loop.call_later(PING_INTERVAL, self._ping)

    # ------------------------------------------------------------------ registry
    @property
    def tasks(self) -> Mapping[int, TaskRecord]:
        return self._tasks

    def __len__(self) -> int:
        return len(self._tasks)

    def get(self, tid: int) -> TaskRecord | None:
        return self._tasks.get(tid)

    @property
    def available(self) -> bool:
        return any(w.alive for w in self.workers)

    def info(self) -> list[dict[str, Any]]:
        return [w.info() for w in self.workers]

    def tid_block(self, worker: JsWorker) -> range:
        n = next(self._blocks)
        self._block_owner[n] = worker
        return range(max(1, n * TID_BLOCK), (n + 1) * TID_BLOCK)

    def tid_range(self, worker: JsWorker) -> tuple[int, int]:
        block = self.tid_block(worker)
        return block.start, block.stop

    def _next_root_tid(self, worker: JsWorker) -> int:
        tid = next(worker.root_tids, None)
        if tid is None:
            worker.root_tids = iter(self.tid_block(worker))
            tid = next(worker.root_tids)
        return tid

    # ------------------------------------------------------------------ the engine's side
    def start_task(self, app: JsApp, entry: str, param: Any = None, leg: CallControl | None = None) -> TaskRecord:
        """Start a root task in the least loaded live worker. Raises ``CallError`` when no
        worker is up (all restarting)."""
        live = [w for w in self.workers if w.alive]
        if not live:
            raise CallError("no JS worker is running (restarting)", 503)
        worker = min(live, key=lambda w: len(w.tasks))
        key = self._app_key(app)
        if key not in worker.apps_sent:
            sources = {path: f.text for path, f in app.files.items()}
            worker.send(["app", key, app.name, app.version, sources])
            worker.apps_sent.add(key)
        tid = self._next_root_tid(worker)
        record = TaskRecord(self, tid, worker, app, entry, None, leg)
        self._tasks[tid] = record
        worker.tasks.add(tid)
        self._count_start(app)
        fields = None
        if leg is not None:
            fields = dict(leg.request_fields() or {})
        worker.send(["start", tid, key, entry, param, fields])
        if leg is not None:
            record.watch(leg)
        return record

    def _app_key(self, app: JsApp) -> str:
        """A name for one loaded app version, for the workers' app caches."""
        key = self._app_keys.get(app)
        if key is None:
            key = self._app_keys[app] = f"{app.name}@{app.version}#{next(self._app_serial)}"
        return key

    def post(self, tid: int, event: Event) -> bool:
        """Queue ``event`` for task ``tid``; False if there is no such task."""
        record = self._tasks.get(tid)
        if record is None:
            return False
        record.worker.send(["event", tid, events.check(event)])
        return True

    def terminate(self, tid: int) -> bool:
        record = self._tasks.get(tid)
        if record is None:
            return False
        record.worker.send(["terminate", tid])
        return True

    # ------------------------------------------------------------------ from the workers
    def on_spawned(self, worker: JsWorker, tid: int, parent: int | None, entry: str) -> None:
        parent_record = self._tasks.get(parent) if parent is not None else None
        app = parent_record.app if parent_record is not None else None
        self._tasks[tid] = TaskRecord(self, tid, worker, app, entry, parent, None)
        worker.tasks.add(tid)
        self._count_start(app)

    def _count_start(self, app: JsApp | None) -> None:
        name = app.name if app is not None else "-"
        self.started[name] = self.started.get(name, 0) + 1

    def on_task_ended(self, worker: JsWorker, tid: int, error: str | None) -> None:
        record = self._tasks.pop(tid, None)
        worker.tasks.discard(tid)
        if record is not None:
            self._task_ended(record, error)

    def _task_ended(self, record: TaskRecord, error: str | None) -> None:
        key = (record.app.name if record.app is not None else "-", task_outcome(error))
        self.ended[key] = self.ended.get(key, 0) + 1
        if record.leg is not None:
            try:
                record.leg.task_ended(error)
            except Exception:
                log.exception("task %d: leg.task_ended failed", record.tid)
        if self.switchboard is not None:
            try:
                self.switchboard.task_ended(record.tid)
            except Exception:
                log.exception("task %d: switchboard.task_ended failed", record.tid)

    def on_verb(self, worker: JsWorker, rid: int, tid: int, name: str, args: list[Any]) -> None:
        try:
            result = self._run_verb(tid, name, args)
        except CallError as exc:
            worker.send(["reply", rid, False, [str(exc), exc.status]])
            return
        except Exception as exc:
            log.error("task %d: %s: error in the call engine", tid, name, exc_info=True)
            worker.send(["reply", rid, False, [f"internal error ({type(exc).__name__}: {exc})", None]])
            return
        if inspect.isawaitable(result):
            task = self.loop.create_task(self._await_verb(worker, rid, tid, name, result))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        else:
            worker.send(["reply", rid, True, result])

    async def _await_verb(self, worker: JsWorker, rid: int, tid: int, name: str, result: Any) -> None:
        try:
            value = await result
        except CallError as exc:
            worker.send(["reply", rid, False, [str(exc), exc.status]])
        except asyncio.CancelledError:
            worker.send(["reply", rid, False, ["cancelled", None]])
            raise
        except Exception as exc:
            log.error("task %d: %s: error in the call engine", tid, name, exc_info=True)
            worker.send(["reply", rid, False, [f"internal error ({type(exc).__name__}: {exc})", None]])
        else:
            worker.send(["reply", rid, True, value])

    def _run_verb(self, tid: int, name: str, args: list[Any]) -> Any:
        if name == "send_event":
            target, event = args
            return self.post(target, event)
        record = self._tasks.get(tid)
        if record is None:
            raise CallError("the task has ended")
        if name in LEG_METHODS:  # (IsConnected() is answered in the worker: "leg-ended")
            if record.leg is None:
                raise CallError("this task has no call")
            return record.leg.verb(name, *args)
        board = self.switchboard
        if board is None:
            raise CallError("bridging is not available")
        if name == "start_bridge":
            if record.leg is None:
                raise CallError("this task has no call")
            return board.start_bridge(record, record.leg, args[0])
        if name == "start_bridged_call":
            return board.start_bridged_call(record, args[0], args[1])
        if name == "reject_bridge":
            return board.reject_bridge(record, args[0])
        if name == "break_bridge":
            return board.break_bridge(record)
        raise CallError(f"no verb {name!r}")

    def on_worker_exit(self, worker: JsWorker, rc: int) -> None:
        was_alive = worker.alive
        worker.alive = False
        worker.link = None
        for n, owner in list(self._block_owner.items()):
            if owner is worker:
                del self._block_owner[n]
        lost = [self._tasks.pop(tid) for tid in list(worker.tasks) if tid in self._tasks]
        worker.tasks.clear()
        if self.stopping and not lost:
            return
        how = f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exit status {rc}"
        if worker.lost_reason and worker.lost_reason not in ("process exited", "end of stream"):
            how += f", {worker.lost_reason}"
        if was_alive or lost:
            log.error("js worker %d (pid %s) died (%s): %d task(s) ended with it, their calls are hung up%s",
                      worker.index, worker.pid, how, len(lost), "" if self.stopping else "; restarting")
        for record in lost:
            self._task_ended(record, WORKER_DIED)
        if was_alive and not self.stopping:  # a failed restart retries in _restart itself
            self.deaths += 1
            task = self.loop.create_task(self._restart(worker))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _restart(self, worker: JsWorker) -> None:
        delay = RESTART_BACKOFF[0]
        while not self.stopping:
            await asyncio.sleep(delay)
            if self.stopping:
                return
            worker.restarts += 1
            try:
                await worker.start()
                return
            except (WorkerStartError, OSError) as exc:
                log.error("js worker %d: restart failed (%s); retrying in %.1f s", worker.index, exc, delay)
                delay = min(delay * 2, RESTART_BACKOFF[1])


def default_worker_count() -> int:
    """One JS worker per core: JS is where a call's CPU goes (measured in bench/)."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
