"""A JS worker process: runs tasks for the switch, over the link of ``wire.py``.

``python -m switch.tasks.worker --fd N ...`` is started by ``pool.WorkerPool`` with one
end of a socket pair. Inside, the ordinary ``TaskRuntime`` runs tasks as greenlets on
this process's own loop; what a task does to its call goes to the switch as a ``verb``
request (``RemoteLeg``, ``RemoteSwitchboard``) and blocks the task, not the worker, until
the ``reply``. Events for a task arrive as ``event`` messages.

What stays local, because it needs no call: ``Spawn`` (a task's family lives in its
worker; tids come from blocks the switch hands out, so they are unique switch-wide),
``SendEvent`` to a task of this worker, ``ReadInput``, the fixed fields of the inbound
INVITE (``PendingRequestData``, sent with ``start``).

The worker ignores SIGINT/SIGTERM: the switch decides when tasks end (it drains calls
first; systemd signals the whole cgroup). It exits when told to (``shutdown``) or when
the link to the switch ends (the switch is gone: nobody is left to serve).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import socket
import sys
from functools import partial
from collections.abc import Mapping
from typing import Any

from .. import logs
from .app import JsApp
from .boundary import BridgingTask, CallControl, CallError
from .engine import BindingMismatch, check_binding
from .events import Event
from .heap import SharedRuntime
from .runtime import MiB, TaskRuntime
from .wire import Message, MessageLink

log = logging.getLogger("switch.tasks.worker")


class WorkerHost:
    """The worker's side of the link: starts tasks, routes events and verb replies."""

    def __init__(self, loop: asyncio.AbstractEventLoop, runtime: TaskRuntime, index: int) -> None:
        self.loop = loop
        self.runtime = runtime
        self.index = index
        self.link = MessageLink("switch", self.on_message, self.on_lost)
        self.apps: dict[str, JsApp] = {}
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._next_rid = 1
        self._tids: list[tuple[int, int]] = []  # blocks [low, high) not used up yet
        self._block_size = 0
        self._asked_tids = False
        self._tid_waiters: list[asyncio.Future[int]] = []
        self.done = loop.create_future()
        runtime.allocate_tid = self.allocate_tid
        runtime.switchboard = RemoteSwitchboard(self)
        runtime.forward = self.forward_event
        runtime.on_started = lambda task: self.link.send(["spawned", task.tid, task.parent, task.entry])
        runtime.on_ended = lambda task: self.link.send(["ended", task.tid, task.error])

    # ------------------------------------------------------------------ requests to the switch
    def call(self, tid: int, verb: str, *args: Any) -> asyncio.Future[Any]:
        """Ask the switch to run ``verb`` for task ``tid``; the future gets its result."""
        rid = self._next_rid
        self._next_rid += 1
        fut = self.loop.create_future()
        self._pending[rid] = fut
        self.link.send(["verb", rid, tid, verb, list(args)])
        return fut

    def forward_event(self, tid: int, event: Event) -> asyncio.Future[Any]:
        """SendEvent to a task of another worker: the switch routes it (true if it exists)."""
        return self.call(0, "send_event", tid, event)

    def allocate_tid(self) -> int | asyncio.Future[int]:
        """A tid for Spawn, from the blocks the switch sent. The next block is asked for
        while half of the current one is left, so Spawn only waits (a future) in a burst
        of more spawns than that before the switch's answer is in."""
        while self._tids and self._tids[0][0] >= self._tids[0][1]:
            self._tids.pop(0)
        if not self._asked_tids and sum(h - lo for lo, h in self._tids) * 2 <= self._block_size:
            self._asked_tids = True
            self.link.send(["more-tids"])
        if not self._tids:
            waiter = self.loop.create_future()
            self._tid_waiters.append(waiter)
            return waiter
        low, high = self._tids[0]
        self._tids[0] = (low + 1, high)
        return low

    # ------------------------------------------------------------------ messages from the switch
    def on_message(self, message: Message) -> None:
        kind = message[0]
        if kind == "event":
            task = self.runtime.get(message[1])
            if task is not None:
                self.runtime.post(task.tid, message[2])
        elif kind == "reply":
            _, rid, ok, value = message
            fut = self._pending.pop(rid, None)
            if fut is None or fut.done():
                return
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(CallError(value[0], value[1]))
        elif kind == "start":
            _, tid, key, entry, param, fields = message
            app = self.apps[key]
            leg = RemoteLeg(self, tid, fields) if fields is not None else None
            self.runtime.start_with_tid(tid, app, entry, param, leg)
        elif kind == "attach":
            task = self.runtime.get(message[1])
            if task is not None:
                task.attach_leg(RemoteLeg(self, task.tid, None))
        elif kind == "leg-ended":
            task = self.runtime.get(message[1])
            if isinstance(task.leg if task else None, RemoteLeg):
                task.leg.connected = False  # type: ignore[union-attr]
        elif kind == "app":
            _, key, name, version, sources = message
            self.apps[key] = JsApp.from_sources(name, sources, version, check=False)
        elif kind == "tids":
            low, high = message[1], message[2]
            self._tids.append((low, high))
            self._block_size = high - low
            self._asked_tids = False
            waiters, self._tid_waiters = self._tid_waiters, []
            for waiter in waiters:  # a burst of Spawns outran the blocks: serve them in order
                tid = self.allocate_tid()
                if isinstance(tid, int):
                    waiter.set_result(tid)
                else:
                    tid.add_done_callback(partial(_pass_on, waiter))
        elif kind == "ping":
            self.link.send(["pong", message[1]])
        elif kind == "terminate":
            self.runtime.terminate(message[1])
        elif kind == "shutdown":
            self.loop.create_task(self.shutdown())
        else:
            log.warning("worker %d: unexpected %r from the switch", self.index, kind)

    def on_lost(self, reason: str) -> None:
        if not self.done.done():
            log.info("worker %d: link to the switch ended (%s)", self.index, reason)
            self.loop.create_task(self.shutdown())

    async def shutdown(self) -> None:
        await self.runtime.shutdown()
        await self.link.drain(timeout=2.0)  # every "ended" reaches the switch before we exit
        if not self.done.done():
            self.done.set_result(None)


