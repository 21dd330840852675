"""Decoded-once audio for PlayFile: fetch, decode and G.711-encode in an executor.

Sending a playback is then slicing bytes on the media clock. Everything slow (disk and
HTTP reads, decoding, resampling, encoding) runs in the executor, never on the loop.

Decoders: a WAV that already is what we send from (PCM, 16-bit, mono, 8 kHz: the
telephony norm for prompts, and what the bundled greeting is) is read with the stdlib's
``wave``; anything else (other rates or widths, stereo, mp3, ogg, ...) goes to FFmpeg
through PyAV, imported at the first such file. Why not PyAV for everything: importing it
maps FFmpeg's libraries, ~12 MiB of the switch's RSS (issue 7 point 4 measured the switch's
memory per held call against a 200 MB budget for 1000 calls), for a format the stdlib reads
in one call. The import happens once, in the decoding thread (~50 ms); the loop, which
shares the GIL with that thread, was at most ~11 ms late meanwhile (bench/import_stall.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import io
import logging
import os
import stat
import pathlib
import urllib.error
import urllib.parse
import urllib.request
import wave
from collections import OrderedDict
from dataclasses import dataclass

from media import g711

logger = logging.getLogger(__name__)

SAMPLE_RATE = 8000
HTTP_TIMEOUT = 10.0
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024  # ~2 hours of mp3 at 64 kbit/s
MAX_DURATION = 4 * 3600.0  # refuse to hold more than this decoded (~230 MB of PCM)


class MediaError(Exception):
    """A playback source cannot be used; the message is meant for the script author."""


@dataclass(frozen=True)
class DecodedAudio:
    pcm: bytes  # s16le mono 8 kHz
    ulaw: bytes
    alaw: bytes
    duration: float  # seconds
    samples: int

    @classmethod
    def from_pcm(cls, pcm: bytes) -> DecodedAudio:
        samples = len(pcm) // 2
        return cls(
            pcm, g711.pcm_to_ulaw(pcm), g711.pcm_to_alaw(pcm), samples / SAMPLE_RATE, samples
        )

    @property
    def nbytes(self) -> int:
        return len(self.pcm) + len(self.ulaw) + len(self.alaw)

    def payload(self, codec: str) -> bytes:
        if codec == "PCMU":
            return self.ulaw
        if codec == "PCMA":
            return self.alaw
        raise ValueError(f"no encoded audio for codec {codec!r}; have PCMU, PCMA")


@dataclass(frozen=True)
class _Source:
    key: tuple[str, ...]  # cache key: ("http", url) or ("file", path, mtime_ns, size)
    label: str  # what the script wrote, for messages
    path: str | None  # local file, or None for http(s)
    url: str | None


def decode_bytes(source: str | io.BytesIO, label: str) -> DecodedAudio:
    """Decode any FFmpeg-readable audio to s16 mono 8 kHz (blocking: run in an executor)."""
    pcm = _read_plain_wav(source, label)
    if pcm is None:
        pcm = _decode_ffmpeg(source, label)
    if not pcm:
        raise MediaError(f"PlayFile: cannot decode {label!r}: no audio samples in it")
    return DecodedAudio.from_pcm(pcm)


def _read_plain_wav(source: str | io.BytesIO, label: str) -> bytes | None:
    """The samples of a PCM s16 mono 8 kHz WAV; None for anything else (FFmpeg's job,
    including a WAV the stdlib refuses or whose data chunk reads empty: a streamed WAV may
    give its data size as 0, and FFmpeg reads such files to their end)."""
    try:
        with wave.open(source, "rb") as wav:
            if (wav.getcomptype(), wav.getsampwidth(), wav.getnchannels(), wav.getframerate()) != (
                    "NONE", 2, 1, SAMPLE_RATE):
                return None
            if wav.getnframes() > MAX_DURATION * SAMPLE_RATE:
                raise MediaError(f"PlayFile: cannot decode {label!r}: longer than {MAX_DURATION:.0f} s")
            pcm = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError, OSError, ValueError):
        pcm = b""
    finally:
        if isinstance(source, io.BytesIO):
            source.seek(0)
    if len(pcm) % 2:  # a truncated last sample
        pcm = pcm[:-1]
    return pcm or None


def _decode_ffmpeg(source: str | io.BytesIO, label: str) -> bytes:
    import av  # see the module doc: loaded at the first file that is not a plain WAV

    chunks: list[bytes] = []
    samples = 0
    try:
        with av.open(source) as container:
            if not container.streams.audio:
                raise MediaError(f"PlayFile: cannot decode {label!r}: it has no audio stream")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            for frame in container.decode(audio=0):  # type: ignore[union-attr]  # (opened for reading)
                for out in resampler.resample(frame):
                    n = out.samples
                    # A plane may be longer than its samples (alignment padding).
                    chunks.append(bytes(out.planes[0])[: n * 2])
                    samples += n
                if samples > MAX_DURATION * SAMPLE_RATE:
                    raise MediaError(
                        f"PlayFile: cannot decode {label!r}: longer than {MAX_DURATION:.0f} s"
                    )
            for out in resampler.resample(None):
                chunks.append(bytes(out.planes[0])[: out.samples * 2])
    except MediaError:
        raise
    except (av.FFmpegError, ValueError, OSError) as exc:
        strerror = getattr(exc, "strerror", None) if isinstance(exc, av.FFmpegError) else None
        raise MediaError(f"PlayFile: cannot decode {label!r}: {strerror or _reason(exc)}") from exc
    return b"".join(chunks)


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def fetch_http(url: str, timeout: float = HTTP_TIMEOUT, limit: int = MAX_DOWNLOAD_BYTES) -> bytes:
    """GET ``url`` (blocking: run in an executor) with a timeout and a size cap."""
    req = urllib.request.Request(url, headers={"User-Agent": "softswitch-playback/1"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > limit:
                raise MediaError(f"PlayFile: {url!r} is larger than {limit // 2**20} MiB")
            data: bytes = resp.read(limit + 1)
    except MediaError:
        raise
    except urllib.error.HTTPError as exc:
        raise MediaError(f"PlayFile: {url!r} unreachable: HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise MediaError(f"PlayFile: {url!r} unreachable: {exc.reason}") from exc
    except (OSError, ValueError) as exc:  # timeouts, resets, bad URLs
        raise MediaError(f"PlayFile: {url!r} unreachable: {_reason(exc)}") from exc
    if len(data) > limit:
        raise MediaError(f"PlayFile: {url!r} is larger than {limit // 2**20} MiB")
    return data


class PlaybackCache:
    """Decoded audio keyed by source, LRU-bounded by bytes.

    Files are keyed by absolute path + mtime + size, so an edited file is decoded again;
    http(s) URLs by URL (a changed remote file is picked up once it falls out of the LRU).
    Concurrent gets of one key share one decode; a failure is not cached.
    """

    def __init__(
        self,
        executor: concurrent.futures.Executor | None = None,
        max_bytes: int = 256 * 1024 * 1024,
        http_timeout: float = HTTP_TIMEOUT,
        max_download_bytes: int = MAX_DOWNLOAD_BYTES,
    ) -> None:
        self._executor = executor
        self.max_bytes = max_bytes
        self.http_timeout = http_timeout
        self.max_download_bytes = max_download_bytes
        self._entries: OrderedDict[tuple[str, ...], DecodedAudio] = OrderedDict()
        self._inflight: dict[tuple[str, ...], asyncio.Future[DecodedAudio]] = {}
        self.nbytes = 0
        self.decodes = 0  # decodes started (tests and monitoring)
        self.hits = 0
        # (app dir, url) -> (real path, where): realpath() is three lstat()s per path
        # component, and every PlayFile of a busy app names the same few files (measured:
        # 10% of the switch's CPU at 150 calls/s). App versions are immutable directories;
        # the file's own change still shows in the key (one stat per get: mtime, size).
        self._paths: dict[tuple[str, str], tuple[str, str]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, url: str, app_dir: pathlib.Path) -> DecodedAudio:
        source = self._resolve(url, app_dir)
        entry = self._entries.get(source.key)
        if entry is not None:
            self._entries.move_to_end(source.key)
            self.hits += 1
            return entry
        fut = self._inflight.get(source.key)
        if fut is None:
            loop = asyncio.get_running_loop()
            self.decodes += 1
            fut = asyncio.ensure_future(
                loop.run_in_executor(self._executor, self._load, source)
            )
            self._inflight[source.key] = fut
            fut.add_done_callback(functools.partial(self._settle, source.key))
        # shield: one caller being cancelled (its call hung up) must not cancel the
        # decode the other callers are waiting for.
        return await asyncio.shield(fut)

    def clear(self) -> None:
        self._entries.clear()
        self.nbytes = 0

    def _settle(self, key: tuple[str, ...], fut: asyncio.Future[DecodedAudio]) -> None:
        if self._inflight.get(key) is fut:
            del self._inflight[key]
        if fut.cancelled() or fut.exception() is not None:
            return  # not cached: the next get retries
        audio = fut.result()
        if audio.nbytes > self.max_bytes:
            logger.warning("decoded audio %s (%d bytes) exceeds the cache; not cached",
                           key[1], audio.nbytes)
            return
        self._entries[key] = audio
        self.nbytes += audio.nbytes
        while self.nbytes > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            self.nbytes -= old.nbytes

    def _resolve(self, url: str, app_dir: pathlib.Path) -> _Source:
        """Map what the script wrote to a cache key. Runs on the loop: only a stat()."""
        if not isinstance(url, str) or not url:
            raise MediaError("PlayFile: the file name is empty")
        scheme = urllib.parse.urlsplit(url).scheme.lower()
        if scheme in ("http", "https"):
            return _Source(("http", url), url, None, url)
        if scheme == "file":
            parts = urllib.parse.urlsplit(url)
            if parts.netloc not in ("", "localhost"):
                raise MediaError(f"PlayFile: {url!r}: only local file:// URLs are supported")
            path = pathlib.Path(urllib.request.url2pathname(parts.path))
            if not path.is_absolute():
                raise MediaError(f"PlayFile: {url!r}: a file:// URL must be absolute")
            where = ""
        elif scheme and len(scheme) > 1:  # (a one-letter scheme is a Windows drive)
            raise MediaError(
                f"PlayFile: {url!r}: unsupported scheme {scheme!r} "
                "(use a path in the app, file://, http:// or https://)"
            )
        else:
            cached = self._paths.get((str(app_dir), url))
            if cached is not None:
                return self._stat(url, *cached)
            root = app_dir.resolve()
            path = (root / url).resolve()
            if pathlib.PurePath(url).is_absolute() or not path.is_relative_to(root):
                raise MediaError(
                    f"PlayFile: {url!r} is outside the app directory {root} "
                    "(use a path inside the app, or a file:// URL)"
                )
            where = f" in app {root}"
            source = self._stat(url, str(path), where)
            if len(self._paths) >= 4096:
                self._paths.clear()
            self._paths[(str(app_dir), url)] = (str(path), where)
            return source
        return self._stat(url, str(path.resolve()) if path.exists() else str(path), where)

    @staticmethod
    def _stat(url: str, real: str, where: str) -> _Source:
        try:
            st = os.stat(real)  # a stat is cheap and cached by the kernel; fine on the loop
        except FileNotFoundError:
            raise MediaError(f"PlayFile: cannot open {url!r}: no such file{where}") from None
        except OSError as exc:
            raise MediaError(f"PlayFile: cannot open {url!r}: {exc.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise MediaError(f"PlayFile: cannot open {url!r}: not a regular file{where}")
        return _Source(("file", real, str(st.st_mtime_ns), str(st.st_size)), url, real, None)

    def _load(self, source: _Source) -> DecodedAudio:
        """Executor side: read/fetch and decode."""
        if source.url is not None:
            data = fetch_http(source.url, self.http_timeout, self.max_download_bytes)
            audio = decode_bytes(io.BytesIO(data), source.label)
        else:
            assert source.path is not None
            audio = decode_bytes(source.path, source.label)
        logger.info("decoded %s: %.2f s, %d bytes cached", source.label, audio.duration,
                    audio.nbytes)
        return audio
