"""A call: the one owner of its legs, their media, its bridge and its task sinks.

An inbound INVITE makes a ``Call`` around its ``InboundLeg`` (the ingress); a bridge adds
an ``OutboundLeg`` (egress) placed by another task. The call owns, and alone ends:

* its legs (sans-I/O UA state, ``leg.py``): every leg input goes through ``pump``, which
  hands the leg's outbox to the engine and acts on what the leg reports;
* one ``MediaSession`` per leg (RTP socket), opened on first need, closed when the
  leg ends; and the bridge's ``MediaRelay``;
* the task sinks: each leg's events go to the task that owns that leg.

``stop(reason)`` is the one way a call ends: it breaks the bridge, hangs up every leg
still up (final response, CANCEL or BYE as each needs) and returns a future that is done
when every dialog is finished. It runs once, whichever way the end comes: the caller
hangs up, CANCEL, the task returns or throws, its JS worker dies, no RTP port, no ACK,
SIGTERM. When the last leg is finished the engine forgets the call; nothing of it is
left (``tests/e2e`` asserts 0 calls, legs, tasks and RTP ports after every test).

``LegControl`` is the task's handle on its leg: the ``CallControl`` the JS verbs call.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from media.session import MediaSession

from ..security.access import Caller, CallToken
from ..sip.message import SipRequest
from ..sip.uri import NameAddr, SipUri
from ..tasks import events
from ..tasks.api import LEG_METHODS
from ..tasks.boundary import CallError
from .addressing import ip_family
from .inbound import InboundLeg
from .leg import Confirmed, Ended, Happening, KeyPressed, Leg, MediaChanged, Progress
from .outbound import Credentials, OutboundLeg, callee_codecs

if TYPE_CHECKING:
    from .bridge import Bridge
    from .engine import CallEngine

logger = logging.getLogger("switch.calls")

_CDR_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


@dataclass(slots=True)
class TaskSink:
    """Where a leg's events go: the task that owns the leg."""

    tid: int
    post: Callable[[events.Event], bool]


@dataclass(frozen=True, slots=True)
class AppInfo:
    """The app (and the commit of it) serving the call: PlayFile paths resolve in ``root``."""

    name: str
    version: str | None
    root: Path | None


