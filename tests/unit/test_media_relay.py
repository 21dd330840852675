"""MediaRelay between two real MediaSessions on 127.0.0.1 (the B2BUA media plane)."""

import asyncio

from media.dtmf import dtmf_packets
from media.g711 import ULAW_TO_ALAW
from media.relay import MediaRelay
from media.rtp import RtpSender
from media.sdp import MediaParams

from test_media_session import make_peer, make_session


def params(peer, codec: str, pt: int, dtmf_pt: int | None) -> MediaParams:
    return MediaParams(codec=codec, pt=pt, dtmf_pt=dtmf_pt, remote_addr=peer.addr, direction="sendrecv")


async def _bridge(caller_codec=("PCMU", 0, 101), callee_codec=("PCMU", 0, 101)):
    a, pool, clock = await make_session()
    b = (await make_session(pool=pool))[0]
    caller, callee = await make_peer(), await make_peer()
    a.configure(params(caller, *caller_codec))
    b.configure(params(callee, *callee_codec))
    return a, b, caller, callee, MediaRelay(a, b)


def test_same_codec_passes_payload_with_our_ssrc_seq_and_timestamp():
    async def main():
        a, b, caller, callee, relay = await _bridge()
        sender = RtpSender(ssrc=0x11111111, sequence_number=65534, timestamp=1000)
        payloads = [bytes([i]) * 160 for i in range(5)]
        for p in payloads:
            caller.transport.sendto(sender.packet(p, 160, 0), ("127.0.0.1", a.local_port))
        await asyncio.sleep(0.1)
        got = callee.packets()
        assert [p.payload for p in got] == payloads
        assert {p.ssrc for p in got} == {b._sender.ssrc} and b._sender.ssrc != 0x11111111
        assert [(q.sequence_number - p.sequence_number) & 0xFFFF for p, q in zip(got, got[1:])] == [1] * 4
        assert [(q.timestamp - p.timestamp) & 0xFFFFFFFF for p, q in zip(got, got[1:])] == [160] * 4
        assert got[0].marker and not any(p.marker for p in got[1:])
        assert relay.stats()["a_to_b"] == 5
        relay.stop()
        a.close(), b.close()

    asyncio.run(main())


def test_pcmu_to_pcma_is_transcoded_and_the_reverse_direction_works():
    async def main():
        a, b, caller, callee, relay = await _bridge(callee_codec=("PCMA", 8, None))
        ulaw = bytes(range(160))
        caller.transport.sendto(RtpSender().packet(ulaw, 160, 0), ("127.0.0.1", a.local_port))
        callee.transport.sendto(RtpSender().packet(b"\xd5" * 160, 160, 8), ("127.0.0.1", b.local_port))
        await asyncio.sleep(0.1)
        (to_callee,) = callee.packets()
        assert to_callee.payload_type == 8 and to_callee.payload == ulaw.translate(ULAW_TO_ALAW)
        (to_caller,) = caller.packets()
        assert to_caller.payload_type == 0 and len(to_caller.payload) == 160
        relay.stop()
        a.close(), b.close()

    asyncio.run(main())


def test_rfc4733_digits_get_the_callee_pt_and_unknown_pts_are_dropped():
    async def main():
        a, b, caller, callee, relay = await _bridge(callee_codec=("PCMU", 0, 96))
        sender = RtpSender()
        for payload in dtmf_packets("5"):
            caller.transport.sendto(sender.packet(payload, 0, 101), ("127.0.0.1", a.local_port))
        caller.transport.sendto(sender.packet(b"\x00" * 20, 160, 18), ("127.0.0.1", a.local_port))  # G.729
        await asyncio.sleep(0.1)
        got = callee.packets()
        assert got and {p.payload_type for p in got} == {96}
        assert len({p.timestamp for p in got}) == 1  # one event: one timestamp
        assert relay.stats()["dropped"] == 1
        relay.stop()
        a.close(), b.close()

    asyncio.run(main())
