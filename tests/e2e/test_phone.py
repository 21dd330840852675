"""Interop with a second, independent SIP/RTP implementation: a pjsua2 phone
(tests/e2e/phone.py, in a subprocess) on one side of the seed's bridge, SIPp on the other.
Two calls in all (pjsua2's PyPI build allows 4)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .harness import (
    ANSWER,
    LOCALHOST,
    OFFER,
    RtpSink,
    dbfs,
    media_dest,
    start_bridge_switch,
    start_uas,
    stop_clean,
    tone,
    tone_dbfs,
    voiced_audio,
    write_tone_wav,
)
from .phone import Phone

pytestmark = pytest.mark.e2e

PHONE_TONE_DBFS = tone_dbfs()  # what write_tone_wav writes: about -13.5


@pytest.fixture
def phone_tone(tmp_path: Path) -> Path:
    return write_tone_wav(tmp_path / "phone-tone.wav", 2.0, freq=440, level=0.3)


def test_sipp_caller_bridged_to_a_pjsua2_callee(switch, bridge_app, sipp_bg, rtp_sink: RtpSink,
                                                phone_tone: Path, tmp_path: Path):  # fmt: skip
    with Phone(tone_wav=phone_tone, auto_answer_ms=300, workdir=tmp_path / "phone") as phone:
        sw = start_bridge_switch(switch, bridge_app(), phone.port)
        uac = sipp_bg("uac_hangup", sw, keys={"rtpport": rtp_sink.port}, pause_ms=3500, timeout=15)
        to_caller, _ = media_dest(uac, ANSWER)
        phone.wait_event("confirmed", timeout=5)
        rtp_sink.send_stream(to_caller, 1.5, 0, tone(1.5, 1000, 0.3))
        rtp_sink.send_dtmf(to_caller, "2580", pt=101)
        rc = uac.wait()
        assert rc.ok, rc.describe() + "\n" + phone.describe()
        assert 180 in rc.statuses() and rc.final_status() == 200, rc.statuses()

        # The caller's BYE reached the phone through the switch.
        gone = phone.wait_event("disconnected", timeout=5)
        assert gone["duration"] >= 3.0, gone
        incoming = phone.wait_event("incoming")
        assert re.search(r"sip:", incoming["from"]), incoming
        media = phone.wait_event("media")
        assert media["codec"] in ("PCMU", "PCMA"), media

        # The phone heard the caller's tone and its RFC 4733 digits ...
        assert phone.digits() == "2580", phone.describe()
        heard = phone.recorded_dbfs()
        assert heard > -30, f"the phone heard {heard:.1f} dBFS: (nearly) silence\n" + phone.describe()
        # ... and the caller heard the phone's tone.
        rtp_sink.wait_quiet(0.3, timeout=3)
        assert rtp_sink.count(0) >= 100, f"{rtp_sink.count(0)} PCMU packets reached the caller"
        voiced = voiced_audio(rtp_sink, 0)
        assert len(voiced) >= 8000 * 1.5, f"{len(voiced) / 8000:.2f}s of the phone's tone reached the caller"
        assert abs(dbfs(voiced) - PHONE_TONE_DBFS) < 3, f"{dbfs(voiced):.1f} dBFS, sent {PHONE_TONE_DBFS:.1f}"
    stop_clean(sw)


def test_pjsua2_caller_bridged_to_a_sipp_callee_that_hangs_up(switch, bridge_app, sipp_bg,
                                                              callee_sink: RtpSink, phone_tone: Path,
                                                              tmp_path: Path):  # fmt: skip
    uas = start_uas(sipp_bg, "uas_answer_bye", rtpport=callee_sink.port, pause_ms=2500)
    sw = start_bridge_switch(switch, bridge_app(), uas.sip_port)
    with Phone(tone_wav=phone_tone, auto_answer_ms=None, workdir=tmp_path / "phone") as phone:
        # The phone dials the switch; a To that names the switch goes to the --gateway.
        phone.call(f"sip:1000@{sw.sip_target}")
        to_callee, _ = media_dest(uas, OFFER)
        phone.wait_event("confirmed", timeout=5)
        callee_sink.send_stream(to_callee, 1.0, 0, tone(1.0, 1000, 0.3))
        phone.dtmf("73")
        rs = uas.wait()
        assert rs.ok, rs.describe() + "\n" + phone.describe()
        invite = rs.received("INVITE")[0]
        assert invite.first_line.startswith(f"INVITE sip:1000@{LOCALHOST}:{uas.sip_port}"), invite.text

        # The callee's BYE reached the phone.
        gone = phone.wait_event("disconnected", timeout=5)
        assert gone["duration"] >= 2.0, gone
        # The callee heard the phone's tone and digits; the phone heard the callee's tone.
        callee_sink.wait_quiet(0.3, timeout=3)
        voiced = voiced_audio(callee_sink, 0)
        assert len(voiced) >= 8000 * 1.5, f"{len(voiced) / 8000:.2f}s of the phone's tone reached the callee"
        assert callee_sink.dtmf_digits(101) == "73", (callee_sink.dtmf_digits(101), callee_sink.payload_types())
        heard = phone.recorded_dbfs()
        assert heard > -35, f"the phone heard {heard:.1f} dBFS\n" + phone.describe()
    stop_clean(sw)
