"""MediaSession: one call leg's RTP (and RTCP) sockets. The only media code that touches sockets.

Everything it does is delegated to the pure pieces (RtpSender, parse_rtp, DtmfReceiver,
RtcpSession) and driven by the shared MediaClock; this module moves bytes and keeps the
per-leg state: the negotiated MediaParams, the latched peer address and the current
playback.

RTCP (issue 11). Each leg is an RTP session of its own and terminates its RTCP (see
media/rtcp.py for why a B2BUA must not forward it): a second socket on ``local_port + 1``
(RFC 3550 §11; media/ports.py reserves it) sends our compound SR/RR + SDES CNAME on the
§6.2 schedule (one loop timer per leg, every 2.5-7.5 s) and a BYE when the leg closes
(§6.6), and takes the peer's reports, whose loss and jitter figures go into ``stats()``
beside what we measured of the peer's RTP (RFC 3550 A.1/A.3/A.8, on every packet). We
send to the peer's RTP port + 1, or its RFC 3605 ``a=rtcp`` address, or, once its RTCP
has arrived, to the address it came from (symmetric RTCP, RFC 4961). RTCP that arrives
on the RTP port (RFC 5761 multiplexing, not negotiated by us) is consumed too. If the
odd port cannot be bound the leg goes on without RTCP: RTCP is never worth a failed call.
RTCP goes on while the stream is on hold: RFC 3264 §5.1 exempts it from the direction.

Keepalive (issue 11: phones and SBCs end a call after ~30 s without RTP). While a leg
may send (configured, sendrecv/sendonly, a peer address) but nothing plays, its
``_Keepalive`` fills in once nothing has gone out for ``KEEPALIVE_AFTER`` (3 frames, so
a prompt that follows another within a script's round trip is not interleaved with
fill), or ``KEEPALIVE_AFTER_RELAYED`` after a relayed packet (the other leg went quiet:
DTX, mute, hold; shorter gaps are the other leg's jitter, which fill must not chop up).
Until then it is one loop timer, not a stream the clock ticks 50 times a second: a
bridged leg pays next to nothing for it. The fill continues our SSRC, sequence and
timestamp (RFC 3550 §5.1) and, per mode:

- ``"silence"``: one cached G.711 silence frame every 20 ms (a gap-free stream: what
  receivers that watch for RTP inactivity expect);
- ``"cn"``: an RFC 3389 comfort-noise packet when the fill starts and every
  ``CN_REFRESH`` s, only where CN was negotiated (``MediaParams.cn_pt``), otherwise
  silence as above;
- ``"off"``: nothing (the bare MediaSession default, so a test or tool gets exactly the
  packets it asks for; the switch passes its ``media_keepalive`` setting).

When relayed packets resume after fill, they start a new talkspurt and are shifted
forward if their timestamp would go back over the fill already sent. Fill and RTCP start
at the first ``configure()``: the leg calls it when its SDP answer goes out or comes in
(183 or 200), the moment RFC 3264 lets media flow; earlier, fill would reach a caller
still listening to its local ringback.

SRTP (RFC 3711, keyed by SDES: media/sdes.py). When the negotiated ``MediaParams.srtp``
has keys, every RTP and RTCP packet the leg sends is protected on its way to the socket
(``_sendto``, ``_rtcp_send``: playback, fill, relayed packets, reports, BYE alike) and
every packet that arrives is authenticated and decrypted before anything reads it: one
that fails (forged, replayed, plain RTP on an SRTP leg) is dropped and counted
(``srtp_dropped``), is not played, relayed, latched to or reported, and is logged at
most once per ``SRTP_LOG_INTERVAL``. The relay (media/relay.py) only ever sees plain
packets, so an SRTP leg bridges to a plain one. New keys (a re-INVITE) replace the
context; the same keys keep it (and its replay window). Keys are never logged.

Measured (2 shared cores, uvloop; 1000 answered calls waiting in ReadInput, SIPp uac
peers; medians of 3 runs): switch CPU per call-second 0.003 ms with keepalive off and no
RTCP, 0.011 ms with RTCP only, 0.47 ms with silence fill (what a playing stream costs:
0.46 ms, 50 sendto() a second), 0.52 ms with both; CN fill ~0.016 ms (one packet a
second; in-process). A playing call costs the same with or without both (0.46-0.51 ms).
Each received RTP packet costs ~0.6 µs more for the RFC 3550 A.1/A.8 statistics.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import math
import socket
import time
from collections.abc import Callable
from typing import Any

from media.clock import NO_CONTEXT, MediaClock
from media.dtmf import DtmfReceiver
from media.playback import DecodedAudio
from media.ports import NoRtpPorts, RtpPortPool
from media.rtcp import ReceptionStats, RtcpSession
from media.rtp import RtpPacket, RtpSender, is_rtcp, parse_rtp
from media.sdes import SrtpKeys
from media.sdp import MediaParams
from media.srtp import SrtpContext, SrtpError

logger = logging.getLogger(__name__)

SAMPLE_RATE = 8000
FRAME_SAMPLES = 160  # 20 ms at 8 kHz, one byte per sample in G.711
FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
# One silence frame per codec, built once: the keepalive sends it as is.
_SILENCE_FRAME = {"PCMU": b"\xff" * FRAME_SAMPLES, "PCMA": b"\xd5" * FRAME_SAMPLES}
KEEPALIVE_MODES = ("silence", "cn", "off")
KEEPALIVE_AFTER = 3 * FRAME_S  # nothing sent this long: the keepalive fills in
KEEPALIVE_AFTER_RELAYED = 0.5  # the same after a relayed packet (see the module doc)
CN_REFRESH = 1.0  # s between comfort-noise packets: 50 times fewer packets than silence
# RFC 3389 §3.1: noise level in -dBov. -70 dBov is a quiet line; digital silence (127)
# would have the far end generate no noise at all, the "dead line" CN exists to avoid.
CN_NOISE_LEVEL = 70
_CN_PAYLOAD = bytes((CN_NOISE_LEVEL,))
_TS_MASK = 0xFFFFFFFF
# RTCP deadlines are rounded up to this grid of loop time, shared by every leg, so one
# loop wake-up serves all the reports due in it. Measured (uvloop, 1000 legs, one report
# each per ~5 s): with a wake-up of its own a report cost ~100 µs, 2% of a core; on the
# grid ~35 µs, 0.7%. It moves a report by < 0.1 s, nothing next to §6.2's [0.5, 1.5] spread.
RTCP_TIMER_GRID = 0.1
# The keepalive's timers (waiting for the leg to fall idle, CN refreshes) share a 20 ms
# grid the same way. Ticked by the clock every 20 ms only to watch the time, an idle CN
# leg (or a relayed one) cost ~1.8 µs a tick: 9% of a core per 1000 legs; with timers
# 1.6%, mostly the CN packet itself (measured in-process, uvloop).
KEEPALIVE_TIMER_GRID = FRAME_S


def _on_grid(when: float, grid: float) -> float:
    """``when`` rounded up to the shared grid: timers of every leg due in one step fire
    in one loop wake-up (uvloop and asyncio run all timers due at once)."""
    return math.ceil(when / grid) * grid
_MAX_BIND_ATTEMPTS = 32
# A failing destination fails every 20 ms: log its first error, then at most one summary
# line per this many seconds (and again at once if the destination changes).
SEND_ERROR_LOG_INTERVAL = 10.0
# What sendto() raises for an address the socket cannot use, before anything is sent:
# uvloop raises ValueError for a family mismatch (c=IN IP6 ::1 on an IPv4 socket) and
# TypeError for a malformed address; OSError is a send the kernel refused.
_SEND_ERRORS = (OSError, ValueError, TypeError)
# Packets that fail SRTP authentication come in floods (a peer with the wrong key sends
# 50 a second): the first is logged, then one summary line per this many seconds.
SRTP_LOG_INTERVAL = 10.0


def _only_family(sock: socket.socket, family: int) -> None:
    """An IPv6 socket takes IPv6 only (a dual-stack switch gives IPv4 legs sockets of
    their own): no IPv4-mapped peer addresses (RFC 4291 §2.5.5.2) to latch onto, and a
    port another program holds on IPv4 only does not stop an IPv6 bind."""
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)


class _RtpProtocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.session: MediaSession | None = None

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.session is not None:
            self.session._datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a peer that is not listening (yet): expected, ignored.
        if self.session is not None:
            self.session.send_errors += 1


class _RtcpProtocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.session: MediaSession | None = None

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.session is not None:
            self.session._rtcp_datagram_received(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        # Many peers do not listen on RTP port + 1 at all: their ICMP replies are noise.
        if self.session is not None:
            self.session.rtcp_send_errors += 1


class _Playout:
    """One play() of one DecodedAudio; a ClockedStream on the MediaClock."""

    __slots__ = ("session", "audio", "loop", "on_complete", "offset", "started", "active")

    def __init__(
        self, session: MediaSession, audio: DecodedAudio, loop: bool,
        on_complete: Callable[[], None] | None,
    ) -> None:
        self.session = session
        self.audio = audio
        self.loop = loop
        self.on_complete = on_complete
        self.offset = 0
        self.started = False
        self.active = True

    def tick(self, frames: int, now: float) -> bool:
        if not self.active:
            return False
        s = self.session
        if not self.started:
            self.started = True
            s._begin_talkspurt(now)
        for _ in range(frames):
            codec = s._codec  # looked up per frame: a re-INVITE may switch PCMU <-> PCMA
            payload = self.audio.payload(codec)
            end = self.offset + FRAME_SAMPLES
            chunk = payload[self.offset : end]
            if len(chunk) < FRAME_SAMPLES:  # last frame: pad with the codec's silence
                chunk += _SILENCE_FRAME[codec][len(chunk):]
            s._send_frame(chunk, now)
            self.offset = end
            if end >= len(payload):
                if self.loop and payload:
                    self.offset = 0
                    continue
                self.active = False
                s._playout_finished(self)
                return False
        return True

    def __repr__(self) -> str:
        return f"<Playout {self.session.log_prefix} {self.offset}/{self.audio.samples}>"


class _Keepalive:
    """The session's fill while nothing plays (see the module doc). Waiting for the leg
    to fall idle it is one loop timer; filling with silence it is a ClockedStream on the
    MediaClock; filling with CN, a timer per refresh."""

    __slots__ = ("session", "since", "active", "timer")

    def __init__(self, session: MediaSession) -> None:
        self.session = session
        self.since = 0.0  # loop time it was (re)started: the idle origin if nothing was sent
        self.active = False  # the leg may send and nothing plays
        self.timer: asyncio.TimerHandle | None = None

    def tick(self, frames: int, now: float) -> bool:
        return self.session._keepalive_tick(frames, now)

    def __repr__(self) -> str:
        return f"<Keepalive {self.session.log_prefix}>"


class MediaSession:
    """RTP for one leg: G.711 playback out, RFC 4733 digits and a relay hook in.

    Symmetric RTP (RFC 4961, "latching"): we send to the SDP address until the first RTP
    packet arrives, then to that packet's source (NATed phones advertise private
    addresses). Once latched we move only if a packet comes from another address with a
    different SSRC (the peer restarted its stream, e.g. after a transfer), or after
    ``relatch_after`` seconds without a packet from the latched address. A re-INVITE that
    changes the SDP address drops the latch.
    """

    # Slots: a leg's session has ~55 fields, past the 30 a shared-key instance dict holds,
    # so without them each session carried a full dict (~1.5 KB per leg).
    __slots__ = (
        "_can_send", "_clock", "_cn_pt", "_codec", "_dtmf", "_filling", "_keepalive",
        "_keepalive_mode", "_last_relayed", "_last_send", "_latched", "_latched_rx",
        "_latched_ssrc", "_loop", "_playout", "_ports", "_pt", "_rtcp", "_rtcp_latched",
        "_rtcp_timer", "_rtcp_transport", "_rx", "_sdp_dest", "_send_error_logged",
        "_send_errors_unlogged", "_sender", "_srtp", "_srtp_keys", "_srtp_logged", "_srtp_unlogged",
        "_transport", "_ts_shift", "_ts_time", "bytes_received", "bytes_sent", "closed",
        "keepalive_packets", "local_port", "log_prefix", "on_dtmf", "on_rtp", "packets_malformed",
        "packets_received", "packets_sent", "params", "relatch_after", "rtcp_malformed",
        "rtcp_received", "rtcp_send_errors", "rtcp_sent", "send_errors", "srtp_dropped",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        transport: asyncio.DatagramTransport,
        port: int,
        ports: RtpPortPool,
        clock: MediaClock,
        log_prefix: str,
        *,
        rtcp_transport: asyncio.DatagramTransport | None = None,
        keepalive: str = "off",
    ) -> None:
        if keepalive not in KEEPALIVE_MODES:
            raise ValueError(f"media keepalive must be one of {', '.join(KEEPALIVE_MODES)}, not {keepalive!r}")
        self._loop = loop
        self._transport: asyncio.DatagramTransport | None = transport
        self.local_port = port
        self._ports = ports
        self._clock = clock
        self.log_prefix = log_prefix
        self.params: MediaParams | None = None
        self._codec = "PCMU"
        self._pt = 0
        self._can_send = False
        self._sdp_dest: tuple[str, int] | None = None
        self._latched: tuple[str, int] | None = None
        self._latched_ssrc: int | None = None
        self._latched_rx = 0.0  # loop time of the last packet from the latched address
        self.relatch_after = 2.0
        self._sender = RtpSender()
        self._last_send: float | None = None  # loop time of our last RTP packet
        self._last_relayed = False  # ... and whether it was a relayed one
        # The loop time our next RTP timestamp (self._sender.timestamp) stands for: a
        # new talkspurt, a keepalive fill and the SR's RTP timestamp advance from it.
        self._ts_time: float | None = None
        self._ts_shift = 0  # added to relayed timestamps so they never go back over fill
        self._filling = False  # the keepalive is sending (the last packets were fill)
        self._keepalive_mode = keepalive
        self._keepalive = _Keepalive(self) if keepalive != "off" else None
        self._cn_pt: int | None = None  # CN payload type while mode "cn" has it negotiated
        self._playout: _Playout | None = None
        self._dtmf = DtmfReceiver()
        self.on_dtmf: Callable[[str], None] | None = None
        self.on_rtp: Callable[[RtpPacket], None] | None = None
        self.packets_sent = 0
        self.bytes_sent = 0
        self.packets_received = 0
        self.bytes_received = 0
        self.packets_malformed = 0
        self.rtcp_received = 0
        self.rtcp_malformed = 0
        self.rtcp_sent = 0
        self.rtcp_send_errors = 0
        self.keepalive_packets = 0
        self.send_errors = 0
        self._send_error_logged: tuple[float, tuple[str, int]] | None = None  # (when, dest)
        self._send_errors_unlogged = 0
        # RTCP: the sans-I/O state always (it also keeps our reception statistics); the
        # socket, the timer and the peer's latched RTCP address only with rtcp_transport.
        now = loop.time()
        self._rtcp = RtcpSession(self._sender.ssrc, now, wallclock_offset=time.time() - now)
        self._rtcp_transport = rtcp_transport
        self._rtcp_timer: asyncio.TimerHandle | None = None
        self._rtcp_latched: tuple[str, int] | None = None
        self._rx: ReceptionStats | None = None  # = self._rtcp.source, one lookup less per packet
        # SRTP (RFC 3711): the context for the negotiated keys, None for plain RTP.
        self._srtp: SrtpContext | None = None
        self._srtp_keys: SrtpKeys | None = None
        self.srtp_dropped = 0  # packets that failed SRTP/SRTCP authentication (or replay)
        self._srtp_logged: float | None = None
        self._srtp_unlogged = 0
        self.closed = False

    @classmethod
    async def open(
        cls,
        loop: asyncio.AbstractEventLoop,
        bind_ip: str,
        ports: RtpPortPool,
        clock: MediaClock,
        log_prefix: str,
        *,
        rtcp: bool = False,
        keepalive: str = "off",
    ) -> MediaSession:
        """Bind a UDP socket on the next free pool port (skipping ports taken by others),
        and with ``rtcp`` a second one on the odd port above it for RTCP."""
        family = socket.AF_INET6 if ":" in bind_ip else socket.AF_INET
        busy: list[int] = []  # held until we are done, so allocate() moves past them
        try:
            for _ in range(min(ports.capacity, _MAX_BIND_ATTEMPTS)):
                port = ports.allocate()  # raises NoRtpPorts when the pool is exhausted
                # We bind the socket ourselves: uvloop's create_datagram_endpoint wraps
                # EADDRINUSE in an OSError without errno, so we could not tell it apart.
                sock = socket.socket(family, socket.SOCK_DGRAM)
                try:
                    _only_family(sock, family)
                    sock.setblocking(False)
                    sock.bind((bind_ip, port))
                except OSError as exc:
                    sock.close()
                    if exc.errno != errno.EADDRINUSE:
                        ports.release(port)
                        raise
                    logger.warning("%s RTP port %d in use by another program; trying the next",
                                   log_prefix, port)
                    busy.append(port)
                    continue
                try:
                    transport, protocol = await loop.create_datagram_endpoint(
                        _RtpProtocol, sock=sock
                    )
                except BaseException:
                    sock.close()
                    ports.release(port)
                    raise
                rtcp_transport, rtcp_protocol = None, None
                if rtcp:
                    rtcp_transport, rtcp_protocol = await cls._open_rtcp(loop, family, bind_ip, port + 1,
                                                                         log_prefix)
                try:
                    session = cls(loop, transport, port, ports, clock, log_prefix,
                                  rtcp_transport=rtcp_transport, keepalive=keepalive)
                except BaseException:
                    transport.close()
                    if rtcp_transport is not None:
                        rtcp_transport.close()
                    ports.release(port)
                    raise
                protocol.session = session
                if rtcp_protocol is not None:
                    rtcp_protocol.session = session
                logger.debug("%s RTP bound on %s:%d%s", log_prefix, bind_ip, port,
                             " (+1 RTCP)" if rtcp_transport is not None else "")
                return session
        finally:
            for port in busy:
                ports.release(port)
        raise NoRtpPorts(
            f"no bindable RTP port on {bind_ip} after {len(busy)} attempts: "
            "the range overlaps another program's; pick another --rtp-ports range"
        )

    @staticmethod
    async def _open_rtcp(
        loop: asyncio.AbstractEventLoop, family: int, bind_ip: str, port: int, log_prefix: str,
    ) -> tuple[asyncio.DatagramTransport | None, _RtcpProtocol | None]:
        """The RTCP socket, or (None, None) when the odd port is unusable: logged, and the
        leg carries on without RTCP (its RTP is what the call needs)."""
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            _only_family(sock, family)
            sock.setblocking(False)
            sock.bind((bind_ip, port))
            transport, protocol = await loop.create_datagram_endpoint(_RtcpProtocol, sock=sock)
        except OSError as exc:
            sock.close()
            logger.warning("%s RTCP port %d unusable (%s); this leg runs without RTCP",
                           log_prefix, port, exc)
            return None, None
        except BaseException:
            sock.close()
            raise
        return transport, protocol

    # --- negotiation -----------------------------------------------------------------

    def configure(self, params: MediaParams) -> None:
        """Apply negotiated media (at answer time and again on every re-INVITE)."""
        if params.codec not in _SILENCE_FRAME:
            raise ValueError(f"MediaSession supports PCMU and PCMA, not {params.codec!r}")
        dest = params.remote_addr
        if dest is not None:
            try:
                ipaddress.ip_address(dest[0])
            except ValueError:
                # sendto() would resolve a host name synchronously, blocking the loop.
                logger.warning("%s SDP address %r is not an IP literal; waiting for RTP",
                               self.log_prefix, dest[0])
                dest = None
        if dest != self._sdp_dest:
            self._latched = None  # the peer moved (re-INVITE): trust the SDP again
            self._latched_ssrc = None
            self._rtcp_latched = None
        if params.srtp != self._srtp_keys:
            self._set_srtp(params.srtp)
        old = self.params
        self.params = params
        self._sdp_dest = dest
        self._codec = params.codec
        self._pt = params.pt
        self._can_send = params.direction in ("sendrecv", "sendonly")
        self._cn_pt = params.cn_pt if self._keepalive_mode == "cn" else None
        if old is None or (old.codec, old.direction, old.remote_addr) != (
            params.codec, params.direction, params.remote_addr
        ):
            logger.info("%s media %s/%d %s -> %s", self.log_prefix, params.codec, params.pt,
                        params.direction, dest)
            if self._keepalive_mode == "cn" and params.cn_pt is None:
                logger.debug("%s no CN negotiated: keepalive sends silence frames", self.log_prefix)
        self._keepalive_update()
        if self._rtcp_transport is not None and self._rtcp_timer is None and not self.closed:
            # RFC 3550 §6.2: the first report after half the minimum interval, from now.
            self._rtcp.reschedule(self._loop.time())
            self._rtcp_arm()

    def _set_srtp(self, keys: SrtpKeys | None) -> None:
        """New keys (the answer, or a re-INVITE that re-keys): a new context; None: plain."""
        context = SrtpContext(keys) if keys is not None else None  # (ValueError: a bug of sdes.py)
        was = self._srtp_keys
        self._srtp, self._srtp_keys = context, keys
        if keys is None:
            logger.info("%s SRTP off: plain RTP from now on", self.log_prefix)
        else:
            logger.info("%s SRTP %s (%s)", self.log_prefix, keys.suite, "re-keyed" if was is not None else "on")

    @property
    def srtp_suite(self) -> str | None:
        """The SRTP suite in use, None for plain RTP."""
        return self._srtp_keys.suite if self._srtp_keys is not None else None

    @property
    def remote_addr(self) -> tuple[str, int] | None:
        """Where we send: the latched source if any, else the SDP address."""
        return self._latched or self._sdp_dest

    @property
    def comfort_noise(self) -> bool:
        """Whether this leg wants RFC 3389 CN negotiated (keepalive mode "cn"): what the
        leg passes as ``cn=`` to media.sdp's answer_offer/make_offer."""
        return self._keepalive_mode == "cn"

    # --- playback --------------------------------------------------------------------

    def play(
        self, audio: DecodedAudio, loop: bool = False,
        on_complete: Callable[[], None] | None = None,
    ) -> None:
        """Send ``audio`` from the next clock tick; replaces any current playback (which
        then never completes). ``on_complete`` is called once, soon after the last frame
        (not if stopped or replaced; never for loop=True)."""
        if self.closed:
            raise RuntimeError(f"{self.log_prefix} play() on a closed MediaSession")
        if self.params is None:
            raise RuntimeError(f"{self.log_prefix} play() before configure()")
        self._end_playout()
        self._playout = _Playout(self, audio, loop, on_complete)
        self._keepalive_update()
        self._clock.add(self._playout)

    def stop_play(self) -> None:
        self._end_playout()
        self._keepalive_update()

    def _end_playout(self) -> None:
        p = self._playout
        if p is not None:
            p.active = False
            self._clock.discard(p)
            self._playout = None

    @property
    def playing(self) -> bool:
        return self._playout is not None

    def _begin_talkspurt(self, now: float, marker: bool = True) -> None:
        # Marker on the first packet of each play (RFC 3551 §4.1); advance the timestamp
        # over the silence since our last packet so it keeps tracking real time.
        gap = 0 if self._ts_time is None else max(0, round((now - self._ts_time) * SAMPLE_RATE))
        if marker:
            self._sender.start_talkspurt(gap)
        else:
            self._sender.advance(gap)
        self._filling = False

    def _rtp_clock(self, now: float) -> int:
        """Our RTP timestamp for the instant ``now`` (RFC 3550 §6.4.1: the SR's RTP
        timestamp is the NTP instant's, not a packet's)."""
        ts = self._sender.timestamp
        if self._ts_time is not None:
            ts += round((now - self._ts_time) * SAMPLE_RATE)
        return ts & _TS_MASK

    def _send_frame(self, payload: bytes, now: float) -> None:
        dest = self._latched or self._sdp_dest
        self._last_send = now
        self._last_relayed = False
        self._ts_time = now + FRAME_S
        if not self._can_send or dest is None or self._transport is None:
            # On hold / recvonly: time passes but nothing goes out; resume with a marker.
            self._sender.start_talkspurt(FRAME_SAMPLES)
            return
        # The packet is built (seq and timestamp advance) even if the send fails: to the
        # peer it is a lost packet, and the stream keeps tracking real time (RFC 3550 §5.1).
        if self._sendto(self._sender.packet(payload, FRAME_SAMPLES, self._pt), dest):
            self.packets_sent += 1
            self.bytes_sent += len(payload)

    def send_relayed(self, payload: bytes, timestamp: int, pt: int, marker: bool) -> None:
        """Send a packet relayed from another leg (media/relay.py decides ts and PT)."""
        dest = self._latched or self._sdp_dest
        if not self._can_send or dest is None or self._transport is None:
            return
        now = self._loop.time()
        if self._filling:
            # The keepalive filled a quiet spell of the other leg: the relayed stream
            # resumes as a new talkspurt, never earlier than the fill already sent.
            self._filling = False
            marker = True
            behind = (self._rtp_clock(now) - timestamp - self._ts_shift) & _TS_MASK
            if behind < 1 << 31:
                self._ts_shift = (self._ts_shift + behind) & _TS_MASK
        self._last_send = now
        self._last_relayed = True
        self._ts_time = now  # relayed() leaves the sender at this packet's timestamp
        packet = self._sender.relayed(payload, (timestamp + self._ts_shift) & _TS_MASK, pt, marker)
        if self._sendto(packet, dest):
            self.packets_sent += 1
            self.bytes_sent += len(payload)

    # --- keepalive -------------------------------------------------------------------

    def _keepalive_update(self) -> None:
        """Keep the fill running while the leg may send and nothing plays."""
        ka = self._keepalive
        if ka is None:
            return
        want = (not self.closed and self._playout is None and self._can_send
                and self.params is not None and (self._latched or self._sdp_dest) is not None)
        if want and not ka.active:
            ka.active = True
            ka.since = self._loop.time()
            self._keepalive_wait()
        elif not want and ka.active:
            ka.active = False
            self._filling = False
            if ka.timer is not None:
                ka.timer.cancel()
                ka.timer = None
            self._clock.discard(ka)

    def _keepalive_arm(self, when: float) -> None:
        ka = self._keepalive
        assert ka is not None
        ka.timer = self._loop.call_at(_on_grid(when, KEEPALIVE_TIMER_GRID), self._keepalive_due,
                                     context=NO_CONTEXT)

    def _keepalive_wait(self) -> None:
        """Off the clock until the leg has sent nothing for KEEPALIVE_AFTER(_RELAYED)."""
        ka = self._keepalive
        assert ka is not None
        last = self._last_send if self._last_send is not None else ka.since
        self._keepalive_arm(last + (KEEPALIVE_AFTER_RELAYED if self._last_relayed else KEEPALIVE_AFTER))

    def _keepalive_due(self) -> None:
        ka = self._keepalive
        assert ka is not None
        ka.timer = None
        if not ka.active:
            return
        now = self._loop.time()
        cn_pt = self._cn_pt
        if self._filling and cn_pt is not None:  # refresh the CN (nothing else was sent)
            self._sender.advance(round((now - (self._ts_time or now)) * SAMPLE_RATE))
            self._send_cn(cn_pt, now)
            self._keepalive_arm(now + CN_REFRESH)
            return
        last = self._last_send if self._last_send is not None else ka.since
        after = KEEPALIVE_AFTER_RELAYED if self._last_relayed else KEEPALIVE_AFTER
        if now - last < after - 0.001:  # something was sent meanwhile (1 ms: timer slack)
            self._keepalive_wait()
            return
        # A new talkspurt (marker, RFC 3551 §4.1) of silence; CN goes without a marker
        # and carries the time the noise starts (RFC 3389 §4).
        self._begin_talkspurt(now, marker=cn_pt is None)
        self._filling = True
        if cn_pt is not None:
            self._send_cn(cn_pt, now)
            self._keepalive_arm(now + CN_REFRESH)
            return
        self._send_frame(_SILENCE_FRAME[self._codec], now)  # now: no tick's delay added
        self.keepalive_packets += 1
        self._clock.add(ka)

    def _keepalive_tick(self, frames: int, now: float) -> bool:
        """Silence fill on the clock; False (off the clock) once something else sends."""
        if not self._filling:  # a relayed packet took over: wait for the next quiet spell
            self._keepalive_wait()
            return False
        if self._last_send is not None and now - self._last_send < FRAME_S / 2:
            return True  # the first tick right after the frame _keepalive_due sent
        payload = _SILENCE_FRAME[self._codec]
        for _ in range(frames):
            self._send_frame(payload, now)
        self.keepalive_packets += frames
        return True

    def _send_cn(self, cn_pt: int, now: float) -> None:
        """One RFC 3389 SID packet: the noise level only, timestamped ``now``."""
        dest = self._latched or self._sdp_dest
        self._last_send = now
        self._last_relayed = False
        self._ts_time = now
        if dest is None or self._transport is None:
            return
        self.keepalive_packets += 1
        if self._sendto(self._sender.packet(_CN_PAYLOAD, 0, cn_pt), dest):
            self.packets_sent += 1
            self.bytes_sent += len(_CN_PAYLOAD)

    # --- sending ---------------------------------------------------------------------

    def _sendto(self, packet: bytes, dest: tuple[str, int]) -> bool:
        """Send one packet; a send error is counted, logged (rate-limited) and survived.

        It must not escape: from a clock tick the MediaClock would drop the playout for
        good (it treats an exception as a bug), and the call would stay silent even after
        symmetric RTP latching (RFC 4961) gives us an address that works.
        """
        assert self._transport is not None
        srtp = self._srtp
        if srtp is not None:
            try:
                packet = srtp.protect_rtp(packet)
            except SrtpError as exc:  # (libsrtp refuses only what we built wrong)
                self._send_failed(dest, exc)
                return False
        try:
            self._transport.sendto(packet, dest)
        except _SEND_ERRORS as exc:
            self._send_failed(dest, exc)
            return False
        return True

    def _send_failed(self, dest: tuple[str, int], exc: Exception) -> None:
        self.send_errors += 1
        now = self._loop.time()
        last = self._send_error_logged
        if last is not None and last[1] == dest and now - last[0] < SEND_ERROR_LOG_INTERVAL:
            self._send_errors_unlogged += 1
            return
        more = self._send_errors_unlogged
        self._send_errors_unlogged = 0
        self._send_error_logged = (now, dest)
        logger.warning(
            "%s RTP send to %s:%d failed: %s: %s%s; the stream carries on (it may latch to "
            "the peer's RTP source) and further errors are logged at most every %.0f s",
            self.log_prefix, dest[0], dest[1], type(exc).__name__, exc,
            f" ({more} more since the last report)" if more else "", SEND_ERROR_LOG_INTERVAL,
        )

    @property
    def next_timestamp(self) -> int:
        """The RTP timestamp our next packet would carry, in the relay's terms: what
        media/relay.py offsets an incoming stream by (``send_relayed`` adds the shift
        it keeps for fill, so a new relayed stream continues exactly from here)."""
        return (self._sender.timestamp - self._ts_shift) & _TS_MASK

    def _playout_finished(self, playout: _Playout) -> None:
        if self._playout is playout:
            self._playout = None
            self._keepalive_update()
        cb = playout.on_complete
        if cb is not None:
            # Not inline: the callback may resume a script, which must not delay the
            # other streams in this clock tick.
            self._loop.call_soon(self._complete, cb, context=NO_CONTEXT)

    def _complete(self, cb: Callable[[], None]) -> None:
        if self.closed:
            return
        try:
            cb()
        except Exception:
            logger.exception("%s playback on_complete callback failed", self.log_prefix)

    # --- receive ---------------------------------------------------------------------

    def _datagram_received(self, data: bytes, addr: Any) -> None:
        if is_rtcp(data):  # (the SRTP header is plain: RFC 3711 §3.1)
            self._rtcp_consume(data, None)  # RFC 5761 multiplexed on the RTP port
            return
        srtp = self._srtp
        if srtp is not None:
            try:
                data = srtp.unprotect_rtp(data)
            except SrtpError as exc:  # before anything reads it: no latching to a forger
                self._srtp_drop("SRTP", addr, exc)
                return
        try:
            pkt = parse_rtp(data)
        except ValueError:
            self.packets_malformed += 1
            return
        now = self._loop.time()
        self.packets_received += 1
        self.bytes_received += len(pkt.payload)
        self._latch((addr[0], addr[1]), pkt.ssrc, now)
        params = self.params
        # RFC 3550 A.1/A.8 statistics of the peer's stream, for our reports and the log.
        rx = self._rx
        if rx is None or rx.ssrc != pkt.ssrc:
            rx = self._rx = self._rtcp.rtp_source(pkt.ssrc, pkt.sequence_number)
        dtmf = params is not None and pkt.payload_type == params.dtmf_pt and params.dtmf_pt is not None
        # RFC 4733 events repeat their start timestamp: kept out of the jitter estimate.
        rx.update(pkt.sequence_number, pkt.timestamp, now, not dtmf)
        if dtmf:
            try:
                digits = self._dtmf.feed(pkt.timestamp, pkt.payload)
            except ValueError:
                self.packets_malformed += 1
                digits = []
            if digits and self.on_dtmf is not None:
                for d in digits:
                    try:
                        self.on_dtmf(d)
                    except Exception:
                        logger.exception("%s on_dtmf callback failed", self.log_prefix)
        if self.on_rtp is not None:
            try:
                self.on_rtp(pkt)
            except Exception:
                logger.exception("%s on_rtp hook failed", self.log_prefix)

    def _latch(self, src: tuple[str, int], ssrc: int, now: float) -> None:
        if src == self._latched:
            self._latched_rx = now
            self._latched_ssrc = ssrc
            return
        if self._latched is not None and ssrc == self._latched_ssrc and (
            now - self._latched_rx < self.relatch_after
        ):
            return  # same stream seen from a second address: keep the first
        logger.info("%s RTP latched to %s:%d (ssrc %08x; SDP said %s)", self.log_prefix,
                    src[0], src[1], ssrc, self._sdp_dest)
        first = self._latched is None and self._sdp_dest is None
        self._latched = src
        self._latched_ssrc = ssrc
        self._latched_rx = now
        if first:
            self._keepalive_update()  # the leg had nowhere to send until now

    # --- RTCP ------------------------------------------------------------------------

    def _rtcp_datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._rtcp_consume(data, addr) and addr != self._rtcp_latched:
            # Symmetric RTCP (RFC 4961): answer where the peer's reports come from.
            logger.debug("%s RTCP latched to %s:%d", self.log_prefix, addr[0], addr[1])
            self._rtcp_latched = addr

    def _rtcp_consume(self, data: bytes, addr: tuple[str, int] | None) -> bool:
        """One RTCP datagram from the peer; False if it was malformed or failed SRTCP
        authentication (counted)."""
        srtp = self._srtp
        if srtp is not None:
            try:
                data = srtp.unprotect_rtcp(data)
            except SrtpError as exc:
                self._srtp_drop("SRTCP", addr, exc)
                return False
        self.rtcp_received += 1
        try:
            self._rtcp.receive(data, self._loop.time())
        except ValueError as exc:
            self.rtcp_malformed += 1
            if self.rtcp_malformed == 1:
                logger.debug("%s malformed RTCP from %s: %s", self.log_prefix, addr or "the RTP port", exc)
            return False
        return True

    def _srtp_drop(self, what: str, addr: Any, exc: SrtpError) -> None:
        """A packet that failed SRTP: counted, logged at most once per SRTP_LOG_INTERVAL."""
        self.srtp_dropped += 1
        now = self._loop.time()
        if self._srtp_logged is not None and now - self._srtp_logged < SRTP_LOG_INTERVAL:
            self._srtp_unlogged += 1
            return
        more, self._srtp_unlogged, self._srtp_logged = self._srtp_unlogged, 0, now
        src = f"{addr[0]}:{addr[1]}" if addr else "the RTP port"
        logger.warning("%s %s packet from %s dropped (%s)%s: a wrong key, a replay or a forgery; "
                       "further drops are logged at most every %.0f s", self.log_prefix, what, src, exc,
                       f" ({more} more since the last report)" if more else "", SRTP_LOG_INTERVAL)

    def _rtcp_dest(self) -> tuple[str, int] | None:
        """Where our RTCP goes: where the peer's comes from, else its RFC 3605 a=rtcp
        (unless RTP latched elsewhere: a NAT), else its RTP port + 1 (RFC 3550 §11)."""
        if self._rtcp_latched is not None:
            return self._rtcp_latched
        params = self.params
        if params is not None and params.rtcp_addr is not None and self._latched in (None, self._sdp_dest):
            return params.rtcp_addr
        rtp = self._latched or self._sdp_dest
        if rtp is None or rtp[1] >= 65535:
            return None
        return rtp[0], rtp[1] + 1

    def _rtcp_arm(self) -> None:
        self._rtcp_timer = self._loop.call_at(_on_grid(self._rtcp.deadline, RTCP_TIMER_GRID), self._rtcp_due,
                                              context=NO_CONTEXT)

    def _rtcp_due(self) -> None:
        self._rtcp_timer = None
        if self.closed or self._rtcp_transport is None:
            return
        now = self._loop.time()
        try:
            dest = self._rtcp_dest()
            if dest is None:
                self._rtcp.reschedule(now)
            else:
                self._rtcp_send(self._rtcp.report(now, self.packets_sent, self.bytes_sent,
                                                  self._rtp_clock(now)), dest)
        except Exception:  # a bug: keep the schedule (and the call) going
            logger.exception("%s RTCP report failed", self.log_prefix)
            self._rtcp.reschedule(now)
        self._rtcp_arm()

    def _rtcp_send(self, data: bytes, dest: tuple[str, int]) -> None:
        assert self._rtcp_transport is not None
        srtp = self._srtp
        if srtp is not None:
            try:
                data = srtp.protect_rtcp(data)  # RFC 3711 §3.4: SRTCP is always authenticated
            except SrtpError:
                self.rtcp_send_errors += 1
                return
        try:
            self._rtcp_transport.sendto(data, dest)
        except _SEND_ERRORS:
            self.rtcp_send_errors += 1  # the RTP path logs unusable addresses already
            return
        self.rtcp_sent += 1

    # --- lifecycle -------------------------------------------------------------------

    def stats(self) -> dict[str, int | float | None]:
        """Counters and quality figures of the leg's media. ``lost``/``jitter_ms``: what
        we measured of the peer's RTP (RFC 3550 A.3 cumulative loss, A.8 jitter);
        ``peer_*``/``rtt_ms``: the peer's last RTCP report about ours (None before one)."""
        rx = self._rtcp.source
        peer = self._rtcp.peer
        return {
            "packets_sent": self.packets_sent,
            "bytes_sent": self.bytes_sent,
            "packets_received": self.packets_received,
            "bytes_received": self.bytes_received,
            "packets_malformed": self.packets_malformed,
            "rtcp_received": self.rtcp_received,
            "send_errors": self.send_errors,
            "keepalive_packets": self.keepalive_packets,
            "rtcp_sent": self.rtcp_sent,
            "rtcp_malformed": self.rtcp_malformed,
            "srtp_dropped": self.srtp_dropped,
            "lost": self._rtcp.lost,
            "jitter_ms": round(rx.jitter_ms, 2) if rx is not None and rx.valid else None,
            "peer_fraction_lost": round(peer.fraction_lost, 4) if peer is not None else None,
            "peer_cumulative_lost": peer.cumulative_lost if peer is not None else None,
            "peer_jitter_ms": round(peer.jitter_ms, 2) if peer is not None else None,
            "rtt_ms": round(peer.rtt_ms, 1) if peer is not None and peer.rtt_ms is not None else None,
        }

    def close(self) -> None:
        """Stop playback, send RTCP BYE, close the sockets, return the port. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self._end_playout()
        self._keepalive_update()
        # The fill refers back to us: without this, every closed leg's session (and all
        # it holds) would wait for the cyclic GC instead of going at its last reference.
        self._keepalive = None
        self.on_dtmf = None
        self.on_rtp = None
        if self._rtcp_timer is not None:
            self._rtcp_timer.cancel()
            self._rtcp_timer = None
        if self._rtcp_transport is not None:
            self._rtcp_bye()
            self._rtcp_transport.close()
            self._rtcp_transport = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        self._ports.release(self.local_port)
        if logger.isEnabledFor(logging.DEBUG):  # stats() is not free, and this runs per leg
            logger.debug("%s RTP closed: %s", self.log_prefix, self.stats())

    def _rtcp_bye(self) -> None:
        """RFC 3550 §6.6: a last report and BYE, so the peer's statistics end cleanly."""
        dest = self._rtcp_dest() if self.params is not None else None
        if dest is None:
            return
        now = self._loop.time()
        try:
            data = self._rtcp.bye(now, self.packets_sent, self.bytes_sent, self._rtp_clock(now))
        except Exception:
            logger.exception("%s RTCP BYE failed", self.log_prefix)
            return
        if data is not None:
            self._rtcp_send(data, dest)

    def __repr__(self) -> str:
        return f"<MediaSession {self.log_prefix} :{self.local_port}>"
