"""Odd and hostile requests (the failures seen sending RFC 4475's torture messages)
against the sans-I/O parser, the transaction layer, the engine's dispatch and the
transport's 400 path. Each case is written here as a small variation of one valid
OPTIONS; the RFC's own messages as byte-exact fixtures are still to come (issue 10)."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from switch.calls.engine import CallEngine
from switch.calls.registrar import Registrar
from switch.security.access import AccessPolicy, Trunk
from switch.sip import transport as transport_mod
from switch.sip.message import (
    SipParseError, SipResponse, Via, make_error_response, parse_message,
)
from switch.sip.transaction import TransactionLayer
from switch.sip.transport import SipTransport

SOURCE = ("192.0.2.200", 5070)


# ------------------------------------------------------------------ engine harness
class _Admission:
    draining = False

    def refuse_reason(self, live: int) -> str | None:
        return None


class _Sip:
    """What CallEngine needs of a SipTransport, over a real TransactionLayer."""

    local_addr = ("127.0.0.1", 5060)
    user = None

    def __init__(self) -> None:
        self.layer = TransactionLayer()

    def send_response(self, txn, response) -> None:  # type: ignore[no-untyped-def]
        self.layer.send_response(txn, response, 0.0)


def dispatch(data: bytes, registrar: Registrar | None = None) -> list[SipResponse]:
    """Parse ``data``, feed the layer and the engine (with ``registrar``: one that serves
    REGISTER); the responses the layer sends."""
    loop = asyncio.new_event_loop()
    try:
        sip = _Sip()
        # The source is a trunk: these cases are about parsing, not about who may call.
        carrier = Trunk("carrier", (ipaddress.ip_network("192.0.2.0/24"),))
        engine = CallEngine(loop, sip, _Admission(), None, open_media=None,  # type: ignore[arg-type]
                            launch=None, access=AccessPolicy([carrier]), registrar=registrar)  # type: ignore[arg-type]
        sip.layer.receive(parse_message(data), SOURCE, 0.0)
        while (event := sip.layer.next_event()) is not None:
            engine.handle_sip_event(event)
        out = [parse_message(d) for d, _ in sip.layer.datagrams_to_send()]
    finally:
        loop.close()
    assert all(isinstance(r, SipResponse) for r in out)
    return out  # type: ignore[return-value]


def error_for(data: bytes) -> tuple[SipParseError, SipResponse | None]:
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    answer = make_error_response(info.value, SOURCE)
    return info.value, (answer[0] if answer else None)


OPTIONS = (
    "OPTIONS sip:user@example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.200:5070;branch=z9hG4bK-t1;rport\r\n"
    "From: <sip:caller@example.net>;tag=1\r\n"
    "To: <sip:user@example.com>\r\n"
    "Call-ID: torture-1\r\n"
    "CSeq: 1 OPTIONS\r\n"
    "Max-Forwards: 70\r\n"
    "Content-Length: 0\r\n\r\n"
)


def test_via_with_spaces_around_slashes_is_valid():
    via = Via.parse("SIP / 2.0 / UDP 192.0.2.1:5062 ; branch = z9hG4bKx ; rport")
    assert (via.transport, via.host, via.port, via.branch) == ("UDP", "192.0.2.1", 5062, "z9hG4bKx")
    data = OPTIONS.replace("SIP/2.0/UDP", "SIP / 2.0 / UDP").encode()
    assert [r.status for r in dispatch(data)] == [200]


@pytest.mark.parametrize("method, status", [("FOO-BAR.x!", 501), ("SUBSCRIBE", 405), ("PUBLISH", 405)])
def test_unusual_method_tokens_get_501_or_405(method, status):
    data = OPTIONS.replace("OPTIONS", method).encode()
    assert [r.status for r in dispatch(data)] == [status]


def test_in_dialog_request_for_unknown_dialog_gets_481():
    data = OPTIONS.replace("OPTIONS", "INFO").replace("<sip:user@example.com>", "<sip:user@example.com>;tag=zz")
    assert [r.status for r in dispatch(data.encode())] == [481]


@pytest.mark.parametrize("data, status, why", [
    (OPTIONS.replace("Content-Length: 0", "Content-Length: zero"), 400, "Content-Length"),
    (OPTIONS.replace("Content-Length: 0", "Content-Length: ²"), 400, "Content-Length"),  # isdigit() but not int()
    (" " + OPTIONS, 400, "bad request line"),
    ("\r\n" + OPTIONS, 400, "bad header line 'OPTIONS"),  # the start line is the empty one
    (OPTIONS.replace("SIP/2.0\r\n", "SIP/3.0\r\n", 1), 505, "version"),
    (OPTIONS.replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE"), 400, "CSeq method"),
    (OPTIONS.replace("sip:user@example.com SIP", "sip:user@example.com:99999 SIP"), 400, "port"),
    (OPTIONS.replace("sip:user@example.com SIP", "sip:@example.com SIP"), 400, "empty user"),
    (OPTIONS.replace("sip:user@example.com SIP", "sip:user@exa!mple.com SIP"), 400, "bad host"),
    (OPTIONS.replace("sip:user@example.com SIP", "sip:user@<example.com> SIP"), 400, "URI"),
])
def test_observed_invalid_requests_get_their_error(data, status, why):
    error, response = error_for(data.encode())
    assert why in str(error) and response is not None and response.status == status
    assert response.get("via").startswith("SIP/2.0/UDP 192.0.2.200:5070;branch=z9hG4bK-t1;rport")


def test_bad_request_uri_gets_400_not_100_trying():
    data = OPTIONS.replace("OPTIONS", "INVITE").replace("sip:user@example.com SIP", "sip:user@host:0 SIP")
    with pytest.raises(SipParseError):  # refused before any transaction (and its 100) exists
        parse_message(data.encode())


@pytest.mark.parametrize("where", ["ruri", "to", "from"])
def test_user_part_past_the_int_digit_limit_is_just_a_user(where):
    digits = "9" * 5000  # more than sys.get_int_max_str_digits() (4300)
    data = OPTIONS
    if where == "ruri":
        data = data.replace("sip:user@example.com SIP", f"sip:{digits}@example.com SIP")
    elif where == "to":
        data = data.replace("To: <sip:user@", f"To: <sip:{digits}@")
    else:
        data = data.replace("From: <sip:caller@", f"From: <sip:{digits}@")
    assert [r.status for r in dispatch(data.encode())] == [200]


@pytest.mark.parametrize("old, new", [
    ("sip:user@example.com SIP", "sip:user@example.com:" + "9" * 5000 + " SIP"),
    ("CSeq: 1 OPTIONS", "CSeq: " + "9" * 5000 + " OPTIONS"),
    ("Content-Length: 0", "Content-Length: " + "9" * 5000),
    ("Max-Forwards: 70", "Max-Forwards: " + "9" * 5000),
    (";rport", ";rport=" + "9" * 5000),
    ("192.0.2.200:5070", "192.0.2.200:" + "9" * 5000),
])
def test_huge_numbers_are_parse_errors_not_exceptions(old, new):
    data = OPTIONS.replace(old, new)
    assert data != OPTIONS
    with pytest.raises(SipParseError):  # a ValueError from int() would be a bug
        parse_message(data.encode())


# ------------------------------------------------------------------ the transport's 400 path
class _Datagrams:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))


def _transport(monkeypatch) -> tuple[SipTransport, _Datagrams, list[bytes]]:  # type: ignore[no-untyped-def]
    loop = asyncio.new_event_loop()
    sip = SipTransport(loop)
    wire = _Datagrams()
    sip.transport = wire  # type: ignore[assignment]
    parsed: list[bytes] = []
    real = transport_mod.parse_message

    def counting(data: bytes):  # type: ignore[no-untyped-def]
        parsed.append(data)
        return real(data)

    monkeypatch.setattr(transport_mod, "parse_message", counting)
    return sip, wire, parsed


@pytest.mark.parametrize("data, status", [
    (OPTIONS.replace("Content-Length: 0", "Content-Length: x"), 400),
    (OPTIONS.replace("SIP/2.0\r\n", "SIP/7.0\r\n", 1), 505),
    (OPTIONS.replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE"), 400),
    (OPTIONS.replace("From: <sip:caller@example.net>", 'From: "unclosed <sip:caller@example.net>'), 400),
])
def test_transport_answers_once_without_parsing_again(monkeypatch, data, status):
    sip, wire, parsed = _transport(monkeypatch)
    try:
        sip.datagram_received(data.encode(), SOURCE)
    finally:
        sip.loop.close()
    assert len(parsed) == 1  # the 400 came from the first parse's leftovers
    assert len(wire.sent) == 1
    sent, addr = wire.sent[0]
    assert sent.startswith(f"SIP/2.0 {status} ".encode())
    assert addr == SOURCE  # RFC 3581 rport: the source port; §18.2.2 received: the source IP
    assert f";received={SOURCE[0]}".encode() in sent


def test_transport_drops_bad_ack_and_bad_response(monkeypatch):
    sip, wire, _ = _transport(monkeypatch)
    try:
        sip.datagram_received(b"SIP/2.0 4294967301 better not break the receiver\r\n" + OPTIONS.encode().split(b"\r\n", 1)[1],
                              SOURCE)
        sip.datagram_received(OPTIONS.replace("OPTIONS", "ACK").replace("Content-Length: 0", "Content-Length: x")
                              .encode(), SOURCE)
    finally:
        sip.loop.close()
    assert wire.sent == [] and sip.bad_datagrams == 2


def test_an_underscore_in_a_host_name_is_accepted() -> None:
    # Not in RFC 3261's hostname grammar, but common in container and internal host names.
    from switch.sip.uri import SipUri

    assert SipUri.parse("sip:gw@sip_gw.internal:5060").host == "sip_gw.internal"
