"""Answered calls: what a caller hears (RTP at the sink) and how the call ends."""

from __future__ import annotations

import re
import time

import pytest

from .harness import JS_APPS, RawCall, RtpSink, SippResult, wav_duration

pytestmark = pytest.mark.e2e

GREETING_S = wav_duration(JS_APPS / "greeting" / "greeting.wav")
FRAME_S = 0.02


def answer_sdp(res: SippResult) -> str:
    ok = [m for m in res.received("INVITE", 200) if m.cseq == 1]
    assert ok, "no 200 OK to the INVITE\n" + res.describe()
    assert "application/sdp" in (ok[0].header("Content-Type") or ""), ok[0].text
    return ok[0].body


def media_port(sdp: str) -> int:
    m = re.search(r"^m=audio (\d+) RTP/AVP", sdp, re.M)
    assert m, f"no m=audio line in\n{sdp}"
    return int(m.group(1))


def answer_pts(sdp: str) -> list[int]:
    m = re.search(r"^m=audio \d+ RTP/AVP((?: \d+)+)", sdp, re.M)
    assert m, sdp
    return [int(x) for x in m.group(1).split()]


def test_greeting_plays_the_whole_file_then_the_switch_hangs_up(switch, rtp_sink: RtpSink, sipp):
    sw = switch("greeting")
    res = sipp("uac_pcmu_wait_bye", sw, keys={"rtpport": rtp_sink.port}, timeout=20)
    assert res.ok, res.describe()
    sdp = answer_sdp(res)
    assert answer_pts(sdp)[0] == 0, f"PCMU must be chosen\n{sdp}"
    assert re.search(r"^c=IN IP4 127\.0\.0\.1", sdp, re.M), sdp
    lo, hi = sw.rtp_range
    assert lo <= media_port(sdp) <= hi, f"media port outside --rtp-ports {sw.rtp_range}\n{sdp}"

    rtp_sink.wait_quiet(0.3)
    pkts = rtp_sink.snapshot()
    assert pkts, "no RTP arrived"
    assert {p.pt for p in pkts} == {0}, f"payload types {rtp_sink.payload_types()}"
    expected = GREETING_S / FRAME_S
    assert len(pkts) >= 0.9 * expected, f"{len(pkts)} packets, expected ~{expected:.0f}"
    assert len(pkts) <= expected + 50, f"{len(pkts)} packets for a {GREETING_S:.2f}s file"
    assert len(rtp_sink.ssrcs()) == 1, rtp_sink.ssrcs()
    assert RtpSink.seq_gaps(pkts) == [], RtpSink.seq_gaps(pkts)[:10]
    assert all(len(p.payload) == 160 for p in pkts[:-1]), "20 ms frames of 160 bytes"
    # symmetric RTP: it comes from the port the SDP advertised
    assert {p.src for p in pkts} == {("127.0.0.1", media_port(sdp))}, rtp_sink.sources()
    level = rtp_sink.level_dbfs(0)
    assert level > -40, f"decoded audio is (nearly) silent: {level:.1f} dBFS"
    assert RtpSink.interarrival_jitter_ms(pkts) < 20, RtpSink.interarrival_jitter_ms(pkts)

    # The BYE comes after the file has been played, not before.
    ok_time = [m for m in res.received("INVITE", 200)][0].time
    bye = res.received("BYE")
    assert len({m.header("CSeq") for m in bye}) == 1, "one BYE transaction"
    assert bye[0].time - ok_time >= GREETING_S - 0.25, (
        f"BYE {bye[0].time - ok_time:.2f}s after the 200 OK; file is {GREETING_S:.2f}s"
    )
    assert bye[0].time - ok_time <= GREETING_S + 3.0, "BYE long after the file ended"
    assert pkts[-1].time <= bye[0].time + 0.1, "RTP kept coming after the BYE"


def test_pcma_only_offer_gets_pcma(switch, rtp_sink: RtpSink, sipp):
    sw = switch("greeting")
    res = sipp("uac_pcma_wait_bye", sw, keys={"rtpport": rtp_sink.port}, timeout=20)
    assert res.ok, res.describe()
    sdp = answer_sdp(res)
    assert answer_pts(sdp)[0] == 8 and 0 not in answer_pts(sdp), sdp
    rtp_sink.wait_quiet(0.3)
    assert rtp_sink.payload_types() == {8}, rtp_sink.payload_types()
    assert rtp_sink.count(8) >= 0.9 * GREETING_S / FRAME_S, rtp_sink.count(8)
    assert rtp_sink.level_dbfs(8) > -40, rtp_sink.level_dbfs(8)


def test_offer_without_a_common_codec_gets_488(switch, rtp_sink: RtpSink, sipp):
    sw = switch("greeting")
    res = sipp("uac_g729_488", sw, keys={"rtpport": rtp_sink.port}, timeout=10)
    assert res.ok, res.describe()
    assert res.final_status() == 488, res.describe()
    assert not res.received("INVITE", 200)
    assert rtp_sink.count() == 0


def test_caller_hangs_up_mid_play(switch, rtp_sink: RtpSink, sipp):
    sw = switch("greeting")
    res = sipp("uac_hangup", sw, keys={"rtpport": rtp_sink.port}, pause_ms=1500, timeout=15)
    assert res.ok, res.describe()
    assert [m.status for m in res.received("BYE")] == [200], res.describe()
    bye_sent = res.sent("BYE")[0].time
    rtp_sink.wait_quiet(0.5)
    pkts = rtp_sink.snapshot(0)
    assert len(pkts) >= 0.8 * 1.5 / FRAME_S, f"only {len(pkts)} packets in 1.5 s"
    late = [p for p in pkts if p.time > bye_sent + 0.1]
    assert not late, f"{len(late)} RTP packets more than 100 ms after the BYE"
    assert not [m for m in res.received("BYE") if m.status is None], "the switch sent BYE too"


