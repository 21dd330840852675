"""RTCP and the media keepalive against the real switch (issue 11 item 2, "Silent calls are
dropped by the phone"): a caller that sends nothing, into an app that plays nothing,
still receives RTP every 20 ms for the whole 40 s, and RFC 3550 compound RTCP on the odd
port on the §6.2 schedule; the loss the caller reports in its own RTCP comes back in the
switch's statistics for the call.

The RTCP is parsed here with struct, not with media/rtcp.py: the wire is checked by a
second implementation.
"""

from __future__ import annotations

import ast
import re
import select
import socket
import struct
import threading
import time
from typing import Any
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from .harness import LOCALHOST, RawCall, RtpSink, SwitchProcess, kernel_rx_time, SO_TIMESTAMPNS

pytestmark = pytest.mark.e2e

SILENT_CALL_S = 40.0  # the issue: longer than the 30 s after which linphone gives up
NTP_EPOCH_OFFSET = 2_208_988_800
SR, RR, SDES, BYE = 200, 201, 202, 203
# RFC 3550 §6.2/§6.3.1: T = max(5 s, bandwidth term) randomised to [0.5, 1.5] T; the first
# report uses half the minimum. Slack for the loop timer and the kernel timestamps.
FIRST_REPORT_S = (1.25 - 0.1, 3.75 + 0.3)
REPORT_INTERVAL_S = (2.5 - 0.1, 7.5 + 0.3)


@dataclass
class Datagram:
    time: float  # kernel receive time (time.time() clock)
    src: tuple[str, int]
    data: bytes


