"""An outbound call leg (UAC side of the B2BUA), placed by ``StartBridgedCall``.

RFC 3261 §13.2 and §9.1 as a UAC, sans-I/O (see ``leg.py``): INVITE with our SDP offer,
provisional responses (early dialog, early media from a 183's SDP), ACK for the 2xx
(its own transaction, sent by us; the transaction layer ACKs failures), re-ACK of a
retransmitted 2xx, CANCEL when we give up before the answer (only after a provisional
arrived, §9.1), the race where the callee answers a call we just cancelled (ACK it,
then BYE), and a second 2xx from a forking proxy (§13.2.2.4: ACK, then BYE).

Failover (RFC 3263 §4.3): when DNS gave the destination several servers, an INVITE that
times out (Timer B, or the engine's shorter ``failover_timeout`` while no response at
all came) or is answered 503 is sent again to the next server: the same request (Call-ID,
tags, CSeq) with a new Via branch, so a new transaction. The caller hears nothing of it.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from ..security.digest import digest_response, parse_digest
from ..sip.dialog import Dialog
from ..sip.message import SipRequest, SipResponse
from ..sip.transaction import make_cancel, new_branch
from ..sip.uri import NameAddr, SipUri, join_hostport
from ..tasks.boundary import CallError
from .leg import ALLOW, Confirmed, Leg, LegState, Local, MediaChanged, Progress, Send, SendStateless
from .offer_answer import SDP, OfferAnswer, OfferAnswerError


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a gateway may challenge our INVITE for (RFC 3261 §22.2, §22.3)."""

    username: str
    password: str


