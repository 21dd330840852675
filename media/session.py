"""MediaSession: one call leg's RTP socket. The only media code that touches sockets.

Everything it does is delegated to the pure pieces (RtpSender, parse_rtp, DtmfReceiver)
and driven by the shared MediaClock; this module moves bytes and keeps the per-leg state:
the negotiated MediaParams, the latched peer address and the current playback.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
from collections.abc import Callable
from typing import Any

from media.clock import MediaClock
from media.dtmf import DtmfReceiver
from media.playback import DecodedAudio
from media.ports import NoRtpPorts, RtpPortPool
from media.rtp import RtpPacket, RtpSender, is_rtcp, parse_rtp
from media.sdp import MediaParams

logger = logging.getLogger(__name__)

SAMPLE_RATE = 8000
FRAME_SAMPLES = 160  # 20 ms at 8 kHz, one byte per sample in G.711
_SILENCE = {"PCMU": 0xFF, "PCMA": 0xD5}
_MAX_BIND_ATTEMPTS = 32
# A failing destination fails every 20 ms: log its first error, then at most one summary
# line per this many seconds (and again at once if the destination changes).
SEND_ERROR_LOG_INTERVAL = 10.0
# What sendto() raises for an address the socket cannot use, before anything is sent:
# uvloop raises ValueError for a family mismatch (c=IN IP6 ::1 on an IPv4 socket) and
# TypeError for a malformed address; OSError is a send the kernel refused.
_SEND_ERRORS = (OSError, ValueError, TypeError)


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
                chunk += bytes([_SILENCE[codec]]) * (FRAME_SAMPLES - len(chunk))
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


class MediaSession:
    """RTP for one leg: G.711 playback out, RFC 4733 digits and a relay hook in.

    Symmetric RTP (RFC 4961, "latching"): we send to the SDP address until the first RTP
    packet arrives, then to that packet's source (NATed phones advertise private
    addresses). Once latched we move only if a packet comes from another address with a
    different SSRC (the peer restarted its stream, e.g. after a transfer), or after
    ``relatch_after`` seconds without a packet from the latched address. A re-INVITE that
    changes the SDP address drops the latch.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        transport: asyncio.DatagramTransport,
        port: int,
        ports: RtpPortPool,
        clock: MediaClock,
        log_prefix: str,
    ) -> None:
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
        self._last_send: float | None = None
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
        self.send_errors = 0
        self._send_error_logged: tuple[float, tuple[str, int]] | None = None  # (when, dest)
        self._send_errors_unlogged = 0
        self.closed = False

    @classmethod
    async def open(
        cls,
        loop: asyncio.AbstractEventLoop,
        bind_ip: str,
        ports: RtpPortPool,
        clock: MediaClock,
        log_prefix: str,
    ) -> MediaSession:
        """Bind a UDP socket on the next free pool port (skipping ports taken by others)."""
        family = socket.AF_INET6 if ":" in bind_ip else socket.AF_INET
        busy: list[int] = []  # held until we are done, so allocate() moves past them
        try:
            for _ in range(min(ports.capacity, _MAX_BIND_ATTEMPTS)):
                port = ports.allocate()  # raises NoRtpPorts when the pool is exhausted
                # We bind the socket ourselves: uvloop's create_datagram_endpoint wraps
                # EADDRINUSE in an OSError without errno, so we could not tell it apart.
                sock = socket.socket(family, socket.SOCK_DGRAM)
                try:
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
                session = cls(loop, transport, port, ports, clock, log_prefix)  # type: ignore[arg-type]
                protocol.session = session
                logger.debug("%s RTP bound on %s:%d", log_prefix, bind_ip, port)
                return session
        finally:
            for port in busy:
                ports.release(port)
        raise NoRtpPorts(
            f"no bindable RTP port on {bind_ip} after {len(busy)} attempts: "
            "the range overlaps another program's; pick another --rtp-ports range"
        )

    # --- negotiation -----------------------------------------------------------------

    def configure(self, params: MediaParams) -> None:
        """Apply negotiated media (at answer time and again on every re-INVITE)."""
        if params.codec not in _SILENCE:
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
        old = self.params
        self.params = params
        self._sdp_dest = dest
        self._codec = params.codec
        self._pt = params.pt
        self._can_send = params.direction in ("sendrecv", "sendonly")
        if old is None or (old.codec, old.direction, old.remote_addr) != (
            params.codec, params.direction, params.remote_addr
        ):
            logger.info("%s media %s/%d %s -> %s", self.log_prefix, params.codec, params.pt,
                        params.direction, dest)

    @property
    def remote_addr(self) -> tuple[str, int] | None:
        """Where we send: the latched source if any, else the SDP address."""
        return self._latched or self._sdp_dest

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
        self.stop_play()
        self._playout = _Playout(self, audio, loop, on_complete)
        self._clock.add(self._playout)

    def stop_play(self) -> None:
        p = self._playout
        if p is not None:
            p.active = False
            self._clock.discard(p)
            self._playout = None

    @property
    def playing(self) -> bool:
        return self._playout is not None

    def _begin_talkspurt(self, now: float) -> None:
        # Marker on the first packet of each play (RFC 3551 §4.1); advance the timestamp
        # over the silence since our last packet so it keeps tracking real time.
        gap = 0
        if self._last_send is not None:
            gap = max(0, round((now - self._last_send) * SAMPLE_RATE) - FRAME_SAMPLES)
        self._sender.start_talkspurt(gap)

    def _send_frame(self, payload: bytes, now: float) -> None:
        dest = self._latched or self._sdp_dest
        self._last_send = now
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
        self._last_send = self._loop.time()
        if self._sendto(self._sender.relayed(payload, timestamp, pt, marker), dest):
            self.packets_sent += 1
            self.bytes_sent += len(payload)

    def _sendto(self, packet: bytes, dest: tuple[str, int]) -> bool:
        """Send one packet; a send error is counted, logged (rate-limited) and survived.

        It must not escape: from a clock tick the MediaClock would drop the playout for
        good (it treats an exception as a bug), and the call would stay silent even after
        symmetric RTP latching (RFC 4961) gives us an address that works.
        """
        assert self._transport is not None
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
        """The RTP timestamp our next packet would carry."""
        return self._sender.timestamp

    def _playout_finished(self, playout: _Playout) -> None:
        if self._playout is playout:
            self._playout = None
        cb = playout.on_complete
        if cb is not None:
            # Not inline: the callback may resume a script, which must not delay the
            # other streams in this clock tick.
            self._loop.call_soon(self._complete, cb)

    def _complete(self, cb: Callable[[], None]) -> None:
        if self.closed:
            return
        try:
            cb()
        except Exception:
            logger.exception("%s playback on_complete callback failed", self.log_prefix)

    # --- receive ---------------------------------------------------------------------

    def _datagram_received(self, data: bytes, addr: Any) -> None:
        if is_rtcp(data):
            self.rtcp_received += 1  # RFC 5761 mux'd RTCP: not used yet
            return
        try:
            pkt = parse_rtp(data)
        except ValueError:
            self.packets_malformed += 1
            return
        self.packets_received += 1
        self.bytes_received += len(pkt.payload)
        self._latch((addr[0], addr[1]), pkt.ssrc)
        params = self.params
        if params is not None and pkt.payload_type == params.dtmf_pt and params.dtmf_pt is not None:
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

    def _latch(self, src: tuple[str, int], ssrc: int) -> None:
        now = self._loop.time()
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
        self._latched = src
        self._latched_ssrc = ssrc
        self._latched_rx = now

    # --- lifecycle -------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        return {
            "packets_sent": self.packets_sent,
            "bytes_sent": self.bytes_sent,
            "packets_received": self.packets_received,
            "bytes_received": self.bytes_received,
            "packets_malformed": self.packets_malformed,
            "rtcp_received": self.rtcp_received,
            "send_errors": self.send_errors,
        }

    def close(self) -> None:
        """Stop playback, close the socket, return the port. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self.stop_play()
        self.on_dtmf = None
        self.on_rtp = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        self._ports.release(self.local_port)
        logger.debug("%s RTP closed: %s", self.log_prefix, self.stats())

    def __repr__(self) -> str:
        return f"<MediaSession {self.log_prefix} :{self.local_port}>"
