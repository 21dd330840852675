"""Property tests of the SIP parser (issue 10): whatever a datagram holds, the sans-I/O layer
either gets a fully valid message or a SipParseError, and then answers or drops it on
purpose; valid messages survive parse -> bytes -> parse.

The seeds are RFC 4475's valid messages and a few ordinary ones; the mutations are what a
fuzzer sends: flipped bytes, truncations, duplicated header lines, huge values, spliced
separators, random bytes. ``SIP_FUZZ=long`` runs a hundred times more examples (minutes;
see README), the default profile keeps CI to a few seconds.
"""

from __future__ import annotations

import os
import tempfile

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from switch.sip.events import AckReceived, RequestReceived
from switch.sip.message import (
    CSeq, SipParseError, SipRequest, SipResponse, Via, make_error_response, make_response, parse_message,
)
from switch.sip.uri import NameAddr
from switch.sip.transaction import TransactionLayer
from switch.sip.uas import uas_refusal
from test_rfc4475 import EXPECTED as RFC4475, fixture

# Hypothesis keeps caches in ./.hypothesis; out of the work tree (nothing to commit).
set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), "softswitch-hypothesis"))
settings.register_profile("ci", max_examples=400, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=40_000, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
PROFILE = "long" if os.environ.get("SIP_FUZZ") == "long" else "ci"

SOURCE = ("192.0.2.200", 5070)

ORDINARY = [
    b"INVITE sip:1000@192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK-1;rport\r\n"
    b"Max-Forwards: 70\r\nFrom: \"Alice\" <sip:alice@example.com>;tag=a1\r\nTo: <sip:1000@192.0.2.10>\r\n"
    b"Call-ID: f1@192.0.2.20\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@192.0.2.20:5060>\r\n"
    b"Content-Type: application/sdp\r\nContent-Length: 52\r\n\r\n"
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\n",
    b"BYE sip:alice@[2001:db8::20]:5062 SIP/2.0\r\nVia: SIP/2.0/TCP [2001:db8::10];branch=z9hG4bK-2\r\n"
    b"From: <sip:1000@example.com>;tag=b2\r\nTo: <sip:alice@example.com>;tag=a1\r\nCall-ID: f1@192.0.2.20\r\n"
    b"CSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
    b"REGISTER sip:example.com SIP/2.0\r\nv: SIP/2.0/UDP phone.example.com:5062;branch=z9hG4bK-3\r\n"
    b"f: <sip:alice@example.com>;tag=r3\r\nt: <sip:alice@example.com>\r\ni: reg-3\r\nCSeq: 7 REGISTER\r\n"
    b"m: <sip:alice@192.0.2.30:5062;transport=udp>;expires=600\r\nExpires: 600\r\nl: 0\r\n\r\n",
    b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK-4;received=192.0.2.99\r\n"
    b"From: <sip:a@example.com>;tag=x\r\nTo: <sip:b@example.com>;tag=y\r\nCall-ID: r4\r\nCSeq: 1 INVITE\r\n"
    b"Content-Length: 0\r\n\r\n",
]
SEEDS = ORDINARY + [fixture(name) for name, (_, verdict) in sorted(RFC4475.items())
                    if verdict in ("request", "response")]

# Bytes that mean something to the parser, spliced in more often than chance would.
SPECIAL = [b"\x00", b"\r", b"\n", b"\r\n", b"\r\n\r\n", b" ", b"\t", b":", b";", b",", b"<", b">",
           b'"', b"\\", b"[", b"]", b"%", b"=", b"@", b"?", b"\xff", b"\xc3", b"SIP/2.0", b"z9hG4bK"]
HUGE = [b"9" * 5000, b"1" * 20, b"-1", b"x" * 70000 + b" ", b"%" * 3000, b"[" * 1000]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "duplicate", "huge", "splice", "delete"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[at:]
        elif kind == "duplicate":
            lines = bytes(data).split(b"\r\n")
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(i, lines[i])
            data = bytearray(b"\r\n".join(lines))
        elif kind == "huge":
            data[at:at] = draw(st.sampled_from(HUGE))
        elif kind == "splice":
            data[at:at] = draw(st.sampled_from(SPECIAL))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 40))]
    return bytes(data)


def check_valid(msg: SipRequest | SipResponse) -> None:
    """What the layers above rely on: every parsed view works, and what we would send
    back parses."""
    msg.via  # noqa: B018
    msg.from_  # noqa: B018
    msg.to  # noqa: B018
    assert msg.cseq.number < 2**31 and msg.call_id
    if isinstance(msg, SipRequest):
        assert msg.cseq.method == msg.method
        if msg.uri[:4].lower() in ("sip:", "sips"):
            msg.request_uri  # noqa: B018
        uas_refusal(msg)
        reply = parse_message(bytes(make_response(msg, 200, to_tag="t1")))
        assert isinstance(reply, SipResponse) and reply.call_id == msg.call_id
    again = parse_message(bytes(msg))
    assert type(again) is type(msg) and again.body == msg.body


