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

_CONTENT_LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*(\d+)[ \t]*$", re.I | re.M)


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
            m = _CONTENT_LENGTH.search(bytes(buf[:end]))
            if m is None:
                raise SipParseError("a message on a stream transport needs Content-Length (RFC 3261 §18.3)")
            total = end + 4 + int(m.group(1))
            if total > MAX_MESSAGE:
                raise SipParseError(f"message of {total} bytes is over the {MAX_MESSAGE} byte limit")
            if len(buf) < total:
                return out
            out.append(bytes(buf[:total]))
            del buf[:total]
