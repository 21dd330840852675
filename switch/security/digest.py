"""HTTP digest authentication for SIP (RFC 3261 §22, RFC 2617, RFC 7616, RFC 8760).

One implementation serves both places we authenticate:

* REGISTER, as a registrar (a UAS): ``401`` with ``WWW-Authenticate``, answered with
  ``Authorization`` (§22.2);
* out-of-dialog INVITE, as the proxy-like front of the B2BUA: ``407`` with
  ``Proxy-Authenticate``, answered with ``Proxy-Authorization`` (§22.3). A phone's
  registration proves nothing about the INVITE that follows (any host can send one with
  her name in From), so each INVITE carries its own credentials.

Nonces are ``stamp.salt.MAC(stamp.salt).MAC(stamp.salt, client address)``, valid for
``nonce_ttl``, so no state exists for a client before it has proven who it is; a restart
(new secret) makes every old nonce unknown, and the client is simply challenged again.
The second MAC binds the nonce to the address it was sent to (RFC 7616 §5.5 suggests
it): used from another address it is ours but not valid there, answered like an expired
one (``stale=true``: a phone whose NAT binding moved retries at once). With UDP an
attacker can forge the source of a request but not receive the challenge sent there, so
forged-source guesses never count as auth failures and cannot get an innocent address
blocked, or banned by fail2ban. What is kept once a client has proven itself:

* replay protection (RFC 2617 §3.2.2, RFC 7616 §3.4): with ``qop`` each nonce's highest
  ``nc`` is remembered until the nonce expires, and a request must count up; without
  ``qop`` a nonce serves once. A captured ``Authorization`` replayed with another Contact
  gets a fresh challenge, never a binding. The table is bounded: when it is full the
  oldest record goes, and every nonce issued up to its stamp is treated as expired from
  then on (a forgotten nonce must not become replayable);
* ``stale=true`` only for a nonce of ours that expired (or was used up): the client
  retries with the same password at once; a forged nonce gets a plain challenge;
* SHA-256 beside MD5 (RFC 8760): one challenge per algorithm, in the configured order
  (SIPp 3.6 and many deployed phones read only the first challenge and know only MD5,
  so MD5 comes first by default; RFC 8760 §2.4 wants the preferred one first);
* a digest that is wrong over a fresh nonce of ours is ``WRONG`` (the callers answer
  ``403``, not another challenge: the password is wrong and asking again only invites
  guessing, and phones retry a 401 in a loop). An unknown user gets exactly the same
  verdict after the same hashing work, so neither status nor timing tells which
  accounts exist (RFC 3261 §26.3.2.4 on enumeration by responses).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
import random
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from ..sip.message import SipRequest
from ..sip.uri import split_commas

ALGORITHMS = ("MD5", "SHA-256")  # what we accept; the default order of the challenges
NONCE_TTL = 60.0  # short-lived: a client coming back later gets stale=true and retries
MAX_NONCES = 65536  # nonce-count records kept (each made by a client that proved itself)


def _hash(algorithm: str, text: str) -> str:
    if algorithm == "SHA-256":
        return hashlib.sha256(text.encode()).hexdigest()
    return hashlib.md5(text.encode()).hexdigest()  # noqa: S324 - RFC 2617 digest is MD5


def digest_response(username: str, realm: str, password: str, method: str, uri: str, nonce: str,
                    qop: str | None = None, nc: str = "", cnonce: str = "", algorithm: str = "MD5") -> str:
    """RFC 2617 §3.2.2.1 / RFC 8760 §3 request-digest (algorithm MD5 or SHA-256)."""
    ha1 = _hash(algorithm, f"{username}:{realm}:{password}")
    ha2 = _hash(algorithm, f"{method}:{uri}")
    if qop:
        return _hash(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _hash(algorithm, f"{ha1}:{nonce}:{ha2}")


def parse_digest(header: str) -> dict[str, str]:
    """``Digest username="alice", realm="x", ...`` -> {param: value}; {} if not Digest.

    auth-param = token "=" ( token / quoted-string ) (RFC 2617 §1.2, RFC 3261 §25.1).
    This runs on every authenticated request: split on commas first (4x faster than
    walking the characters), and only when a quoted value holds a comma or a
    quoted-pair walk them."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "digest":
        return {}
    params: dict[str, str] = {}
    for item in rest.split(","):
        key, eq, value = item.partition("=")
        value = value.strip()
        if value[:1] == '"':
            if len(value) < 2 or value[-1] != '"' or "\\" in value:
                return _parse_params_slowly(rest)
            value = value[1:-1]
        if eq:
            params[key.strip().lower()] = value
    return params


