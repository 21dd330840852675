"""Message framing on stream transports (RFC 3261 §18.3): where one message ends.

Over TCP the bytes of several messages arrive glued or split anywhere; a message is its
header block (up to the blank line) plus exactly Content-Length body bytes, and
Content-Length is mandatory. CRLFs between messages are keepalives (RFC 5626 §3.5.1).
Sans-I/O: feed bytes, get whole messages.
"""

from __future__ import annotations

import re

from .message import SipParseError

MAX_MESSAGE = 65536  # bytes; a peer sending more without a message boundary is dropped

# One header line of the block, anchored on the CRLFs around it: header order is free, so
# Content-Length may be any line, not just the last (linphone's authenticated REGISTER puts
# it before Authorization). RFC 3261 §7.3.1: names are case-insensitive, "l" is its compact
# form (§20.14), whitespace may precede the colon (HCOLON) and the value may follow on a
# folded continuation line (SWS = [*WSP CRLF] 1*WSP, §25.1).
_CONTENT_LENGTH = re.compile(
    rb"\r\n(?:content-length|l)[ \t]*:[ \t]*(?:\r\n[ \t]+)?(\d{1,9})[ \t]*\r\n", re.I
)  # at most 9 digits: anything longer is over MAX_MESSAGE anyway (and int() of 5000 digits raises)


class StreamFramer:
    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Append ``data``; return the messages now complete. Raises SipParseError when
        the stream cannot be framed (the connection must then be closed)."""
        buf = self._buf
        buf += data
        out: list[bytes] = []
        while True:
            start = 0
            while buf[start:start + 2] == b"\r\n":
                start += 2
            if start:
                del buf[:start]
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_MESSAGE:
                    raise SipParseError(f"no end of headers within {MAX_MESSAGE} bytes")
                return out
            # Up to and including the CRLF that ends the last header, so that every header
            # line (the start line's CRLF before the first) is framed by CRLFs. The first
            # Content-Length wins, as in parse_message(): both must agree where a body ends.
            m = _CONTENT_LENGTH.search(bytes(buf[:end + 2]))
            if m is None:
                raise SipParseError("a message on a stream transport needs Content-Length (RFC 3261 §18.3)")
            total = end + 4 + int(m.group(1))
            if total > MAX_MESSAGE:
                raise SipParseError(f"message of {total} bytes is over the {MAX_MESSAGE} byte limit")
            if len(buf) < total:
                return out
            out.append(bytes(buf[:total]))
            del buf[:total]
