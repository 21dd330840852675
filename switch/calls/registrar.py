"""A registrar (RFC 3261 §10) with digest authentication (§22, RFC 2617), in memory.

Phones configured with an account on the switch REGISTER; calls the apps place to that
user (``StartBridgedCall('alice')``) then reach the phone. Only accounts listed in the
config's ``[users]`` table may register, each with its password: with no accounts the
switch answers REGISTER ``405`` as before, so it never becomes an open registrar by
default. Bindings live in memory (a restart forgets them; phones re-register within
their expiry anyway).

Nonces are ``timestamp.HMAC(secret, timestamp)``, valid for NONCE_TTL, so no state
exists for a client before it has proven who it is. What is kept once it has (issue 9):

* replay protection (RFC 2617 §3.2.2, RFC 7616 §3.4): with ``qop`` each nonce's highest
  ``nc`` is remembered until the nonce expires, and a request must count up; without
  ``qop`` a nonce serves once. A captured ``Authorization`` replayed with another Contact
  gets a fresh challenge, never a binding;
* ``stale=true`` only for a nonce of ours that expired (or was used up): the phone retries
  with the same password at once; a forged nonce gets a plain challenge;
* digest with SHA-256 beside MD5 (RFC 8760): a challenge per algorithm, in the order of
  ``digest_algorithms`` (default MD5 first: SIPp 3.6 and many deployed phones read only
  the first challenge and know only MD5; put SHA-256 first where all phones have it);
* a digest that is wrong over a fresh nonce of ours gets ``403``, not another 401: the
  password is wrong and asking again only invites guessing (and phones retry 401 in a
  loop). An unknown user gets exactly the same answer, after the same hashing work, so
  the answers do not tell which accounts exist.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass

from ..sip.message import SipRequest, SipResponse, make_response
from ..sip.uri import NameAddr, SipUri, UriError, split_commas

logger = logging.getLogger(__name__)

NONCE_TTL = 60.0  # short-lived; a phone re-registering later gets stale=true and retries
MAX_EXPIRES = 3600
DEFAULT_EXPIRES = 3600

Addr = tuple[str, int]


@dataclass
class Binding:
    contact: str  # the Contact URI
    source: Addr  # where the REGISTER came from (used when the phone is behind NAT)
    expires_at: float
    over_tcp: bool = False  # the REGISTER came over a TCP connection: calls reuse it

    def target(self) -> tuple[SipUri, Addr]:
        """Where to send a call: over the phone's own connection if it registered over
        TCP (RFC 5626 flow reuse: behind NAT nothing else reaches it, and its Contact says
        ;transport=tcp); else the Contact, or its REGISTER's source address when the
        Contact names another host (a phone behind NAT advertising its private address)."""
        uri = SipUri.parse(self.contact)
        host = uri.host.strip("[]")
        if self.over_tcp or host != self.source[0]:
            return uri, self.source
        return uri, (host, uri.port or 5060)


ALGORITHMS = ("MD5", "SHA-256")  # what we accept; the default order of the challenges (RFC 8760 §2.4)


def _hash(algorithm: str, text: str) -> str:
    if algorithm == "SHA-256":
        return hashlib.sha256(text.encode()).hexdigest()
    return hashlib.md5(text.encode()).hexdigest()  # noqa: S324 - RFC 2617 digest is MD5


def digest_response(username: str, realm: str, password: str, method: str, uri: str, nonce: str,
                    qop: str | None = None, nc: str = "", cnonce: str = "", algorithm: str = "MD5") -> str:
    """RFC 2617 §3.2.2.1 / RFC 8760 request-digest (algorithm MD5 or SHA-256)."""
    ha1 = _hash(algorithm, f"{username}:{realm}:{password}")
    ha2 = _hash(algorithm, f"{method}:{uri}")
    if qop:
        return _hash(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _hash(algorithm, f"{ha1}:{nonce}:{ha2}")


def parse_digest(header: str) -> dict[str, str]:
    """``Digest username="alice", realm="x", ...`` -> {param: value}."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "digest":
        return {}
    params: dict[str, str] = {}
    for item in split_commas(rest):
        key, eq, value = item.partition("=")
        if eq:
            params[key.strip().lower()] = value.strip().strip('"')
    return params


