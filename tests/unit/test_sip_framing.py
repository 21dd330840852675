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
