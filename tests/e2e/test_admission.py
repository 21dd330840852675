"""Overload is shed, not absorbed: past --max-calls a new INVITE gets 503 + Retry-After
at once, before any task or media exists, and the calls already up are unharmed."""

import time

import pytest

from .harness import SipSocket, ack_for, sdp_offer, sip_request, status_of

pytestmark = pytest.mark.e2e


def _invite(sock: SipSocket, sw, call_id: str) -> tuple[bytes, list[bytes]]:
    inv = sip_request("INVITE", sw.sip_addr, sock.addr, call_id=call_id, body=sdp_offer(9))
    sock.send(inv, sw.sip_addr)
    return inv, sock.recv_all(1.0, until_final=False)


def test_call_limit_answers_503_with_retry_after(switch):
    sw = switch("provision_then_wait", extra_args=["--max-calls", "1"])
    with SipSocket() as first, SipSocket() as second:
        inv1, replies1 = _invite(first, sw, "first-call")
        assert 180 in [status_of(r) for r in replies1], "the first call should ring"
        inv2, replies2 = _invite(second, sw, "second-call")
        finals = [r for r in replies2 if (status_of(r) or 0) >= 200]
        assert finals and status_of(finals[0]) == 503, [status_of(r) for r in replies2]
        assert b"Retry-After:" in finals[0], finals[0].decode(errors="replace")
        second.send(ack_for(inv2, finals[0]), sw.sip_addr)
        # the first call is still up: CANCEL it and expect 200 + 487 as usual
        cancel = inv1.replace(b"INVITE sip:", b"CANCEL sip:", 1).replace(b" INVITE\r\n", b" CANCEL\r\n")
        cancel = cancel.split(b"\r\nContent-Type")[0] + b"\r\nContent-Length: 0\r\n\r\n"
        first.send(cancel, sw.sip_addr)
        codes = [status_of(r) for r in first.recv_all(1.0, until_final=False)]
        assert 200 in codes and 487 in codes, codes
    time.sleep(0.2)
    assert "call limit 1 reached" in sw.log_text(), sw.log_tail(20)
