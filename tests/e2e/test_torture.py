"""The failures seen sending RFC 4475's torture messages, against the real switch over
UDP: each gets its final response (RFC 3261 §8.2, §21) and the switch keeps serving."""

from __future__ import annotations

import socket

import pytest

from .harness import LOCALHOST, SipSocket, ack_for, sdp_offer, sip_request, start_bridge_switch, status_of, stop_clean

pytestmark = pytest.mark.e2e


def test_observed_failures_get_answers(switch):
    sw = switch("greeting")
    target = sw.sip_addr
    with SipSocket() as s:
        options = sip_request("OPTIONS", target, s.addr)
        cases = [
            (options.replace(b"SIP/2.0/UDP", b"SIP / 2.0 / UDP", 1), [200]),   # SLASH = SWS "/" SWS
            (sip_request("FOO.BAR-x!", target, s.addr), [501]),               # unknown legal method
            (sip_request("SUBSCRIBE", target, s.addr), [405]),
            (sip_request("INFO", target, s.addr).replace(b">\r\nCall-ID", b">;tag=nosuch\r\nCall-ID", 1), [481]),
            (options.replace(b"Content-Length: 0", b"Content-Length: zero"), [400]),
            (b" " + options, [400]),                                          # leading whitespace
            (options.replace(b" SIP/2.0\r\n", b" SIP/7.0\r\n", 1), [505]),    # RFC 3261 §21.5.6
            (options.replace(b" OPTIONS\r\n", b" INVITE\r\n", 1), [400]),    # CSeq method mismatch
            (options.replace(b"OPTIONS sip:", b"OPTIONS <sip:", 1).replace(b" SIP/2.0\r\n", b"> SIP/2.0\r\n", 1),
             [400]),                                                          # Request-URI in <>
            (options.replace(b"sip:service@", b"sip:" + b"9" * 5000 + b"@", 1), [200]),  # > 4300 digits
        ]
        for data, want in cases:
            s.send(data, target)
            got = [status_of(d) for d in s.recv_all(2.0)]
            assert got == want, (data[:80], got, sw.log_tail(20))
        # A valid INVITE still gets 100 and a final (the greeting answers, then hangs up).
        s.send(sip_request("INVITE", target, s.addr, body=sdp_offer(9)), target)
        got = [status_of(d) for d in s.recv_all(5.0)]
        assert got[0] == 100 and any(c is not None and c >= 200 for c in got), got
    assert "Unhandled exception" not in sw.log_text() and "Traceback" not in sw.log_text()


def test_max_forwards_0_is_answered_by_the_app_but_goes_no_further(switch, bridge_app):
    """RFC 4475 §3.3.11: the switch is the INVITE's endpoint, so Max-Forwards: 0 is served
    (the greeting answers it); the bridge app would send it on, which the hop count forbids
    (RFC 7332 §3): 483, and the gateway sees nothing."""
    sw = switch("greeting")
    with SipSocket() as s:
        s.send(sip_request("INVITE", sw.sip_addr, s.addr, body=sdp_offer(9)).replace(
            b"Max-Forwards: 70", b"Max-Forwards: 0"), sw.sip_addr)
        got = [status_of(d) for d in s.recv_all(5.0)]
    assert got[:1] == [100] and got[-1] == 200, got
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as gateway, SipSocket() as s:
        gateway.bind((LOCALHOST, 0))
        bridged = start_bridge_switch(switch, bridge_app(), gateway.getsockname()[1])
        invite = sip_request("INVITE", bridged.sip_addr, s.addr, body=sdp_offer(9)).replace(
            b"Max-Forwards: 70", b"Max-Forwards: 0")
        s.send(invite, bridged.sip_addr)
        answers = s.recv_all(5.0)
        assert [status_of(d) for d in answers][-1] == 483, [d[:40] for d in answers]
        s.send(ack_for(invite, answers[-1]), bridged.sip_addr)
        gateway.setblocking(False)
        with pytest.raises(BlockingIOError):
            gateway.recv(65535)  # no INVITE went on
    stop_clean(bridged)