class Registrar:
    def __init__(self, users: dict[str, str], realm: str = "softswitch",
                 clock=time.monotonic, algorithms: tuple[str, ...] = ALGORITHMS) -> None:  # type: ignore[no-untyped-def]
        self.users = dict(users)
        self.realm = realm
        self.algorithms = tuple(a.upper() for a in algorithms)
        unknown = set(self.algorithms) - set(ALGORITHMS)
        if unknown or not self.algorithms:
            raise ValueError(f"digest algorithms must be among {', '.join(ALGORITHMS)}, not {sorted(unknown)}")
        self.clock = clock
        self._secret = os.urandom(16)
        self.bindings: dict[str, list[Binding]] = {}
        # nonce -> highest nc accepted (-1: used once, without qop); nonces are issued in
        # time order, so the oldest entries are the first to expire
        self._used: OrderedDict[str, int] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return bool(self.users)

    # ------------------------------------------------------------------ lookups
    def lookup(self, user: str) -> list[Binding]:
        now = self.clock()
        live = [b for b in self.bindings.get(user, ()) if b.expires_at > now]
        if live:
            self.bindings[user] = live
        else:
            self.bindings.pop(user, None)
        return live

    # ------------------------------------------------------------------ REGISTER
    def handle(self, request: SipRequest, source: Addr, over_tcp: bool = False) -> SipResponse:
        """The response to a REGISTER from ``source`` (a TCP connection if ``over_tcp``)."""
        try:
            aor = NameAddr.parse(request.headers["to"][0]).sip_uri
        except (UriError, ValueError, KeyError):
            return make_response(request, 400, "Bad To")
        user = aor.user or ""
        auth = parse_digest(request.get("authorization") or "")
        nonce = auth.get("nonce", "")
        if not auth:
            return self._challenge(request)
        age = self._nonce_age(nonce)
        if age is None:  # not ours (forged, or from before a restart)
            return self._challenge(request)
        if age >= NONCE_TTL:
            return self._challenge(request, stale=True)
        algorithm = auth.get("algorithm", "MD5").upper()
        if algorithm not in self.algorithms:
            return self._challenge(request)
        username = auth.get("username", "")
        password = self.users.get(username)
        # The same hashing for an unknown user as for a known one: no timing difference.
        expected = digest_response(username, self.realm, password or self._secret.hex(), request.method,
                                   auth.get("uri", ""), nonce, auth.get("qop"), auth.get("nc", ""),
                                   auth.get("cnonce", ""), algorithm)
        if (password is None or auth.get("realm") != self.realm
                or not hmac.compare_digest(expected, auth.get("response", ""))):
            logger.warning("REGISTER for %r from %s:%d: wrong user or password", user, *source)
            return make_response(request, 403, "Forbidden")
        if auth.get("uri") != request.uri:  # RFC 2617 §3.2.2.5: the digest is for this request
            return make_response(request, 400, "Authorization uri does not match the Request-URI")
        if not self._count_use(nonce, auth.get("qop"), auth.get("nc", "")):
            logger.warning("REGISTER for %r from %s:%d: replayed credentials (nonce count %s)",
                           user, *source, auth.get("nc") or "none")
            return self._challenge(request, stale=True)
        if username != user:
            return make_response(request, 403, "Forbidden (the account may only register itself)")
        return self._update(request, user, source, over_tcp)

    def _update(self, request: SipRequest, user: str, source: Addr, over_tcp: bool = False) -> SipResponse:
        now = self.clock()
        contacts = request.get_all("contact")
        header_expires = request.get("expires")
        default = int(header_expires) if header_expires and header_expires.isdigit() else DEFAULT_EXPIRES
        current = self.lookup(user)
        if contacts == ["*"]:
            if default != 0:
                return make_response(request, 400, "Contact * needs Expires: 0")
            current = []
        for value in contacts if contacts != ["*"] else ():
            try:
                contact = NameAddr.parse(value)
                SipUri.parse(contact.uri)
            except (UriError, ValueError):
                return make_response(request, 400, "Bad Contact")
            expires_text = contact.params.get("expires")
            expires = int(expires_text) if expires_text and expires_text.isdigit() else default
            expires = min(expires, MAX_EXPIRES)
            current = [b for b in current if b.contact != contact.uri]
            if expires > 0:
                current.append(Binding(contact.uri, source, now + expires, over_tcp))
        if current:
            self.bindings[user] = current
        else:
            self.bindings.pop(user, None)
        logger.info("REGISTER %s from %s:%d: %d binding(s)", user, *source, len(current))
        response = make_response(request, 200)
        if current:
            response.set("contact", [f"<{b.contact}>;expires={int(b.expires_at - now)}" for b in current])
        return response

    # ------------------------------------------------------------------ nonces
    def _nonce(self) -> str:
        """``stamp.salt.sig``: unique per challenge (the salt), so two phones challenged in
        the same second never share a nonce, and with it a nonce count."""
        body = f"{self.clock():.0f}.{os.urandom(6).hex()}"
        sig = hmac.new(self._secret, body.encode(), hashlib.sha256).hexdigest()[:24]
        return f"{body}.{sig}"

    def _nonce_age(self, nonce: str) -> float | None:
        """Seconds since we issued ``nonce``; None if we did not."""
        body, _, sig = nonce.rpartition(".")
        stamp = body.partition(".")[0]
        if not stamp.isdigit() or len(stamp) > 12:
            return None
        good = hmac.new(self._secret, body.encode(), hashlib.sha256).hexdigest()[:24]
        if not hmac.compare_digest(sig, good):
            return None
        return self.clock() - int(stamp)

    def _count_use(self, nonce: str, qop: str | None, nc: str) -> bool:
        """Record one use of a fresh nonce; False for a replay (RFC 7616 §3.4)."""
        while self._used:  # forget expired nonces: they are refused as stale anyway
            oldest = next(iter(self._used))
            age = self._nonce_age(oldest)
            if age is not None and age < NONCE_TTL:
                break
            self._used.popitem(last=False)
        last = self._used.get(nonce)
        if qop:
            try:
                count = int(nc, 16)
            except ValueError:
                return False
            if last is not None and count <= last:
                return False
            self._used[nonce] = count
            return True
        if last is not None:
            return False  # no qop: no count to tell a retransmission from a replay; once
        self._used[nonce] = -1
        return True

    def _challenge(self, request: SipRequest, stale: bool = False) -> SipResponse:
        nonce = self._nonce()
        challenges = [f'Digest realm="{self.realm}", nonce="{nonce}", algorithm={algorithm}, qop="auth"'
                      + (", stale=true" if stale else "") for algorithm in self.algorithms]
        return make_response(request, 401, headers={"www-authenticate": challenges})