class Call:
    def __init__(self, engine: CallEngine, ingress: InboundLeg, caller: Caller | None = None,
                 counted: CallToken | None = None) -> None:
        self.engine = engine
        self.uid = uuid.uuid4().hex  # the call's id in its records (every leg's CDR carries it)
        self.caller = caller  # who called (trunk, user, local): what it may dial out to
        self._counted = counted  # against its trunk's or user's max_calls, until closed
        self.id = ingress.call_id
        self.ingress = ingress
        self.legs: list[Leg] = [ingress]
        self.app: AppInfo | None = None
        self.bridge: Bridge | None = None
        self.media: dict[Leg, MediaSession] = {}
        # What the call's record needs once it is over (CDRs, metrics: engine observers):
        self.history: list[Leg] = [ingress]  # every leg it ever owned, in order
        self.rtp_stats: dict[Leg, dict[str, Any]] = {}  # each leg's media figures at its end
        self.task_errors: dict[Leg, str] = {}  # the owner task's error (file:line: message)
        self.cdr_fields: dict[Leg, dict[str, str]] = {}  # SetCdrField(name, value) by the leg's task
        self.sinks: dict[Leg, TaskSink] = {}
        self._controls: dict[Leg, LegControl] = {}
        self._opening: dict[Leg, asyncio.Task[MediaSession]] = {}
        self.stopping = False
        self.stop_reason = ""
        self.closed: asyncio.Future[None] = engine.loop.create_future()

    def __repr__(self) -> str:
        return f"<Call {self.id} {len(self.legs)} leg(s){' stopping' if self.stopping else ''}>"

    @property
    def task_id(self) -> int | None:
        sink = self.sinks.get(self.ingress)
        return sink.tid if sink is not None else None

    def control(self, leg: Leg) -> LegControl:
        control = self._controls.get(leg)
        if control is None:
            control = self._controls[leg] = LegControl(self, leg)
        return control

    def now(self) -> float:
        return self.engine.loop.time()

    # ------------------------------------------------------------------ life
    def start(self, launch: Callable[[Call], TaskSink]) -> None:
        """Start the task that runs ``Main()`` for this call; a call no task can serve
        (no app, no JS worker) gets 500 with the reason logged."""
        try:
            self.sinks[self.ingress] = launch(self)
        except CallError as exc:
            self.ingress.log.error("call %s: %s", self.id, exc)
            self.stop(str(exc), 500)

    def stop(self, reason: str, status: int | None = None, tell_tasks: bool = False) -> asyncio.Future[None]:
        """End everything the call owns (once); done when every dialog is finished.
        ``status``: the final response for a leg still unanswered (default 480).
        ``tell_tasks``: tasks whose leg is still up get a Disconnect event (shutdown)."""
        if not self.stopping:
            self.stopping = True
            self.stop_reason = reason
            if self.bridge is not None:
                self.bridge.break_(None, self.bridge.failure_status, reason)
            now = self.now()
            for leg in list(self.legs):
                if not leg.ended:
                    leg.hang_up(status, reason, now)
                    if tell_tasks:  # before pump(): the leg's retirement may close the call
                        self.post(leg, events.disconnect(None, reason))
                    self.pump(leg)
            if not self.legs:
                self._close()
        return self.closed

    def _close(self) -> None:
        if self.closed.done():
            return  # (the last leg retired inside stop()'s own loop: closed already)
        if self._counted is not None:
            self._counted.release()
        for opening in self._opening.values():
            opening.cancel()
        if not self.closed.done():
            self.closed.set_result(None)
        self.engine.call_closed(self)
        # A LegControl, a task's sink (-> its record -> its LegControl) and the bridge
        # all refer back to the call: dropping the call's side of those cycles, now that
        # the observers have read it, lets its whole graph (legs, dialogs, SDP, media) go
        # by reference count once the engine and the tasks let go, not by the cyclic GC,
        # whose passes over ~50-90 objects per call were 25-80 ms pauses at 400 calls/s.
        self._controls.clear()
        self.sinks.clear()
        self.bridge = None

    # ------------------------------------------------------------------ legs
    def pump(self, leg: Leg) -> None:
        """After any input to ``leg``: send what it queued, act on what it reported, and
        forget it once its dialog is finished."""
        while True:
            self.engine.transmit(leg)
            happenings = leg.take_happenings()
            if not happenings:
                break
            for happening in happenings:
                self._on(leg, happening)
        if leg.finished:
            self._retire(leg)

    def _on(self, leg: Leg, happening: Happening) -> None:
        bridge = self.bridge
        if isinstance(happening, MediaChanged):
            media = self.media.get(leg)
            if media is not None:  # (a relay, if any, keeps running over the new params)
                media.configure(happening.params)
        elif isinstance(happening, Progress):
            if bridge is not None and leg is bridge.egress:
                bridge.callee_progress(happening.status, happening.early_media)
        elif isinstance(happening, Confirmed):
            if isinstance(leg, OutboundLeg):
                self.post(leg, events.call_completed())
                if bridge is not None and leg is bridge.egress:
                    bridge.callee_answered()
            elif bridge is not None:
                bridge.try_join()
        elif isinstance(happening, KeyPressed):
            self.post(leg, events.dtmf(happening.digit))
        elif isinstance(happening, Ended):
            self._leg_ended(leg, happening)

    def _leg_ended(self, leg: Leg, ended: Ended) -> None:
        media = self.media.pop(leg, None)
        age = self.now() - leg.created
        if media is not None:
            stats = self.rtp_stats[leg] = media.stats()
            media.close()
            keys = leg.sdp.params.srtp if leg.sdp.params is not None else None
            srtp = f" srtp={keys.suite} srtp_dropped={stats.get('srtp_dropped')}" if keys is not None else ""
            leg.log.info("%s %s ended (%s) after %.1f s; rtp sent %s/%s B, received %s/%s B; %s%s",
                         leg.kind, leg.call_id, ended.reason, age, stats["packets_sent"], stats["bytes_sent"],
                         stats["packets_received"], stats["bytes_received"], _quality(stats), srtp)
        else:
            leg.log.info("%s %s ended (%s)", leg.kind, leg.call_id, ended.reason)
        control = self._controls.get(leg)
        if control is not None:  # before any event about it: IsConnected() is already false
            control.ended()
        if ended.by_peer:
            self.post(leg, events.disconnect(ended.status, ended.cause))
        if self.bridge is not None:
            self.bridge.leg_ended(leg)
        if leg is self.ingress:
            self.stop(ended.reason)

    def _retire(self, leg: Leg) -> None:
        if leg not in self.legs:
            return
        self.legs.remove(leg)
        media = self.media.pop(leg, None)
        if media is not None:
            self.rtp_stats.setdefault(leg, media.stats())
            media.close()
        self.engine.forget(leg)
        if not self.legs:
            self._close()

    def post(self, leg: Leg, event: events.Event) -> None:
        sink = self.sinks.get(leg)
        if sink is not None:
            sink.post(event)

    # ------------------------------------------------------------------ media
    async def open_media(self, leg: Leg, verb: str) -> MediaSession:
        """The leg's RTP session, opened on first need (one socket, however many ask)."""
        media = self.media.get(leg)
        if media is not None:
            return media
        leg.require_live(verb)
        opening = self._opening.get(leg)
        if opening is None:
            opening = self._opening[leg] = self.engine.loop.create_task(self._open(leg))
            opening.add_done_callback(_retrieve)
        try:
            return await asyncio.shield(opening)
        except CallError as exc:
            raise CallError(f"{verb}: {exc}", exc.status) from None

    def post_play_completed(self, leg: Leg, url: str) -> None:
        self.post(leg, events.play_file_completed(url))

    def _dtmf(self, leg: Leg, digit: str) -> None:
        self.post(leg, events.dtmf(digit))

    async def _open(self, leg: Leg) -> MediaSession:
        try:
            # The socket's family is that of the address our SDP names (RFC 4566 §5.7).
            media = await self.engine.open_media(leg.call_id, ip_family(leg.local.rtp_ip) or socket.AF_INET)
        except CallError:
            self._opening.pop(leg, None)  # a later verb may try again
            raise
        if leg.ended or leg not in self.legs:  # hung up while the socket was opening
            media.close()
            raise CallError(f"the call has ended ({leg.end_reason or 'hung up'})")
        self.media[leg] = media
        self._opening.pop(leg, None)  # done: later verbs find self.media (a Task kept is ~0.8 KB)
        media.on_dtmf = partial(self._dtmf, leg)  # (a partial: 2 GC-tracked objects, a closure 4)
        leg.media_opened(media.local_port, media.comfort_noise)
        self.pump(leg)
        return media

    async def early_media(self, leg: InboundLeg, verb: str) -> MediaSession:
        """The caller's media before the answer: 183 with our SDP (RFC 3960)."""
        media = await self.open_media(leg, verb)
        leg.require_live(verb)
        if not leg.answered and not leg.early_media:
            try:
                leg.send_early_media(self.now())
            except CallError as exc:
                raise CallError(f"{verb}: {exc}") from None
            self.pump(leg)
        return media

    async def answer(self, leg: InboundLeg, verb: str = "AcceptCall") -> None:
        leg.require_live(verb)
        if leg.answered:
            return
        await self.open_media(leg, verb)
        leg.require_live(verb)
        if not leg.answered:  # (a bridge may have answered it meanwhile)
            leg.answer(self.now())
            self.pump(leg)

    def hang_up(self, leg: Leg, unanswered_status: int | None, why: str) -> None:
        leg.hang_up(unanswered_status, why, self.now())
        self.pump(leg)

    # ------------------------------------------------------------------ bridging
    def onward_max_forwards(self) -> int:
        """The Max-Forwards of the INVITE this call sends on: the caller's, decremented
        (RFC 7332 §3: a B2BUA passes the hop count on, so a routing loop through it ends
        instead of ringing forever); 70 if the caller sent none (RFC 2543). CallError 483
        when it is 0: the call may go no further (RFC 3261 §16.3 item 3)."""
        text = self.ingress.invite.get("max-forwards")
        if text is None:
            return 70
        hops = int(text.strip() or 0)  # (the parser checked it: 0-255)
        if hops <= 0:
            raise CallError("StartBridgedCall: the caller's INVITE came with Max-Forwards: 0, so it may "
                            "go no further (a routing loop?)", 483)
        return hops - 1

    def add_egress(self, bridge: Bridge, target: SipUri, addr: tuple[str, int], sink: TaskSink,
                   credentials: Credentials | None = None, tls: bool = False,
                   alternatives: Sequence[tuple[str, int]] = (), max_forwards: int = 70,
                   srtp: bool = False) -> OutboundLeg:
        """The bridge's outbound leg to ``target`` at ``addr`` (an IP: ``CallEngine.locate``
        looked its name up), owned by the task behind ``sink``: the caller's identity, the
        caller's codec offered first, media in ``addr``'s family. ``tls``: the route asks
        for TLS (``dial`` connects first); else a connection the callee opened is reused.
        ``alternatives``: the servers to fail over to, in order (RFC 3263 §4.3); ``srtp``:
        offer RTP/SAVP (the route says so)."""
        if self.stopping:
            raise CallError(f"StartBridgedCall: the call has ended ({self.stop_reason})")
        ingress = self.ingress
        caller = NameAddr.parse(ingress.invite.headers["from"][0])
        transport = "TLS" if tls else self.engine.transport_of(addr)
        leg = OutboundLeg(target, addr, caller, callee_codecs(ingress.sdp.predicted_codec()),
                          self.engine.local_for(addr[0], transport=transport), self.now(), transport=transport,
                          credentials=credentials, alternatives=alternatives, max_forwards=max_forwards,
                          srtp=srtp)
        self.legs.append(leg)
        self.history.append(leg)
        self.engine.adopt(self, leg)
        self.sinks[leg] = sink
        bridge.egress = leg
        return leg

    async def dial(self, leg: OutboundLeg) -> None:
        """Connect over TLS if the leg goes over it, open the leg's media, then send its
        INVITE. When the TLS handshake fails (an untrusted certificate, say) or no RTP port
        is free, the leg ends at once (503 for the bridge, logged) and the verb fails."""
        try:
            if leg.transport == "TLS":
                await self.engine.connect_tls(leg.addr, leg.target.host.strip("[]"))
                leg.require_live("StartBridgedCall")
            await self.open_media(leg, "StartBridgedCall")
        except CallError as exc:
            if not leg.ended:
                leg.log.warning("outbound %s: cannot call %s: %s", leg.call_id, leg.target, exc)
            leg.abandon(f"cannot place the call: {exc}", exc.status or 503, self.now())
            self.pump(leg)
            raise
        if not leg.ended:
            leg.start(self.now())
            self.pump(leg)

    # ------------------------------------------------------------------ the control API
    def info(self) -> dict[str, Any]:
        """What ``GET /calls`` shows for this call."""
        ingress, now = self.ingress, self.now()
        app = self.app
        return {
            "id": self.id,
            "app": app.name if app else None,
            "commit": app.version if app else None,
            "from": _header_uri(ingress.invite, "from"),
            "to": _header_uri(ingress.invite, "to"),
            "request_uri": str(ingress.invite.request_uri),
            "state": ingress.state.name.lower(),
            "age_s": round(now - ingress.created, 1),
            "task": self.task_id,
            "caller": str(self.caller) if self.caller is not None else None,
            "legs": [self.leg_info(leg) for leg in self.legs],
        }

    def leg_info(self, leg: Leg) -> dict[str, Any]:
        media = self.media.get(leg)
        params = leg.sdp.params
        sink = self.sinks.get(leg)
        return {
            "kind": leg.kind,
            "sip_call_id": leg.call_id,
            "state": leg.state.name.lower(),
            "task": sink.tid if sink is not None else None,
            "codec": params.codec if params is not None else None,
            # the SRTP suite (RFC 4568) when the leg's media is encrypted, else None
            "srtp": params.srtp.suite if params is not None and params.srtp is not None else None,
            "rtp": media.stats() if media is not None else None,
        }


