"""SIP over TLS (RFC 3261 §26.2.1) with peers that are not us: pjsua2 phones with pjsip's
own TLS stack (Debian's SIPp has no TLS), certificates made by the test with `openssl`
(tests/e2e/certs.py: a CA, a certificate it signs for 127.0.0.1, a self-signed rogue).

- a phone calls the switch over TLS, verifying the switch's certificate; the app answers
  and plays a tone the phone hears; the switch's BYE reaches the phone over TLS;
- a bridged call whose outbound leg goes over TLS to a second phone acting as the
  gateway: the INVITE arrives over TLS, the call connects, media flows, the BYE is TLS;
- a gateway whose certificate the switch cannot trust: the leg fails with 503 (the caller
  hears it), no INVITE reaches it, the log says why; `--no-tls-verify` lets it through;
- plain SIP sent to the TLS port is closed at once and logged; the listener keeps serving;
- a missing or mismatched certificate file stops the switch at startup with a message."""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from .certs import Pki, tls_args, tls_port
from .harness import (
    ANSWER,
    LOCALHOST,
    REPO,
    RtpSink,
    SwitchProcess,
    dbfs,
    free_tcp_port,
    media_dest,
    sip_request,
    start_bridge_switch,
    stop_clean,
    tone,
    tone_dbfs,
    voiced_audio,
    write_tone_wav,
)
from .phone import Phone, PhoneTls
from .test_metrics import metric, scrape

pytestmark = pytest.mark.e2e

TONE_DBFS = tone_dbfs()  # what write_tone_wav writes: about -13.5


# pjsip logs each message it sends or receives with its transport, e.g.
# "RX 1024 bytes Request msg INVITE/cseq=1 (rdata0x...) from TLS 127.0.0.1:5061:".
def pjsip_saw(phone: Phone, direction: str, what: str) -> list[str]:
    """pjsip's log lines for `what` ("Request msg BYE") `direction` "RX"/"TX", with the
    transport they travelled over."""
    return re.findall(rf"{direction} \d+ bytes {what}/cseq=\d+ \([^)]*\) (?:from|to) (\w+) ", phone.log_text())


@pytest.fixture
def tone_app(app_dir: Callable[[str], Path], tmp_path: Path) -> Path:
    """Answer, play tone.wav (1 s of 440 Hz at -13.5 dBFS), hang up."""
    src = tmp_path / "tone_then_bye"
    src.mkdir()
    (src / "main.js").write_text(
        "function Main() {\n  AcceptCall();\n  PlayFile('tone.wav');\n  while (IsConnected()) {\n"
        "    var evt = ReadInput(30);\n    if (IsPlayFileCompletedEvent(evt) || IsDisconnectEvent(evt)) break;\n"
        "  }\n}\n")
    return app_dir(str(src))


@pytest.mark.parametrize("scheme", ["sip", "sips"])
def test_a_phone_calls_over_tls_hears_the_app_and_gets_its_bye_over_tls(switch, tone_app: Path, pki: Pki,
                                                                         tmp_path: Path, scheme: str):  # fmt: skip
    sw = switch(tone_app, tls_args(pki))
    with Phone(tls=PhoneTls(ca=pki.ca), auto_answer_ms=None, workdir=tmp_path / "phone") as phone:
        # sip:...;transport=tls asks for TLS to this hop; sips: for TLS all the way (RFC 3261 §19.1)
        phone.call(f"sip:1000@{LOCALHOST}:{tls_port(sw)};transport=tls" if scheme == "sip"
                   else f"sips:1000@{LOCALHOST}:{tls_port(sw)}")
        phone.wait_event("confirmed", timeout=10)
        gone = phone.wait_event("disconnected", timeout=10)  # the app returned: the switch's BYE
        assert gone["code"] == 200 and gone["duration"] >= 0.9, gone
        heard = phone.recorded_dbfs()
        assert abs(heard - TONE_DBFS) < 4, f"the phone heard {heard:.1f} dBFS, the app played {TONE_DBFS:.1f}\n" \
            + phone.describe()
        # Every message of the call went over TLS, both ways: INVITE and ACK out, our 200
        # and BYE in (pjsip verified our certificate against the test CA to get that far).
        assert pjsip_saw(phone, "TX", "Request msg INVITE") == ["TLS"], phone.describe()
        assert pjsip_saw(phone, "RX", "Response msg 200/INVITE") == ["TLS"], phone.describe()
        assert pjsip_saw(phone, "RX", "Request msg BYE") == ["TLS"], phone.describe()
        assert set(pjsip_saw(phone, "(?:TX|RX)", r"\w+ msg \S+")) == {"TLS"}, phone.describe()
        invite = re.search(rf"INVITE {scheme}:1000@.*?\r?\n\r?\n", phone.log_text(), re.S)
        assert invite and "Via: SIP/2.0/TLS" in invite.group(0), phone.describe()
        ok = re.search(r"SIP/2.0 200 OK.*?Contact: (.*?)\r?\n", phone.log_text(), re.S)
        # Our Contact: sips: in a SIPS dialog (RFC 3261 §12.1.1), else ;transport=tls
        contact = (f"<sip:{LOCALHOST}:{tls_port(sw)};transport=tls>" if scheme == "sip"
                   else f"<sips:{LOCALHOST}:{tls_port(sw)}>")
        assert ok and ok.group(1) == contact, phone.describe()
    stop_clean(sw)


