"""Who may call, and who may dial out (issue 9, points 1 and 2).

Any host that reaches the SIP port could otherwise run the apps, and with a gateway
configured have the switch place calls on the operator's bill: toll fraud, the first
thing SIP scanners try (RFC 3261 §26.1 lists the threats; §26.2.1: a UA should not serve
requests from parties it cannot identify). So an out-of-dialog INVITE is served only
when it comes from

* a **trunk** (``[[trunks]]``): matched by its source address against the trunk's
  addresses and CIDR networks (the most specific network wins), optionally also
  challenged for the trunk's digest credentials; each trunk may have a concurrent-call
  limit and a calls/s limit of its own;
* a **user** of ``[users]``, authenticated per INVITE with a digest challenge (``407``
  and ``Proxy-Authenticate``, RFC 3261 §22.3): a phone's registration proves nothing
  about an INVITE, which any host can send with her name in From;
* **this host** (``127.0.0.1``, ``::1``) while ``trust_loopback`` is on, the embedded
  default, so ``./run.sh`` plus a local SIPp call works with no config. Only these two
  addresses: the rest of 127.0.0.0/8 is treated as any stranger (tests play strangers
  and trunks from 127.0.0.2 and up).

Anything else gets ``403`` (or, when accounts exist, a challenge it cannot answer)
before any task starts, with a ``SECURITY refused`` line (``switch/security/log.py``).
Every ``403`` reads the same, ``Forbidden``, whether the user is unknown, the password
wrong or the source blocked, so the answers do not enumerate accounts.

Dial-out: ``StartBridgedCall`` may always reach a registered user; a gateway or a
foreign URI (where calls cost money, or relay an attacker's traffic) only for a caller
with the permission: users and trunks with ``dial_out = true`` (off by default), and
this host while trusted. The engine asks ``check_dial`` before placing the call.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..sip.message import SipRequest
from ..sip.uri import SipUri
from .digest import ALGORITHMS, DigestAuth, Outcome
from .log import SecurityLog
from .ratelimit import AuthFailures, FloodGuard, Network, parse_networks

if TYPE_CHECKING:
    from ..config import Config

logger = logging.getLogger(__name__)

Addr = tuple[str, int]

LOOPBACK = ("127.0.0.1", "::1")  # what trust_loopback trusts: this host's own addresses
_LOOPBACK_FORMS = frozenset((*LOOPBACK, "::ffff:127.0.0.1"))
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_LIMIT_REPORT_INTERVAL = 5.0  # a trunk over its limit: one log line per 5 s, not one per INVITE
_MATCH_CACHE = 4096  # source addresses whose trunk (or none) is remembered


class CallerKind(enum.StrEnum):
    TRUNK = "trunk"
    USER = "user"
    LOCAL = "local"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who an admitted INVITE is from; the app sees ``str(caller)``: ``trunk:carrier1``,
    ``user:alice`` or ``local``."""

    kind: CallerKind
    name: str  # the trunk's or the user's name; "" for local
    may_dial_out: bool  # StartBridgedCall may reach gateways and foreign URIs
    source: str = ""  # the IP address the INVITE came from

    def __str__(self) -> str:
        return "local" if self.kind is CallerKind.LOCAL else f"{self.kind.value}:{self.name}"

    def as_dict(self) -> dict[str, str | bool]:
        """For the JS side (JSON-safe)."""
        return {"caller": str(self), "kind": self.kind.value, "name": self.name, "dial_out": self.may_dial_out,
                "source": self.source}


@dataclass(frozen=True, slots=True)
class Refusal:
    """An INVITE (or a dial-out) turned away: the response to send."""

    status: int
    reason: str  # the SIP reason phrase
    why: str  # what the log says (``not-a-trunk-or-user``, ``challenge``, ``trunk-call-limit``...)
    headers: dict[str, str | list[str]] = field(default_factory=dict)  # e.g. the 407's Proxy-Authenticate


FORBIDDEN = "Forbidden"  # one reason phrase for every 403: no enumeration by reason either


