"""Events a task reads with ``ReadInput()``.

An event is a plain JSON-able dict with at least ``type``: it crosses into the task's
QuickJS context as JSON, so scripts see a plain object and can test ``evt.type`` or use
the ``Is...Event`` predicates. The constructors below are the only way the call engine
should build one; ``EVENTS`` describes them for the generated docs and ``.d.ts``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

Event = dict[str, Any]


class EventType(enum.StrEnum):
    DISCONNECT = "Disconnect"
    PLAY_FILE_COMPLETED = "PlayFileCompleted"
    DTMF = "Dtmf"
    CALL_COMPLETED = "CallCompleted"
    BREAK_BRIDGE = "BreakBridge"
    BRIDGE = "Bridge"


@dataclass(frozen=True)
class EventField:
    name: str
    ts_type: str
    doc: str


@dataclass(frozen=True)
class EventSpec:
    type: str
    predicate: str | None  # the JS predicate that recognises it, e.g. IsDisconnectEvent
    fields: tuple[EventField, ...]
    doc: str


def check(event: object) -> Event:
    """``event`` if it is one (a dict with a ``type``); TypeError otherwise."""
    if not isinstance(event, dict) or "type" not in event:
        raise TypeError(f"an event is a dict with a 'type', not {event!r}")
    return event


def disconnect(status: int | None = None, reason: str | None = None) -> Event:
    """The task's leg ended: BYE/CANCEL from the far end, or an outbound call failed."""
    return {"type": EventType.DISCONNECT.value, "status": status, "reason": reason}


def play_file_completed(url: str) -> Event:
    return {"type": EventType.PLAY_FILE_COMPLETED.value, "url": url}


def dtmf(digit: str) -> Event:
    return {"type": EventType.DTMF.value, "digit": digit}


def call_completed() -> Event:
    """The outbound call placed by ``StartBridgedCall`` was answered."""
    return {"type": EventType.CALL_COMPLETED.value}


def break_bridge(status: int | None = None, reason: str | None = None) -> Event:
    """The bridge is gone; ``status`` is the callee's final status when its call failed."""
    return {"type": EventType.BREAK_BRIDGE.value, "status": status, "reason": reason}


def bridge_offer(bridge_id: str, sender: int) -> Event:
    """``StartBridge(tid)`` delivered to ``tid``: the event itself is the bridge handle."""
    return {"type": EventType.BRIDGE.value, "bridge": bridge_id, "from": sender}


def user_event(what: str, param: Any, sender: int | None) -> Event:
    """``SendEvent(tid, what, param)``: ``{type: what, param, from: senderTid}``."""
    return {"type": what, "param": param, "from": sender}


EVENTS: tuple[EventSpec, ...] = (
    EventSpec(
        EventType.DISCONNECT.value,
        "IsDisconnectEvent",
        (
            EventField("status", "number | null", "SIP status of a failed call, null for a hangup"),
            EventField("reason", "string | null", "reason phrase or cause, when known"),
        ),
        "The task's leg ended (BYE, CANCEL, or the outbound call failed).",
    ),
    EventSpec(
        EventType.PLAY_FILE_COMPLETED.value,
        "IsPlayFileCompletedEvent",
        (EventField("url", "string", "the url given to PlayFile"),),
        "A `PlayFile` reached the end of the file (never for a looping play).",
    ),
    EventSpec(
        EventType.DTMF.value,
        "IsDtmfEvent",
        (EventField("digit", "string", "one of 0-9, *, #, A-D"),),
        "The caller pressed a key (RFC 4733 telephone-event in RTP, or SIP INFO).",
    ),
    EventSpec(
        EventType.CALL_COMPLETED.value,
        "IsCallCompletedEvent",
        (),
        "The outbound call placed by `StartBridgedCall` was answered.",
    ),
    EventSpec(
        EventType.BREAK_BRIDGE.value,
        "IsBreakBridgeEvent",
        (
            EventField("status", "number | null", "the callee's final status if its call failed"),
            EventField("reason", "string | null", "why the bridge ended, when known"),
        ),
        "The other side tore the bridge down or rejected it, or its leg ended.",
    ),
    EventSpec(
        EventType.BRIDGE.value,
        None,
        (
            EventField("bridge", "string", "opaque bridge id"),
            EventField("from", "number", "tid of the task that called StartBridge"),
        ),
        "A bridge offered by `StartBridge(tid)`: pass the event itself to `StartBridgedCall` "
        "or `RejectBridge`.",
    ),
    EventSpec(
        "<what>",
        None,
        (
            EventField("param", "JsonValue", "the param given to SendEvent"),
            EventField("from", "number | null", "tid of the sending task"),
        ),
        "Sent by another task with `SendEvent(tid, what, param)`; `type` is `what`.",
    ),
)
