"""An inbound call leg: one INVITE server dialog plus its media, steered by one task.

The leg is the call engine's side of the task boundary (``switch.tasks.boundary``):
JS verbs arrive as method calls, and what happens to the call (BYE, CANCEL, the
end of a file) leaves as events posted to the owner task.
"""

from __future__ import annotations

import enum
import logging
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from media.sdp import MediaParams, NoCommonCodec, SessionDescription, accept_answer, answer_offer, make_offer
from media.session import MediaSession

from ..sip.dialog import Dialog, new_tag
from ..sip.events import ResponseReceived, TransactionTimedOut
from ..sip.message import SipRequest, SipResponse, make_response
from ..sip.transaction import ClientTransaction, InviteServerTransaction, ServerTransaction
from ..tasks import events
from ..tasks.boundary import CallError

if TYPE_CHECKING:
    from .engine import CallEngine

logger = logging.getLogger(__name__)


class LegState(enum.Enum):
    INCOMING = "Incoming"  # INVITE received; only 100 Trying sent
    EARLY = "Early"  # a provisional (180/183) sent
    ANSWERED = "Answered"  # 200 sent, ACK not yet received
    CONFIRMED = "Confirmed"  # ACK received
    ENDED = "Ended"


_TRANSITIONS = {
    LegState.INCOMING: frozenset((LegState.EARLY, LegState.ANSWERED, LegState.ENDED)),
    LegState.EARLY: frozenset((LegState.ANSWERED, LegState.ENDED)),
    LegState.ANSWERED: frozenset((LegState.CONFIRMED, LegState.ENDED)),
    LegState.CONFIRMED: frozenset((LegState.ENDED,)),
    LegState.ENDED: frozenset(),
}

SDP = "application/sdp"