class OutboundLeg(Leg):
    kind = "outbound"
    TRANSITIONS = {
        LegState.CALLING: frozenset((LegState.EARLY, LegState.CONFIRMED, LegState.ENDED)),
        LegState.EARLY: frozenset((LegState.CONFIRMED, LegState.ENDED)),
        LegState.CONFIRMED: frozenset((LegState.ENDED,)),
        LegState.ENDED: frozenset(),
    }

    def __init__(self, target: SipUri, addr: tuple[str, int], caller: NameAddr | None,
                 codecs: tuple[str, ...], local: Local, now: float, transport: str = "UDP",
                 credentials: Credentials | None = None, alternatives: Sequence[tuple[str, int]] = (),
                 max_forwards: int = 70, srtp: bool = False) -> None:
        # transport "TCP"/"TLS": the callee registered over that connection, or the route
        # asked for TLS (the engine connects before the INVITE): our Via, Contact and every
        # request of the dialog go over that connection (RFC 5626 style flow reuse).
        # srtp: the route says this callee takes SRTP: we offer RTP/SAVP (and then take
        # nothing less from it, in its answer or a re-INVITE).
        super().__init__(f"{new_branch()[7:]}@softswitch", local, LegState.CALLING,
                         OfferAnswer(local.rtp_ip, codecs=codecs, srtp="required" if srtp else "optional",
                                     offer_srtp=srtp), now, transport)
        self.target = target
        self.addr = addr
        # The next servers of the destination (RFC 3263 §4.3), tried in this order when
        # the current one does not answer or answers 503.
        self.alternatives = deque(alternatives)
        self.max_forwards = max_forwards  # the caller's, decremented (Call.onward_max_forwards)
        self.caller = caller
        self.invite: SipRequest | None = None
        self.credentials = credentials
        self._authenticated = False  # one retry with credentials per call, never a loop
        self.final_status: int | None = None  # the INVITE's final response (487 after our CANCEL)
        self.provisional_seen = False
        self.cancelled_by_us = False
        self._invite_open = False  # the INVITE awaits its final response
        self._cancel_pending = False
        # Post-dial delay (metrics): our first INVITE left, and the callee's first answer
        # other than 100 (ringing, early media, answer or refusal) came; a digest
        # challenge we answer is not that answer.
        self.invite_sent_at: float | None = None
        self.first_response_at: float | None = None

    @property
    def sips(self) -> bool:
        return self.target.scheme == "sips"

    @property
    def finished(self) -> bool:
        return super().finished and not self._invite_open

    # ------------------------------------------------------------------ placing the call
    def start(self, now: float) -> None:
        """Send the INVITE with our offer (media must be open)."""
        self.require_live("StartBridgedCall")
        self.invite = self._build_invite(self.sdp.offer())
        self.log.info("outbound %s: calling %s via %s:%d", self.call_id, self.target, *self.addr)
        self.outbox.append(Send(self.invite, self.addr))
        self._invite_open = True
        self.invite_sent_at = now

    def abandon(self, why: str, status: int, now: float) -> None:
        """The call could not be placed (no RTP port): ended before any SIP was sent. The
        task hears it from its verb's error, not from an event."""
        if not self.ended:
            self._end(why, now, status)

    def _build_invite(self, body: bytes) -> SipRequest:
        from_user = (self.caller.sip_uri.user if self.caller else None) or "softswitch"
        display = f'"{self.caller.display}" ' if self.caller and self.caller.display else ""
        headers: dict[str, list[str]] = {
            "via": [self._via()],
            "max-forwards": [str(self.max_forwards)],
            "from": [f"{display}<sip:{from_user}@{join_hostport(self.local.ip)}>;tag={self.local_tag}"],
            "to": [f"<{self.target}>"],
            "call-id": [self.call_id],
            "cseq": ["1 INVITE"],
            "contact": [self.contact],
            "allow": [ALLOW],
            "content-type": [SDP],
        }
        return SipRequest("INVITE", str(self.target), headers, body)

    # ------------------------------------------------------------------ the task's side
    def request_data(self, name: str) -> str | None:
        if self.invite is None:
            return None
        if name.lower() in ("request-uri", "ruri", "uri"):
            return self.invite.uri
        values = self.invite.get_all(name)
        return ", ".join(values) if values else None

    def hang_up(self, unanswered_status: int | None, why: str, now: float) -> None:
        """CANCEL if unanswered (RFC 3261 §9.1), else BYE."""
        if self.state is LegState.ENDED:
            return
        if self.state is LegState.CONFIRMED:
            self._end(why, now)
            self._send_bye()
            return
        self.cancelled_by_us = True
        if self.provisional_seen:
            self._send_cancel()
        elif self._invite_open:
            self._cancel_pending = True  # §9.1: a CANCEL must wait for a provisional
        self._end(why, now)

    def _send_cancel(self) -> None:
        assert self.invite is not None
        if self._invite_open:
            self.outbox.append(Send(make_cancel(self.invite), self.addr, track=False))

    # ------------------------------------------------------------------ responses
    def on_timeout(self, method: str, now: float) -> None:
        if method != "INVITE":
            super().on_timeout(method, now)
            return
        self._invite_open = False
        if self._next_server("no answer (timeout)"):
            return
        self._failed(408, "no answer from the callee (timeout)", now)

    def _next_server(self, why: str) -> bool:
        """RFC 3263 §4.3: send the INVITE to the next server, if there is one and the call
        is still ours to place (not given up, not answered)."""
        if not self.alternatives or self.ended or self.dialog is not None or self.invite is None:
            return False
        failed, self.addr = self.addr, self.alternatives.popleft()
        old = self.invite
        headers = {name: list(values) for name, values in old.headers.items()}
        headers["via"] = [self._via()]
        self.invite = SipRequest("INVITE", old.uri, headers, old.body)
        self.provisional_seen = False  # a CANCEL waits for this transaction's provisional
        self.first_response_at = None  # a dead server's 503 is not the callee's answer (post-dial delay)
        self.outbox.append(Send(self.invite, self.addr))
        self._invite_open = True
        self.log.info("outbound %s: %s from %s:%d: INVITE to the next server, %s:%d", self.call_id, why,
                      *failed, *self.addr)
        return True

    def _via(self) -> str:
        return f"SIP/2.0/{self.transport} {self.local.sent_by};branch={new_branch()};rport"

    def on_response(self, method: str, response: SipResponse, now: float) -> None:
        if method != "INVITE":
            super().on_response(method, response, now)  # our BYE
            return
        status = response.status
        if self.first_response_at is None and status > 100 and not (
                status in (401, 407) and self.credentials is not None and not self._authenticated):
            self.first_response_at = now
        if status < 200:
            self._on_provisional(response)
        elif status < 300:
            self._invite_open = False
            self.final_status = status
            self._on_answer(response, now)
        else:
            self._invite_open = False
            self.final_status = status
            if status in (401, 407) and self._retry_with_credentials(response):
                return
            if status == 503 and self._next_server("503"):
                return
            self._failed(status, response.reason, now)

    def _retry_with_credentials(self, challenge: SipResponse) -> bool:
        """RFC 3261 §22.2: a gateway (401) or its proxy (407) asked who we are: send the
        INVITE again, once, with the credentials of its config entry: same Call-ID and
        From tag, the next CSeq, a new branch (the transaction layer ACKed the 401)."""
        if self.credentials is None or self._authenticated or self.ended or self.invite is None:
            return False
        asked = "www-authenticate" if challenge.status == 401 else "proxy-authenticate"
        params = next((p for value in challenge.get_all(asked)
                       if (p := parse_digest(value)).get("algorithm", "MD5").upper() in ("MD5", "SHA-256")
                       and p.get("nonce")), None)
        if params is None:
            self.log.warning("outbound %s: %d without a Digest challenge we can answer", self.call_id,
                             challenge.status)
            return False
        self._authenticated = True
        old = self.invite
        algorithm = params.get("algorithm", "MD5").upper()
        realm, nonce = params.get("realm", ""), params["nonce"]
        qop = "auth" if "auth" in [q.strip() for q in params.get("qop", "").split(",")] else None
        nc, cnonce = ("00000001", os.urandom(8).hex()) if qop else ("", "")
        user, password = self.credentials.username, self.credentials.password
        response = digest_response(user, realm, password, "INVITE", old.uri, nonce, qop, nc, cnonce, algorithm)
        value = (f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{old.uri}", '
                 f'response="{response}", algorithm={algorithm}')
        if qop:
            value += f', qop={qop}, nc={nc}, cnonce="{cnonce}"'
        if "opaque" in params:
            value += f', opaque="{params["opaque"]}"'
        headers = {name: list(values) for name, values in old.headers.items()}
        headers["via"] = [self._via()]
        headers["cseq"] = [f"{old.cseq.number + 1} INVITE"]
        headers["authorization" if challenge.status == 401 else "proxy-authorization"] = [value]
        self.invite = SipRequest("INVITE", old.uri, headers, old.body)
        self.provisional_seen = False  # a CANCEL waits for this transaction's provisional
        self.outbox.append(Send(self.invite, self.addr))
        self._invite_open = True
        self.log.info("outbound %s: %d from the callee: INVITE again as %s", self.call_id, challenge.status, user)
        return True

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
        if first or early_media:
            self.happenings.append(Progress(response.status, early_media))

    def _on_answer(self, response: SipResponse, now: float) -> None:
        assert self.invite is not None
        if self.dialog is not None:
            if response.to_tag == self.dialog.remote_tag:
                self._send_ack()  # §13.2.2.4: a retransmitted 2xx is ACKed again
            else:
                self._refuse_fork(response)
            return
        self.dialog = Dialog.as_uac(self.invite, response, self.contact)
        if self.over_connection:  # ACK and BYE go over the callee's connection too
            self.dialog.transport, self.dialog.connection = self.transport, self.addr
        self._send_ack()
        if self.state is LegState.ENDED:
            # Answered after we gave up (our CANCEL crossed the 200): end it properly.
            self._send_bye()
            return
        if response.body and not self._take_answer(response):
            self._send_bye()
            self._end("callee answered with unusable SDP", now, 488, by_peer=True,
                      cause="callee's SDP answer has no common codec")
            return
        self._set_state(LegState.CONFIRMED)
        self.answered_at = now
        self.log.info("outbound %s: answered by %s", self.call_id, response.headers.get("to", ["?"])[0])
        self.happenings.append(Confirmed())

    def refuse_late_answer(self, response: SipResponse) -> None:
        """A 2xx from a server this leg failed over from (RFC 3263 §4.3): too late, the
        INVITE went on to the next server; ACKed and hung up like a fork's."""
        if self.invite is not None:
            self._refuse_fork(response)

    def _refuse_fork(self, response: SipResponse) -> None:
        """§13.2.2.4: a forking proxy let a second callee answer. We keep the first
        dialog; the second is ACKed (as the RFC requires) and then hung up with BYE."""
        assert self.invite is not None
        extra = Dialog.as_uac(self.invite, response, self.contact)
        ack = extra.create_request("ACK", self.local.sent_by, cseq=self.invite.cseq.number)
        self.outbox.append(SendStateless(ack, extra.next_hop(ack)))
        bye = extra.create_request("BYE", self.local.sent_by)
        self.outbox.append(Send(bye, extra.next_hop(bye), track=False))
        self.log.info("outbound %s: second answer (forked, tag %s) ACKed and hung up",
                      self.call_id, response.to_tag)

    def _send_ack(self) -> None:
        assert self.dialog is not None and self.invite is not None
        ack = self.dialog.create_request("ACK", self.local.sent_by, cseq=self.invite.cseq.number)
        self.outbox.append(SendStateless(ack, self.dialog.next_hop(ack)))

    def _take_answer(self, response: SipResponse) -> bool:
        """Apply the callee's SDP answer; False if it is unusable."""
        try:
            self.happenings.append(MediaChanged(self.sdp.take_answer(response.body)))
        except OfferAnswerError as exc:
            self.log.warning("outbound %s: unusable SDP answer (%s)", self.call_id, exc)
            return False
        return True

    def _failed(self, status: int, reason: str, now: float) -> None:
        if self.state is LegState.ENDED:
            return  # e.g. the 487 to our CANCEL
        self._end(f"failed {status} {reason}", now, status, by_peer=True, cause=reason)


def callee_codecs(caller_codec: str | None) -> tuple[str, ...]:
    """Offer the caller's codec first: when the callee takes it, payloads pass through."""
    return ("PCMA", "PCMU") if caller_codec == "PCMA" else ("PCMU", "PCMA")


__all__ = ["CallError", "Credentials", "OutboundLeg", "callee_codecs"]