def test_invite_without_sdp_gets_offer_in_200_and_answer_in_ack(switch, rtp_sink: RtpSink, sipp):
    sw = switch("greeting")
    res = sipp("uac_no_sdp", sw, keys={"rtpport": rtp_sink.port}, timeout=20)
    assert res.ok, res.describe()
    offer = answer_sdp(res)
    assert 0 in answer_pts(offer) or 8 in answer_pts(offer), offer
    rtp_sink.wait_quiet(0.3)
    # our ACK answered PCMU only: that is what must arrive, at the port of the ACK's SDP
    assert rtp_sink.payload_types() == {0}, rtp_sink.payload_types()
    assert rtp_sink.count(0) >= 0.9 * GREETING_S / FRAME_S, rtp_sink.count(0)
    assert rtp_sink.level_dbfs(0) > -40


def test_options_gets_200(switch, sipp):
    sw = switch("greeting")
    res = sipp("options", sw, timeout=5)
    assert res.ok, res.describe()
    assert res.final_status("OPTIONS") == 200


def test_hold_reinvite_keeps_the_call(switch, rtp_sink: RtpSink, sipp):
    sw = switch("hold_then_continue")
    res = sipp("uac_hold", sw, keys={"rtpport": rtp_sink.port}, timeout=20)
    assert res.ok, res.describe()
    assert res.final_status("INVITE", cseq=2) == 200, res.describe()
    assert res.final_status("INVITE", cseq=3) == 200, res.describe()
    assert res.final_status("BYE", cseq=4) == 200, "the call did not survive the re-INVITEs"
    hold_answer = [m for m in res.received("INVITE", 200) if m.cseq == 2][0]
    assert re.search(r"^a=(recvonly|inactive)", hold_answer.body, re.M), (
        "RFC 3264 §8.4: the answer to a sendonly offer is recvonly (or inactive)\n"
        + hold_answer.body
    )
    rtp_sink.wait_quiet(0.3)
    reinv = {m.cseq: m.time for m in res.sent("INVITE")}
    ok = {m.cseq: m.time for m in res.received("INVITE", 200)}
    before = rtp_sink.snapshot(0, until=reinv[2])
    during = rtp_sink.snapshot(0, since=ok[2] + 0.1, until=reinv[3])
    after = rtp_sink.snapshot(0, since=ok[3] + 0.1, until=res.sent("BYE")[0].time)
    assert len(before) >= 30, f"{len(before)} packets before hold"
    assert len(during) <= 3, f"{len(during)} packets sent while we were on hold (a=recvonly)"
    assert len(after) >= 50, f"{len(after)} packets after resume"


def test_playfile_of_a_missing_file_throws_a_catchable_error(switch, rtp_sink: RtpSink, sipp):
    sw = switch("playfile_missing_caught")
    res = sipp("uac_pcmu_wait_bye", sw, keys={"rtpport": rtp_sink.port}, timeout=15)
    assert res.ok, res.describe()
    rtp_sink.wait_quiet(0.3)
    # tone.wav (1 s) is played only if the script caught an Error naming nope.wav
    assert rtp_sink.count(0) >= 40, (
        f"{rtp_sink.count(0)} packets: PlayFile('nope.wav') did not throw a catchable Error "
        "naming the file\n" + sw.log_tail(30)
    )
    assert rtp_sink.level_dbfs(0) > -20


def test_throw_after_answer_gets_bye(switch, rtp_sink: RtpSink, sipp):
    sw = switch("throw_after_answer")
    res = sipp("uac_pcmu_wait_bye", sw, keys={"rtpport": rtp_sink.port}, timeout=10)
    assert res.ok, res.describe()
    assert res.received("BYE"), res.describe()
    assert "main.js:5" in sw.log_text(), "the error log must name main.js:5\n" + sw.log_tail(30)


def test_main_returning_after_answer_gets_bye(switch, rtp_sink: RtpSink, sipp):
    sw = switch("answer_then_return")
    res = sipp("uac_pcmu_wait_bye", sw, keys={"rtpport": rtp_sink.port}, timeout=10)
    assert res.ok, res.describe()
    ack = res.sent("ACK")[0].time
    bye = res.received("BYE")[0].time
    assert bye >= ack - 0.005, "RFC 3261: our BYE must wait for the caller's ACK"


def test_symmetric_rtp_latches_to_the_source_address(switch, rtp_sink: RtpSink):
    """DESIGN §3: symmetric RTP. The SDP says one port; the caller's RTP comes from
    another (a NAT): the switch must send to where the caller's RTP comes from."""
    sw = switch("hold_then_continue")
    with RtpSink() as real:
        call = RawCall(sw.sip_addr, rtp_sink.port)
        try:
            final = call.invite()
            assert final.status == 200, final.text
            call.ack()
            assert rtp_sink.wait_for(5, timeout=3), "no RTP to the SDP address"
            real.send_stream(call.media_addr(), 0.6)
            n_before = rtp_sink.count()
            assert real.wait_for(10, timeout=1.0), "the switch did not latch onto our source"
            time.sleep(0.3)
            assert rtp_sink.count() - n_before <= 3, "RTP still goes to the SDP address"
            assert real.ssrcs() == rtp_sink.ssrcs(), "same stream, new destination"
        finally:
            call.bye()
            call.close()