class DialTarget(enum.StrEnum):
    """Where a StartBridgedCall goes (the engine's route() knows)."""

    REGISTERED_USER = "registered-user"  # a phone registered here: always allowed
    GATEWAY = "gateway"  # a configured gateway: costs money, needs dial-out
    URI = "uri"  # any other SIP URI, called directly: needs dial-out too


# ---------------------------------------------------------------------------- config objects
def _check_keys(what: str, table: Mapping[str, object], known: Iterable[str]) -> None:
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ValueError(f"{what}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(known)}")


def _int(what: str, value: object, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} must be a whole number >= {minimum}, not {value!r}")
    return value


def _bool(what: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{what} must be true or false, not {value!r}")
    return value


@dataclass(frozen=True)
class UserAccount:
    """One ``[users]`` entry: ``alice = "secret"`` or
    ``alice = { password = "secret", dial_out = true, max_calls = 2 }``."""

    name: str
    password: str
    dial_out: bool = False  # may StartBridgedCall reach gateways (registered users: always)
    max_calls: int = 0  # concurrent calls from this account; 0: no limit of its own

    KEYS = ("password", "dial_out", "max_calls")

    @classmethod
    def parse(cls, name: str, value: object) -> UserAccount:
        if not isinstance(name, str) or not name:
            raise ValueError(f"users: {name!r} is not a user name")
        if isinstance(value, str):
            value = {"password": value}
        if not isinstance(value, Mapping):
            raise ValueError(f'users: {name} must be "password" or {{ password = "...", dial_out = true }}, '
                             f"not {value!r}")
        _check_keys(f"users.{name}", value, cls.KEYS)
        password = value.get("password")
        if not isinstance(password, str) or not password:
            raise ValueError(f"users.{name}: needs a non-empty password")
        return cls(name, password, _bool(f"users.{name}.dial_out", value.get("dial_out", False)),
                   _int(f"users.{name}.max_calls", value.get("max_calls", 0)))


def parse_users(raw: object) -> dict[str, UserAccount]:
    """The ``[users]`` table -> accounts; ValueError saying which entry is wrong."""
    if not isinstance(raw, Mapping):
        raise ValueError('users must be a [users] table of name = "password" or name = { password = "..." }')
    return {name: UserAccount.parse(name, value) for name, value in raw.items()}


@dataclass(frozen=True)
class Trunk:
    """One ``[[trunks]]`` entry: a peer (carrier, PBX, load balancer) known by address."""

    name: str
    networks: tuple[Network, ...]
    username: str = ""  # with password: INVITEs must also answer a 407 for these
    password: str = ""
    max_calls: int = 0  # concurrent calls; 0: no limit of its own (max_calls still applies)
    max_cps: float = 0.0  # new calls per second (a bucket of one second's worth); 0: no limit
    dial_out: bool = False  # may its calls' StartBridgedCall reach gateways
    flood_exempt: bool = True  # not counted by the flood guard (its own max_cps throttles it)

    KEYS = ("name", "addresses", "username", "password", "max_calls", "max_cps", "dial_out", "flood_exempt")

    @classmethod
    def parse(cls, table: object) -> Trunk:
        if not isinstance(table, Mapping):
            raise ValueError(f"trunks: each [[trunks]] entry is a table with name and addresses, not {table!r}")
        name = table.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"trunks: name must be letters, digits, '.', '_' or '-' (up to 64), not {name!r}")
        what = f"trunk {name!r}"
        _check_keys(what, table, cls.KEYS)
        addresses = table.get("addresses")
        if isinstance(addresses, str):
            addresses = [addresses]
        if not isinstance(addresses, list) or not addresses:
            raise ValueError(f'{what}: addresses must list the source IPs or CIDRs, e.g. ["192.0.2.0/28"]')
        try:
            networks = parse_networks(str(a) for a in addresses)
        except ValueError as exc:
            raise ValueError(f"{what}: addresses: {exc}") from None
        username, password = table.get("username", ""), table.get("password", "")
        if not isinstance(username, str) or not isinstance(password, str) or bool(username) != bool(password):
            raise ValueError(f"{what}: username and password go together (both, or neither)")
        if not username and any(net.prefixlen == 0 for net in networks):
            raise ValueError(f"{what}: an address range of the whole Internet (/0) with no username and "
                             "password would let anyone call as the trunk: narrow it or add credentials")
        max_cps = table.get("max_cps", 0)
        if isinstance(max_cps, bool) or not isinstance(max_cps, (int, float)) or max_cps < 0:
            raise ValueError(f"{what}: max_cps must be a number >= 0 (0: no limit), not {max_cps!r}")
        return cls(name, networks, username, password, _int(f"{what}: max_calls", table.get("max_calls", 0)),
                   float(max_cps), _bool(f"{what}: dial_out", table.get("dial_out", False)),
                   _bool(f"{what}: flood_exempt", table.get("flood_exempt", True)))


