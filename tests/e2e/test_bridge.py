"""Back-to-back calls through the seed's bridge app (js_apps/bridge): SIPp caller ->
switch -> SIPp callee, both on 127.0.0.1, with an RtpSink on each side standing in for
the two phones' media ports, so a test sends known audio or digits from one side and
checks what arrived at the other.

The switch runs with `--gateway sip:127.0.0.1:UAS` (the caller dials the switch, the To
points at the switch, so the call goes to the gateway) and `--sip-t1 0.05` (Timer B 3.2 s).
After each call the switch must hold no leg and no task: it is stopped and its
"stopping: N live calls, M tasks" line must say 0 and 0.
"""

from __future__ import annotations

import re
import socket
import struct
import threading
import time
from collections.abc import Callable

import pytest

from .harness import (
    ANSWER,
    LOCALHOST,
    OFFER,
    RtpSink,
    SippResult,
    dbfs,
    free_rtp_range,
    free_udp_port,
    g711_decode,
    g711_encode,
    media_dest,
    start_bridge_switch,
    start_uas,
    stop_clean,
    tone,
    voiced_audio,
)

pytestmark = pytest.mark.e2e

# --------------------------------------------------------------------------- helpers


def both(*results: SippResult) -> str:
    return "\n\n".join(r.describe() for r in results)


def first(res: SippResult, direction: str, method: str | None = None,
          status: int | None = None) -> float:  # fmt: skip
    """Wall time of the first message sent/received with that method and status."""
    for m in res.messages():
        if m.direction == direction and (method is None or m.method == method) and m.status == status:
            return m.time
    raise AssertionError(f"no {direction} {method} {status}\n" + res.describe())


def marked_payloads(n: int, tag: int) -> list[bytes]:
    """n distinct 160-byte payloads (any byte is a valid G.711 sample): frame i carries
    (tag, i) in its first 4 bytes, so the far side can tell which frames arrived."""
    return [struct.pack("!HH", tag, i) + bytes([(7 * i + tag) % 251 + 2]) * 156 for i in range(n)]


def frames(encoded: bytes) -> list[bytes]:
    return [encoded[i:i + 160] for i in range(0, len(encoded) - 159, 160)]


def run_threads(*fns: Callable[[], object]) -> None:
    ts = [threading.Thread(target=f) for f in fns]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)


# --------------------------------------------------------------------------- answered calls


