"""SDES-SRTP against the real switch (issue 9 point 6; RFC 4568 keys, RFC 3711 packets).

* a caller of our own offers RTP/SAVP with a key of its own: the switch answers RTP/SAVP
  with its key, and the greeting that arrives is SRTP (not G.711 on the wire) that this
  test decrypts with those keys (media/srtp.py, libsrtp); forged packets it sends are
  dropped with one log line and the call goes on;
* a pjsua2 phone with SRTP mandatory calls the greeting app and hears it;
* the same phone calls through the bridge app to a SIPp callee on plain RTP that echoes
  (the relay between the two legs sees plain RTP) and hears itself;
* an RTP/SAVP offer with only suites we lack gets 488 (Warning 306), and with
  ``--srtp required`` a plain offer gets 488 (Warning 302).
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from media.sdes import CryptoAttribute, SrtpKeys
from media.srtp import SrtpContext, SrtpError

from .harness import (
    ANSWER,
    LOCALHOST,
    RawCall,
    RtpSink,
    SipMessage,
    SwitchProcess,
    build_rtp,
    dbfs,
    free_tcp_port,
    free_udp_port,
    g711_decode,
    hostport,
    media_dest,
    sdp_offer,
    start_bridge_switch,
    stop_clean,
    tone,
    voiced_audio,
    write_tone_wav,
)
from .harness import RtpPacket as SinkPacket
from .phone import Phone
from .test_metrics import metric, wait_for

pytestmark = pytest.mark.e2e

SUITE = "AES_CM_128_HMAC_SHA1_80"
TAG_BYTES = 10  # HMAC-SHA1-80 (RFC 3711 §4.2)


def control(*extra: str) -> list[str]:
    return ["--control", f"{LOCALHOST}:{free_tcp_port()}", *extra]


def calls_api(sw: SwitchProcess) -> list[dict[str, Any]]:
    """GET /calls (docs/control-api.md) of a switch started with control()."""
    args = sw.command()
    with urllib.request.urlopen(f"http://{args[args.index('--control') + 1]}/calls", timeout=2) as r:
        return list(json.loads(r.read())["calls"])


def savp_offer(port: int, key: bytes, params: str = "") -> str:
    """Our RTP/SAVP offer with one crypto line: tag 1, SUITE, ``key`` (the key we send
    with), then ``params`` (e.g. "|2^20|1:32": a lifetime and an MKI)."""
    return sdp_offer(port, "0 101", proto="RTP/SAVP",
                     attributes=[f"crypto:1 {SUITE} inline:{base64.b64encode(key).decode()}{params}"])


def answered_key(response: SipMessage, our_key: bytes) -> bytes:
    """The switch's key from its answer, checked as RFC 4568 §7.1.2 says: RTP/SAVP, one
    crypto line with our tag and suite, and a key of its own."""
    assert response.status == 200, response.text
    assert re.search(r"^m=audio \d+ RTP/SAVP 0 101", response.body, re.M), response.body
    lines = re.findall(r"^a=crypto:(.+)$", response.body, re.M)
    assert len(lines) == 1, response.body
    answered = CryptoAttribute.parse(lines[0].strip())
    assert (answered.tag, answered.suite) == (1, SUITE) and answered.key != our_key
    return answered.key


def decrypted(keys: SrtpKeys, packets: list[SinkPacket]) -> list[bytes]:
    """The payloads of ``packets`` (as a sink recorded them: header fields + SRTP payload)
    decrypted with a fresh context for ``keys``; AssertionError naming the first that fails."""
    ctx = SrtpContext(keys)
    out = []
    for p in packets:
        try:
            out.append(ctx.unprotect_rtp(build_rtp(p.pt, p.seq, p.ts, p.ssrc, p.payload, p.marker))[12:])
        except SrtpError as exc:
            raise AssertionError(f"packet seq {p.seq} does not decrypt: {exc}") from None
    return out


def test_the_greeting_reaches_an_srtp_caller_encrypted_and_decrypts_with_the_answered_key(switch, rtp_sink: RtpSink):
    sw = switch("hold_then_continue", control())
    our_key = os.urandom(30)
    call = RawCall(sw.sip_addr, rtp_sink.port, sdp=savp_offer(rtp_sink.port, our_key))
    try:
        their_key = answered_key(call.invite(), our_key)
        call.ack()
        assert rtp_sink.wait_for(40, timeout=3, pt=0), "no RTP from the switch"
        # Forged packets (right header, wrong key) from our own address: dropped, logged once.
        forger = SrtpContext(SrtpKeys(SUITE, os.urandom(30), os.urandom(30)))
        for i in range(25):
            forged = forger.protect_rtp(build_rtp(0, 1000 + i, 160 * i, 0xBAD, b"\xff" * 160))
            rtp_sink.sock.sendto(forged, call.media_addr())
        time.sleep(0.5)
        [live] = calls_api(sw)
        assert live["legs"][0]["srtp"] == SUITE and live["legs"][0]["rtp"]["srtp_dropped"] == 25, live
    finally:
        assert call.bye() == 200
        call.close()
    packets = rtp_sink.snapshot(0)
    # On the wire: 160 bytes of G.711 + the 80-bit tag, and not the tone's bytes.
    assert all(len(p.payload) == 160 + TAG_BYTES for p in packets), {len(p.payload) for p in packets}
    plain = decrypted(SrtpKeys(SUITE, our_key, their_key), packets)
    heard = np.concatenate([g711_decode(b, 0) for b in plain])
    assert dbfs(heard) > -25, f"decrypted tone at {dbfs(heard):.1f} dBFS"
    spectrum = np.abs(np.fft.rfft(heard[:8000]))
    assert abs(int(np.argmax(spectrum)) - 440) <= 5, "the decrypted audio is not tone.wav's 440 Hz"
    wire = np.concatenate([g711_decode(p.payload[:160], 0) for p in packets])
    wire_peak = np.abs(np.fft.rfft(wire[:8000]))
    assert wire_peak[435:446].max() < 0.2 * spectrum[435:446].max(), "the wire carries the tone in the clear"
    log = sw.log_text()
    assert f"SRTP {SUITE} (on)" in log
    drops = re.findall(r"SRTP packet from [\d.:]+ dropped \(SRTP authentication failure\)", log)
    assert len(drops) == 1, log[-3000:]
    assert f"srtp={SUITE} srtp_dropped=25" in log, log[-3000:]  # the leg's end-of-call line
    counted = wait_for(sw, lambda s: metric(s, "softswitch_srtp_packets_dropped_total") == 25)
    assert metric(counted, "softswitch_srtp_packets_dropped_total") == 25
    assert our_key.hex() not in log and base64.b64encode(our_key).decode() not in log
    assert base64.b64encode(their_key).decode() not in log
    stop_clean(sw)


def test_a_reinvite_with_a_new_key_re_keys_the_leg(switch, rtp_sink: RtpSink):
    """RFC 4568 §7.1.4: new keys in a re-INVITE's offer; the answer brings the switch's new
    key; from then on both directions use the new keys and the old ones fail. The first
    offer is RFC 4568 §9.1's form (lifetime 2^20, MKI 1:32): our packets carry the MKI."""
    sw = switch("hold_then_continue", control())
    key1, key2 = os.urandom(30), os.urandom(30)
    call = RawCall(sw.sip_addr, rtp_sink.port, sdp=savp_offer(rtp_sink.port, key1, "|2^20|1:32"))
    try:
        switch1 = answered_key(call.invite(), key1)
        call.ack()
        assert rtp_sink.wait_for(20, timeout=3, pt=0), "no RTP from the switch"
        mki_tx = SrtpContext(SrtpKeys(SUITE, key1, switch1))
        for i in range(5):  # with the MKI before the tag (RFC 3711 §3.1), as that line said
            wire = mki_tx.protect_rtp(build_rtp(0, 6000 + i, 160 * i, 0xC0FFEE, b"\xff" * 160))
            rtp_sink.sock.sendto(wire[:-TAG_BYTES] + bytes(31) + b"\x01" + wire[-TAG_BYTES:], call.media_addr())
            time.sleep(0.005)
        sent_reinvite = time.monotonic()
        switch2 = answered_key(call.reinvite(savp_offer(rtp_sink.port, key2)), key2)
        rekeyed = time.monotonic()
        assert switch2 != switch1
        time.sleep(0.6)
        # What we send: 10 packets with the new key (taken), 10 with the old one (dropped).
        new_tx, old_tx = SrtpContext(SrtpKeys(SUITE, key2, switch2)), SrtpContext(SrtpKeys(SUITE, key1, switch1))
        for i in range(20):
            ctx = new_tx if i < 10 else old_tx
            rtp_sink.sock.sendto(ctx.protect_rtp(build_rtp(0, 7000 + i, 160 * i, 0xC0FFEE, b"\xff" * 160)),
                                 call.media_addr())
            time.sleep(0.005)
        time.sleep(0.2)
    finally:
        assert call.bye() == 200
        call.close()
    before = [p for p in rtp_sink.snapshot(0) if p.mono < sent_reinvite]
    after = [p for p in rtp_sink.snapshot(0) if p.mono > rekeyed + 0.05]
    assert len(before) >= 20 and len(after) >= 20, (len(before), len(after))
    decrypted(SrtpKeys(SUITE, key1, switch1), before)
    decrypted(SrtpKeys(SUITE, key2, switch2), after)
    with pytest.raises(AssertionError, match="does not decrypt"):
        decrypted(SrtpKeys(SUITE, key1, switch1), after[-5:])
    log = sw.log_text()
    assert f"SRTP {SUITE} (re-keyed)" in log, log[-3000:]
    ended = re.search(r"call \S+ ended .*received (\d+)/\d+ B;.* srtp_dropped=(\d+)", log)
    assert ended and ended.groups() == ("15", "10"), log[-3000:]
    stop_clean(sw)


