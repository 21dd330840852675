"""RTCP (RFC 3550 §6): compound SR/RR + SDES CNAME (+ BYE), reception statistics and the
report schedule, sans I/O.

Design (issue 11, "silent calls are dropped by the phone"):

- We are a B2BUA, so each leg is an RTP session of its own (RFC 7667 §3.2.2,
  "Topo-Back-To-Back"): the relay rewrites SSRC, sequence numbers and timestamps
  (media/relay.py), so the peer of one leg never sees the SSRC of the other. RTCP is
  therefore *terminated* per leg, never forwarded: each leg's ``RtcpSession`` reports
  what that leg sent (SR sender info) and received (one report block about the peer's
  source), and consumes the peer's reports about us. Forwarding the other leg's
  reports would describe a stream this peer never received (RFC 3550 §7.3: a
  translator that rewrites sequence numbers would have to rewrite every report block).
- Reception statistics (``ReceptionStats``) are computed from the RTP we receive with
  the algorithms of RFC 3550 A.1 (sequence validation, extended highest sequence
  number), A.3 (cumulative and interval loss) and A.8 (interarrival jitter); they feed
  our report blocks *and* the call's log line, next to what the peer reported of us
  (``PeerReport``), so one line says both directions.
- The interval is RFC 3550 §6.2/§6.3 (A.7): 5% of the session bandwidth, a 5 s minimum
  (2.5 s before our first report, the "reduced initial interval" of §6.2), randomised
  over [0.5, 1.5] times the deterministic value. With one peer per session the
  bandwidth term is ~0.3 s, so the minimum always rules: a report every 2.5-7.5 s. We
  leave out timer reconsideration (§6.3.3-§6.3.6) and with it the e - 3/2 compensation
  divisor of §6.3.1, which exists only to offset reconsideration: a two-member unicast
  session has no membership changes to reconsider.
- SDES carries only CNAME (mandatory, §6.5.1), a random per-session value as RFC 7022
  §4.2 recommends over user@host (no host or user name leaks to the peer).

Objects are dataclasses with ``parse()``/``__bytes__``; malformed input raises
``ValueError`` with what is wrong. ``parse_compound`` applies the RFC 3550 A.2 validity
checks. The per-packet path (``ReceptionStats.update``) is a few integer operations:
it runs for every received RTP packet of every call.
"""

from __future__ import annotations

import functools
import logging
import random
import secrets
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

logger = logging.getLogger(__name__)

RTCP_VERSION = 2
PT_SR = 200
PT_RR = 201
PT_SDES = 202
PT_BYE = 203
PT_APP = 204
SDES_END = 0
SDES_CNAME = 1

NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900-01-01 (NTP) to 1970-01-01 (Unix)
RTCP_MIN_INTERVAL = 5.0  # §6.2: the recommended fixed minimum, in seconds
RTCP_BANDWIDTH_FRACTION = 0.05  # §6.2: RTCP gets 5% of the session bandwidth
# §6.2: session bandwidth counts IP and UDP headers too. G.711 at 20 ms: 50 packets/s
# of 160 payload + 12 RTP + 8 UDP + 20 IPv4 octets = 10 000 octets/s (80 kbit/s).
G711_SESSION_BANDWIDTH = 50 * (160 + 12 + 8 + 20)
UDP_IP_OVERHEAD = 28  # §6.3.3: avg_rtcp_size includes lower-layer headers (IPv4 + UDP)

