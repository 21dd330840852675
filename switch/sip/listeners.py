"""The sockets SIP listens on: UDP and TCP on one port, in one family or both (dual stack).

``--listen [::]:5060`` means both families, done as two sockets of each kind: an IPv6 one
with ``IPV6_V6ONLY`` set and an IPv4 one on ``0.0.0.0``, so IPv4 peers are seen (and
written into ``Via received=``, RFC 3261 §18.2.1) as the IPv4 addresses they are, not as
``::ffff:a.b.c.d`` mapped addresses (RFC 4291 §2.5.5.2) that would leak into our headers
and SDP. A host without IPv6 gets the IPv4 pair only, with a warning; an IPv4 or IPv6
address listens in its own family only.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from dataclasses import dataclass, field

from .resolver import is_ip_literal

logger = logging.getLogger(__name__)

_BIND_ATTEMPTS = 10  # port 0 in both families: the port the kernel picked may be taken in the other
_NO_IPV6 = (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT)


@dataclass
class Listeners:
    host: str  # what we listen on: an address, or "::" for dual stack, "0.0.0.0" for any IPv4
    port: int
    udp: list[socket.socket] = field(default_factory=list)  # the listen host's family first
    tcp: list[socket.socket] = field(default_factory=list)

    def close(self) -> None:
        for sock in (*self.udp, *self.tcp):
            sock.close()


async def listen_address(loop: asyncio.AbstractEventLoop, host: str) -> str:
    """``host`` as an address: a name (``localhost``) is looked up once, at start-up, off
    the loop like every lookup (switch/sip/resolver.py)."""
    host = host.strip("[]")
    if is_ip_literal(host):
        return host
    infos = await loop.getaddrinfo(host, None, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
    if not infos:
        raise OSError(f"--listen {host!r} has no address")
    return str(infos[0][4][0])


_KINDS = (socket.SOCK_DGRAM, socket.SOCK_STREAM)


def bind_listeners(host: str, port: int, kinds: tuple[socket.SocketKind, ...] = _KINDS) -> Listeners:
    """Bind UDP and TCP (or only ``kinds``: TLS listens on TCP alone) on ``host:port``
    (``host`` an address; ``::`` both families). Raises OSError when the port is taken."""
    if host != "::":
        return _bind([(_family(host), host)], port, kinds)
    try:
        return _bind([(socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")], port, kinds)
    except OSError as exc:
        if exc.errno not in _NO_IPV6:
            raise
        logger.warning("no IPv6 on this host (%s): listening on IPv4 only; IPv6 offers get 488", exc)
        return _bind([(socket.AF_INET, "0.0.0.0")], port, kinds)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _bind(addresses: list[tuple[socket.AddressFamily, str]], port: int,
          kinds: tuple[socket.SocketKind, ...]) -> Listeners:
    for attempt in range(_BIND_ATTEMPTS if port == 0 else 1):
        bound = Listeners(addresses[0][1], port)
        try:
            for family, host in addresses:
                for kind in kinds:
                    sockets = bound.udp if kind == socket.SOCK_DGRAM else bound.tcp
                    sockets.append(_socket(family, kind, host, bound.port))
                    bound.port = sockets[-1].getsockname()[1]  # port 0: the rest take the one picked
        except OSError as exc:
            bound.close()
            if port != 0 or exc.errno != errno.EADDRINUSE or attempt == _BIND_ATTEMPTS - 1:
                raise
            continue
        return bound
    raise AssertionError("unreachable")


def _socket(family: socket.AddressFamily, kind: socket.SocketKind, host: str, port: int) -> socket.socket:
    sock = socket.socket(family, kind)
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's create_server does
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # IPv4 has its own socket
        sock.setblocking(False)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


__all__ = ["Listeners", "bind_listeners", "listen_address"]
