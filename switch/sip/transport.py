"""The asyncio adapter of the sans-I/O SIP core: moves bytes and re-arms one timer.

Everything protocol-related lives in ``message``/``transaction``/``dialog``; this
module only reads the sockets, feeds the ``TransactionLayer``, hands its events to
the transaction user (the call engine), writes what it wants sent, and keeps a
single ``loop.call_at`` pointed at its earliest deadline.

UDP and TCP listen on the same port, in one address family or both (``listen("::")``:
dual stack, two sockets of each kind, see ``listeners.py``); a datagram goes out of the
socket of its destination's family. A message that came over a TCP connection is
answered on that connection (RFC 3261 §18.2.2), and anything the layer sends to the
address of a live connection goes over it: that is how in-dialog requests (our BYE)
reach a TCP caller, the connection reuse phones behind NAT depend on.

SIP over TLS (``listen_tls``, RFC 3261 §26.2.1) is the same framing over a TLS session
(``tls.py``) on its own port (5061 by convention): requests that came over it are answered
over it, and calls to a peer connected over TLS go over its connection. The one kind of
connection we open ourselves is TLS (``connect_tls``, for a ``sips:`` or
``;transport=tls`` route): plain TCP calls are not placed, outbound calls are otherwise UDP.
Nothing meant for a TLS peer goes over UDP when its connection has closed.

Only IP literals are sent to: a host name would make ``sendto()`` resolve it on the
loop. The call engine resolves names first (``resolver.py``); a name that still gets
here is a bug, logged and dropped.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Callable
from typing import Protocol

from .events import SipEvent
from .framing import StreamFramer
from .listeners import bind_listeners, listen_address
from .message import SipMessage, SipParseError, SipRequest, SipResponse, make_error_response, parse_message
from .resolver import is_ip_literal
from .tls import HANDSHAKE_TIMEOUT, TlsError, TlsSession
from .transaction import ClientTransaction, ServerTransaction, TransactionLayer
from .uri import join_hostport

logger = logging.getLogger(__name__)

Addr = tuple[str, int]

# Bad datagrams are logged at most once per source per this many seconds (a flood
# of garbage must not become a flood of log lines).
_BAD_LOG_INTERVAL = 60.0

# TLS peers remembered so that nothing meant for them leaks onto UDP (SipTransport.secure_peers).
_SECURE_PEERS_KEPT = 100_000


class TransactionUser(Protocol):
    def handle_sip_event(self, event: SipEvent) -> None: ...


class _SipStream(asyncio.Protocol):
    """One TCP or TLS connection: frames the byte stream into messages for the transport.

    Over TLS the bytes first go through the connection's ``TlsSession`` (``tls.py``). A
    TLS connection joins ``SipTransport.streams`` (where messages for its peer go) only
    once its handshake is done, so nothing is ever written to a peer in the clear; one
    whose handshake fails or does not finish in ``HANDSHAKE_TIMEOUT`` is logged and closed."""

    def __init__(self, owner: SipTransport, tls: TlsSession | None = None) -> None:
        self.owner = owner
        self.framer = StreamFramer()
        self.tls = tls
        self.transport: asyncio.Transport | None = None
        self.addr: Addr = ("", 0)
        # Outbound TLS: done when the handshake is (or with the TlsError that ended it).
        self.ready: asyncio.Future[None] = owner.loop.create_future()
        self._handshake_timer: asyncio.TimerHandle | None = None

    @property
    def transport_name(self) -> str:
        return "TLS" if self.tls is not None else "TCP"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.addr = transport.get_extra_info("peername")[:2]
        owner = self.owner
        inbound = self.tls is None or self.tls.server_side  # (we open TLS connections only)
        if inbound and owner.admit is not None and not owner.admit(self.addr[0], owner.loop.time()):
            # A new connection counts as a request with the flood guard: one that opens
            # connections (each a socket, a TLS one a handshake of our CPU and a socket
            # held up to HANDSHAKE_TIMEOUT) is throttled like one that floods requests.
            owner.flood_dropped += 1
            self.transport = None
            transport.close()
            return
        if self.tls is None:
            self.owner.streams[self.addr] = self
            self.ready.set_result(None)
            return
        self._handshake_timer = self.owner.loop.call_later(HANDSHAKE_TIMEOUT, self._handshake_timed_out)
        if not self.tls.server_side:
            self.tls.start()  # our ClientHello
            self._write_records()

    def data_received(self, data: bytes) -> None:
        if self.tls is not None:
            was_up = self.tls.established
            try:
                data = self.tls.receive(data)
            except TlsError as exc:
                self._tls_failed(exc)
                return
            self._write_records()
            if not was_up and self.tls.established:
                self._established()
            if self.tls.closed and self.transport is not None:
                self.transport.close()
            if not data:
                return
        try:
            messages = self.framer.feed(data)
        except SipParseError as exc:
            self.owner._bad_message(data, self.addr, str(exc), reply=False)
            if self.transport is not None:
                self.transport.close()
            return
        for raw in messages:
            self.owner._message_received(raw, self.addr, reliable=True)

    def write(self, data: bytes) -> None:
        if self.transport is None:
            return
        if self.tls is None:
            self.transport.write(data)
            return
        try:
            self.tls.send(data)
        except TlsError as exc:
            self._tls_failed(exc)
            return
        self._write_records()

    def _write_records(self) -> None:
        assert self.tls is not None
        records = self.tls.data_to_send()
        if records and self.transport is not None:
            self.transport.write(records)

    def _established(self) -> None:
        assert self.tls is not None
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
        self.owner.streams[self.addr] = self
        peers = self.owner.secure_peers
        peers[self.addr] = None
        if len(peers) > _SECURE_PEERS_KEPT:
            del peers[next(iter(peers))]
        logger.debug("TLS %s with %s:%d", self.tls.version, *self.addr)
        if not self.ready.done():
            self.ready.set_result(None)

    def _tls_failed(self, exc: TlsError) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self.owner.tls_failures += 1
        if self.tls is not None and self.tls.server_side:
            self.owner._log_bad(self.addr[0], f"TLS connection from {join_hostport(*self.addr)} failed: {exc.reason}")
        self._resolve_ready(exc)  # the caller of connect_tls logs it, with its call
        if self.tls is not None:
            records = self.tls.data_to_send()  # our alert, so the peer learns why
            if records and self.transport is not None:
                self.transport.write(records)
        if self.transport is not None:
            self.transport.close()

    def _resolve_ready(self, exc: TlsError) -> None:
        if self.ready.done():
            return
        if self.tls is not None and not self.tls.server_side:
            self.ready.set_exception(exc)
        else:
            self.ready.cancel()  # nobody waits on an accepted connection

    def _handshake_timed_out(self) -> None:
        self._handshake_timer = None
        self._tls_failed(TlsError(f"no TLS handshake within {HANDSHAKE_TIMEOUT:g} s"))

    def connection_lost(self, exc: Exception | None) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self._resolve_ready(TlsError(f"connection closed during the TLS handshake ({exc or 'by the peer'})"))
        if self.owner.streams.get(self.addr) is self:
            del self.owner.streams[self.addr]


class SipTransport(asyncio.DatagramProtocol):
    def __init__(self, loop: asyncio.AbstractEventLoop, layer: TransactionLayer | None = None,
                 admit: Callable[[str, float], bool] | None = None) -> None:
        self.loop = loop
        # The flood guard (switch/security/ratelimit.py): asked per request, before any
        # parsing; a source it refuses is dropped silently (a 503 would amplify the flood).
        self.admit = admit
        self.flood_dropped = 0
        self.layer = layer if layer is not None else TransactionLayer()  # (an empty layer is falsy)
        self.user: TransactionUser | None = None
        self.transport: asyncio.DatagramTransport | None = None  # the socket of the listen address's family
        self.transport4: asyncio.DatagramTransport | None = None  # dual stack: the IPv4 socket beside it
        self.local_addr: Addr = ("0.0.0.0", 0)  # host "::": both families
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: float | None = None
        self._dispatching = False
        self._bad_sources: dict[str, tuple[float, int]] = {}
        self.bad_datagrams = 0
        self.streams: dict[Addr, _SipStream] = {}  # live TCP and TLS connections by peer address
        self._tcp_servers: list[asyncio.AbstractServer] = []
        # SIP over TLS (tls.py): our listener's address, the context of connections we open,
        # and the peers we have spoken TLS with: what is meant for one of them is never sent
        # over UDP when its connection is gone (an ordered set, the oldest forgotten first).
        self.tls_addr: Addr | None = None
        self.client_tls: ssl.SSLContext | None = None
        self.secure_peers: dict[Addr, None] = {}
        self._connecting: dict[Addr, asyncio.Task[None]] = {}
        self.tls_failures = 0

    async def listen(self, host: str, port: int) -> None:
        """UDP and TCP on ``host:port``; ``host`` "::" is dual stack (IPv4 too)."""
        bound = bind_listeners(await listen_address(self.loop, host), port)
        try:
            transports = [(await self.loop.create_datagram_endpoint(lambda: self, sock=sock))[0]
                          for sock in bound.udp]
            for sock in bound.tcp:
                self._tcp_servers.append(await self.loop.create_server(lambda: _SipStream(self), sock=sock))
        except BaseException:
            bound.close()
            raise
        self.transport = transports[0]
        self.transport4 = transports[1] if len(transports) > 1 else None
        self.local_addr = (bound.host, bound.port)

    async def listen_tls(self, host: str, port: int, context: ssl.SSLContext) -> None:
        """SIP over TLS (RFC 3261 §26.2.1) on ``host:port`` (TCP; "::" dual stack)."""
        try:
            bound = bind_listeners(await listen_address(self.loop, host), port, kinds=(socket.SOCK_STREAM,))
        except OSError as exc:
            raise OSError(exc.errno, f"--tls-listen {join_hostport(host, port)}: {exc.strerror}") from None
        try:
            for sock in bound.tcp:
                self._tcp_servers.append(await self.loop.create_server(
                    lambda: _SipStream(self, TlsSession(context, server_side=True)), sock=sock))
        except BaseException:
            bound.close()
            raise
        self.tls_addr = (bound.host, bound.port)

    async def connect_tls(self, addr: Addr, server_name: str, timeout: float = HANDSHAKE_TIMEOUT) -> None:
        """A TLS connection to ``addr`` (an IP), its certificate checked for ``server_name``
        (``client_tls``): reused when one is up. Raises ``TlsError`` saying why not."""
        stream = self.streams.get(addr)
        if stream is not None:
            if stream.tls is None:
                raise TlsError(f"{join_hostport(*addr)} is connected to us over plain TCP, not TLS")
            return
        if self.client_tls is None:
            raise TlsError("TLS is not configured")
        pending = self._connecting.get(addr)
        if pending is None:  # calls placed to one peer at once share one connection
            pending = self._connecting[addr] = self.loop.create_task(self._connect_tls(addr, server_name, timeout))
            pending.add_done_callback(lambda _: self._connecting.pop(addr, None))
        await asyncio.shield(pending)

    async def _connect_tls(self, addr: Addr, server_name: str, timeout: float) -> None:
        assert self.client_tls is not None
        context = self.client_tls
        try:
            _, made = await asyncio.wait_for(self.loop.create_connection(
                lambda: _SipStream(self, TlsSession(context, server_side=False, server_hostname=server_name)),
                addr[0], addr[1]), timeout)
            await asyncio.wait_for(asyncio.shield(made.ready), timeout)
        except TimeoutError:
            raise TlsError(f"no TLS connection to {join_hostport(*addr)} within {timeout:g} s") from None
        except OSError as exc:
            raise TlsError(f"cannot connect to {join_hostport(*addr)}: {exc.strerror or exc}") from None

    def transport_of(self, addr: Addr) -> str:
        """How a message to ``addr`` travels: over its TLS or TCP connection, else UDP."""
        stream = self.streams.get(addr)
        return stream.transport_name if stream is not None else "UDP"

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for transport in (self.transport, self.transport4):
            if transport is not None:
                transport.close()
        for server in self._tcp_servers:
            server.close()
        for stream in list(self.streams.values()):
            if stream.transport is not None:
                stream.transport.close()

    # ---- asyncio callbacks
    def datagram_received(self, data: bytes, addr: Addr) -> None:
        if len(data) <= 4 and not data.strip():
            return  # RFC 5626 CRLF keepalive
        self._message_received(data, addr[:2], reliable=False)

    def _message_received(self, data: bytes, addr: Addr, reliable: bool) -> None:
        # Responses are not counted: a busy gateway's 18x/200s are answers to us.
        if self.admit is not None and not data.startswith(b"SIP/2.0 ") and not self.admit(addr[0], self.loop.time()):
            self.flood_dropped += 1
            return
        try:
            msg: SipMessage = parse_message(data)  # fully validated, or SipParseError
        except SipParseError as exc:
            self._bad_message(data, addr, str(exc), error=exc)
            return
        try:
            self.layer.receive(msg, addr, self.loop.time(), reliable)  # type: ignore[arg-type]
        except Exception:
            # A bug of ours on one message must not escape into asyncio, which would close
            # the socket and stop SIP for every call.
            logger.exception("error receiving %r from %s:%d", msg, addr[0], addr[1])
        self._service()

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable etc.: UDP gives no reliable way to map it to a
        # transaction, so the transaction timers decide (Timer B/F -> 408).
        logger.debug("SIP socket error: %s", exc)

    # ---- what the transaction user calls
    def send_response(self, txn: ServerTransaction, response: SipResponse) -> None:
        self.layer.send_response(txn, response, self.loop.time())
        self._service()

    def send_request(self, request: SipRequest, addr: Addr) -> ClientTransaction:
        txn = self.layer.send_request(request, addr, self.loop.time(), reliable=addr in self.streams)
        self._service()
        return txn

    def send_stateless(self, msg: SipRequest | SipResponse, addr: Addr) -> None:
        self.layer.send_stateless(msg, addr)
        self._service()

    # ---- internals
    def _log_bad(self, host: str, line: str) -> None:
        """``line`` about ``host``, logged at most once per ``_BAD_LOG_INTERVAL`` per host."""
        now = time.monotonic()
        last, suppressed = self._bad_sources.get(host, (0.0, 0))
        if now - last >= _BAD_LOG_INTERVAL:
            more = f" ({suppressed} more since last report)" if suppressed else ""
            logger.warning("%s%s", line, more)
            self._bad_sources[host] = (now, 0)
            if len(self._bad_sources) > 10000:
                self._bad_sources.clear()
        else:
            self._bad_sources[host] = (last, suppressed + 1)

    def _service(self) -> None:
        """Deliver events, flush datagrams, re-arm the timer. Re-entrant calls from
        the TU (answering inside an event handler) are folded into the outer pass."""
        if self._dispatching:
            return
        self._dispatching = True
        try:
            layer = self.layer
            user = self.user
            while (event := layer.next_event()) is not None:
                if user is None:
                    continue
                try:
                    user.handle_sip_event(event)
                except Exception:  # one bad call must never stop SIP processing
                    logger.exception("error handling %s", type(event).__name__)
            self._flush()
        finally:
            self._dispatching = False
        self._arm_timer()

    def _flush(self) -> None:
        transport, transport4 = self.transport, self.transport4
        streams = self.streams
        for data, addr in self.layer.datagrams_to_send():
            stream = streams.get(addr)
            if stream is not None and stream.transport is not None:
                stream.write(data)
                continue
            if addr in self.secure_peers:
                # Its TLS connection is gone: sending this over UDP would put in the clear
                # what the peer sent us encrypted (RFC 3261 §26.2.1).
                logger.warning("not sending to %s:%d: its TLS connection is closed", addr[0], addr[1])
                continue
            if not is_ip_literal(addr[0]):
                logger.error("not sending to %s:%s: a host name here would be resolved on the event loop",
                             addr[0], addr[1])
                continue
            out = transport4 if transport4 is not None and ":" not in addr[0] else transport
            if out is not None:
                try:
                    out.sendto(data, addr)
                except (OSError, ValueError) as exc:
                    logger.warning("cannot send to %s:%s: %s", addr[0], addr[1], exc)

    def _arm_timer(self) -> None:
        deadline = self.layer.get_timer()
        if deadline == self._timer_deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_deadline = deadline
        if deadline is not None:
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_deadline = None
        self.layer.handle_timer(self.loop.time())
        self._service()

    def _bad_message(self, data: bytes, addr: Addr, reason: str, reply: bool = True,
                     error: SipParseError | None = None) -> None:
        """Answer 400 when the request is complete enough to answer, else drop; log once."""
        self.bad_datagrams += 1
        self._log_bad(addr[0], f"bad SIP message from {join_hostport(*addr)} ({len(data)} bytes): {reason}")
        if not reply or error is None:
            return
        # Built from what the parser read (never a second parse): RFC 3261 §8.2.6.
        answer = make_error_response(error, addr)
        if answer is None:
            return  # a response, an ACK, or no Via: nothing can be routed (§17, §18.2.2)
        response, dest = answer
        self.send_stateless(response, addr if addr in self.streams else dest)
