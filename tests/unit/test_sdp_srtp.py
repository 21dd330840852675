"""RTP/SAVP offer/answer (RFC 4568 §7 on RFC 3264): media/sdp.py and the leg's OfferAnswer."""

from __future__ import annotations

import base64

import pytest

from media import sdes
from media.sdp import SessionDescription, SrtpRefused, accept_answer, answer_offer, make_offer
from switch.calls.offer_answer import OfferAnswer, OfferAnswerError, parse_offer

KEY1 = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"  # RFC 4568 §9.1's key and salt
KEY2 = "NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj"


def offer(proto: str = "RTP/SAVP", *crypto: str, extra: str = "") -> bytes:
    lines = "".join(f"a=crypto:{c}\r\n" for c in crypto)
    return (f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio 6000 {proto} 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
            f"{lines}{extra}").encode()


def answer_of(body: bytes, **kw):
    return answer_offer(SessionDescription.parse(body), "127.0.0.1", 7000, 1, 1, **kw)


def test_savp_offer_answered_with_the_first_usable_tag_and_a_fresh_key_of_ours():
    body = offer("RTP/SAVP", f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY1}|1:4;inline:{KEY2}|2:4",  # a key list: refused
                 f"2 AES_CM_128_HMAC_SHA1_32 inline:{KEY2}",
                 f"3 AES_CM_128_HMAC_SHA1_80 inline:{KEY1}")
    answer, params = answer_of(body, random=lambda n: b"\x07" * n)
    m = answer.media[0]
    assert m.proto == "RTP/SAVP"
    assert m.crypto_lines == ["2 AES_CM_128_HMAC_SHA1_32 inline:" + base64.b64encode(b"\x07" * 30).decode()]
    assert params.srtp == sdes.SrtpKeys("AES_CM_128_HMAC_SHA1_32", b"\x07" * 30, base64.b64decode(KEY2))
    assert "inline" not in repr(params) and KEY2 not in repr(params)  # MediaParams may be logged
    # RFC 4568 §9.1's line (lifetime 2^20, MKI 1:32): taken; its MKI is what its packets carry.
    _, params = answer_of(offer("RTP/SAVP", f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY1}|2^20|1:32"))
    assert params.srtp is not None and params.srtp.rx_mki == bytes(31) + b"\x01"
    assert b"|" not in answer_of(offer("RTP/SAVP", f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY1}|2^20|1:32"))[0].to_bytes()


def test_plain_offer_answered_plain_and_policies_decide():
    _, params = answer_of(offer("RTP/AVP"))
    assert params.srtp is None
    with pytest.raises(OfferAnswerError) as info:
        parse_offer(offer("RTP/AVP"), srtp="required")
    assert info.value.status == 488 and info.value.warning == 302
    assert 'srtp = "required"' in info.value.detail and 'srtp = \\"required\\"' in info.value.headers["warning"]
    with pytest.raises(OfferAnswerError) as info:
        parse_offer(offer("RTP/SAVP", f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY1}"), srtp="off")
    assert (info.value.status, info.value.warning) == (488, 302)
    parse_offer(offer("RTP/SAVP", f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY1}"), srtp="required")


def test_savp_without_a_usable_suite_is_488_with_warning_306_naming_it():
    with pytest.raises(OfferAnswerError) as info:
        parse_offer(offer("RTP/SAVP", f"1 SEED_128_GCM_96 inline:{KEY1}"))
    assert (info.value.status, info.value.warning) == (488, 306)
    assert "SEED_128_GCM_96 is not supported" in info.value.headers["warning"]
    assert KEY1 not in info.value.headers["warning"]
    with pytest.raises(OfferAnswerError, match="no a=crypto line") as info:
        parse_offer(offer("RTP/SAVP"))
    # A best-effort offer (RFC 4568 §7.1.1: SRTP stream first, plain RTP second) falls back.
    both = offer("RTP/SAVP", f"1 SEED_128_GCM_96 inline:{KEY1}",
                 extra="m=audio 6002 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
    answer, params = answer_of(both)
    assert [(m.port, m.proto) for m in answer.media] == [(0, "RTP/SAVP"), (7000, "RTP/AVP")]
    assert params.srtp is None and params.remote_addr == ("127.0.0.1", 6002)


def test_our_savp_offer_and_the_answer_to_it():
    ours = make_offer("127.0.0.1", 7000, 1, 1, crypto=sdes.offer_lines(lambda n: b"\x01" * n))
    m = ours.media[0]
    assert m.proto == "RTP/SAVP" and [v.split()[1] for v in m.crypto_lines] == list(sdes.OFFERED_SUITES)
    reply = offer("RTP/SAVP", f"2 AES_CM_128_HMAC_SHA1_32 inline:{KEY2}")
    params = accept_answer(ours, SessionDescription.parse(reply))
    assert params.srtp == sdes.SrtpKeys("AES_CM_128_HMAC_SHA1_32", b"\x01" * 30, base64.b64decode(KEY2))
    for bad, warning in ((offer("RTP/AVP"), 302),  # RFC 3264 §6: the answer keeps our <proto>
                         (offer("RTP/SAVP", f"2 AES_CM_128_HMAC_SHA1_80 inline:{KEY2}"), 306),  # not tag 2's suite
                         (offer("RTP/SAVP", f"9 AES_CM_128_HMAC_SHA1_80 inline:{KEY2}"), 306),  # a tag we never offered
                         (offer("RTP/SAVP"), 306)):
        with pytest.raises(SrtpRefused) as info:
            accept_answer(ours, SessionDescription.parse(bad))
        assert info.value.warning == warning
    # A plain offer of ours does not take an SRTP answer either.
    with pytest.raises(SrtpRefused):
        accept_answer(make_offer("127.0.0.1", 7000, 1, 1), SessionDescription.parse(reply))


def test_reinvite_with_the_same_key_keeps_ours_and_a_new_key_re_keys():
    first = offer("RTP/SAVP", f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY1}")
    leg = OfferAnswer("127.0.0.1", SessionDescription.parse(first))
    leg.media_opened(7000)
    assert leg.params is not None and leg.params.srtp is not None
    keys = leg.params.srtp
    assert leg.answer() == leg.answer()  # one answer for 183 and 200 (RFC 3261 §13.2.1)
    leg.new_offer(first.replace(b"a=rtpmap:0", b"a=sendonly\r\na=rtpmap:0"))  # hold, same key
    assert leg.params.srtp == keys and leg.params.direction == "recvonly"
    leg.new_offer(offer("RTP/SAVP", f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY2}"))  # RFC 4568 §7.1.4
    assert leg.params.srtp is not None
    assert leg.params.srtp.rx_key == base64.b64decode(KEY2) and leg.params.srtp.tx_key != keys.tx_key


def test_outbound_leg_offers_srtp_when_its_route_says_so_and_keeps_its_keys():
    plain = OfferAnswer("127.0.0.1")
    plain.media_opened(7000)
    assert b"RTP/AVP" in plain.offer() and b"crypto" not in plain.offer()
    secure = OfferAnswer("127.0.0.1", srtp="required", offer_srtp=True)
    secure.media_opened(7000)
    first = secure.offer()
    assert b"m=audio 7000 RTP/SAVP" in first and first.count(b"a=crypto:") == 4
    secure.take_answer(offer("RTP/SAVP", f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY1}"))
    assert secure.params is not None and secure.params.srtp is not None
    assert secure.current() == first  # a re-INVITE without SDP gets the same keys, no re-key
    with pytest.raises(OfferAnswerError) as info:  # a downgrade to plain RTP in a re-INVITE
        secure.new_offer(offer("RTP/AVP"))
    assert info.value.warning == 302 and secure.params.srtp is not None
    with pytest.raises(ValueError, match="srtp must be one of"):
        OfferAnswer("127.0.0.1", srtp="sometimes")


def test_a_late_offer_under_srtp_required_is_ours_in_rtp_savp():
    """An INVITE without SDP: our 200 offers (RFC 3264 §5); with srtp = "required" that
    offer is RTP/SAVP, and the ACK's answer must take one of its crypto lines."""
    leg = OfferAnswer("127.0.0.1", None, srtp="required", offer_srtp=True)
    leg.media_opened(7000)
    assert b"RTP/SAVP" in leg.local_sdp()
    with pytest.raises(OfferAnswerError):
        leg.take_answer(offer("RTP/AVP"))
    params = leg.take_answer(offer("RTP/SAVP", f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY1}"))
    assert params.srtp is not None and params.srtp.rx_key == base64.b64decode(KEY1)
