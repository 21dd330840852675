"""What every call leg shares: state, media, the owner task, BYE in both directions.

A leg is one SIP dialog (or the attempt at one) plus its media session, steered by
one task. It is the call engine's side of the task boundary (``switch.tasks.boundary``):
JS verbs arrive as method calls, and what happens to the call (BYE, CANCEL, the end
of a file, a digit) leaves as events posted to the owner task. ``InboundLeg`` (UAS,
``inbound.py``) and ``OutboundLeg`` (UAC, ``outbound.py``) add their side's SIP.
"""

from __future__ import annotations

import enum
import logging
import random
from pathlib import Path
from typing import TYPE_CHECKING
from collections.abc import Awaitable, Callable

from media.sdp import MediaParams, NoCommonCodec, SessionDescription, answer_offer
from media.ports import NoRtpPorts
from media.session import MediaSession

from ..sip.dialog import Dialog, new_tag
from ..sip.events import ResponseReceived, TransactionTimedOut
from ..sip.message import SipRequest, make_response
from ..sip.transaction import ClientTransaction, InviteServerTransaction, ServerTransaction
from ..tasks import events
from ..tasks.boundary import CallError

if TYPE_CHECKING:
    from .bridge import Bridge
    from .engine import CallEngine

logger = logging.getLogger("switch.calls")

SDP = "application/sdp"


class LegState(enum.Enum):
    CALLING = "Calling"  # outbound: INVITE sent, nothing back yet
    INCOMING = "Incoming"  # inbound: INVITE received, only 100 Trying sent
    EARLY = "Early"  # a provisional (180/183) sent or received
    ANSWERED = "Answered"  # inbound: 200 sent, ACK not yet received
    CONFIRMED = "Confirmed"  # the dialog is up (ACK received / sent)
    ENDED = "Ended"


