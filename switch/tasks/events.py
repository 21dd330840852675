"""Events a task reads with ``ReadInput()``.

An event is a plain JSON-able dict with at least ``type``: it crosses into the task's
QuickJS context as JSON, so scripts see a plain object and can test ``evt.type`` or use
the ``Is...Event`` predicates. The constructors below are the only way the call engine
should build one; ``EVENTS`` describes them for the generated docs and ``.d.ts``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

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


def _field(ts_type: str, doc: str, key: str | None = None) -> Any:
    """A dataclass field of an event: its TypeScript type and doc (and its JSON key when
    that is not a Python name, like ``from``)."""
    return field(metadata={"ts": ts_type, "doc": doc, "key": key})


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """One kind of event. The subclasses below are the only way the call engine builds
    one, and ``EVENTS`` (the docs and ``.d.ts``) is generated from them: adding an event
    is one dataclass here."""

    TYPE: ClassVar[str]
    PREDICATE: ClassVar[str | None] = None

    def json(self) -> Event:
        """The event as the task sees it: a plain object with ``type`` first."""
        out: Event = {"type": self.TYPE}
        for f in fields(self):
            out[f.metadata["key"] or f.name] = getattr(self, f.name)
        return out

    @classmethod
    def spec(cls) -> EventSpec:
        return _spec(cls)


@dataclass(frozen=True, slots=True)
class Disconnect(TaskEvent):
    """The task's leg ended (BYE, CANCEL, or the outbound call failed)."""

    TYPE = EventType.DISCONNECT.value
    PREDICATE = "IsDisconnectEvent"
    status: int | None = _field("number | null", "SIP status of a failed call, null for a hangup")
    reason: str | None = _field("string | null", "reason phrase or cause, when known")


@dataclass(frozen=True, slots=True)
class PlayFileCompleted(TaskEvent):
    """A `PlayFile` reached the end of the file (never for a looping play)."""

    TYPE = EventType.PLAY_FILE_COMPLETED.value
    PREDICATE = "IsPlayFileCompletedEvent"
    url: str = _field("string", "the url given to PlayFile")


@dataclass(frozen=True, slots=True)
class Dtmf(TaskEvent):
    """The caller pressed a key (RFC 4733 telephone-event in RTP, or SIP INFO)."""

    TYPE = EventType.DTMF.value
    PREDICATE = "IsDtmfEvent"
    digit: str = _field("string", "one of 0-9, *, #, A-D")


@dataclass(frozen=True, slots=True)
class CallCompleted(TaskEvent):
    """The outbound call placed by `StartBridgedCall` was answered."""

    TYPE = EventType.CALL_COMPLETED.value
    PREDICATE = "IsCallCompletedEvent"


@dataclass(frozen=True, slots=True)
class BreakBridge(TaskEvent):
    """The other side tore the bridge down or rejected it, or its leg ended."""

    TYPE = EventType.BREAK_BRIDGE.value
    PREDICATE = "IsBreakBridgeEvent"
    status: int | None = _field("number | null", "the callee's final status if its call failed")
    reason: str | None = _field("string | null", "why the bridge ended, when known")


@dataclass(frozen=True, slots=True)
class Bridge(TaskEvent):
    """A bridge offered by `StartBridge(tid)`: pass the event itself to `StartBridgedCall`
    or `RejectBridge`."""

    TYPE = EventType.BRIDGE.value
    bridge: str = _field("string", "opaque bridge id")
    sender: int = _field("number", "tid of the task that called StartBridge", key="from")


@dataclass(frozen=True, slots=True)
class UserEvent(TaskEvent):
    """Sent by another task with `SendEvent(tid, what, param)`; `type` is `what`."""

    TYPE = "<what>"
    what: str = _field("string", "")
    param: Any = _field("JsonValue", "the param given to SendEvent")
    sender: int | None = _field("number | null", "tid of the sending task", key="from")

    def json(self) -> Event:
        return {"type": self.what, "param": self.param, "from": self.sender}

    @classmethod
    def spec(cls) -> EventSpec:
        base = _spec(cls)  # (``what`` is the type itself, not a field)
        return EventSpec(base.type, None, tuple(f for f in base.fields if f.name != "what"), base.doc)


def _spec(cls: type[TaskEvent]) -> EventSpec:
    return EventSpec(cls.TYPE, cls.PREDICATE,
                     tuple(EventField(f.metadata["key"] or f.name, f.metadata["ts"], f.metadata["doc"])
                           for f in fields(cls)),
                     " ".join((cls.__doc__ or "").split()))


# The constructors the call engine uses: each returns the plain object the task gets.
def disconnect(status: int | None = None, reason: str | None = None) -> Event:
    return Disconnect(status, reason).json()


def play_file_completed(url: str) -> Event:
    return PlayFileCompleted(url).json()


def dtmf(digit: str) -> Event:
    return Dtmf(digit).json()


def call_completed() -> Event:
    return CallCompleted().json()


def break_bridge(status: int | None = None, reason: str | None = None) -> Event:
    """``status`` is the callee's final status when its call failed."""
    return BreakBridge(status, reason).json()


def bridge_offer(bridge_id: str, sender: int) -> Event:
    """``StartBridge(tid)`` delivered to ``tid``: the event itself is the bridge handle."""
    return Bridge(bridge_id, sender).json()


def user_event(what: str, param: Any, sender: int | None) -> Event:
    return UserEvent(what, param, sender).json()


KINDS: tuple[type[TaskEvent], ...] = (Disconnect, PlayFileCompleted, Dtmf, CallCompleted, BreakBridge, Bridge,
                                      UserEvent)
EVENTS: tuple[EventSpec, ...] = tuple(kind.spec() for kind in KINDS)
