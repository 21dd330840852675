"""Throttling abuse: a per-source flood guard and a password-guessing brake.

``FloodGuard`` is modelled on Kamailio's pike module: requests are counted per source
address over a sampling window (pike's ``sampling_time_unit``); a source that sends more
than ``density`` in one window (``reqs_density_per_unit``) is blocked, and its requests
are dropped for ``block_seconds``. Unlike pike we block for an explicit time (pike only
reports "hot" while the density is exceeded, and its ``remove_latency`` is how long an
idle address stays in memory), and a source that keeps flooding while blocked has its
block renewed, as pike keeps a flooding address hot. Trusted peers (trunks that carry
real traffic, this host) are exempt, as Kamailio configs skip ``pike_check_req()`` for
``allow_trusted()`` sources.

It runs once per datagram, so it is cheap by construction: one set lookup (exact exempt
addresses), one dict lookup and a few attribute reads on the common path. Measured with
``bench/security_cost.py`` on the 2-core box (medians, under load): 0.5-0.7 µs to count
a request, ~0.55 µs to drop one from a blocked source (5000 INVITEs/s from one address
cost ~0.3% of a core here, before any parsing), 0.1-0.2 µs for an exempt trunk, ~1.4 µs
for a never-seen source or an IPv6 one. Memory is bounded: sources live in an LRU ordered by
the start of their current window, an idle one expires once it has been quiet for a
window plus the block time (so a blocked one never expires early), and past
``max_sources`` the least recently active goes first (a spoofed-source flood can then
shorten blocks, never grow memory). IPv6 sources are counted per /64, the block an
attacker controls (RFC 4291 §2.5.1: the interface identifier is the host's to pick).

``AuthFailures`` counts wrong digests (REGISTER and INVITE alike) by source address and
by user name; ``limit`` of them within ``block_seconds`` block further attempts with 403
for ``block_seconds`` (RFC 3261 §26.3.2.4: rate-limit what lets an attacker guess). Known
and unknown user names are counted alike, so the block itself tells nothing about which
accounts exist. A (source, user) pair that authenticated before keeps working through
both blocks, so one bad phone behind an office NAT, or a stranger guessing alice's
password from elsewhere, does not lock out the phones that know their passwords; a
failure from that pair makes it ordinary again.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections import OrderedDict
from collections.abc import Iterable

from .log import SecurityLog

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Expire at most this many idle sources per new one: the cost of a call stays bounded
# while the table still shrinks faster than it can grow.
_EXPIRE_PER_INSERT = 8


_V4_MAPPED = bytes(10) + b"\xff\xff"


def source_key(ip: str) -> str:
    """The address a source is counted under: IPv4 as is, IPv4-mapped IPv6 as IPv4,
    other IPv6 by its /64 (``2001:db8:1:2::/64``)."""
    if ":" not in ip:
        return ip
    try:  # inet_pton/ntop: ~1 µs, where the ipaddress module takes ~25
        packed = socket.inet_pton(socket.AF_INET6, ip.partition("%")[0])
    except OSError:
        return ip
    if packed[:12] == _V4_MAPPED:
        return socket.inet_ntop(socket.AF_INET, packed[12:])
    return socket.inet_ntop(socket.AF_INET6, packed[:8] + bytes(8)) + "/64"


def parse_networks(entries: Iterable[str | Network]) -> tuple[Network, ...]:
    """``"192.0.2.7"``, ``"192.0.2.0/24"``, ``"2001:db8::/32"`` -> networks; ValueError
    naming the bad entry."""
    nets: list[Network] = []
    for entry in entries:
        if isinstance(entry, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            nets.append(entry)
            continue
        try:
            nets.append(ipaddress.ip_network(str(entry).strip(), strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or CIDR network (e.g. 192.0.2.7 or "
                             "192.0.2.0/24)") from None
    return tuple(nets)


def in_networks(ip: str, networks: tuple[Network, ...]) -> bool:
    try:
        addr = ipaddress.ip_address(ip.partition("%")[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr in net for net in networks)


class _Source:
    __slots__ = ("start", "count", "blocked_until", "dropped", "exempt")

    def __init__(self, now: float, exempt: bool) -> None:
        self.start = now  # when the current sampling window began
        self.count = 0  # requests in it
        self.blocked_until = 0.0
        self.dropped = 0  # requests dropped during the current block
        self.exempt = exempt


class FloodGuard:
    """``allow(ip, now)`` per request: False means drop it (the source is flooding)."""

    def __init__(self, window: float = 2.0, density: int = 30, block_seconds: float = 60.0,
                 exempt: Iterable[str | Network] = (), max_sources: int = 65536,
                 log: SecurityLog | None = None) -> None:
        if window <= 0 or density < 0 or block_seconds < 0 or max_sources < 1:
            raise ValueError("flood guard: window and max_sources must be positive, density and block time >= 0")
        self.window = window
        self.density = density  # 0: the guard is off
        self.block_seconds = block_seconds
        self.max_sources = max_sources
        self.log = log or SecurityLog()
        networks = parse_networks(exempt)
        # Single addresses are checked with one set lookup before anything else; wider
        # networks once per source, the answer kept in its entry.
        self._exempt_ips = frozenset(
            str(net.network_address) for net in networks if net.num_addresses == 1)
        self._exempt_nets = tuple(net for net in networks if net.num_addresses > 1)
        # An idle source is forgotten after this: long enough that a blocked one never is.
        self._idle = window + block_seconds
        self._sources: OrderedDict[str, _Source] = OrderedDict()
        self.blocks = 0  # blocks started, for status pages

    def __len__(self) -> int:
        return len(self._sources)

    def allow(self, ip: str, now: float) -> bool:
        """Count one request from ``ip`` at ``now``; False while the source is blocked."""
        if ip in self._exempt_ips or not self.density:
            return True
        key = ip if ":" not in ip else source_key(ip)
        entry = self._sources.get(key)
        if entry is None:
            entry = self._new_source(key, ip, now)
        if entry.exempt:
            return True
        if now - entry.start >= self.window:  # a new sampling window
            entry.start = now
            entry.count = 0
            self._sources.move_to_end(key)
        entry.count += 1
        if entry.blocked_until:
            if now < entry.blocked_until:
                entry.dropped += 1
                if entry.count > self.density:  # still flooding: renew the block (pike: stays hot)
                    entry.blocked_until = now + self.block_seconds
                return False
            self.log.event("unblocked", key, now, level=logging.INFO, reason="flood", dropped=entry.dropped)
            entry.blocked_until = 0.0
            entry.dropped = 0
        if entry.count > self.density:
            entry.blocked_until = now + self.block_seconds
            entry.dropped = 1
            self.blocks += 1
            self.log.event("blocked", key, now, reason="flood", requests=entry.count, window=f"{self.window:g}s",
                           block=f"{self.block_seconds:g}s")
            return False
        return True

    def blocked(self, ip: str, now: float) -> bool:
        """Whether ``ip`` is blocked now (no request counted)."""
        entry = self._sources.get(ip if ":" not in ip else source_key(ip))
        return entry is not None and now < entry.blocked_until

    def _new_source(self, key: str, ip: str, now: float) -> _Source:
        sources = self._sources
        for _ in range(_EXPIRE_PER_INSERT):
            if not sources:
                break
            oldest = next(iter(sources.values()))
            if now - oldest.start < self._idle:
                break
            sources.popitem(last=False)
        if len(sources) >= self.max_sources:
            sources.popitem(last=False)  # full of active sources: the least recently active goes
        # (key, not ip: an IPv4-mapped form of an exempt IPv4 address is exempt too)
        exempt = key in self._exempt_ips or (bool(self._exempt_nets) and in_networks(ip, self._exempt_nets))
        entry = sources[key] = _Source(now, exempt)
        return entry


class _Failures:
    __slots__ = ("start", "count", "blocked_until")

    def __init__(self, now: float) -> None:
        self.start = now
        self.count = 0
        self.blocked_until = 0.0


class AuthFailures:
    """Wrong passwords by source address and by user name, with block windows."""

    def __init__(self, limit: int = 5, block_seconds: float = 600.0, max_entries: int = 65536,
                 log: SecurityLog | None = None) -> None:
        if limit < 0 or block_seconds < 0 or max_entries < 1:
            raise ValueError("auth failures: limit and block time must be >= 0, max_entries positive")
        self.limit = limit  # 0: never block
        self.block_seconds = block_seconds
        self.max_entries = max_entries
        self.log = log or SecurityLog()
        self._by_source: OrderedDict[str, _Failures] = OrderedDict()
        self._by_user: OrderedDict[str, _Failures] = OrderedDict()
        self._good: OrderedDict[tuple[str, str], None] = OrderedDict()  # (source, user) that authenticated

    def blocked(self, source: str, user: str, now: float) -> bool:
        """Whether an attempt by ``user`` from ``source`` is refused without checking it."""
        if not self.limit:
            return False
        key = source_key(source)
        if (key, user) in self._good:
            return False
        for table, name in ((self._by_source, key), (self._by_user, user)):
            entry = table.get(name)
            if entry is not None and now < entry.blocked_until:
                return True
        return False

    def failed(self, source: str, user: str, method: str, now: float) -> None:
        """A wrong digest by ``user`` from ``source``: log it, count it, maybe block."""
        key = source_key(source)
        self.log.event("auth-failed", key, now, user=user, method=method)
        self._good.pop((key, user), None)
        if not self.limit:
            return
        for table, name, what in ((self._by_source, key, "source"), (self._by_user, user, "user")):
            entry = table.get(name)
            if entry is None:
                entry = table[name] = _Failures(now)
                if len(table) > self.max_entries:
                    table.popitem(last=False)  # the one whose count started longest ago
            elif now - entry.start >= self.block_seconds:
                entry.start = now  # a new counting window (a block under way stays)
                entry.count = 0
                table.move_to_end(name)
            entry.count += 1
            if entry.count >= self.limit and now >= entry.blocked_until:
                entry.blocked_until = now + self.block_seconds
                if what == "source":
                    self.log.event("blocked", key, now, reason="auth-failures", failures=entry.count,
                                   method=method, block=f"{self.block_seconds:g}s")
                else:
                    self.log.event("blocked", key, now, reason="auth-failures-user", user=user,
                                   failures=entry.count, method=method, block=f"{self.block_seconds:g}s")

    def succeeded(self, source: str, user: str) -> None:
        """``user`` proved its password from ``source``: that pair passes blocks from now on."""
        pair = (source_key(source), user)
        self._good[pair] = None
        self._good.move_to_end(pair)
        if len(self._good) > self.max_entries:
            self._good.popitem(last=False)