def _parse_params_slowly(rest: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in split_commas(rest):
        key, eq, value = item.partition("=")
        value = value.strip()
        if value[:1] == '"' and value[-1:] == '"' and len(value) >= 2:
            value = _QUOTED_PAIR.sub(r"\1", value[1:-1])
        if eq:
            params[key.strip().lower()] = value
    return params


_QUOTED_PAIR = re.compile(r"\\(.)")


def _same(a: str, b: str) -> bool:
    """Constant-time comparison, as bytes: compare_digest refuses non-ASCII str, and one
    side is whatever a client sent."""
    return hmac.compare_digest(a.encode(errors="replace"), b.encode(errors="replace"))


class Outcome(enum.Enum):
    """What a request's credentials are worth, and what the answer is."""

    ACCEPTED = "accepted"  # the password is right and the nonce fresh and unused: serve it
    MISSING = "missing"  # no credentials for our realm: challenge
    UNKNOWN_NONCE = "unknown-nonce"  # not a nonce of ours (forged, or before a restart): challenge
    BAD_ALGORITHM = "bad-algorithm"  # an algorithm we did not offer: challenge
    STALE = "stale"  # our nonce, expired: challenge with stale=true
    REPLAYED = "replayed"  # the nonce count did not go up: challenge with stale=true
    WRONG = "wrong"  # wrong user or password over a fresh nonce of ours: 403 (a guess)
    URI_MISMATCH = "uri-mismatch"  # the digest is for another Request-URI: 400 (RFC 2617 §3.2.2.5)


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    username: str = ""  # the credentials' username: proven only when ACCEPTED

    @property
    def challenge(self) -> bool:
        """Answer with a fresh challenge (401/407)."""
        return self.outcome in _CHALLENGE

    @property
    def stale(self) -> bool:
        """The challenge says stale=true: same password, new nonce (RFC 7616 §3.3)."""
        return self.outcome in (Outcome.STALE, Outcome.REPLAYED)


_CHALLENGE = frozenset((Outcome.MISSING, Outcome.UNKNOWN_NONCE, Outcome.BAD_ALGORITHM, Outcome.STALE,
                        Outcome.REPLAYED))


class DigestAuth:
    """Issues challenges and checks credentials for one realm; keeps the nonce counts."""

    def __init__(self, realm: str, algorithms: tuple[str, ...] = ALGORITHMS, nonce_ttl: float = NONCE_TTL,
                 max_nonces: int = MAX_NONCES, secret: bytes | None = None) -> None:
        self.realm = realm
        self.algorithms = tuple(a.upper() for a in algorithms)
        unknown = set(self.algorithms) - set(ALGORITHMS)
        if unknown or not self.algorithms:
            raise ValueError(f"digest algorithms must be among {', '.join(ALGORITHMS)}, not {sorted(unknown)}")
        self.nonce_ttl = nonce_ttl
        self.max_nonces = max_nonces
        self._secret = secret or os.urandom(16)
        # An unknown user's digest is computed with this instead of a password: the same
        # work as for a known one, and a value no client can know.
        self._no_password = self._secret.hex()
        # nonce -> [stamp it was issued at, highest nc accepted (-1: used once, no qop)];
        # in order of first use, close to the order of issue, so expiry pops from the front
        self._used: OrderedDict[str, list[int]] = OrderedDict()
        self._forgotten_up_to = -1  # nonces stamped at or before this are treated as expired

    # ------------------------------------------------------------------ challenges
    def challenges(self, now: float, client: str, stale: bool = False) -> list[str]:
        """The challenge header values for a request from address ``client``: one per
        algorithm (RFC 8760 §2.4), all with one fresh nonce (whichever the client picks,
        it counts that nonce)."""
        nonce = self._nonce(now, client)
        suffix = ", stale=true" if stale else ""
        return [f'Digest realm="{self.realm}", nonce="{nonce}", algorithm={algorithm}, qop="auth"{suffix}'
                for algorithm in self.algorithms]

    def challenge_headers(self, now: float, client: str, stale: bool = False,
                          proxy: bool = False) -> dict[str, str | list[str]]:
        """Headers for a 401 (``WWW-Authenticate``) or, with ``proxy``, a 407
        (``Proxy-Authenticate``, RFC 3261 §22.3)."""
        return {"proxy-authenticate" if proxy else "www-authenticate": self.challenges(now, client, stale)}

    # ------------------------------------------------------------------ credentials
    def credentials(self, request: SipRequest, header: str = "authorization") -> dict[str, str] | None:
        """The Digest credentials in ``header`` meant for our realm; None if there are none.
        A request may carry several (one per realm on its path, RFC 3261 §22.3): those for
        other realms are someone else's business."""
        for value in request.get_all(header):
            params = parse_digest(value)
            if params and params.get("realm") == self.realm:
                return params
        return None

    def verify(self, request: SipRequest, auth: Mapping[str, str], passwords: Mapping[str, str],
               now: float, client: str) -> Verdict:
        """Check ``auth`` (from ``credentials``) of a request from address ``client``
        against ``passwords`` (username -> password). Only an ACCEPTED verdict uses up the
        nonce count."""
        username = auth.get("username", "")
        nonce = auth.get("nonce", "")
        stamp, here = self._nonce_stamp(nonce, client)
        if stamp is None:
            return Verdict(Outcome.UNKNOWN_NONCE, username)
        if not here or now - stamp >= self.nonce_ttl or stamp <= self._forgotten_up_to:
            return Verdict(Outcome.STALE, username)
        algorithm = auth.get("algorithm", "MD5").upper()
        if algorithm not in self.algorithms:
            return Verdict(Outcome.BAD_ALGORITHM, username)
        password = passwords.get(username)
        qop = auth.get("qop")
        expected = digest_response(username, self.realm, self._no_password if password is None else password,
                                   request.method, auth.get("uri", ""), nonce, qop, auth.get("nc", ""),
                                   auth.get("cnonce", ""), algorithm)
        if (not _same(expected, auth.get("response", "")) or password is None
                or auth.get("realm") != self.realm):
            return Verdict(Outcome.WRONG, username)
        if auth.get("uri") != request.uri:  # RFC 2617 §3.2.2.5: the digest is for this request
            return Verdict(Outcome.URI_MISMATCH, username)
        if not self._count_use(nonce, stamp, qop, auth.get("nc", ""), now):
            return Verdict(Outcome.REPLAYED, username)
        return Verdict(Outcome.ACCEPTED, username)

    # ------------------------------------------------------------------ nonces
    def _mac(self, text: str) -> str:
        # Keyed BLAKE2s is a MAC (RFC 7693 §2.5), at half the cost of HMAC-SHA256 here;
        # 64 bits: forging one means 2**64 tries within a nonce's minute of life.
        return hashlib.blake2s(text.encode(), key=self._secret, digest_size=8).hexdigest()

    def _nonce(self, now: float, client: str) -> str:
        """``stamp.salt.mac.bound``: unique per challenge (the salt), so two clients
        challenged in the same second never share a nonce, and with it a nonce count.
        The salt needs only to be unique, not secret (the MAC is what cannot be forged),
        so it comes from the fast PRNG, not a system call."""
        body = f"{int(now)}.{random.getrandbits(48):012x}"
        return f"{body}.{self._mac(body)}.{self._mac(f'{body}|{client}')}"

    def _nonce_stamp(self, nonce: str, client: str) -> tuple[int | None, bool]:
        """When we issued ``nonce`` (whole seconds of the clock; None if we did not), and
        whether we issued it to ``client``."""
        parts = nonce.split(".")
        if len(parts) != 4 or not parts[0].isdigit() or len(parts[0]) > 12:
            return None, False
        body = f"{parts[0]}.{parts[1]}"
        if not _same(parts[2], self._mac(body)):
            return None, False
        return int(parts[0]), _same(parts[3], self._mac(f"{body}|{client}"))

    def _count_use(self, nonce: str, stamp: int, qop: str | None, nc: str, now: float) -> bool:
        """Record one use of a fresh nonce; False for a replay (RFC 7616 §3.4)."""
        used = self._used
        while used:  # forget expired nonces: they are refused as stale anyway
            oldest = next(iter(used.values()))
            if now - oldest[0] < self.nonce_ttl:
                break
            used.popitem(last=False)
        record = used.get(nonce)
        if qop:
            try:
                count = int(nc, 16)
            except ValueError:
                return False
            if record is not None and count <= record[1]:
                return False
        elif record is not None:
            return False  # no qop: no count to tell a retransmission from a replay; once
        else:
            count = -1
        if record is None:
            used[nonce] = [stamp, count]
            if len(used) > self.max_nonces:
                _, (dropped_stamp, _count) = used.popitem(last=False)
                self._forgotten_up_to = max(self._forgotten_up_to, dropped_stamp)
        else:
            record[1] = count
        return True
