"""A registrar (RFC 3261 §10) with digest authentication (§22, RFC 2617), in memory.

Phones configured with an account on the switch REGISTER; calls the apps place to that
user (``StartBridgedCall('alice')``) then reach the phone. Only accounts listed in the
config's ``[users]`` table may register, each with its password: with no accounts the
switch answers REGISTER ``405`` as before, so it never becomes an open registrar by
default. Bindings live in memory (a restart forgets them; phones re-register within
their expiry anyway).

Nonces are stateless: ``timestamp:HMAC(secret, timestamp)``, valid for NONCE_TTL, so
no per-client state exists before a client has proven who it is.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from dataclasses import dataclass

from ..sip.message import SipRequest, SipResponse, make_response
from ..sip.uri import NameAddr, SipUri, UriError, split_commas

logger = logging.getLogger(__name__)

NONCE_TTL = 300.0
MAX_EXPIRES = 3600
DEFAULT_EXPIRES = 3600

Addr = tuple[str, int]


@dataclass
class Binding:
    contact: str  # the Contact URI
    source: Addr  # where the REGISTER came from (used when the phone is behind NAT)
    expires_at: float

    def target(self) -> tuple[SipUri, Addr]:
        """Where to send a call: the Contact, or its REGISTER's source address when the
        Contact names another host (a phone behind NAT advertising its private address)."""
        uri = SipUri.parse(self.contact)
        host = uri.host.strip("[]")
        if host != self.source[0]:
            return uri, self.source
        return uri, (host, uri.port or 5060)


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # noqa: S324 - RFC 2617 digest is MD5


def digest_response(username: str, realm: str, password: str, method: str, uri: str, nonce: str,
                    qop: str | None = None, nc: str = "", cnonce: str = "") -> str:
    """RFC 2617 §3.2.2.1 request-digest (algorithm MD5)."""
    ha1 = md5(f"{username}:{realm}:{password}")
    ha2 = md5(f"{method}:{uri}")
    if qop:
        return md5(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return md5(f"{ha1}:{nonce}:{ha2}")


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
                 clock=time.monotonic) -> None:  # type: ignore[no-untyped-def]
        self.users = dict(users)
        self.realm = realm
        self.clock = clock
        self._secret = os.urandom(16)
        self.bindings: dict[str, list[Binding]] = {}

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
    def handle(self, request: SipRequest, source: Addr) -> SipResponse:
        """The response to a REGISTER from ``source``."""
        try:
            aor = NameAddr.parse(request.headers["to"][0]).sip_uri
        except (UriError, ValueError, KeyError):
            return make_response(request, 400, "Bad To")
        user = aor.user or ""
        auth = parse_digest(request.get("authorization") or "")
        if not auth or not self._nonce_fresh(auth.get("nonce", "")):
            return self._challenge(request, stale=bool(auth))
        password = self.users.get(auth.get("username", ""))
        expected = None
        if password is not None and auth.get("realm") == self.realm:
            expected = digest_response(auth["username"], self.realm, password, request.method,
                                       auth.get("uri", ""), auth["nonce"], auth.get("qop"),
                                       auth.get("nc", ""), auth.get("cnonce", ""))
        if expected is None or not hmac.compare_digest(expected, auth.get("response", "")):
            logger.warning("REGISTER for %r from %s:%d: wrong user or password", user, *source)
            return self._challenge(request)
        if auth["username"] != user:
            return make_response(request, 403, "Forbidden (the account may only register itself)")
        return self._update(request, user, source)

    def _update(self, request: SipRequest, user: str, source: Addr) -> SipResponse:
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
                current.append(Binding(contact.uri, source, now + expires))
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
        stamp = f"{self.clock():.0f}"
        sig = hmac.new(self._secret, stamp.encode(), hashlib.sha256).hexdigest()[:24]
        return f"{stamp}.{sig}"

    def _nonce_fresh(self, nonce: str) -> bool:
        stamp, _, sig = nonce.partition(".")
        good = hmac.new(self._secret, stamp.encode(), hashlib.sha256).hexdigest()[:24]
        if not stamp.isdigit() or not hmac.compare_digest(sig, good):
            return False
        return self.clock() - int(stamp) < NONCE_TTL

    def _challenge(self, request: SipRequest, stale: bool = False) -> SipResponse:
        challenge = (f'Digest realm="{self.realm}", nonce="{self._nonce()}", algorithm=MD5, qop="auth"'
                     + (", stale=true" if stale else ""))
        return make_response(request, 401, headers={"www-authenticate": challenge})