def _header_uri(invite: SipRequest, name: str) -> str:
    try:
        return str((invite.from_ if name == "from" else invite.to).uri)
    except Exception:  # a header we could route on but not parse: show it raw
        return str(invite.get(name))


def _quality(stats: dict[str, Any]) -> str:
    """The call-end line's media quality: what we measured of the peer's RTP (loss,
    jitter), what its RTCP said of ours, the round trip, and our RTCP and keepalive."""

    def show(value: Any, unit: str = "") -> str:
        return "-" if value is None else f"{value:g}{unit}" if isinstance(value, float) else f"{value}{unit}"

    fraction = stats.get("peer_fraction_lost")
    share = f" ({100 * fraction:.1f}%)" if fraction is not None else ""
    return (f"loss_rx={show(stats.get('lost'))} jitter_rx={show(stats.get('jitter_ms'), 'ms')} "
            f"loss_peer={show(stats.get('peer_cumulative_lost'))}{share} "
            f"jitter_peer={show(stats.get('peer_jitter_ms'), 'ms')} rtt={show(stats.get('rtt_ms'), 'ms')} "
            f"rtcp={show(stats.get('rtcp_sent'))}/{show(stats.get('rtcp_received'))} "
            f"keepalive={show(stats.get('keepalive_packets'))}")


