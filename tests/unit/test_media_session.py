"""MediaSession over real UDP sockets on 127.0.0.1."""

import asyncio
import logging
import socket
import wave

import numpy as np
import pytest

from media.clock import MediaClock
from media.dtmf import dtmf_packets
from media.g711 import alaw_to_pcm, level_dbfs, ulaw_to_pcm
from media.playback import DecodedAudio, PlaybackCache
from media.ports import NoRtpPorts, RtpPortPool
from media.rtp import RtpPacket, RtpSender, parse_rtp
from media.sdp import MediaParams
from media.session import MediaSession

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request):
    """The switch runs on uvloop; its UDP error reporting differs, so test on both."""
    if request.param == "uvloop":
        if uvloop is None:
            pytest.skip("uvloop not installed")
        return uvloop.run
    return asyncio.run


def free_port_range(n: int = 40) -> tuple[int, int]:
    """A port range unlikely to collide: around an ephemeral port the kernel gave us."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    base = s.getsockname()[1]
    s.close()
    base = min(base, 65535 - n) & ~1
    return base, base + n - 1


class Peer(asyncio.DatagramProtocol):
    """A plain UDP socket standing in for the phone."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, tuple]] = []
        self.times: list[float] = []  # loop time of each datagram, in order
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data, addr) -> None:
        self.received.append((data, addr))
        self.times.append(asyncio.get_running_loop().time())

    @property
    def addr(self) -> tuple[str, int]:
        return self.transport.get_extra_info("sockname")[:2]

    def packets(self) -> list[RtpPacket]:
        return [parse_rtp(d) for d, _ in self.received]


async def make_peer() -> Peer:
    loop = asyncio.get_running_loop()
    _, peer = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
    return peer


async def make_session(ptime: float = 0.020, pool: RtpPortPool | None = None, **kw):
    """kw: MediaSession.open's rtcp= and keepalive= (both off by default)."""
    loop = asyncio.get_running_loop()
    pool = pool or RtpPortPool(*free_port_range())
    clock = MediaClock(loop, ptime=ptime)
    session = await MediaSession.open(loop, "127.0.0.1", pool, clock, "[test]", **kw)
    return session, pool, clock


def params_to(peer: Peer, codec: str = "PCMU", direction: str = "sendrecv") -> MediaParams:
    return MediaParams(codec, 0 if codec == "PCMU" else 8, 101, peer.addr, direction)