class Leg:
    TRANSITIONS: dict[LegState, frozenset[LegState]] = {}
    kind = "leg"

    def __init__(self, engine: CallEngine, call_id: str, local_ip: str, state: LegState) -> None:
        self.engine = engine
        self.call_id = call_id
        self.local_tag = new_tag()
        self.local_ip = local_ip  # for Contact, Via and SDP
        self.state = state
        self.dialog: Dialog | None = None
        self.media: MediaSession | None = None
        self.params: MediaParams | None = None
        self.app_dir: Path | None = None  # for PlayFile paths: the app of the owner task
        self.bridge: Bridge | None = None
        self.notify: Callable[[dict], None] = lambda event: None
        self._end_watchers: list[Callable[[], None]] = []
        self.task_id: int | None = None
        self.created = engine.loop.time()
        self.end_reason = ""
        self.end_status: int | None = None  # the SIP status that ended it, if one did
        self._sdp_session = random.randrange(1, 2**31)
        self._sdp_version = 0
        self._media_opening: Awaitable[MediaSession] | None = None
        self.log = logging.LoggerAdapter(logger, {"call": call_id})

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.call_id} {self.state.value}>"

    @property
    def key(self) -> str:
        return f"{self.call_id};{self.local_tag}"

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

    def _require_live(self, verb: str) -> None:
        if self.state is LegState.ENDED:
            raise CallError(f"{verb}: the call has ended ({self.end_reason or 'hung up'})")

    # ------------------------------------------------------------------ CallControl (shared)
    def request_fields(self) -> dict[str, str] | None:
        """The request fields, when they are fixed for the call's life (inbound only)."""
        return None

    async def play_file(self, url: str, loop: bool = False) -> None:
        self._require_live("PlayFile")
        if self.app_dir is None:
            raise CallError("PlayFile: this call belongs to no app")
        audio = await self.engine.playback.get(url, self.app_dir)
        self._require_live("PlayFile")
        media = await self._media_for_play()
        self._require_live("PlayFile")
        media.play(audio, loop, lambda: self.notify(events.play_file_completed(url)))

    async def _media_for_play(self) -> MediaSession:
        if self.media is None or self.params is None:
            raise CallError("PlayFile: the call has no media yet")
        return self.media

    def stop_play(self) -> None:
        if self.media is not None:
            self.media.stop_play()

    def is_connected(self) -> bool:
        return self.state is not LegState.ENDED

    def on_end(self, callback: Callable[[], None]) -> None:
        if self.state is LegState.ENDED:
            callback()
        else:
            self._end_watchers.append(callback)

    def task_ended(self, error: str | None) -> None:
        self.task_id = None
        if self.state is not LegState.ENDED:
            self.hang_up(500 if error else 480, "script error" if error else "task ended")

    def hang_up(self, unanswered_status: int | None, why: str) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ ending
    def _end(self, why: str, status: int | None = None, keep_dialog: bool = False) -> None:
        """The leg is over for its task (IsConnected() false); media stops now."""
        self.end_reason = why
        self.end_status = status
        self._set_state(LegState.ENDED)
        if self.media is not None:
            stats = self.media.stats()
            self.media.close()
            self.log.info("%s %s ended (%s) after %.1f s; rtp sent %d/%d B, received %d/%d B",
                          self.kind, self.call_id, why, self.engine.loop.time() - self.created,
                          stats["packets_sent"], stats["bytes_sent"], stats["packets_received"],
                          stats["bytes_received"])
        else:
            self.log.info("%s %s ended (%s)", self.kind, self.call_id, why)
        if not keep_dialog:
            self.engine.forget(self)
        watchers, self._end_watchers = self._end_watchers, []
        for callback in watchers:  # before any event about it: IsConnected() is already false
            callback()
        if self.bridge is not None:
            self.bridge.leg_ended(self)

    def _send_bye(self) -> None:
        assert self.dialog is not None
        bye = self.dialog.create_request("BYE", self.engine.via_sent_by(self.local_ip))
        txn = self.engine.sip.send_request(bye, self.dialog.next_hop(bye))
        txn.user = self  # type: ignore[attr-defined]

    def on_bye(self, txn: ServerTransaction, bye: SipRequest) -> None:
        self.engine.sip.send_response(txn, make_response(bye, 200))
        if self.state is not LegState.ENDED:
            self._end("remote hung up")
            self.notify(events.disconnect(None, "BYE"))
        else:
            self.engine.forget(self)

    def on_response(self, event: ResponseReceived | TransactionTimedOut) -> None:
        """Our BYE was answered or timed out: the dialog is gone either way."""
        if isinstance(event, ResponseReceived) and event.response.status < 200:
            return
        self.engine.forget(self)

    def on_reinvite(self, txn: InviteServerTransaction, request: SipRequest) -> None:
        """Session modification (hold/resume, new address, codec change). A re-INVITE
        without SDP gets our current description as the offer (RFC 3261 §14.2)."""
        if self.state is not LegState.CONFIRMED or self.media is None:
            self.engine.sip.send_response(txn, make_response(request, 491))
            return
        self._sdp_version += 1  # RFC 3264 §8: any new SDP of ours is a new version
        if request.body:
            try:
                offer = SessionDescription.parse(request.body)
                answer, params = answer_offer(offer, self.local_ip, self.media.local_port,
                                              self._sdp_session, self._sdp_version)
            except NoCommonCodec as exc:
                self.engine.sip.send_response(txn, make_response(request, 488, headers={"warning": f'305 - "{exc}"'}))
                return
            except ValueError as exc:
                self.engine.sip.send_response(txn, make_response(request, 400, f"Bad SDP ({exc})"[:100]))
                return
            self._session_changed(offer)
            self.params = params
            self.media.configure(params)
            body = answer.to_bytes()
        else:
            body = self._current_sdp(self.media)
        tcp = self.dialog is not None and self.dialog.transport == "TCP"
        headers = {"contact": self.engine.contact_for(self.local_ip, tcp), "allow": self.engine.ALLOW,
                   "content-type": SDP}
        self.engine.sip.send_response(txn, make_response(request, 200, headers=headers, body=body))

    def on_info(self, txn: ServerTransaction, request: SipRequest) -> None:
        """SIP INFO: key presses sent in signalling by phones that don't use RFC 4733
        (``application/dtmf-relay`` ``Signal=5``, or ``application/dtmf`` ``5``) become the
        same Dtmf event; any other INFO is acknowledged and ignored."""
        digit = info_digit(request)
        self.engine.sip.send_response(txn, make_response(request, 200))
        if digit is not None and self.state is not LegState.ENDED:
            self.notify(events.dtmf(digit))

    def _session_changed(self, offer: SessionDescription) -> None:
        """A re-INVITE brought a new offer (hook)."""

    def _current_sdp(self, media: MediaSession) -> bytes:
        """Our session description when the peer asks for an offer (hook)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ media
    async def _open_media(self) -> MediaSession:
        if self.media is None:
            if self._media_opening is None:
                self._media_opening = self.engine.open_media(self.call_id)
            try:
                media = await self._media_opening
            except NoRtpPorts as exc:
                raise CallError(str(exc)) from None
            if self.media is None:
                self.media = media
                media.on_dtmf = lambda digit: self.notify(events.dtmf(digit))
                if self.state is LegState.ENDED:
                    media.close()
        return self.media


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


__all__ = ["ClientTransaction", "Leg", "LegState", "SDP", "info_digit"]
