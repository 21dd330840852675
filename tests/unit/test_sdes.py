"""RFC 4568 a=crypto lines (media/sdes.py) and the SRTP context that uses them (media/srtp.py)."""

from __future__ import annotations

import base64

import pytest

from media import sdes
from media.rtcp import parse_compound
from media.rtp import RtpSender, parse_rtp
from media.sdes import CryptoAttribute, SrtpKeys, UnsupportedCrypto
from media.srtp import SrtpContext, SrtpError

# RFC 4568 §9.1's offer: its audio line, and its video stream's second line.
RFC_AUDIO = "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32"
RFC_VIDEO_32 = "2 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2^20|1:32"


def test_rfc4568_example_lines_parse_and_build_back():
    audio = CryptoAttribute.parse(RFC_AUDIO)
    assert (audio.tag, audio.suite, audio.lifetime, audio.mki) == (1, "AES_CM_128_HMAC_SHA1_80", 2**20, (1, 32))
    assert audio.key == base64.b64decode("PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR") and len(audio.key) == 30
    assert str(audio) == RFC_AUDIO
    video = CryptoAttribute.parse(RFC_VIDEO_32)
    assert (video.tag, video.suite, len(video.key)) == (2, "AES_CM_128_HMAC_SHA1_32", 30)
    assert str(video) == RFC_VIDEO_32
    # ... and the key never shows in a repr (nor so in a log line that prints one).
    assert "PS1u" not in repr(audio) and "inline" not in repr(audio)


def test_rfc4568_example_lines_are_taken_with_their_lifetime_and_mki():
    for value in (RFC_AUDIO, RFC_VIDEO_32, RFC_AUDIO.split("|")[0], RFC_AUDIO.rsplit("|", 1)[0]):
        CryptoAttribute.parse(value).check()
    assert CryptoAttribute.parse(RFC_AUDIO).mki_bytes == bytes(31) + b"\x01"  # 1:32, as each packet carries it
    assert CryptoAttribute.parse(RFC_AUDIO.split("|")[0]).mki_bytes is None


@pytest.mark.parametrize("value, reason", [
    ("1 F8_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR", "F8_128_HMAC_SHA1_80 is not supported"),
    ("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkp", "needs a 30-byte key"),
    ("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR UNENCRYPTED_SRTP",
     "UNENCRYPTED_SRTP is not supported"),
    ("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|1:4;"
     "inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2:4", "several keys"),
    ("1 AEAD_AES_128_GCM inline:" + base64.b64encode(bytes(28)).decode() + "|1:4", "MKI with an AEAD suite"),
    ("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|256:1", "does not fit"),
])
def test_what_we_cannot_honour_is_refused_with_the_reason(value, reason):
    with pytest.raises(UnsupportedCrypto, match=reason):
        CryptoAttribute.parse(value).check()


def test_window_size_hint_is_accepted():
    CryptoAttribute.parse("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR WSH=128").check()


@pytest.mark.parametrize("value, reason", [
    ("1 AES_CM_128_HMAC_SHA1_80", "needs a tag, a suite and key params"),
    ("x AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR", "tag must be"),
    ("1 AES_CM_128_HMAC_SHA1_80 uri:http://example.com/key", "must be 'inline:'"),
    ("1 AES_CM_128_HMAC_SHA1_80 inline:not*base64!", "not base64"),
    ("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^x", "lifetime must be"),
    ("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|1:4|2:4", "MKI must be"),
])
def test_malformed_lines_say_which_part(value, reason):
    with pytest.raises(ValueError, match=reason) as info:
        CryptoAttribute.parse(value)
    assert "PS1u" not in str(info.value)  # a key is not an error message's business


def test_pick_takes_the_first_usable_line_and_says_why_earlier_ones_were_not():
    lines = ["1 AES_256_CM_HMAC_SHA1_80 inline:" + base64.b64encode(bytes(46)).decode(), RFC_VIDEO_32.split("|")[0]]
    chosen, refused = sdes.pick(lines)
    assert chosen is not None and chosen.tag == 2 and chosen.suite == "AES_CM_128_HMAC_SHA1_32"
    assert len(refused) == 1 and "AES_256_CM_HMAC_SHA1_80 is not supported" in refused[0]
    gcm_mki = "1 AEAD_AES_128_GCM inline:" + base64.b64encode(bytes(28)).decode() + "|1:4"
    assert sdes.pick([gcm_mki]) == (None, ["AEAD_AES_128_GCM line 1: an MKI with an AEAD suite is not supported"])


def test_offer_lines_have_fresh_keys_of_each_suites_length():
    lines = sdes.offer_lines()
    assert [c.suite for c in lines] == list(sdes.OFFERED_SUITES) and [c.tag for c in lines] == [1, 2, 3, 4]
    assert [len(c.key) for c in lines] == [30, 30, 28, 44]
    assert len({c.key for c in lines} | {c.key for c in sdes.offer_lines()}) == 8
    for c in lines:
        CryptoAttribute.parse(str(c)).check()