class RtcpSink:
    """The caller's RTCP port: records datagrams with their kernel receive time; sends."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.bind((LOCALHOST, port))
        self.port = port
        self.received: list[Datagram] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rtcp-sink-{port}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not select.select([self.sock], [], [], 0.05)[0]:
                continue
            try:
                data, anc, _, src = self.sock.recvmsg(65535, 64)
            except OSError:
                return
            self.received.append(Datagram(kernel_rx_time(anc) or time.time(), src, data))

    def send(self, data: bytes, dest: tuple[str, int]) -> None:
        self.sock.sendto(data, dest)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def phone() -> Iterator[tuple[RtpSink, RtcpSink]]:
    """RTP on an even port and RTCP on the odd port above it (RFC 3550 §11)."""
    for _ in range(50):
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind((LOCALHOST, 0))
        port = probe.getsockname()[1] & ~1
        probe.close()
        try:
            rtp = RtpSink(port=port)
        except OSError:
            continue
        try:
            rtcp = RtcpSink(port + 1)
        except OSError:
            rtp.sock.close()
            continue
        rtp.start()
        yield rtp, rtcp
        rtp.stop()
        rtcp.stop()
        return
    raise AssertionError("no free even/odd port pair")


def split_compound(data: bytes) -> list[tuple[int, int, bytes]]:
    """(packet type, count field, body) of each packet; asserts the RFC 3550 A.2 shape."""
    out, pos = [], 0
    while pos < len(data):
        b0, pt, words = struct.unpack_from("!BBH", data, pos)
        assert b0 >> 6 == 2, f"RTCP version {b0 >> 6}: {data.hex()}"
        end = pos + 4 + 4 * words
        assert end <= len(data), f"RTCP length overruns the datagram: {data.hex()}"
        out.append((pt, b0 & 0x1F, data[pos + 4:end]))
        pos = end
    return out


def cname_of(sdes_body: bytes) -> bytes | None:
    pos = 4  # the first chunk's SSRC
    while pos < len(sdes_body) and sdes_body[pos] != 0:
        kind, length = sdes_body[pos], sdes_body[pos + 1]
        if kind == 1:
            return sdes_body[pos + 2:pos + 2 + length]
        pos += 2 + length
    return None


def receiver_report(ssrc: int, about: int, fraction: int, cumulative: int, highest: int,
                    jitter: int, lsr: int, dlsr: int) -> bytes:
    """An RR with one report block, then SDES CNAME: what a phone sends (§6.4.2)."""
    rr = struct.pack("!BBHI", 0x81, RR, 7, ssrc) + struct.pack(
        "!IIIIII", about, (fraction << 24) | (cumulative & 0xFFFFFF), highest, jitter, lsr, dlsr)
    chunk = struct.pack("!I", ssrc) + bytes((1, 9)) + b"e2e-phone" + b"\x00"
    chunk += bytes(-len(chunk) % 4)
    return rr + struct.pack("!BBH", 0x81, SDES, len(chunk) // 4) + chunk


def answered_call(sw: SwitchProcess, rtp: RtpSink) -> tuple[RawCall, float]:
    call = RawCall(sw.sip_addr, rtp.port, pts="0 101")
    final = call.invite()
    assert final.status == 200, final.text
    call.ack()
    assert re.search(r"^m=audio \d+ RTP/AVP 0[ \r\n]", final.body, re.M), final.body
    return call, final.time


def closed_stats(sw: SwitchProcess, call_id: str) -> dict[str, object]:
    """The session's figures from its close line (debug level): what the leg logs at the
    end of the call."""
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        m = re.search(rf"rtp\[{re.escape(call_id)}\] RTP closed: (\{{.*\}})", sw.log_text())
        if m:
            return ast.literal_eval(m.group(1))  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError("no 'RTP closed' line\n" + sw.log_tail(30))


def test_a_silent_40s_call_gets_rtp_every_20ms_and_rtcp_on_the_odd_port(switch, phone):
    rtp, rtcp = phone
    sw = switch("wait_silently")
    call, answered = answered_call(sw, rtp)
    media = call.media_addr()
    switch_rtcp = (media[0], media[1] + 1)
    reports_sent = 0
    try:
        # The phone says nothing (muted, or VAD) and reports twice, like any RTP stack:
        # at ~12 s and ~30 s, with the loss and jitter it saw of the switch's stream.
        for at, fraction, cumulative, jitter in ((12.0, 26, 3, 80), (30.0, 64, 12, 160)):
            time.sleep(max(0.0, answered + at - time.time()))
            srs = [d for d in rtcp.received if split_compound(d.data)[0][0] == SR]
            assert srs and rtp.count() > 0, "no RTP or SR from the switch yet\n" + sw.log_tail(20)
            last = srs[-1]
            ntp = struct.unpack_from("!Q", last.data, 8)[0]
            ours = rtp.snapshot()[-1]
            rtcp.send(receiver_report(rtp.send_ssrc, ours.ssrc, fraction, cumulative, ours.seq, jitter,
                                      (ntp >> 16) & 0xFFFFFFFF, round((time.time() - last.time) * 65536)),
                      switch_rtcp)
            reports_sent += 1
        time.sleep(max(0.0, answered + SILENT_CALL_S - time.time()))
    finally:
        bye_sent = time.time()
        assert call.bye() == 200
        call.close()
    time.sleep(0.5)

    # --- RTP: 20 ms spacing all along, the negotiated PCMU, digital silence
    pkts = [p for p in rtp.snapshot() if p.time <= bye_sent]
    times = [p.kernel_time or p.time for p in pkts]
    assert pkts and times[0] - answered < 0.3, "the keepalive must start right after the answer"
    assert times[-1] - answered > SILENT_CALL_S - 0.5
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert max(gaps) <= 0.100, f"RTP gap of {max(gaps) * 1000:.0f} ms"
    assert 0.0195 <= (times[-1] - times[0]) / len(gaps) <= 0.0205
    assert {p.pt for p in pkts} == {0} and {len(p.payload) for p in pkts} == {160}
    assert len({p.ssrc for p in pkts}) == 1 and RtpSink.seq_gaps(pkts) == []
    assert rtp.level_dbfs(0) == float("-inf"), "the keepalive must be silence"
    assert abs(((pkts[-1].ts - pkts[0].ts) & 0xFFFFFFFF) / 8000 - (times[-1] - times[0])) < 0.1
    ssrc = pkts[0].ssrc

    # --- RTCP: compound SR + SDES CNAME from the switch's odd port, on the §6.2 schedule
    got = [d for d in rtcp.received if d.time >= answered]
    assert got and {d.src for d in got} == {switch_rtcp}, [d.src for d in got]
    compounds = [split_compound(d.data) for d in got]
    cnames = set()
    for d, packets in zip(got, compounds):
        (pt, _, body), (pt2, _, sdes) = packets[:2]
        assert (pt, pt2) == (SR, SDES), f"SR then SDES first (RFC 3550 §6.1): {d.data.hex()}"
        sr_ssrc, ntp, rtp_ts, count = struct.unpack_from("!IQII", body)
        assert sr_ssrc == ssrc
        cname = cname_of(sdes)
        assert cname, f"no CNAME: {d.data.hex()}"
        cnames.add(cname)
        sent_at = ntp / 2**32 - NTP_EPOCH_OFFSET
        assert abs(sent_at - d.time) < 0.5, "SR NTP timestamp is not wall-clock time"
        before = [p for p, t in zip(pkts, times) if t <= d.time]
        if before and d.time < bye_sent:
            assert abs(count - len(before)) <= 3, (count, len(before))
            # §6.4.1: the SR's RTP timestamp is the stream's clock at its NTP instant
            last, t_last = before[-1], times[len(before) - 1]
            expect = (last.ts + round((sent_at - t_last) * 8000)) & 0xFFFFFFFF
            assert abs(((rtp_ts - expect + 2**31) & 0xFFFFFFFF) - 2**31) < 0.05 * 8000
    assert len(cnames) == 1
    reports = [d.time for d, c in zip(got, compounds) if d.time < bye_sent]
    assert len(reports) >= 5, f"{len(reports)} RTCP reports in {SILENT_CALL_S:.0f} s"
    assert FIRST_REPORT_S[0] <= reports[0] - answered <= FIRST_REPORT_S[1], reports[0] - answered
    intervals = [b - a for a, b in zip(reports, reports[1:])]
    assert all(REPORT_INTERVAL_S[0] <= i <= REPORT_INTERVAL_S[1] for i in intervals), intervals
    # RFC 3550 §6.6: the leg's end is a BYE for its SSRC, after our SIP BYE
    bye = compounds[-1]
    assert got[-1].time >= bye_sent and bye[-1][0] == BYE
    assert struct.unpack_from("!I", bye[-1][2])[0] == ssrc

    # --- what the phone reported is in the switch's figures for the call
    stats = closed_stats(sw, call.call_id)
    assert stats["rtcp_received"] == reports_sent
    assert stats["peer_fraction_lost"] == 0.25  # 64/256
    assert stats["peer_cumulative_lost"] == 12
    assert stats["peer_jitter_ms"] == 20.0  # 160 timestamp units at 8 kHz
    assert stats["rtt_ms"] is not None and 0 <= stats["rtt_ms"] < 100  # type: ignore[operator]
    assert stats["rtcp_sent"] == len(got)
    assert stats["keepalive_packets"] == stats["packets_sent"] >= len(pkts)
    assert stats["packets_received"] == 0 and stats["jitter_ms"] is None


def hold_then_hang_up(sw: Any, rtp: Any, seconds: float) -> None:
    """An answered call that stays silent for `seconds`, then our BYE (and a moment for
    the switch's last packets, its RTCP BYE among them)."""
    call, _ = answered_call(sw, rtp)
    try:
        time.sleep(seconds)
    finally:
        assert call.bye() == 200
        call.close()
    time.sleep(0.3)


def test_keepalive_off_sends_no_rtp_but_rtcp_goes_on_as_receiver_reports(switch, phone):
    rtp, rtcp = phone
    sw = switch("wait_silently", ["--media-keepalive", "off"])
    hold_then_hang_up(sw, rtp, 4.0)
    assert rtp.count() == 0
    first = [split_compound(d.data) for d in rtcp.received]
    assert first, "no RTCP within 4 s (the first report is due within 3.75 s)"
    (pt, count, _), (pt2, _, _) = first[0][:2]
    assert (pt, count, pt2) == (RR, 0, SDES), "a leg that sent nothing reports as a receiver"
    # §6.3.7: a participant that sent RTCP says BYE when it leaves
    assert first[-1][-1][0] == BYE


def test_no_rtcp_flag_keeps_the_odd_port_quiet(switch, phone):
    rtp, rtcp = phone
    sw = switch("wait_silently", ["--no-rtcp"])
    hold_then_hang_up(sw, rtp, 4.0)
    assert rtp.count() >= 150, "the keepalive does not depend on RTCP"
    assert rtcp.received == []
    assert "+1 RTCP" not in sw.log_text()
