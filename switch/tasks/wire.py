"""The one message schema between the switch and its JS workers, and the link carrying it.

The switch process owns SIP, media and every call leg; JS tasks run in worker processes
(``switch/tasks/worker.py``) so that a script's compute, runaway or crash cannot touch
SIP or RTP timing (DESIGN.md §3). This is ``boundary.py``'s interface put on a wire:
verbs go one way as requests, leg happenings come back as events; only JSON-plain
values cross.

Framing: one JSON array per line, ``[kind, field, ...]`` (compact JSON never contains a
raw newline). Measured on the dev box: encoding and decoding both messages of a verb
round trip (request and reply) takes ~9 us of CPU in all; the JSON lines are ~8% of the
switch process's CPU and ~10% of a worker's at 150 calls/s (bench/README.md).

switch -> worker:

========== ====================================== ========================================
kind       fields                                 meaning
========== ====================================== ========================================
app        key, name, version, sources            an app version (sources: path -> text);
                                                  sent once per worker before its first task
start      tid, app key, entry, param, leg        start a root task; leg: null (no call) or
                                                  the fixed request fields of its INVITE
event      tid, event                             queue a task event (a dict with ``type``)
attach     tid                                    the task now has a leg (StartBridgedCall)
leg-ended  tid                                    the task's leg ended: IsConnected() is false
reply      rid, ok, value                         a verb's result, or [message, status]
terminate  tid                                    end a task (TaskTerminated)
tids       low, high                              a block of task ids for Spawn: [low, high)
ping       n                                      liveness probe; answered by pong
shutdown                                          end every task, then exit
========== ====================================== ========================================

worker -> switch:

========== ====================================== ========================================
ready      pid                                    the worker is up
verb       rid, tid, name, args                   a call-control or bridging verb
spawned    tid, parent, entry                     a script started a task (Spawn)
ended      tid, error                             a task ended (error: "file:line: ...")
more-tids                                         the worker's tid block is half used
pong       n                                      answer to ping
========== ====================================== ========================================
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("switch.tasks.wire")

Message = list[Any]

# kind -> number of fields after it
SCHEMA: dict[str, int] = {
    "app": 4,
    "start": 5,
    "event": 2,
    "attach": 1,
    "leg-ended": 1,
    "reply": 3,
    "terminate": 1,
    "tids": 2,
    "ping": 1,
    "shutdown": 0,
    "ready": 1,
    "verb": 4,
    "spawned": 3,
    "ended": 2,
    "more-tids": 0,
    "pong": 1,
}

_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def encode(message: Message) -> bytes:
    return _encode(message).encode() + b"\n"


def decode(line: bytes) -> Message:
    """One line -> a message; ``ValueError`` naming what is wrong with it."""
    try:
        message = json.loads(line)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(message, list) or not message or not isinstance(message[0], str):
        raise ValueError("a message is a JSON array starting with its kind")
    arity = SCHEMA.get(message[0])
    if arity is None:
        raise ValueError(f"unknown message kind {message[0]!r}")
    if len(message) != arity + 1:
        raise ValueError(f"{message[0]!r} takes {arity} field(s), got {len(message) - 1}")
    return message


class MessageLink(asyncio.Protocol):
    """Either end of the switch <-> worker stream socket.

    ``on_message(message)`` is called for every message in order; ``on_lost(reason)``
    once when the stream ends (EOF, error, or a message that breaks the schema: the
    other side is then not a peer we can trust, so the link closes).

    ``coalesce``: messages sent during one loop iteration leave in one write, at the end
    of it (``call_soon``). Each write is a syscall and a wake-up of the other process:
    at 300 calls/s one ``write`` per message was ~8 % of the switch process's CPU
    (py-spy, bench/profile_setup.py). The switch side coalesces: its loop never runs
    long between iterations. A worker does not: a task computing for seconds in the
    same iteration would hold back another task's verb that was already sent."""

    def __init__(self, name: str, on_message: Callable[[Message], None], on_lost: Callable[[str], None],
                 coalesce: bool = False) -> None:
        self.name = name
        self.on_message = on_message
        self.on_lost = on_lost
        self.transport: asyncio.WriteTransport | None = None
        self._buffer = b""
        self._lost = False
        self._coalesce = coalesce
        self._pending: list[bytes] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass
        if self._coalesce:
            self._loop = asyncio.get_running_loop()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        start = 0
        while not self._lost:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            line = buffer[start:end]
            start = end + 1
            try:
                message = decode(line)
            except ValueError as exc:
                self.close(f"bad message from {self.name} ({exc}): {line[:200]!r}")
                return
            self.on_message(message)
        self._buffer = buffer[start:]

    def send(self, message: Message) -> None:
        if self.transport is None or self._lost:
            return
        if not self._coalesce or self._loop is None:
            self.transport.write(encode(message))
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(encode(message))

    def flush(self) -> None:
        """Write what ``send`` coalesced (a no-op when nothing waits)."""
        if self._pending:
            pending, self._pending = self._pending, []
            if self.transport is not None and not self._lost:
                self.transport.write(b"".join(pending))

    async def drain(self, timeout: float) -> None:
        """Wait (up to ``timeout``) until everything sent has left for the socket."""
        self.flush()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (self.transport is not None and not self._lost and self.transport.get_write_buffer_size()
               and loop.time() < deadline):
            await asyncio.sleep(0.01)

    @property
    def closed(self) -> bool:
        return self._lost

    def close(self, reason: str = "closed") -> None:
        self.flush()  # what was sent before the close still goes (the transport drains it)
        if self.transport is not None:
            self.transport.close()
        self._lose(reason)

    def eof_received(self) -> bool:
        self._lose("end of stream")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lose(f"connection lost ({exc})" if exc else "end of stream")

    def _lose(self, reason: str) -> None:
        if not self._lost:
            self._lost = True
            self.on_lost(reason)