def copied_headers_valid(headers: dict[str, list[str]]) -> bool:
    """The request's From, To, Call-ID and CSeq, which a 400 copies (RFC 3261 §8.2.6), are
    present once each and parse."""
    try:
        (from_,), (to,), (call_id,), (cseq,) = (headers.get(n, []) for n in ("from", "to", "call-id", "cseq"))
        NameAddr.parse(from_), NameAddr.parse(to), CSeq.parse(cseq)
        Via.parse(headers["via"][0])
    except (ValueError, KeyError):  # UriError and SipParseError are ValueErrors
        return False
    return bool(call_id) and " " not in call_id


def through_the_layer(data: bytes) -> str:
    """One datagram as SipTransport handles it; what became of it. Only SipParseError may
    come out of the parser; anything else escapes and fails the test."""
    try:
        msg = parse_message(data)
    except SipParseError as exc:
        answer = make_error_response(exc, SOURCE)
        if answer is None:
            # Dropped only where nothing can be routed: a response, an ACK, no Via or one
            # without a sent-by (RFC 3261 §18.2.2); the transport logs the drop.
            vias = (exc.headers or {}).get("via")
            if exc.method not in (None, "ACK") and vias:
                with pytest.raises(SipParseError):  # a request with a good Via is answered
                    Via.parse(vias[0])
            return "dropped"
        response, dest = answer
        assert response.status == exc.status in (400, 505) and dest[0] == SOURCE[0]
        wire = bytes(response)
        assert wire.startswith(f"SIP/2.0 {exc.status} ".encode()) and wire.count(b"\r\n\r\n") >= 1
        if copied_headers_valid(exc.headers or {}):
            # What we add (status line, reason, stamped Via, Content-Length) never breaks
            # the response: when what we copied was sound, the peer can parse it.
            again = parse_message(wire)
            assert isinstance(again, SipResponse) and again.status == exc.status
        return "answered"
    check_valid(msg)
    layer = TransactionLayer()
    layer.receive(msg, SOURCE, 0.0)
    events = []
    while (event := layer.next_event()) is not None:
        events.append(event)
    if isinstance(msg, SipRequest):
        # Every request reaches the TU, which owes it a final response (ACKs get none).
        assert len(events) == 1
        assert isinstance(events[0], AckReceived if msg.method == "ACK" else RequestReceived)
        return "request"
    assert events == []  # a response no client transaction of ours waits for: a stray
    return "response"


@settings(settings.get_profile(PROFILE))
@given(mutated())
def test_mutated_messages_parse_fully_or_raise_sip_parse_error(data):
    event(through_the_layer(data))  # --hypothesis-show-statistics: how many parsed


@settings(settings.get_profile(PROFILE))
@given(st.binary(max_size=2000))
def test_random_bytes(data):
    event(through_the_layer(data))


@settings(settings.get_profile(PROFILE))
@given(st.sampled_from(SEEDS), st.lists(st.sampled_from([b"\r\n", b" ", b"\t"]), max_size=3))
def test_valid_messages_round_trip(seed, noise):
    msg = parse_message(seed)
    again = parse_message(bytes(msg))
    assert bytes(again) == bytes(msg)  # serialising is a fixed point after one pass
    assert {k: [v.strip() for v in vs] for k, vs in again.headers.items() if k != "content-length"} == {
        k: [v.strip() for v in vs] for k, vs in msg.headers.items() if k != "content-length"}
    if isinstance(msg, SipRequest):
        assert isinstance(again, SipRequest) and (again.method, again.uri) == (msg.method, msg.uri)
    else:
        assert isinstance(again, SipResponse) and (again.status, again.reason) == (msg.status, msg.reason)
    assert again.body == msg.body
    # Leading CRLFs (keepalives, RFC 5626) aside, LWS before the start line is an error.
    if noise:
        try:
            parse_message(b"".join(noise) + seed)
        except SipParseError:
            pass


# Hand-picked cases the strategies found worth keeping (each was once a crash or a wrong
# answer): they run on every pass whatever the profile draws.
def test_regressions():
    for data in [
        b"OPTIONS sip:a@[::1]junk SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n\r\n",
        b"OPTIONS sip:a@h SIP/2.0\r\nVia: SIP/2.0/UDP [::1\r\nFrom: <sip:a@h>;tag=1\r\n\r\n",
    ]:
        assert through_the_layer(data) in ("answered", "dropped")
