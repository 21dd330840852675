"""A send error must not end a call's audio: an offer whose address our RTP socket cannot
send to makes every sendto fail. The switch used to let such an error (`c=IN IP6 ::1` on
an IPv4 socket: "socket family mismatch" on uvloop) escape into the media clock's tick,
which removed the stream for good; latching to the phone's real source (symmetric RTP,
RFC 4961) then came too late and the caller heard silence for the whole call. Now errors
are counted (and logged rate-limited) and the greeting reaches the caller as soon as its
first RTP packet is latched.

Since issue 10 an IPv6 offer to an IPv4-only switch is refused with 488 before any socket
exists (tests/e2e/test_ipv6.py), so this call offers the IPv4 broadcast address instead:
the kernel refuses every send to it (EACCES, reported to the socket's error_received). The
synchronous family-mismatch error is covered by tests/unit/test_media_clock.py and
test_media_session.py."""

from __future__ import annotations

import re
import time

import pytest

from .harness import RawCall, RtpSink, SwitchProcess

pytestmark = pytest.mark.e2e


def wait_log(sw: SwitchProcess, pattern: str, timeout: float = 5.0) -> re.Match[str] | None:
    deadline = time.monotonic() + timeout
    while True:
        m = re.search(pattern, sw.log_text())
        if m or time.monotonic() >= deadline:
            return m
        time.sleep(0.02)


def test_greeting_reaches_the_caller_after_latching_from_an_unusable_sdp_address(
    switch, rtp_sink: RtpSink
) -> None:
    sw = switch("greeting")
    call = RawCall(sw.sip_addr, rtp_sink.port)
    assert "c=IN IP4 127.0.0.1" in call.sdp, call.sdp
    call.sdp = call.sdp.replace("c=IN IP4 127.0.0.1", "c=IN IP4 255.255.255.255")  # never sendable
    try:
        final = call.invite()
        assert final.status == 200, final.text
        call.ack()
        media = call.media_addr()  # the switch's RTP address from its answer
        # The greeting starts: its sends to the broadcast address fail (counted; see the
        # stats below).
        assert wait_log(sw, rf"media PCMU/0 sendrecv -> \('255\.255\.255\.255', {rtp_sink.port}\)"), sw.log_tail(30)
        assert rtp_sink.count() == 0, "RTP arrived before latching: the offer's address was used?"
        # A phone's first RTP comes some frames after the answer (linphone: ~50 ms); this
        # wait is the scenario (several failed sends before latching), not a poll.
        time.sleep(0.1)
        # The phone's RTP from its real IPv4 address: the switch latches and sends there.
        rtp_sink.send_frames(media, [b"\xff" * 160] * 3)
        assert wait_log(sw, rf"RTP latched to 127\.0\.0\.1:{rtp_sink.port}"), sw.log_tail(30)
        assert rtp_sink.wait_for(50, timeout=5, pt=0), (
            f"{rtp_sink.count()} RTP packets after latching\n" + sw.log_tail(30))
        pkts = rtp_sink.snapshot()
        assert {p.pt for p in pkts} == {0}, rtp_sink.payload_types()
        assert {p.src for p in pkts} == {media}, rtp_sink.sources()
        assert rtp_sink.level_dbfs(0) > -40, "the greeting, not silence"
        assert call.bye() == 200  # the greeting (3.75 s) is still playing: the call is up
    finally:
        call.close()
    # The several failed frames were counted (the leg's stats are logged at debug level
    # when its socket closes, after our BYE), and none of them cost the stream.
    stats = wait_log(sw, r"RTP closed: .*'send_errors': (\d+)")
    assert stats and int(stats.group(1)) >= 3, sw.log_tail(30)
    log = sw.log_text()
    assert "removed" not in log and "failed in tick" not in log, sw.log_tail(30)
