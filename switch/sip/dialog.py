"""SIP dialogs (RFC 3261 §12): identity, CSeq spaces, route set, remote target.

Sans-I/O like the rest of ``switch.sip``: a Dialog builds in-dialog requests and
checks incoming ones; the caller sends them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .message import SipRequest, SipResponse
from .transaction import new_branch
from .uri import NameAddr, SipUri

Addr = tuple[str, int]


def new_tag() -> str:
    return os.urandom(6).hex()


@dataclass(slots=True)
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str  # our From value in requests we send (with tag)
    remote_uri: str  # our To value in requests we send (with tag)
    remote_target: str  # the peer's Contact URI
    route_set: list[str] = field(default_factory=list)
    local_seq: int = 0
    remote_seq: int | None = None
    local_contact: str = ""
    transport: str = "UDP"  # how the peer reached us ("TCP": requests go over its connection)
    connection: Addr | None = None  # the peer's TCP connection, reused for our requests
    @property
    def id(self) -> tuple[str, str, str]:
        return (self.call_id, self.local_tag, self.remote_tag)

    @classmethod
    def as_uas(cls, invite: SipRequest, local_tag: str, local_contact: str) -> Dialog:
        """§12.1.1: the dialog our 2xx/18x to ``invite`` creates."""
        to = NameAddr.parse(invite.headers["to"][0])
        to.params["tag"] = local_tag
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=invite.from_tag or "",
            local_uri=str(to),
            remote_uri=invite.headers["from"][0],
            # RFC 2543 UAs (RFC 4475 §3.4.1) may send no Contact: reach them at From.
            remote_target=_contact_uri(invite, invite.from_.uri),
            route_set=list(invite.headers.get("record-route", ())),
            local_seq=0,
            remote_seq=invite.cseq.number,
            local_contact=local_contact,
        )

    @classmethod
    def as_uac(cls, invite: SipRequest, response: SipResponse, local_contact: str) -> Dialog:
        """§12.1.2: the dialog a 2xx/18x to our ``invite`` creates (route set reversed)."""
        return cls(
            call_id=invite.call_id,
            local_tag=invite.from_tag or "",
            remote_tag=response.to_tag or "",
            local_uri=invite.headers["from"][0],
            remote_uri=response.headers["to"][0],
            # A 2xx without Contact (not RFC 3261, but seen): keep sending to where we did.
            remote_target=_contact_uri(response, invite.uri),
            route_set=list(reversed(response.headers.get("record-route", ()))),
            local_seq=invite.cseq.number,
            remote_seq=None,
            local_contact=local_contact,
        )

    def check_request(self, request: SipRequest) -> int | None:
        """§12.2.2: CSeq ordering and target refresh. Returns an error status or None."""
        number = request.cseq.number
        if request.method != "ACK" and request.method != "CANCEL":
            if self.remote_seq is not None and number < self.remote_seq:
                return 500  # out of order
            if self.remote_seq is None or number > self.remote_seq:
                self.remote_seq = number
        if request.method in ("INVITE", "UPDATE") and request.get("contact"):
            self.remote_target = _contact_uri(request, self.remote_target)  # target refresh
        return None

    def create_request(self, method: str, via_sent_by: str, *, body: bytes = b"",
                       content_type: str | None = None, cseq: int | None = None) -> SipRequest:
        """§12.2.1.1: an in-dialog request (a new branch; a new CSeq unless given)."""
        if cseq is None:
            self.local_seq += 1
            cseq = self.local_seq
        uri = self.remote_target
        routes = list(self.route_set)
        if routes and "lr" not in NameAddr.parse(routes[0]).params and ";lr" not in routes[0]:
            # strict router (RFC 2543): it becomes the Request-URI
            uri = NameAddr.parse(routes[0]).uri
            routes = routes[1:] + [f"<{self.remote_target}>"]
        headers: dict[str, list[str]] = {
            "via": [f"SIP/2.0/{self.transport} {via_sent_by};branch={new_branch()};rport"],
            "max-forwards": ["70"],
            "from": [self.local_uri],
            "to": [self.remote_uri],
            "call-id": [self.call_id],
            "cseq": [f"{cseq} {method}"],
        }
        if routes:
            headers["route"] = routes
        if self.local_contact and method not in ("BYE", "CANCEL", "ACK"):
            headers["contact"] = [self.local_contact]
        if content_type:
            headers["content-type"] = [content_type]
        return SipRequest(method, uri, headers, body)

    def next_hop(self, request: SipRequest) -> Addr:
        """Where to send an in-dialog request: the peer's TCP connection if it came over
        one (connection reuse), else the first Route, else the Request-URI (a host name
        there is resolved by the engine, ``uri_address``)."""
        if self.connection is not None:
            return self.connection
        routes = request.headers.get("route")
        target = NameAddr.parse(routes[0]).uri if routes else request.uri
        return uri_address(SipUri.parse(target))


def _contact_uri(msg: SipRequest | SipResponse, fallback: str) -> str:
    """The remote target a dialog-creating message gives (RFC 3261 §12.1.1: its Contact;
    the parser checked it is one SIP URI), or ``fallback`` when it has none."""
    contact = msg.get("contact")
    if not contact:
        return fallback
    return NameAddr.parse(contact).uri


def uri_address(uri: SipUri) -> Addr:
    """Transport address of a SIP URI (its ``maddr`` if any, RFC 3261 §19.1.1): the host
    as written, which may be a name: the call engine resolves it off the loop before
    anything is sent there (``switch/sip/resolver.py``: A/AAAA, at the URI's port, else
    5061 over TLS and 5060 otherwise, RFC 3263 §4.2). A new call's destination is located
    by RFC 3263 instead (NAPTR/SRV, ``switch/sip/locator.py``); this is the address of an
    in-dialog target."""
    host = uri.params.get("maddr") or uri.host
    host = host.strip("[]")
    return (host, uri.port or (5061 if uri_wants_tls(uri) else 5060))


def uri_wants_tls(uri: SipUri) -> bool:
    """A ``sips:`` URI (TLS on every hop, RFC 3261 §19.1) or ``;transport=tls`` (TLS to
    this hop: §19.1.1 grammar; RFC 3261 §26.2.2 deprecates it as a way to ask for SIPS,
    not as the transport of one hop, which is what it says to us)."""
    return uri.scheme == "sips" or (uri.params.get("transport") or "").lower() == "tls"
