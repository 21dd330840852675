"""The narrow interface between the task runtime and the call engine.

Like a small internal ARI: JS verbs become calls on a ``CallControl`` (the task's leg,
implemented by ``switch/calls``), and leg happenings come back as events posted with
``TaskRuntime.post(tid, event)`` (or ``Task.post(event)``). The runtime never imports
SIP or media code, so it could move into worker processes behind this same interface.

Conventions:

* A verb that completes at once returns ``None``; one that must wait (``accept`` until
  the 200 OK is sent, ``play_file`` until the source is decoded and playing) returns an
  awaitable. The task blocks on it (the loop keeps running) and gets its result, or its
  exception thrown into JS as an ``Error``.
* A verb that fails raises ``CallError`` (or the awaitable raises it); its message is
  shown to the script as ``"<Verb>: <message>"``. Any other exception is a bug in the
  engine: it is logged with its traceback and the script gets ``"<Verb>: internal error"``.
* ``task_ended(error)`` is called exactly once when the owner task ends, for whatever
  reason (return, throw, shutdown); the leg must then hang up if it is still up.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, runtime_checkable


class CallError(Exception):
    """A verb failed; the message is shown to the script."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # SIP status when the failure came from one


@runtime_checkable
class CallControl(Protocol):
    """The task's leg. The call verbs (``ProvisionCall``, ``AcceptCall``...) all go through
    ``verb``: each names its method in the export table (``api.JsVerb.leg_method``), so a
    JS worker forwards them by name and the switch's ``LegControl`` answers them; a new
    call verb needs no change here."""

    def verb(self, name: str, *args: Any) -> Any:
        """Run the call verb whose ``leg_method`` is ``name`` (``api.LEG_METHODS``): its
        result, an awaitable to block the task on, or ``CallError``."""
        ...

    def request_fields(self) -> Mapping[str, str] | None:
        """Every field ``request_data`` answers, by lower-case name, when they cannot
        change for the call's life (an inbound INVITE); None otherwise. A JS worker gets
        them with the task's start and answers ``PendingRequestData`` without a round trip."""
        ...

    def is_connected(self) -> bool: ...

    def on_end(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once when the leg ends (``is_connected()`` turns false), at
        once if it has; a JS worker keeps ``IsConnected()`` local this way."""
        ...

    def task_ended(self, error: str | None) -> None:
        """The owner task ended (``error`` is the logged error text if it threw)."""
        ...


class BridgingTask(Protocol):
    """What the switchboard may do with the task that calls a bridging verb."""

    tid: int

    def post(self, event: dict[str, Any]) -> bool: ...

    def attach_leg(self, leg: CallControl | None) -> None: ...


class Switchboard(Protocol):
    """Bridging (the seed's ingress/egress pattern), implemented by ``switch/calls``.

    The runtime reaches it as ``TaskRuntime.switchboard``; like ``CallControl``, a method
    may return an awaitable to block the task, and raises ``CallError`` on failure.
    """

    def start_bridge(self, task: BridgingTask, leg: CallControl, target: int) -> Awaitable[None] | None: ...

    def start_bridged_call(self, task: BridgingTask, dest: str, handle: dict[str, Any]) -> Awaitable[None] | None: ...

    def reject_bridge(self, task: BridgingTask, handle: dict[str, Any]) -> Awaitable[None] | None: ...

    def break_bridge(self, task: BridgingTask) -> Awaitable[None] | None: ...

    def task_ended(self, tid: int) -> None:
        """Every task's end, leg or not (a bridge party that ends breaks its bridge)."""
