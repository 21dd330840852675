"""media/rtcp.py on fixed inputs: packets against hand-assembled octets, RFC 3550 A.1/A.3/A.8
statistics against hand-computed values, the §6.2/§6.3 interval, and two RtcpSessions
exchanging reports on virtual time."""

from __future__ import annotations

import random

import pytest

from media.rtcp import (
    G711_SESSION_BANDWIDTH,
    NTP_EPOCH_OFFSET,
    Bye,
    OtherRtcp,
    ReceiverReport,
    ReceptionStats,
    ReportBlock,
    RtcpSession,
    SdesChunk,
    SenderReport,
    SourceDescription,
    build_compound,
    ntp_middle,
    ntp_timestamp,
    parse_compound,
    rtcp_interval,
)

H = bytes.fromhex

# An SR with one report block, assembled field by field (RFC 3550 §6.4.1):
SR_HEX = (
    "81c8000c"  # V=2 P=0 RC=1, PT=200, length 12 words (48 octets of body)
    "11223344"  # sender SSRC
    "0102030405060708"  # NTP timestamp
    "aabbccdd"  # RTP timestamp
    "00000005"  # packet count
    "00000320"  # octet count (800)
    "55667788"  # report block: source SSRC
    "40fffffe"  # fraction lost 64/256, cumulative lost -2 (24-bit two's complement)
    "00010005"  # extended highest sequence: 1 cycle, seq 5
    "00000028"  # jitter 40
    "03040506"  # LSR
    "00018000"  # DLSR 1.5 s
)
SR = SenderReport(0x11223344, 0x0102030405060708, 0xAABBCCDD, 5, 800,
                  (ReportBlock(0x55667788, 64, -2, 0x10005, 40, 0x03040506, 0x18000),))


def test_sender_report_octets_and_round_trip():
    assert bytes(SR).hex() == SR_HEX
    assert parse_compound(H(SR_HEX)) == [SR]
    assert bytes(parse_compound(H(SR_HEX))[0]) == H(SR_HEX)


def test_receiver_report_sdes_and_bye_octets():
    assert bytes(ReceiverReport(0xDEADBEEF)).hex() == "80c90001deadbeef"  # RC=0: the empty RR
    # SDES: SSRC, CNAME item (type 1, length 3, "abc"), the null end, padding to 32 bits.
    sdes = SourceDescription((SdesChunk(0xDEADBEEF, ((1, b"abc"),)),))
    assert bytes(sdes).hex() == "81ca0003" "deadbeef" "01036162" "63000000"
    assert bytes(Bye((0xDEADBEEF,), "bye")).hex() == "81cb0002" "deadbeef" "03627965"
    assert bytes(Bye((0xDEADBEEF,), "ok")).hex() == "81cb0002" "deadbeef" "026f6b00"
    assert bytes(Bye((1, 2))).hex() == "82cb0002" "00000001" "00000002"


def test_compound_round_trip_and_cname():
    packets = [
        ReceiverReport(7, (ReportBlock(9, 0, 3, 1234, 5),)),
        SourceDescription((SdesChunk(7, ((1, b"x" * 16), (6, b"softswitch"))),)),
        Bye((7,), "call ended"),
    ]
    data = build_compound(packets)
    assert len(data) % 4 == 0
    parsed = parse_compound(data)
    assert parsed == packets
    assert build_compound(parsed) == data
    assert parsed[1].chunks[0].cname == "x" * 16  # type: ignore[union-attr]


def test_sdes_with_every_null_position():
    for n in range(1, 9):  # the null end falls at each offset within a 32-bit word
        chunk = SdesChunk(1, ((1, b"c" * n),))
        data = bytes(SourceDescription((chunk, SdesChunk(2, ((1, b"d"),)))))
        assert len(data) % 4 == 0
        (sdes,) = parse_compound(data, strict=False)
        assert [c.cname for c in sdes.chunks] == ["c" * n, "d"]  # type: ignore[union-attr]


def test_the_first_interval_counts_the_sdes_the_first_report_will_carry():
    # The SDES is built only when a report goes; the §6.3.2 initial size must match it.
    for cname in ("", "a", "abc", "abcd", "x" * 16, "y" * 255):
        session = RtcpSession(7, 0.0, cname=cname or None)
        initial = session.avg_rtcp_size
        sdes = bytes(SourceDescription((SdesChunk(7, ((1, session.cname.encode()),)),)))
        assert session.report(0.0, 0, 0, 0).endswith(sdes)
        assert initial == 28 + 28 + ReportBlock.SIZE + len(sdes)  # IP+UDP, RR header + block, SDES


