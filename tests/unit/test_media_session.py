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
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data, addr) -> None:
        self.received.append((data, addr))

    @property
    def addr(self) -> tuple[str, int]:
        return self.transport.get_extra_info("sockname")[:2]

    def packets(self) -> list[RtpPacket]:
        return [parse_rtp(d) for d, _ in self.received]


async def make_peer() -> Peer:
    loop = asyncio.get_running_loop()
    _, peer = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
    return peer


async def make_session(ptime: float = 0.020, pool: RtpPortPool | None = None):
    loop = asyncio.get_running_loop()
    pool = pool or RtpPortPool(*free_port_range())
    clock = MediaClock(loop, ptime=ptime)
    session = await MediaSession.open(loop, "127.0.0.1", pool, clock, "[test]")
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
