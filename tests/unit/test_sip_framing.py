"""Framing SIP messages on a TCP byte stream (RFC 3261 §18.3)."""

import pytest

from switch.sip.framing import StreamFramer
from switch.sip.message import SipParseError

MSG = (b"OPTIONS sip:a@h SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nCall-ID: c\r\n"
       b"Content-Length: 5\r\n\r\nhello")


def test_split_anywhere_and_glued_messages():
    framer = StreamFramer()
    stream = b"\r\n\r\n" + MSG + MSG.replace(b"Content-Length", b"l") + MSG
    got = []
    for i in range(0, len(stream), 7):  # 7-byte chunks: boundaries fall everywhere
        got += framer.feed(stream[i:i + 7])
    assert got == [MSG, MSG.replace(b"Content-Length", b"l"), MSG]


def test_missing_content_length_and_oversize_are_errors():
    with pytest.raises(SipParseError, match="Content-Length"):
        StreamFramer().feed(MSG.replace(b"Content-Length: 5\r\n", b""))
    with pytest.raises(SipParseError, match="limit"):
        StreamFramer().feed(MSG.replace(b"Content-Length: 5", b"Content-Length: 999999"))
    with pytest.raises(SipParseError, match="end of headers"):
        StreamFramer().feed(b"X" * 70000)


# RFC 3261 §7.3.1: header order is free, names are case-insensitive, "l" is the compact
# form and whitespace may surround the colon. linphone's authenticated REGISTER puts
# Content-Length before Authorization; the framer must find it on any line.
VIA = b"Via: SIP/2.0/TCP h;branch=z9hG4bK1\r\n"
CALL_ID = b"Call-ID: c\r\n"
AUTH = b'Authorization: Digest username="alice", realm="pbx", nonce="n", uri="sip:h"\r\n'


def message(*headers: bytes, body: bytes = b"hello") -> bytes:
    return b"REGISTER sip:h SIP/2.0\r\n" + b"".join(headers) + b"\r\n" + body


@pytest.mark.parametrize("cl", [
    b"Content-Length: 5\r\n", b"l: 5\r\n", b"L:5\r\n", b"content-LENGTH: 5\r\n",
    b"Content-Length \t: \t5 \r\n", b"Content-Length:\r\n 5\r\n",  # folded value (§7.3.1)
], ids=["full", "compact", "compact-upper", "mixed-case", "spaces-around-colon", "folded"])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_content_length_found_on_any_header_line(cl: bytes, where: str) -> None:
    others = [VIA, AUTH, CALL_ID]
    at = {"first": 0, "middle": 1, "last": 3}[where]
    msg = message(*others[:at], cl, *others[at:])
    framer = StreamFramer()
    # Glued to a second message: the first must end exactly after its 5 body bytes.
    assert framer.feed(msg + MSG) == [msg, MSG]


def test_content_length_zero_before_other_headers_frames_a_bodyless_message() -> None:
    msg = message(b"Content-Length: 0\r\n", VIA, AUTH, CALL_ID, body=b"")
    assert StreamFramer().feed(msg + msg) == [msg, msg]


def test_body_split_across_reads_with_content_length_first() -> None:
    body = b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\n"
    msg = message(b"l: %d\r\n" % len(body), VIA, CALL_ID, body=body)
    head_end = msg.index(b"\r\n\r\n") + 4
    framer = StreamFramer()
    assert framer.feed(msg[:head_end]) == []  # headers complete, body not yet
    assert framer.feed(msg[head_end:head_end + 10]) == []
    assert framer.feed(msg[head_end + 10:-1]) == []
    assert framer.feed(msg[-1:] + b"\r\n") == [msg]  # then a CRLF keepalive
    assert framer.feed(MSG) == [MSG]


def test_only_a_whole_header_name_counts() -> None:
    # "X-Content-Length" and a value of "l" in another header are not Content-Length.
    for decoy in (b"X-Content-Length: 5\r\n", b"Subject: l: 5\r\n", b"Xl: 5\r\n"):
        with pytest.raises(SipParseError, match="Content-Length"):
            StreamFramer().feed(message(decoy, VIA, CALL_ID, body=b""))


def test_first_content_length_wins_like_the_parser() -> None:
    # parse_message() reads the first value; framing must cut the body at the same place.
    msg = message(b"Content-Length: 2\r\n", VIA, b"Content-Length: 5\r\n", body=b"hi")
    assert StreamFramer().feed(msg + MSG) == [msg, MSG]
