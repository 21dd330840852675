"""Where ``StartBridgedCall(dest)`` goes: a registered phone, a gateway, or a SIP URI."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import NamedTuple

from ..sip.dialog import uri_address, uri_wants_tls
from ..sip.uri import NameAddr, SipUri, UriError
from ..security.access import DialTarget
from ..tasks.boundary import CallError
from .outbound import Credentials
from .registrar import Registrar

Addr = tuple[str, int]


class Route(NamedTuple):
    uri: SipUri  # the Request-URI
    addr: Addr  # where to send it; the host may be a name (CallEngine.resolve looks it up)
    target: DialTarget  # what it is: dial-out permission depends on it
    credentials: Credentials | None = None  # what the gateway may challenge us for (401/407)
    # The URI whose servers RFC 3263 locates (NAPTR/SRV/A, CallEngine.locate): the gateway
    # as configured or the dialled URI, parameters (transport, maddr) included. None: a
    # registered phone, reached at ``addr`` (where its REGISTER came from or its Contact).
    server: SipUri | None = None
    srtp: bool = False  # offer SRTP (RTP/SAVP, RFC 4568) on the leg: the gateway's srtp setting

    @property
    def tls(self) -> bool:
        """The call must go over TLS (a ``sips:`` URI or ``;transport=tls``)."""
        return uri_wants_tls(self.uri)

    @property
    def server_name(self) -> str:
        """The name the peer's certificate must carry (RFC 5922 §7.2: the URI's host)."""
        return self.uri.host.strip("[]")


class Gateway(NamedTuple):
    uri: SipUri
    credentials: Credentials | None
    srtp: bool  # its legs offer RTP/SAVP with SDES keys


def _hop(scheme: str, user: str | None, over: SipUri) -> SipUri:
    """The Request-URI for ``user`` at ``over``'s host, keeping what says how to get
    there (its scheme and ``;transport=``) and nothing else of ``over``."""
    transport = over.params.get("transport")
    return SipUri(scheme, user, over.host, over.port, {"transport": transport} if transport else {})


class OutboundRoutes:
    """Gateways for numbers: ``(prefix, gateway URI)`` rules, longest prefix first,
    then the default gateway."""

    def __init__(self, default: str | None = None, routes: list[tuple[str, str]] | None = None,
                 credentials: Mapping[str, Credentials] | None = None, srtp: Collection[str] = ()) -> None:
        """``credentials``: by gateway URI as configured, for gateways that challenge;
        ``srtp``: the gateway URIs (as configured) our calls offer SRTP to."""
        creds = credentials or {}
        self.default = Gateway(SipUri.parse(default), creds.get(default), default in srtp) if default else None
        self.routes = sorted(((p, Gateway(SipUri.parse(g), creds.get(g), g in srtp)) for p, g in routes or []),
                             key=lambda r: -len(r[0]))

    def gateways(self) -> list[SipUri]:
        """Every configured gateway, the default last."""
        return [gateway.uri for _, gateway in self.routes] + ([self.default.uri] if self.default else [])

    def gateway_for(self, user: str) -> Gateway | None:
        for prefix, gateway in self.routes:
            if user.startswith(prefix):
                return gateway
        return self.default


class Router:
    def __init__(self, gateways: OutboundRoutes, registrar: Registrar, is_us: Callable[[SipUri], bool]) -> None:
        self.gateways = gateways
        self.registrar = registrar
        self.is_us = is_us  # does a URI name this switch (then its user part is routed)

    def route(self, dest: str) -> Route:
        """The Request-URI and the address to send to. ``dest`` is a SIP URI, a To header
        value (``"Bob" <sip:1000@host>``) or a bare number/user. A URI that points at
        this switch, or a bare number, is routed by its user part: a phone registered as
        that user first, then the configured gateways (longest matching prefix, else the
        default gateway); any other URI is called directly."""
        text = dest.strip()
        if ":" in text:
            try:
                # A bare URI's ;params are its own (;transport=tls), not header parameters
                # as they would be in a To header without <> (RFC 3261 §20.10).
                uri = NameAddr.parse(text).sip_uri if "<" in text else SipUri.parse(text)
            except (UriError, ValueError):
                raise CallError(f"StartBridgedCall: {dest!r} is not a SIP URI or number", 400) from None
            if uri.scheme != "tel" and not self.is_us(uri):
                direct = _hop(uri.scheme, uri.user, uri)
                return Route(direct, uri_address(direct), DialTarget.URI, server=uri)
            user = uri.user or ""
        else:
            user = text
        if not user or any(c in user for c in " <>@;"):
            raise CallError(f"StartBridgedCall: {dest!r} has no user or number to route", 400)
        bindings = self.registrar.lookup(user)
        if bindings:
            return Route(*bindings[-1].target(), DialTarget.REGISTERED_USER)  # the most recent
        found = self.gateways.gateway_for(user)
        if found is None:
            hint = " (not registered)" if self.registrar.enabled else ""
            raise CallError(f"StartBridgedCall: no route for {user!r}{hint}: configure a gateway "
                            "(--gateway sip:HOST:PORT or [[outbound_routes]] in the config)", 404)
        target = _hop(found.uri.scheme, user, found.uri)
        return Route(target, uri_address(target), DialTarget.GATEWAY, found.credentials, server=found.uri,
                     srtp=found.srtp)