@pytest.fixture
def phone_tone(tmp_path: Path) -> Path:
    return write_tone_wav(tmp_path / "phone-tone.wav", 2.0, freq=440, level=0.3)


def assert_phone_used_srtp(phone: Phone) -> str:
    """The phone's media ran SRTP (pjsua's call dump), and the SDP the switch sent it (our
    answer in a 200, or our offer in an INVITE) was RTP/SAVP with a crypto line."""
    media = phone.wait_event("media")
    assert media["srtp"], "pjsua2 reports no active SRTP\n" + phone.describe()
    # pjsua's log: one entry per timestamped line; a message it received follows "RX ...".
    entries = re.split(r"\n(?=\d\d:\d\d:\d\d\.\d{3} )", phone.log_path.read_text(errors="replace"))
    from_switch = [e for e in entries if re.search(r"\.RX \d+ bytes (?:Response msg 200/INVITE|Request msg INVITE)", e)]
    assert any(re.search(r"^m=audio \d+ RTP/SAVP ", e, re.M) and "\na=crypto:" in e for e in from_switch), \
        "no RTP/SAVP SDP from the switch in the pjsua log\n" + "\n".join(from_switch)[-3000:]
    return str(media["srtp"])


def test_an_srtp_phone_hears_the_greeting(switch, tmp_path: Path):
    sw = switch("greeting", control())
    with Phone(auto_answer_ms=None, srtp=True, workdir=tmp_path / "phone") as phone:
        phone.call(f"sip:service@{sw.sip_target}")
        phone.wait_event("confirmed", timeout=5)
        gone = phone.wait_event("disconnected", timeout=15)  # the greeting ends: the switch's BYE
        assert gone["code"] == 200 and gone["duration"] > 1.0, gone
        suite = assert_phone_used_srtp(phone)
        heard = phone.recorded_dbfs()
        assert heard > -35, f"the phone heard {heard:.1f} dBFS\n" + phone.describe()
    assert f"SRTP {suite} (on)" in sw.log_text()
    stop_clean(sw)