def parse_trunks(raw: object) -> list[Trunk]:
    """The ``[[trunks]]`` list -> trunks, checked: unique names, no network twice."""
    if not isinstance(raw, list):
        raise ValueError("trunks must be a list of [[trunks]] tables")
    trunks = [Trunk.parse(t) for t in raw]
    names: set[str] = set()
    owner: dict[Network, str] = {}
    for trunk in trunks:
        if trunk.name in names:
            raise ValueError(f"trunks: two trunks are named {trunk.name!r}")
        names.add(trunk.name)
        for net in trunk.networks:
            if net in owner:
                raise ValueError(f"trunks: {net} is listed by both {owner[net]!r} and {trunk.name!r}")
            owner[net] = trunk.name
    return trunks


# ---------------------------------------------------------------------------- accounting
class _Usage:
    """Live calls and the calls/s bucket of one trunk or user."""

    __slots__ = ("what", "max_calls", "max_cps", "live", "tokens", "stamp", "refused", "reported")

    def __init__(self, what: str, max_calls: int, max_cps: float) -> None:
        self.what = what
        self.max_calls = max_calls
        self.max_cps = max_cps
        self.live = 0
        self.tokens = max(1.0, max_cps)  # a full bucket: one second's worth of calls
        self.stamp = 0.0
        self.refused = 0
        self.reported = -1e9

    def refuse_reason(self, now: float) -> str | None:
        """None, taking a calls/s token; else which limit is reached."""
        if self.max_calls and self.live >= self.max_calls:
            return "call-limit"
        if self.max_cps:
            capacity = max(1.0, self.max_cps)
            self.tokens = min(capacity, self.tokens + (now - self.stamp) * self.max_cps)
            self.stamp = now
            if self.tokens < 1.0:
                return "cps-limit"
            self.tokens -= 1.0
        return None


class CallToken:
    """A call counted against its trunk's or user's ``max_calls``; ``release()`` when the
    call ends (idempotent, so every teardown path may call it)."""

    __slots__ = ("_usage",)

    def __init__(self, usage: _Usage | None) -> None:
        self._usage = usage
        if usage is not None:
            usage.live += 1

    def release(self) -> None:
        if self._usage is not None:
            self._usage.live -= 1
            self._usage = None