def test_padding_only_on_the_last_packet():
    padded_rr = H("a0c90002" "deadbeef" "00000004")  # P=1, 4 octets of padding
    assert parse_compound(padded_rr) == [ReceiverReport(0xDEADBEEF)]
    with pytest.raises(ValueError, match="not the last"):
        parse_compound(padded_rr + bytes(SourceDescription((SdesChunk(1, ((1, b"a"),)),))))


@pytest.mark.parametrize("data,message", [
    (H("40c90001deadbeef"), "version is 1"),
    (H("80c90002deadbeef"), "overruns"),
    (H("81c90001deadbeef"), "claims 1 report blocks"),
    (H("80c90001" "00000001" "81ca0002" "00000001" "01026161"), "no end"),
    (H("80c9"), "shorter than a header"),
    (H("80c90001deadbeef" "00"), "stray octets"),
    (H("a0c90001" "deadbeef"), "padding count 239"),
])
def test_malformed_rtcp_is_a_precise_value_error(data, message):
    with pytest.raises(ValueError, match=message):
        parse_compound(data)


def test_strict_compound_must_start_with_sr_or_rr():
    lone_bye = bytes(Bye((5,)))
    with pytest.raises(ValueError, match="not SR or RR"):
        parse_compound(lone_bye)
    assert parse_compound(lone_bye, strict=False) == [Bye((5,))]
    feedback = H("81cd0002" "00000001" "00000002")  # RFC 4585 RTPFB, reduced-size (RFC 5506)
    assert parse_compound(feedback, strict=False) == [OtherRtcp(205, 1, H("0000000100000002"))]


def test_cumulative_lost_saturates_at_24_bits():
    big = ReportBlock(1, 0, 10_000_000, 0, 0)
    assert ReportBlock.parse(bytes(big)).cumulative_lost == 0x7FFFFF
    assert ReportBlock.parse(bytes(ReportBlock(1, 0, -10_000_000, 0, 0))).cumulative_lost == -0x800000
    with pytest.raises(ValueError, match="fraction lost 256"):
        bytes(ReportBlock(1, 256, 0, 0, 0))


def test_ntp_timestamps():
    assert ntp_timestamp(0.0) == NTP_EPOCH_OFFSET << 32
    assert ntp_timestamp(0.5) == (NTP_EPOCH_OFFSET << 32) + (1 << 31)
    assert ntp_middle(0x0102030405060708) == 0x03040506


# --------------------------------------------------------------------------- A.1 / A.3


def feed(stats: ReceptionStats, seqs: list[int]) -> None:
    for s in seqs:
        stats.update(s & 0xFFFF, 0, 0.0)


def test_probation_then_loss_per_interval_and_cumulative():
    st = ReceptionStats(0xABC, 100)
    assert not st.update(100, 0, 0.0)  # A.1: the first packet only starts probation
    assert not st.valid and st.expected == 0 and st.lost == 0
    assert st.update(101, 0, 0.0) and st.valid  # MIN_SEQUENTIAL = 2 in a row
    feed(st, [102, 104, 105])  # 103 lost
    assert (st.received, st.expected, st.lost) == (4, 5, 1)
    block = st.report_block(now=0.0)
    # A.3: 1 lost of 5 expected in the interval -> (1 << 8) // 5 = 51
    assert (block.ssrc, block.fraction_lost, block.cumulative_lost, block.highest_seq) == (0xABC, 51, 1, 105)
    feed(st, range(106, 111))  # type: ignore[arg-type]
    block = st.report_block(now=0.0)
    assert (block.fraction_lost, block.cumulative_lost) == (0, 1)
    feed(st, [110, 110])  # duplicates are counted (A.1): cumulative loss goes negative
    block = st.report_block(now=0.0)
    assert (block.fraction_lost, block.cumulative_lost) == (0, -1)
    assert ReportBlock.parse(bytes(block)).cumulative_lost == -1


def test_sequence_wrap_counts_a_cycle():
    st = ReceptionStats(1, 65533)
    feed(st, [65533, 65534, 65535, 0, 1])
    assert st.extended_max == 65536 + 1
    assert (st.expected, st.received, st.lost) == (4, 4, 0)
    assert st.report_block(0.0).highest_seq == 0x00010001


def test_large_jump_resyncs_after_two_packets():
    st = ReceptionStats(1, 999)
    feed(st, [999, 1000])
    assert not st.update(20000, 0, 0.0)  # a jump > MAX_DROPOUT: wait for confirmation
    assert st.received == 1 and st.max_seq == 1000
    assert st.update(20001, 0, 0.0)  # in sequence after the jump: the sender restarted
    assert (st.base_seq, st.received, st.expected, st.lost) == (20001, 1, 1, 0)


