"""A phone registered over TCP (or TLS) is called over that connection (RFC 5626-style flow reuse).

Behind NAT nothing but its own connection reaches such a phone, and its Contact says
`;transport=tcp` with the connection's local port: an INVITE sent over UDP to the Contact
never rings it. Here the test is the phone: it registers alice over one TCP connection
(digest auth), a SIPp caller dials alice through the seed's bridge app over UDP, and the
INVITE, the ACK and the relayed BYE must all arrive over the phone's connection, with a
TCP Via. Over TLS the same, on the switch's TLS port (the phone verifies its certificate):
a TLS Via and a `;transport=tls` Contact naming that port."""

from __future__ import annotations

import re
import ssl

import pytest

from .certs import Pki, tls_args, tls_port
from .harness import LOCALHOST, RtpSink, free_tcp_port, stop_clean
from .test_tcp_framing import TcpPhone, digest_authorization, header, status

pytestmark = pytest.mark.e2e


def register_over_tcp(phone: TcpPhone, realm: str, user: str, password: str) -> str:
    h, port = phone.target
    ruri = f"sip:{h}:{port}"
    phone.request("REGISTER", ruri, 1, to_user=user, extra=("Expires: 300",))
    [challenge] = phone.responses("REGISTER")
    assert status(challenge) == 401, challenge
    nonce = re.search(r'nonce="([^"]+)"', header(challenge, "WWW-Authenticate") or "")
    assert nonce, challenge
    auth = digest_authorization(user, realm, password, "REGISTER", ruri, nonce.group(1))
    phone.request("REGISTER", ruri, 2, to_user=user, extra=("Expires: 300", auth))
    [ok] = phone.responses("REGISTER")
    assert status(ok) == 200, ok
    return ok


def next_request(phone: TcpPhone, method: str, timeout: float = 10.0) -> str:
    """The next request from the switch on the phone's connection."""
    msg = phone.read(timeout)
    while msg is not None and msg.startswith("SIP/2.0 "):
        msg = phone.read(timeout)
    assert msg is not None and msg.startswith(f"{method} "), f"wanted {method}, got {msg!r}"
    return msg


def reply(phone: TcpPhone, request: str, code: str, to_tag: str | None = None, body: str = "") -> None:
    head = request.split("\r\n\r\n", 1)[0]
    vias = re.findall(r"^Via:.*$", head, re.M | re.I)
    to = header(request, "To") or ""
    if to_tag and ";tag=" not in to:
        to += f";tag={to_tag}"
    lh, lp = phone.addr
    lines = [f"SIP/2.0 {code}", *vias, f"From: {header(request, 'From')}", f"To: {to}",
             f"Call-ID: {header(request, 'Call-ID')}", f"CSeq: {header(request, 'CSeq')}",
             f"Contact: <sip:alice@{lh}:{lp};transport={phone.transport.lower()}>"]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.encode())}")
    phone.sock.sendall(("\r\n".join(lines) + "\r\n\r\n" + body).encode())


@pytest.mark.parametrize("transport", ["TCP", "TLS"])
def test_a_phone_registered_over_tcp_is_called_over_its_connection(switch, bridge_app, sipp_bg, tmp_path,
                                                                   transport: str, pki: Pki):  # fmt: skip
    config = tmp_path / "accounts.toml"
    config.write_text('realm = "e2e"\n[users]\nalice = "s3cret"\n')
    tls = transport == "TLS"
    sw = switch(bridge_app(), ["--config", str(config), "--control", f"{LOCALHOST}:{free_tcp_port()}",
                               *(tls_args(pki) if tls else [])])
    ours = (LOCALHOST, tls_port(sw)) if tls else sw.sip_addr
    phone = TcpPhone(ours, ssl.create_default_context(cafile=str(pki.ca)) if tls else None)
    with RtpSink() as callee_media:
        try:
            register_over_tcp(phone, "e2e", "alice", "s3cret")
            caller = sipp_bg("uac_hangup", sw, service="alice", pause_ms=1500, timeout=20)
            invite = next_request(phone, "INVITE")
            assert re.search(rf"^Via: SIP/2\.0/{transport} {LOCALHOST}:{ours[1]};", invite, re.M), invite
            assert header(invite, "Contact") == f"<sip:{LOCALHOST}:{ours[1]};transport={transport.lower()}>", invite
            sdp = (f"v=0\r\no=alice 1 1 IN IP4 {LOCALHOST}\r\ns=-\r\nc=IN IP4 {LOCALHOST}\r\nt=0 0\r\n"
                   f"m=audio {callee_media.port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
            reply(phone, invite, "180 Ringing", to_tag="alice1")
            reply(phone, invite, "200 OK", to_tag="alice1", body=sdp)
            next_request(phone, "ACK")  # over the same connection, not a new UDP flow
            bye = next_request(phone, "BYE")  # the caller hung up: relayed to us, here
            reply(phone, bye, "200 OK")
            res = caller.wait()
            assert res.ok, res.describe()
            assert res.received("INVITE", 200), res.describe()
        finally:
            phone.close()
    stop_clean(sw)
