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

Bindings follow §10.3 and RFC 4475's REGISTER cases: the To must be a SIP/SIPS
address-of-record (400 otherwise, §3.3.4), compared unescaped; each Contact is kept as
written, URI parameters and escaped headers in the URI, header parameters beside it
(§3.3.12-14), and listed so in the 200; an equivalent URI (§19.1.4) is the same binding;
a REGISTER of a binding's Call-ID must have a higher CSeq (step 7); the changes of one
REGISTER are applied all or none.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from ..security.access import parse_users
from ..security.digest import ALGORITHMS, NONCE_TTL, DigestAuth, Outcome, digest_response, parse_digest
from ..security.log import SecurityLog
from ..security.ratelimit import AuthFailures
from ..sip.message import SipRequest, SipResponse, make_response
from ..sip.uri import NameAddr, SipUri, UriError, format_params, same_uri, unescape

__all__ = ["ALGORITHMS", "NONCE_TTL", "Binding", "Registrar", "digest_response", "parse_digest"]

logger = logging.getLogger(__name__)

MAX_EXPIRES = 3600
DEFAULT_EXPIRES = 3600

Addr = tuple[str, int]


@dataclass
class Binding:
    contact: str  # the Contact URI, as the phone wrote it (escaped headers and URI parameters intact)
    source: Addr  # where the REGISTER came from (used when the phone is behind NAT)
    expires_at: float
    over_tcp: bool = False  # the REGISTER came over a TCP or TLS connection: calls reuse it
    # The Contact's header parameters but expires (q, +sip.instance, unknown ones: RFC 4475
    # §3.3.12 wants them kept), as written after the <URI>, e.g. ";q=0.7;unknownparam".
    params: str = ""
    call_id: str = ""  # of the REGISTER that made or last refreshed it (RFC 3261 §10.3 step 7)
    cseq: int = 0

    @property
    def uri(self) -> SipUri:
        return SipUri.parse(self.contact)

    def header(self, now: float) -> str:
        """The binding as the 200 to a REGISTER lists it (§10.3 step 8). Rounded, not
        truncated: a binding just made at ``now`` for 3600 s has ``(now + 3600) - now``
        left, which in floating point can be 3599.9999999 (a flaky 3599 in the 200)."""
        return f"<{self.contact}>{self.params};expires={max(0, round(self.expires_at - now))}"

    def target(self) -> tuple[SipUri, Addr]:
        """Where to send a call: over the phone's own connection if it registered over
        TCP (RFC 5626 flow reuse: behind NAT nothing else reaches it, and its Contact says
        ;transport=tcp); else the Contact, or its REGISTER's source address when the
        Contact names another host (a phone behind NAT advertising its private address).
        Headers in the Contact URI (RFC 4475 §3.3.14) are kept in the binding but never
        sent in a Request-URI (RFC 3261 §19.1.1, Table 1; RFC 4475 §3.1.2.11)."""
        uri = self.uri
        if uri.headers:
            uri = replace(uri, headers="")
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
            to = NameAddr.parse(request.headers["to"][0])
        except (UriError, ValueError, KeyError):
            return make_response(request, 400, "Bad To")
        try:
            aor = to.sip_uri
            if aor.scheme not in ("sip", "sips"):
                raise UriError(aor.scheme)
        except UriError:
            # RFC 3261 §10.2: the address-of-record is a SIP or SIPS URI (RFC 4475 §3.3.4:
            # "a registrar would reject this request with a 400").
            logger.info("REGISTER from %s:%d: To %s is no SIP address-of-record", *source, to.uri[:60])
            return make_response(request, 400, "Bad Request (To must be a sip: or sips: address-of-record)")
        # §10.3 step 5: the AOR compares unescaped ("al%69ce" is alice).
        user = unescape(aor.user or "")
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
        """RFC 3261 §10.3 steps 6-8 for an authenticated REGISTER: all its changes or none."""
        now = self.clock()
        header_expires = request.get("expires")
        default = int(header_expires) if header_expires and header_expires.isdigit() else DEFAULT_EXPIRES
        call_id, cseq = request.call_id, request.cseq.number
        current = self.lookup(user)
        contacts = [value.strip() for value in request.get_all("contact")]
        if "*" in contacts:
            # Step 6: "*" removes every binding, and only alone, with Expires: 0.
            if contacts != ["*"] or default != 0:
                return make_response(request, 400, "Bad Request (Contact: * must be alone, with Expires: 0)")
            if any(b.call_id == call_id and cseq <= b.cseq for b in current):
                return self._out_of_order(request, user, source)
            current = []
        for value in contacts if contacts != ["*"] else ():
            try:
                contact = NameAddr.parse(value)
                if contact.uri.partition(":")[0].lower() not in ("sip", "sips"):
                    # RFC 3261 §10.2.1 lets a Contact be any URI; we could never call a
                    # mailto: or tel: binding, so it is refused rather than kept unused.
                    return make_response(request, 400, "Bad Contact (the switch calls sip: and sips: contacts only)")
                uri = SipUri.parse(contact.uri)
            except (UriError, ValueError):
                return make_response(request, 400, f"Bad Contact ({value[:40]})")
            expires_text = contact.params.get("expires")
            expires = int(expires_text) if expires_text and expires_text.isdigit() else default
            expires = min(expires, MAX_EXPIRES)
            # Step 7: the binding of an equivalent URI (§19.1.4), if any, is this one's.
            existing = next((b for b in current if same_uri(b.uri, uri)), None)
            if existing is not None:
                if existing.call_id == call_id and cseq <= existing.cseq:
                    return self._out_of_order(request, user, source)
                current = [b for b in current if b is not existing]
            if expires > 0:
                params = format_params({k: v for k, v in contact.params.items() if k != "expires"})
                current.append(Binding(contact.uri, source, now + expires, over_tcp, params, call_id, cseq))
        if current:
            self.bindings[user] = current
        else:
            self.bindings.pop(user, None)
        logger.info("REGISTER %s from %s:%d: %d binding(s)", user, *source, len(current))
        response = make_response(request, 200)
        if current:
            response.set("contact", [b.header(now) for b in current])
        return response

    @staticmethod
    def _out_of_order(request: SipRequest, user: str, source: Addr) -> SipResponse:
        # §10.3 steps 6-7: a REGISTER of the Call-ID that made a binding must have a higher
        # CSeq, else "the update MUST be aborted and the request fails" (an old REGISTER
        # delivered late must not undo a newer one). The RFC names no status: 400 says why.
        logger.info("REGISTER %s from %s:%d: CSeq %d not above its binding's: refused", user, *source,
                    request.cseq.number)
        return make_response(request, 400, "Bad Request (CSeq not above the binding's, RFC 3261 §10.3)")

    def _challenge(self, request: SipRequest, now: float, client: str, stale: bool = False) -> SipResponse:
        return make_response(request, 401, headers=self.digest.challenge_headers(now, client, stale=stale))