def test_bridged_call_relays_ringing_answer_media_and_the_callers_bye(
    switch, bridge_app, sipp_bg, rtp_sink: RtpSink, callee_sink: RtpSink
):
    uas = start_uas(sipp_bg, "uas_ring_answer", rtpport=callee_sink.port, pause_ms=500)
    sw = start_bridge_switch(switch, bridge_app(), uas.sip_port)
    uac = sipp_bg("uac_hangup", sw, keys={"rtpport": rtp_sink.port}, pause_ms=3500, timeout=15)

    to_callee, offer_pts = media_dest(uas, OFFER)
    to_caller, answer_pts = media_dest(uac, ANSWER)
    lo, hi = sw.rtp_range
    assert lo <= to_callee[1] <= hi and lo <= to_caller[1] <= hi, (to_callee, to_caller, sw.rtp_range)
    assert to_callee[1] != to_caller[1], "one RTP port per leg"
    assert 0 in offer_pts and answer_pts[0] == 0, (offer_pts, answer_pts)

    up, down = marked_payloads(75, 1), marked_payloads(75, 2)  # 1.5 s each way
    run_threads(lambda: rtp_sink.send_frames(to_caller, up, 0),
                lambda: callee_sink.send_frames(to_callee, down, 0))  # fmt: skip
    rc, rs = uac.wait(), uas.wait()
    assert rc.ok and rs.ok, both(rc, rs)

    # Signalling: the switch rang the callee at the gateway, 180 and 200 reached the
    # caller, the caller's 200 came after the callee's, the caller's BYE reached the callee.
    invite = rs.received("INVITE")[0]
    assert re.match(rf"INVITE sip:service@{LOCALHOST}:{uas.sip_port}\b", invite.first_line), invite.text
    assert rc.statuses().count(180) == 1 and rc.final_status() == 200, \
        f"one 180 (ProvisionCall's; the callee's adds nothing), then 200: {rc.statuses()}"  # fmt: skip
    assert first(rc, "received", "INVITE", 180) < first(rc, "received", "INVITE", 200)
    assert first(rs, "sent", "INVITE", 200) <= first(rc, "received", "INVITE", 200) + 0.002, \
        "the caller was answered before the callee answered"
    assert first(rc, "received", "INVITE", 200) - first(rc, "sent", "INVITE") >= 0.45, \
        "answered before the callee's 0.5 s of ringing"
    assert rs.received("BYE") and rc.received("BYE", 200), both(rc, rs)

    # Media, both ways: same codec, so every payload passes through unchanged.
    for sink, sent, tag, name in ((callee_sink, up, 1, "caller->callee"), (rtp_sink, down, 2, "callee->caller")):
        sink.wait_quiet(0.3, timeout=3)
        got = [p.payload for p in sink.snapshot(0) if p.payload[:2] == struct.pack("!H", tag)]
        assert len(got) >= 0.95 * len(sent), f"{name}: {len(got)}/{len(sent)} of our frames arrived"
        assert set(got) <= set(sent), f"{name}: payloads were altered"
        assert got == sorted(got, key=lambda b: struct.unpack("!H", b[2:4])[0]), f"{name}: reordered"
        pkts = sink.snapshot(0)
        assert len(sink.ssrcs(0)) == 1 and RtpSink.seq_gaps(pkts) == [], (name, sink.ssrcs(0), RtpSink.seq_gaps(pkts)[:5])
        assert sink.payload_types() <= {0, 13}, (name, sink.payload_types())
    assert callee_sink.sources() == {to_callee}, "callee's RTP must come from the port in the offer"
    assert rtp_sink.sources() == {to_caller}, "caller's RTP must come from the port in the answer"
    stop_clean(sw)


def test_callee_bye_reaches_the_caller(switch, bridge_app, sipp_bg, rtp_sink: RtpSink):
    uas = start_uas(sipp_bg, "uas_answer_bye", pause_ms=1000)
    sw = start_bridge_switch(switch, bridge_app(), uas.sip_port)
    uac = sipp_bg("uac_pcmu_wait_bye", sw, keys={"rtpport": rtp_sink.port}, timeout=10)
    rc, rs = uac.wait(), uas.wait()
    assert rc.ok and rs.ok, both(rc, rs)
    assert rc.final_status() == 200 and rc.received("BYE"), rc.describe()
    assert rs.received("BYE", 200), rs.describe()
    stop_clean(sw)


def test_early_media_183_is_relayed_to_the_caller(
    switch, bridge_app, sipp_bg, rtp_sink: RtpSink, callee_sink: RtpSink
):
    uas = start_uas(sipp_bg, "uas_early_media", rtpport=callee_sink.port, pause_ms=2500)
    sw = start_bridge_switch(switch, bridge_app(), uas.sip_port)
    uac = sipp_bg("uac_hangup", sw, keys={"rtpport": rtp_sink.port}, pause_ms=500, timeout=15)
    to_callee, _ = media_dest(uas, OFFER)
    early = marked_payloads(50, 3)
    callee_sink.send_frames(to_callee, early, 0)  # 1 s, while the callee is still at 183
    rc, rs = uac.wait(), uas.wait()
    assert rc.ok and rs.ok, both(rc, rs)
    progress = rc.received("INVITE", 183)
    assert progress and "m=audio" in progress[0].body, "no 183 with SDP reached the caller\n" + rc.describe()
    answered = first(rc, "received", "INVITE", 200)
    got = [p for p in rtp_sink.snapshot(0) if p.payload in set(early)]
    assert len(got) >= 0.9 * len(early), f"{len(got)}/{len(early)} early-media frames reached the caller"
    assert all(p.time < answered for p in got), "early media arrived only after the answer"
    stop_clean(sw)


# --------------------------------------------------------------------------- failures