def _retrieve(task: asyncio.Task[MediaSession]) -> None:
    """Mark a media opening's failure as seen: the verb that awaited it already got it,
    or nobody waits any more (the call ended)."""
    if not task.cancelled():
        task.exception()


class LegControl:
    """``switch.tasks.boundary.CallControl`` for the task that owns one leg: the verbs."""

    _NOT_OUTBOUND = {
        "ProvisionCall": "ProvisionCall: this task's call is outbound",
        "AcceptCall": "AcceptCall: this task's call is outbound (it is answered by the callee)",
        "RejectCall": "RejectCall: this task's call is outbound; use Disconnect()",
    }

    def __init__(self, call: Call, leg: Leg) -> None:
        self.call = call
        self.leg = leg
        self._end_watchers: list[Callable[[], None]] = []

    def __repr__(self) -> str:
        return f"<LegControl {self.leg!r}>"

    def verb(self, name: str, *args: Any) -> Any:
        """A call verb, by the method its export-table entry names (``LEG_METHODS``)."""
        if name not in LEG_METHODS:
            raise CallError(f"no call verb {name!r}")
        return getattr(self, name)(*args)

    def _inbound(self, verb: str) -> InboundLeg:
        if not isinstance(self.leg, InboundLeg):
            raise CallError(self._NOT_OUTBOUND[verb])
        return self.leg

    def request_fields(self) -> dict[str, str] | None:
        return self.leg.request_fields()

    def request_data(self, name: str) -> str | None:
        return self.leg.request_data(name)

    def provision(self) -> None:
        leg = self._inbound("ProvisionCall")
        leg.provision(self.call.now())
        self.call.pump(leg)

    def accept(self) -> Awaitable[None]:
        return self.call.answer(self._inbound("AcceptCall"))

    def reject(self, code: int, reason: str | None = None) -> None:
        leg = self._inbound("RejectCall")
        leg.reject(code, reason, self.call.now())
        self.call.pump(leg)

    async def play_file(self, url: str, loop: bool = False) -> None:
        leg, call = self.leg, self.call
        leg.require_live("PlayFile")
        if call.app is None or call.app.root is None:
            raise CallError("PlayFile: this call belongs to no app")
        audio = await call.engine.playback.get(url, call.app.root)
        leg.require_live("PlayFile")
        if isinstance(leg, InboundLeg):
            media = await call.early_media(leg, "PlayFile")
        else:
            media = call.media.get(leg)  # type: ignore[assignment]
            if media is None or leg.sdp.params is None:
                raise CallError("PlayFile: the call has no media yet")
        leg.require_live("PlayFile")
        media.play(audio, loop, partial(call.post_play_completed, leg, url))

    def set_cdr_field(self, name: str, value: str) -> None:
        if not _CDR_FIELD.match(name):
            raise CallError(f"SetCdrField: name must be letters, digits and _ (up to 64), not {name[:80]!r}")
        if len(value) > 1024:
            raise CallError(f"SetCdrField: value is {len(value)} characters; at most 1024")
        fields = self.call.cdr_fields.setdefault(self.leg, {})
        if name not in fields and len(fields) >= 32:
            raise CallError("SetCdrField: a record holds at most 32 fields of the app's")
        fields[name] = value

    def stop_play(self) -> None:
        media = self.call.media.get(self.leg)
        if media is not None:
            media.stop_play()

    def is_connected(self) -> bool:
        return not self.leg.ended

    def on_end(self, callback: Callable[[], None]) -> None:
        if self.leg.ended:
            callback()
        else:
            self._end_watchers.append(callback)

    def ended(self) -> None:
        watchers, self._end_watchers = self._end_watchers, []
        for callback in watchers:
            callback()

    def disconnect(self) -> None:
        leg = self.leg
        if leg.ended:
            return
        # An unanswered caller whose bridged callee failed gets the callee's status (486
        # stays 486); otherwise 480. An outbound leg is cancelled or hung up.
        status: int | None = None
        if isinstance(leg, InboundLeg):
            bridge = self.call.bridge
            status = (bridge.failure_status if bridge is not None else None) or 480
        self.call.hang_up(leg, status, "disconnected by app")

    def task_ended(self, error: str | None) -> None:
        """The owner task ended: its leg hangs up if it is still up (500 if it threw)."""
        if error:
            self.call.task_errors[self.leg] = error
        if not self.leg.ended:
            self.call.hang_up(self.leg, 500 if error else 480, "script error" if error else "task ended")
