"""IPv6 in the SIP layer: RFC 5118's torture messages (``fixtures/rfc5118/``, its Appendix
A.1 archive decoded as for RFC 4475), IPv6 references in URIs and Via, and ``received`` /
``rport`` for IPv6 sources (RFC 3261 §18.2, RFC 3581, RFC 5118 §4.5).

The archive's files end their lines with bare LF (which the parser accepts, RFC 3261 §7.5
leniency); three of them differ from the RFC's text in ways RFC 3261 does not let pass
over UDP, and are tested both as they are and repaired:
- ipv6-bug-abnf-3-colons and ipv6-correct-abnf-2-colons end after their last header
  without the empty line (§7: mandatory): 400;
- ipv6-in-sdp and mult-ip-in-sdp say Content-Length 268/181 for bodies of 242/180 octets
  (§18.3: a request whose datagram ends before the body is answered 400).
"""

from __future__ import annotations

import re

import pytest

from switch.sip.message import SipParseError, SipRequest, Via, make_error_response, parse_message
from switch.sip.transaction import response_address, stamp_via
from switch.sip.uri import (
    NameAddr, SipUri, UriError, host_address, is_ipv6_address, join_hostport, same_host, split_hostport,
)
from test_rfc4475 import assert_fixtures, assert_received, fixture, receive

V6_SOURCE = ("2001:db8::9:1", 5060)  # the address the IPv6 fixtures' top Via names


def v6(name: str) -> bytes:
    return fixture(name, "rfc5118")


def repaired(name: str) -> bytes:
    """The fixture with the archive's two defects mended: the empty line after the headers
    restored, Content-Length set to the body there is."""
    data = v6(name)
    if b"\n\n" not in data:
        return data + b"\n"
    head, body = data.split(b"\n\n", 1)
    return re.sub(rb"Content-Length: \d+", b"Content-Length: %d" % len(body), head) + b"\n\n" + body


def request(data: bytes) -> SipRequest:
    msg = parse_message(data)
    assert isinstance(msg, SipRequest)
    return msg


# RFC 5118 §4: message -> the SIP layer's answer from an IPv6 source (see test_rfc4475).
EXPECTED = {
    "ipv6-good": "request",                      # §4.1
    "ipv6-bad": 400,                             # §4.2: no [] around the address
    "port-ambiguous": "request",                 # §4.3: well-formed, the port is in the address
    "port-unambiguous": "request",               # §4.4
    "via-received-param-with-delim": "request",  # §4.5: accept received=[...]
    "via-received-param-no-delim": "request",    # §4.5
    "ipv6-in-sdp": 400,                          # §4.6, as archived: Content-Length too large
    "mult-ip-in-header": "request",              # §4.7
    "mult-ip-in-sdp": 400,                       # §4.8, as archived: Content-Length too large
    "ipv4-mapped-ipv6": "request",               # §4.9
    "ipv6-bug-abnf-3-colons": 400,               # §4.10, as archived: no empty line
    "ipv6-correct-abnf-2-colons": 400,           # §4.10, as archived: no empty line
}


