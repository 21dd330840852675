"""What every call leg shares: the sans-I/O user-agent state of one SIP dialog.

A leg is one dialog (or the attempt at one) seen from our side: ``InboundLeg`` is the
UAS of an INVITE we received (``inbound.py``), ``OutboundLeg`` the UAC of one we sent
(``outbound.py``). Like ``switch/sip/``, a leg does no I/O and keeps no clock: it is
fed SIP messages, the results of the transaction layer and the verbs of its owner, each
with ``now``, and it queues what should happen:

* ``outbox``: messages for the engine to send (``Respond`` on a server transaction,
  ``Send`` as a new client transaction whose answers come back to this leg,
  ``SendStateless`` for an ACK to a 2xx, RFC 3261 §13.2.2.4);
* ``happenings``: what its owner, the ``Call``, must act on (``Progress``,
  ``Confirmed``, ``MediaChanged``, ``KeyPressed``, ``Ended``).

So every SIP rule here (INVITE/200/ACK/BYE, CANCEL races, ACK timeout, forks) is unit
tested on virtual time with no sockets (``tests/unit/test_calls_legs.py``). The engine
is the only thing that touches the transport; the call is the only thing that touches
media and tasks.

A leg is ``ended`` when it is over for its task (``IsConnected()`` false, media stops)
and ``finished`` when its dialog needs nothing more from us (our BYE was answered, the
INVITE we cancelled got its final response): only then does the engine forget it.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import ClassVar

from media.sdp import MediaParams

from ..sip.dialog import Dialog, new_tag
from ..sip.message import SipRequest, SipResponse, make_response
from ..sip.transaction import InviteServerTransaction, ServerTransaction
from ..sip.uri import join_hostport
from ..tasks.boundary import CallError
from .offer_answer import SDP, OfferAnswer, OfferAnswerError

logger = logging.getLogger("switch.calls")

Addr = tuple[str, int]

# Methods we implement (the Allow header), and methods we know but refuse (405, not 501;
# RFC 3261 §21.4.6).
ALLOWED = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "UPDATE")
ALLOW = ", ".join(ALLOWED)
KNOWN_NOT_ALLOWED = frozenset(("REGISTER", "SUBSCRIBE", "NOTIFY", "PUBLISH", "MESSAGE", "REFER", "PRACK"))


@dataclass(frozen=True, slots=True)
class Local:
    """How a leg names us to its peer: the address it can reach us at, our SIP port, and
    the address our SDP names for RTP when it differs (an ``IN IP6`` offer that came over
    IPv4 SIP is answered from our IPv6 address, RFC 4566 §5.7)."""

    ip: str
    sip_port: int
    media_ip: str | None = None

    @property
    def rtp_ip(self) -> str:
        return self.media_ip or self.ip

    def contact(self, transport: str = "UDP", sips: bool = False) -> str:
        """Our Contact on a leg over ``transport``. A SIPS dialog gets a ``sips:`` URI (RFC
        3261 §8.1.1.8, §12.1.1: a SIPS Request-URI makes it a MUST); a ``sip:`` one over TLS
        says ``;transport=tls``, as pjsip and Kamailio do: it asks the peer for TLS on its
        hop to us (the port we name only speaks TLS), without claiming the end-to-end
        security a ``sips:`` URI promises (RFC 5630 §3.1.3 explains that difference)."""
        if sips:
            return f"<sips:{self.sent_by}>"
        return f"<sip:{self.sent_by}{'' if transport == 'UDP' else ';transport=' + transport.lower()}>"

    @property
    def sent_by(self) -> str:
        return join_hostport(self.ip, self.sip_port)  # an IPv6 address in brackets (RFC 5118 §4.4)


# ---------------------------------------------------------------------- outbox
@dataclass(slots=True)
class Respond:
    transaction: ServerTransaction
    response: SipResponse


@dataclass(slots=True)
class Send:
    """A request in a new client transaction. ``track``: its answers come back to the
    leg (``on_response``/``on_timeout``); CANCELs and the BYE to a fork are fire-and-forget."""

    request: SipRequest
    addr: Addr
    track: bool = True


@dataclass(slots=True)
class SendStateless:
    message: SipRequest
    addr: Addr


Outgoing = Respond | Send | SendStateless


# ---------------------------------------------------------------------- happenings
@dataclass(slots=True)
class Progress:
    """The callee rings (180) or sent early media (183 with a usable SDP answer)."""

    status: int
    early_media: bool


@dataclass(slots=True)
class Confirmed:
    """The dialog is up: our 2xx was ACKed (inbound), the callee answered (outbound)."""


@dataclass(slots=True)
class MediaChanged:
    """Negotiated (or renegotiated by a re-INVITE): the media must use these params."""

    params: MediaParams


@dataclass(slots=True)
class KeyPressed:
    """A DTMF key sent in signalling (SIP INFO)."""

    digit: str


@dataclass(slots=True)
class Ended:
    """The leg is over for its task. ``by_peer``: the far end or the network ended it
    (the task gets a Disconnect event with ``status`` and ``cause``); otherwise we did."""

    reason: str  # for the log: "remote hung up", "failed 486 Busy Here", ...
    status: int | None  # the SIP status that ended it, if one did
    by_peer: bool
    cause: str | None = None  # the Disconnect event's reason: "BYE", "CANCEL", a phrase


Happening = Progress | Confirmed | MediaChanged | KeyPressed | Ended


class LegState(enum.Enum):
    CALLING = "Calling"  # outbound: INVITE sent, nothing back yet
    INCOMING = "Incoming"  # inbound: INVITE received, only 100 Trying sent
    EARLY = "Early"  # a provisional (180/183) sent or received
    ANSWERED = "Answered"  # inbound: 200 sent, ACK not yet received
    CONFIRMED = "Confirmed"  # the dialog is up (ACK received / sent)
    ENDED = "Ended"


class Leg:
    TRANSITIONS: ClassVar[dict[LegState, frozenset[LegState]]] = {}
    kind = "leg"

    def __init__(self, call_id: str, local: Local, state: LegState, offer_answer: OfferAnswer,
                 now: float, transport: str = "UDP") -> None:
        self.call_id = call_id
        self.local = local
        # "UDP", or "TCP"/"TLS": the peer is reached over a connection (its own, reused, RFC
        # 5626 style; or one we opened to a TLS route), named in our Via and Contact.
        self.transport = transport
        self.local_tag = new_tag()
        self.state = state
        self.sdp = offer_answer
        self.dialog: Dialog | None = None
        self.outbox: list[Outgoing] = []
        self.happenings: list[Happening] = []
        self.created = now
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        self.end_reason = ""
        self.end_status: int | None = None
        self.ended_by_peer = False  # the far end (or the network) ended it, not we
        self._bye_open = False  # our BYE awaits its final response
        self.log = logging.LoggerAdapter(logger, {"call": call_id})

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.call_id} {self.state.value}>"

    @property
    def key(self) -> str:
        return f"{self.call_id};{self.local_tag}"

    @property
    def over_connection(self) -> bool:
        return self.transport != "UDP"

    @property
    def sips(self) -> bool:
        """The dialog is a SIPS one (its Request-URI is ``sips:``, RFC 3261 §19.1)."""
        return False

    @property
    def contact(self) -> str:
        return self.local.contact(self.transport, self.sips)

    # ------------------------------------------------------------------ state
    def _set_state(self, new: LegState) -> None:
        if new not in self.TRANSITIONS[self.state]:
            raise CallError(f"call is {self.state.value.lower()}, cannot become {new.value.lower()}")
        self.log.debug("%s %s: %s -> %s", self.kind, self.call_id, self.state.value, new.value)
        self.state = new

    @property
    def answered(self) -> bool:
        return self.state in (LegState.ANSWERED, LegState.CONFIRMED)

    @property
    def ended(self) -> bool:
        return self.state is LegState.ENDED

    @property
    def finished(self) -> bool:
        """Ended, and the dialog expects nothing more of us: the engine may forget it."""
        return self.state is LegState.ENDED and not self._bye_open

    def require_live(self, verb: str) -> None:
        if self.state is LegState.ENDED:
            raise CallError(f"{verb}: the call has ended ({self.end_reason or 'hung up'})")

    def take_happenings(self) -> list[Happening]:
        happenings, self.happenings = self.happenings, []
        return happenings

    def take_outbox(self) -> list[Outgoing]:
        outbox, self.outbox = self.outbox, []
        return outbox

    # ------------------------------------------------------------------ the task's side
    def request_fields(self) -> dict[str, str] | None:
        """The request fields, when they are fixed for the call's life (inbound only)."""
        return None

    def request_data(self, name: str) -> str | None:
        raise NotImplementedError

    def media_opened(self, port: int, cn: bool = False) -> None:
        """The call opened this leg's RTP socket on ``port`` (``cn``: it sends RFC 3389
        comfort noise while silent, where the peer takes it)."""
        self.sdp.media_opened(port, cn)
        if self.sdp.params is not None:
            self.happenings.append(MediaChanged(self.sdp.params))

    def hang_up(self, unanswered_status: int | None, why: str, now: float) -> None:
        """End the leg from our side: a final response, CANCEL or BYE as its state needs."""
        raise NotImplementedError

    # ------------------------------------------------------------------ ending
    def _end(self, why: str, now: float, status: int | None = None, by_peer: bool = False,
             cause: str | None = None) -> None:
        self.end_reason = why
        self.end_status = status
        self.ended_by_peer = by_peer
        self.ended_at = now
        self._set_state(LegState.ENDED)
        self.happenings.append(Ended(why, status, by_peer, cause))

    def _send_bye(self) -> None:
        assert self.dialog is not None
        bye = self.dialog.create_request("BYE", self.local.sent_by)
        self.outbox.append(Send(bye, self.dialog.next_hop(bye)))
        self._bye_open = True

    # ------------------------------------------------------------------ SIP from the peer
    def on_bye(self, txn: ServerTransaction, bye: SipRequest, now: float) -> None:
        self.outbox.append(Respond(txn, make_response(bye, 200)))
        if self.state is not LegState.ENDED:
            self._end("remote hung up", now, by_peer=True, cause="BYE")

    def on_response(self, method: str, response: SipResponse, now: float) -> None:
        """A response in one of our client transactions (the subclass has the INVITE)."""
        if method == "BYE" and response.status >= 200:
            self._bye_open = False  # answered, whatever the status: the dialog is gone

    def on_timeout(self, method: str, now: float) -> None:
        """One of our client transactions got no answer (Timer B/F, RFC 3261 §17.1)."""
        if method == "BYE":
            self._bye_open = False

    def on_reinvite(self, txn: InviteServerTransaction, request: SipRequest, now: float) -> None:
        """Session modification (hold/resume, new address, codec change). A re-INVITE
        without SDP gets our current description as the offer (RFC 3261 §14.2); one that
        comes before the dialog is confirmed gets 491 (§14.2, a glare-like overlap)."""
        if self.state is not LegState.CONFIRMED or not self.sdp.ready:
            self.outbox.append(Respond(txn, make_response(request, 491)))
            return
        if request.body:
            try:
                body = self.sdp.new_offer(request.body)
            except OfferAnswerError as exc:
                self.outbox.append(Respond(txn, make_response(request, exc.status, exc.reason,
                                                              headers=exc.headers)))
                return
            assert self.sdp.params is not None
            self.happenings.append(MediaChanged(self.sdp.params))
        else:
            body = self.sdp.current()
        headers: dict[str, str | list[str]] = {"contact": self.contact, "allow": ALLOW,
                                               "content-type": SDP}
        self.outbox.append(Respond(txn, make_response(request, 200, headers=headers, body=body)))

    def on_info(self, txn: ServerTransaction, request: SipRequest, now: float) -> None:
        """SIP INFO: key presses sent in signalling by phones that don't use RFC 4733
        (``application/dtmf-relay`` ``Signal=5``, or ``application/dtmf`` ``5``) become the
        same Dtmf event; any other INFO is acknowledged and ignored."""
        digit = info_digit(request)
        self.outbox.append(Respond(txn, make_response(request, 200)))
        if digit is not None and self.state is not LegState.ENDED:
            self.happenings.append(KeyPressed(digit))


_DTMF_DIGITS = frozenset("0123456789*#ABCD")


def info_digit(request: SipRequest) -> str | None:
    """The key in a DTMF INFO body, or None (RFC 2976 INFO; the de facto dtmf-relay format)."""
    ctype = (request.get("content-type") or "").split(";")[0].strip().lower()
    text = request.body.decode("ascii", "replace")
    if ctype == "application/dtmf-relay":
        for line in text.splitlines():
            key, _, value = line.partition("=")
            if key.strip().lower() == "signal":
                text = value
                break
        else:
            return None
    elif ctype != "application/dtmf":
        return None
    digit = text.strip().upper()
    if digit == "10":  # some phones send the event number for * and #
        digit = "*"
    elif digit == "11":
        digit = "#"
    return digit if digit in _DTMF_DIGITS and len(digit) == 1 else None
