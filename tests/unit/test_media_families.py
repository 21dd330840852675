"""Address families in SDP (RFC 4566 §5.7 c= address types) and offer/answer: an IP6 offer
is answered IN IP6 from an IPv6 address, an offer, answer or re-offer in a family the leg
cannot use is refused 488 with Warning 301 (RFC 3261 §20.43), never answered into a call
whose RTP goes nowhere (issue 10: "socket family mismatch")."""

from __future__ import annotations

import socket

import pytest

from media.sdp import AddressFamilyMismatch, SessionDescription, accept_answer, answer_offer, make_offer
from switch.calls.offer_answer import OfferAnswer, OfferAnswerError, offer_media, parse_offer

V4, V6 = socket.AF_INET, socket.AF_INET6


def sdp(addrtype: str = "IP6", addr: str = "::1", port: int = 40000, media_c: str | None = None,
        video_first: bool = False) -> bytes:
    lines = ["v=0", f"o=- 1 1 IN {addrtype} {addr}", "s=-", f"c=IN {addrtype} {addr}", "t=0 0"]
    if video_first:
        lines += ["m=video 40002 RTP/AVP 96", "a=rtpmap:96 H264/90000"]
    lines += [f"m=audio {port} RTP/AVP 0 101"]
    if media_c:
        lines += [media_c]
    lines += ["a=rtpmap:101 telephone-event/8000", "a=sendrecv"]
    return ("\r\n".join(lines) + "\r\n").encode()


def test_the_address_type_is_kept_even_for_a_name() -> None:
    offer = SessionDescription.parse(sdp("IP6", "media.example.net"))
    assert offer.media_addrtype(offer.media[0]) == "IP6"  # the name alone would say nothing
    assert "c=IN IP6 media.example.net" in str(offer)  # written back as it came
    mixed = SessionDescription.parse(sdp("IP4", "192.0.2.1", media_c="c=IN IP6 2001:db8::5", video_first=True))
    assert offer_media(mixed) == ("IP6", "2001:db8::5")  # the audio stream's own c= wins


def test_an_ip6_offer_is_answered_in_ip6() -> None:
    offer = SessionDescription.parse(sdp())
    answer, params = answer_offer(offer, "::1", 30000, 7, 0)
    text = str(answer)
    assert "o=- 7 0 IN IP6 ::1" in text and "c=IN IP6 ::1" in text and "m=audio 30000 RTP/AVP 0 101" in text
    assert params.remote_addr == ("::1", 40000)


def test_answering_from_the_other_family_is_refused() -> None:
    with pytest.raises(AddressFamilyMismatch, match="offer's audio is IN IP6; this leg's media is IP4"):
        answer_offer(SessionDescription.parse(sdp()), "127.0.0.1", 30000, 7, 0)
    with pytest.raises(AddressFamilyMismatch, match="answer's audio is IN IP6; we offered IN IP4"):
        accept_answer(make_offer("127.0.0.1", 30000, 7, 0), SessionDescription.parse(sdp()))


@pytest.mark.parametrize("body, families, ok", [
    (sdp("IP6", "::1"), {V4}, False),  # an IPv4-only switch
    (sdp("IP6", "::1"), {V4, V6}, True),
    (sdp("IP4", "127.0.0.1"), {V6}, False),  # an IPv6-only switch
    (sdp("IP4", "127.0.0.1"), {V4}, True),
    (sdp("IP6", "::"), {V4}, False),  # on hold, still IPv6 media
])
def test_parse_offer_refuses_a_family_we_do_not_serve_with_488_and_warning_301(
        body: bytes, families: set[int], ok: bool) -> None:
    if ok:
        assert parse_offer(body, families).media
        return
    with pytest.raises(OfferAnswerError) as info:
        parse_offer(body, families)
    assert info.value.status == 488 and info.value.warning == 301
    assert info.value.headers["warning"].startswith('301 - "the offer\'s audio is IN IP')  # type: ignore[union-attr]


def test_no_common_codec_is_still_warning_305_and_a_broken_rtpmap_400() -> None:
    with pytest.raises(OfferAnswerError) as info:
        parse_offer(sdp().replace(b"RTP/AVP 0 101", b"RTP/AVP 18"), {V6})
    assert (info.value.status, info.value.warning) == (488, 305)
    with pytest.raises(OfferAnswerError) as info:  # found by the e2e fuzzer: read while picking the family
        parse_offer(sdp().replace(b"a=rtpmap:101 telephone-event/8000", b'a=rtpmap:2147483648 "'), {V6})
    assert info.value.status == 400 and "rtpmap is malformed" in info.value.detail


def test_a_legs_media_keeps_its_family_through_answers_and_re_invites() -> None:
    ours = OfferAnswer("127.0.0.1", codecs=("PCMU",))  # an outbound leg to an IPv4 callee
    ours.media_opened(30000)
    ours.offer()
    with pytest.raises(OfferAnswerError) as info:
        ours.take_answer(sdp())
    assert (info.value.status, info.value.warning) == (488, 301) and ours.params is None

    theirs = OfferAnswer("::1", SessionDescription.parse(sdp()))  # an inbound IPv6 leg
    theirs.media_opened(30002)
    assert b"c=IN IP6 ::1" in theirs.answer()
    before = theirs.params
    with pytest.raises(OfferAnswerError) as info:
        theirs.new_offer(sdp("IP4", "192.0.2.1"))  # a re-INVITE moving to IPv4
    assert (info.value.status, info.value.warning) == (488, 301)
    assert theirs.params is before  # nothing changed
    assert b"c=IN IP6 ::1" in theirs.new_offer(sdp("IP6", "2001:db8::5"))  # a new IPv6 address is fine
    assert theirs.params is not None and theirs.params.remote_addr == ("2001:db8::5", 40000)
