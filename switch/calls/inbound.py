"""An inbound call leg (UAS side of the B2BUA): the INVITE that started a ``Main()`` task.

RFC 3261 §13.3 as a UAS, sans-I/O (see ``leg.py``): provisional responses (180, and 183
with our answer for early media, RFC 3960), the 2xx that creates the dialog, the ACK
(which may carry the answer to our offer when the INVITE had none, RFC 3264 §5), the
ACK timeout (§13.3.1.4: no ACK within 64*T1 ends the call with BYE), CANCEL (§9.2: 487
to the INVITE) and hangup in every state (a final response before the 2xx; after it, a
BYE that waits for the ACK, §15).
"""

from __future__ import annotations

from media.sdp import SessionDescription

from ..sip.dialog import Dialog
from ..sip.message import COMPACT_FORMS, SipRequest, SipResponse, make_response
from ..sip.transaction import InviteServerTransaction
from ..tasks.boundary import CallError
from .leg import ALLOW, Confirmed, Leg, LegState, Local, MediaChanged, Respond
from .offer_answer import SDP, OfferAnswer, OfferAnswerError


CALLER_FIELD = "x-softswitch-caller"  # PendingRequestData('X-Softswitch-Caller')


class InboundLeg(Leg):
    kind = "call"
    TRANSITIONS = {
        LegState.INCOMING: frozenset((LegState.EARLY, LegState.ANSWERED, LegState.ENDED)),
        LegState.EARLY: frozenset((LegState.ANSWERED, LegState.ENDED)),
        LegState.ANSWERED: frozenset((LegState.CONFIRMED, LegState.ENDED)),
        LegState.CONFIRMED: frozenset((LegState.ENDED,)),
        LegState.ENDED: frozenset(),
    }

    def __init__(self, txn: InviteServerTransaction, invite: SipRequest, offer: SessionDescription | None,
                 local: Local, now: float, caller: str = "", srtp: str = "optional",
                 transport: str | None = None) -> None:
        # offer None: the INVITE had no SDP; we offer in the 200 and the ACK answers.
        # srtp: the switch's SRTP policy (offer_answer.py); "required" makes that offer SRTP.
        # transport: how the INVITE came (the engine asks the transport); by default TCP
        # when over a connection: our BYE goes back over it.
        super().__init__(invite.call_id, local, LegState.INCOMING,
                         OfferAnswer(local.rtp_ip, offer, srtp=srtp, offer_srtp=srtp == "required"), now,
                         transport or ("TCP" if txn.reliable else "UDP"))
        self.txn = txn
        invite.freeze()  # kept for the whole call: as GC-untracked data
        self.invite = invite
        self.caller = caller  # who the access policy says called: trunk:NAME, user:NAME, local
        self.early_media = False  # a 183 with our SDP went out
        self._bye_after_ack = False

    @property
    def sips(self) -> bool:
        # (a sips: Request-URI that came in the clear gets our plain Contact: ours for
        # SIPS is the TLS port, which that caller did not use)
        return self.transport == "TLS" and self.invite.uri[:5].lower() == "sips:"

    @property
    def finished(self) -> bool:
        return super().finished and not self._bye_after_ack

    # ------------------------------------------------------------------ the task's side
    def request_fields(self) -> dict[str, str]:
        """Every field ``request_data`` answers, by lower-case name: the INVITE's headers
        (multiple values joined with ", ", compact forms too), ``request-uri`` (also
        ``ruri``, ``uri``), ``method`` and ``body``. Fixed for the call's life (the INVITE
        is frozen), so it travels to the task's JS worker once, with the task's start."""
        invite = self.invite
        fields = {name: ", ".join(values) for name, values in invite.headers.items() if values}
        for short, full in COMPACT_FORMS.items():
            if full in fields:
                fields[short] = fields[full]
        fields["request-uri"] = fields["ruri"] = fields["uri"] = invite.uri
        fields["method"] = invite.method
        fields["body"] = invite.body.decode("utf-8", "replace")
        # Ours, never the INVITE's: a header of that name from the caller is overridden.
        fields[CALLER_FIELD] = self.caller
        return fields

    def request_data(self, name: str) -> str | None:
        return self.request_fields().get(name.lower())

    def provision(self, now: float) -> None:
        self.require_live("ProvisionCall")
        if self.state is LegState.INCOMING:
            self._provisional(180)

    def send_early_media(self, now: float) -> None:
        """183 Session Progress with our answer (RFC 3960); media may flow before the 200."""
        if self.early_media or self.answered or self.ended or not self.sdp.ready:
            return
        if self.sdp.remote_offer is None:
            raise CallError("early media needs an SDP offer in the INVITE; call AcceptCall() first")
        self.early_media = True
        self._provisional(183, with_sdp=True)

    def answer(self, now: float) -> None:
        """200 OK with our SDP (media must be open); the dialog exists from here (§12.1.1)."""
        self.require_live("AcceptCall")
        if self.answered:
            return
        assert self.sdp.ready
        body = self.sdp.local_sdp()
        self.dialog = Dialog.as_uas(self.invite, self.local_tag, self.contact)
        if self.over_connection:
            self.dialog.transport, self.dialog.connection = self.transport, self.txn.addr
        self._set_state(LegState.ANSWERED)
        self.answered_at = now
        self.outbox.append(Respond(self.txn, self._response(200, body=body)))

    def reject(self, code: int, reason: str | None, now: float) -> None:
        self.require_live("RejectCall")
        if not 300 <= code <= 699:
            raise CallError(f"RejectCall: code must be 300-699, not {code}")
        if self.answered:
            raise CallError("RejectCall: the call is already answered; use Disconnect()")
        self.outbox.append(Respond(self.txn, self._response(code, reason)))
        self._end(f"rejected {code}", now, code)

    def hang_up(self, unanswered_status: int | None, why: str, now: float) -> None:
        """A final error response if unanswered, else BYE (after the ACK, RFC 3261 §15)."""
        if self.state is LegState.ENDED:
            return
        if not self.answered:
            status = unanswered_status or 480
            self.outbox.append(Respond(self.txn, self._response(status)))
            self._end(why, now, status)
            return
        if self.state is LegState.ANSWERED:
            self._bye_after_ack = True  # sent when the ACK (or the ACK timeout) comes
            self._end(why, now)
            return
        self._end(why, now)
        self._send_bye()

    # ------------------------------------------------------------------ SIP from the peer
    def on_ack(self, ack: SipRequest, now: float) -> None:
        sdp = self.sdp
        if sdp.remote_offer is None and sdp.our_offer is not None and ack.body and sdp.params is None:
            # Late offer (RFC 3264 §5): the INVITE had no SDP, the ACK carries the answer.
            try:
                self.happenings.append(MediaChanged(sdp.take_answer(ack.body)))
            except OfferAnswerError as exc:
                self.log.warning("call %s: unusable SDP answer in ACK (%s); hanging up", self.call_id, exc)
                if self.state is LegState.ANSWERED:
                    self._set_state(LegState.CONFIRMED)
                    self._end("bad SDP in ACK", now, by_peer=True, cause="bad SDP in ACK")
                    self._send_bye()
                return
        if self.state is LegState.ANSWERED:
            self._set_state(LegState.CONFIRMED)
            self.happenings.append(Confirmed())
        elif self._bye_after_ack:
            self._bye_after_ack = False
            self._send_bye()

    def on_ack_timeout(self, now: float) -> None:
        """RFC 3261 §13.3.1.4: no ACK for our 2xx: end the call with BYE."""
        if self._bye_after_ack:
            self._bye_after_ack = False
            self._send_bye()
        elif self.state is LegState.ANSWERED:
            self.log.warning("call %s: no ACK for 200 OK; hanging up", self.call_id)
            self._set_state(LegState.CONFIRMED)
            self._end("no ACK", now, 408, by_peer=True, cause="no ACK")
            self._send_bye()

    def on_cancel(self, now: float) -> None:
        """CANCEL matched our INVITE (the engine already answered the CANCEL itself)."""
        if self.answered or self.state is LegState.ENDED:
            return
        self.outbox.append(Respond(self.txn, self._response(487)))
        self._end("cancelled", now, 487, by_peer=True, cause="CANCEL")

    # ------------------------------------------------------------------ helpers
    def _response(self, status: int, reason: str | None = None, body: bytes = b"") -> SipResponse:
        headers: dict[str, str | list[str]] = {}
        if 100 < status < 300:
            headers["contact"] = self.contact
            headers["allow"] = ALLOW
        if body:
            headers["content-type"] = SDP
        return make_response(self.invite, status, reason, to_tag=self.local_tag, headers=headers, body=body)

    def _provisional(self, status: int, with_sdp: bool = False) -> None:
        body = self.sdp.local_sdp() if with_sdp else b""
        self.outbox.append(Respond(self.txn, self._response(status, body=body)))
        if self.state is LegState.INCOMING:
            self._set_state(LegState.EARLY)
