import pytest

from media.sdp import (
    MediaParams,
    NoCommonCodec,
    SessionDescription,
    accept_answer,
    answer_offer,
    make_offer,
)

# What `sipp -sn uac` sends (uac.xml's embedded SDP, after keyword substitution).
SIPP_UAC = (
    "v=0\r\n"
    "o=user1 53655765 2353687637 IN IP4 127.0.0.1\r\n"
    "s=-\r\n"
    "c=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\n"
    "m=audio 6000 RTP/AVP 0\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
)

# pjsua 2.x default offer: opus first, two telephone-event rates, media-level c=.
PJSUA = """v=0
o=- 3929461239 3929461239 IN IP4 192.168.1.10
s=pjmedia
b=AS:117
t=0 0
a=X-nat:0
m=audio 4000 RTP/AVP 96 9 8 0 120 121
c=IN IP4 192.168.1.10
b=TIAS:96000
a=rtcp:4001 IN IP4 192.168.1.10
a=sendrecv
a=rtpmap:96 opus/48000/2
a=fmtp:96 useinbandfec=1
a=rtpmap:9 G722/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:120 telephone-event/48000
a=fmtp:120 0-16
a=rtpmap:121 telephone-event/8000
a=fmtp:121 0-16
a=ssrc:1828402823 cname:5c7b4e1d2a6a4f3e
"""

# Re-INVITE hold offers: RFC 3264 style and RFC 2543 style.
HOLD_SENDONLY = SIPP_UAC + "a=sendonly\r\n"
HOLD_ZERO = SIPP_UAC.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0")


def test_parse_sipp_uac_and_round_trip():
    sd = SessionDescription.parse(SIPP_UAC)
    assert sd.origin.session_id == 53655765
    assert sd.origin.version == 2353687637
    assert sd.connection == "127.0.0.1"
    (m,) = sd.media
    assert (m.media, m.port, m.proto, m.fmts) == ("audio", 6000, "RTP/AVP", ["0"])
    assert str(sd) == SIPP_UAC
    assert bytes(sd) == SIPP_UAC.encode()
    assert SessionDescription.parse(sd.to_bytes()) == sd


def test_answer_sipp_uac():
    answer, params = answer_offer(SessionDescription.parse(SIPP_UAC), "10.0.0.1", 20000, 7, 1)
    assert params == MediaParams("PCMU", 0, None, ("127.0.0.1", 6000), "sendrecv", 20)
    text = str(answer)
    assert "o=- 7 1 IN IP4 10.0.0.1\r\n" in text
    assert "c=IN IP4 10.0.0.1\r\n" in text
    assert "m=audio 20000 RTP/AVP 0\r\n" in text
    assert "a=sendrecv\r\n" in text
    assert "telephone-event" not in text
    SessionDescription.parse(text)  # our own output parses


def test_answer_pjsua_picks_first_supported_and_8k_telephone_event():
    sd = SessionDescription.parse(PJSUA)
    assert sd.session_name == "pjmedia"
    assert "b=AS:117" in str(sd) and "a=ssrc:1828402823 cname:5c7b4e1d2a6a4f3e" in str(sd)
    answer, params = answer_offer(sd, "10.0.0.1", 20002, 1, 1)
    assert params.codec == "PCMA" and params.pt == 8
    assert params.dtmf_pt == 121
    assert params.remote_addr == ("192.168.1.10", 4000)
    (m,) = answer.media
    assert m.fmts == ["8", "121"]
    assert m.fmtps == {121: "0-16"}
    assert set(m.rtpmaps) == {8, 121}


def test_answer_respects_supported_order_of_offerer():
    sd = SessionDescription.parse(PJSUA)
    _, params = answer_offer(sd, "10.0.0.1", 20002, 1, 1, supported=("PCMU",))
    assert params.codec == "PCMU" and params.pt == 0


@pytest.mark.parametrize(
    "offer_dir,ours", [("sendonly", "recvonly"), ("recvonly", "sendonly"),
                       ("inactive", "inactive"), ("sendrecv", "sendrecv")],
)
def test_direction_is_mirrored(offer_dir, ours):
    answer, params = answer_offer(
        SessionDescription.parse(SIPP_UAC + f"a={offer_dir}\r\n"), "10.0.0.1", 20000, 1, 2
    )
    assert params.direction == ours
    assert f"a={ours}\r\n" in str(answer)


def test_session_level_direction_applies_to_media():
    text = SIPP_UAC.replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n")
    _, params = answer_offer(SessionDescription.parse(text), "10.0.0.1", 20000, 1, 2)
    assert params.direction == "recvonly"


def test_hold_sendonly_keeps_address():
    _, params = answer_offer(SessionDescription.parse(HOLD_SENDONLY), "10.0.0.1", 20000, 1, 2)
    assert params.direction == "recvonly"
    assert params.remote_addr == ("127.0.0.1", 6000)


def test_hold_zero_address():
    _, params = answer_offer(SessionDescription.parse(HOLD_ZERO), "10.0.0.1", 20000, 1, 2)
    assert params.remote_addr is None
    assert params.direction == "recvonly"


