"""Where a request we send goes: RFC 3263 server location (NAPTR -> SRV -> A/AAAA).

A new call's destination (a gateway, a dialled URI) is located here before its INVITE:

1. Transport (§4.1): a ``transport=`` parameter wins; a numeric host or an explicit port
   means UDP (TLS for ``sips:``); otherwise the name's NAPTR records, kept where their
   flags are "S" and their service one the switch sends (``SIP+D2U`` UDP, ``SIP+D2T``
   TCP, ``SIPS+D2T`` TLS; ``sips:`` keeps only TLS), ordered by order then preference.
   With none: SRV queries for the transports the switch sends, in our order of
   preference (UDP, TCP, TLS); the first that has records wins.
2. Port and host (§4.2): a numeric host or an explicit port is looked up as A/AAAA at
   that port (5060, 5061 for TLS, when there is none). Otherwise the SRV records are
   ordered by priority, and by weight within a priority (RFC 2782's weighted random
   pick), and each target's A/AAAA addresses follow in that order. No SRV records:
   the host itself, A/AAAA, at the default port. A target of "." offers no service.
3. The result is the ordered list of ``Target`` (transport, address, port): the call
   tries the first and fails over to the next when one does not answer or says 503
   (§4.3; ``OutboundLeg``). The transport is data here, so a transport the switch learns
   (TLS) needs no change in this module, only in the set the engine passes.

``localhost`` is never asked of DNS (RFC 6761 §6.3): it is the host's own, A/AAAA only.
Records are cached for their TTL by ``dns_records.py``, addresses by ``resolver.py``.
"""

from __future__ import annotations

import logging
import random
import socket
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from .dns_records import Address, DnsFailure, DnsRecords, Naptr, Record, Srv
from .resolver import Lookup, ResolveError, Resolver, is_ip_literal
from .uri import SipUri, host_address

logger = logging.getLogger(__name__)

# NAPTR service field (RFC 3263 §4.1) -> (transport, SRV service prefix).
SERVICES: dict[str, tuple[str, str]] = {
    "SIP+D2U": ("UDP", "_sip._udp"),
    "SIP+D2T": ("TCP", "_sip._tcp"),
    "SIPS+D2T": ("TLS", "_sips._tcp"),
}
SRV_PREFIX = {transport: prefix for transport, prefix in SERVICES.values()}
PREFERENCE = ("UDP", "TCP", "TLS")  # with no NAPTR: the SRV queries tried, in this order
MAX_TARGETS = 8  # a name with more servers than this: the first eight are plenty to fail over across


@dataclass(frozen=True, slots=True)
class Target:
    """One server to send to: an IP literal, a port and the transport to reach it by."""

    transport: str  # "UDP", "TCP" or "TLS"
    address: str
    port: int

    @property
    def addr(self) -> tuple[str, int]:
        return (self.address, self.port)

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}/{self.transport}"


def default_port(transport: str) -> int:
    return 5061 if transport == "TLS" else 5060  # RFC 3261 §19.1.2


def order_srv(records: Sequence[Srv], rand: Callable[[], float] = random.random) -> list[Srv]:
    """RFC 2782's order: by priority (lowest first); within one priority a weighted random
    pick, again and again: a record of weight 60 beside one of 20 comes first three times
    in four. Weight-0 records are put first in the running sum, so they are picked only
    when the draw is 0 or they are all that is left (RFC 2782, "Weight")."""
    ordered: list[Srv] = []
    for priority in sorted({r.priority for r in records}):
        group = sorted((r for r in records if r.priority == priority), key=lambda r: r.weight != 0)
        while group:
            total = sum(r.weight for r in group)
            pick = rand() * total
            running = 0
            chosen = group[-1]
            for record in group:
                running += record.weight
                if running >= pick and (record.weight or pick == 0):
                    chosen = record
                    break
            ordered.append(chosen)
            group.remove(chosen)
    return ordered


def naptr_services(records: Sequence[Naptr], transports: Collection[str], secure: bool) -> list[tuple[str, str]]:
    """The NAPTR records a SIP client may follow (RFC 3263 §4.1) as (transport, SRV name),
    in order then preference: flag "S", a SIP service the switch sends, and for ``sips:``
    only ``SIPS+D2T``."""
    usable = []
    for record in sorted(records, key=lambda r: (r.order, r.preference)):
        service = SERVICES.get(record.service.upper())
        if record.flags.upper() != "S" or service is None or not record.replacement:
            continue
        transport = service[0]
        if transport in transports and (transport == "TLS" or not secure):
            usable.append((transport, record.replacement))
    return usable


