"""RFC 3263 server location, end to end: the switch's gateway is ``sip:gw.test`` (a name, no
port), a real DNS server (dnsmasq, started here on a free port, the switch's dns_servers)
holds its NAPTR, SRV and A records, and SIPp callees listen on the ports the SRV records
say. A SIPp caller calls through the bundled bridge app."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .dns_server import DnsServer, dnsmasq_available
from .harness import LOCALHOST, RtpSink, SippResult, SwitchProcess, free_tcp_port, start_uas, stop_clean

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not dnsmasq_available(), reason="dnsmasq is not installed (scripts/setup.sh)")]


@pytest.fixture
def dns_server(tmp_path: Path) -> Iterator[Callable[..., DnsServer]]:
    started: list[DnsServer] = []

    def make(**records: list[str]) -> DnsServer:
        server = DnsServer(tmp_path / f"dns{len(started)}", **records)  # type: ignore[arg-type]
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.stop()


def srv_switch(switch: Callable[..., SwitchProcess], app: Path, tmp_path: Path, dns: DnsServer,
               failover_timeout: float = 4.0) -> SwitchProcess:
    config = tmp_path / "dns.toml"
    config.write_text(f'gateway = "sip:gw.test"\ndns_servers = ["{dns.address}"]\n'
                      f"failover_timeout = {failover_timeout}\n")
    return switch(app, ["--config", str(config), "--control", f"{LOCALHOST}:{free_tcp_port()}"])


def answered_after(rc: SippResult) -> float:
    sent = next(m.time for m in rc.messages() if m.direction == "sent" and m.method == "INVITE")
    ok = next(m.time for m in rc.messages() if m.direction == "received" and m.status == 200)
    return ok - sent


def test_a_gateway_name_without_port_is_reached_where_its_srv_record_says(
        switch, bridge_app, sipp_bg, dns_server, tmp_path: Path, rtp_sink: RtpSink) -> None:
    uas = start_uas(sipp_bg, "uas_answer_bye", pause_ms=500)
    dns = dns_server(naptr=["gw.test,10,50,S,SIP+D2U,,_sip._udp.gw.test"],
                     srv=[f"_sip._udp.gw.test,gw1.test,{uas.sip_port},10,0"], hosts=["gw1.test,127.0.0.1"])
    sw = srv_switch(switch, bridge_app(), tmp_path, dns)
    rc = sipp_bg("uac_pcmu_wait_bye", sw, keys={"rtpport": rtp_sink.port}, timeout=10).wait()
    rs = uas.wait()
    assert rc.ok and rs.ok, rc.describe() + rs.describe()
    assert rc.final_status() == 200 and rs.received("BYE", 200), rc.describe()
    invite = rs.received("INVITE")[0]
    assert invite.first_line.startswith("INVITE sip:service@gw.test SIP/2.0"), invite.first_line  # the name stays
    asked = dns.queries()
    assert asked[:2] == [("NAPTR", "gw.test"), ("SRV", "_sip._udp.gw.test")], asked  # RFC 3263 §4.1, §4.2
    assert ("A", "gw1.test") in asked, asked
    stop_clean(sw)


@pytest.mark.parametrize("first", ["silent", "closed"])
def test_when_the_first_srv_server_is_dead_the_call_connects_via_the_second(
        switch, bridge_app, sipp_bg, dns_server, tmp_path: Path, rtp_sink: RtpSink, first: str) -> None:
    """RFC 3263 §4.3: the priority-10 server never answers (a socket that swallows the
    INVITE, or a port nothing listens on: an unconnected UDP socket hears no ICMP error);
    after failover_timeout (1 s, far below Timer B's 32 s at the default T1) the INVITE
    goes to the priority-20 server, a SIPp callee, and the call is answered."""
    uas = start_uas(sipp_bg, "uas_answer_bye", pause_ms=500)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as dead:
        dead.bind((LOCALHOST, 0))
        dead_port = dead.getsockname()[1]
        if first == "closed":
            dead.close()
        dns = dns_server(srv=[f"_sip._udp.gw.test,gw1.test,{dead_port},10,0",
                              f"_sip._udp.gw.test,gw2.test,{uas.sip_port},20,0"],
                         hosts=["gw1.test,127.0.0.1", "gw2.test,127.0.0.1"])
        sw = srv_switch(switch, bridge_app(), tmp_path, dns, failover_timeout=1.0)
        rc = sipp_bg("uac_pcmu_wait_bye", sw, keys={"rtpport": rtp_sink.port}, timeout=15).wait()
        rs = uas.wait()
        swallowed = drain(dead, 1.0) if first == "silent" else []
    assert rc.ok and rs.ok, rc.describe() + rs.describe()
    assert rc.final_status() == 200 and rs.received("BYE", 200), rc.describe()
    took = answered_after(rc)
    assert 1.0 <= took <= 3.0, f"answered {took:.2f} s after the INVITE; the failover timeout is 1 s"
    (invite,) = rs.received("INVITE")
    if first == "silent":
        # The dead server got the INVITE and its Timer A retransmissions (0, 0.5 s) until
        # it was given up at 1 s: then nothing more.
        assert 1 <= len(swallowed) <= 3 and all(d.startswith(b"INVITE sip:service@gw.test ") for d in swallowed), \
            [d[:60] for d in swallowed]
        branches = {re.search(rb"branch=([^;\r\n]+)", d).group(1) for d in swallowed}  # type: ignore[union-attr]
        assert len(branches) == 1 and branches.pop().decode() not in invite.text, "a new transaction for the second"
    assert re.search(rf"no response from 127\.0\.0\.1:{dead_port} within 1 s", sw.log_text()), sw.log_tail()
    stop_clean(sw)


def test_a_server_answering_503_hands_the_call_to_the_next_at_once(
        switch, bridge_app, sipp_bg, dns_server, tmp_path: Path, rtp_sink: RtpSink) -> None:
    """RFC 3263 §4.3: a 503 from the first server is a failure to fail over from; the
    caller hears none of it and is answered by the second server, without any wait."""
    out_of_service = start_uas(sipp_bg, "uas_reject_503")
    uas = start_uas(sipp_bg, "uas_answer_bye", pause_ms=500)
    dns = dns_server(srv=[f"_sip._udp.gw.test,gw1.test,{out_of_service.sip_port},10,0",
                          f"_sip._udp.gw.test,gw2.test,{uas.sip_port},20,0"],
                     hosts=["gw1.test,127.0.0.1", "gw2.test,127.0.0.1"])
    sw = srv_switch(switch, bridge_app(), tmp_path, dns)
    rc = sipp_bg("uac_pcmu_wait_bye", sw, keys={"rtpport": rtp_sink.port}, timeout=10).wait()
    r503, rs = out_of_service.wait(), uas.wait()
    assert rc.ok and rs.ok and r503.ok, rc.describe() + r503.describe() + rs.describe()
    assert rc.final_status() == 200 and 503 not in rc.statuses(), rc.statuses()
    assert r503.received("ACK"), "the 503 must be ACKed\n" + r503.describe()
    assert answered_after(rc) < 1.0, f"answered after {answered_after(rc):.2f} s: a 503 needs no timeout"
    stop_clean(sw)


def drain(sock: socket.socket, settle: float) -> list[bytes]:
    """What reached `sock`, once `settle` s passed (any retransmission would have come)."""
    time.sleep(settle)
    sock.setblocking(False)
    out = []
    while True:
        try:
            out.append(sock.recv(65535))
        except BlockingIOError:
            return out