def test_callee_busy_486_is_passed_through(switch, bridge_app, sipp_bg, sipp, rtp_sink: RtpSink):
    uas = start_uas(sipp_bg, "uas_reject_486")
    sw = start_bridge_switch(switch, bridge_app(), uas.sip_port)
    rc = sipp("uac_expect_final", sw, keys={"rtpport": rtp_sink.port}, timeout=10)
    rs = uas.wait()
    assert rc.ok and rs.ok, both(rc, rs)
    assert rc.final_status() == 486, rc.statuses()
    assert rs.received("ACK"), "the switch must ACK the callee's 486\n" + rs.describe()
    stop_clean(sw)


def test_callee_never_answers_the_app_gives_up_cancels_and_the_caller_gets_480(
    switch, bridge_app, sipp_bg, sipp, rtp_sink: RtpSink
):
    uas = start_uas(sipp_bg, "uas_ring_forever")
    sw = start_bridge_switch(switch, bridge_app(timeout_s=2), uas.sip_port)
    t0 = time.monotonic()
    rc = sipp("uac_expect_final", sw, keys={"rtpport": rtp_sink.port}, timeout=15)
    took = time.monotonic() - t0
    rs = uas.wait()
    assert rc.ok and rs.ok, both(rc, rs)
    assert rc.final_status() == 480, rc.statuses()
    assert 1.8 <= took <= 5, f"final after {took:.1f}s; the egress waits 2 s"
    assert rs.received("CANCEL") and rs.received("ACK"), "callee not CANCELled\n" + rs.describe()
    stop_clean(sw)


def test_unreachable_callee_times_out_with_408(switch, bridge_app, sipp, rtp_sink: RtpSink):
    # A socket that never answers: the switch's INVITE client transaction retransmits
    # (Timer A) until Timer B = 64*T1 = 3.2 s with --sip-t1 0.05.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole:
        hole.bind((LOCALHOST, 0))
        sw = start_bridge_switch(switch, bridge_app(), hole.getsockname()[1])
        t0 = time.monotonic()
        rc = sipp("uac_expect_final", sw, keys={"rtpport": rtp_sink.port}, timeout=15)
        took = time.monotonic() - t0
        hole.setblocking(False)
        invites = []
        while True:
            try:
                invites.append(hole.recv(65535))
            except BlockingIOError:
                break
    assert rc.ok, rc.describe()
    assert rc.final_status() == 408, rc.statuses()
    assert 3.0 <= took <= 6.5, f"408 after {took:.1f}s, Timer B is 3.2 s"
    assert all(d.startswith(b"INVITE ") for d in invites) and len(invites) >= 5, \
        f"{len(invites)} INVITE (re)transmissions reached the callee"  # fmt: skip
    branches = {re.search(rb"branch=([^;\r\n]+)", d).group(1) for d in invites}  # type: ignore[union-attr]
    assert len(branches) == 1, f"retransmissions must reuse the branch: {branches}"
    stop_clean(sw)


def test_caller_cancel_while_the_callee_rings_cancels_the_callee(
    switch, bridge_app, sipp_bg, sipp, rtp_sink: RtpSink
):
    uas = start_uas(sipp_bg, "uas_ring_forever")
    sw = start_bridge_switch(switch, bridge_app(), uas.sip_port)
    rc = sipp("uac_cancel", sw, keys={"rtpport": rtp_sink.port}, pause_ms=1000, timeout=10)
    rs = uas.wait()
    assert rc.ok and rs.ok, both(rc, rs)
    assert rc.final_status() == 487, rc.statuses()
    assert rs.received("CANCEL"), rs.describe()
    stop_clean(sw)


def test_no_rtp_port_left_for_the_caller_when_the_callee_answers(switch, bridge_app, sipp_bg):
    # Ports for three legs; admission wants two free per new call, so two calls 20 ms
    # apart are both admitted and both outbound legs get ports, then the first answer
    # takes the last one: answering the second caller (whose media opens at answer)
    # fails. That caller must get a final error, its answered callee a BYE, and
    # nothing may be left behind.
    uas = start_uas(sipp_bg, "uas_ring_answer", calls=2, pause_ms=300, timeout=10)
    sw = start_bridge_switch(switch, bridge_app(), uas.sip_port, rtp_range=free_rtp_range(6))
    rc = sipp_bg("uac_hangup", sw, calls=2, rate=50, pause_ms=500, timeout=10).wait()
    rs = uas.wait()
    finals = sorted(m.status for m in rc.received("INVITE") if (m.status or 0) >= 200)
    assert rc.created == 2 and rc.successful == 1, both(rc, rs)  # uac_hangup fails on an error
    # (any error will do here; 500/503 would say "our fault" better than 480)
    assert finals[0] == 200 and 400 <= finals[1] < 700, f"finals {finals}\n" + both(rc, rs)
    assert len(rs.received("BYE")) == 2 and rs.successful == 2, "both answered callees need a BYE\n" + rs.describe()
    stop_clean(sw)


