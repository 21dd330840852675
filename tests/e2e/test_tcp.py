"""SIP over TCP on the same port as UDP: SIPp places the call over one TCP connection
(`-t t1`); the switch answers on that connection and sends its BYE back over it."""

import pytest

from .harness import RtpSink

pytestmark = pytest.mark.e2e


def test_greeting_over_tcp(switch, rtp_sink: RtpSink, sipp):
    sw = switch("short_greeting")
    res = sipp("uac_pcmu_wait_bye", sw, keys={"rtpport": rtp_sink.port}, timeout=15,
               extra_args=["-t", "t1"])
    assert res.ok, res.describe()
    ok = res.received("INVITE", 200)
    assert ok and "transport=tcp" in (ok[0].header("Contact") or ""), res.describe()
    byes = res.received("BYE")
    assert byes and "SIP/2.0/TCP" in (byes[0].header("Via") or ""), res.describe()
    assert rtp_sink.count(0) >= 20, f"{rtp_sink.count(0)} RTP packets"


def test_tcp_framing_error_closes_only_that_connection(switch, sipp):
    import socket

    sw = switch("reject486")
    with socket.create_connection(sw.sip_addr, timeout=2) as conn:
        conn.sendall(b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKx\r\n\r\n")
        assert conn.recv(100) == b"", "a message without Content-Length on TCP must close the connection"
    res = sipp("uac_expect_final", sw, timeout=10, service="busy")  # UDP still fine
    assert res.final_status() == 486, res.describe()