def test_no_common_codec_and_other_streams_rejected():
    text = SIPP_UAC.replace("RTP/AVP 0", "RTP/AVP 9").replace("0 PCMU/8000", "9 G722/8000")
    with pytest.raises(NoCommonCodec, match="no audio codec we support"):
        answer_offer(SessionDescription.parse(text), "10.0.0.1", 20000, 1, 1)
    with pytest.raises(ValueError):  # NoCommonCodec is a ValueError
        answer_offer(SessionDescription.parse(SIPP_UAC), "10.0.0.1", 1, 1, 1, supported=("G729",))
    video = SIPP_UAC.replace("m=audio", "m=video 7000 RTP/AVP 31\r\nm=audio")
    answer, params = answer_offer(SessionDescription.parse(video), "10.0.0.1", 20000, 1, 1)
    assert [m.port for m in answer.media] == [0, 20000]
    assert answer.media[0].media == "video"
    assert params.codec == "PCMU"


def test_dynamic_pt_for_pcmu_by_name():
    text = SIPP_UAC.replace("RTP/AVP 0", "RTP/AVP 98").replace("0 PCMU/8000", "98 pcmu/8000")
    _, params = answer_offer(SessionDescription.parse(text), "10.0.0.1", 20000, 1, 1)
    assert (params.codec, params.pt) == ("PCMU", 98)


def test_ptime_is_reported():
    _, params = answer_offer(
        SessionDescription.parse(SIPP_UAC + "a=ptime:30\r\n"), "10.0.0.1", 20000, 1, 1
    )
    assert params.ptime == 30


def test_offer_answer_round_trip():
    offer = make_offer("10.0.0.1", 30000, 42, 1)
    text = str(offer)
    assert "m=audio 30000 RTP/AVP 0 8 101\r\n" in text
    assert "a=rtpmap:101 telephone-event/8000\r\n" in text
    # The peer (e.g. a phone preferring PCMA) answers our offer.
    peer_answer, peer_params = answer_offer(
        SessionDescription.parse(text), "10.0.0.2", 40000, 9, 1, supported=("PCMA",)
    )
    assert peer_params.remote_addr == ("10.0.0.1", 30000)
    params = accept_answer(offer, SessionDescription.parse(str(peer_answer)))
    assert params == MediaParams("PCMA", 8, 101, ("10.0.0.2", 40000), "sendrecv", 20)


def test_accept_answer_direction_and_errors():
    offer = make_offer("10.0.0.1", 30000, 42, 1, direction="sendonly")
    answer = SessionDescription.parse(SIPP_UAC + "a=recvonly\r\n")
    assert accept_answer(offer, answer).direction == "sendonly"
    answer = SessionDescription.parse(SIPP_UAC)  # sendrecv answer to our sendonly offer
    assert accept_answer(offer, answer).direction == "sendonly"
    bad = SessionDescription.parse(SIPP_UAC.replace("RTP/AVP 0", "RTP/AVP 18"))
    with pytest.raises(NoCommonCodec, match="no codec we offered"):
        accept_answer(offer, bad)
    rejected = SessionDescription.parse(SIPP_UAC.replace("m=audio 6000", "m=audio 0"))
    with pytest.raises(NoCommonCodec, match="rejected"):
        accept_answer(offer, rejected)
    with pytest.raises(ValueError, match="bad direction|direction must be"):
        make_offer("10.0.0.1", 1, 1, 1, direction="sideways")


def test_ipv6_connection():
    text = SIPP_UAC.replace("IN IP4 127.0.0.1", "IN IP6 ::1")
    answer, params = answer_offer(SessionDescription.parse(text), "::1", 20000, 1, 1)
    assert params.remote_addr == ("::1", 6000)
    assert "c=IN IP6 ::1" in str(answer)


def test_unknown_lines_are_kept():
    text = SIPP_UAC + "a=x-weird\r\na=foo:bar baz\r\n"
    text = text.replace("s=-\r\n", "s=-\r\ni=info\r\nu=http://x\r\nz=0 0\r\n")
    sd = SessionDescription.parse(text)
    out = str(sd)
    for line in ("i=info", "u=http://x", "z=0 0", "a=x-weird", "a=foo:bar baz"):
        assert line in out


@pytest.mark.parametrize(
    "text,match",
    [
        ("", "empty"),
        ("hello world", "not '<type>=<value>'"),
        ("o=- 1 1 IN IP4 1.2.3.4\r\n", "start with v="),
        ("v=1\r\n", "version must be 0"),
        ("v=0\r\ns=-\r\n", "no o= line"),
        ("v=0\r\no=- 1 IN IP4 1.2.3.4\r\n", "o= needs 6 fields"),
        ("v=0\r\no=- x 1 IN IP4 1.2.3.4\r\n", "numeric"),
        (SIPP_UAC.replace("c=IN IP4 127.0.0.1", "c=IN IP4"), "c= must be"),
        (SIPP_UAC.replace("m=audio 6000", "m=audio sixthousand"), "m= port"),
        (SIPP_UAC.replace("m=audio 6000 RTP/AVP 0", "m=audio"), "m= needs"),
        (b"v=0\r\n\xff\xfe", "UTF-8"),
    ],
)
def test_garbage_raises_value_error(text, match):
    with pytest.raises(ValueError, match=match) as info:
        SessionDescription.parse(text)
    assert str(info.value).startswith("SDP")


def test_bad_rtpmap_raises_on_answer():
    sd = SessionDescription.parse(SIPP_UAC.replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:zero"))
    with pytest.raises(ValueError, match="SDP a=rtpmap is malformed"):
        answer_offer(sd, "10.0.0.1", 20000, 1, 1)


def test_missing_connection_raises():
    sd = SessionDescription.parse(SIPP_UAC.replace("c=IN IP4 127.0.0.1\r\n", ""))
    with pytest.raises(ValueError, match="no c= line"):
        answer_offer(sd, "10.0.0.1", 20000, 1, 1)