# --------------------------------------------------------------------------- media


def test_pcmu_caller_to_pcma_callee_is_transcoded_both_ways(
    switch, bridge_app, sipp_bg, rtp_sink: RtpSink, callee_sink: RtpSink
):
    uas = start_uas(sipp_bg, "uas_pcma_answer", rtpport=callee_sink.port, pause_ms=200)
    sw = start_bridge_switch(switch, bridge_app(), uas.sip_port)
    uac = sipp_bg("uac_hangup", sw, keys={"rtpport": rtp_sink.port}, pause_ms=3000, timeout=15)
    to_callee, offer_pts = media_dest(uas, OFFER)
    to_caller, answer_pts = media_dest(uac, ANSWER)
    assert 8 in offer_pts, f"the switch must offer PCMA to the callee: {offer_pts}"
    assert answer_pts[0] == 0, f"the caller offered PCMU only: {answer_pts}"

    up = g711_encode(tone(1.5, 1000, 0.3), 0)  # the caller speaks u-law
    down = g711_encode(tone(1.5, 600, 0.1), 8)  # the callee speaks A-law
    run_threads(lambda: rtp_sink.send_frames(to_caller, frames(up), 0),
                lambda: callee_sink.send_frames(to_callee, frames(down), 8))  # fmt: skip
    rc, rs = uac.wait(), uas.wait()
    assert rc.ok and rs.ok, both(rc, rs)

    for sink, sent, pt_in, pt_out, name in ((callee_sink, up, 0, 8, "caller->callee"),
                                            (rtp_sink, down, 8, 0, "callee->caller")):  # fmt: skip
        sink.wait_quiet(0.3, timeout=3)
        assert pt_out in sink.payload_types() and pt_in not in sink.payload_types(), \
            f"{name}: payload types {sink.payload_types()}, expected {pt_out}"  # fmt: skip
        heard = voiced_audio(sink, pt_out)
        sent_level = dbfs(g711_decode(sent, pt_in))
        assert len(heard) >= 0.9 * len(sent), f"{name}: {len(heard)} of {len(sent)} samples arrived"
        assert abs(dbfs(heard) - sent_level) <= 1.0, \
            f"{name}: {dbfs(heard):.2f} dBFS arrived, {sent_level:.2f} dBFS sent"  # fmt: skip
    stop_clean(sw)


def test_rfc4733_digits_from_the_caller_reach_the_callee(
    switch, bridge_app, sipp_bg, rtp_sink: RtpSink, callee_sink: RtpSink
):
    uas = start_uas(sipp_bg, "uas_ring_answer", rtpport=callee_sink.port, pause_ms=200)
    sw = start_bridge_switch(switch, bridge_app(), uas.sip_port)
    uac = sipp_bg("uac_hangup", sw, keys={"rtpport": rtp_sink.port}, pause_ms=3000, timeout=15)
    media_dest(uas, OFFER)
    to_caller, _ = media_dest(uac, ANSWER)
    offer = uas.wait_log(r"te=a=rtpmap:(\d+) telephone-event")[0]
    callee_te = 101  # uas_ring_answer answers telephone-event as 101
    assert offer.group(1) == "101", f"switch offered telephone-event as {offer.group(1)}"
    rtp_sink.send_stream(to_caller, 0.2, 0)  # a little audio first, as phones do
    rtp_sink.send_dtmf(to_caller, "159#", pt=101)
    rc, rs = uac.wait(), uas.wait()
    assert rc.ok and rs.ok, both(rc, rs)
    callee_sink.wait_quiet(0.3, timeout=3)
    assert callee_sink.dtmf_digits(callee_te) == "159#", \
        f"digits at the callee: {callee_sink.dtmf_digits(callee_te)!r}; PTs {callee_sink.payload_types()}"
    ends = [p for p in callee_sink.snapshot(callee_te) if p.payload[1] & 0x80]
    assert ends, "no RFC 4733 end-of-event packet was relayed"
    stop_clean(sw)