# --------------------------------------------------------------------------- SRTP


def pair(suite: str) -> tuple[SrtpContext, SrtpContext]:
    """Two ends of one SRTP leg: each sends with its key, receives with the other's."""
    a, b = sdes.new_key(suite), sdes.new_key(suite)
    return SrtpContext(SrtpKeys(suite, a, b)), SrtpContext(SrtpKeys(suite, b, a))


@pytest.mark.parametrize("suite", sdes.OFFERED_SUITES)
def test_protect_unprotect_round_trip_rtp_and_rtcp(suite):
    us, peer = pair(suite)
    tx = RtpSender(ssrc=0x1234)
    payload = bytes(range(160))
    for _ in range(3):
        plain = tx.packet(payload, 160, 0)
        wire = us.protect_rtp(plain)
        assert wire[:12] == plain[:12] and payload not in wire  # header in clear, payload not
        assert len(wire) > len(plain)  # the authentication tag (RFC 3711 §3.1)
        assert peer.unprotect_rtp(wire) == plain
    rr = bytes.fromhex("81c90007") + (0x1234).to_bytes(4, "big") + bytes(24)
    wire = peer.protect_rtcp(rr)
    assert us.unprotect_rtcp(wire) == rr and parse_compound(rr)


def test_tampered_replayed_and_plain_packets_fail():
    us, peer = pair("AES_CM_128_HMAC_SHA1_80")
    tx = RtpSender()
    wire = us.protect_rtp(tx.packet(b"\xff" * 160, 160, 0))
    tampered = bytearray(wire)
    tampered[20] ^= 1
    with pytest.raises(SrtpError, match="authentication failure"):
        peer.unprotect_rtp(bytes(tampered))
    assert parse_rtp(peer.unprotect_rtp(wire)).payload == b"\xff" * 160  # the genuine one still passes
    with pytest.raises(SrtpError, match="replay"):
        peer.unprotect_rtp(wire)
    with pytest.raises(SrtpError):
        peer.unprotect_rtp(tx.packet(b"\xff" * 160, 160, 0))  # plain RTP on an SRTP leg
    with pytest.raises(SrtpError):
        peer.unprotect_rtcp(bytes.fromhex("81c90001") + bytes(4))  # plain RTCP: no SRTCP index or tag


@pytest.mark.parametrize("suite, tag", [("AES_CM_128_HMAC_SHA1_80", 10), ("AES_CM_128_HMAC_SHA1_32", 4)])
def test_a_peers_mki_is_checked_and_cut_out_before_libsrtp(suite, tag):
    """RFC 3711 §3.1/§3.4: the MKI sits between the encrypted part and the tag, outside
    what the tag covers; here the peer's packets get it the way its SRTP would put it."""
    a, b = sdes.new_key(suite), sdes.new_key(suite)
    mki = CryptoAttribute.parse(RFC_AUDIO).mki_bytes
    assert mki is not None
    peer = SrtpContext(SrtpKeys(suite, b, a))
    us = SrtpContext(SrtpKeys(suite, a, b, rx_mki=mki))
    tx = RtpSender()

    def with_mki(wire: bytes, tag_len: int, value: bytes = mki) -> bytes:
        return wire[:-tag_len] + value + wire[-tag_len:]

    plain = tx.packet(b"\x11" * 160, 160, 0)
    assert us.unprotect_rtp(with_mki(peer.protect_rtp(plain), tag)) == plain
    with pytest.raises(SrtpError, match="MKI"):
        us.unprotect_rtp(with_mki(peer.protect_rtp(tx.packet(b"\x11" * 160, 160, 0)), tag, bytes(32)))
    with pytest.raises(SrtpError, match="MKI"):
        us.unprotect_rtp(peer.protect_rtp(tx.packet(b"\x11" * 160, 160, 0)))
    rr = bytes.fromhex("81c90007") + (0x1234).to_bytes(4, "big") + bytes(24)
    assert us.unprotect_rtcp(with_mki(peer.protect_rtcp(rr), 10)) == rr  # SRTCP's tag is 80 bits for both


def test_a_wrong_key_fails_and_keys_stay_out_of_repr():
    us, _ = pair("AES_CM_128_HMAC_SHA1_32")
    stranger, _ = pair("AES_CM_128_HMAC_SHA1_32")
    with pytest.raises(SrtpError):
        stranger.unprotect_rtp(us.protect_rtp(RtpSender().packet(b"\x00" * 160, 160, 0)))
    keys = SrtpKeys("AES_CM_128_HMAC_SHA1_32", b"A" * 30, b"B" * 30)
    assert repr(keys) == "SrtpKeys(suite='AES_CM_128_HMAC_SHA1_32')" and repr(us) == "<SrtpContext AES_CM_128_HMAC_SHA1_32>"