def gateway_phone(tmp_path: Path, cert: Path, key: Path) -> Phone:
    """A pjsua2 phone answering calls over TLS (presenting `cert`) with a 3 s tone: the gateway."""
    gateway_tone = write_tone_wav(tmp_path / "gateway-tone.wav", 3.0, freq=440, level=0.3)
    return Phone(tls=PhoneTls(cert=cert, key=key), tone_wav=gateway_tone, auto_answer_ms=200,
                 workdir=tmp_path / "gateway")


def tls_gateway_switch(switch, bridge_app, gateway: Phone, pki: Pki, *extra: str) -> SwitchProcess:
    assert gateway.tls_port, gateway.describe()
    return start_bridge_switch(switch, bridge_app(), gateway.tls_port, *tls_args(pki), *extra,
                               gateway_params=";transport=tls")


def test_a_bridged_call_goes_out_over_tls_to_a_verified_gateway(switch, bridge_app, sipp_bg, rtp_sink: RtpSink,
                                                                pki: Pki, tmp_path: Path):  # fmt: skip
    with gateway_phone(tmp_path, pki.cert, pki.key) as gateway:
        sw = tls_gateway_switch(switch, bridge_app, gateway, pki)
        uac = sipp_bg("uac_hangup", sw, keys={"rtpport": rtp_sink.port}, pause_ms=2500, timeout=20)
        to_caller, _ = media_dest(uac, ANSWER)
        gateway.wait_event("confirmed", timeout=10)
        rtp_sink.send_stream(to_caller, 1.5, 0, tone(1.5, 1000, 0.3))
        rc = uac.wait()
        assert rc.ok and rc.final_status() == 200, rc.describe() + "\n" + gateway.describe()
        gone = gateway.wait_event("disconnected", timeout=10)  # the caller's BYE, relayed
        assert gone["duration"] >= 2.0, gone
        # The outbound INVITE reached the gateway over TLS (the switch verified its
        # certificate for 127.0.0.1 against --tls-ca-file), and so did the ACK and the BYE.
        assert pjsip_saw(gateway, "RX", "Request msg INVITE") == ["TLS"], gateway.describe()
        assert pjsip_saw(gateway, "RX", "Request msg ACK") == ["TLS"], gateway.describe()
        assert pjsip_saw(gateway, "RX", "Request msg BYE") == ["TLS"], gateway.describe()
        invite = re.search(r"INVITE sip:\w+@127\.0\.0\.1:\d+;transport=tls SIP/2\.0.*?\r?\n\r?\n",
                           gateway.log_text(), re.S)
        assert invite and "Via: SIP/2.0/TLS" in invite.group(0), gateway.describe()
        assert f"Contact: <sip:{LOCALHOST}:{tls_port(sw)};transport=tls>" in invite.group(0), invite.group(0)
        # Media through the bridge, both ways: the gateway heard the caller's tone and the
        # caller heard the gateway's.
        assert gateway.recorded_dbfs() > -30, gateway.describe()
        rtp_sink.wait_quiet(0.3, timeout=3)
        voiced = voiced_audio(rtp_sink, 0)
        assert len(voiced) >= 8000 * 1.0, f"{len(voiced) / 8000:.2f}s of the gateway's tone reached the caller"
        assert abs(dbfs(voiced) - TONE_DBFS) < 3, f"{dbfs(voiced):.1f} dBFS, sent {TONE_DBFS:.1f}"
    stop_clean(sw)


