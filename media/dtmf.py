"""RFC 4733 telephone-events (DTMF over RTP), sans I/O."""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator
from dataclasses import dataclass

logger = logging.getLogger(__name__)

# RFC 4733 §3.2: events 0-9, 10 = '*', 11 = '#', 12-15 = A-D.
DIGITS = "0123456789*#ABCD"
_EVENT_OF = {d: i for i, d in enumerate(DIGITS)}
_PAYLOAD = struct.Struct("!BBH")


@dataclass(slots=True)
class TelephoneEvent:
    event: int
    end: bool
    volume: int  # 0..63, in -dBm0
    duration: int  # in RTP timestamp units (samples at 8 kHz)

    @classmethod
    def parse(cls, data: bytes) -> TelephoneEvent:
        if len(data) < 4:
            raise ValueError(f"RFC 4733 payload too short: {len(data)} bytes, need 4")
        event, flags, duration = _PAYLOAD.unpack_from(data)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)

    def __bytes__(self) -> bytes:
        if not 0 <= self.event <= 255:
            raise ValueError(f"RFC 4733 event {self.event} out of range 0-255")
        if not 0 <= self.volume <= 63:
            raise ValueError(f"RFC 4733 volume {self.volume} out of range 0-63")
        if not 0 <= self.duration <= 0xFFFF:
            raise ValueError(f"RFC 4733 duration {self.duration} out of range 0-65535")
        return _PAYLOAD.pack(self.event, (0x80 if self.end else 0) | self.volume, self.duration)

    @property
    def digit(self) -> str | None:
        return DIGITS[self.event] if self.event < len(DIGITS) else None


class DtmfReceiver:
    """Turns a telephone-event packet stream into digits, each event exactly once.

    An event is identified by its RTP timestamp (RFC 4733 §2.5.1.2: all packets of one
    event carry the event's start timestamp). We report a digit on its first end packet
    (the end is sent three times, §2.5.1.4), or, if the end packets were all lost, when a
    packet with a new timestamp shows the previous event is over. Reporting at the end
    rather than at the start costs the digit's duration (~100 ms) but lets a lost start
    packet or a long key press still count once.
    """

    _REMEMBER = 16  # recently reported timestamps, against late/reordered end packets

    __slots__ = ("_pending", "_reported")

    def __init__(self) -> None:
        self._pending: tuple[int, str] | None = None  # (timestamp, digit) not yet reported
        # A tuple, not a deque(maxlen=16): every leg has a receiver and most never see a
        # digit; an empty deque is ~760 bytes, the empty tuple is shared.
        self._reported: tuple[int, ...] = ()

    def feed(self, timestamp: int, payload: bytes) -> list[str]:
        """Feed one telephone-event packet; returns the digits it completes (0, 1 or 2)."""
        ev = TelephoneEvent.parse(payload)
        out: list[str] = []
        if self._pending is not None and self._pending[0] != timestamp:
            out.append(self._report(*self._pending))
        if timestamp in self._reported:
            return out
        digit = ev.digit
        if digit is None:  # flash-hook or other non-DTMF events: ignore
            logger.debug("ignoring telephone-event %d", ev.event)
            return out
        if ev.end:
            out.append(self._report(timestamp, digit))
        else:
            self._pending = (timestamp, digit)
        return out

    def flush(self) -> list[str]:
        """Report an event that never ended (call it when the stream stops)."""
        if self._pending is None:
            return []
        return [self._report(*self._pending)]

    def _report(self, timestamp: int, digit: str) -> str:
        self._pending = None
        self._reported = (*self._reported[1 - self._REMEMBER:], timestamp)
        return digit


def dtmf_packets(
    digit: str,
    duration_ms: int = 100,
    volume: int = 10,
    interval_ms: int = 20,
    end_repeats: int = 3,
    clock_rate: int = 8000,
) -> Iterator[bytes]:
    """Payloads to send for one digit, one per ``interval_ms`` (RFC 4733 §2.5.1).

    All go out with the same RTP timestamp (the event start) and the marker on the first;
    durations grow each interval; the last duration is repeated in ``end_repeats`` end
    packets (the caller may send those back to back or at the interval).
    """
    if digit not in _EVENT_OF:
        raise ValueError(f"DTMF digit must be one of {DIGITS!r}, not {digit!r}")
    if duration_ms <= 0 or interval_ms <= 0:
        raise ValueError("DTMF duration and interval must be positive")
    event = _EVENT_OF[digit]
    step = clock_rate * interval_ms // 1000
    total = min(clock_rate * duration_ms // 1000, 0xFFFF)
    d = step
    while d < total:
        yield bytes(TelephoneEvent(event, False, volume, d))
        d += step
    for _ in range(end_repeats):
        yield bytes(TelephoneEvent(event, True, volume, total))