def test_late_reordered_packet_counts_without_moving_the_maximum():
    st = ReceptionStats(1, 9)
    feed(st, [9, 10, 12, 11])
    assert (st.max_seq, st.received, st.lost) == (12, 3, 0)


# --------------------------------------------------------------------------- A.8


def test_jitter_by_hand():
    st = ReceptionStats(1, 0)
    st.update(0, 0, 0.0)  # probation: no timing
    # (seq, timestamp, arrival s): transits in RTP units are 0, 0, 40, 0
    for seq, ts, arrival in [(1, 0, 0.000), (2, 160, 0.020), (3, 320, 0.045), (4, 480, 0.060)]:
        st.update(seq, ts, arrival)
    # J: 0 -> 0 + (0-0)/16 = 0 -> 0 + (40-0)/16 = 2.5 -> 2.5 + (40-2.5)/16 = 4.84375
    assert st.jitter == pytest.approx(4.84375)
    assert st.jitter_ms == pytest.approx(4.84375 / 8)
    assert st.report_block(0.0).jitter == 4
    st.update(5, 640, 0.100, timing=False)  # an RFC 4733 event: sequence only
    assert st.jitter == pytest.approx(4.84375) and st.received == 5


def test_jitter_ignores_timestamp_wrap():
    st = ReceptionStats(1, 0)
    st.update(0, 0, 0.0)
    base = 2**32 - 320
    for i in range(4):
        st.update(1 + i, (base + 160 * i) & 0xFFFFFFFF, 0.02 * i)
    assert st.jitter == pytest.approx(0.0, abs=1e-6)


def test_lsr_and_dlsr():
    st = ReceptionStats(1, 0)
    feed(st, [0, 1])
    assert (st.report_block(5.0).lsr, st.report_block(5.0).dlsr) == (0, 0)  # no SR yet
    st.sender_report(0x0102030405060708, arrival=10.0)
    block = st.report_block(now=11.5)
    assert (block.lsr, block.dlsr) == (0x03040506, 98304)  # 1.5 s in 1/65536 s


# --------------------------------------------------------------------------- §6.2 / §6.3


def test_interval_minimum_and_randomisation():
    rtcp_bw = G711_SESSION_BANDWIDTH * 0.05  # 500 octets/s
    assert rtcp_bw == 500
    # Two members of 100-octet reports: 0.4 s of bandwidth, so the 5 s minimum rules.
    assert rtcp_interval(2, 2, rtcp_bw, True, 100, False, rng=lambda: 0.5) == 5.0
    assert rtcp_interval(2, 2, rtcp_bw, True, 100, False, rng=lambda: 0.0) == 2.5
    assert rtcp_interval(2, 2, rtcp_bw, True, 100, True, rng=lambda: 0.5) == 2.5  # initial: half
    samples = [rtcp_interval(2, 1, rtcp_bw, False, 100, False, rng=random.Random(7).random)
               for _ in range(200)]
    assert all(2.5 <= t < 7.5 for t in samples)


def test_interval_bandwidth_bound_and_sender_share():
    # 100 members, all senders: 100 * 100 / 500 = 20 s
    assert rtcp_interval(100, 100, 500, True, 100, False, rng=lambda: 0.5) == 20.0
    # senders <= 25%: senders share a quarter of the bandwidth, receivers the rest (§6.2)
    assert rtcp_interval(100, 10, 500, True, 100, False, rng=lambda: 0.5) == 100 * 10 / 125
    assert rtcp_interval(100, 10, 500, False, 100, False, rng=lambda: 0.5) == 100 * 90 / 375
    with pytest.raises(ValueError):
        rtcp_interval(0, 0, 500, False, 100, False)


# --------------------------------------------------------------------------- sessions


