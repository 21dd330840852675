"""Key presses reach the task as Dtmf events, whether the phone sends them in RTP
(RFC 4733) or in SIP INFO: the collect_digits app plays tone.wav (1 s) only when the
caller keyed 4, 2, #; any other digits make it hang up at once."""

import time

import pytest

from .harness import RawCall, RtpSink, voiced_audio

pytestmark = pytest.mark.e2e


def _answered(sw, sink: RtpSink) -> RawCall:
    call = RawCall(sw.sip_addr, sink.port)
    final = call.invite()
    assert final.status == 200, final.text
    call.ack()
    return call


def wait_voiced(sink: RtpSink, frames: int, timeout: float = 3.0) -> bool:
    """`frames` frames of sound (not the keepalive's silence) arrived within `timeout`."""
    deadline = time.monotonic() + timeout
    while len(voiced_audio(sink, 0)) < frames * 160:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_rfc4733_digits_become_dtmf_events(switch, rtp_sink: RtpSink):
    sw = switch("collect_digits")
    call = _answered(sw, rtp_sink)
    try:
        rtp_sink.send_dtmf(call.media_addr(), "42#")
        assert wait_voiced(rtp_sink, 40), "no tone: the script did not see 4, 2, #\n" + sw.log_tail(20)
        assert "collected 42" in sw.log_text()
    finally:
        call.bye()
        call.close()


def test_sip_info_digits_become_dtmf_events(switch, rtp_sink: RtpSink):
    sw = switch("collect_digits")
    call = _answered(sw, rtp_sink)
    try:
        assert call.info("Signal=4\r\nDuration=160\r\n") == 200
        assert call.info("2", content_type="application/dtmf") == 200
        assert call.info("Signal=#\r\nDuration=160\r\n") == 200
        assert wait_voiced(rtp_sink, 40), "no tone: the script did not see 4, 2, #\n" + sw.log_tail(20)
    finally:
        call.bye()
        call.close()


def test_other_digits_get_a_hangup_and_no_tone(switch, rtp_sink: RtpSink):
    sw = switch("collect_digits")
    call = _answered(sw, rtp_sink)
    try:
        rtp_sink.send_dtmf(call.media_addr(), "7#")
        time.sleep(1.0)
        assert "collected 7" in sw.log_text(), sw.log_tail(20)
        # (silence keeps the stream alive, media_keepalive; a tone would be voiced)
        assert len(voiced_audio(rtp_sink, 0)) == 0, "the tone must only play for 42"
        assert "ended (disconnected by app)" in sw.log_text(), "the script's Disconnect() must BYE\n" + sw.log_tail(20)
    finally:
        call.close()
