"""The call engine: the user-agent core of the B2BUA (RFC 3261 §8.2, §12, §15).

It receives what the transaction layer reports, decides what each request
means (a new call, a request inside a dialog, a probe, garbage), admits or
sheds new calls, and hands each admitted INVITE to a leg and a JS task.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any
from collections.abc import Callable

from media.playback import PlaybackCache
from media.sdp import NoCommonCodec, SessionDescription, answer_offer

from ..sip.events import AckReceived, AckTimedOut, RequestReceived, ResponseReceived, SipEvent, TransactionTimedOut
from ..sip.message import SipRequest, make_response
from ..sip.transaction import InviteServerTransaction, ServerTransaction
from ..sip.transport import SipTransport
from ..tasks import events
from .admission import Admission
from ..sip.dialog import uri_address
from ..sip.uri import NameAddr, SipUri, UriError
from ..tasks.boundary import CallError
from .inbound import InboundLeg
from .registrar import Registrar
from .leg import Leg

logger = logging.getLogger(__name__)

Addr = tuple[str, int]

# Methods we implement, and methods we know but refuse (405 rather than 501, RFC 3261 §21.4.6).
ALLOWED = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "UPDATE")
KNOWN_NOT_ALLOWED = frozenset(("REGISTER", "SUBSCRIBE", "NOTIFY", "PUBLISH", "MESSAGE", "REFER", "PRACK"))


class CallEngine:
    ALLOW = ", ".join(ALLOWED)

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sip: SipTransport,
        admission: Admission,
        playback: PlaybackCache,
        open_media: Callable[[str], Any],
        start_call: Callable[[InboundLeg], str | None],
        advertise: str | None = None,
        gateways: OutboundRoutes | None = None,
        registrar: Registrar | None = None,
    ) -> None:
        self.loop = loop
        self.sip = sip
        self.admission = admission
        self.playback = playback
        self.open_media = open_media  # async (call_id) -> MediaSession
        self._start_call = start_call  # picks the app, starts the task; returns an error text or None
        self.advertise = advertise
        self.gateways = gateways or OutboundRoutes()
        self.registrar = registrar or Registrar({})
        self._route_cache: dict[str, str] = {}
        self.legs: dict[str, Leg] = {}  # live legs (both directions) by Call-ID + local tag
        self._dialogs: dict[tuple[str, str, str], Leg] = {}
        self._by_invite: dict[int, InboundLeg] = {}  # id(INVITE server txn) -> leg, for CANCEL
        self.calls_started = 0
        sip.user = self

    # ------------------------------------------------------------------ addressing
    def local_ip_for(self, peer_host: str) -> str:
        """The address a peer can reach us at (Contact, Via, SDP): the configured
        advertise address, the listen address, or the interface that routes to it."""
        if self.advertise:
            return self.advertise
        ip = self._route_cache.get(peer_host)
        if ip is None:
            ip = self._route_cache[peer_host] = local_ip_towards(peer_host, self.sip.local_addr[0])
        return ip

    def contact_for(self, local_ip: str, tcp: bool = False) -> str:
        return f"<sip:{local_ip}:{self.sip.local_addr[1]}{';transport=tcp' if tcp else ''}>"

    def via_sent_by(self, local_ip: str) -> str:
        return f"{local_ip}:{self.sip.local_addr[1]}"

    # ------------------------------------------------------------------ registry
    def register(self, leg: Leg) -> None:
        self.legs[leg.key] = leg

    def dialog_established(self, leg: Leg) -> None:
        assert leg.dialog is not None
        self._dialogs[leg.dialog.id] = leg

    def forget(self, leg: Leg) -> None:
        self.legs.pop(leg.key, None)
        if isinstance(leg, InboundLeg):
            self._by_invite.pop(id(leg.txn), None)
        if leg.dialog is not None:
            self._dialogs.pop(leg.dialog.id, None)

    # ------------------------------------------------------------------ outbound routing
    def route(self, dest: str) -> tuple[SipUri, Addr]:
        """Where ``StartBridgedCall(dest)`` goes: the Request-URI and the address to send
        to. ``dest`` is a SIP URI, a To header value (``"Bob" <sip:1000@host>``) or a bare
        number/user. A URI that points at this switch, or a bare number, is routed by its
        user part: a phone registered as that user first, then the configured gateways
        (longest matching prefix, else the default gateway); any other URI is called
        directly."""
        text = dest.strip()
        if ":" in text:
            try:
                uri = NameAddr.parse(text).sip_uri
            except (UriError, ValueError):
                raise CallError(f"StartBridgedCall: {dest!r} is not a SIP URI or number", 400) from None
            if uri.scheme != "tel" and not self._is_us(uri):
                direct = SipUri("sip", uri.user, uri.host, uri.port)
                return direct, uri_address(direct)
            user = uri.user or ""
        else:
            user = text
        if not user or any(c in user for c in " <>@;"):
            raise CallError(f"StartBridgedCall: {dest!r} has no user or number to route", 400)
        bindings = self.registrar.lookup(user)
        if bindings:
            return bindings[-1].target()  # the most recent registration
        gateway = self.gateways.gateway_for(user)
        if gateway is None:
            hint = " (not registered)" if self.registrar.enabled else ""
            raise CallError(f"StartBridgedCall: no route for {user!r}{hint}: configure a gateway "
                            "(--gateway sip:HOST:PORT or [[outbound_routes]] in the config)", 404)
        target = SipUri("sip", user, gateway.host, gateway.port)
        return target, uri_address(target)

    def _is_us(self, uri: SipUri) -> bool:
        # A To header usually has no port (RFC 3261 §19.1.1 keeps it out of To/From), so
        # a port-less URI naming one of our addresses is us, whatever port we listen on.
        if uri.port is not None and uri.port != self.sip.local_addr[1]:
            return False
        host = uri.host.strip("[]")
        return host in ("127.0.0.1", "localhost", self.sip.local_addr[0], self.advertise) or (
            host in self._route_cache.values())

    def live_calls(self) -> int:
        return len(self.legs)

    # ------------------------------------------------------------------ events from SIP
    def handle_sip_event(self, event: SipEvent) -> None:
        if isinstance(event, RequestReceived):
            self._on_request(event.transaction, event.request)
        elif isinstance(event, AckReceived):
            leg = self._dialog_leg(event.request)
            if leg is not None:
                leg.on_ack(event.request)
        elif isinstance(event, (ResponseReceived, TransactionTimedOut)):
            user = getattr(event.transaction, "user", None)
            if user is not None:
                user.on_response(event)
        elif isinstance(event, AckTimedOut):
            leg = self._by_invite.get(id(event.transaction))
            if leg is not None:
                leg.on_ack_timeout()

    def _dialog_leg(self, request: SipRequest) -> InboundLeg | None:
        return self._dialogs.get((request.call_id, request.to_tag or "", request.from_tag or ""))

    def _reply(self, txn: ServerTransaction, request: SipRequest, status: int, reason: str | None = None,
               headers: dict | None = None) -> None:
        self.sip.send_response(txn, make_response(request, status, reason, to_tag=_stateless_tag(request),
                                                  headers=headers))

    def _on_request(self, txn: ServerTransaction, request: SipRequest) -> None:
        method = request.method
        if request.to_tag:
            self._on_in_dialog(txn, request)
            return
        max_forwards = request.get("max-forwards")
        if max_forwards is not None and max_forwards.strip() == "0" and method != "OPTIONS":
            self._reply(txn, request, 483)
            return
        if method == "INVITE":
            assert isinstance(txn, InviteServerTransaction)
            self._on_invite(txn, request)
        elif method == "CANCEL":
            self._on_cancel(txn, request)
        elif method == "OPTIONS":
            # Health probe (e.g. Kamailio's dispatcher): 503 while draining so it moves on.
            if self.admission.draining:
                self._reply(txn, request, 503, headers={"retry-after": "30"})
            else:
                self._reply(txn, request, 200, headers={"allow": self.ALLOW, "accept": "application/sdp"})
        elif method == "BYE" or method in ("INFO", "UPDATE"):
            self._reply(txn, request, 481)
        elif method == "REGISTER" and self.registrar.enabled:
            self.sip.send_response(txn, self.registrar.handle(request, txn.addr, over_tcp=txn.reliable))
        elif method in KNOWN_NOT_ALLOWED:
            self._reply(txn, request, 405, headers={"allow": self.ALLOW})
        else:
            self._reply(txn, request, 501, headers={"allow": self.ALLOW})

    def _on_in_dialog(self, txn: ServerTransaction, request: SipRequest) -> None:
        leg = self._dialog_leg(request)
        if leg is None:
            self._reply(txn, request, 481)
            return
        assert leg.dialog is not None
        error = leg.dialog.check_request(request)
        if error is not None:
            self._reply(txn, request, error, "CSeq out of order")
            return
        method = request.method
        if method == "BYE":
            leg.on_bye(txn, request)
        elif method == "INVITE":
            assert isinstance(txn, InviteServerTransaction)
            leg.on_reinvite(txn, request)
        elif method == "INFO":
            leg.on_info(txn, request)
        elif method in ("OPTIONS", "UPDATE"):
            # UPDATE without SDP is acknowledged; session changes come by re-INVITE.
            self._reply(txn, request, 200, headers={"allow": self.ALLOW})
        elif method in KNOWN_NOT_ALLOWED:
            self._reply(txn, request, 405, headers={"allow": self.ALLOW})
        else:
            self._reply(txn, request, 501, headers={"allow": self.ALLOW})

    def _on_cancel(self, txn: ServerTransaction, cancel: SipRequest) -> None:
        invite_txn = self.sip.layer.find_invite(cancel)
        if invite_txn is None:
            # Too late (the INVITE already has its final response): 200, no effect (§9.2);
            # never seen: 481.
            self._reply(txn, cancel, 200 if self.sip.layer.invite_finished(cancel) else 481)
            return
        self._reply(txn, cancel, 200)  # §9.2: answer the CANCEL itself first
        leg = self._by_invite.get(id(invite_txn))
        if leg is not None:
            leg.on_cancel()

    def _on_invite(self, txn: InviteServerTransaction, invite: SipRequest) -> None:
        refusal = self.admission.refuse_reason(len(self.legs))
        if refusal is not None:
            self.admission.note_refusal(refusal)
            self._reply(txn, invite, 503, f"Service Unavailable ({refusal})",
                        headers={"retry-after": "30" if self.admission.draining else "1"})
            return
        # The scheme from the raw text: a URI of another scheme passed parsing as an
        # absoluteURI (RFC 3261 §25.1) and is refused here, 416 (§21.4.16; RFC 4475 §3.3.2).
        if invite.uri.partition(":")[0].lower() not in ("sip", "sips", "tel"):
            self._reply(txn, invite, 416)
            return
        offer: SessionDescription | None = None
        if invite.body:
            ctype = (invite.get("content-type") or "").split(";")[0].strip().lower()
            if ctype != "application/sdp":
                self._reply(txn, invite, 415, headers={"accept": "application/sdp"})
                return
            try:
                offer = SessionDescription.parse(invite.body)
                answer_offer(offer, "0.0.0.0", 9, 0, 0)  # refuse before any task exists
            except NoCommonCodec as exc:
                self._reply(txn, invite, 488, headers={"warning": f'305 - "{exc}"'})
                return
            except ValueError as exc:
                self._reply(txn, invite, 400, f"Bad SDP ({exc})"[:100])
                return
        leg = InboundLeg(self, txn, invite, offer)
        self.register(leg)
        self._by_invite[id(txn)] = leg
        self.calls_started += 1
        error = self._start_call(leg)
        if error is not None:
            leg.log.error("call %s: %s", leg.call_id, error)
            leg.hang_up(500, error)

    # ------------------------------------------------------------------ shutdown
    def hang_up_all(self, why: str) -> None:
        for leg in list(self.legs.values()):
            if not leg.ended:
                leg.hang_up(503, why)
                leg.notify(events.disconnect(None, why))


class OutboundRoutes:
    """Gateways for numbers: ``(prefix, gateway URI)`` rules, longest prefix first,
    then the default gateway."""

    def __init__(self, default: str | None = None, routes: list[tuple[str, str]] | None = None) -> None:
        self.default = SipUri.parse(default) if default else None
        self.routes = sorted(((p, SipUri.parse(g)) for p, g in routes or []), key=lambda r: -len(r[0]))

    def gateway_for(self, user: str) -> SipUri | None:
        for prefix, gateway in self.routes:
            if user.startswith(prefix):
                return gateway
        return self.default


def local_ip_towards(peer_host: str, bound_ip: str) -> str:
    """The source IP the kernel would use to reach ``peer_host`` (no packet is sent)."""
    if bound_ip not in ("0.0.0.0", "::", ""):
        return bound_ip
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((peer_host, 9))
            return probe.getsockname()[0]
    except OSError:
        return "127.0.0.1"


def _stateless_tag(request: SipRequest) -> str:
    """A To tag for responses that create no dialog; stable per request so a
    retransmitted request gets the same answer."""
    return format(hash((request.call_id, request.from_tag, request.cseq.number)) & 0xFFFFFFFF, "08x")