def test_sipp_pcap_digits_reach_the_callee(switch, bridge_app, sipp_bg, callee_sink: RtpSink):
    # The digits come from SIPp's shipped captures (another RFC 4733 sender than ours).
    uas = start_uas(sipp_bg, "uas_ring_answer", rtpport=callee_sink.port, pause_ms=100)
    sw = start_bridge_switch(switch, bridge_app(), uas.sip_port)
    uac = sipp_bg("uac_dtmf_pcap", sw, pause_ms=500, timeout=15)
    rc, rs = uac.wait(), uas.wait()
    assert rc.ok and rs.ok, both(rc, rs)
    callee_sink.wait_quiet(0.3, timeout=3)
    assert callee_sink.dtmf_digits(101) == "15#", \
        f"digits at the callee: {callee_sink.dtmf_digits(101)!r}; PTs {callee_sink.payload_types()}"  # fmt: skip
    stop_clean(sw)


# --------------------------------------------------------------------------- load


def test_100_bridged_calls_at_20_per_second_held_10s(switch, bridge_app, sipp_bg, tmp_path):
    n = 100
    uas = start_uas(sipp_bg, "uas_ring_answer", calls=n, pause_ms=100, timeout=40)
    sw = start_bridge_switch(switch, bridge_app(), uas.sip_port, log_level="info",
                             rtp_range=free_rtp_range(4 * n + 40))  # two legs per call
    t0 = time.monotonic()
    uac = sipp_bg("uac_hangup", sw, calls=n, rate=20, pause_ms=10_000, timeout=40,
                  extra_args=["-l", str(n)])  # fmt: skip
    rc = uac.wait(60)
    rs = uas.wait(15)
    took = time.monotonic() - t0
    assert rc.ok and rc.created == n and rc.failed == 0, rc.describe(3000)
    assert rs.ok and rs.successful == n and rs.failed == 0, rs.describe(3000)
    assert took < 25, f"100 calls at 20/s held 10 s took {took:.1f}s"
    stop_clean(sw, settle=1.0)


# --------------------------------------------------------------------------- a gateway that challenges
def test_a_gateway_that_challenges_gets_our_credentials(switch, bridge_app, sipp_bg, tmp_path, rtp_sink: RtpSink):
    """Issue 9 point 5: the gateway answers our INVITE 401; the switch sends it again once
    with digest credentials from the config, the gateway (SIPp's verifyauth) accepts them
    and the call is bridged."""
    uas = sipp_bg("uas_auth_answer", f"{LOCALHOST}:9", sip_port=free_udp_port(),
                  keys={"rtpport": 9, "user": "pbx1", "pass": "g4teway-secret"}, timeout=15)
    time.sleep(0.15)
    config = tmp_path / "gateway.toml"
    config.write_text('gateway_username = "pbx1"\ngateway_password = "g4teway-secret"\n')
    sw = start_bridge_switch(switch, bridge_app(), uas.sip_port, "--config", str(config))
    uac = sipp_bg("uac_pcmu_wait_bye", sw, keys={"rtpport": rtp_sink.port}, timeout=12)
    time.sleep(1.5)
    sw.stop()  # the switch hangs up: the caller and the gateway get BYE
    rc, rs = uac.wait(), uas.wait()
    assert rc.final_status() == 200, both(rc, rs)
    invites = rs.received("INVITE")
    assert len(invites) == 2, both(rc, rs)
    assert "Authorization:" not in invites[0].text and 'username="pbx1"' in invites[1].text
    assert re.search(r"CSeq:\s*2 INVITE", invites[1].text), invites[1].text
    assert uas.wait_log(r"auth cseq=2 valid=true", 1.0)
    assert rs.received("BYE"), both(rc, rs)