def tone_audio(seconds: float) -> DecodedAudio:
    t = np.arange(int(8000 * seconds)) / 8000
    return DecodedAudio.from_pcm((12000 * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes())


def test_play_one_second_wav_to_plain_socket(tmp_path, run):
    t = np.arange(8000) / 8000
    with wave.open(str(tmp_path / "tone.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes((12000 * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes())

    async def main():
        loop = asyncio.get_running_loop()
        audio = await PlaybackCache().get("tone.wav", tmp_path)
        peer = await make_peer()
        session, pool, clock = await make_session()
        session.configure(params_to(peer))
        done = loop.create_future()
        completions = []

        def on_complete():
            completions.append(loop.time())
            done.set_result(None)

        start = loop.time()
        session.play(audio, loop=False, on_complete=on_complete)
        await asyncio.wait_for(done, 3)
        elapsed = loop.time() - start
        await asyncio.sleep(0.1)  # late packets or a second completion would show up here
        pkts = peer.packets()
        assert len(pkts) == 50
        assert 0.9 < elapsed < 1.5  # paced in real time, not a burst
        assert {p.payload_type for p in pkts} == {0}
        assert {len(p.payload) for p in pkts} == {160}
        assert len({p.ssrc for p in pkts}) == 1
        for a, b in zip(pkts, pkts[1:]):
            assert b.sequence_number == (a.sequence_number + 1) % 65536
            assert b.timestamp == (a.timestamp + 160) % 2**32
        assert [p.marker for p in pkts] == [True] + [False] * 49
        pcm = ulaw_to_pcm(b"".join(p.payload for p in pkts))
        assert level_dbfs(pcm) > -12
        assert completions and len(completions) == 1
        assert {a for _, a in peer.received} == {("127.0.0.1", session.local_port)}
        st = session.stats()
        assert st["packets_sent"] == 50 and st["bytes_sent"] == 8000
        assert not session.playing and not clock.running
        session.close()
        session.close()  # idempotent
        assert pool.in_use == 0
        peer.transport.close()

    run(main())


def test_last_frame_padded_and_second_play_continues_sequence(run):
    async def main():
        loop = asyncio.get_running_loop()
        peer = await make_peer()
        session, _, _ = await make_session(ptime=0.005)
        session.configure(params_to(peer, "PCMA"))
        audio = tone_audio(0.0255)  # 204 samples: 2 frames, the 2nd padded
        done = loop.create_future()
        session.play(audio, on_complete=lambda: done.set_result(1))
        await asyncio.wait_for(done, 2)
        await asyncio.sleep(0.03)
        done2 = loop.create_future()
        session.play(audio, on_complete=lambda: done2.set_result(1))
        await asyncio.wait_for(done2, 2)
        await asyncio.sleep(0.01)
        pkts = peer.packets()
        assert len(pkts) == 4 and {p.payload_type for p in pkts} == {8}
        assert pkts[1].payload[44:] == b"\xd5" * 116
        assert pkts[1].payload[:44] == audio.alaw[160:]
        assert [p.marker for p in pkts] == [True, False, True, False]
        assert [p.sequence_number - pkts[0].sequence_number for p in pkts] == [0, 1, 2, 3]
        # The timestamp jumps over the >= 30 ms of silence between the plays.
        assert (pkts[2].timestamp - pkts[1].timestamp) % 2**32 >= 160 + 80
        assert level_dbfs(alaw_to_pcm(pkts[0].payload)) > -15
        session.close()

    run(main())


def test_new_play_replaces_and_stop_and_loop(run):
    async def main():
        loop = asyncio.get_running_loop()
        peer = await make_peer()
        session, _, clock = await make_session(ptime=0.005)
        session.configure(params_to(peer))
        completed = []
        session.play(tone_audio(1.0), on_complete=lambda: completed.append("first"))
        await asyncio.sleep(0.03)
        session.play(tone_audio(0.04), loop=True, on_complete=lambda: completed.append("loop"))
        await asyncio.sleep(0.1)  # ~20 frames: the 2-frame audio repeated
        session.stop_play()
        await asyncio.sleep(0.005)  # let packets already in flight arrive
        n = len(peer.received)
        await asyncio.sleep(0.03)
        assert len(peer.received) == n  # stopped means stopped
        assert completed == []
        assert not clock.running
        markers = [p.marker for p in peer.packets()]
        assert markers[0] and markers.count(True) == 2  # one per play, not per loop pass
        assert n > 10
        done = loop.create_future()
        session.play(tone_audio(0.02), on_complete=lambda: done.set_result(1))
        session.close()  # close while playing: no completion, nothing more sent
        await asyncio.sleep(0.03)
        assert not done.done() and len(peer.received) == n
        with pytest.raises(RuntimeError, match="closed"):
            session.play(tone_audio(0.02))

    run(main())


def test_direction_and_codec_change_on_reinvite(run):
    async def main():
        loop = asyncio.get_running_loop()
        peer = await make_peer()
        session, _, _ = await make_session(ptime=0.005)
        session.configure(params_to(peer, direction="recvonly"))
        done = loop.create_future()
        session.play(tone_audio(0.1), on_complete=lambda: done.set_result(1))
        await asyncio.wait_for(done, 2)  # time passes on hold; the play still completes
        assert peer.received == []
        session.configure(params_to(peer, "PCMA", direction="sendrecv"))  # re-INVITE
        done = loop.create_future()
        session.play(tone_audio(0.04), on_complete=lambda: done.set_result(1))
        await asyncio.wait_for(done, 2)
        await asyncio.sleep(0.01)
        assert [p.payload_type for p in peer.packets()] == [8, 8]
        session.configure(MediaParams("PCMU", 0, None, None, "sendrecv"))  # c=0.0.0.0
        done = loop.create_future()
        session.play(tone_audio(0.04), on_complete=lambda: done.set_result(1))
        await asyncio.wait_for(done, 2)
        assert len(peer.received) == 2
        with pytest.raises(ValueError, match="PCMU and PCMA"):
            session.configure(MediaParams("G722", 9, None, None, "sendrecv"))
        session.close()

    run(main())


def test_latching_to_rtp_source(run):
    async def main():
        peer_sdp = await make_peer()  # the address the SDP advertises
        peer_real = await make_peer()  # where the phone really sends from (NAT)
        other = await make_peer()
        session, _, _ = await make_session(ptime=0.005)
        session.configure(params_to(peer_sdp))
        session.relatch_after = 0.2
        dest = ("127.0.0.1", session.local_port)
        assert session.remote_addr == peer_sdp.addr
        tx = RtpSender(ssrc=0x1111)
        peer_real.transport.sendto(tx.packet(b"\xff" * 160, 160, 0), dest)
        await asyncio.sleep(0.02)
        assert session.remote_addr == peer_real.addr
        session.play(tone_audio(0.04))
        await asyncio.sleep(0.05)
        assert len(peer_real.received) == 2 and peer_sdp.received == []
        # Same SSRC from a third address shortly after: not a new stream, keep the latch.
        other.transport.sendto(tx.packet(b"\xff" * 160, 160, 0), dest)
        await asyncio.sleep(0.02)
        assert session.remote_addr == peer_real.addr
        # A new SSRC from there: the peer restarted its stream; follow it.
        other.transport.sendto(RtpSender(ssrc=0x2222).packet(b"\xff" * 160, 160, 0), dest)
        await asyncio.sleep(0.02)
        assert session.remote_addr == other.addr
        # After relatch_after of silence from the latched address, any source may take over.
        await asyncio.sleep(0.25)
        peer_real.transport.sendto(RtpSender(ssrc=0x2222).packet(b"", 0, 0), dest)
        await asyncio.sleep(0.02)
        assert session.remote_addr == peer_real.addr
        # A re-INVITE with a new SDP address drops the latch.
        session.configure(params_to(peer_sdp, "PCMA"))
        session.configure(params_to(other))
        assert session.remote_addr == other.addr
        assert session.stats()["packets_received"] == 4
        session.close()

    run(main())


def test_dtmf_malformed_and_hooks(run):
    async def main():
        peer = await make_peer()
        session, _, _ = await make_session()
        session.configure(params_to(peer))
        digits, relayed = [], []
        session.on_dtmf = digits.append
        session.on_rtp = relayed.append
        dest = ("127.0.0.1", session.local_port)
        tx = RtpSender()
        for d in "12#":
            for j, payload in enumerate(dtmf_packets(d)):
                peer.transport.sendto(tx.packet(payload, 0, 101, marker=j == 0), dest)
            tx.advance(800 + 400)
        peer.transport.sendto(tx.packet(b"\x01", 0, 101), dest)  # short DTMF payload
        for junk in (b"\x00" * 3, b"hello world!!", b"\x40" * 20):
            peer.transport.sendto(junk, dest)
        peer.transport.sendto(bytes.fromhex("80c80006") + bytes(24), dest)  # RTCP SR
        await asyncio.sleep(0.05)
        assert digits == ["1", "2", "#"]
        assert len(relayed) == 22 and all(isinstance(p, RtpPacket) for p in relayed)
        st = session.stats()
        assert st["packets_received"] == 22
        assert st["bytes_received"] == 21 * 4 + 1
        assert st["packets_malformed"] == 4 and st["rtcp_received"] == 1
        # A hook that raises is logged, never breaks the receive path.
        session.on_dtmf = lambda d: 1 / 0
        session.on_rtp = lambda p: 1 / 0
        for payload in dtmf_packets("9"):
            peer.transport.sendto(tx.packet(payload, 0, 101), dest)
        await asyncio.sleep(0.03)
        assert session.stats()["packets_received"] == 29
        session.close()

    run(main())


def test_open_skips_ports_in_use_and_pool_exhaustion(run):
    async def main():
        low, _ = free_port_range(8)
        busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        busy.bind(("127.0.0.1", low))  # another program holds the first pool port
        try:
            pool = RtpPortPool(low, low + 5)  # 3 ports
            s1, _, clock = await make_session(pool=pool)
            assert s1.local_port == low + 2
            s2, _, _ = await make_session(pool=pool)
            assert s2.local_port == low + 4
            with pytest.raises(NoRtpPorts):
                await make_session(pool=pool)
            s1.close()
            await asyncio.sleep(0)  # the transport closes its socket on the next iteration
            s3, _, _ = await make_session(pool=pool)
            assert s3.local_port == low + 2
            assert pool.in_use == 2
            for s in (s2, s3):
                s.close()
            assert pool.in_use == 0
            await asyncio.sleep(0)
            with pytest.raises(RuntimeError, match="before configure"):
                s4, _, _ = await make_session(pool=pool)
                try:
                    s4.play(tone_audio(0.02))
                finally:
                    s4.close()
        finally:
            busy.close()

    run(main())


def test_unusable_sdp_address_send_errors_survived_until_latching(run, caplog):
    """c=IN IP6 ::1 offered to an IPv4 socket: every send fails (uvloop raises ValueError
    "socket family mismatch" from sendto, asyncio reports a gaierror to error_received).
    The playout must stay on the clock, so RTP flows as soon as latching (RFC 4961) gives
    an address the socket can reach."""

    async def main():
        loop = asyncio.get_running_loop()
        peer = await make_peer()
        session, _, clock = await make_session(ptime=0.005)
        session.configure(MediaParams("PCMU", 0, 101, ("::1", peer.addr[1]), "sendrecv"))
        session.play(tone_audio(0.04), loop=True)
        deadline = loop.time() + 2
        while session.stats()["send_errors"] < 10 and loop.time() < deadline:
            await asyncio.sleep(0.005)
        assert session.stats()["send_errors"] >= 10
        assert session.playing and len(clock) == 1 and peer.received == []
        # The phone's first RTP packet: we latch to its real (IPv4) source.
        peer.transport.sendto(RtpSender().packet(b"\xff" * 160, 160, 0), ("127.0.0.1", session.local_port))
        deadline = loop.time() + 2
        while len(peer.received) < 5 and loop.time() < deadline:
            await asyncio.sleep(0.005)
        assert len(peer.received) >= 5, session.stats()
        assert {p.payload_type for p in peer.packets()} == {0}
        assert session.remote_addr == peer.addr
        session.close()
        peer.transport.close()

    with caplog.at_level(logging.INFO):
        run(main())
    assert not [r for r in caplog.records if "failed in tick" in r.getMessage()]
    # Logged once, not per packet (asyncio counts them in error_received, unlogged).
    assert len([r for r in caplog.records if "RTP send to" in r.getMessage()]) <= 1


# --------------------------------------------------------------------------- issue 11:
# keepalive (RTP never stops while the leg may send) and RTCP on the odd port.


def assert_one_stream(pkts: list[RtpPacket], times: list[float]) -> None:
    """One SSRC, sequence numbers without a gap, and timestamps that track the arrival
    times (RFC 3550 §5.1) across every talkspurt boundary: fill, prompt, relay.

    Tracking is judged on each packet's drift, its arrival time minus the instant its
    timestamp stands for (both from the first packet). A packet the host delayed (this
    box is shared; sender and receiver share one loop) only raises its own drift, so
    the floor of the drifts is what the timestamps say: a boundary that stamps the gap
    wrong moves the floor of every packet after it. So each talkspurt (a marker starts
    one) must have its floor within 15 ms of the stream's; one of fewer than 5 packets
    (a lone SID, say), within 100 ms: too few to tell a late host from a wrong stamp."""
    assert len({p.ssrc for p in pkts}) == 1
    for a, b in zip(pkts, pkts[1:]):
        assert b.sequence_number == (a.sequence_number + 1) & 0xFFFF
    drift = [(t - times[0]) - ((p.timestamp - pkts[0].timestamp) & 0xFFFFFFFF) / 8000
             for p, t in zip(pkts, times)]
    floor = min(drift)
    starts = [0] + [i for i, p in enumerate(pkts) if p.marker and i > 0] + [len(pkts)]
    for begin, end in zip(starts, starts[1:]):
        if begin == end:
            continue
        worst = min(drift[begin:end]) - floor
        assert worst < (0.015 if end - begin >= 5 else 0.1), (
            f"packets {begin}-{end - 1} (seq {pkts[begin].sequence_number}...): their timestamps are "
            f"{worst * 1000:.1f} ms behind the arrival times, drifts {[round(d, 3) for d in drift]}")


def test_keepalive_fills_with_silence_around_a_prompt(run):
    async def main():
        loop = asyncio.get_running_loop()
        peer = await make_peer()
        session, _, clock = await make_session(keepalive="silence")
        start = loop.time()
        session.configure(params_to(peer))
        await asyncio.sleep(0.4)
        fill = peer.packets()
        # 3 frames (60 ms) of nothing, then a 20 ms silence frame every tick
        assert 0.05 <= peer.times[0] - start <= 0.1
        assert 15 <= len(fill) <= 19, len(fill)
        assert {(p.payload_type, p.payload) for p in fill} == {(0, b"\xff" * 160)}
        assert [p.marker for p in fill] == [True] + [False] * (len(fill) - 1)
        assert max(b - a for a, b in zip(peer.times, peer.times[1:])) < 0.035
        assert len(fill) <= session.stats()["keepalive_packets"] <= len(fill) + 1  # one in flight
        done = loop.create_future()
        session.play(tone_audio(0.2), on_complete=lambda: done.set_result(1))
        assert len(clock) == 1  # the playout replaces the keepalive on the clock
        await asyncio.wait_for(done, 2)
        await asyncio.sleep(0.3)
        session.close()
        pkts = peer.packets()
        tone = [i for i, p in enumerate(pkts) if p.payload != b"\xff" * 160]
        assert len(tone) == 10 and tone == list(range(tone[0], tone[0] + 10))
        assert pkts[tone[0]].marker and pkts[tone[-1] + 1].marker  # each talkspurt marked
        assert len(pkts) - tone[-1] - 1 >= 10  # the fill came back after the prompt
        assert_one_stream(pkts, peer.times)
        peer.transport.close()

    run(main())


def test_keepalive_off_on_hold_and_without_a_peer_address(run):
    async def main():
        peer = await make_peer()
        quiet, _, _ = await make_session()  # the bare default: off
        quiet.configure(params_to(peer))
        held, _, clock = await make_session(keepalive="silence")
        held.configure(params_to(peer, direction="recvonly"))
        nowhere, _, _ = await make_session(keepalive="silence")
        nowhere.configure(MediaParams("PCMU", 0, None, None, "sendrecv"))  # c=0.0.0.0
        await asyncio.sleep(0.2)
        assert peer.received == [] and len(clock) == 0
        held.configure(params_to(peer))  # resumed
        await asyncio.sleep(0.2)
        assert len(peer.received) >= 5
        for s in (quiet, held, nowhere):
            s.close()
        with pytest.raises(ValueError, match="keepalive must be one of"):
            await make_session(keepalive="noise")

    run(main())


def test_keepalive_cn_only_where_negotiated(run):
    async def main():
        loop = asyncio.get_running_loop()
        peer, plain = await make_peer(), await make_peer()
        session, _, _ = await make_session(keepalive="cn")
        assert session.comfort_noise
        session.configure(MediaParams("PCMU", 0, 101, peer.addr, "sendrecv", cn_pt=13))
        fallback, _, _ = await make_session(keepalive="cn")
        fallback.configure(params_to(plain))  # no CN in the SDP: silence frames
        await asyncio.sleep(1.15)
        cn = peer.packets()
        assert [(p.payload_type, p.payload) for p in cn] == [(13, b"\x46")] * 2  # -70 dBov
        assert 0.95 <= peer.times[1] - peer.times[0] <= 1.1  # CN_REFRESH, on the 20 ms grid
        assert_one_stream(cn, peer.times)  # the timestamp says when each SID was sent
        assert {p.payload_type for p in plain.packets()} == {0} and len(plain.received) > 40
        done = loop.create_future()
        session.play(tone_audio(0.04), on_complete=lambda: done.set_result(1))
        await asyncio.wait_for(done, 2)
        await asyncio.sleep(0.01)
        speech = peer.packets()[2]
        assert speech.payload_type == 0 and speech.marker
        assert_one_stream(peer.packets()[:4], peer.times[:4])
        session.close(), fallback.close()

    run(main())


def test_relayed_stream_resumes_after_fill_without_going_back_in_time(run):
    """The other leg pauses (no DTX timestamps: its clock did not advance over the pause);
    our fill covers the pause, and the relayed packets after it must not reuse timestamps
    the fill already sent."""
    from media.relay import MediaRelay

    async def main():
        caller, callee = await make_peer(), await make_peer()
        a, pool, _ = await make_session()
        b, _, b_clock = await make_session(pool=pool, keepalive="silence")
        a.configure(params_to(caller))
        b.configure(params_to(callee))
        relay = MediaRelay(a, b)
        tx = RtpSender()
        dest = ("127.0.0.1", a.local_port)
        for burst in range(2):
            for i in range(10):
                caller.transport.sendto(tx.packet(bytes([i + 1]) * 160, 160, 0), dest)
                await asyncio.sleep(0.02)
            assert len(b_clock) == 0  # relayed packets flow: the keepalive only waits
            if burst == 0:
                await asyncio.sleep(0.9)  # the fill starts 0.5 s after the last relayed packet
                assert len(b_clock) == 1
        await asyncio.sleep(0.05)
        relay.stop()
        a.close(), b.close()
        pkts = callee.packets()
        relayed = [i for i, p in enumerate(pkts) if p.payload != b"\xff" * 160]
        assert len(relayed) == 20
        fill = [i for i in range(len(pkts)) if i not in relayed]
        assert 15 <= len(fill) <= 25, len(fill)  # ~0.4 s of fill inside the 0.9 s pause
        assert pkts[fill[0]].marker and pkts[relayed[10]].marker
        assert_one_stream(pkts[relayed[0]:], callee.times[relayed[0]:])

    run(main())


async def make_phone_with_rtcp() -> tuple[Peer, Peer]:
    """A phone with RTP on an even port and RTCP on the odd port above it (RFC 3550 §11)."""
    loop = asyncio.get_running_loop()
    for _ in range(50):
        low, _ = free_port_range(2)
        try:
            _, rtp = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", low))
        except OSError:
            continue
        try:
            _, rtcp = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", low + 1))
        except OSError:
            rtp.transport.close()
            continue
        return rtp, rtcp
    raise AssertionError("no free even/odd port pair")


def test_rtcp_reports_latching_peer_figures_and_bye(run, monkeypatch):
    from media import rtcp

    # Reports every 0.1-0.3 s: a smaller minimum, and bandwidth enough for it (§6.2).
    monkeypatch.setattr(rtcp, "RTCP_MIN_INTERVAL", 0.2)
    monkeypatch.setattr(rtcp, "RTCP_BANDWIDTH_FRACTION", 1.0)

    async def main():
        loop = asyncio.get_running_loop()
        phone, phone_rtcp = await make_phone_with_rtcp()
        session, _, _ = await make_session(rtcp=True, keepalive="silence")
        session.configure(params_to(phone))
        # The phone talks, losing 2 of 12 packets on the way; its jitter is ~0.
        tx = RtpSender()
        for i in range(12):
            pkt = tx.packet(b"\xff" * 160, 160, 0)
            if i not in (4, 5):
                phone.transport.sendto(pkt, ("127.0.0.1", session.local_port))
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.4)
        reports = [rtcp.parse_compound(d) for d, _ in phone_rtcp.received]
        assert len(reports) >= 2
        for r in reports:
            assert isinstance(r[0], (rtcp.SenderReport, rtcp.ReceiverReport))  # §6.1: first
            assert isinstance(r[1], rtcp.SourceDescription) and r[1].chunks[0].cname
        # An RR only if the (shortened) first interval ended before the keepalive's first
        # packet; from then on we are a sender.
        assert all(isinstance(r[0], rtcp.SenderReport) for r in reports[1:])
        ours = session._sender.ssrc
        assert {r[0].ssrc for r in reports} == {ours} == {p.ssrc for p in phone.packets()}
        assert {a for _, a in phone_rtcp.received} == {("127.0.0.1", session.local_port + 1)}
        last = reports[-1][0]
        (block,) = last.reports
        assert (block.ssrc, block.cumulative_lost, block.highest_seq & 0xFFFF) == (
            tx.ssrc, 2, (tx.sequence_number - 1) & 0xFFFF)
        assert last.packet_count <= len(phone.received)
        st = session.stats()
        assert st["lost"] == 2 and st["jitter_ms"] is not None and st["jitter_ms"] < 10
        assert st["peer_fraction_lost"] is None and st["rtcp_sent"] == len(reports)
        # The phone reports from another port (a NAT): 50% lost lately, 7 in all, 10 ms
        # jitter, LSR/DLSR of our last SR. Our reports follow it there (RFC 4961).
        _, nat = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
        rr = rtcp.ReceiverReport(tx.ssrc, (rtcp.ReportBlock(ours, 128, 7, 1000, 80,
                                                            rtcp.ntp_middle(last.ntp_timestamp), 0),))
        nat.transport.sendto(bytes(rr) + bytes(rtcp.SourceDescription((rtcp.SdesChunk(tx.ssrc, ((1, b"phone"),)),))),
                             ("127.0.0.1", session.local_port + 1))
        await asyncio.sleep(0.4)
        st = session.stats()
        assert (st["peer_fraction_lost"], st["peer_cumulative_lost"], st["peer_jitter_ms"]) == (0.5, 7, 10.0)
        assert st["rtt_ms"] is not None and 0 <= st["rtt_ms"] < 1000
        assert st["rtcp_received"] == 1 and st["rtcp_malformed"] == 0
        assert nat.received, "RTCP did not latch to where the phone's came from"
        session.close()
        await asyncio.sleep(0.05)
        bye = rtcp.parse_compound(nat.received[-1][0])
        assert isinstance(bye[-1], rtcp.Bye) and bye[-1].ssrcs == (ours,)
        for p in (phone, phone_rtcp, nat):
            p.transport.close()

    run(main())


def test_rtcp_port_taken_means_a_leg_without_rtcp(run, caplog):
    async def main():
        low, _ = free_port_range(2)
        busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        busy.bind(("127.0.0.1", low + 1))
        try:
            peer = await make_peer()
            pool = RtpPortPool(low, low + 1)
            session, _, _ = await make_session(pool=pool, rtcp=True, keepalive="silence")
            assert session.local_port == low
            session.configure(params_to(peer))
            await asyncio.sleep(0.2)
            assert len(peer.received) >= 5  # RTP is unaffected
            assert session.stats()["rtcp_sent"] == 0
            session.close()
            assert pool.in_use == 0
        finally:
            busy.close()

    with caplog.at_level(logging.WARNING):
        run(main())
    assert any("RTCP port" in r.getMessage() and "without RTCP" in r.getMessage() for r in caplog.records)


def test_rtcp_muxed_on_the_rtp_port_is_consumed(run):
    from media import rtcp

    async def main():
        phone = await make_peer()
        session, _, _ = await make_session()
        session.configure(params_to(phone))
        rr = rtcp.ReceiverReport(5, (rtcp.ReportBlock(session._sender.ssrc, 64, 3, 0, 16),))
        phone.transport.sendto(bytes(rr), ("127.0.0.1", session.local_port))
        phone.transport.sendto(b"\x80\xc9\x00\x05" + bytes(4), ("127.0.0.1", session.local_port))  # truncated
        await asyncio.sleep(0.05)
        st = session.stats()
        assert (st["rtcp_received"], st["rtcp_malformed"], st["packets_malformed"]) == (2, 1, 0)
        assert (st["peer_fraction_lost"], st["peer_cumulative_lost"], st["peer_jitter_ms"]) == (0.25, 3, 2.0)
        session.close()

    run(main())


# What the session is configured with: CN (RFC 3389) only when the leg asks for it, and
# the peer's RFC 3605 a=rtcp.

CN_OFFER = (
    "v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n"
    "m=audio 4000 RTP/AVP 0 13 101\r\na=rtpmap:101 telephone-event/8000\r\n"
)


def test_cn_is_negotiated_only_when_asked():
    from media.sdp import SessionDescription, accept_answer, answer_offer, make_offer

    offer = SessionDescription.parse(CN_OFFER)
    plain, params = answer_offer(offer, "10.0.0.1", 20000, 1, 1)
    assert plain.media[0].fmts == ["0", "101"] and params.cn_pt is None  # as before CN existed
    answer, params = answer_offer(offer, "10.0.0.1", 20000, 1, 1, cn=True)
    assert answer.media[0].fmts == ["0", "101", "13"] and params.cn_pt == 13
    assert "a=rtpmap:13 CN/8000\r\n" in str(answer)
    dynamic = SessionDescription.parse(CN_OFFER.replace("0 13 101", "0 98 101") + "a=rtpmap:98 CN/8000\r\n")
    assert answer_offer(dynamic, "10.0.0.1", 20000, 1, 1, cn=True)[1].cn_pt == 98
    ours = make_offer("10.0.0.1", 20000, 1, 1, cn=True)
    assert ours.media[0].fmts == ["0", "8", "101", "13"]
    assert make_offer("10.0.0.1", 20000, 1, 1).media[0].fmts == ["0", "8", "101"]
    assert accept_answer(ours, offer).cn_pt == 13
    assert accept_answer(ours, SessionDescription.parse(CN_OFFER.replace(" 13", ""))).cn_pt is None
    assert accept_answer(make_offer("10.0.0.1", 20000, 1, 1), offer).cn_pt is None  # we did not offer it


@pytest.mark.parametrize("line,expected", [
    ("a=rtcp:4001 IN IP4 192.168.1.10", ("192.168.1.10", 4001)),
    ("a=rtcp:5003", ("10.0.0.2", 5003)),
    ("a=rtcp:nope", None),
    ("a=rtcp:4001 IN IP4 phone.example.com", None),  # sendto() would resolve it, blocking
])
def test_rfc3605_rtcp_attribute(line, expected):
    from media.sdp import SessionDescription, answer_offer

    offer = SessionDescription.parse(CN_OFFER + line + "\r\n")
    assert answer_offer(offer, "10.0.0.1", 20000, 1, 1)[1].rtcp_addr == expected


def test_rtcp_goes_to_the_rfc3605_address(run, monkeypatch):
    from media import rtcp

    monkeypatch.setattr(rtcp, "RTCP_MIN_INTERVAL", 0.2)
    monkeypatch.setattr(rtcp, "RTCP_BANDWIDTH_FRACTION", 1.0)

    async def main():
        phone, elsewhere = await make_peer(), await make_peer()
        session, _, _ = await make_session(rtcp=True)
        session.configure(MediaParams("PCMU", 0, None, phone.addr, "sendrecv", rtcp_addr=elsewhere.addr))
        await asyncio.sleep(0.3)
        session.close()
        assert elsewhere.received and all(isinstance(rtcp.parse_compound(d)[0], rtcp.ReceiverReport)
                                          for d, _ in elsewhere.received)
        assert phone.received == []  # keepalive off: no RTP

    run(main())


def test_srtp_leg_protects_what_it_sends_and_drops_what_fails_authentication(run, caplog, monkeypatch):
    from dataclasses import replace

    from media import rtcp, sdes
    from media.srtp import SrtpContext

    monkeypatch.setattr(rtcp, "RTCP_MIN_INTERVAL", 0.2)
    monkeypatch.setattr(rtcp, "RTCP_BANDWIDTH_FRACTION", 1.0)
    suite = "AES_CM_128_HMAC_SHA1_80"
    ours, theirs = sdes.new_key(suite), sdes.new_key(suite)
    phone_srtp = SrtpContext(sdes.SrtpKeys(suite, theirs, ours))  # the phone's end of the keys

    async def main():
        phone, phone_rtcp = await make_phone_with_rtcp()
        forger = await make_peer()
        session, _, _ = await make_session(ptime=0.005, rtcp=True)
        session.configure(replace(params_to(phone), srtp=sdes.SrtpKeys(suite, ours, theirs)))
        assert session.srtp_suite == suite
        relayed: list[RtpPacket] = []
        session.on_rtp = relayed.append
        dest = ("127.0.0.1", session.local_port)
        session.play(tone_audio(0.1))
        tx = RtpSender(ssrc=0x5150)
        for _ in range(5):
            phone.transport.sendto(phone_srtp.protect_rtp(tx.packet(b"\x55" * 160, 160, 0)), dest)
        genuine = phone_srtp.protect_rtp(tx.packet(b"\x55" * 160, 160, 0))
        forged = bytearray(genuine)
        forged[30] ^= 0xFF
        with caplog.at_level(logging.WARNING, logger="media.session"):
            forger.transport.sendto(bytes(forged), dest)  # tampered, from another address
            forger.transport.sendto(tx.packet(b"\x55" * 160, 160, 0), dest)  # plain RTP
            phone.transport.sendto(genuine, dest)
            phone.transport.sendto(genuine, dest)  # replayed
            await asyncio.sleep(0.4)
        # What the phone got is SRTP: not G.711 on the wire, the tone once decrypted.
        wire = [d for d, _ in phone.received]
        assert len(wire) >= 5 and all(len(d) == 12 + 160 + 10 for d in wire)  # + the 80-bit tag
        plain = [parse_rtp(phone_srtp.unprotect_rtp(d)) for d in wire]
        assert {p.ssrc for p in plain} == {session._sender.ssrc}
        assert level_dbfs(ulaw_to_pcm(b"".join(p.payload for p in plain))) > -20
        assert all(parse_rtp(d).payload != p.payload for d, p in zip(wire, plain, strict=True))
        # Its reports were SRTCP, ours to it too; the forger's packets went nowhere.
        assert phone_rtcp.received and all(parse_compound_srtcp(phone_srtp, d) for d, _ in phone_rtcp.received)
        assert [p.payload for p in relayed] == [b"\x55" * 160] * 6
        assert session.remote_addr == phone.addr  # not latched to the forger
        st = session.stats()
        assert st["srtp_dropped"] == 3 and st["packets_received"] == 6
        drops = [r for r in caplog.records if "dropped" in r.getMessage()]
        assert len(drops) == 1, [r.getMessage() for r in drops]  # rate-limited: one line
        assert "authentication failure" in drops[0].getMessage()
        # A re-key (re-INVITE with new keys) drops the old context: the old key fails now.
        session.configure(replace(params_to(phone), srtp=sdes.SrtpKeys(suite, ours, sdes.new_key(suite))))
        phone.transport.sendto(phone_srtp.protect_rtp(tx.packet(b"\x55" * 160, 160, 0)), dest)
        await asyncio.sleep(0.05)
        assert session.stats()["srtp_dropped"] == 4 and len(relayed) == 6
        session.close()

    def parse_compound_srtcp(ctx: SrtpContext, data: bytes) -> bool:
        return bool(rtcp.parse_compound(ctx.unprotect_rtcp(data)))

    run(main())
