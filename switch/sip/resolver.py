"""Host names we send SIP to, resolved off the event loop (RFC 3263 §4.2, A/AAAA only).

A ``sendto()`` to a host name resolves it synchronously, on the thread that keeps SIP and
RTP time: one slow DNS server would stall every call. So nothing reaches the transport
but IP literals: a name from a route (``--gateway sip:gw.example.net``, a dialled URI) or
from a dialog (a Contact or Record-Route with a name) is resolved here first, with
``loop.getaddrinfo`` (the default executor's threads), before anything is sent there.

- The lookup is ``getaddrinfo`` (the system's /etc/hosts and DNS), or, when the config
  names ``dns_servers``, A and AAAA queries to them (``CallEngine`` passes that lookup in).
- Results are cached: ``getaddrinfo`` gives no TTL, so an answer is kept ``ttl`` seconds
  (a gateway that moves is followed within a minute) and a failure ``negative_ttl``
  seconds (a dead name does not cost a lookup per call). Lookups of one name in flight
  at once are one lookup. The cache is bounded.
- A lookup that takes longer than ``timeout`` fails (the executor thread finishes it on
  its own; the call does not wait for it).
- The address picked is the first the system's order (RFC 6724) gives in a family we
  serve: a dual-homed gateway is reached over IPv4 by an IPv4-only switch.
- Failures are ``ResolveError`` with the status the leg fails with: 404 for a name that
  does not exist (nothing to reach there), 503 for a lookup that failed or timed out, or
  for a name with no address in a family we serve (RFC 3261 §8.1.3.1 treats a transport
  failure as 503).

SRV and NAPTR (RFC 3263 §4.1, §4.2), for a new call's destination, are ``locator.py``,
which asks this module for the addresses of the hosts SRV names. In-dialog requests (a
remote target or Record-Route that names a host) are sent to its A/AAAA address, at the
URI's port or 5060.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass

from .expiring import remember
from .uri import host_address

logger = logging.getLogger(__name__)

Addr = tuple[str, int]
# A name's addresses as (family, IP), and their TTL when the source says (None: ``ttl``).
Lookup = Callable[[str], Awaitable[tuple[list[tuple[int, str]], float | None]]]

TTL = 60.0
NEGATIVE_TTL = 10.0
TIMEOUT = 5.0
MAX_ENTRIES = 1024
_NOT_FOUND = frozenset(e for e in (getattr(socket, "EAI_NONAME", None), getattr(socket, "EAI_NODATA", None))
                       if e is not None)
FAMILY_NAMES: dict[int, str] = {socket.AF_INET: "IPv4", socket.AF_INET6: "IPv6"}


def family_names(families: Collection[int], joiner: str = " and ") -> str:
    """``[AF_INET, AF_INET6]`` -> "IPv4 and IPv6", for messages."""
    return joiner.join(FAMILY_NAMES.get(f, str(f)) for f in sorted(set(families)))


class ResolveError(Exception):
    """``host`` cannot be sent to; ``status`` is what the leg fails with (404 or 503)."""

    def __init__(self, host: str, status: int, why: str) -> None:
        super().__init__(f"cannot send to {host!r}: {why}")
        self.host = host
        self.status = status


@dataclass(frozen=True, slots=True)
class _Answer:
    expires: float
    addresses: tuple[tuple[int, str], ...] = ()
    error: ResolveError | None = None


def is_ip_literal(host: str) -> bool:
    """``host`` is an IPv4 or IPv6 address (no brackets), so sending to it resolves nothing."""
    known = _LITERALS.get(host)
    if known is None:
        known = _literal(host)
        if len(_LITERALS) < 4096:  # bounded like the parser's caches
            _LITERALS[host] = known
    return known


# Checked for every datagram we send: peers repeat a few addresses, so verdicts are kept.
_LITERALS: dict[str, bool] = {}


def _literal(host: str) -> bool:
    address, zone, _ = host.partition("%")  # a link-local source comes as fe80::1%eth0 (RFC 4007 §11)
    for family in (socket.AF_INET6,) if zone else (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, address)
        except (OSError, ValueError):
            continue
        return True
    return False


class Resolver:
    def __init__(self, loop: asyncio.AbstractEventLoop, families: Callable[[], Collection[int]], *,
                 lookup: Lookup | None = None, clock: Callable[[], float] | None = None,
                 ttl: float = TTL, negative_ttl: float = NEGATIVE_TTL, timeout: float = TIMEOUT,
                 max_entries: int = MAX_ENTRIES) -> None:
        """``families``: the address families we have sockets for (asked at each lookup)."""
        self.loop = loop
        self.families = families
        self._lookup = lookup or self._getaddrinfo
        self._clock = clock or loop.time
        self.ttl, self.negative_ttl, self.timeout = ttl, negative_ttl, timeout
        self.max_entries = max_entries
        self._answers: dict[str, _Answer] = {}
        self._pending: dict[str, asyncio.Task[_Answer]] = {}
        self.lookups = 0  # names looked up (not served from the cache), for tests and metrics

    def cached(self, addr: Addr) -> Addr | None:
        """``addr`` with its host as an IP literal, if that needs no lookup now: it is one,
        or a fresh answer is cached. None: ``resolve`` it (which may also fail)."""
        host = host_address(addr[0])
        if is_ip_literal(host):
            return (host, addr[1])
        answer = self._answers.get(host)
        if answer is None or answer.error is not None or answer.expires <= self._clock():
            return None
        try:
            return (self._pick(host, answer.addresses), addr[1])
        except ResolveError:
            return None

    async def resolve(self, addr: Addr) -> Addr:
        """``addr`` with its host resolved to an address of a family we serve; raises
        ResolveError. An IP literal returns at once, without yielding to the loop."""
        host = host_address(addr[0])
        if is_ip_literal(host):
            return (self._pick(host, ((socket.AF_INET6 if ":" in host else socket.AF_INET, host),)), addr[1])
        answer = await self._answer(host)
        return (self._pick(host, answer.addresses), addr[1])

    async def _answer(self, host: str) -> _Answer:
        answer = self._answers.get(host)
        if answer is None or answer.expires <= self._clock():
            pending = self._pending.get(host)
            if pending is None:
                pending = self._pending[host] = self.loop.create_task(self._look_up(host))
            answer = await asyncio.shield(pending)
        if answer.error is not None:
            raise answer.error
        return answer

    async def addresses(self, host: str) -> list[str]:
        """Every address of ``host`` in a family we serve, in the order the lookup gave them
        (RFC 3263 §4.3 fails over across them); an IP literal is itself. ResolveError when
        there is none."""
        host = host_address(host)
        if is_ip_literal(host):
            return [self._pick(host, ((socket.AF_INET6 if ":" in host else socket.AF_INET, host),))]
        answer = await self._answer(host)
        self._pick(host, answer.addresses)  # raises when no family matches
        served = self.families()
        return [address for family, address in answer.addresses if family in served]

    def close(self) -> None:
        """Stop waiting for lookups in flight (their threads finish on their own)."""
        for task in self._pending.values():
            task.cancel()
        self._pending.clear()

    # ---- internals
    async def _look_up(self, host: str) -> _Answer:
        self.lookups += 1
        try:
            found, ttl = await asyncio.wait_for(self._lookup(host), self.timeout)
            answer = _Answer(self._clock() + (self.ttl if ttl is None else ttl), tuple(found)) if found else _Answer(
                self._clock() + self.negative_ttl, error=ResolveError(host, 404, "no address"))
        except TimeoutError:  # (an OSError: caught first)
            answer = _Answer(self._clock() + self.negative_ttl,
                             error=ResolveError(host, 503, f"no answer within {self.timeout:g} s"))
        except OSError as exc:
            status = 404 if isinstance(exc, socket.gaierror) and exc.errno in _NOT_FOUND else 503
            answer = _Answer(self._clock() + self.negative_ttl, error=ResolveError(host, status, str(exc)))
        except ValueError as exc:  # e.g. UnicodeError: "a..b" is no host name (IDNA)
            answer = _Answer(self._clock() + self.negative_ttl,
                             error=ResolveError(host, 404, f"not a host name ({exc})"))
        finally:
            self._pending.pop(host, None)
        if answer.error is not None:
            logger.warning("%s", answer.error)
        self._remember(host, answer)
        return answer

    def _remember(self, host: str, answer: _Answer) -> None:
        remember(self._answers, host, answer, self.max_entries, self._clock())

    def _pick(self, host: str, addresses: Collection[tuple[int, str]]) -> str:
        served = self.families()
        for family, address in addresses:
            if family in served:
                return address
        names = family_names([f for f, _ in addresses], " or ")
        raise ResolveError(host, 503, f"it is {names} only and the switch listens on {family_names(served)} "
                                      "(--listen [::]:PORT serves both)")

    async def _getaddrinfo(self, host: str) -> tuple[list[tuple[int, str]], float | None]:
        infos = await self.loop.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
        seen: list[tuple[int, str]] = []
        for family, _, _, _, sockaddr in infos:
            entry = (int(family), str(sockaddr[0]))
            if entry not in seen:
                seen.append(entry)
        return seen, None  # getaddrinfo gives no TTL


__all__ = ["FAMILY_NAMES", "Lookup", "ResolveError", "Resolver", "family_names", "is_ip_literal"]
