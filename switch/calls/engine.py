"""The call engine: the user-agent core of the B2BUA (RFC 3261 §8.2, §12, §15).

It is the only part of ``switch/calls`` that touches the SIP transport. It receives
what the transaction layer reports, decides what each request means (a new call, a
request inside a dialog, a probe, garbage), admits or sheds new calls, and routes
everything else to the leg it belongs to through three indexes:

* dialogs (Call-ID, local tag, remote tag) -> leg, for in-dialog requests and ACKs;
* INVITE server transactions -> inbound leg, for CANCEL and the ACK timeout;
* client transactions -> (leg, method), for the answers to what a leg sent.

Each input goes to the leg, then the leg's ``Call`` pumps it (``Call.pump``): the
leg's queued messages come back here (``transmit``) and its happenings go to the call.
A leg is forgotten (``forget``) when its call retires it; a call when its last leg is.

Host names are resolved here, off the loop (``switch/sip/resolver.py``), never by the
transport's ``sendto()``. A new call's destination is located before its leg exists
(``locate``, from ``StartBridgedCall``): RFC 3263's NAPTR, SRV and A/AAAA steps
(``switch/sip/locator.py``) give its servers in order; the leg tries the first and fails
over to the next (RFC 3263 §4.3) on a 503, on Timer B, or when a server has not answered
at all within ``failover_timeout`` (an INVITE to a dead server would otherwise wait the
whole Timer B, 32 s, before the next one is tried).

An in-dialog request may still name a host (a Contact or Record-Route with a name, RFC
3261 §12.2.1.1): ``transmit`` sends it at once when the name is cached, else holds it,
and every later request of that leg behind it, until the lookup ends, so the leg's
requests keep their order. A lookup that fails is, for the leg, a 503 to that request
(RFC 3261 §8.1.3.1: a transport failure). A leg over TLS whose connection has closed is
held the same way while a new connection is made (and its peer's certificate checked
again); nothing of a TLS leg is ever sent over UDP.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from media.playback import PlaybackCache
from media.sdp import SessionDescription
from media.ports import NoRtpPorts
from media.session import MediaSession

from ..sip.dns_records import DnsRecords
from ..sip.events import AckReceived, AckTimedOut, RequestReceived, ResponseReceived, SipEvent, TransactionTimedOut
from ..sip.locator import dns_lookup, locate
from ..sip.message import SipRequest, SipResponse, make_response
from ..sip.resolver import ResolveError, Resolver
from ..sip.transaction import ClientTransaction, InviteServerTransaction, ServerTransaction
from ..sip.transport import SipTransport
from ..security.access import AccessPolicy, Refusal
from ..sip.uas import uas_refusal
from ..sip.tls import TlsError
from ..sip.uri import SipUri, join_hostport
from ..tasks.boundary import CallError
from .addressing import LocalAddresses, ip_family
from .admission import Admission
from .call import Call, TaskSink
from .inbound import InboundLeg
from .leg import ALLOW, KNOWN_NOT_ALLOWED, Leg, Local, Respond, Send, SendStateless
from .offer_answer import FAMILIES, SDP, OfferAnswerError, offer_media, parse_offer
from .outbound import OutboundLeg
from .registrar import Registrar
from .routing import OutboundRoutes, Route, Router

logger = logging.getLogger(__name__)

Addr = tuple[str, int]

# The transports an outbound call can be placed on (RFC 3263 §4.1 picks among them): the
# transport opens connections of its own for TLS only; TCP reaches a phone over the
# connection it opened (a registration), never a connection we open.
OUTBOUND_TRANSPORTS = frozenset({"UDP", "TLS"})
FAILOVER_TIMEOUT = 4.0  # s: an INVITE with no response at all from a server moves to the next


class CallEngine:
    ALLOW = ALLOW

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sip: SipTransport,
        admission: Admission,
        playback: PlaybackCache,
        open_media: Callable[[str, socket.AddressFamily], Awaitable[MediaSession]],
        launch: Callable[[Call], TaskSink],
        advertise: str | None = None,
        gateways: OutboundRoutes | None = None,
        registrar: Registrar | None = None,
        access: AccessPolicy | None = None,
        dns_servers: Sequence[str] = (),
        failover_timeout: float = FAILOVER_TIMEOUT,
        srtp: str = "optional",
    ) -> None:
        self.loop = loop
        self.sip = sip
        self.admission = admission
        self.playback = playback
        self._open_media = open_media  # async (call_id, family) -> MediaSession; raises NoRtpPorts
        self._launch = launch  # picks the app and starts the call's task; raises CallError
        self.advertise = advertise
        self.registrar = registrar or Registrar({})
        self.srtp = srtp  # SRTP policy for inbound offers (offer_answer.py): off, optional, required
        # Who may call and dial out (switch/security/access.py); the default trusts this
        # host only: a stranger's INVITE gets 403 before anything else happens.
        self.access = access or AccessPolicy()
        self.router = Router(gateways or OutboundRoutes(), self.registrar, self._is_us)
        self.addresses = LocalAddresses(lambda: self.sip.local_addr, advertise)
        # NAPTR/SRV records (and A/AAAA when dns_servers is set), cached for their TTL.
        self.dns = DnsRecords(dns_servers, clock=loop.time)
        self.resolver = Resolver(loop, lambda: self.addresses.families,
                                 lookup=dns_lookup(self.dns) if self.dns.configured else None)
        self.failover_timeout = failover_timeout
        # INVITEs to a server with another behind it, until their first response (§4.3).
        self._silent: dict[ClientTransaction, asyncio.TimerHandle] = {}
        self._abandoned: set[ClientTransaction] = set()  # INVITEs to servers failed over from
        # In-dialog requests held until their next hop's name is resolved, by leg, in order.
        self._held: dict[Leg, deque[Send | SendStateless]] = {}
        self._lookups: set[asyncio.Task[None]] = set()
        self.calls: dict[str, Call] = {}  # live calls by their ingress leg's key
        self.legs: dict[Leg, Call] = {}  # live legs (both directions) -> their call
        self._dialogs: dict[tuple[str, str, str], Leg] = {}
        self._invites: dict[InviteServerTransaction, InboundLeg] = {}
        self._client: dict[ClientTransaction, tuple[Leg, str]] = {}
        self._txns_of: dict[Leg, list[ClientTransaction]] = {}
        self.calls_started = 0
        # New INVITEs answered with an error before any call existed, by reason (metrics):
        # who calls (Refusal.why), admission (Shed.key), or what the request asks for.
        self.refusals: dict[str, int] = {}
        # Told of every call once it is over, all its legs finished (CDRs, metrics); an
        # observer's error is logged, never the call's problem.
        self.observers: list[Callable[[Call], None]] = []
        sip.user = self

    # ------------------------------------------------------------------ addressing
    def local_for(self, peer_host: str, media_ip: str | None = None, transport: str = "UDP") -> Local:
        """How a leg to ``peer_host`` (an IP) names us (Contact, Via, SDP): the configured
        advertise address, the listen address, or the interface that routes to it
        (``addressing.py``); ``media_ip``: our RTP address when the SDP's family differs;
        over TLS, our TLS port (without a TLS listener, the SIP port: the peer then only
        reaches us over the connection we opened)."""
        ip = self.addresses.sip(peer_host)
        tls = self.sip.tls_addr
        port = tls[1] if transport == "TLS" and tls is not None else self.sip.local_addr[1]
        return Local(ip, port, media_ip if media_ip != ip else None)

    def transport_of(self, addr: Addr) -> str:
        """"TCP"/"TLS" when a connection from ``addr`` is up (a phone registered over it),
        else "UDP"."""
        return self.sip.transport_of(addr)

    async def connect_tls(self, addr: Addr, server_name: str) -> None:
        """A TLS connection to ``addr`` whose certificate names ``server_name`` (a live one
        is reused); CallError 503 saying why not (RFC 3261 §8.1.3.1: a transport error)."""
        try:
            await self.sip.connect_tls(addr, server_name)
        except TlsError as exc:
            raise CallError(f"TLS to {server_name} ({join_hostport(*addr)}) failed: {exc.reason}", 503) from None

    def _is_us(self, uri: SipUri) -> bool:
        # A To header usually has no port (RFC 3261 §19.1.1 keeps it out of To/From), so
        # a port-less URI naming one of our addresses is us, whatever port we listen on.
        ports = (self.sip.local_addr[1], self.sip.tls_addr[1] if self.sip.tls_addr else None)
        if uri.port is not None and uri.port not in ports:
            return False
        return self.addresses.is_ours(uri.host.strip("[]"))

    def route(self, dest: str) -> Route:
        return self.router.route(dest)

    async def locate(self, route: Route) -> tuple[str | None, list[Addr]]:
        """The transport and servers a new leg's INVITE goes to, in the order to try them,
        as IPs of one family we serve and over one transport (the first one's: the leg's
        Via, Contact and SDP are in them): RFC 3263 for a gateway or URI (a ``sips:`` or
        ``;transport=tls`` one, or one whose NAPTR says ``SIPS+D2T``, is TLS), the phone's
        address for a registered user (transport None: the phone's own connection, if
        any, decides). CallError with 404/503 when there is none."""
        if route.server is None:
            return None, [await self.resolve(route.addr)]
        try:
            targets = await locate(route.server, OUTBOUND_TRANSPORTS, self.resolver, self.dns)
        except ResolveError as exc:
            raise CallError(str(exc), exc.status) from None
        first = targets[0]
        family = ip_family(first.address)
        return first.transport, [t.addr for t in targets
                                 if ip_family(t.address) == family and t.transport == first.transport]

    async def resolve(self, addr: Addr) -> Addr:
        """Where a new leg's requests go, as an IP of a family we serve (a host name looked
        up off the loop); CallError with 404/503 when there is none."""
        try:
            return await self.resolver.resolve(addr)
        except ResolveError as exc:
            raise CallError(str(exc), exc.status) from None

    async def open_media(self, call_id: str, family: socket.AddressFamily) -> MediaSession:
        try:
            return await self._open_media(call_id, family)
        except NoRtpPorts as exc:
            raise CallError(str(exc), 503) from None

    # ------------------------------------------------------------------ indexes
    def adopt(self, call: Call, leg: Leg) -> None:
        self.legs[leg] = call
        if isinstance(leg, InboundLeg):
            self._invites[leg.txn] = leg

    def forget(self, leg: Leg) -> None:
        self.legs.pop(leg, None)
        if isinstance(leg, InboundLeg):
            self._invites.pop(leg.txn, None)
        if leg.dialog is not None and self._dialogs.get(leg.dialog.id) is leg:
            del self._dialogs[leg.dialog.id]
        for txn in self._txns_of.pop(leg, ()):
            self._client.pop(txn, None)
            self._abandoned.discard(txn)
            self._heard_from(txn)

    def call_closed(self, call: Call) -> None:
        if self.calls.pop(call.ingress.key, None) is not call:
            return  # (Call._close reports once; observers must never hear of a call twice)
        for observer in self.observers:
            try:
                observer(call)
            except Exception:
                logger.exception("call %s: observer %r failed", call.id, observer)

    def live_calls(self) -> int:
        return len(self.calls)

    def transmit(self, leg: Leg) -> None:
        """Send what ``leg`` queued; index its dialog once it has one. A request whose
        next hop is a name not yet resolved is held (see the module doc)."""
        if leg.outbox:
            for item in leg.take_outbox():
                if isinstance(item, Respond):
                    # §18.2.2: to where the request came from (received/rport), an IP.
                    self.sip.send_response(item.transaction, item.response)
                    continue
                held = self._held.get(leg)
                addr = self.resolver.cached(item.addr) if held is None else None
                if addr is not None and leg.transport == "TLS" and self.sip.transport_of(addr) != "TLS":
                    addr = None  # its TLS connection is gone: held until a new one is up
                if addr is not None:
                    self._send(leg, item, addr)
                elif held is not None:
                    held.append(item)
                else:
                    self._held[leg] = deque((item,))
                    task = self.loop.create_task(self._send_held(leg))
                    self._lookups.add(task)
                    task.add_done_callback(self._lookups.discard)
        dialog = leg.dialog
        if dialog is not None and leg in self.legs and dialog.id not in self._dialogs:
            self._dialogs[dialog.id] = leg

    def _send(self, leg: Leg, item: Send | SendStateless, addr: Addr) -> None:
        if isinstance(item, SendStateless):
            self.sip.send_stateless(item.message, addr)
            return
        txn = self.sip.send_request(item.request, addr)
        if item.track and leg in self.legs:
            self._client[txn] = (leg, item.request.method)
            self._txns_of.setdefault(leg, []).append(txn)
            if isinstance(leg, OutboundLeg) and leg.alternatives and item.request.method == "INVITE":
                self._silent[txn] = self.loop.call_later(self.failover_timeout, self._server_silent, txn)

    def _heard_from(self, txn: ClientTransaction) -> None:
        handle = self._silent.pop(txn, None)
        if handle is not None:
            handle.cancel()

    def _server_silent(self, txn: ClientTransaction) -> None:
        """RFC 3263 §4.3: the server has not answered the INVITE at all (not even 100
        Trying, which a live server sends within 200 ms, RFC 3261 §17.2.1) and another is
        behind it: give this one up and let the leg try the next."""
        self._silent.pop(txn, None)
        entry = self._client.get(txn)
        if entry is None:
            return
        leg, method = entry
        self.sip.layer.abandon(txn)
        self._abandoned.add(txn)  # still ours: a late answer from that server is refused
        leg.log.warning("%s %s: no response from %s:%d within %g s", leg.kind, leg.call_id, *txn.addr,
                        self.failover_timeout)
        leg.on_timeout(method, self.loop.time())
        self._pump(leg)

    async def _send_held(self, leg: Leg) -> None:
        """Resolve the next hop of each request ``leg`` holds, in order, and send it; on a
        TLS leg whose connection closed, connect again first (RFC 3261 §18.1.1: the client
        opens a new connection; we never fall back to UDP). A request whose name does not
        resolve, or whose peer takes no new TLS connection, is answered 503 for the leg
        (§8.1.3.1)."""
        held = self._held[leg]
        try:
            while held:
                item = held[0]
                try:
                    addr = await self.resolver.resolve(item.addr)
                    if leg.transport == "TLS" and self.sip.transport_of(addr) != "TLS":
                        await self.connect_tls(addr, _server_name(leg, addr))
                except (ResolveError, CallError) as exc:
                    held.popleft()
                    self._unreachable(leg, item, exc)
                    continue
                held.popleft()
                self._send(leg, item, addr)
        finally:
            self._held.pop(leg, None)
        self._pump(leg)  # what the leg queued meanwhile, or made of a failure

    def _unreachable(self, leg: Leg, item: Send | SendStateless, exc: ResolveError | CallError) -> None:
        request = item.message if isinstance(item, SendStateless) else item.request
        leg.log.warning("%s %s: %s not sent: %s", leg.kind, leg.call_id, request.method, exc)
        if isinstance(item, Send) and item.track and leg in self.legs:
            leg.on_response(request.method, make_response(request, 503, f"Service Unavailable ({exc})"[:120]),
                            self.loop.time())

    def _pump(self, leg: Leg) -> None:
        call = self.legs.get(leg)
        if call is not None:
            call.pump(leg)

    # ------------------------------------------------------------------ events from SIP
    def handle_sip_event(self, event: SipEvent) -> None:
        now = self.loop.time()
        if isinstance(event, RequestReceived):
            self._on_request(event.transaction, event.request, now)
        elif isinstance(event, AckReceived):
            leg = self._dialog_leg(event.request)
            if isinstance(leg, InboundLeg):
                leg.on_ack(event.request, now)
                self._pump(leg)
        elif isinstance(event, ResponseReceived):
            txn, response = event.transaction, event.response
            entry = self._client.get(txn)
            if entry is None:
                return
            leg, method = entry
            self._heard_from(txn)
            if txn in self._abandoned:
                self._late_response(txn, leg, response)
                return
            if response.status >= 200 and (method != "INVITE" or response.status >= 300):
                self._untrack(txn, leg)  # done; a 2xx to an INVITE may be retransmitted
            leg.on_response(method, response, now)
            self._pump(leg)
        elif isinstance(event, TransactionTimedOut):
            entry = self._client.get(event.transaction)
            if entry is not None:
                leg, method = entry
                self._heard_from(event.transaction)
                self._untrack(event.transaction, leg)
                leg.on_timeout(method, now)
                self._pump(leg)
        elif isinstance(event, AckTimedOut):
            inbound = self._invites.get(event.transaction)
            if inbound is not None:
                inbound.on_ack_timeout(now)
                self._pump(inbound)

    def _late_response(self, txn: ClientTransaction, leg: Leg, response: SipResponse) -> None:
        """A response from a server the leg failed over from (``_server_silent``): a 1xx
        changes nothing; a failure was ACKed by the transaction; a 2xx made a dialog we
        do not want, which the leg ACKs and hangs up (RFC 3261 §13.2.2.4, as for a fork)."""
        if response.status < 200:
            return
        self._abandoned.discard(txn)
        self._untrack(txn, leg)
        if response.status < 300 and isinstance(leg, OutboundLeg):
            leg.refuse_late_answer(response)
            self._pump(leg)

    def _untrack(self, txn: ClientTransaction, leg: Leg) -> None:
        self._abandoned.discard(txn)
        del self._client[txn]
        txns = self._txns_of.get(leg)
        if txns is not None:
            txns.remove(txn)

    def _dialog_leg(self, request: SipRequest) -> Leg | None:
        return self._dialogs.get((request.call_id, request.to_tag or "", request.from_tag or ""))

    def _refused(self, txn: ServerTransaction, request: SipRequest) -> bool:
        """RFC 3261 §8.2.2: a Request-URI scheme we do not serve (416) or a Require we do
        not support (420 with Unsupported) is refused before anything acts on it."""
        refusal = uas_refusal(request)
        if refusal is None:
            return False
        status, headers = refusal
        self._reply(txn, request, status, headers=dict(headers) or None)
        return True

    def _reply(self, txn: ServerTransaction, request: SipRequest, status: int, reason: str | None = None,
               headers: dict[str, str | list[str]] | None = None) -> None:
        self.sip.send_response(txn, make_response(request, status, reason, to_tag=_stateless_tag(request),
                                                  headers=headers))

    def _on_request(self, txn: ServerTransaction, request: SipRequest, now: float) -> None:
        method = request.method
        if method != "INVITE" and self._refused(txn, request):  # (an INVITE: after who calls)
            return
        if request.to_tag:
            if method == "INVITE" and self._refused(txn, request):
                return
            self._on_in_dialog(txn, request, now)
            return
        # Max-Forwards: 0 is no reason to refuse here: we are the request's endpoint (the
        # UAS of its leg), and RFC 4475 §3.3.11 has an endpoint process it as if it were
        # positive; it counts when the call would go further (Call.onward_max_forwards: 483).
        if method == "INVITE":
            assert isinstance(txn, InviteServerTransaction)
            self._on_invite(txn, request, now)
        elif method == "CANCEL":
            self._on_cancel(txn, request, now)
        elif method == "OPTIONS":
            # Health probe (e.g. Kamailio's dispatcher): 503 while draining so it moves on.
            if self.admission.draining:
                self._reply(txn, request, 503, headers={"retry-after": "30"})
            else:
                self._reply(txn, request, 200, headers={"allow": ALLOW, "accept": SDP})
        elif method == "BYE" or method in ("INFO", "UPDATE"):
            self._reply(txn, request, 481)
        elif method == "REGISTER" and self.registrar.enabled:
            self.sip.send_response(txn, self.registrar.handle(request, txn.addr, over_tcp=txn.reliable))
        elif method in KNOWN_NOT_ALLOWED:
            self._reply(txn, request, 405, headers={"allow": ALLOW})
        else:
            self._reply(txn, request, 501, headers={"allow": ALLOW})

    def _on_in_dialog(self, txn: ServerTransaction, request: SipRequest, now: float) -> None:
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
            leg.on_bye(txn, request, now)
        elif method == "INVITE":
            assert isinstance(txn, InviteServerTransaction)
            leg.on_reinvite(txn, request, now)
        elif method == "INFO":
            leg.on_info(txn, request, now)
        elif method in ("OPTIONS", "UPDATE"):
            # UPDATE without SDP is acknowledged; session changes come by re-INVITE.
            self._reply(txn, request, 200, headers={"allow": ALLOW})
            return
        elif method in KNOWN_NOT_ALLOWED:
            self._reply(txn, request, 405, headers={"allow": ALLOW})
            return
        else:
            self._reply(txn, request, 501, headers={"allow": ALLOW})
            return
        self._pump(leg)

    def _on_cancel(self, txn: ServerTransaction, cancel: SipRequest, now: float) -> None:
        invite_txn = self.sip.layer.find_invite(cancel)
        if invite_txn is None:
            # Too late (the INVITE already has its final response): 200, no effect (§9.2);
            # never seen: 481.
            self._reply(txn, cancel, 200 if self.sip.layer.invite_finished(cancel) else 481)
            return
        self._reply(txn, cancel, 200)  # §9.2: answer the CANCEL itself first
        leg = self._invites.get(invite_txn)
        if leg is not None:
            leg.on_cancel(now)
            self._pump(leg)

    def _count_refusal(self, why: str) -> None:
        self.refusals[why] = self.refusals.get(why, 0) + 1

    def _on_invite(self, txn: InviteServerTransaction, invite: SipRequest, now: float) -> None:
        # Who calls comes first (RFC 3261 §26.3.2.2 for the 407): a stranger learns nothing
        # else about us, and no leg, task or media exists for it.
        caller = self.access.check_invite(invite, txn.addr, now)
        if isinstance(caller, Refusal):
            self._count_refusal(caller.why)
            self._reply(txn, invite, caller.status, caller.reason, headers=caller.headers or None)
            return
        refusal = self.admission.refuse_reason(len(self.calls))
        if refusal is not None:
            self._count_refusal(refusal.key)
            self.admission.note_refusal(refusal)
            self._reply(txn, invite, 503, f"Service Unavailable ({refusal.text})",
                        headers={"retry-after": "30" if self.admission.draining else "1"})
            return
        # A URI of another scheme passed parsing as an absoluteURI (RFC 3261 §25.1) and is
        # refused here, 416 (§21.4.16; RFC 4475 §3.3.2); so is a Require we lack (420).
        if self._refused(txn, invite):
            self._count_refusal("unsupported")
            return
        if not _accepts_sdp(invite.get("accept")):
            # §21.4.7: every answer of ours carries SDP, which the caller says it cannot take
            # (RFC 4475 §3.3.13).
            self._count_refusal("not-acceptable")
            self._reply(txn, invite, 406, headers={"accept": SDP, "warning": '399 - "we answer with application/sdp"'})
            return
        offer = None
        transport = self.sip.transport_of(txn.addr) if txn.reliable else "UDP"
        if invite.body:
            ctype = (invite.get("content-type") or "").split(";")[0].strip().lower()
            if ctype != SDP:
                self._count_refusal("unsupported-media-type")
                self._reply(txn, invite, 415, headers={"accept": SDP})
                return
            try:
                # Refused before any call or task exists; in a family we serve (RFC 4566 §5.7).
                offer = parse_offer(invite.body, self.addresses.families, self.srtp)
                local = self._local_for_offer(txn.addr[0], offer, transport)
            except OfferAnswerError as exc:
                self._count_refusal("bad-sdp")
                self._reply(txn, invite, exc.status, exc.reason, headers=exc.headers)
                return
        else:
            local = self.local_for(txn.addr[0], transport=transport)  # we offer, in the caller's family
        leg = InboundLeg(txn, invite, offer, local, now, caller=str(caller), srtp=self.srtp, transport=transport)
        call = Call(self, leg, caller, self.access.call_started(caller))
        self.calls[leg.key] = call
        self.adopt(call, leg)
        self.calls_started += 1
        call.start(self._launch)

    def _local_for_offer(self, caller: str, offer: SessionDescription, transport: str = "UDP") -> Local:
        """Our addresses for a caller whose offer is in a family we serve: the answer's
        c= is our address in the offer's family, facing its c= address (RFC 4566 §5.7;
        it may differ from the family the SIP came in). 488 with Warning 301 when we
        have none (this host has no IPv6 address, say)."""
        addrtype, peer_media = offer_media(offer, self.srtp)
        if addrtype is None:
            return self.local_for(caller, transport=transport)
        media_ip = self.addresses.media(FAMILIES[addrtype], peer_media, caller)
        if media_ip is None:
            raise OfferAnswerError(488, f"no {addrtype} address of ours reaches {peer_media}", 301)
        return self.local_for(caller, media_ip, transport)

    # ------------------------------------------------------------------ shutdown
    def stop_all(self, why: str) -> list[asyncio.Future[None]]:
        """Stop every call (503 for the unanswered, BYE for the rest; their tasks get a
        Disconnect event); the futures are done when each call's dialogs are finished."""
        return [call.stop(why, 503, tell_tasks=True) for call in list(self.calls.values())]

    def close(self) -> None:
        """After the drain: stop waiting for name lookups (their requests are not sent)."""
        for task in list(self._lookups):
            task.cancel()
        self._held.clear()  # (a task cancelled before its first step never runs its finally)
        for handle in self._silent.values():
            handle.cancel()
        self._silent.clear()
        self.resolver.close()
        self.dns.close()


def _server_name(leg: Leg, addr: Addr) -> str:
    """The name a TLS peer's certificate must carry: the host we called (RFC 5922 §7.2), or
    for a caller's leg its address (a phone is reached again at its Contact's address)."""
    if isinstance(leg, OutboundLeg):
        return leg.target.host.strip("[]")
    return addr[0]


def _accepts_sdp(accept: str | None) -> bool:
    """An absent Accept means application/sdp (RFC 3261 §20.1); else it must be listed,
    or covered by application/* or */*."""
    if accept is None or not accept.strip():
        return True
    types = {item.split(";")[0].strip().lower() for item in accept.split(",")}
    return bool(types & {SDP, "application/*", "*/*"})


def _stateless_tag(request: SipRequest) -> str:
    """A To tag for responses that create no dialog; stable per request so a
    retransmitted request gets the same answer."""
    return format(hash((request.call_id, request.from_tag, request.cseq.number)) & 0xFFFFFFFF, "08x")


__all__ = ["CallEngine", "OutboundRoutes"]