# ---------------------------------------------------------------------------- the policy
class AccessPolicy:
    """Decides each out-of-dialog INVITE (``check_invite``) and each dial-out
    (``check_dial``); counts calls per trunk and user (``call_started``)."""

    def __init__(self, trunks: Sequence[Trunk] = (), users: Mapping[str, UserAccount] | None = None, *,
                 realm: str = "softswitch", algorithms: tuple[str, ...] = ALGORITHMS, trust_loopback: bool = True,
                 failures: AuthFailures | None = None, flood: FloodGuard | None = None,
                 log: SecurityLog | None = None) -> None:
        self.log = log or SecurityLog()
        self.trunks = tuple(trunks)
        self.users = dict(users or {})
        self.trust_loopback = trust_loopback
        self.digest = DigestAuth(realm, algorithms)
        self.failures = failures if failures is not None else AuthFailures(log=self.log)
        self.flood = flood if flood is not None else FloodGuard(exempt=self.flood_exempt(), log=self.log)
        self._passwords = {name: account.password for name, account in self.users.items()}
        self._local = _LOOPBACK_FORMS if trust_loopback else frozenset()
        # Single addresses in one dict (the common case, one lookup); networks most
        # specific first, their answers cached per source address.
        self._exact: dict[str, Trunk] = {}
        self._networks: list[tuple[Network, Trunk]] = []
        for trunk in self.trunks:
            for net in trunk.networks:
                if net.num_addresses == 1:
                    self._exact[str(net.network_address)] = trunk
                else:
                    self._networks.append((net, trunk))
        self._networks.sort(key=lambda item: -item[0].prefixlen)
        self._matched: dict[str, Trunk | None] = {}
        self._usage: dict[str, _Usage] = {}
        for trunk in self.trunks:
            self._usage[f"trunk:{trunk.name}"] = _Usage(f"trunk {trunk.name}", trunk.max_calls, trunk.max_cps)
        for account in self.users.values():
            self._usage[f"user:{account.name}"] = _Usage(f"user {account.name}", account.max_calls, 0.0)

    @classmethod
    def from_config(cls, cfg: Config) -> AccessPolicy:
        """The policy, its AuthFailures (give it to the Registrar too) and its FloodGuard
        (exempt: this host when trusted, trunks with flood_exempt, and the gateways given
        as IP addresses, whose responses and BYEs arrive at the gateway's call rate)."""
        log = SecurityLog()
        trunks, users = cfg.trunk_list, cfg.accounts
        exempt: list[str | Network] = list(_flood_exempt(trunks, cfg.trust_loopback))
        for gateway in [cfg.gateway, *(gw for _prefix, gw in cfg.gateway_rules)]:
            if gateway:
                host = SipUri.parse(gateway).host.strip("[]")
                try:
                    exempt.append(ipaddress.ip_network(host))
                except ValueError:
                    pass  # a host name: resolved per call, not known here (make it a trunk by address)
        return cls(trunks, users, realm=cfg.realm, algorithms=tuple(cfg.digest_algorithms),
                   trust_loopback=cfg.trust_loopback,
                   failures=AuthFailures(cfg.auth_fail_limit, cfg.auth_block_seconds, log=log),
                   flood=FloodGuard(cfg.flood_window, cfg.flood_density, cfg.flood_block_seconds, exempt, log=log),
                   log=log)

    def flood_exempt(self) -> list[str | Network]:
        """What the flood guard should not count: this host when trusted, flood-exempt trunks."""
        return list(_flood_exempt(self.trunks, self.trust_loopback))

    # ------------------------------------------------------------------ inbound calls
    def check_invite(self, request: SipRequest, source: Addr, now: float) -> Caller | Refusal:
        """Who this out-of-dialog INVITE from ``source`` is from, or how to refuse it.
        Call it before any leg, task or media exists; on a Caller, call ``call_started``
        once the call is really taken on."""
        ip = source[0]
        trunk = self._exact.get(ip)
        if trunk is None and self._networks:
            trunk = self._match(ip)
        if trunk is not None:
            return self._trunk_call(trunk, request, ip, now)
        if ip in self._local:
            return Caller(CallerKind.LOCAL, "", True, ip)
        if self.users:
            return self._user_call(request, ip, now)
        self.log.event("refused", ip, now, fold=True, reason="not-a-trunk-or-user", method="INVITE")
        return Refusal(403, FORBIDDEN, "not-a-trunk-or-user")

    def call_started(self, caller: Caller) -> CallToken:
        """Count a call taken on for ``caller`` (its trunk's or user's ``max_calls``);
        release the token when the call ends."""
        return CallToken(self._usage.get(str(caller)) if caller.kind is not CallerKind.LOCAL else None)

    def live_calls(self) -> dict[str, int]:
        """Live calls per trunk and user (``trunk:carrier1`` -> 3), for status pages."""
        return {key: usage.live for key, usage in self._usage.items()}

    def _match(self, ip: str) -> Trunk | None:
        try:
            return self._matched[ip]
        except KeyError:
            pass
        found: Trunk | None = None
        try:
            addr = ipaddress.ip_address(ip.partition("%")[0])
        except ValueError:
            addr = None
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        if addr is not None:
            found = self._exact.get(str(addr))
            if found is None:
                found = next((trunk for net, trunk in self._networks if addr in net), None)
        if len(self._matched) >= _MATCH_CACHE:
            self._matched.clear()  # bounded; refilled at ~1 µs per source
        self._matched[ip] = found
        return found

    def _trunk_call(self, trunk: Trunk, request: SipRequest, ip: str, now: float) -> Caller | Refusal:
        if trunk.username:
            proven = self._authenticate(request, ip, now, {trunk.username: trunk.password})
            if isinstance(proven, Refusal):
                return proven
        refusal = self._over_limit(f"trunk:{trunk.name}", now)
        return refusal or Caller(CallerKind.TRUNK, trunk.name, trunk.dial_out, ip)

    def _user_call(self, request: SipRequest, ip: str, now: float) -> Caller | Refusal:
        proven = self._authenticate(request, ip, now, self._passwords)
        if isinstance(proven, Refusal):
            return proven
        refusal = self._over_limit(f"user:{proven}", now)
        return refusal or Caller(CallerKind.USER, proven, self.users[proven].dial_out, ip)

    def _authenticate(self, request: SipRequest, ip: str, now: float,
                      passwords: Mapping[str, str]) -> str | Refusal:
        """The proven username, or the answer: a 407 challenge (RFC 3261 §22.3), 403, 400."""
        auth = self.digest.credentials(request, "proxy-authorization")
        if auth is None:
            return self._challenge(ip, now)
        user = auth.get("username", "")
        if self.failures.blocked(ip, user, now):
            self.log.event("refused", ip, now, fold=True, reason="auth-blocked", user=user, method="INVITE")
            return Refusal(403, FORBIDDEN, "auth-blocked")
        verdict = self.digest.verify(request, auth, passwords, now, ip)
        if verdict.outcome is Outcome.ACCEPTED:
            self.failures.succeeded(ip, user)
            return user
        if verdict.outcome is Outcome.WRONG:
            self.failures.failed(ip, user, "INVITE", now)
            return Refusal(403, FORBIDDEN, "auth-failed")
        if verdict.outcome is Outcome.URI_MISMATCH:
            return Refusal(400, "Authorization uri does not match the Request-URI", "uri-mismatch")
        if verdict.outcome is Outcome.REPLAYED:
            self.log.event("replayed", ip, now, fold=True, user=user, method="INVITE", nc=auth.get("nc") or "none")
        return self._challenge(ip, now, stale=verdict.stale)

    def _challenge(self, ip: str, now: float, stale: bool = False) -> Refusal:
        return Refusal(407, "Proxy Authentication Required", "challenge",
                       self.digest.challenge_headers(now, ip, stale=stale, proxy=True))

    def _over_limit(self, key: str, now: float) -> Refusal | None:
        usage = self._usage[key]
        limit = usage.refuse_reason(now)
        if limit is None:
            return None
        # Not a SECURITY line: a busy carrier is not an attacker, and fail2ban must not ban it.
        usage.refused += 1
        if now - usage.reported >= _LIMIT_REPORT_INTERVAL:
            bound = f"max_calls={usage.max_calls}" if limit == "call-limit" else f"max_cps={usage.max_cps:g}"
            logger.warning("%s at its %s (%s): new calls get 503 (%d refused so far)", usage.what, limit, bound,
                           usage.refused)
            usage.reported = now
        return Refusal(503, f"Service Unavailable ({limit})", f"{key.partition(':')[0]}-{limit}",
                       {"retry-after": "1"})

    # ------------------------------------------------------------------ outbound calls
    def check_dial(self, caller: Caller | None, target: DialTarget, dest: str, now: float) -> Refusal | None:
        """None if ``caller`` (None: a task that no inbound call started) may place a call
        to ``dest`` of kind ``target``; else a 403 for the StartBridgedCall's event."""
        if target is DialTarget.REGISTERED_USER or (caller is not None and caller.may_dial_out):
            return None
        self.log.event("dial-refused", caller.source if caller is not None else "-", now, fold=True,
                       reason="no-dial-out", caller=str(caller) if caller is not None else "none",
                       target=target.value, dest=dest)
        return Refusal(403, "Forbidden (dial-out not allowed for this caller)", "no-dial-out")


def _flood_exempt(trunks: Iterable[Trunk], trust_loopback: bool) -> Iterable[str | Network]:
    if trust_loopback:
        yield from LOOPBACK
    for trunk in trunks:
        if trunk.flood_exempt:
            yield from trunk.networks