async def locate(uri: SipUri, transports: Collection[str], resolver: Resolver, records: DnsRecords,
                 rand: Callable[[], float] = random.random) -> list[Target]:
    """The servers for a request to ``uri``, in the order to try them (see the module doc).
    ``transports``: what the switch can send on. ResolveError (404/503) when there is none."""
    secure = uri.scheme == "sips"
    host = host_address(uri.params.get("maddr") or uri.host)
    forced = (uri.params.get("transport") or "").upper()
    transport = ("TLS" if secure and forced == "TCP" else forced) if forced else ("TLS" if secure else "UDP")
    if forced or is_ip_literal(host) or uri.port is not None or _local(host):
        _check_sendable(host, transport, transports)
    if is_ip_literal(host) or uri.port is not None or _local(host):
        return await _addresses(resolver, host, uri.port or default_port(transport), transport)
    if forced:
        wanted = [(transport, f"{SRV_PREFIX.get(transport, '_sip._' + transport.lower())}.{host}")]
    else:
        naptr = [r for r in await _records(records, host, "NAPTR") if isinstance(r, Naptr)]
        wanted = naptr_services(naptr, transports, secure)
        if not wanted:  # §4.1: no (usable) NAPTR: SRV for each transport we send, in our order
            wanted = [(t, f"{SRV_PREFIX[t]}.{host}") for t in PREFERENCE
                      if t in transports and (t == "TLS" or not secure)]
            if not wanted:
                raise ResolveError(host, 503, f"it is a sips: URI (TLS) and the switch sends {_names(transports)}")
    for transport, name in wanted:
        srv = [r for r in await _records(records, name, "SRV") if isinstance(r, Srv)]
        if srv:
            return await _srv_targets(resolver, name, transport, order_srv(srv, rand))
    transport = wanted[0][0]  # §4.2: no SRV: the host itself, at the default port
    return await _addresses(resolver, host, default_port(transport), transport)


def _check_sendable(host: str, transport: str, transports: Collection[str]) -> None:
    if transport not in transports:
        raise ResolveError(host, 503, f"it is reached over {transport} and the switch sends {_names(transports)}")


def _names(transports: Collection[str]) -> str:
    return " and ".join(t for t in PREFERENCE if t in transports) or "nothing"


def _local(host: str) -> bool:
    name = host.lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost")  # RFC 6761 §6.3


async def _records(records: DnsRecords, name: str, rdtype: str) -> tuple[Record, ...]:
    """NAPTR or SRV records; a DNS failure counts as none (the next step of §4.1/§4.2 is
    tried: the host's own A/AAAA may still answer), logged by ``dns_records``."""
    try:
        found, _ = await records.lookup(name, rdtype)
    except DnsFailure:
        return ()
    return found


async def _addresses(resolver: Resolver, host: str, port: int, transport: str) -> list[Target]:
    return [Target(transport, address, port) for address in (await resolver.addresses(host))[:MAX_TARGETS]]


async def _srv_targets(resolver: Resolver, name: str, transport: str, ordered: list[Srv]) -> list[Target]:
    """Each SRV target's addresses, in the SRV order; a target that does not resolve is
    skipped (the next one is where §4.3 would fail over to anyway)."""
    targets: list[Target] = []
    error: ResolveError | None = None
    for record in ordered:
        if not record.target:
            continue  # "." : the service is decidedly not available there (RFC 2782)
        try:
            addresses = await resolver.addresses(record.target)
        except ResolveError as exc:
            error = exc
            continue
        targets.extend(Target(transport, address, record.port) for address in addresses)
        if len(targets) >= MAX_TARGETS:
            break
    if not targets:
        if error is not None:
            raise ResolveError(name, error.status, f"no SRV target resolves ({error})")
        raise ResolveError(name, 404, "its SRV records say the service is not offered")
    logger.debug("%s: %s", name, ", ".join(map(str, targets[:MAX_TARGETS])))
    return targets[:MAX_TARGETS]


def dns_lookup(records: DnsRecords) -> Lookup:
    """A ``Resolver`` lookup asking ``records`` (the configured DNS servers) for AAAA and A,
    instead of getaddrinfo: with ``dns_servers`` set, every name is theirs to answer."""

    async def lookup(host: str) -> tuple[list[tuple[int, str]], float | None]:
        if _local(host):  # RFC 6761 §6.3: the host's own loopback, never a DNS server's answer
            return [(socket.AF_INET6, "::1"), (socket.AF_INET, "127.0.0.1")], None
        found: list[tuple[int, str]] = []
        ttls: list[float] = []
        failures: list[DnsFailure] = []
        for rdtype in ("AAAA", "A"):  # RFC 6724's default order: IPv6 first where both serve
            try:
                answer, ttl = await records.lookup(host, rdtype)
            except DnsFailure as exc:
                failures.append(exc)
                continue
            found.extend((r.family, r.ip) for r in answer if isinstance(r, Address))
            if answer:
                ttls.append(ttl)
        if not found and len(failures) == 2:
            raise failures[0]  # an OSError: the resolver makes it a 503
        return found, min(ttls) if ttls else None

    return lookup


__all__ = ["MAX_TARGETS", "SERVICES", "Target", "default_port", "dns_lookup", "locate", "naptr_services", "order_srv"]
