"""IPv6 (issue 10 item 3; RFC 5118, RFC 4566 §5.7): the switch listening on `[::]:PORT`
serves IPv4 and IPv6 callers on one port (SIPp `-i 127.0.0.1` and `-i ::1`), over UDP and
TCP; an IPv6 offer (`c=IN IP6 ::1`) is answered in IPv6 and its RTP arrives at an IPv6
sink; a bridged call joins an IPv6 leg to an IPv4 leg with media both ways; an offer in
a family the switch does not listen on gets 488 (Warning 301), never a silent call.

Skipped when this host has no IPv6 loopback (then only the unit tests speak for IPv6).
"""

from __future__ import annotations

import re
import socket
import struct

import pytest

from .harness import (
    ANSWER,
    LOCALHOST,
    LOCALHOST6,
    OFFER,
    RtpSink,
    SippResult,
    hostport,
    media_dest,
    start_bridge_switch,
    start_uas,
    stop_clean,
)
from .test_bridge import both, marked_payloads, run_threads
from .test_media_calls import GREETING_S, FRAME_S, answer_sdp, media_port


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind((LOCALHOST6, 0))
    except OSError:
        return False
    return True


pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback (::1) on this host")]


@pytest.fixture
def sink6() -> RtpSink:
    sink = RtpSink(LOCALHOST6).start()
    yield sink  # type: ignore[misc]
    sink.stop()


def assert_greeting_arrived(res: SippResult, sink: RtpSink, addrtype: str, ip: str) -> None:
    """The caller's 200 names our media in its own family, and the whole greeting came
    from there: PCMU, one stream, loud enough to be the file."""
    assert res.ok, res.describe()
    sdp = answer_sdp(res)
    assert re.search(rf"^c=IN {addrtype} {re.escape(ip)}$", sdp, re.M), sdp
    sink.wait_quiet(0.3)
    pkts = sink.snapshot()
    assert len(pkts) >= 0.9 * GREETING_S / FRAME_S, f"{len(pkts)} RTP packets at the {addrtype} sink"
    assert {p.pt for p in pkts} == {0} and len(sink.ssrcs()) == 1, (sink.payload_types(), sink.ssrcs())
    assert sink.sources() == {(ip, media_port(sdp))}, sink.sources()  # symmetric RTP, from the answer's address
    assert sink.level_dbfs(0) > -40, sink.level_dbfs(0)


def test_dual_stack_serves_an_ipv4_and_an_ipv6_caller_on_one_port(switch, sipp_bg, rtp_sink: RtpSink,
                                                                   sink6: RtpSink):
    sw = switch("greeting", host="::")
    v4 = sipp_bg("uac_pcmu_wait_bye", hostport(LOCALHOST, sw.port), keys={"rtpport": rtp_sink.port}, timeout=20)
    v6 = sipp_bg("uac_pcmu_wait_bye", hostport(LOCALHOST6, sw.port), keys={"rtpport": sink6.port}, timeout=20,
                 local_ip=LOCALHOST6)
    r4, r6 = v4.wait(), v6.wait()
    assert_greeting_arrived(r4, rtp_sink, "IP4", LOCALHOST)
    assert_greeting_arrived(r6, sink6, "IP6", LOCALHOST6)
    ok6 = r6.received("INVITE", 200)[0]
    assert (ok6.header("Contact") or "").startswith(f"<sip:[::1]:{sw.port}"), ok6.text  # RFC 5118 §4.4
    assert "received=" not in (ok6.header("Via") or ""), ok6.text  # the sent-by named the source already
    assert r6.received("BYE") and "[::1]" in (r6.received("BYE")[0].header("Via") or ""), r6.describe()
    assert "Traceback" not in sw.log_text()


def test_an_ipv6_call_over_tcp(switch, sipp, sink6: RtpSink):
    sw = switch("short_greeting", host="::1")
    res = sipp("uac_pcmu_wait_bye", sw, keys={"rtpport": sink6.port}, timeout=15, local_ip=LOCALHOST6,
               extra_args=["-t", "t1"])
    assert res.ok, res.describe()
    assert "transport=tcp" in (res.received("INVITE", 200)[0].header("Contact") or ""), res.describe()
    bye = res.received("BYE")
    assert bye and (bye[0].header("Via") or "").startswith("SIP/2.0/TCP [::1]:"), res.describe()
    assert sink6.count(0) >= 20, f"{sink6.count(0)} RTP packets"


