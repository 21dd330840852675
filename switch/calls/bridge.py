"""Bridges: the seed's ingress/egress pattern, and the switchboard the JS verbs call.

A ``Bridge`` belongs to one ``Call``: it is offered by the call's ingress task
(``StartBridge(tid)``) to an egress task, which places the outbound leg
(``StartBridgedCall``) into the same call. The rules, chosen so no leg or task is ever
left behind whatever the scripts do:

- the callee's ringing reaches the caller by itself: 180 becomes our 180 (unless one
  was sent), a 183 with SDP becomes our 183 with SDP and its early media is relayed;
- when the callee answers, the caller is answered (never before) and media is relayed
  both ways (``media.relay``);
- the bridge breaks when either task calls ``BreakBridge``/``RejectBridge``, when
  either leg ends, or when either task ends; breaking stops the relay, cancels an
  unanswered outbound leg, and gives the *other* task one ``BreakBridge`` event; when
  the caller's leg ends the whole call stops (``Call.stop``), so an answered callee is
  hung up too;
- the callee's final failure status is kept (``failure_status``) so that an ingress
  that then calls ``Disconnect()`` passes it on (486 stays 486). A callee we cancelled
  ourselves (app timeout) is not a callee failure: the caller gets 480.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from media.relay import MediaRelay

from ..tasks import events
from ..tasks.boundary import BridgingTask, CallControl, CallError
from .call import Call, LegControl, TaskSink
from .inbound import InboundLeg
from .leg import Leg, LegState
from .outbound import OutboundLeg

if TYPE_CHECKING:
    from .engine import CallEngine

logger = logging.getLogger("switch.calls")

_ids = itertools.count(1)


class Bridge:
    def __init__(self, board: Switchboard, call: Call, ingress_tid: int, egress_tid: int) -> None:
        self.board = board
        self.call = call
        self.id = f"b{next(_ids)}"
        self.ingress = call.ingress
        self.ingress_tid = ingress_tid
        self.egress_tid = egress_tid
        self.egress: OutboundLeg | None = None
        self.relay: MediaRelay | None = None
        self.broken = False
        self.failure_status: int | None = None

    def __repr__(self) -> str:
        return f"<Bridge {self.id} {self.ingress_tid}->{self.egress_tid}{' broken' if self.broken else ''}>"

    # ------------------------------------------------------------------ from the callee
    def callee_progress(self, status: int, early_media: bool) -> None:
        ingress = self.ingress
        if self.broken or ingress.ended or ingress.answered:
            return
        if early_media and ingress.sdp.remote_offer is not None:
            self.board.spawn(self._early_media(), f"early media {self.id}")
        elif ingress.state is LegState.INCOMING:
            ingress.provision(self.call.now())
            self.call.pump(ingress)

    async def _early_media(self) -> None:
        try:
            await self.call.early_media(self.ingress, "early media")
        except CallError as exc:
            logger.info("bridge %s: no early media for the caller (%s)", self.id, exc)
            return
        self.try_join()

    def callee_answered(self) -> None:
        if not self.broken:
            self.board.spawn(self._answer_ingress(), f"answer {self.id}")

    async def _answer_ingress(self) -> None:
        try:
            await self.call.answer(self.ingress)
        except CallError as exc:
            logger.info("bridge %s: caller gone before the answer (%s)", self.id, exc)
            self.break_(None, None, "caller gone")
            return
        self.try_join()

    def try_join(self) -> None:
        """Relay media once both sides have negotiated it (early or answered)."""
        a, b = self.ingress, self.egress
        if self.broken or self.relay is not None or b is None:
            return
        media_a, media_b = self.call.media.get(a), self.call.media.get(b)
        if media_a is None or media_b is None or a.sdp.params is None or b.sdp.params is None:
            return
        self.relay = MediaRelay(media_a, media_b)
        logger.debug("bridge %s: media joined (%s <-> %s)", self.id, a.sdp.params.codec, b.sdp.params.codec)

    # ------------------------------------------------------------------ ending
    def leg_ended(self, leg: Leg) -> None:
        """A leg ended: its own task hears of it from the leg (Disconnect), the other
        task gets BreakBridge."""
        if leg is not self.ingress and leg is not self.egress:
            return
        if isinstance(leg, OutboundLeg) and leg.end_status is not None and leg.end_status >= 300:
            if not leg.cancelled_by_us:
                self.failure_status = leg.end_status
        owner = self.ingress_tid if leg is self.ingress else self.egress_tid
        self.break_(owner, self.failure_status, leg.end_reason)

    def break_(self, by_tid: int | None, status: int | None, reason: str | None) -> None:
        """Tear down (idempotent): stop the relay, cancel an unanswered callee, and tell
        every party task other than ``by_tid`` once."""
        if self.broken:
            return
        self.broken = True
        if self.relay is not None:
            logger.info("bridge %s: relayed %s", self.id, self.relay.stats())
            self.relay.stop()
            self.relay = None
        egress = self.egress
        if egress is not None and not egress.ended and not egress.answered:
            self.call.hang_up(egress, None, "bridge broken")
        event = events.break_bridge(status, reason)
        for tid in (self.ingress_tid, self.egress_tid):
            if tid != by_tid:
                self.board.post(tid, event)
        self.board.forget(self)


class Switchboard:
    """Implements ``switch.tasks.boundary.Switchboard`` on top of the call engine."""

    def __init__(self, engine: CallEngine, post: Callable[[int, events.Event], bool]) -> None:
        self.engine = engine
        self.post = post
        self.bridges: dict[str, Bridge] = {}
        self._by_tid: dict[int, Bridge] = {}
        self._background: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        task = self.engine.loop.create_task(coro)
        self._background.add(task)
        task.add_done_callback(lambda t: self._reap(t, what))

    def _reap(self, task: asyncio.Task[None], what: str) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s failed", what, exc_info=task.exception())

    def forget(self, bridge: Bridge) -> None:
        self.bridges.pop(bridge.id, None)
        for tid in (bridge.ingress_tid, bridge.egress_tid):
            if self._by_tid.get(tid) is bridge:
                del self._by_tid[tid]

    # ------------------------------------------------------------------ the verbs
    def start_bridge(self, task: BridgingTask, leg: CallControl, target: int) -> None:
        if not isinstance(leg, LegControl) or not isinstance(leg.leg, InboundLeg):
            raise CallError("StartBridge: only an inbound call can be bridged")
        call = leg.call
        if leg.leg.ended or call.stopping:
            raise CallError(f"StartBridge: the call has ended ({leg.leg.end_reason or call.stop_reason})")
        if call.bridge is not None and not call.bridge.broken:
            raise CallError("StartBridge: this call is already bridged")
        bridge = Bridge(self, call, task.tid, target)
        if not self.post(target, events.bridge_offer(bridge.id, task.tid)):
            raise CallError(f"StartBridge: no task {target}")
        call.bridge = bridge
        self.bridges[bridge.id] = bridge
        self._by_tid[task.tid] = bridge
        self._by_tid[target] = bridge

    async def start_bridged_call(self, task: BridgingTask, dest: str, handle: dict[str, Any]) -> None:
        bridge = self._bridge_for(task, handle, "StartBridgedCall")
        if bridge.egress is not None:
            raise CallError("StartBridgedCall: this bridge already has a call")
        call = bridge.call
        try:
            max_forwards = call.onward_max_forwards()  # 483 before any lookup: a loop goes no further
            route = self.engine.router.route(dest)
            refusal = self.engine.access.check_dial(call.caller, route.target, dest, call.now())
            if refusal is not None:
                raise CallError(f"StartBridgedCall: {refusal.reason}: {dest!r} is a {route.target.value} and "
                                f"the caller ({call.caller}) has no dial_out permission", refusal.status)
            try:
                # A gateway's or URI's servers, located off the loop (RFC 3263: NAPTR, SRV,
                # A/AAAA); an IP with a port returns at once.
                transport, servers = await self.engine.locate(route)
            except CallError as exc:
                raise CallError(f"StartBridgedCall: {exc}", exc.status) from None
        except CallError as exc:
            bridge.failure_status = exc.status  # the caller hears why (404: no such user, 403)
            raise
        if bridge.broken:  # broken while the name was looked up
            raise CallError("StartBridgedCall: the bridge is gone (the caller hung up or it was broken)")
        leg = call.add_egress(bridge, route.uri, servers[0], TaskSink(task.tid, task.post), route.credentials,
                              tls=route.tls or transport == "TLS", alternatives=servers[1:],
                              max_forwards=max_forwards, srtp=route.srtp)
        # The task owns the leg from the start: IsConnected() and Disconnect() see it
        # while the INVITE is being placed.
        task.attach_leg(call.control(leg))
        await call.dial(leg)

    def reject_bridge(self, task: BridgingTask, handle: dict[str, Any]) -> None:
        bridge = self.bridges.get(str(handle.get("bridge")))
        if bridge is None:
            return  # already broken (e.g. the callee failed or the caller hung up): nothing to do
        self._check_party(task, bridge, "RejectBridge")
        bridge.break_(task.tid, bridge.failure_status, "rejected")

    def task_ended(self, tid: int) -> None:
        """Any task ended (with or without a leg): its bridge, if any, breaks."""
        bridge = self._by_tid.get(tid)
        if bridge is not None:
            bridge.break_(tid, bridge.failure_status, "task ended")

    def break_bridge(self, task: BridgingTask) -> None:
        bridge = self._by_tid.get(task.tid)
        if bridge is not None:
            bridge.break_(task.tid, bridge.failure_status, "broken by app")

    def _bridge_for(self, task: BridgingTask, handle: dict[str, Any], verb: str) -> Bridge:
        bridge = self.bridges.get(str(handle.get("bridge")))
        if bridge is None:
            raise CallError(f"{verb}: the bridge is gone (the caller hung up or it was broken)")
        self._check_party(task, bridge, verb)
        return bridge

    @staticmethod
    def _check_party(task: BridgingTask, bridge: Bridge, verb: str) -> None:
        if task.tid != bridge.egress_tid:
            raise CallError(f"{verb}: the bridge was offered to task {bridge.egress_tid}, not {task.tid}")
