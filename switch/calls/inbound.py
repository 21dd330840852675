"""An inbound call leg (UAS side of the B2BUA): the INVITE that started a ``Main()`` task."""

from __future__ import annotations

from typing import TYPE_CHECKING

from media.sdp import NoCommonCodec, SessionDescription, accept_answer, answer_offer, make_offer
from media.session import MediaSession

from ..sip.dialog import Dialog
from ..sip.message import COMPACT_FORMS, SipRequest, SipResponse, make_response
from ..sip.transaction import InviteServerTransaction
from ..tasks import events
from ..tasks.boundary import CallError
from .leg import SDP, Leg, LegState

if TYPE_CHECKING:
    from .engine import CallEngine


class InboundLeg(Leg):
    """Implements ``CallControl`` for the task running ``Main()`` for this call."""

    kind = "call"
    TRANSITIONS = {
        LegState.INCOMING: frozenset((LegState.EARLY, LegState.ANSWERED, LegState.ENDED)),
        LegState.EARLY: frozenset((LegState.ANSWERED, LegState.ENDED)),
        LegState.ANSWERED: frozenset((LegState.CONFIRMED, LegState.ENDED)),
        LegState.CONFIRMED: frozenset((LegState.ENDED,)),
        LegState.ENDED: frozenset(),
    }

    def __init__(self, engine: CallEngine, txn: InviteServerTransaction, invite: SipRequest,
                 offer: SessionDescription | None) -> None:
        super().__init__(engine, invite.call_id, engine.local_ip_for(txn.addr[0]), LegState.INCOMING)
        self.txn = txn
        invite.freeze()  # kept for the whole call: as GC-untracked data
        self.invite = invite
        self.offer = offer  # None: the INVITE had no SDP; we offer in the 200, ACK answers
        self.our_offer: SessionDescription | None = None
        self.early_media = False  # a 183 with our SDP went out
        self._bye_after_ack = False

    # ------------------------------------------------------------------ CallControl
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
        return fields

    def request_data(self, name: str) -> str | None:
        return self.request_fields().get(name.lower())

    def provision(self) -> None:
        self._require_live("ProvisionCall")
        if self.state is LegState.INCOMING:
            self._send_provisional(180)

    async def accept(self) -> None:
        self._require_live("AcceptCall")
        if self.answered:
            return
        media = await self._open_media()
        if self.state is LegState.ENDED:  # hung up while the socket was opening
            raise CallError(f"AcceptCall: the call has ended ({self.end_reason})")
        if self.answered:  # answered meanwhile (by a bridge)
            return
        body = self._local_sdp(media)
        self.dialog = Dialog.as_uas(self.invite, self.local_tag, self._contact())
        if self.txn.reliable:  # the caller came over TCP: our BYE goes back over its connection
            self.dialog.transport, self.dialog.connection = "TCP", self.txn.addr
        response = self._response(200, body=body)
        self._set_state(LegState.ANSWERED)
        self.engine.sip.send_response(self.txn, response)
        self.engine.dialog_established(self)

    def reject(self, code: int, reason: str | None = None) -> None:
        self._require_live("RejectCall")
        if not 300 <= code <= 699:
            raise CallError(f"RejectCall: code must be 300-699, not {code}")
        if self.answered:
            raise CallError("RejectCall: the call is already answered; use Disconnect()")
        self.engine.sip.send_response(self.txn, self._response(code, reason))
        self._end(f"rejected {code}", code)

    async def _media_for_play(self) -> MediaSession:
        media = await self._open_media()
        self._require_live("PlayFile")
        if not self.answered and not self.early_media:
            if self.offer is None:
                raise CallError("PlayFile: early media needs an SDP offer in the INVITE; call AcceptCall() first")
            self.send_early_media()
        return media

    def codec(self) -> str | None:
        """The codec this call uses, or will use once answered (the caller's first we support)."""
        if self.params is not None:
            return self.params.codec
        if self.offer is None:
            return None
        return answer_offer(self.offer, self.local_ip, 9, 0, 0)[1].codec

    def send_early_media(self) -> None:
        """183 Session Progress with our answer (RFC 3960); media may flow before 200."""
        if not self.early_media and self.media is not None and not self.answered:
            self.early_media = True
            self._send_provisional(183, with_sdp=True)

    def disconnect(self) -> None:
        if self.state is LegState.ENDED:
            return
        # An unanswered call whose bridged callee failed gets the callee's status
        # (486 stays 486); otherwise 480.
        status = self.bridge.failure_status if self.bridge is not None else None
        self.hang_up(status or 480, "disconnected by app")

    # ------------------------------------------------------------------ hang up
    def hang_up(self, unanswered_status: int | None, why: str) -> None:
        """Final error if unanswered, else BYE (after the ACK, RFC 3261 §15)."""
        if self.state is LegState.ENDED:
            return
        if not self.answered:
            status = unanswered_status or 480
            self.engine.sip.send_response(self.txn, self._response(status))
            self._end(why, status)
            return
        if self.state is LegState.ANSWERED:
            self._bye_after_ack = True  # sent when the ACK (or Timer L) comes
            self._end(why, keep_dialog=True)
            return
        self._end(why, keep_dialog=True)
        self._send_bye()

    # ------------------------------------------------------------------ SIP from the peer
    def on_ack(self, ack: SipRequest) -> None:
        if self.offer is None and self.our_offer is not None and ack.body and self.params is None:
            # Late offer (RFC 3264 §5): the INVITE had no SDP, the ACK carries the answer.
            try:
                self.params = accept_answer(self.our_offer, SessionDescription.parse(ack.body))
                if self.media is not None:
                    self.media.configure(self.params)
            except (NoCommonCodec, ValueError) as exc:
                self.log.warning("call %s: unusable SDP answer in ACK (%s); hanging up", self.call_id, exc)
                if self.state is LegState.ANSWERED:
                    self._set_state(LegState.CONFIRMED)
                    self.hang_up(None, "bad SDP in ACK")
                    self.notify(events.disconnect(None, "bad SDP in ACK"))
                return
        if self.state is LegState.ANSWERED:
            self._set_state(LegState.CONFIRMED)
            if self.bridge is not None:
                self.bridge.try_join()
        elif self._bye_after_ack:
            self._bye_after_ack = False
            self._send_bye()

    def on_ack_timeout(self) -> None:
        """RFC 3261 §13.3.1.4: no ACK for our 2xx: end the call with BYE."""
        if self._bye_after_ack:
            self._bye_after_ack = False
            self._send_bye()
        elif self.state is LegState.ANSWERED:
            self.log.warning("call %s: no ACK for 200 OK; hanging up", self.call_id)
            self._set_state(LegState.CONFIRMED)
            self.hang_up(None, "no ACK")
            self.notify(events.disconnect(408, "no ACK"))

    def on_cancel(self) -> None:
        """CANCEL matched our INVITE (the engine already answered the CANCEL 200)."""
        if self.answered or self.state is LegState.ENDED:
            return
        self.engine.sip.send_response(self.txn, self._response(487))
        self._end("cancelled", 487)
        self.notify(events.disconnect(487, "CANCEL"))

    def _session_changed(self, offer: SessionDescription) -> None:
        self.offer = offer  # later answers (and early-media SDP) derive from the new offer

    def _current_sdp(self, media: MediaSession) -> bytes:
        return self._local_sdp(media)

    # ------------------------------------------------------------------ helpers
    async def _open_media(self) -> MediaSession:
        media = await super()._open_media()
        if self.offer is not None and self.params is None:
            _, self.params = answer_offer(self.offer, self.local_ip, media.local_port,
                                          self._sdp_session, self._sdp_version)
        if self.params is not None and media.params is None:
            media.configure(self.params)
        return media

    def _local_sdp(self, media: MediaSession, new_version: bool = False) -> bytes:
        """Our SDP: the answer to the peer's offer, or our offer for a late-offer INVITE.
        The 183 and the 200 carry the same answer (RFC 3261 §13.2.1); a re-INVITE
        answer is a new version (RFC 3264 §8)."""
        if new_version:
            self._sdp_version += 1
        if self.offer is not None:
            answer, _ = answer_offer(self.offer, self.local_ip, media.local_port,
                                     self._sdp_session, self._sdp_version)
            return answer.to_bytes()
        self.our_offer = make_offer(self.local_ip, media.local_port, self._sdp_session,
                                    self._sdp_version)
        return self.our_offer.to_bytes()

    def _response(self, status: int, reason: str | None = None, body: bytes = b"",
                  request: SipRequest | None = None) -> SipResponse:
        request = request or self.invite
        headers: dict[str, str | list[str]] = {}
        if 100 < status < 300:
            headers["contact"] = self._contact()
            headers["allow"] = self.engine.ALLOW
        if body:
            headers["content-type"] = SDP
        return make_response(request, status, reason, to_tag=self.local_tag, headers=headers, body=body)

    def _contact(self) -> str:
        return self.engine.contact_for(self.local_ip, tcp=self.txn.reliable)

    def _send_provisional(self, status: int, with_sdp: bool = False) -> None:
        body = self._local_sdp(self.media) if with_sdp and self.media is not None else b""
        self.engine.sip.send_response(self.txn, self._response(status, body=body))
        if self.state is LegState.INCOMING:
            self._set_state(LegState.EARLY)
