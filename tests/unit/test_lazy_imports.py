"""What the switch does not load until it is needed (issue 7 point 4: memory).

PyAV (FFmpeg), pylibsrtp (libsrtp) and dnspython cost the switch ~12, ~5 and ~5 MiB of
RSS; numpy ~15 and is not used at all. Each is imported where it is first needed
(media/playback.py, media/srtp.py, switch/sip/dns_records.py say why). Checked in a fresh
interpreter, since this test session imports them all."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import wave


ROOT = pathlib.Path(__file__).resolve().parents[2]
HEAVY = ("av", "numpy", "pylibsrtp", "dns")


def loaded_after(code: str) -> list[list[str]]:
    """Run ``code`` in a fresh interpreter; each ``mark()`` in it records which of HEAVY
    are imported at that point."""
    prelude = (
        "import json, sys\n"
        f"HEAVY = {HEAVY!r}\n"
        "def mark():\n"
        "    print(json.dumps(sorted(m for m in HEAVY if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout
    return [json.loads(line) for line in out.splitlines()]


def write_wav(path: pathlib.Path, channels: int) -> pathlib.Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x10\x00" * 800 * channels)
    return path


def test_the_switch_and_a_worker_start_without_them():
    marks = loaded_after("import switch.cli, switch.server, switch.tasks.worker\nmark()\n")
    assert marks == [[]]


def test_each_loads_at_its_first_use(tmp_path):
    plain = write_wav(tmp_path / "plain.wav", channels=1)
    stereo = write_wav(tmp_path / "stereo.wav", channels=2)
    marks = loaded_after(
        "import switch.server\n"
        "from media.playback import decode_bytes\n"
        f"decode_bytes({str(plain)!r}, 'plain.wav')\n"
        "mark()\n"  # a PCM 8 kHz mono WAV: the stdlib reads it
        f"decode_bytes({str(stereo)!r}, 'stereo.wav')\n"
        "mark()\n"  # anything else: FFmpeg
        "from media import sdes\n"
        "from media.srtp import SrtpContext\n"
        "k = sdes.SrtpKeys('AES_CM_128_HMAC_SHA1_80', bytes(30), bytes(range(30)))\n"
        "SrtpContext(k).protect_rtp(bytes([0x80, 0]) + bytes(10) + bytes(160))\n"
        "mark()\n"
    )
    assert marks == [[], ["av"], ["av", "pylibsrtp"]]


def test_dnspython_is_imported_off_the_loop_at_the_first_query():
    marks = loaded_after(
        "import asyncio, threading\n"
        "import switch.sip.dns_records as dr\n"
        "mark()\n"
        "where = []\n"
        "real = dr._import_dnspython\n"
        "def spy():\n"
        "    where.append(threading.current_thread() is threading.main_thread())\n"
        "    real()\n"
        "dr._import_dnspython = spy\n"
        "async def main():\n"
        "    loop = asyncio.get_running_loop()\n"
        "    records = dr.DnsRecords(['127.0.0.1:9'], clock=loop.time, timeout=0.3)\n"
        "    try:\n"
        "        await records.lookup('example.invalid', 'SRV')\n"
        "    except dr.DnsFailure:\n"
        "        pass\n"
        "asyncio.run(main())\n"
        "mark()\n"
        "print(json.dumps(where))\n"
    )
    assert marks[0] == [] and marks[1] == ["dns"]
    assert marks[2] == [False]  # imported once, not on the loop's thread