def test_two_sessions_exchange_reports_loss_and_rtt():
    a = RtcpSession(0xA, now=0.0, cname="alice", wallclock_offset=1000.0, rng=lambda: 0.5)
    b = RtcpSession(0xB, now=0.0, cname="bob", wallclock_offset=1000.0, rng=lambda: 0.5)
    assert a.deadline == 2.5  # §6.2 reduced initial interval, randomised by 0.5 + 0.5
    # b receives 10 RTP packets from a, seq 0..10 with 4 missing
    src = b.rtp_source(0xA, 0)
    for seq in [0, 1, 2, 3, 5, 6, 7, 8, 9, 10]:
        src.update(seq, 160 * seq, 0.02 * seq)
    # a sends an SR at 2.5 s (it sent 11 packets of 160 octets)
    sr = a.report(2.5, packets_sent=11, octets_sent=1760, rtp_timestamp=1760)
    first, sdes = parse_compound(sr)
    assert isinstance(first, SenderReport) and first.packet_count == 11 and first.reports == ()
    assert first.ntp_timestamp == ntp_timestamp(1002.5) and first.rtp_timestamp == 1760
    assert isinstance(sdes, SourceDescription) and sdes.chunks[0].cname == "alice"
    assert a.deadline == 2.5 + 5.0 and not a.initial
    b.receive(sr, now=2.6)
    # b reports at 3.1 s: an RR (it sent nothing), one block about a, LSR/DLSR from the SR
    rr = b.report(3.1, packets_sent=0, octets_sent=0, rtp_timestamp=0)
    (block,) = parse_compound(rr)[0].reports  # type: ignore[union-attr]
    assert isinstance(parse_compound(rr)[0], ReceiverReport)
    expected = 10 - 1 + 1  # seq 1..10 after probation
    assert (block.ssrc, block.cumulative_lost) == (0xA, 1)
    assert block.fraction_lost == (1 << 8) // expected
    assert block.lsr == ntp_middle(ntp_timestamp(1002.5))
    assert block.dlsr == round(0.5 * 65536)
    # a hears it 50 ms later: round trip = 3.15 - 2.5 - 0.5 = 150 ms
    a.receive(rr, now=3.15)
    peer = a.peer
    assert peer is not None and peer.cumulative_lost == 1
    assert peer.fraction_lost == pytest.approx(25 / 256)
    assert peer.rtt_ms == pytest.approx(150, abs=0.1)
    assert a.peer_ssrc == 0xB and a.reports_received == 1
    assert b.lost == 1


def test_sr_while_sending_then_rr_after_two_silent_reports():
    s = RtcpSession(1, now=0.0, rng=lambda: 0.5)
    kinds = []
    for t, sent in [(2.5, 10), (7.5, 20), (12.5, 20), (17.5, 20), (22.5, 21)]:
        kinds.append(type(parse_compound(s.report(t, sent, sent * 160, 0))[0]).__name__)
    # §6.4: an SR if we sent since the report before last
    assert kinds == ["SenderReport", "SenderReport", "SenderReport", "ReceiverReport", "SenderReport"]
    assert s.reports_sent == 5


def test_own_reports_echoed_back_are_ignored():
    s = RtcpSession(1, now=0.0)
    s.receive(s.report(2.5, 5, 800, 0), now=2.6)
    assert s.peer is None and s.peer_ssrc is None and s.reports_received == 0


def test_bye_only_after_something_was_sent_and_peer_bye_is_noticed():
    s = RtcpSession(1, now=0.0, rng=lambda: 0.5)
    assert s.bye(1.0, 0, 0, 0) is None  # §6.3.7: never sent anything, no BYE
    data = s.bye(1.0, 3, 480, 0, reason="call ended")
    assert data is not None
    packets = parse_compound(data)
    assert [type(p) for p in packets] == [SenderReport, SourceDescription, Bye]
    assert packets[2] == Bye((1,), "call ended")
    other = RtcpSession(2, now=0.0)
    other.receive(data, now=1.1)
    assert other.peer_left


def test_a_new_peer_source_carries_the_old_ones_loss():
    s = RtcpSession(1, now=0.0)
    old = s.rtp_source(7, 0)
    for seq in [0, 1, 2, 5]:
        old.update(seq, 0, 0.0)
    assert s.lost == 2
    new = s.rtp_source(8, 100)
    for seq in [100, 101, 103]:
        new.update(seq, 0, 0.0)
    assert s.lost == 2 + 1


def test_rtt_below_clock_resolution_is_zero_and_nonsense_is_none():
    a = RtcpSession(0xA, now=0.0, wallclock_offset=1000.0, rng=lambda: 0.5)
    sr = parse_compound(a.report(2.5, 1, 160, 0))[0]
    lsr = ntp_middle(sr.ntp_timestamp)  # type: ignore[union-attr]
    # the peer claims it held the SR 2 ms longer than the round trip took: loopback
    rr = bytes(ReceiverReport(0xB, (ReportBlock(0xA, 0, 0, 0, 0, lsr, round(0.502 * 65536)),)))
    a.receive(rr, now=3.0)
    assert a.peer is not None and a.peer.rtt_ms == 0.0
    rr = bytes(ReceiverReport(0xB, (ReportBlock(0xA, 0, 0, 0, 0, lsr, round(5.0 * 65536)),)))
    a.receive(rr, now=3.0)
    assert a.peer is not None and a.peer.rtt_ms is None
