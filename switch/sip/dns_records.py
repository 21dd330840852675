"""DNS records for server location (RFC 3263): NAPTR, SRV, A and AAAA, asked of DNS servers
by dnspython's asyncio resolver (on the loop, without blocking it) and cached for their TTL.

``switch/sip/locator.py`` decides what to ask; this module only asks and remembers:

- The servers are the system's (``/etc/resolv.conf``) unless the config's ``dns_servers``
  names some (``"192.0.2.53"``, ``"127.0.0.1:5353"``, ``"[2001:db8::53]:53"``).
- An answer is kept for its TTL (at most ``MAX_TTL``); "no such name" and "no record of
  that type" for ``NEGATIVE_TTL`` (RFC 2308 lets a resolver cache them); a failure (a
  timeout, SERVFAIL, REFUSED) for ``FAILURE_TTL``, so a dead DNS server costs one timeout
  per name and period, not one per call. Queries for one name and type in flight at once
  are one query. The cache is bounded.
- Records come back as small typed tuples (``Naptr``, ``Srv``, addresses), never dnspython
  objects: the locator's ordering logic is tested on plain data.
- dnspython is imported at the first query, in a thread: a switch whose routes are all
  IP addresses never needs it, and it is ~5 MiB of the switch's RSS (issue 7 point 4 holds
  1000 calls to 200 MB). Its import takes ~50 ms, too long for the loop, so the first
  query waits for it in the executor (bench/README.md measures what the loop sees).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from .expiring import remember
from .uri import split_hostport

if TYPE_CHECKING:
    import dns.asyncresolver

logger = logging.getLogger(__name__)

_DNSPYTHON = ("dns.asyncresolver", "dns.exception", "dns.nameserver", "dns.rdatatype", "dns.resolver")
_dnspython_loaded = False  # set once every module above is imported


def _import_dnspython() -> None:
    """(In the executor.) Two first queries at once: the second thread waits on the
    import locks, off the loop too."""
    global _dnspython_loaded
    for module in _DNSPYTHON:
        importlib.import_module(module)
    _dnspython_loaded = True

MAX_TTL = 3600.0
NEGATIVE_TTL = 30.0
FAILURE_TTL = 5.0
TIMEOUT = 3.0  # per query, retries included: a call waits at most this per record type
MAX_ENTRIES = 2048


class Naptr(NamedTuple):
    """RFC 3403 §4.1, the fields RFC 3263 §4.1 uses."""

    order: int
    preference: int
    flags: str
    service: str
    replacement: str  # a domain name, without the trailing dot


class Srv(NamedTuple):
    """RFC 2782."""

    priority: int
    weight: int
    port: int
    target: str  # a host name, without the trailing dot; "" for "." (service not offered here)


class Address(NamedTuple):
    """An A or AAAA record."""

    family: int  # socket.AF_INET or AF_INET6
    ip: str


Record = Naptr | Srv | Address


class DnsFailure(OSError):
    """The DNS could not say (timeout, SERVFAIL, REFUSED, no server configured); an
    OSError like getaddrinfo's failures, so ``Resolver`` answers it with 503."""


@dataclass(frozen=True, slots=True)
class _Cached:
    expires: float
    records: tuple[Record, ...] = ()
    failure: str | None = None


Query = Callable[[str, str], Awaitable[tuple[Sequence[Record], float]]]


def parse_dns_server(text: str) -> tuple[str, int]:
    """``"192.0.2.53"``, ``"127.0.0.1:5353"``, ``"[::1]:5353"`` -> (IP, port); ValueError
    with what to write otherwise."""
    try:
        host, port = split_hostport(text.strip())
        address = host.strip("[]")
        socket.inet_pton(socket.AF_INET6 if ":" in address else socket.AF_INET, address)
    except (OSError, ValueError):
        raise ValueError(f"dns_servers: {text!r} is not IP or IP:PORT (e.g. \"127.0.0.1:5353\", "
                         "\"[::1]:53\"): a DNS server is given by address") from None
    return address, port or 53


