import asyncio
import concurrent.futures
import http.server
import io
import os
import pathlib
import threading
import wave

import av
import numpy as np
import pytest

from media.g711 import level_dbfs, ulaw_to_pcm
from media.playback import DecodedAudio, MediaError, PlaybackCache


def tone(rate: int, seconds: float = 1.0, freq: float = 440.0, amp: int = 16000) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def write_wav(path: pathlib.Path, rate: int = 8000, seconds: float = 1.0,
              channels: int = 1) -> pathlib.Path:
    x = tone(rate, seconds)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.repeat(x, channels).astype("<i2").tobytes())
    return path


def write_encoded(path: pathlib.Path, codec: str, rate: int, fmt: str | None = None,
                  layout: str = "mono") -> pathlib.Path:
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream(codec, rate=rate)
        s.layout = layout
        if codec == "vorbis":  # FFmpeg's native vorbis encoder is "experimental"
            s.codec_context.options = {"strict": "experimental"}
        frame = av.AudioFrame.from_ndarray(tone(rate).reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        for p in [*s.encode(frame), *s.encode(None)]:
            c.mux(p)
    return path


def run(coro):
    return asyncio.run(coro)


def test_wav_decoded_resampled_and_encoded(tmp_path):
    write_wav(tmp_path / "hello.wav", rate=16000, channels=2)

    async def main():
        cache = PlaybackCache()
        audio = await cache.get("hello.wav", tmp_path)
        assert isinstance(audio, DecodedAudio)
        assert audio.samples == 8000 and audio.duration == pytest.approx(1.0)
        assert len(audio.pcm) == 16000 and len(audio.ulaw) == len(audio.alaw) == 8000
        assert audio.payload("PCMU") is audio.ulaw and audio.payload("PCMA") is audio.alaw
        assert -12 < level_dbfs(audio.pcm) < -5
        assert -12 < level_dbfs(ulaw_to_pcm(audio.ulaw)) < -5
        with pytest.raises(ValueError):
            audio.payload("G722")
        again = await cache.get("./hello.wav", tmp_path)
        assert again is audio and cache.decodes == 1 and cache.hits == 1

    run(main())


@pytest.mark.parametrize(
    "name,codec,rate,fmt,layout",
    [
        ("a.mp3", "libmp3lame", 22050, None, "mono"),
        ("a.ogg", "vorbis", 44100, "ogg", "stereo"),
        ("a.opus", "libopus", 48000, "ogg", "mono"),
    ],
)
def test_compressed_formats(tmp_path, name, codec, rate, fmt, layout):
    write_encoded(tmp_path / name, codec, rate, fmt, layout)

    async def main():
        audio = await PlaybackCache().get(name, tmp_path)
        assert audio.duration == pytest.approx(1.0, abs=0.1)
        assert level_dbfs(audio.pcm) > -20

    run(main())


def test_concurrent_gets_share_one_decode_off_the_loop(tmp_path):
    write_wav(tmp_path / "a.wav")
    threads = []

    async def main():
        cache = PlaybackCache(concurrent.futures.ThreadPoolExecutor(2))
        real_load = cache._load

        def load(source):
            threads.append(threading.get_ident())
            return real_load(source)

        cache._load = load  # type: ignore[method-assign]
        results = await asyncio.gather(*(cache.get("a.wav", tmp_path) for _ in range(10)))
        assert all(r is results[0] for r in results)
        assert cache.decodes == 1 and len(threads) == 1
        assert threads[0] != threading.get_ident()

    run(main())


def test_cancelled_waiter_does_not_cancel_shared_decode(tmp_path):
    write_wav(tmp_path / "a.wav")

    async def main():
        cache = PlaybackCache()
        t1 = asyncio.ensure_future(cache.get("a.wav", tmp_path))
        t2 = asyncio.ensure_future(cache.get("a.wav", tmp_path))
        await asyncio.sleep(0)
        t1.cancel()
        audio = await t2
        assert audio.samples == 8000 and cache.decodes == 1

    run(main())


def test_missing_file_and_escapes(tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    write_wav(tmp_path / "secret.wav")

    async def main():
        cache = PlaybackCache()
        with pytest.raises(MediaError) as e:
            await cache.get("nope.wav", app)
        assert str(e.value) == f"PlayFile: cannot open 'nope.wav': no such file in app {app}"
        for bad in ("../secret.wav", "sub/../../secret.wav", str(tmp_path / "secret.wav")):
            with pytest.raises(MediaError, match="outside the app directory"):
                await cache.get(bad, app)
        (app / "link.wav").symlink_to(tmp_path / "secret.wav")
        with pytest.raises(MediaError, match="outside the app directory"):
            await cache.get("link.wav", app)
        with pytest.raises(MediaError, match="unsupported scheme 'ftp'"):
            await cache.get("ftp://x/y.wav", app)
        with pytest.raises(MediaError, match="no such file"):
            await cache.get("file:///definitely/not/here.wav", app)
        with pytest.raises(MediaError, match="not a regular file"):
            await cache.get(".", app)
        # An absolute file:// URL may point anywhere.
        audio = await cache.get((tmp_path / "secret.wav").as_uri(), app)
        assert audio.samples == 8000

    run(main())


def test_undecodable_file_and_failure_not_cached(tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"this is not audio at all" * 100)

    async def main():
        cache = PlaybackCache()
        with pytest.raises(MediaError, match=r"^PlayFile: cannot decode 'bad.wav': "):
            await cache.get("bad.wav", tmp_path)
        assert len(cache) == 0
        with pytest.raises(MediaError, match="cannot decode"):
            await cache.get("bad.wav", tmp_path)
        assert cache.decodes == 2  # retried, not a cached failure

    run(main())


def test_edited_file_is_decoded_again(tmp_path):
    path = write_wav(tmp_path / "a.wav", seconds=1.0)

    async def main():
        cache = PlaybackCache()
        first = await cache.get("a.wav", tmp_path)
        write_wav(path, seconds=0.5)
        st = os.stat(path)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        second = await cache.get("a.wav", tmp_path)
        assert first.samples == 8000 and second.samples == 4000

    run(main())


def test_lru_bounded_by_bytes(tmp_path):
    for i in range(4):
        write_wav(tmp_path / f"{i}.wav", seconds=1.0)  # 32000 bytes each once cached

    async def main():
        cache = PlaybackCache(max_bytes=70000)
        await cache.get("0.wav", tmp_path)
        await cache.get("1.wav", tmp_path)
        await cache.get("0.wav", tmp_path)  # 0 becomes most recent
        await cache.get("2.wav", tmp_path)  # evicts 1
        assert cache.nbytes <= 70000 and len(cache) == 2
        await cache.get("0.wav", tmp_path)
        assert cache.decodes == 3
        await cache.get("1.wav", tmp_path)
        assert cache.decodes == 4
        tiny = PlaybackCache(max_bytes=1000)
        await tiny.get("3.wav", tmp_path)
        assert len(tiny) == 0  # larger than the whole cache: served, not kept

    run(main())


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    hits: dict[str, int] = {}

    def do_GET(self):  # noqa: N802
        n = self.hits[self.path] = self.hits.get(self.path, 0) + 1
        body = self.files.get(self.path)
        if self.path == "/flaky.wav" and n == 1:
            body = None
        if body is None:
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server(tmp_path):
    wav = write_wav(tmp_path / "srv.wav").read_bytes()
    _Handler.files = {"/a.wav": wav, "/flaky.wav": wav, "/big.wav": wav}
    _Handler.hits = {}
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_http(http_server, tmp_path):
    async def main():
        cache = PlaybackCache()
        audio = await cache.get(f"{http_server}/a.wav", tmp_path)
        assert audio.samples == 8000
        assert (await cache.get(f"{http_server}/a.wav", tmp_path)) is audio
        assert _Handler.hits["/a.wav"] == 1
        with pytest.raises(MediaError, match=r"unreachable: HTTP 404"):
            await cache.get(f"{http_server}/missing.wav", tmp_path)
        with pytest.raises(MediaError, match="unreachable: HTTP 404"):
            await cache.get(f"{http_server}/flaky.wav", tmp_path)
        assert (await cache.get(f"{http_server}/flaky.wav", tmp_path)).samples == 8000
        small = PlaybackCache(max_download_bytes=1000)
        with pytest.raises(MediaError, match="larger than"):
            await small.get(f"{http_server}/big.wav", tmp_path)

    run(main())


def test_http_unreachable(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now

    async def main():
        with pytest.raises(MediaError, match=rf"^PlayFile: 'http://127.0.0.1:{port}/x.wav' unreachable: "):
            await PlaybackCache().get(f"http://127.0.0.1:{port}/x.wav", tmp_path)

    run(main())


def _ffmpeg_pcm(path: pathlib.Path) -> bytes:
    """What FFmpeg decodes ``path`` to at s16 mono 8 kHz (the reference for the WAV reader)."""
    from media.playback import _decode_ffmpeg

    return _decode_ffmpeg(str(path), path.name)


def test_plain_wav_is_read_without_ffmpeg_and_matches_it(tmp_path):
    # PCM s16 mono 8 kHz: read by the stdlib's wave, byte for byte what FFmpeg gives.
    path = write_wav(tmp_path / "plain.wav", rate=8000, seconds=0.5)
    from media.playback import _read_plain_wav, decode_bytes

    pcm = _read_plain_wav(str(path), "plain.wav")
    assert pcm is not None and len(pcm) == 8000
    assert pcm == _ffmpeg_pcm(path)
    # From memory too (an HTTP download), and the buffer is left at its start for FFmpeg.
    buf = io.BytesIO(path.read_bytes())
    assert decode_bytes(buf, "plain.wav").pcm == pcm and buf.tell() == 0


@pytest.mark.parametrize("rate,channels", [(16000, 1), (8000, 2)])
def test_other_wavs_go_to_ffmpeg(tmp_path, rate, channels):
    from media.playback import _read_plain_wav, decode_bytes

    path = write_wav(tmp_path / "other.wav", rate=rate, channels=channels)
    assert _read_plain_wav(str(path), "other.wav") is None
    audio = decode_bytes(str(path), "other.wav")
    assert audio.samples == 8000 and level_dbfs(audio.pcm) > -10


def test_a_streamed_wav_with_no_data_size_is_read_to_its_end(tmp_path):
    # A WAV written by a streaming recorder may say 0 bytes of data: the stdlib reads
    # nothing from it, FFmpeg reads the samples that are there.
    path = write_wav(tmp_path / "streamed.wav", rate=8000, seconds=0.5)
    raw = bytearray(path.read_bytes())
    at = raw.index(b"data") + 4
    raw[at:at + 4] = (0).to_bytes(4, "little")
    path.write_bytes(bytes(raw))
    from media.playback import decode_bytes

    audio = decode_bytes(str(path), "streamed.wav")
    assert audio.samples == 4000

