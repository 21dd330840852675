"""A registrar (RFC 3261 §10) with digest authentication (§22.2), in memory.

Phones configured with an account on the switch REGISTER; calls the apps place to that
user (``StartBridgedCall('alice')``) then reach the phone. Only accounts listed in the
config's ``[users]`` table may register, each with its password: with no accounts the
switch answers REGISTER ``405`` as before, so it never becomes an open registrar by
default. Bindings live in memory (a restart forgets them; phones re-register within
their expiry anyway).

The digest machinery (nonces bound to the client's address, nonce-count replay
protection, ``stale=true``, SHA-256 beside MD5, 403 for a wrong password, the same answer
for unknown users) is ``switch/security/digest.py``, shared with the INVITE challenge.
What is the registrar's own: a ``401`` challenge (§22.2, the registrar is a UAS), an
account registers only itself, and wrong passwords count in the ``AuthFailures`` shared
with INVITE: past the limit, a source or user name gets ``403`` without its digest being
checked, until the block window ends (password guessing, RFC 3261 §26.3.2.4).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..security.access import parse_users
from ..security.digest import ALGORITHMS, NONCE_TTL, DigestAuth, Outcome, digest_response, parse_digest
from ..security.log import SecurityLog
from ..security.ratelimit import AuthFailures
from ..sip.message import SipRequest, SipResponse, make_response
from ..sip.uri import NameAddr, SipUri, UriError

__all__ = ["ALGORITHMS", "NONCE_TTL", "Binding", "Registrar", "digest_response", "parse_digest"]

logger = logging.getLogger(__name__)

MAX_EXPIRES = 3600
DEFAULT_EXPIRES = 3600

Addr = tuple[str, int]


@dataclass
class Binding:
    contact: str  # the Contact URI
    source: Addr  # where the REGISTER came from (used when the phone is behind NAT)
    expires_at: float
    over_tcp: bool = False  # the REGISTER came over a TCP or TLS connection: calls reuse it

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


class Registrar:
    def __init__(self, users: Mapping[str, object], realm: str = "softswitch",
                 clock: Callable[[], float] = time.monotonic, algorithms: tuple[str, ...] = ALGORITHMS,
                 failures: AuthFailures | None = None) -> None:
        """``users``: the config's ``[users]`` table (name = "password", or a table with a
        password). ``failures``: shared with the INVITE policy, so guesses count wherever
        they are made."""
        self.users = {name: account.password for name, account in parse_users(users).items()}
        self.realm = realm
        self.digest = DigestAuth(realm, algorithms)
        self.algorithms = self.digest.algorithms
        self.clock = clock
        self.log = failures.log if failures is not None else SecurityLog()
        self.failures = failures if failures is not None else AuthFailures(log=self.log)
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
    def handle(self, request: SipRequest, source: Addr, over_tcp: bool = False) -> SipResponse:
        """The response to a REGISTER from ``source`` (a TCP connection if ``over_tcp``)."""
        try:
            aor = NameAddr.parse(request.headers["to"][0]).sip_uri
        except (UriError, ValueError, KeyError):
            return make_response(request, 400, "Bad To")
        user = aor.user or ""
        now = self.clock()
        ip = source[0]
        auth = self.digest.credentials(request, "authorization")
        if auth is None:
            return self._challenge(request, now, ip)
        username = auth.get("username", "")
        if self.failures.blocked(ip, username, now):
            self.log.event("refused", ip, now, fold=True, reason="auth-blocked", user=username, method="REGISTER")
            return make_response(request, 403, "Forbidden")
        verdict = self.digest.verify(request, auth, self.users, now, ip)
        if verdict.outcome is Outcome.WRONG:
            self.failures.failed(ip, username, "REGISTER", now)
            return make_response(request, 403, "Forbidden")
        if verdict.outcome is Outcome.URI_MISMATCH:
            return make_response(request, 400, "Authorization uri does not match the Request-URI")
        if verdict.outcome is Outcome.REPLAYED:
            self.log.event("replayed", ip, now, fold=True, user=username, method="REGISTER",
                           nc=auth.get("nc") or "none")
        if verdict.challenge:
            return self._challenge(request, now, ip, stale=verdict.stale)
        self.failures.succeeded(ip, username)
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

    def _challenge(self, request: SipRequest, now: float, client: str, stale: bool = False) -> SipResponse:
        return make_response(request, 401, headers=self.digest.challenge_headers(now, client, stale=stale))