class DnsRecords:
    def __init__(self, servers: Sequence[str] = (), *, clock: Callable[[], float],
                 query: Query | None = None, timeout: float = TIMEOUT, max_entries: int = MAX_ENTRIES) -> None:
        """``servers``: as ``dns_servers`` writes them; none: the system's resolv.conf.
        ``query`` replaces the network (unit tests)."""
        self.servers = [parse_dns_server(s) for s in servers]
        self._clock = clock
        self.timeout = timeout
        self.max_entries = max_entries
        self._query = query or self._ask
        self._resolver: dns.asyncresolver.Resolver | None = None
        self._cache: dict[tuple[str, str], _Cached] = {}
        self._pending: dict[tuple[str, str], asyncio.Task[_Cached]] = {}
        self.queries = 0  # sent to the network (not served from the cache), for tests

    @property
    def configured(self) -> bool:
        """The config names the DNS servers: A/AAAA are asked of them too (not getaddrinfo)."""
        return bool(self.servers)

    async def lookup(self, name: str, rdtype: str) -> tuple[tuple[Record, ...], float]:
        """The records of ``rdtype`` ("NAPTR", "SRV", "A", "AAAA") at ``name`` and how long
        they stay valid; () when there are none; DnsFailure when the DNS could not say."""
        key = (name.lower().rstrip("."), rdtype)
        now = self._clock()
        entry = self._cache.get(key)
        if entry is None or entry.expires <= now:
            pending = self._pending.get(key)
            if pending is None:
                pending = self._pending[key] = asyncio.get_running_loop().create_task(self._fetch(key))
            entry = await asyncio.shield(pending)
        if entry.failure is not None:
            raise DnsFailure(entry.failure)
        return entry.records, max(0.0, entry.expires - self._clock())

    def close(self) -> None:
        for task in self._pending.values():
            task.cancel()
        self._pending.clear()

    # ---- internals
    async def _fetch(self, key: tuple[str, str]) -> _Cached:
        name, rdtype = key
        self.queries += 1
        try:
            records, ttl = await self._query(name, rdtype)
            entry = _Cached(self._clock() + min(ttl, MAX_TTL) if records else self._clock() + NEGATIVE_TTL,
                            tuple(records))
        except DnsFailure as exc:
            logger.warning("DNS %s %s: %s", rdtype, name, exc)
            entry = _Cached(self._clock() + FAILURE_TTL, failure=str(exc))
        finally:
            self._pending.pop(key, None)
        self._remember(key, entry)
        return entry

    def _remember(self, key: tuple[str, str], entry: _Cached) -> None:
        remember(self._cache, key, entry, self.max_entries, self._clock())

    def _dns(self) -> dns.asyncresolver.Resolver:
        import dns.asyncresolver  # (loaded by _ask: these are sys.modules lookups)
        import dns.nameserver
        import dns.resolver

        if self._resolver is None:
            if self.servers:
                resolver = dns.asyncresolver.Resolver(configure=False)
                resolver.nameservers = [dns.nameserver.Do53Nameserver(ip, port) for ip, port in self.servers]
            else:
                try:
                    resolver = dns.asyncresolver.Resolver()  # /etc/resolv.conf
                except dns.resolver.NoResolverConfiguration as exc:
                    raise DnsFailure(f"no DNS server configured ({exc}): set dns_servers") from None
            resolver.lifetime = self.timeout
            resolver.cache = None  # ours above: bounded, with negative and failure entries
            self._resolver = resolver
        return self._resolver

    async def _ask(self, name: str, rdtype: str) -> tuple[list[Record], float]:
        if not _dnspython_loaded:  # the first query (module doc)
            await asyncio.get_running_loop().run_in_executor(None, _import_dnspython)
        import dns.exception
        import dns.resolver

        try:
            answer = await self._dns().resolve(name + ".", rdtype, raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN:
            return [], 0.0
        except dns.resolver.LifetimeTimeout:
            raise DnsFailure(f"no answer within {self.timeout:g} s") from None
        except dns.resolver.NoNameservers as exc:  # SERVFAIL, REFUSED from every server
            raise DnsFailure(str(exc)) from None
        except dns.exception.DNSException as exc:
            raise DnsFailure(f"{type(exc).__name__}: {exc}") from None
        if answer.rrset is None:
            return [], 0.0
        out: list[Record] = []
        for rdata in answer.rrset:
            if rdtype == "NAPTR":
                out.append(Naptr(rdata.order, rdata.preference, rdata.flags.decode("ascii", "replace"),
                                 rdata.service.decode("ascii", "replace"), _name(rdata.replacement)))
            elif rdtype == "SRV":
                out.append(Srv(rdata.priority, rdata.weight, rdata.port, _name(rdata.target)))
            else:
                out.append(Address(socket.AF_INET6 if rdtype == "AAAA" else socket.AF_INET, rdata.address))
        return out, float(answer.rrset.ttl)


def _name(name: object) -> str:
    return str(name).rstrip(".")


__all__ = ["Address", "DnsFailure", "DnsRecords", "Naptr", "Record", "Srv", "parse_dns_server"]