def test_an_srtp_phone_bridged_to_a_plain_rtp_callee_hears_its_echo(switch, bridge_app, sipp_bg, phone_tone: Path,
                                                                   tmp_path: Path):
    sip_port = free_udp_port()
    uas = sipp_bg("sn:uas", hostport(LOCALHOST, 9), sip_port=sip_port, timeout=25, extra_args=["-rtp_echo"])
    time.sleep(0.15)
    assert uas.running(), uas.wait(1).describe()
    sw = start_bridge_switch(switch, bridge_app(), sip_port)
    with Phone(tone_wav=phone_tone, auto_answer_ms=None, srtp=True, workdir=tmp_path / "phone") as phone:
        phone.call(f"sip:1000@{sw.sip_target}")
        phone.wait_event("confirmed", timeout=5)
        time.sleep(3.0)
        phone.hangup()
        phone.wait_event("disconnected", timeout=5)
        suite = assert_phone_used_srtp(phone)
        heard = phone.recorded_dbfs()
        assert heard > -30, f"the phone heard its echo at {heard:.1f} dBFS\n" + phone.describe()
    res = uas.wait()
    assert res.ok, res.describe()
    invite = res.received("INVITE")[0]
    assert re.search(r"^m=audio \d+ RTP/AVP ", invite.body, re.M) and "crypto" not in invite.body, invite.text
    assert f"SRTP {suite} (on)" in sw.log_text()
    stop_clean(sw)


