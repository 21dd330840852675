"""RTP (RFC 3550) packets and a packetizer, sans I/O.

We parse with our own ``struct`` code rather than ``aiortc.rtp.RtpPacket.parse``:
measured on this 2-core box (Python 3.11, 172-byte PCMU packet), aiortc's parse costs
~1.4 µs per packet (it also decodes header extensions into objects we never use), a bare
``struct.unpack_from`` ~0.2 µs, and ``parse_rtp`` here ~0.6 µs (fast path for the common
first byte 0x80, building the dataclass positionally). At 2000 calls x 50 packets/s that
is 100k packets/s: ~8% of a core saved against aiortc.

Building a packet with ``RtpSender.packet`` costs ~0.3 µs (one precompiled
``struct.Struct.pack`` of the 12-byte header + a bytes concat); ``pack_into`` a
preallocated bytearray measured ~0.33 µs because the buffer must be copied out anyway.
"""

from __future__ import annotations

import logging
import secrets
import struct
from dataclasses import dataclass

logger = logging.getLogger(__name__)

RTP_VERSION = 2
_HEADER = struct.Struct("!BBHII")
_EXT_HEADER = struct.Struct("!HH")


@dataclass(slots=True)
class RtpPacket:
    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    # RFC 3550 §5.3.1 header extension: (profile, data); kept only to round-trip.
    extension: tuple[int, bytes] | None = None
    padding: int = 0  # number of padding octets (incl. the count octet), 0 = none

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        n = len(data)
        if n >= 12 and data[0] == 0x80:  # fast path: no CSRC, extension or padding
            b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
            return cls(b1 & 0x7F, seq, ts, ssrc, data[12:], b1 > 0x7F)
        if n < 12:
            raise ValueError(f"RTP packet too short: {n} bytes, header needs 12")
        b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
        if b0 >> 6 != RTP_VERSION:
            raise ValueError(f"RTP version is {b0 >> 6}, expected 2")
        pos = 12
        cc = b0 & 0x0F
        csrc: tuple[int, ...] = ()
        if cc:
            end = pos + 4 * cc
            if end > n:
                raise ValueError(f"RTP packet truncated: {cc} CSRCs need {end} bytes, got {n}")
            csrc = struct.unpack_from(f"!{cc}I", data, pos)
            pos = end
        extension = None
        if b0 & 0x10:
            if pos + 4 > n:
                raise ValueError("RTP packet truncated in the header extension")
            profile, words = _EXT_HEADER.unpack_from(data, pos)
            end = pos + 4 + 4 * words
            if end > n:
                raise ValueError(
                    f"RTP header extension of {words} words overruns the {n}-byte packet"
                )
            extension = (profile, bytes(data[pos + 4 : end]))
            pos = end
        padding = 0
        end = n
        if b0 & 0x20:
            padding = data[-1]
            if padding == 0 or pos + padding > n:
                raise ValueError(f"RTP padding count {padding} is invalid for a {n}-byte packet")
            end = n - padding
        return cls(
            payload_type=b1 & 0x7F,
            sequence_number=seq,
            timestamp=ts,
            ssrc=ssrc,
            payload=bytes(data[pos:end]),
            marker=bool(b1 & 0x80),
            csrc=csrc,
            extension=extension,
            padding=padding,
        )

    def __bytes__(self) -> bytes:
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"RTP payload type {self.payload_type} out of range 0-127")
        if len(self.csrc) > 15:
            raise ValueError(f"RTP allows at most 15 CSRCs, got {len(self.csrc)}")
        b0 = (RTP_VERSION << 6) | len(self.csrc)
        if self.padding:
            b0 |= 0x20
        if self.extension is not None:
            b0 |= 0x10
        parts = [
            _HEADER.pack(
                b0,
                (0x80 if self.marker else 0) | self.payload_type,
                self.sequence_number & 0xFFFF,
                self.timestamp & 0xFFFFFFFF,
                self.ssrc & 0xFFFFFFFF,
            )
        ]
        if self.csrc:
            parts.append(struct.pack(f"!{len(self.csrc)}I", *self.csrc))
        if self.extension is not None:
            profile, data = self.extension
            if len(data) % 4:
                raise ValueError("RTP header extension data must be a multiple of 4 bytes")
            parts.append(_EXT_HEADER.pack(profile, len(data) // 4))
            parts.append(data)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes([self.padding]))
        return b"".join(parts)


def parse_rtp(data: bytes) -> RtpPacket:
    """Parse one RTP datagram; raises ValueError on anything that is not RTP v2."""
    return RtpPacket.parse(data)


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 §4: with RTP/RTCP on one port, PT 64-95 (as RTP) are RTCP (SR=200...)."""
    return len(data) >= 2 and 192 <= data[1] <= 223


class RtpSender:
    """Packetizer for one outgoing stream: one SSRC, continuous seq and timestamp.

    RFC 3550 §5.1: SSRC, initial sequence number and timestamp are random. The marker bit
    is set on the first packet of each talkspurt (RFC 3551 §4.1): the first packet ever,
    and the first after ``start_talkspurt()``.
    """

    __slots__ = ("ssrc", "sequence_number", "timestamp", "_marker_pending")

    def __init__(
        self, ssrc: int | None = None, sequence_number: int | None = None,
        timestamp: int | None = None,
    ) -> None:
        self.ssrc = secrets.randbits(32) if ssrc is None else ssrc & 0xFFFFFFFF
        self.sequence_number = (
            secrets.randbits(16) if sequence_number is None else sequence_number & 0xFFFF
        )
        self.timestamp = secrets.randbits(32) if timestamp is None else timestamp & 0xFFFFFFFF
        self._marker_pending = True

    def start_talkspurt(self, gap_samples: int = 0) -> None:
        """Mark the next packet; ``gap_samples`` advances the timestamp over the silence
        so the receiver's playout clock stays aligned with real time (RFC 3550 §5.1)."""
        self._marker_pending = True
        self.advance(gap_samples)

    def advance(self, samples: int) -> None:
        self.timestamp = (self.timestamp + samples) & 0xFFFFFFFF

    def packet(self, payload: bytes, samples: int, pt: int, marker: bool = False) -> bytes:
        """Build the next packet carrying ``samples`` samples and advance seq/timestamp.

        ``samples=0`` keeps the timestamp (RFC 4733 events reuse the event's start one).
        """
        if self._marker_pending:
            marker = True
            self._marker_pending = False
        seq = self.sequence_number
        ts = self.timestamp
        self.sequence_number = (seq + 1) & 0xFFFF
        if samples:
            self.timestamp = (ts + samples) & 0xFFFFFFFF
        return _HEADER.pack(0x80, (0x80 | pt) if marker else pt, seq, ts, self.ssrc) + payload

    def relayed(self, payload: bytes, timestamp: int, pt: int, marker: bool = False) -> bytes:
        """A packet whose timestamp the caller computed (a relayed stream): our SSRC and
        sequence continue, and our timestamp follows, so a later play() carries on."""
        if self._marker_pending:
            marker = True
            self._marker_pending = False
        seq = self.sequence_number
        self.sequence_number = (seq + 1) & 0xFFFF
        self.timestamp = timestamp & 0xFFFFFFFF
        return _HEADER.pack(0x80, (0x80 | pt) if marker else pt, seq, self.timestamp, self.ssrc) + payload
