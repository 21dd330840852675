"""An outbound call leg (UAC side of the B2BUA), placed by ``StartBridgedCall``.

RFC 3261 §13.2 and §9.1, as a UAC: INVITE with our SDP offer, provisional responses
(early dialog, early media from a 183's SDP), ACK for the 2xx (its own transaction,
sent by us; the transaction layer ACKs failures), re-ACK of retransmitted 2xx, CANCEL
when we give up before the answer (only after a provisional arrived, §9.1), and the
race where the callee answers a call we just cancelled: ACK it, then BYE.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from media.sdp import NoCommonCodec, SessionDescription, accept_answer, make_offer
from media.session import MediaSession

from ..sip.dialog import Dialog
from ..sip.events import ResponseReceived, TransactionTimedOut
from ..sip.message import SipRequest, SipResponse
from ..sip.transaction import ClientTransaction, make_cancel, new_branch
from ..sip.uri import NameAddr, SipUri
from ..tasks import events
from ..tasks.boundary import CallError
from .leg import SDP, Leg, LegState

if TYPE_CHECKING:
    from .engine import CallEngine


class OutboundLeg(Leg):
    kind = "outbound"
    TRANSITIONS = {
        LegState.CALLING: frozenset((LegState.EARLY, LegState.CONFIRMED, LegState.ENDED)),
        LegState.EARLY: frozenset((LegState.CONFIRMED, LegState.ENDED)),
        LegState.CONFIRMED: frozenset((LegState.ENDED,)),
        LegState.ENDED: frozenset(),
    }

    def __init__(self, engine: CallEngine, target: SipUri, addr: tuple[str, int], caller: NameAddr | None,
                 codecs: tuple[str, ...]) -> None:
        super().__init__(engine, f"{new_branch()[7:]}@softswitch", engine.local_ip_for(addr[0]),
                         LegState.CALLING)
        self.target = target
        self.addr = addr
        self.caller = caller
        self.codecs = codecs
        self.invite: SipRequest | None = None
        self.our_offer: SessionDescription | None = None
        self.txn: ClientTransaction | None = None
        self.provisional_seen = False
        self._cancel_pending = False
        self.cancelled_by_us = False

    # ------------------------------------------------------------------ placing the call
    async def start(self) -> None:
        media = await self._open_media()
        if self.state is LegState.ENDED:
            raise CallError(f"StartBridgedCall: the call has ended ({self.end_reason})")
        self.our_offer = make_offer(self.local_ip, media.local_port, self._sdp_session,
                                    self._sdp_version, codecs=self.codecs)
        self.invite = self._build_invite(self.our_offer.to_bytes())
        self.log.info("outbound %s: calling %s via %s:%d", self.call_id, self.target, *self.addr)
        self.txn = self.engine.sip.send_request(self.invite, self.addr)
        self.txn.user = self  # type: ignore[attr-defined]

    @property
    def over_tcp(self) -> bool:
        """The callee is reached over a TCP connection it opened (it registered over TCP):
        our Via, Contact and every request of the dialog go over that connection."""
        return self.addr in self.engine.sip.streams

    def _build_invite(self, body: bytes) -> SipRequest:
        tcp = self.over_tcp
        contact = self.engine.contact_for(self.local_ip, tcp=tcp)
        from_user = (self.caller.sip_uri.user if self.caller else None) or "softswitch"
        display = f'"{self.caller.display}" ' if self.caller and self.caller.display else ""
        headers: dict[str, list[str]] = {
            "via": [f"SIP/2.0/{'TCP' if tcp else 'UDP'} {self.engine.via_sent_by(self.local_ip)};"
                    f"branch={new_branch()};rport"],
            "max-forwards": ["70"],
            "from": [f"{display}<sip:{from_user}@{self.local_ip}>;tag={self.local_tag}"],
            "to": [f"<{self.target}>"],
            "call-id": [self.call_id],
            "cseq": ["1 INVITE"],
            "contact": [contact],
            "allow": [self.engine.ALLOW],
            "content-type": [SDP],
        }
        return SipRequest("INVITE", str(self.target), headers, body)

    # ------------------------------------------------------------------ CallControl
    def request_data(self, name: str) -> str | None:
        if self.invite is None:
            return None
        if name.lower() in ("request-uri", "ruri", "uri"):
            return self.invite.uri
        values = self.invite.get_all(name)
        return ", ".join(values) if values else None

    def provision(self) -> None:
        raise CallError("ProvisionCall: this task's call is outbound")

    def accept(self) -> None:
        raise CallError("AcceptCall: this task's call is outbound (it is answered by the callee)")

    def reject(self, code: int, reason: str | None = None) -> None:
        raise CallError("RejectCall: this task's call is outbound; use Disconnect()")

    def disconnect(self) -> None:
        self.hang_up(None, "disconnected by app")

    def hang_up(self, unanswered_status: int | None, why: str) -> None:
        """CANCEL if unanswered (RFC 3261 §9.1), else BYE."""
        if self.state is LegState.ENDED:
            return
        if self.state is LegState.CONFIRMED:
            self._end(why, keep_dialog=True)
            self._send_bye()
            return
        self.cancelled_by_us = True
        if self.provisional_seen:
            self._send_cancel()
        else:
            self._cancel_pending = True  # §9.1: a CANCEL must wait for a provisional
        self._end(why, keep_dialog=True)

    def _current_sdp(self, media: MediaSession) -> bytes:
        return make_offer(self.local_ip, media.local_port, self._sdp_session, self._sdp_version,
                          codecs=self.codecs).to_bytes()

    def _send_cancel(self) -> None:
        assert self.invite is not None
        if self.txn is None or self.txn.terminated:
            return
        cancel = make_cancel(self.invite)
        txn = self.engine.sip.send_request(cancel, self.addr)
        txn.user = _Ignore  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ responses
    def on_response(self, event: ResponseReceived | TransactionTimedOut) -> None:
        if event.transaction is not self.txn:
            super().on_response(event)  # our BYE
            return
        if isinstance(event, TransactionTimedOut):
            self._failed(408, "no answer from the callee (timeout)")
            return
        response = event.response
        status = response.status
        if status < 200:
            self._on_provisional(response)
        elif status < 300:
            self._on_answer(response)
        else:
            self._failed(status, response.reason)

    def _on_provisional(self, response: SipResponse) -> None:
        if response.status == 100:
            return
        first = not self.provisional_seen
        self.provisional_seen = True
        if self._cancel_pending:
            self._cancel_pending = False
            self._send_cancel()
            return
        if self.state is LegState.ENDED:
            return
        early_media = self._take_answer(response) if response.body else False
        if self.state is LegState.CALLING:
            self._set_state(LegState.EARLY)
        if self.bridge is not None and (first or early_media):
            self.bridge.callee_progress(self, response.status, early_media)

    def _on_answer(self, response: SipResponse) -> None:
        assert self.invite is not None
        if self.dialog is not None:
            if response.to_tag == self.dialog.remote_tag:
                self._send_ack()  # §13.2.2.4: a retransmitted 2xx is ACKed again
            else:
                self._refuse_fork(response)
            return
        self.dialog = Dialog.as_uac(self.invite, response, self.engine.contact_for(self.local_ip, tcp=self.over_tcp))
        if self.over_tcp:  # ACK and BYE go over the callee's connection too
            self.dialog.transport, self.dialog.connection = "TCP", self.addr
        self._send_ack()
        if self.state is LegState.ENDED:
            # Answered after we gave up (CANCEL crossed the 200): end it properly.
            self.engine.dialog_established(self)
            self._send_bye()
            return
        if response.body and not self._take_answer(response):
            self.engine.dialog_established(self)
            self._send_bye()
            self._end("callee answered with unusable SDP", 488)
            self.notify(events.disconnect(488, "callee's SDP answer has no common codec"))
            return
        self._set_state(LegState.CONFIRMED)
        self.engine.dialog_established(self)
        self.log.info("outbound %s: answered by %s", self.call_id, response.headers.get("to", ["?"])[0])
        self.notify(events.call_completed())
        if self.bridge is not None:
            self.bridge.callee_answered(self)

    def _refuse_fork(self, response: SipResponse) -> None:
        """§13.2.2.4: a forking proxy let a second callee answer. We keep the first
        dialog; the second is ACKed (as the RFC requires) and then hung up with BYE."""
        assert self.invite is not None
        extra = Dialog.as_uac(self.invite, response, self.engine.contact_for(self.local_ip))
        via = self.engine.via_sent_by(self.local_ip)
        ack = extra.create_request("ACK", via, cseq=self.invite.cseq.number)
        self.engine.sip.send_stateless(ack, extra.next_hop(ack))
        bye = extra.create_request("BYE", via)
        txn = self.engine.sip.send_request(bye, extra.next_hop(bye))
        txn.user = _Ignore  # type: ignore[attr-defined]
        self.log.info("outbound %s: second answer (forked, tag %s) ACKed and hung up",
                      self.call_id, response.to_tag)

    def _send_ack(self) -> None:
        assert self.dialog is not None and self.invite is not None
        ack = self.dialog.create_request("ACK", self.engine.via_sent_by(self.local_ip),
                                         cseq=self.invite.cseq.number)
        self.engine.sip.send_stateless(ack, self.dialog.next_hop(ack))

    def _take_answer(self, response: SipResponse) -> bool:
        """Apply the callee's SDP answer; False if it is unusable."""
        assert self.our_offer is not None
        try:
            self.params = accept_answer(self.our_offer, SessionDescription.parse(response.body))
        except (NoCommonCodec, ValueError) as exc:
            self.log.warning("outbound %s: unusable SDP answer (%s)", self.call_id, exc)
            return False
        if self.media is not None:
            self.media.configure(self.params)
        return True

    def _failed(self, status: int, reason: str) -> None:
        if self.state is LegState.ENDED:
            self.engine.forget(self)  # e.g. the 487 to our CANCEL
            return
        self._end(f"failed {status} {reason}", status)
        self.notify(events.disconnect(status, reason))


class _IgnoreResponses:
    """The TU of our CANCEL transactions: their outcome changes nothing (the INVITE's
    final response does)."""

    @staticmethod
    def on_response(event: object) -> None:
        return None


_Ignore = _IgnoreResponses()