def test_an_srtp_offer_with_only_unknown_suites_gets_488(switch, sipp, rtp_sink: RtpSink):
    sw = switch("greeting")
    res = sipp("uac_savp_unknown_suite_488", sw, keys={"rtpport": rtp_sink.port}, timeout=10)
    assert res.ok, res.describe()
    refused = res.received("INVITE", 488)[0]
    warning = refused.header("Warning") or ""
    assert warning.startswith('306 - "SDP offer\'s RTP/SAVP audio has no a=crypto we support'), refused.text
    assert "F8_128_HMAC_SHA1_80 is not supported" in warning and "SEED_CTR_128_HMAC_SHA1_80" in warning
    assert not res.received("INVITE", 200) and rtp_sink.count() == 0


def test_with_srtp_required_a_plain_offer_gets_488(switch, sipp, rtp_sink: RtpSink):
    sw = switch("greeting", ["--srtp", "required"])
    res = sipp("uac_expect_final", sw, keys={"rtpport": rtp_sink.port}, timeout=10)
    assert res.ok, res.describe()
    assert res.final_status() == 488, res.describe()
    warning = res.received("INVITE", 488)[0].header("Warning") or ""
    assert warning.startswith('302 - "this switch requires SRTP (srtp = \\"required\\")'), warning
    assert rtp_sink.count() == 0


def test_a_gateway_route_with_srtp_offers_it_to_an_srtp_only_callee(switch, bridge_app, sipp_bg, rtp_sink: RtpSink,
                                                                   phone_tone: Path, tmp_path: Path):
    """gateway_srtp = true: the plain caller's call reaches the pjsua2 callee (SRTP
    mandatory: it would refuse RTP/AVP with 488) as RTP/SAVP, and audio flows both ways."""
    with Phone(tone_wav=phone_tone, auto_answer_ms=300, srtp=True, workdir=tmp_path / "phone") as phone:
        config = tmp_path / "srtp.toml"
        config.write_text("gateway_srtp = true\n")
        sw = start_bridge_switch(switch, bridge_app(), phone.port, "--config", str(config))
        uac = sipp_bg("uac_hangup", sw, keys={"rtpport": rtp_sink.port}, pause_ms=3000, timeout=15)
        to_caller, _ = media_dest(uac, ANSWER)
        phone.wait_event("confirmed", timeout=5)
        rtp_sink.send_stream(to_caller, 1.5, 0, tone(1.5, 1000, 0.3))
        rc = uac.wait()
        assert rc.ok, rc.describe() + "\n" + phone.describe()
        phone.wait_event("disconnected", timeout=5)
        suite = assert_phone_used_srtp(phone)
        heard = phone.recorded_dbfs()
        assert heard > -30, f"the phone heard {heard:.1f} dBFS\n" + phone.describe()
        # The plain caller got a plain answer and the phone's tone.
        assert re.search(r"^m=audio \d+ RTP/AVP ", rc.received("INVITE", 200)[0].body, re.M)
        rtp_sink.wait_quiet(0.3, timeout=3)
        voiced = voiced_audio(rtp_sink, 0)
        assert len(voiced) >= 8000 * 1.0, f"{len(voiced) / 8000:.2f}s of the phone's tone reached the caller"
    assert f"SRTP {suite} (on)" in sw.log_text()
    stop_clean(sw)