def _pass_on(waiter: asyncio.Future[int], done: asyncio.Future[int]) -> None:
    waiter.set_result(done.result())


class RemoteLeg:
    """``CallControl`` for a task whose leg lives in the switch: every call verb is a
    request, by its name in the export table (``PendingRequestData`` of an inbound call
    is answered here, from the INVITE's fields that came with the task's start)."""

    def __init__(self, host: WorkerHost, tid: int, fields: Mapping[str, str] | None) -> None:
        self.host = host
        self.tid = tid
        self.fields = fields  # the inbound INVITE's fields, fixed for the call's life
        self.connected = True  # until the switch says "leg-ended"

    def verb(self, name: str, *args: Any) -> Any:
        if name == "request_data" and self.fields is not None:
            return self.fields.get(str(args[0]).lower())
        return self.host.call(self.tid, name, *args)

    def request_fields(self) -> Mapping[str, str] | None:
        return self.fields

    def is_connected(self) -> bool:
        return self.connected

    def on_end(self, callback: Any) -> None:
        raise NotImplementedError("the switch watches the leg itself")

    def task_ended(self, error: str | None) -> None:
        """Nothing to do here: the worker reports every task's end (``ended``)."""


class RemoteSwitchboard:
    """``Switchboard`` whose bridges live in the switch."""

    def __init__(self, host: WorkerHost) -> None:
        self.host = host

    def start_bridge(self, task: BridgingTask, leg: CallControl, target: int) -> Any:
        return self.host.call(task.tid, "start_bridge", target)

    def start_bridged_call(self, task: BridgingTask, dest: str, handle: dict[str, Any]) -> Any:
        return self.host.call(task.tid, "start_bridged_call", dest, handle)

    def reject_bridge(self, task: BridgingTask, handle: dict[str, Any]) -> Any:
        return self.host.call(task.tid, "reject_bridge", handle)

    def break_bridge(self, task: BridgingTask) -> Any:
        return self.host.call(task.tid, "break_bridge")

    def task_ended(self, tid: int) -> None:
        """The switch breaks the task's bridge when it hears ``ended``."""


async def _serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    runtime = TaskRuntime(loop, memory_limit=args.memory_mb * MiB, cpu_seconds=args.cpu_seconds or None)
    host = WorkerHost(loop, runtime, args.index)
    sock = socket.socket(fileno=args.fd)
    await loop.connect_accepted_socket(lambda: host.link, sock)
    gc.collect()
    gc.freeze()  # modules and tables live for ever: keep them out of full collections
    host.link.send(["ready", os.getpid()])
    await host.done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m switch.tasks.worker",
                                 description="A JS worker of the softswitch (started by `softswitch run`).")
    ap.add_argument("--fd", type=int, required=True, help="the socket to the switch")
    ap.add_argument("--index", type=int, default=0)
    ap.add_argument("--memory-mb", type=int, default=32)
    ap.add_argument("--cpu-seconds", type=float, default=5.0)
    ap.add_argument("--log-level", default="info")
    ap.add_argument("--log-format", default="text")
    ap.add_argument("--nice", type=int, default=0, help="added to the niceness inherited from the switch")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logs.setup(args.log_level, args.log_format)
    if args.nice:
        # Below the switch (pool.py says why); an unprivileged process may only go down.
        try:
            os.nice(args.nice)
        except OSError as exc:
            log.warning("js worker %d keeps the switch's CPU priority: nice(%d) failed: %s",
                        args.index, args.nice, exc)
    try:
        check_binding()  # the CPU budget and the bytecode prelude rely on its layout
        SharedRuntime(lambda *args: None, 0, MiB)  # and the shared runtime on the engine's
    except BindingMismatch as exc:
        log.critical("js worker %d cannot run: %s", args.index, exc)
        return 78  # EX_CONFIG
    try:
        import uvloop

        uvloop.run(_serve(args))
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(_serve(args))
    logging.shutdown()
    sys.stderr.flush()
    # Greenlets suspended inside QuickJS frames crash the interpreter's teardown (DESIGN §4).
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