def test_a_gateway_we_cannot_trust_fails_the_leg_with_503_and_no_invite_reaches_it(
        switch, bridge_app, sipp, rtp_sink: RtpSink, pki: Pki, tmp_path: Path):  # fmt: skip
    with gateway_phone(tmp_path, pki.rogue_cert, pki.rogue_key) as gateway:
        sw = tls_gateway_switch(switch, bridge_app, gateway, pki)
        rc = sipp("uac_expect_final", sw, keys={"rtpport": rtp_sink.port}, timeout=15)
        assert rc.ok and rc.final_status() == 503, rc.describe() + "\n" + sw.log_tail()
        assert gateway.named("incoming") == [] and pjsip_saw(gateway, "RX", "Request msg INVITE") == []
        assert re.search(r"cannot call sip:\w+@127\.0\.0\.1:\d+;transport=tls: TLS to 127\.0\.0\.1 .* failed: "
                         r"the peer's certificate was refused: self.signed certificate", sw.log_text()), sw.log_tail()
    stop_clean(sw)


def test_no_tls_verify_lets_a_lab_trunk_with_a_self_signed_certificate_through(
        switch, bridge_app, sipp, rtp_sink: RtpSink, pki: Pki, tmp_path: Path):  # fmt: skip
    with gateway_phone(tmp_path, pki.rogue_cert, pki.rogue_key) as gateway:
        sw = tls_gateway_switch(switch, bridge_app, gateway, pki, "--no-tls-verify")
        rc = sipp("uac_hangup", sw, keys={"rtpport": rtp_sink.port}, pause_ms=500, timeout=15)
        assert rc.ok and rc.final_status() == 200, rc.describe() + "\n" + gateway.describe()
        assert pjsip_saw(gateway, "RX", "Request msg INVITE") == ["TLS"], gateway.describe()
        gateway.wait_event("disconnected", timeout=10)
    stop_clean(sw)


def tls_options(addr: tuple[str, int], ca: Path) -> bytes:
    """An OPTIONS over a verified TLS connection; the response's bytes."""
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(addr, timeout=3) as raw, ctx.wrap_socket(raw, server_hostname=addr[0]) as conn:
        here = conn.getsockname()[:2]
        request = sip_request("OPTIONS", addr, here, omit=("Via",),
                              extra_headers=(f"Via: SIP/2.0/TLS {here[0]}:{here[1]};branch=z9hG4bK-tls1;rport",))
        conn.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        return data


def test_plain_sip_sent_to_the_tls_port_is_closed_and_logged_and_tls_still_serves(switch, pki: Pki):
    sw = switch("reject486", [*tls_args(pki), "--control", f"{LOCALHOST}:{free_tcp_port()}"])
    addr = (LOCALHOST, tls_port(sw))
    with socket.create_connection(addr, timeout=3) as conn:
        conn.sendall(sip_request("OPTIONS", addr, conn.getsockname()[:2]))
        assert conn.recv(100) == b"", "plain SIP on the TLS port must close the connection, not hang"
    assert re.search(r"TLS connection from 127\.0\.0\.1:\d+ failed: not TLS \(plain SIP over TCP sent to the TLS "
                     r"port\?\)", sw.log_text()), sw.log_tail()
    answer = tls_options(addr, pki.ca)
    assert answer.startswith(b"SIP/2.0 200 "), answer
    assert b"Via: SIP/2.0/TLS" in answer, answer
    samples = scrape(sw)
    assert metric(samples, "softswitch_sip_tls_failures_total") == 1, samples
    assert metric(samples, "softswitch_sip_tcp_connections") == 0, samples
    stop_clean(sw)


@pytest.mark.parametrize(("files", "says"), [
    (lambda pki, tmp: ["--tls-cert", str(tmp / "missing.pem"), "--tls-key", str(pki.key)],
     r"tls_cert '.*missing\.pem': no such file; give the certificate \(chain\) as a PEM file"),
    (lambda pki, tmp: ["--tls-cert", str(pki.cert), "--tls-key", str(pki.rogue_key)],
     r"tls_key '.*rogue-key\.pem' is not the key of tls_cert"),
    (lambda pki, tmp: [], r"tls_listen '127\.0\.0\.1:\d+' needs tls_cert and tls_key"),
])
def test_a_bad_certificate_or_key_stops_the_switch_at_startup_with_what_to_do(pki: Pki, tmp_path: Path, files,
                                                                             says: str):  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "switch.cli", "run", "--tls-listen", f"{LOCALHOST}:{free_tcp_port()}",
                             *files(pki, tmp_path), "--data-dir", str(tmp_path / "data"), "--control", "off"],
                            capture_output=True, text=True, timeout=30, env=env, cwd=REPO)
    assert result.returncode == 2, result
    assert re.search(says, result.stderr), result.stderr
    assert "Traceback" not in result.stderr, result.stderr
