"""Bad input, shutdown and load: the switch survives and keeps serving."""

from __future__ import annotations

import os
import re
import time

import pytest

from .harness import SipSocket, ack_for, options_ping, sdp_offer, sip_request, status_of

pytestmark = pytest.mark.e2e


def test_garbage_datagrams_do_not_hurt(switch, rtp_sink, sipp):
    sw = switch("short_greeting")
    target = sw.sip_addr
    with SipSocket() as s:
        good = sip_request("INVITE", target, s.addr, body=sdp_offer(9))

        # 1. random bytes, an empty-ish datagram, a truncated start line: no crash.
        for junk in (os.urandom(300), b"\r\n\r\n", b"\x00" * 40, good[:25]):
            s.send(junk, target)
        # 2. headers cut in the middle (no blank line): nothing can be answered reliably.
        s.send(good[: good.index(b"Call-ID")], target)
        # 3. an INVITE without Via: no response can be routed (RFC 3261 §18.2.2), just drop.
        s.send(sip_request("INVITE", target, s.addr, body=sdp_offer(9), omit=["Via"]), target)
        s.recv_all(0.5, until_final=False)  # whatever came back, drain it

        # 4. parseable but bad: the request says it has a longer body than it carries
        #    (RFC 3261 §18.3: SHOULD answer 400) ...
        cl = re.sub(rb"Content-Length: \d+", b"Content-Length: 4000",
                    sip_request("INVITE", target, s.addr, body=sdp_offer(9)))  # fmt: skip
        s.send(cl, target)
        got_cl = [status_of(d) for d in s.recv_all(1.0)]
        # ... and one without a Call-ID (a mandatory header: RFC 3261 §8.1.1).
        s.send(sip_request("INVITE", target, s.addr, body=sdp_offer(9), omit=["Call-ID"]), target)
        got_cid = [status_of(d) for d in s.recv_all(1.0)]

    assert sw.running(), "the switch died on garbage\n" + sw.log_tail(40)
    assert options_ping(sw.sip_addr, 1.0) == 200
    # A normal call still works.
    res = sipp("uac_pcmu_wait_bye", sw, keys={"rtpport": rtp_sink.port}, timeout=10)
    assert res.ok, res.describe()
    assert rtp_sink.wait_for(10, timeout=2)
    assert 400 in got_cl, f"Content-Length beyond the datagram: expected 400, got {got_cl}"
    assert 400 in got_cid, f"INVITE without Call-ID: expected 400, got {got_cid}"


def test_sigterm_hangs_up_running_calls_refuses_new_ones_and_exits_0(switch, rtp_sink, sipp_bg):
    sw = switch("hold_then_continue")
    # The caller answers the switch's BYE 400 ms late, so the drain lasts that long.
    call = sipp_bg("uac_wait_bye_slow_ok", sw, keys={"rtpport": rtp_sink.port}, pause_ms=400,
                   timeout=15)  # fmt: skip
    assert rtp_sink.wait_for(10, timeout=5), "the call was not answered\n" + sw.log_tail(30)
    with SipSocket() as s:
        sw.signal()
        t0 = time.monotonic()
        time.sleep(0.05)
        inv = sip_request("INVITE", sw.sip_addr, s.addr, body=sdp_offer(9))
        s.send(inv, sw.sip_addr)
        replies = s.recv_all(1.0)
        codes = [status_of(d) for d in replies]
        if codes and codes[-1] is not None and codes[-1] >= 300:
            s.send(ack_for(inv, replies[-1]), sw.sip_addr)
    res = call.wait()
    rc = sw.wait(10)
    took = time.monotonic() - t0
    assert res.ok, "the running call did not get a BYE\n" + res.describe()
    assert res.received("BYE"), res.describe()
    assert rc == 0, f"exit code {rc} after SIGTERM\n" + sw.log_tail(40)
    assert took < 10
    assert 503 in codes, f"a new INVITE while draining: expected 503, got {codes}"
    assert not rtp_sink.snapshot(since=res.received("BYE")[0].time + 0.1), "RTP after BYE"


def test_load_50_calls_at_10_per_second(switch, rtp_sink, sipp):
    sw = switch("short_greeting")
    res = sipp("uac_pcmu_wait_bye", sw, keys={"rtpport": rtp_sink.port}, calls=50, rate=10,
               timeout=40)  # fmt: skip
    assert res.ok and res.successful == 50 and res.failed == 0, res.describe(3000)
    rtp_sink.wait_quiet(0.3)
    assert len(rtp_sink.ssrcs(0)) == 50, f"{len(rtp_sink.ssrcs(0))} RTP streams for 50 calls"
    assert rtp_sink.count(0) >= 50 * 0.9 * 0.5 / 0.02, rtp_sink.count(0)
