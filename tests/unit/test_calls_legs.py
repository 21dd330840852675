"""The sans-I/O user-agent legs on virtual time: what each SIP input makes a leg send
(its outbox) and report to its call (its happenings). No sockets, no loop, no clock."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from switch.calls.inbound import InboundLeg
from switch.calls.leg import Confirmed, Ended, KeyPressed, Leg, Local, MediaChanged, Progress, Respond, Send, SendStateless
from switch.calls.offer_answer import OfferAnswerError, parse_offer
from switch.calls.outbound import Credentials, OutboundLeg
from switch.security.digest import digest_response, parse_digest
from switch.sip.message import SipRequest, SipResponse, make_response, parse_message
from switch.sip.uri import SipUri
from switch.tasks.boundary import CallError

LOCAL = Local("127.0.0.1", 5060)
PHONE_SDP = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
             b"m=audio 40000 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\n")


def invite(sdp: bytes = PHONE_SDP, call_id: str = "c1") -> SipRequest:
    head = (f"INVITE sip:100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-{call_id}\r\n"
            f"From: <sip:alice@127.0.0.1>;tag=caller\r\nTo: <sip:100@127.0.0.1>\r\nCall-ID: {call_id}\r\n"
            f"CSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:5070>\r\nMax-Forwards: 70\r\n")
    if sdp:
        head += "Content-Type: application/sdp\r\n"
    message = parse_message(head.encode() + f"Content-Length: {len(sdp)}\r\n\r\n".encode() + sdp)
    assert isinstance(message, SipRequest)
    return message


def in_dialog(leg: Leg, method: str, cseq: int, body: bytes = b"", ctype: str = "application/sdp") -> SipRequest:
    """A request from the caller inside the leg's dialog."""
    text = (f"{method} sip:alice@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-{method}{cseq}\r\n"
            f"From: <sip:alice@127.0.0.1>;tag=caller\r\nTo: <sip:100@127.0.0.1>;tag={leg.local_tag}\r\n"
            f"Call-ID: {leg.call_id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:alice@127.0.0.1:5070>\r\n"
            f"Max-Forwards: 70\r\n")
    if body:
        text += f"Content-Type: {ctype}\r\n"
    message = parse_message(text.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    assert isinstance(message, SipRequest)
    return message


def txn() -> Any:
    return SimpleNamespace(reliable=False, addr=("127.0.0.1", 5070))


def inbound(sdp: bytes = PHONE_SDP) -> InboundLeg:
    request = invite(sdp)
    return InboundLeg(txn(), request, parse_offer(sdp) if sdp else None, LOCAL, now=10.0)


def sent(leg: Leg) -> list[Any]:
    """What the leg queued, as (kind, status or method) pairs."""
    out = []
    for item in leg.take_outbox():
        if isinstance(item, Respond):
            out.append(("respond", item.response.status))
        elif isinstance(item, Send):
            out.append(("send" if item.track else "send-untracked", item.request.method))
        else:
            assert isinstance(item, SendStateless)
            out.append(("stateless", item.message.method))
    return out


def responses(leg: Leg) -> list[SipResponse]:
    return [item.response for item in leg.take_outbox() if isinstance(item, Respond)]


# ---------------------------------------------------------------------- inbound (UAS)
def answered(sdp: bytes = PHONE_SDP) -> InboundLeg:
    leg = inbound(sdp)
    leg.media_opened(30000)
    leg.answer(now=11.0)
    leg.take_outbox()
    leg.take_happenings()
    return leg


def test_inbound_rings_answers_with_one_sdp_answer_and_is_confirmed_by_the_ack() -> None:
    leg = inbound()
    leg.provision(now=10.1)
    assert sent(leg) == [("respond", 180)]
    leg.media_opened(30000)
    (changed,) = leg.take_happenings()
    assert isinstance(changed, MediaChanged) and changed.params.codec == "PCMA"  # the caller's first
    leg.send_early_media(now=10.2)
    leg.answer(now=11.0)
    early, ok = responses(leg)
    assert (early.status, ok.status) == (183, 200)
    assert early.body == ok.body and b"m=audio 30000 RTP/AVP 8 101" in ok.body  # RFC 3261 §13.2.1
    assert ok.to_tag == leg.local_tag and "sip:127.0.0.1:5060" in (ok.get("contact") or "")
    assert leg.answered_at == 11.0 and leg.dialog is not None and not leg.happenings
    leg.on_ack(in_dialog(leg, "ACK", 1), now=11.1)
    assert [type(h) for h in leg.take_happenings()] == [Confirmed]


def test_bye_from_the_caller_is_answered_and_ends_the_leg_for_its_task() -> None:
    leg = answered()
    leg.on_ack(in_dialog(leg, "ACK", 1), now=11.1)
    leg.take_happenings()
    leg.on_bye(txn(), in_dialog(leg, "BYE", 2), now=20.0)
    assert sent(leg) == [("respond", 200)]
    (ended,) = leg.take_happenings()
    assert ended == Ended("remote hung up", None, True, "BYE")
    assert leg.finished and leg.ended_at == 20.0


def test_hangup_before_the_ack_waits_for_it_then_sends_bye_and_finishes_on_its_answer() -> None:
    leg = answered()
    leg.hang_up(None, "task ended", now=11.05)
    assert sent(leg) == [] and leg.ended and not leg.finished  # RFC 3261 §15: BYE after the ACK
    (ended,) = leg.take_happenings()
    assert not ended.by_peer
    leg.on_ack(in_dialog(leg, "ACK", 1), now=11.1)
    (bye,) = leg.take_outbox()
    assert isinstance(bye, Send) and bye.request.method == "BYE" and bye.addr == ("127.0.0.1", 5070)
    assert not leg.finished
    leg.on_response("BYE", parse_response(make_response(bye.request, 200)), now=11.2)
    assert leg.finished


def parse_response(response: SipResponse) -> SipResponse:
    message = parse_message(bytes(response))
    assert isinstance(message, SipResponse)
    return message


def test_no_ack_for_the_2xx_ends_the_call_with_bye_and_a_408_disconnect() -> None:
    leg = answered()
    leg.on_ack_timeout(now=43.0)  # RFC 3261 §13.3.1.4
    assert sent(leg) == [("send", "BYE")]
    assert leg.take_happenings() == [Ended("no ACK", 408, True, "no ACK")]
    leg.on_timeout("BYE", now=75.0)  # and nobody answers the BYE either
    assert leg.finished


def test_cancel_gets_487_for_the_invite_and_a_cancelled_call_is_finished() -> None:
    leg = inbound()
    leg.provision(now=10.1)
    leg.take_outbox()
    leg.on_cancel(now=12.0)
    assert sent(leg) == [("respond", 487)]
    assert leg.take_happenings() == [Ended("cancelled", 487, True, "CANCEL")] and leg.finished
    leg.on_cancel(now=12.1)  # a retransmitted CANCEL changes nothing
    assert sent(leg) == [] and leg.take_happenings() == []


def test_unanswered_hangup_and_reject_send_one_final_response() -> None:
    leg = inbound()
    leg.hang_up(500, "script error", now=10.5)
    assert sent(leg) == [("respond", 500)] and leg.finished
    leg.hang_up(500, "again", now=10.6)
    assert sent(leg) == []
    with pytest.raises(CallError, match="has ended"):
        leg.reject(486, None, now=10.7)
    leg = inbound()
    with pytest.raises(CallError, match="300-699"):
        leg.reject(200, None, now=10.1)
    leg.reject(486, "Busy", now=10.1)
    (busy,) = responses(leg)
    assert (busy.status, busy.reason) == (486, "Busy") and leg.end_status == 486


def test_late_offer_the_ack_carries_the_answer_and_a_bad_one_ends_the_call() -> None:
    leg = inbound(sdp=b"")
    leg.media_opened(30000)
    assert leg.take_happenings() == []  # nothing to negotiate yet
    leg.answer(now=11.0)
    (ok,) = responses(leg)
    assert b"m=audio 30000 RTP/AVP 0 8 101" in ok.body  # our offer (RFC 3264 §5)
    answer = PHONE_SDP.replace(b"RTP/AVP 8 0 101", b"RTP/AVP 0")
    leg.on_ack(in_dialog(leg, "ACK", 1, answer), now=11.1)
    changed, confirmed = leg.take_happenings()
    assert isinstance(changed, MediaChanged) and changed.params.codec == "PCMU"
    assert isinstance(confirmed, Confirmed)

    leg = inbound(sdp=b"")
    leg.media_opened(30000)
    leg.answer(now=11.0)
    leg.take_outbox()
    leg.on_ack(in_dialog(leg, "ACK", 1, PHONE_SDP.replace(b"RTP/AVP 8 0 101", b"RTP/AVP 18")), now=11.1)
    assert sent(leg) == [("send", "BYE")]
    assert leg.take_happenings() == [Ended("bad SDP in ACK", None, True, "bad SDP in ACK")]


def test_reinvite_new_offer_gets_a_new_version_without_sdp_the_current_one_and_early_491() -> None:
    leg = inbound()
    leg.media_opened(30000)
    leg.take_happenings()
    leg.on_reinvite(txn(), in_dialog(leg, "INVITE", 2, PHONE_SDP), now=10.5)
    assert [r.status for r in responses(leg)] == [491]  # not confirmed yet
    leg.answer(now=11.0)
    (ok,) = responses(leg)
    leg.on_ack(in_dialog(leg, "ACK", 1), now=11.1)
    leg.take_happenings()
    hold = PHONE_SDP.replace(b"t=0 0\r\n", b"t=0 0\r\na=sendonly\r\n")
    leg.on_reinvite(txn(), in_dialog(leg, "INVITE", 2, hold), now=12.0)
    (held,) = responses(leg)
    (changed,) = leg.take_happenings()
    assert held.status == 200 and b"a=recvonly" in held.body and changed.params.direction == "recvonly"
    assert b"o=- " in held.body and _version(held.body) == _version(ok.body) + 1  # RFC 3264 §8
    leg.on_reinvite(txn(), in_dialog(leg, "INVITE", 3), now=13.0)
    (current,) = responses(leg)
    assert current.body == held.body and leg.take_happenings() == []
    bad = PHONE_SDP.replace(b"RTP/AVP 8 0 101", b"RTP/AVP 18")
    leg.on_reinvite(txn(), in_dialog(leg, "INVITE", 4, bad), now=14.0)
    (refused,) = responses(leg)
    assert refused.status == 488 and "305" in (refused.get("warning") or "")
    assert leg.sdp.params is not None and leg.sdp.params.direction == "recvonly"  # unchanged


def _version(sdp: bytes) -> int:
    origin = next(line for line in sdp.decode().split("\r\n") if line.startswith("o="))
    return int(origin.split()[2])


def test_info_digits_are_answered_and_reported() -> None:
    leg = answered()
    leg.on_info(txn(), in_dialog(leg, "INFO", 2, b"Signal=5\r\nDuration=160\r\n", "application/dtmf-relay"), now=12.0)
    leg.on_info(txn(), in_dialog(leg, "INFO", 3, b"hello", "text/plain"), now=12.1)
    assert sent(leg) == [("respond", 200), ("respond", 200)]
    assert leg.take_happenings() == [KeyPressed("5")]


# ---------------------------------------------------------------------- outbound (UAC)
def outbound() -> OutboundLeg:
    leg = OutboundLeg(SipUri.parse("sip:1000@127.0.0.1:5090"), ("127.0.0.1", 5090), None, ("PCMU", "PCMA"),
                      LOCAL, now=5.0)
    leg.media_opened(30002)
    leg.start(now=5.0)
    return leg


def reply(leg: OutboundLeg, status: int, tag: str = "callee", body: bytes = b"") -> SipResponse:
    assert leg.invite is not None
    headers: dict[str, str | list[str]] = {"contact": f"<sip:callee-{tag}@127.0.0.1:5090>"}
    if body:
        headers["content-type"] = "application/sdp"
    return parse_response(make_response(leg.invite, status, to_tag=tag if status > 100 else None,
                                        headers=headers, body=body))


def test_outbound_invites_with_our_offer_rings_is_answered_and_acks() -> None:
    leg = outbound()
    (invite_out,) = leg.take_outbox()
    assert isinstance(invite_out, Send) and invite_out.request.method == "INVITE"
    assert b"m=audio 30002 RTP/AVP 0 8 101" in invite_out.request.body
    leg.on_response("INVITE", reply(leg, 100), now=5.01)
    leg.on_response("INVITE", reply(leg, 180), now=5.5)
    leg.on_response("INVITE", reply(leg, 180), now=5.6)  # a second 180 is not news
    assert leg.take_happenings() == [Progress(180, False)]
    answer = PHONE_SDP.replace(b"RTP/AVP 8 0 101", b"RTP/AVP 0 101")
    leg.on_response("INVITE", reply(leg, 200, body=answer), now=7.0)
    assert sent(leg) == [("stateless", "ACK")]
    changed, confirmed = leg.take_happenings()
    assert isinstance(changed, MediaChanged) and changed.params.codec == "PCMU" and isinstance(confirmed, Confirmed)
    assert leg.answered_at == 7.0 and not leg.finished
    leg.hang_up(None, "disconnected by app", now=9.0)
    bye = leg.take_outbox()[0]
    assert isinstance(bye, Send) and bye.request.method == "BYE" and bye.request.uri == "sip:callee-callee@127.0.0.1:5090"
    leg.on_response("BYE", parse_response(make_response(bye.request, 200)), now=9.1)
    assert leg.finished and leg.take_happenings() == [Ended("disconnected by app", None, False, None)]


def test_retransmitted_2xx_is_acked_again_and_a_forked_2xx_is_acked_then_hung_up() -> None:
    leg = outbound()
    leg.take_outbox()
    leg.on_response("INVITE", reply(leg, 200, "first"), now=6.0)
    assert [type(h) for h in leg.take_happenings()] == [Confirmed]
    assert sent(leg) == [("stateless", "ACK")]
    leg.on_response("INVITE", reply(leg, 200, "first"), now=6.5)  # RFC 3261 §13.2.2.4
    assert sent(leg) == [("stateless", "ACK")]
    leg.on_response("INVITE", reply(leg, 200, "second"), now=6.6)  # another branch of a fork
    ack, bye = leg.take_outbox()
    assert isinstance(ack, SendStateless) and ack.message.to_tag == "second"
    assert isinstance(bye, Send) and not bye.track and bye.request.uri == "sip:callee-second@127.0.0.1:5090"
    assert leg.dialog is not None and leg.dialog.remote_tag == "first" and leg.take_happenings() == []


def test_cancel_waits_for_a_provisional_and_a_200_crossing_it_is_acked_and_hung_up() -> None:
    leg = outbound()
    leg.take_outbox()
    leg.hang_up(None, "bridge broken", now=5.1)
    assert sent(leg) == [] and leg.ended and not leg.finished  # RFC 3261 §9.1: no CANCEL yet
    assert leg.take_happenings() == [Ended("bridge broken", None, False, None)]
    leg.on_response("INVITE", reply(leg, 180), now=5.2)
    assert sent(leg) == [("send-untracked", "CANCEL")]
    leg.on_response("INVITE", reply(leg, 200), now=5.3)  # the callee answered anyway
    assert sent(leg) == [("stateless", "ACK"), ("send", "BYE")] and not leg.finished
    assert leg.take_happenings() == []  # the task heard of the end once, already
    leg.on_timeout("BYE", now=40.0)
    assert leg.finished


def test_cancelled_after_ringing_is_finished_by_the_487() -> None:
    leg = outbound()
    leg.take_outbox()
    leg.on_response("INVITE", reply(leg, 180), now=5.2)
    leg.take_happenings()
    leg.hang_up(None, "disconnected by app", now=6.0)
    assert sent(leg) == [("send-untracked", "CANCEL")] and leg.cancelled_by_us and not leg.finished
    leg.on_response("INVITE", reply(leg, 487), now=6.1)
    assert leg.finished and [h.by_peer for h in leg.take_happenings() if isinstance(h, Ended)] == [False]


@pytest.mark.parametrize("status, reason", [(486, "Busy Here"), (503, "Service Unavailable"), (603, "Decline")])
def test_a_failure_response_ends_the_leg_with_its_status(status: int, reason: str) -> None:
    leg = outbound()
    leg.take_outbox()
    leg.on_response("INVITE", reply(leg, status), now=6.0)
    assert leg.take_happenings() == [Ended(f"failed {status} {reason}", status, True, reason)]
    assert leg.finished and leg.end_status == status


def test_no_answer_at_all_is_a_408() -> None:
    leg = outbound()
    leg.take_outbox()
    leg.on_timeout("INVITE", now=37.0)  # Timer B
    assert leg.take_happenings() == [Ended("failed 408 no answer from the callee (timeout)", 408, True,
                                           "no answer from the callee (timeout)")]
    assert leg.finished


def test_an_answer_with_no_common_codec_is_hung_up_with_488() -> None:
    leg = outbound()
    leg.take_outbox()
    leg.on_response("INVITE", reply(leg, 200, body=PHONE_SDP.replace(b"RTP/AVP 8 0 101", b"RTP/AVP 18")), now=6.0)
    assert sent(leg) == [("stateless", "ACK"), ("send", "BYE")]
    (ended,) = leg.take_happenings()
    assert ended.status == 488 and ended.by_peer


def test_an_abandoned_leg_never_sent_anything_and_is_finished() -> None:
    leg = OutboundLeg(SipUri.parse("sip:1000@127.0.0.1:5090"), ("127.0.0.1", 5090), None, ("PCMU",), LOCAL, now=5.0)
    leg.abandon("cannot place the call: RTP port range exhausted", 503, now=5.0)
    assert leg.outbox == [] and leg.finished and leg.end_status == 503


# ---------------------------------------------------------------------- offer/answer
def test_offer_errors_carry_the_sip_status() -> None:
    with pytest.raises(OfferAnswerError) as no_codec:
        parse_offer(PHONE_SDP.replace(b"RTP/AVP 8 0 101", b"RTP/AVP 18"))
    assert no_codec.value.status == 488 and "305" in no_codec.value.headers["warning"]  # type: ignore[operator]
    with pytest.raises(OfferAnswerError) as garbage:
        parse_offer(b"hello")
    assert garbage.value.status == 400 and (garbage.value.reason or "").startswith("Bad SDP")


# ---------------------------------------------------------------------- a gateway that challenges
def challenge(leg: OutboundLeg, status: int, qop: bool = True) -> SipResponse:
    assert leg.invite is not None
    name = "www-authenticate" if status == 401 else "proxy-authenticate"
    value = 'Digest realm="carrier", nonce="n0nce", algorithm=MD5' + (', qop="auth,auth-int"' if qop else "")
    return parse_response(make_response(leg.invite, status, to_tag="gw", headers={name: value}))


@pytest.mark.parametrize("status, header", [(401, "authorization"), (407, "proxy-authorization")])
def test_a_challenged_invite_is_sent_again_once_with_credentials(status: int, header: str) -> None:
    leg = OutboundLeg(SipUri.parse("sip:1000@127.0.0.1:5090"), ("127.0.0.1", 5090), None, ("PCMU",), LOCAL,
                      now=5.0, credentials=Credentials("pbx1", "s3cret"))
    leg.media_opened(30002)
    leg.start(now=5.0)
    (first,) = leg.take_outbox()
    leg.on_response("INVITE", challenge(leg, status), now=5.1)
    (again,) = leg.take_outbox()
    assert isinstance(first, Send) and isinstance(again, Send)
    retry = again.request
    # RFC 3261 §22.2: same Call-ID and From tag, the next CSeq, a new branch, the same offer.
    assert retry.call_id == first.request.call_id and retry.from_tag == first.request.from_tag
    assert retry.cseq.number == 2 and retry.via.branch != first.request.via.branch
    assert retry.body == first.request.body and retry.to_tag is None
    auth = parse_digest(retry.get(header) or "")
    expected = digest_response("pbx1", "carrier", "s3cret", "INVITE", retry.uri, "n0nce", "auth", auth["nc"],
                               auth["cnonce"], "MD5")
    assert auth["username"] == "pbx1" and auth["uri"] == retry.uri and auth["response"] == expected
    assert leg.take_happenings() == [] and not leg.finished
    leg.on_response("INVITE", challenge(leg, status), now=5.2)  # wrong credentials: no loop
    assert leg.take_outbox() == [] and leg.finished
    (ended,) = leg.take_happenings()
    assert ended.status == status and ended.by_peer


def test_without_credentials_a_challenge_is_a_failure() -> None:
    leg = outbound()
    leg.take_outbox()
    leg.on_response("INVITE", challenge(leg, 407, qop=False), now=5.1)
    assert leg.take_outbox() == [] and leg.finished and leg.end_status == 407


def test_comfort_noise_is_offered_and_answered_only_when_the_media_sends_it() -> None:
    leg = OutboundLeg(SipUri.parse("sip:1000@127.0.0.1:5090"), ("127.0.0.1", 5090), None, ("PCMU",), LOCAL, now=5.0)
    leg.media_opened(30002, cn=True)  # media_keepalive = "cn"
    leg.start(now=5.0)
    (invite_out,) = leg.take_outbox()
    assert isinstance(invite_out, Send) and b"a=rtpmap:13 CN/8000" in invite_out.request.body
    offer_with_cn = PHONE_SDP.replace(b"RTP/AVP 8 0 101", b"RTP/AVP 8 0 101 13")
    plain = inbound(offer_with_cn)
    plain.media_opened(30000)  # media_keepalive = "silence": no CN in our answer
    plain.answer(now=11.0)
    (ok,) = responses(plain)
    assert b"CN/8000" not in ok.body
    cn = inbound(offer_with_cn)
    cn.media_opened(30000, cn=True)
    cn.answer(now=11.0)
    (ok,) = responses(cn)
    assert b"a=rtpmap:13 CN/8000" in ok.body


def test_an_invite_without_contact_is_answered_and_reached_at_its_from() -> None:
    """RFC 2543 UAs (RFC 4475 §3.4.1) send no Contact: the dialog's remote target is the
    From URI (found by the e2e fuzz run: answering one was a 500 with a traceback)."""
    text = bytes(invite()).replace(b"Contact: <sip:alice@127.0.0.1:5070>\r\n", b"")
    request = parse_message(text)
    assert isinstance(request, SipRequest) and request.get("contact") is None
    leg = InboundLeg(txn(), request, parse_offer(PHONE_SDP), LOCAL, now=10.0)
    leg.media_opened(30000)
    leg.answer(now=11.0)
    (ok,) = responses(leg)
    assert ok.status == 200 and leg.dialog is not None and leg.dialog.remote_target == "sip:alice@127.0.0.1"


def test_a_2xx_without_contact_is_acked_at_the_uri_we_called() -> None:
    leg = outbound()
    leg.take_outbox()
    assert leg.invite is not None
    bare = parse_response(make_response(leg.invite, 200, to_tag="gw"))
    leg.on_response("INVITE", bare, now=6.0)
    (ack,) = leg.take_outbox()
    assert isinstance(ack, SendStateless) and ack.message.uri == "sip:1000@127.0.0.1:5090"