@pytest.mark.parametrize("caller_ip, callee_ip", [(LOCALHOST6, LOCALHOST), (LOCALHOST, LOCALHOST6)],
                         ids=["v6-caller-v4-callee", "v4-caller-v6-callee"])
def test_a_bridged_call_joins_the_two_families_with_media_both_ways(switch, bridge_app, sipp_bg,
                                                                    caller_ip: str, callee_ip: str):
    with RtpSink(caller_ip) as caller_sink, RtpSink(callee_ip) as callee_sink:
        uas = start_uas(sipp_bg, "uas_ring_answer", rtpport=callee_sink.port, pause_ms=300, local_ip=callee_ip)
        sw = start_bridge_switch(switch, bridge_app(), uas.sip_port, gateway_host=callee_ip, host="::")
        uac = sipp_bg("uac_hangup", hostport(caller_ip, sw.port), keys={"rtpport": caller_sink.port},
                      pause_ms=3000, timeout=15, local_ip=caller_ip)
        to_callee, _ = media_dest(uas, OFFER)
        to_caller, _ = media_dest(uac, ANSWER)
        assert to_callee[0] == callee_ip and to_caller[0] == caller_ip, (to_callee, to_caller)  # each in its family
        up, down = marked_payloads(75, 1), marked_payloads(75, 2)  # 1.5 s each way
        run_threads(lambda: caller_sink.send_frames(to_caller, up, 0),
                    lambda: callee_sink.send_frames(to_callee, down, 0))  # fmt: skip
        rc, rs = uac.wait(), uas.wait()
        assert rc.ok and rs.ok, both(rc, rs)
        invite = rs.received("INVITE")[0]
        assert invite.first_line.startswith(f"INVITE sip:service@{hostport(callee_ip, uas.sip_port)} "), invite.text
        for sink, sent, tag, name in ((callee_sink, up, 1, "caller->callee"), (caller_sink, down, 2, "callee->caller")):
            sink.wait_quiet(0.3, timeout=3)
            got = [p.payload for p in sink.snapshot(0) if p.payload[:2] == struct.pack("!H", tag)]
            assert len(got) >= 0.95 * len(sent), f"{name}: {len(got)}/{len(sent)} of our frames arrived"
            assert set(got) <= set(sent), f"{name}: payloads were altered"
        assert callee_sink.sources() == {to_callee} and caller_sink.sources() == {to_caller}
    stop_clean(sw)


@pytest.mark.parametrize("listen, local_ip, media_ip, offered", [
    (LOCALHOST, LOCALHOST, LOCALHOST6, "IP6"),  # an IPv6 offer (over IPv4 SIP) to an IPv4-only switch
    (LOCALHOST6, LOCALHOST6, LOCALHOST, "IP4"),  # an IPv4 offer (over IPv6 SIP) to an IPv6-only one
], ids=["ip6-offer-to-ipv4-switch", "ip4-offer-to-ipv6-switch"])
def test_an_offer_in_a_family_the_switch_does_not_serve_gets_488(switch, sipp, listen: str, local_ip: str,
                                                                 media_ip: str, offered: str):
    sw = switch("greeting", host=listen)
    with RtpSink(media_ip) as sink:
        res = sipp("uac_expect_final", sw, keys={"rtpport": sink.port}, timeout=10, local_ip=local_ip,
                   media_ip=media_ip)
        assert res.sent("INVITE") and f"c=IN {offered} {media_ip}" in res.sent("INVITE")[0].body, res.describe()
        assert res.final_status() == 488, res.describe()
        refused = res.received("INVITE", 488)[0]
        assert (refused.header("Warning") or "").startswith(f'301 - "the offer\'s audio is IN {offered}'), refused.text
        assert not res.received("INVITE", 200) and sink.count() == 0
    assert "socket family mismatch" not in sw.log_text() and "Traceback" not in sw.log_text()