def test_fixtures_are_the_rfcs():
    assert_fixtures("rfc5118", EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_archived_messages(name):
    out = receive(v6(name), V6_SOURCE)
    if isinstance(out.message, SipRequest):
        assert EXPECTED[name] == "request" and len(out.events) == 1
    else:
        assert out.statuses == [EXPECTED[name]], out.error
    for response, dest in out.sent:
        assert dest[0] == V6_SOURCE[0]  # the socket's form: no brackets
        assert_received(response.get("via") or "", V6_SOURCE[0])


@pytest.mark.parametrize("name", ["ipv6-in-sdp", "mult-ip-in-sdp", "ipv6-bug-abnf-3-colons",
                                  "ipv6-correct-abnf-2-colons"])
def test_repaired_messages_are_valid(name):
    out = receive(repaired(name), V6_SOURCE)
    assert isinstance(out.message, SipRequest) and len(out.events) == 1


def test_ipv6_references_in_request_uri_via_and_contact():
    msg = request(v6("ipv6-good"))
    assert (msg.request_uri.host, msg.request_uri.port) == ("[2001:db8::10]", None)
    assert (msg.via.host, msg.via.port, msg.via.sent_by) == ("[2001:db8::9:1]", None, "[2001:db8::9:1]")
    assert NameAddr.parse(msg.get("contact") or "").sip_uri.host == "[2001:db8::1]"
    assert str(msg.request_uri) == "sip:[2001:db8::10]"


def test_port_inside_or_outside_the_brackets():
    ambiguous = request(v6("port-ambiguous")).request_uri
    assert (ambiguous.host, ambiguous.port) == ("[2001:db8::10:5070]", None)  # §4.3: no port
    unambiguous = request(v6("port-unambiguous")).request_uri
    assert (unambiguous.host, unambiguous.port) == ("[2001:db8::10]", 5070)
    assert str(unambiguous) == "sip:[2001:db8::10]:5070"


def test_received_with_and_without_brackets_is_accepted_and_replaced():
    for name, written in [("via-received-param-with-delim", "[2001:db8::9:255]"),
                          ("via-received-param-no-delim", "2001:db8::9:255")]:
        msg = request(v6(name))
        assert msg.via.params["received"] == written
        # The sender's own received would route our responses (§18.2.2): it is replaced by
        # the true source, written without brackets (RFC 5118 §4.5).
        stamp_via(msg, V6_SOURCE)
        assert msg.via.params["received"] == "2001:db8::9:1"
        assert msg.get("via") == f"SIP/2.0/UDP [2001:db8::9:1];received=2001:db8::9:1;branch={msg.via.branch}"
        assert response_address(msg, V6_SOURCE) == V6_SOURCE


def test_mixed_ipv4_and_ipv6_vias():
    msg = request(v6("mult-ip-in-header"))
    vias = [Via.parse(v) for v in msg.get_all("via")]
    assert [(v.transport, v.host, v.port) for v in vias] == [
        ("UDP", "[2001:db8::9:1]", 6050), ("UDP", "192.0.2.1", None), ("TCP", "[2001:db8::9:255]", None)]
    assert vias[2].params["received"] == "192.0.2.200"
    stamp_via(msg, ("2001:db8::9:1", 6050))
    assert "received" not in msg.via.params  # the sent-by is the source: nothing to add
    assert response_address(msg, ("2001:db8::9:1", 6050)) == ("2001:db8::9:1", 6050)


def test_ipv4_mapped_ipv6_addresses():
    msg = request(v6("ipv4-mapped-ipv6"))
    assert (msg.via.host, msg.via.port) == ("[::ffff:192.0.2.10]", 19823)
    assert NameAddr.parse(msg.get("contact") or "").sip_uri.host == "[::ffff:192.0.2.2]"
    out = receive(v6("ipv4-mapped-ipv6"), ("::ffff:192.0.2.10", 19823))
    assert [(r.status, dest) for r, dest in out.sent] == [(100, ("::ffff:192.0.2.10", 19823))]


def test_rfc2373_three_colons_are_tolerated():
    for name in ("ipv6-bug-abnf-3-colons", "ipv6-correct-abnf-2-colons"):
        msg = request(repaired(name))
        assert msg.request_uri.host in ("[2001:db8:::192.0.2.1]", "[2001:db8::192.0.2.1]")
    assert is_ipv6_address("2001:db8:::192.0.2.1") and is_ipv6_address("2001:db8::192.0.2.1")
    assert same_host("[2001:db8:::192.0.2.1]", "2001:db8::c000:201")


@pytest.mark.parametrize("text", [
    "[2001:db8::10", "[2001:db8::zz]", "[]", "[192.0.2.1]", "[::1]junk", "[::1]:", "[::1]:99999",
    "[1:2:3:4:5:6:7:8:9]", "[2001:db8::1::2]", "[２００１::1]", "2001:db8::10",
])
def test_bad_ipv6_references(text):
    with pytest.raises(UriError):
        split_hostport(text)
    with pytest.raises(UriError):
        SipUri.parse(f"sip:user@{text}")


def test_host_helpers():
    assert join_hostport("2001:db8::1", 5070) == "[2001:db8::1]:5070" == join_hostport("[2001:db8::1]", 5070)
    assert join_hostport("192.0.2.1", 5060) == "192.0.2.1:5060" and join_hostport("::1") == "[::1]"
    assert split_hostport(join_hostport("2001:db8::1", 5070)) == ("[2001:db8::1]", 5070)
    assert host_address("[2001:db8::1]") == "2001:db8::1" and host_address("192.0.2.1") == "192.0.2.1"
    assert same_host("[2001:DB8:0::1]", "2001:db8::1") and not same_host("[2001:db8::2]", "2001:db8::1")
    assert not same_host("example.com", "2001:db8::1") and not same_host("[::1]", "127.0.0.1")


# --------------------------------------------------------------------- received / rport
def options(via: str) -> bytes:
    return (f"OPTIONS sip:[2001:db8::10] SIP/2.0\r\nVia: {via}\r\nTo: <sip:a@example.com>\r\n"
            "From: <sip:b@example.com>;tag=1\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n").encode()


@pytest.mark.parametrize("via, source, stamped, dest", [
    # §18.2.1: a sent-by naming another address gets received; §18.2.2: sent to it, at the
    # sent-by port.
    ("SIP/2.0/UDP [2001:db8::9:1]:5062;branch=z9hG4bK1", ("2001:db8::77", 40000),
     "SIP/2.0/UDP [2001:db8::9:1]:5062;branch=z9hG4bK1;received=2001:db8::77", ("2001:db8::77", 5062)),
    # RFC 3581 §4: rport filled with the source port, received added even when the same.
    ("SIP/2.0/UDP [2001:db8::9:1];rport;branch=z9hG4bK1", ("2001:db8::9:1", 40000),
     "SIP/2.0/UDP [2001:db8::9:1];rport=40000;branch=z9hG4bK1;received=2001:db8::9:1", ("2001:db8::9:1", 40000)),
    # Another spelling of the source is the source.
    ("SIP/2.0/UDP [2001:DB8:0::9:1];branch=z9hG4bK1", ("2001:db8::9:1", 5060),
     "SIP/2.0/UDP [2001:DB8:0::9:1];branch=z9hG4bK1", ("2001:db8::9:1", 5060)),
    # A host name is never resolved: the response goes to the source.
    ("SIP/2.0/UDP phone.example.com;branch=z9hG4bK1", ("2001:db8::5", 5060),
     "SIP/2.0/UDP phone.example.com;branch=z9hG4bK1;received=2001:db8::5", ("2001:db8::5", 5060)),
    # Forged received and rport values would reflect the response at a third party.
    ("SIP/2.0/UDP [2001:db8::9:1];received=2001:db8::666;rport=7;branch=z9hG4bK1", ("2001:db8::9:1", 40000),
     "SIP/2.0/UDP [2001:db8::9:1];received=2001:db8::9:1;rport=40000;branch=z9hG4bK1", ("2001:db8::9:1", 40000)),
    ("SIP/2.0/UDP 192.0.2.1;received=198.51.100.7;branch=z9hG4bK1", ("192.0.2.1", 5060),
     "SIP/2.0/UDP 192.0.2.1;received=192.0.2.1;branch=z9hG4bK1", ("192.0.2.1", 5060)),
])
def test_received_and_rport(via, source, stamped, dest):
    msg = request(options(via))
    stamp_via(msg, source)
    assert msg.get("via") == stamped
    assert response_address(msg, source) == dest
    # The 400 for a request that failed to parse is routed the same way.
    with pytest.raises(SipParseError) as info:
        parse_message(options(via).replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE"))
    answer = make_error_response(info.value, source)
    assert answer is not None and answer[1] == dest and answer[0].get("via") == stamped


def test_error_response_to_an_ipv6_source_with_a_broken_via():
    with pytest.raises(SipParseError) as info:
        parse_message(options("SIP/2.0/UDP [2001:db8::9:1]:5062;;branch=z9hG4bK1;rport"))
    answer = make_error_response(info.value, ("2001:db8::9:1", 40000))
    assert answer is not None
    response, dest = answer
    assert dest == ("2001:db8::9:1", 40000)  # rport asked: the source port
    assert response.get("via") == "SIP/2.0/UDP [2001:db8::9:1]:5062;;branch=z9hG4bK1;rport;received=2001:db8::9:1"