_HEADER = struct.Struct("!BBH")  # V/P/count, PT, length in 32-bit words minus one
_SSRC = struct.Struct("!I")
_SENDER_INFO = struct.Struct("!IQIII")  # SSRC, NTP, RTP timestamp, packets, octets
_REPORT_BLOCK = struct.Struct("!IIIIII")  # SSRC, lost (8 + 24 bits), ext seq, jitter, LSR, DLSR
_U32 = 0xFFFFFFFF
_MAX_LOST = 0x7FFFFF  # §6.4.1: cumulative lost is a signed 24-bit field
_MIN_LOST = -0x800000
_RTT_SLACK = 65536 * 10 // 1000  # 10 ms in the 1/65536 s units of LSR/DLSR
# RFC 3550 A.1's constants (module globals: read on every packet, cheaper than self.X)
_MAX_DROPOUT = 3000
_MAX_MISORDER = 100
_SEQ_MOD = 1 << 16


def ntp_timestamp(unix_time: float) -> int:
    """64-bit NTP timestamp (§4): seconds since 1900 in the high 32 bits, fraction low."""
    return round((unix_time + NTP_EPOCH_OFFSET) * (1 << 32)) & 0xFFFFFFFFFFFFFFFF


def ntp_middle(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp: the LSR field of §6.4.1 (1/65536 s units)."""
    return (ntp >> 16) & _U32


def _header(count: int, packet_type: int, body_len: int) -> bytes:
    if body_len % 4:
        raise ValueError(f"RTCP packet body of {body_len} octets is not a multiple of 4")
    if not 0 <= count <= 31:
        raise ValueError(f"RTCP count field {count} does not fit in 5 bits")
    return _HEADER.pack((RTCP_VERSION << 6) | count, packet_type, body_len // 4)


def _pad4(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)


# --------------------------------------------------------------------------- packets


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """§6.4.1 reception report block: what the reporter received from ``ssrc``."""

    ssrc: int
    fraction_lost: int  # lost / expected since the previous report, in 1/256
    cumulative_lost: int  # signed: duplicates can make it negative
    highest_seq: int  # extended highest sequence number received (cycles << 16 | seq)
    jitter: int  # interarrival jitter, RTP timestamp units
    lsr: int = 0  # middle 32 bits of the last SR's NTP timestamp from ssrc; 0: none yet
    dlsr: int = 0  # delay since that SR, 1/65536 s

    SIZE = _REPORT_BLOCK.size

    @classmethod
    def parse(cls, data: bytes, offset: int = 0) -> ReportBlock:
        if offset + cls.SIZE > len(data):
            raise ValueError(f"RTCP report block truncated: needs {cls.SIZE} octets at {offset}")
        ssrc, lost, ext, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(data, offset)
        cumulative = lost & 0xFFFFFF
        if cumulative & 0x800000:  # two's complement, 24 bits
            cumulative -= 1 << 24
        return cls(ssrc, lost >> 24, cumulative, ext, jitter, lsr, dlsr)

    def __bytes__(self) -> bytes:
        if not 0 <= self.fraction_lost <= 255:
            raise ValueError(f"RTCP fraction lost {self.fraction_lost} is not 0-255")
        lost = max(_MIN_LOST, min(_MAX_LOST, self.cumulative_lost)) & 0xFFFFFF
        return _REPORT_BLOCK.pack(self.ssrc & _U32, (self.fraction_lost << 24) | lost,
                                  self.highest_seq & _U32, self.jitter & _U32,
                                  self.lsr & _U32, self.dlsr & _U32)


def _parse_blocks(body: bytes, offset: int, count: int, what: str) -> tuple[ReportBlock, ...]:
    end = offset + count * ReportBlock.SIZE
    if end > len(body):
        raise ValueError(f"RTCP {what} claims {count} report blocks but has room for "
                         f"{(len(body) - offset) // ReportBlock.SIZE}")
    return tuple(ReportBlock.parse(body, offset + i * ReportBlock.SIZE) for i in range(count))


@dataclass(frozen=True, slots=True)
class SenderReport:
    """§6.4.1 SR: sender info about our own stream, then report blocks."""

    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int  # the same instant as ntp_timestamp, on the RTP clock
    packet_count: int
    octet_count: int  # payload octets only
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""  # profile-specific extension (§6.4.3), kept to round-trip

    @classmethod
    def parse_body(cls, count: int, body: bytes) -> SenderReport:
        if len(body) < _SENDER_INFO.size:
            raise ValueError(f"RTCP SR is {len(body)} octets, sender info needs {_SENDER_INFO.size}")
        ssrc, ntp, rtp_ts, packets, octets = _SENDER_INFO.unpack_from(body)
        reports = _parse_blocks(body, _SENDER_INFO.size, count, "SR")
        ext = bytes(body[_SENDER_INFO.size + count * ReportBlock.SIZE:])
        return cls(ssrc, ntp, rtp_ts, packets, octets, reports, ext)

    def __bytes__(self) -> bytes:
        body = (_SENDER_INFO.pack(self.ssrc & _U32, self.ntp_timestamp & 0xFFFFFFFFFFFFFFFF,
                                  self.rtp_timestamp & _U32, self.packet_count & _U32,
                                  self.octet_count & _U32)
                + b"".join(bytes(b) for b in self.reports) + self.extension)
        return _header(len(self.reports), PT_SR, len(body)) + body


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    """§6.4.2 RR: report blocks from a participant that sent no RTP lately."""

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""

    @classmethod
    def parse_body(cls, count: int, body: bytes) -> ReceiverReport:
        if len(body) < 4:
            raise ValueError("RTCP RR has no SSRC")
        (ssrc,) = _SSRC.unpack_from(body)
        reports = _parse_blocks(body, 4, count, "RR")
        return cls(ssrc, reports, bytes(body[4 + count * ReportBlock.SIZE:]))

    def __bytes__(self) -> bytes:
        body = _SSRC.pack(self.ssrc & _U32) + b"".join(bytes(b) for b in self.reports) + self.extension
        return _header(len(self.reports), PT_RR, len(body)) + body


@dataclass(frozen=True, slots=True)
class SdesChunk:
    """§6.5: one source's items as (type, value) pairs, e.g. (SDES_CNAME, b"abc")."""

    ssrc: int
    items: tuple[tuple[int, bytes], ...]

    @property
    def cname(self) -> str | None:
        for kind, value in self.items:
            if kind == SDES_CNAME:
                return value.decode("utf-8", "replace")
        return None

    def __bytes__(self) -> bytes:
        out = [_SSRC.pack(self.ssrc & _U32)]
        for kind, value in self.items:
            if not 1 <= kind <= 255 or len(value) > 255:
                raise ValueError(f"SDES item type {kind} / length {len(value)} out of range")
            out.append(bytes((kind, len(value))) + value)
        # §6.5: the list ends with a null octet, then nulls up to the next 32-bit boundary.
        return _pad4(b"".join(out) + b"\x00")


@dataclass(frozen=True, slots=True)
class SourceDescription:
    """§6.5 SDES."""

    chunks: tuple[SdesChunk, ...]

    @classmethod
    def parse_body(cls, count: int, body: bytes) -> SourceDescription:
        chunks: list[SdesChunk] = []
        pos = 0
        for _ in range(count):
            if pos + 4 > len(body):
                raise ValueError(f"RTCP SDES claims {count} chunks but ends after {len(chunks)}")
            (ssrc,) = _SSRC.unpack_from(body, pos)
            pos += 4
            items: list[tuple[int, bytes]] = []
            while True:
                if pos >= len(body):
                    raise ValueError("RTCP SDES chunk has no end (null) item")
                kind = body[pos]
                if kind == SDES_END:
                    pos = (pos + 4) & ~3  # skip the null and the padding to the boundary
                    break
                if pos + 2 > len(body) or pos + 2 + body[pos + 1] > len(body):
                    raise ValueError(f"RTCP SDES item type {kind} overruns the packet")
                length = body[pos + 1]
                items.append((kind, bytes(body[pos + 2:pos + 2 + length])))
                pos += 2 + length
            chunks.append(SdesChunk(ssrc, tuple(items)))
        return cls(tuple(chunks))

    def __bytes__(self) -> bytes:
        body = b"".join(bytes(c) for c in self.chunks)
        return _header(len(self.chunks), PT_SDES, len(body)) + body


@dataclass(frozen=True, slots=True)
class Bye:
    """§6.6 BYE: these sources are leaving, with an optional reason."""

    ssrcs: tuple[int, ...]
    reason: str = ""

    @classmethod
    def parse_body(cls, count: int, body: bytes) -> Bye:
        end = 4 * count
        if end > len(body):
            raise ValueError(f"RTCP BYE claims {count} SSRCs but has room for {len(body) // 4}")
        ssrcs = struct.unpack_from(f"!{count}I", body)
        reason = ""
        if end < len(body) and body[end]:
            length = body[end]
            if end + 1 + length > len(body):
                raise ValueError(f"RTCP BYE reason of {length} octets overruns the packet")
            reason = bytes(body[end + 1:end + 1 + length]).decode("utf-8", "replace")
        return cls(tuple(ssrcs), reason)

    def __bytes__(self) -> bytes:
        body = struct.pack(f"!{len(self.ssrcs)}I", *(s & _U32 for s in self.ssrcs))
        if self.reason:
            text = self.reason.encode("utf-8")[:255]
            body += _pad4(bytes((len(text),)) + text)
        return _header(len(self.ssrcs), PT_BYE, len(body)) + body


@dataclass(frozen=True, slots=True)
class OtherRtcp:
    """APP, XR, feedback...: carried through a compound packet, not interpreted."""

    packet_type: int
    count: int
    body: bytes

    def __bytes__(self) -> bytes:
        return _header(self.count, self.packet_type, len(self.body)) + self.body


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Bye | OtherRtcp

_PARSERS: dict[int, Callable[[int, bytes], RtcpPacket]] = {
    PT_SR: SenderReport.parse_body,
    PT_RR: ReceiverReport.parse_body,
    PT_SDES: SourceDescription.parse_body,
    PT_BYE: Bye.parse_body,
}


def parse_compound(data: bytes, *, strict: bool = True) -> list[RtcpPacket]:
    """Split and parse one RTCP datagram. Raises ValueError on anything malformed.

    RFC 3550 A.2 checks: every packet is version 2, the lengths add up to the datagram,
    only the last packet may be padded, and (``strict``) the first packet is an SR or RR.
    ``strict=False`` also takes reduced-size RTCP (RFC 5506: e.g. a lone feedback packet),
    which some WebRTC gateways send.
    """
    packets: list[RtcpPacket] = []
    pos, n = 0, len(data)
    if n < 4:
        raise ValueError(f"RTCP datagram of {n} octets is shorter than a header")
    while pos < n:
        if pos + 4 > n:
            raise ValueError(f"RTCP datagram has {n - pos} stray octets after its packets")
        b0, pt, words = _HEADER.unpack_from(data, pos)
        if b0 >> 6 != RTCP_VERSION:
            raise ValueError(f"RTCP version is {b0 >> 6}, expected 2")
        end = pos + 4 + 4 * words
        if end > n:
            raise ValueError(f"RTCP packet type {pt} of {4 + 4 * words} octets overruns the "
                             f"{n}-octet datagram")
        body = data[pos + 4:end]
        if b0 & 0x20:  # padding: the last octet counts the padding octets (§6.4.1)
            if end != n:
                raise ValueError("RTCP padding on a packet that is not the last of the compound")
            pad = body[-1] if body else 0
            if pad == 0 or pad > len(body):
                raise ValueError(f"RTCP padding count {pad} is invalid for a {len(body)}-octet body")
            body = body[:-pad]
        if not packets and strict and pt not in (PT_SR, PT_RR):
            raise ValueError(f"RTCP compound packet starts with type {pt}, not SR or RR (RFC 3550 A.2)")
        count = b0 & 0x1F
        parser = _PARSERS.get(pt)
        packets.append(parser(count, bytes(body)) if parser else OtherRtcp(pt, count, bytes(body)))
        pos = end
    return packets


def build_compound(packets: Sequence[RtcpPacket]) -> bytes:
    """One datagram of ``packets`` in order (§6.1: SR or RR first, then SDES with CNAME)."""
    return b"".join(bytes(p) for p in packets)


# --------------------------------------------------------------------------- statistics


class ReceptionStats:
    """One incoming source: RFC 3550 A.1 sequence tracking, A.3 loss, A.8 jitter.

    A new source is on probation until ``MIN_SEQUENTIAL`` packets arrive in sequence
    (A.1): stray packets do not start a bogus source. A jump of more than
    ``MAX_DROPOUT`` is taken for a restart of the sender once two packets confirm it.
    """

    __slots__ = ("ssrc", "clock_rate", "max_seq", "cycles", "base_seq", "bad_seq", "probation",
                 "received", "expected_prior", "received_prior", "transit", "jitter",
                 "sr_lsr", "sr_arrival")

    MIN_SEQUENTIAL = 2
    MAX_DROPOUT = _MAX_DROPOUT
    MAX_MISORDER = _MAX_MISORDER
    SEQ_MOD = _SEQ_MOD

    def __init__(self, ssrc: int, seq: int, clock_rate: int = 8000) -> None:
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self._init_seq(seq)
        self.max_seq = (seq - 1) & 0xFFFF  # A.1: the first packet starts probation
        self.probation = self.MIN_SEQUENTIAL
        self.transit: float | None = None
        self.jitter = 0.0  # RTP timestamp units, as A.8 keeps it
        self.sr_lsr = 0  # middle 32 bits of the last SR's NTP timestamp (§6.4.1 LSR)
        self.sr_arrival = 0.0  # our clock when that SR arrived

    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = self.SEQ_MOD + 1  # matches no sequence number
        self.cycles = 0
        self.received = 0
        self.expected_prior = 0
        self.received_prior = 0

    @property
    def valid(self) -> bool:
        """Past probation: the source is real and report blocks may describe it."""
        return self.probation == 0

    def update(self, seq: int, timestamp: int, arrival: float, timing: bool = True) -> bool:
        """Account one RTP packet; ``arrival`` is our clock in seconds. False: the packet
        was not counted (probation, or a jump awaiting confirmation). ``timing=False``
        keeps the packet out of the jitter estimate (RFC 4733 events repeat their start
        timestamp, which would read as jitter).

        Runs for every packet of every call: the common case (in order, no probation)
        is a handful of operations, the A.8 step inline (~0.5 µs here).
        """
        if self.probation:
            return self._on_probation(seq, timestamp, arrival, timing)
        max_seq = self.max_seq
        delta = (seq - max_seq) & 0xFFFF
        if delta < _MAX_DROPOUT:  # in order, possibly with a gap
            if seq < max_seq:
                self.cycles += _SEQ_MOD  # wrapped
            self.max_seq = seq
        elif delta <= _SEQ_MOD - _MAX_MISORDER:  # a very large jump
            if seq != self.bad_seq:
                self.bad_seq = (seq + 1) & 0xFFFF
                return False
            # Two packets in sequence after the jump: the sender restarted; resync.
            self._init_seq(seq)
        # else: a duplicate or reordered packet, counted (A.1) but moving nothing
        self.received += 1
        if timing:
            # A.8: transit = arrival - timestamp in RTP units; the jitter follows |D|, the
            # change in transit, with gain 1/16. A timestamp wrap shows as |D| near 2^32.
            transit = arrival * self.clock_rate - timestamp
            last = self.transit
            self.transit = transit
            if last is not None:
                d = abs(transit - last)
                if d >= 2147483648.0:
                    d = 4294967296.0 - d
                self.jitter += (d - self.jitter) * 0.0625
        return True

    def _on_probation(self, seq: int, timestamp: int, arrival: float, timing: bool) -> bool:
        if seq != (self.max_seq + 1) & 0xFFFF:
            self.probation = self.MIN_SEQUENTIAL - 1
            self.max_seq = seq
            return False
        self.probation -= 1
        self.max_seq = seq
        if self.probation:
            return False
        self._init_seq(seq)
        self.received = 1
        if timing:
            self.transit = arrival * self.clock_rate - timestamp
        return True

    @property
    def extended_max(self) -> int:
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        return self.extended_max - self.base_seq + 1 if self.valid else 0

    @property
    def lost(self) -> int:
        """A.3 cumulative lost (negative when duplicates outnumber losses)."""
        return self.expected - self.received if self.valid else 0

    @property
    def jitter_ms(self) -> float:
        return 1000.0 * self.jitter / self.clock_rate

    def sender_report(self, ntp: int, arrival: float) -> None:
        """The source's SR arrived: remember it for LSR/DLSR (§6.4.1)."""
        self.sr_lsr = ntp_middle(ntp)
        self.sr_arrival = arrival

    def report_block(self, now: float) -> ReportBlock:
        """The block for our next SR/RR; starts a new loss interval (A.3)."""
        expected = self.expected
        expected_interval = expected - self.expected_prior
        self.expected_prior = expected
        received_interval = self.received - self.received_prior
        self.received_prior = self.received
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        dlsr = round((now - self.sr_arrival) * 65536) & _U32 if self.sr_lsr else 0
        return ReportBlock(self.ssrc, fraction, self.lost, self.extended_max & _U32,
                           int(self.jitter), self.sr_lsr, dlsr)


# --------------------------------------------------------------------------- interval


def rtcp_interval(
    members: int, senders: int, rtcp_bandwidth: float, we_sent: bool, avg_rtcp_size: float,
    initial: bool, rng: Callable[[], float] = random.random,
) -> float:
    """Seconds to the next report: RFC 3550 §6.3.1 / A.7 without reconsideration.

    ``rtcp_bandwidth`` is the RTCP share in octets/s (5% of the session's, §6.2); when
    senders are at most a quarter of the members they get a quarter of it (§6.2). The
    deterministic interval is at least ``RTCP_MIN_INTERVAL`` (half that while ``initial``),
    then randomised to [0.5, 1.5] times itself so reports do not synchronise (§6.2).
    """
    if members < 1 or rtcp_bandwidth <= 0 or avg_rtcp_size <= 0:
        raise ValueError(f"rtcp_interval needs members >= 1 and positive sizes, got "
                         f"{members}, {rtcp_bandwidth}, {avg_rtcp_size}")
    t_min = RTCP_MIN_INTERVAL / 2 if initial else RTCP_MIN_INTERVAL
    n = members
    if 0 < senders <= members * 0.25:
        if we_sent:
            rtcp_bandwidth *= 0.25
            n = senders
        else:
            rtcp_bandwidth *= 0.75
            n = members - senders
    t = max(t_min, avg_rtcp_size * n / rtcp_bandwidth)
    return t * (rng() + 0.5)


# --------------------------------------------------------------------------- session


@dataclass(frozen=True, slots=True)
class PeerReport:
    """What the peer last reported about the RTP we send it (one report block)."""

    fraction_lost: float  # 0..1, over the peer's last report interval
    cumulative_lost: int
    highest_seq: int
    jitter_ms: float
    rtt_ms: float | None  # §6.4.1 round trip from LSR/DLSR; None before the peer saw an SR


def _sdes_length(cname_length: int) -> int:
    """Bytes of an SDES packet with one chunk carrying one CNAME item (§6.5): header,
    SSRC, type and length octets, the text, then at least one null octet up to a
    32-bit boundary."""
    return 4 + 4 + (2 + cname_length) // 4 * 4 + 4


def new_cname() -> str:
    """RFC 7022 §4.2: a random 96-bit CNAME, base64 (RFC 4648 §5 alphabet), 16 chars."""
    return secrets.token_urlsafe(12)


class RtcpSession:
    """RTCP for one leg's RTP session, sans I/O: feed it what arrives, ask it what to send.

    ``now`` is the caller's monotonic clock (the event loop's); ``wallclock_offset`` maps
    it to Unix time for the NTP timestamps of our SRs (``now + offset``), so the clock
    read by tests and by the loop is one and the same. The caller sends ``report()``
    when ``deadline`` is reached and ``bye()`` when the leg ends.
    """

    def __init__(
        self, ssrc: int, now: float, *, cname: str | None = None, clock_rate: int = 8000,
        session_bandwidth: float = G711_SESSION_BANDWIDTH, wallclock_offset: float = 0.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.ssrc = ssrc
        self.cname = cname or new_cname()
        self.clock_rate = clock_rate
        self.rtcp_bandwidth = session_bandwidth * RTCP_BANDWIDTH_FRACTION
        self.wallclock_offset = wallclock_offset
        self._rng = rng
        self.source: ReceptionStats | None = None  # the peer's current RTP source
        self.lost_before = 0  # cumulative loss of the peer's earlier sources (SSRC changes)
        self.peer: PeerReport | None = None
        self.peer_ssrc: int | None = None  # sender SSRC of the peer's last RTCP
        self.peer_left = False  # the peer sent BYE (§6.6)
        self.reports_sent = 0
        self.reports_received = 0
        # §6.4: an SR if we sent RTP since the report before last; packet counts at the
        # last two reports tell.
        self._sent_at_reports = (0, 0)
        # §6.3.2: start from the size of the first packet we will send.
        self.avg_rtcp_size = float(UDP_IP_OVERHEAD + 28 + ReportBlock.SIZE + _sdes_length(len(self.cname.encode())))
        self.initial = True
        self.deadline = now + self._interval(we_sent=False)

    @functools.cached_property
    def _sdes(self) -> bytes:
        """Our SDES CNAME packet, built when the first report goes (most legs of a short
        call never send one: the first interval is seconds, §6.3)."""
        return bytes(SourceDescription((SdesChunk(self.ssrc, ((SDES_CNAME, self.cname.encode()),)),)))

    # ---- receiving

    def rtp_source(self, ssrc: int, seq: int) -> ReceptionStats:
        """The stats for an RTP packet from ``ssrc``: a new source replaces the old one
        (the peer restarted its stream), whose loss is carried in ``lost_before``."""
        old = self.source
        if old is not None:
            self.lost_before += max(0, old.lost)
        self.source = ReceptionStats(ssrc, seq, self.clock_rate)
        return self.source

    @property
    def lost(self) -> int:
        """What we measured lost of the peer's RTP over the whole session."""
        return self.lost_before + (self.source.lost if self.source is not None else 0)

    def receive(self, data: bytes, now: float, *, strict: bool = False) -> list[RtcpPacket]:
        """Consume one RTCP datagram from the peer. Raises ValueError if malformed.

        Our own SSRC as a sender means a loop (an echoing peer: RFC 3550 §8.2): ignored.
        """
        packets = parse_compound(data, strict=strict)
        self.avg_rtcp_size += (len(data) + UDP_IP_OVERHEAD - self.avg_rtcp_size) / 16  # §6.3.3
        for p in packets:
            if isinstance(p, (SenderReport, ReceiverReport)):
                if p.ssrc == self.ssrc:
                    continue
                self.peer_ssrc = p.ssrc
                self.reports_received += 1
                if isinstance(p, SenderReport) and self.source is not None and p.ssrc == self.source.ssrc:
                    self.source.sender_report(p.ntp_timestamp, now)
                for block in p.reports:
                    if block.ssrc == self.ssrc:
                        self._peer_block(block, now)
            elif isinstance(p, Bye) and self.ssrc not in p.ssrcs:
                self.peer_left = True
        return packets

    def _peer_block(self, block: ReportBlock, now: float) -> None:
        rtt: float | None = None
        if block.lsr:
            # §6.4.1: round trip = arrival - LSR - DLSR, all in 1/65536 s of NTP time.
            arrival = ntp_middle(ntp_timestamp(now + self.wallclock_offset))
            units = (arrival - block.lsr - block.dlsr + 2**31) % 2**32 - 2**31  # signed
            if units >= -_RTT_SLACK:
                # A few ms below zero is a round trip shorter than the clocks resolve (the
                # event loop's clock is read once per iteration; uvloop's in whole ms).
                rtt = 1000.0 * max(0, units) / 65536
            # else: far below zero is clock trouble at the peer: no figure
        self.peer = PeerReport(block.fraction_lost / 256, block.cumulative_lost, block.highest_seq,
                               1000.0 * block.jitter / self.clock_rate, rtt)

    # ---- sending

    def _interval(self, we_sent: bool) -> float:
        heard = self.source is not None or self.peer_ssrc is not None
        members = 2 if heard and not self.peer_left else 1
        senders = int(we_sent) + int(self.source is not None and not self.peer_left)
        return rtcp_interval(members, senders, self.rtcp_bandwidth, we_sent, self.avg_rtcp_size,
                             self.initial, self._rng)

    def _report_packet(self, now: float, packets_sent: int, octets_sent: int,
                       rtp_timestamp: int) -> tuple[SenderReport | ReceiverReport, bool]:
        source = self.source
        blocks = (source.report_block(now),) if source is not None and source.valid else ()
        we_sent = packets_sent > self._sent_at_reports[1]
        self._sent_at_reports = (packets_sent, self._sent_at_reports[0])
        if we_sent:
            ntp = ntp_timestamp(now + self.wallclock_offset)
            return SenderReport(self.ssrc, ntp, rtp_timestamp, packets_sent, octets_sent, blocks), True
        return ReceiverReport(self.ssrc, blocks), False

    def report(self, now: float, packets_sent: int, octets_sent: int, rtp_timestamp: int) -> bytes:
        """The compound packet due now (SR or RR, then SDES CNAME: §6.1), and the next
        ``deadline``. ``packets_sent``/``octets_sent`` count our RTP since the start
        (octets: payload only, §6.4.1); ``rtp_timestamp`` is our RTP clock at ``now``."""
        first, we_sent = self._report_packet(now, packets_sent, octets_sent, rtp_timestamp)
        data = bytes(first) + self._sdes
        self._sent(data, now, we_sent)
        return data

    def reschedule(self, now: float) -> None:
        """(Re)start the schedule from ``now``: when media starts, or when a report fell due
        with nowhere to send it (no peer address yet, hold with c=0.0.0.0)."""
        self.deadline = now + self._interval(we_sent=False)

    def _sent(self, data: bytes, now: float, we_sent: bool) -> None:
        self.reports_sent += 1
        self.avg_rtcp_size += (len(data) + UDP_IP_OVERHEAD - self.avg_rtcp_size) / 16  # §6.3.6
        self.initial = False
        self.deadline = now + self._interval(we_sent)

    def bye(self, now: float, packets_sent: int, octets_sent: int, rtp_timestamp: int,
            reason: str = "") -> bytes | None:
        """The compound BYE for the end of the leg (§6.6: a report, SDES, then BYE), or
        None if we never sent RTP or RTCP, when §6.3.7 says to send no BYE at all."""
        if packets_sent == 0 and self.reports_sent == 0:
            return None
        first, _ = self._report_packet(now, packets_sent, octets_sent, rtp_timestamp)
        self.reports_sent += 1
        return bytes(first) + self._sdes + bytes(Bye((self.ssrc,), reason))
