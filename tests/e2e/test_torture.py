"""The failures seen sending RFC 4475's torture messages, against the real switch over
UDP: each gets its final response (RFC 3261 §8.2, §21) and the switch keeps serving."""

from __future__ import annotations

import pytest

from .harness import SipSocket, sdp_offer, sip_request, status_of

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
