"""Which address families the switch serves, and which of its addresses a peer should see.

The switch speaks the families it listens on (``SipTransport.listen``): ``0.0.0.0`` or an
IPv4 address is IPv4 only, an IPv6 address IPv6 only, and ``::`` both (two sockets on one
port: dual stack). Media keeps to those families: an offer whose ``c=`` line says ``IN
IP6`` (RFC 4566 §5.7) gets an IPv6 RTP socket and an ``IN IP6`` answer, one in a family
we do not serve gets 488 (Warning 301, RFC 3261 §20.43), never an answer whose media can
flow nowhere. So one call can join an IPv6 caller to an IPv4 callee: each leg has its own
socket, and the relay between them does not care about families.

What we put in Contact, Via and SDP for a peer is the configured ``advertise`` address
when it has the peer's family (NAT), else the address we listen on, else the source
address the kernel would use to reach the peer (one probe per peer, cached).
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Callable

Addr = tuple[str, int]

WILDCARDS: dict[int, str] = {socket.AF_INET: "0.0.0.0", socket.AF_INET6: "::"}
_LOOPBACKS: dict[int, str] = {socket.AF_INET: "127.0.0.1", socket.AF_INET6: "::1"}
_PROBE_CACHE_LIMIT = 4096  # one entry per peer address; a flood of sources must not grow it


@functools.lru_cache(maxsize=_PROBE_CACHE_LIMIT)
def ip_family(host: str) -> socket.AddressFamily | None:
    """The family of an IP literal (brackets allowed), None for anything else (a name).
    Cached: a call asks it of the same few addresses (ours, its peer's) several times, and
    ``ipaddress`` takes ~4.4 us a time (~1.3 % of the switch at 450 calls/s, py-spy);
    bounded, so a flood of sources cannot grow it."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    return socket.AF_INET6 if address.version == 6 else socket.AF_INET


def served_families(listen_host: str) -> frozenset[socket.AddressFamily]:
    """The families a switch listening on ``listen_host`` has sockets for: ``::`` is dual
    stack (``SipTransport`` writes ``0.0.0.0`` there when the host has no IPv6)."""
    if listen_host == "::":
        return frozenset((socket.AF_INET, socket.AF_INET6))
    return frozenset((ip_family(listen_host) or socket.AF_INET,))


def route_source(peer_ip: str) -> str | None:
    """The source address the kernel would use to reach ``peer_ip`` (an IP literal; no
    packet is sent), or None when it has no route there (e.g. no IPv6 on this host)."""
    family = ip_family(peer_ip)
    if family is None:
        return None
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((peer_ip.strip("[]"), 9))
            return str(probe.getsockname()[0])
    except OSError:
        return None


class LocalAddresses:
    """Our addresses as each peer should see them, for a switch bound where ``bound()``
    says (read on every call: the port is known only once the transport listens)."""

    def __init__(self, bound: Callable[[], Addr], advertise: str | None = None,
                 probe: Callable[[str], str | None] = route_source) -> None:
        self.bound = bound
        self.advertise = advertise or None
        self._advertise_family = ip_family(advertise) if advertise else None
        self._probe = probe
        self._towards: dict[str, str | None] = {}

    @property
    def families(self) -> frozenset[socket.AddressFamily]:
        return served_families(self.bound()[0])

    def towards(self, peer_ip: str) -> str | None:
        """Our address in ``peer_ip``'s family that it can reach, or None when we serve
        no such family or have no route to it."""
        family = ip_family(peer_ip)
        if family is None or family not in self.families:
            return None
        if self.advertise and self._advertise_family == family:
            return self.advertise
        host = self.bound()[0]
        if host not in WILDCARDS.values():
            return host  # bound to one address: that is the only one a peer can reach us at
        if peer_ip not in self._towards:
            if len(self._towards) >= _PROBE_CACHE_LIMIT:
                self._towards.clear()
            self._towards[peer_ip] = self._probe(peer_ip)
        return self._towards[peer_ip]

    def sip(self, peer_ip: str) -> str:
        """How our Contact and Via name us to a SIP peer (it reached us, or we it, so its
        family is served); the family's loopback if the kernel knows no route."""
        found = self.towards(peer_ip)
        if found is not None:
            return found
        family = ip_family(peer_ip) or socket.AF_INET
        host = self.bound()[0]
        return host if host not in WILDCARDS.values() and ip_family(host) == family else _LOOPBACKS[family]

    def media(self, family: int, peer_media: str | None, sip_peer: str) -> str | None:
        """The address our SDP names for RTP in ``family``: the one facing the peer's media
        address (the ``c=`` of its offer), else facing its SIP address when that is of the
        family, else our loopback of it. None: the family is unavailable (not served, or
        this host has no route in it: no IPv6 address at all, say)."""
        for target in (peer_media, sip_peer, _LOOPBACKS.get(family)):
            if target is not None and ip_family(target) == family and not _unspecified(target):
                return self.towards(target)
        return None

    def is_ours(self, host: str) -> bool:
        """Does ``host`` (bare, no brackets) name this switch?"""
        bound = self.bound()[0]
        return (host in ("127.0.0.1", "::1", "localhost", bound) or host == self.advertise
                or host in self._towards.values())


def _unspecified(ip: str) -> bool:
    """0.0.0.0 / :: (an SDP hold address, RFC 3264 §8.4): no peer to route towards."""
    return ip.strip("[]") in WILDCARDS.values()


__all__ = ["LocalAddresses", "WILDCARDS", "ip_family", "route_source", "served_families"]
