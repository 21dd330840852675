import math
import struct

import av
import numpy as np
import pytest

from media import g711
from media.rtp import RtpPacket, RtpSender, is_rtcp, parse_rtp


# --- G.711 --------------------------------------------------------------------------


def _ffmpeg(name: str, data: bytes, encode: bool) -> bytes:
    if encode:
        ctx = av.CodecContext.create(name, "w")
        ctx.sample_rate, ctx.layout, ctx.format = 8000, "mono", "s16"
        frame = av.AudioFrame.from_ndarray(
            np.frombuffer(data, dtype="<i2").reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = 8000
        return b"".join(bytes(p) for p in [*ctx.encode(frame), *ctx.encode(None)])
    ctx = av.CodecContext.create(name, "r")
    ctx.sample_rate, ctx.layout = 8000, "mono"
    return b"".join(bytes(f.planes[0])[: f.samples * 2] for f in ctx.decode(av.Packet(data)))


ALL_S16 = np.arange(-32768, 32768, dtype="<i2").tobytes()


@pytest.mark.parametrize(
    "ff,enc,dec", [("pcm_mulaw", g711.pcm_to_ulaw, g711.ulaw_to_pcm),
                   ("pcm_alaw", g711.pcm_to_alaw, g711.alaw_to_pcm)],
)
def test_g711_matches_ffmpeg(ff, enc, dec):
    codes = bytes(range(256))
    assert dec(codes) == _ffmpeg(ff, codes, encode=False)
    ours, theirs = enc(ALL_S16), _ffmpeg(ff, ALL_S16, encode=True)
    # FFmpeg rounds to the nearest code, the ITU reference truncates: at most one step
    # apart in decoded value, and rarely.
    a = np.frombuffer(dec(ours), dtype="<i2").astype(int)
    b = np.frombuffer(dec(theirs), dtype="<i2").astype(int)
    x = np.frombuffer(ALL_S16, dtype="<i2").astype(int)
    assert np.mean(a != b) < 0.03
    assert np.max(np.abs(a - x)) <= 1024 and np.max(np.abs(b - x)) <= 1024
    # Chunking (the bulk path works in slices of g711._CHUNK samples) changes nothing:
    # sample by sample through the reference functions gives the same bytes.
    one = g711.linear_to_ulaw_sample if ff == "pcm_mulaw" else g711.linear_to_alaw_sample
    samples = np.frombuffer(ALL_S16, dtype="<i2").tolist()
    assert ours == bytes(one(v) for v in samples)


def test_g711_code_round_trip_and_transcoding():
    codes = bytes(range(256))
    assert g711.pcm_to_alaw(g711.alaw_to_pcm(codes)) == codes
    u = g711.pcm_to_ulaw(g711.ulaw_to_pcm(codes))
    assert u[:127] == codes[:127] and u[128:] == codes[128:]  # 0x7F is "-0" == 0xFF
    assert g711.pcm_to_ulaw(b"\0\0") == bytes([g711.ULAW_SILENCE])
    assert g711.pcm_to_alaw(b"\0\0") == bytes([g711.ALAW_SILENCE])
    assert len(g711.ULAW_TO_ALAW) == len(g711.ALAW_TO_ULAW) == 256
    tone = (8000 * np.sin(np.arange(800) * 2 * np.pi * 440 / 8000)).astype("<i2").tobytes()
    via_u = g711.ulaw_to_alaw(g711.pcm_to_ulaw(tone))
    assert abs(g711.level_dbfs(g711.alaw_to_pcm(via_u)) - g711.level_dbfs(tone)) < 0.5
    assert g711.alaw_to_ulaw(g711.ulaw_to_alaw(g711.pcm_to_ulaw(tone))) != b""
    assert g711.encode(tone, "PCMA") == g711.pcm_to_alaw(tone)
    assert g711.decode(g711.encode(tone, "PCMU"), "PCMU") == g711.ulaw_to_pcm(g711.pcm_to_ulaw(tone))
    with pytest.raises(ValueError, match="PCMU or PCMA"):
        g711.encode(tone, "G722")
    with pytest.raises(ValueError, match="odd length"):
        g711.pcm_to_ulaw(b"\0")


def test_level_dbfs():
    assert g711.level_dbfs(b"") == -math.inf
    assert g711.level_dbfs(bytes(320)) == -math.inf
    full_square = struct.pack("<2h", 32767, -32768) * 100
    assert g711.level_dbfs(full_square) == pytest.approx(0.0, abs=0.01)
    sine = (16384 * np.sin(np.arange(8000) * 2 * np.pi * 1000 / 8000)).astype("<i2").tobytes()
    assert g711.level_dbfs(sine) == pytest.approx(-9.03, abs=0.1)  # -6 dB amp, -3 dB sine


# --- RTP ----------------------------------------------------------------------------


def test_parse_simple_and_round_trip():
    data = bytes.fromhex("80e0 0001 00000002 00000003") + b"\xff" * 160
    p = parse_rtp(data)
    assert (p.payload_type, p.sequence_number, p.timestamp, p.ssrc, p.marker) == (96, 1, 2, 3, True)
    assert p.payload == b"\xff" * 160
    assert bytes(p) == data


def test_parse_csrc_extension_padding_round_trip():
    p = RtpPacket(0, 65535, 2**32 - 1, 0xDEADBEEF, b"abc", marker=False,
                  csrc=(1, 2), extension=(0xBEDE, b"\x10\xff\x00\x00"), padding=4)
    data = bytes(p)
    assert data[0] == 0x80 | 0x20 | 0x10 | 2
    q = RtpPacket.parse(data)
    assert q == p
    assert bytes(q) == data


@pytest.mark.parametrize(
    "data,match",
    [
        (b"\x80\x00", "too short"),
        (bytes.fromhex("40000001000000020000000300"), "version is 1"),
        (bytes.fromhex("82000001000000020000000300"), "CSRCs"),
        (bytes.fromhex("90000001000000020000000300"), "extension"),
        (bytes.fromhex("900000010000000200000003bede0005"), "overruns"),
        (bytes.fromhex("a000000100000002000000030000"), "padding count 0"),
        (bytes.fromhex("a000000100000002000000030009"), "padding count 9"),
    ],
)
def test_parse_garbage(data, match):
    with pytest.raises(ValueError, match=match):
        parse_rtp(data)


def test_is_rtcp():
    assert is_rtcp(bytes.fromhex("80c8 0006"))  # SR
    assert not is_rtcp(bytes.fromhex("8000 0001"))
    assert not is_rtcp(b"\x80")


def test_sender_sequence_timestamp_marker_and_wrap():
    s = RtpSender(ssrc=7, sequence_number=65534, timestamp=2**32 - 160)
    pkts = [parse_rtp(s.packet(b"\xff" * 160, 160, 0)) for _ in range(3)]
    assert [p.sequence_number for p in pkts] == [65534, 65535, 0]
    assert [p.timestamp for p in pkts] == [2**32 - 160, 0, 160]
    assert [p.marker for p in pkts] == [True, False, False]
    assert {p.ssrc for p in pkts} == {7}
    s.start_talkspurt(gap_samples=800)
    p = parse_rtp(s.packet(b"\xd5" * 160, 160, 8))
    assert p.marker and p.timestamp == 320 + 800 and p.payload_type == 8
    p = parse_rtp(s.packet(b"x", 0, 101, marker=True))
    assert p.marker and p.timestamp == 320 + 800 + 160
    assert parse_rtp(s.packet(b"x", 0, 101)).timestamp == p.timestamp


def test_sender_is_random():
    a, b = RtpSender(), RtpSender()
    assert (a.ssrc, a.sequence_number, a.timestamp) != (b.ssrc, b.sequence_number, b.timestamp)
