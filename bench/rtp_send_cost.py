"""What one outgoing RTP packet costs the switch process: in-process, no SIP, no switch.

``--streams`` MediaSessions (media/session.py, uvloop, real UDP sockets on loopback) play
a looping tone to one sink in another process (which only drains its socket, so its
CPU is not counted) for ``--seconds``; the MediaClock (media/clock.py) drives them as in
the switch. Prints this process's user and system CPU per packet sent (us, median of
``--runs``) and the clock's send lateness. The Python part of the send path is the user
time; the sendto syscall (and loopback delivery into the sink's socket) the system time.

    .venv/bin/python bench/rtp_send_cost.py --streams 100 --seconds 10 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from media.clock import MediaClock  # noqa: E402
from media.playback import DecodedAudio  # noqa: E402
from media.ports import RtpPortPool  # noqa: E402
from media.sdp import MediaParams  # noqa: E402
from media.session import MediaSession  # noqa: E402

SINK = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
while True:
    s.recv(2048)
"""


def tone(seconds: float) -> DecodedAudio:
    import math
    import struct

    n = int(8000 * seconds)
    return DecodedAudio.from_pcm(struct.pack(f"<{n}h", *(int(12000 * math.sin(2 * math.pi * 440 * i / 8000))
                                                        for i in range(n))))


async def one_run(streams: int, seconds: float, sink_port: int, ports: tuple[int, int]) -> tuple[float, float, int, float]:
    loop = asyncio.get_running_loop()
    pool = RtpPortPool(*ports)
    clock = MediaClock(loop)
    audio = tone(1.0)
    sessions = [await MediaSession.open(loop, "127.0.0.1", pool, clock, f"[bench {i}]") for i in range(streams)]
    for s in sessions:
        s.configure(MediaParams("PCMU", 0, 101, ("127.0.0.1", sink_port), "sendrecv"))
        s.play(audio, loop=True)
    await asyncio.sleep(0.5)  # past the first ticks (and the phases filling)
    clock.lateness.clear()
    sent0 = sum(s.packets_sent for s in sessions)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.sleep(seconds)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    sent = sum(s.packets_sent for s in sessions) - sent0
    p99 = clock.lateness_ms()["p99"]
    for s in sessions:
        s.close()
    clock.stop()
    return (1e6 * (r1.ru_utime - r0.ru_utime) / sent, 1e6 * (r1.ru_stime - r0.ru_stime) / sent, sent, p99)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--ports", default="40000-44999", help="RTP port range for the sessions")
    args = ap.parse_args()
    low, high = (int(p) for p in args.ports.split("-"))
    import uvloop

    sink = subprocess.Popen([sys.executable, "-c", SINK], stdout=subprocess.PIPE, text=True)
    try:
        assert sink.stdout is not None
        sink_port = int(sink.stdout.readline())
        results = [uvloop.run(one_run(args.streams, args.seconds, sink_port, (low, high))) for _ in range(args.runs)]
    finally:
        sink.kill()
    user = statistics.median(r[0] for r in results)
    system = statistics.median(r[1] for r in results)
    print("| streams | packets/s | user us/packet | system us/packet | total | clock lateness p99 ms |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(f"| {args.streams} | {statistics.median(r[2] for r in results) / args.seconds:.0f} | {user:.2f} | "
          f"{system:.2f} | {user + system:.2f} | {statistics.median(r[3] for r in results):.2f} |")


if __name__ == "__main__":
    main()