class InboundLeg:
    """Implements ``CallControl`` for the task running ``Main()`` for this call."""

    def __init__(self, engine: CallEngine, txn: InviteServerTransaction, invite: SipRequest,
                 offer: SessionDescription | None) -> None:
        self.engine = engine
        self.txn = txn
        self.invite = invite
        self.offer = offer  # None: the INVITE had no SDP; we offer in the 200, ACK answers
        self.app_dir: Path | None = None  # set when a task (of an app) takes the call
        self.call_id = invite.call_id
        self.local_tag = new_tag()
        self.local_ip = engine.local_ip_for(txn.addr[0])  # for Contact and SDP
        self.state = LegState.INCOMING
        self.dialog: Dialog | None = None
        self.media: MediaSession | None = None
        self.params: MediaParams | None = None
        self.our_offer: SessionDescription | None = None
        self.notify: Callable[[dict], None] = lambda event: None
        self.task_id: int | None = None
        self.created = engine.loop.time()
        self.end_reason = ""
        self._sdp_session = random.randrange(1, 2**31)
        self._sdp_version = 0
        self._bye_after_ack = False
        self._early_media = False
        self._bye_txn: ClientTransaction | None = None
        self._media_opening: Awaitable[MediaSession] | None = None
        self.log = logging.LoggerAdapter(logger, {"call": self.call_id})

    def __repr__(self) -> str:
        return f"<InboundLeg {self.call_id} {self.state.value}>"

    # ------------------------------------------------------------------ state
    def _set_state(self, new: LegState) -> None:
        if new not in _TRANSITIONS[self.state]:
            raise CallError(f"call is {self.state.value.lower()}, cannot become {new.value.lower()}")
        self.log.debug("leg %s: %s -> %s", self.call_id, self.state.value, new.value)
        self.state = new

    @property
    def answered(self) -> bool:
        return self.state in (LegState.ANSWERED, LegState.CONFIRMED)

    @property
    def ended(self) -> bool:
        return self.state is LegState.ENDED

    def _require_live(self, verb: str) -> None:
        if self.state is LegState.ENDED:
            raise CallError(f"{verb}: the call has ended ({self.end_reason or 'hung up'})")

    # ------------------------------------------------------------------ CallControl
    def request_data(self, name: str) -> str | None:
        key = name.lower()
        if key in ("request-uri", "ruri", "uri"):
            return self.invite.uri
        if key == "method":
            return self.invite.method
        if key == "body":
            return self.invite.body.decode("utf-8", "replace")
        values = self.invite.get_all(key)
        return ", ".join(values) if values else None

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
        body = self._local_sdp(media)
        self.dialog = self.dialog or Dialog.as_uas(self.invite, self.local_tag, self.engine.contact_for(self.local_ip))
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
        self._end(f"rejected {code}")

    async def play_file(self, url: str, loop: bool = False) -> None:
        self._require_live("PlayFile")
        assert self.app_dir is not None
        audio = await self.engine.playback.get(url, self.app_dir)
        self._require_live("PlayFile")
        media = await self._open_media()
        self._require_live("PlayFile")
        if not self.answered and not self._early_media:
            if self.offer is None:
                raise CallError("PlayFile: early media needs an SDP offer in the INVITE; call AcceptCall() first")
            self._send_provisional(183, with_sdp=True)  # early media (RFC 3960)
            self._early_media = True
        media.play(audio, loop, lambda: self.notify(events.play_file_completed(url)))

    def stop_play(self) -> None:
        if self.media is not None:
            self.media.stop_play()

    def is_connected(self) -> bool:
        return self.state is not LegState.ENDED

    def disconnect(self) -> None:
        if self.state is LegState.ENDED:
            return
        self.hang_up(480 if not self.answered else None, "disconnected by app")

    def task_ended(self, error: str | None) -> None:
        self.task_id = None
        if self.state is not LegState.ENDED:
            self.hang_up(500 if error else 480, "script error" if error else "task ended")

    # ------------------------------------------------------------------ hang up
    def hang_up(self, unanswered_status: int | None, why: str) -> None:
        """Final error if unanswered, else BYE (after the ACK, RFC 3261 §15)."""
        if self.state is LegState.ENDED:
            return
        if not self.answered:
            self.engine.sip.send_response(self.txn, self._response(unanswered_status or 480))
            self._end(why)
            return
        if self.state is LegState.ANSWERED:
            self._bye_after_ack = True  # sent when the ACK (or Timer L) comes
            self._end(why, keep_dialog=True)
            return
        self._end(why, keep_dialog=True)
        self._send_bye()

    def _send_bye(self) -> None:
        assert self.dialog is not None
        bye = self.dialog.create_request("BYE", self.engine.via_sent_by(self.local_ip))
        txn = self.engine.sip.send_request(bye, self.dialog.next_hop(bye))
        txn.user = self  # type: ignore[attr-defined]
        self._bye_txn = txn

    def _end(self, why: str, keep_dialog: bool = False) -> None:
        self.end_reason = why
        self._set_state(LegState.ENDED)
        if self.media is not None:
            stats = self.media.stats()
            self.media.close()
            self.log.info("call %s ended (%s) after %.1f s; rtp %s", self.call_id, why,
                          self.engine.loop.time() - self.created, stats)
        else:
            self.log.info("call %s ended (%s)", self.call_id, why)
        if not keep_dialog:
            self.engine.forget(self)

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

    def on_bye(self, txn: ServerTransaction, bye: SipRequest) -> None:
        self.engine.sip.send_response(txn, make_response(bye, 200))
        if self.state is not LegState.ENDED:
            self._end("caller hung up")
            self.notify(events.disconnect(None, "BYE"))
        else:
            self.engine.forget(self)

    def on_cancel(self) -> None:
        """CANCEL matched our INVITE (the engine already answered the CANCEL 200)."""
        if self.answered or self.state is LegState.ENDED:
            return
        self.engine.sip.send_response(self.txn, self._response(487))
        self._end("cancelled")
        self.notify(events.disconnect(487, "CANCEL"))

    def on_reinvite(self, txn: InviteServerTransaction, request: SipRequest) -> None:
        """Session modification (hold/resume, new address, codec change)."""
        if self.state is not LegState.CONFIRMED or self.media is None:
            self.engine.sip.send_response(txn, make_response(request, 491))  # RFC 3261 §14.2
            return
        if request.body:
            try:
                offer = SessionDescription.parse(request.body)
                _, params = answer_offer(offer, self.local_ip, self.media.local_port,
                                         self._sdp_session, self._sdp_version)
            except NoCommonCodec as exc:
                self.engine.sip.send_response(txn, make_response(request, 488, headers={"warning": f'305 - "{exc}"'}))
                return
            except ValueError as exc:
                self.engine.sip.send_response(txn, make_response(request, 400, f"Bad SDP ({exc})"[:100]))
                return
            self.offer = offer
            self.params = params
            self.media.configure(params)
        body = self._local_sdp(self.media, new_version=True)
        self.engine.sip.send_response(txn, self._response(200, body=body, request=request))

    def on_response(self, event: ResponseReceived | TransactionTimedOut) -> None:
        """Our BYE was answered or timed out: the dialog is gone either way."""
        if isinstance(event, ResponseReceived) and event.response.status < 200:
            return
        self.engine.forget(self)

    # ------------------------------------------------------------------ helpers
    async def _open_media(self) -> MediaSession:
        if self.media is None:
            if self._media_opening is None:
                self._media_opening = self.engine.open_media(self.call_id)
            media = await self._media_opening
            if self.media is None:
                self.media = media
                if self.state is LegState.ENDED:
                    media.close()
            if self.offer is not None and self.params is None:
                _, self.params = answer_offer(self.offer, self.local_ip, media.local_port,
                                              self._sdp_session, self._sdp_version)
            if self.params is not None:
                media.configure(self.params)
            media.on_dtmf = lambda digit: self.notify(events.dtmf(digit))
        return self.media

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
            headers["contact"] = self.engine.contact_for(self.local_ip)
            headers["allow"] = self.engine.ALLOW
        if body:
            headers["content-type"] = SDP
        return make_response(request, status, reason, to_tag=self.local_tag, headers=headers, body=body)

    def _send_provisional(self, status: int, with_sdp: bool = False) -> None:
        body = self._local_sdp(self.media) if with_sdp and self.media is not None else b""
        self.engine.sip.send_response(self.txn, self._response(status, body=body))
        if self.state is LegState.INCOMING:
            self._set_state(LegState.EARLY)
