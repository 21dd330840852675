"""CPU of N answered calls over a steady window, per stream-second: what the media
keepalive and RTCP cost a call whose task plays nothing (``answer_wait``: it waits in
ReadInput), against one that plays (``--app answer_play``). Arguments after ``--`` go to
the switch (``-- --media-keepalive off --no-rtcp``). Prints one JSON line.

    .venv/bin/python bench/idle_cpu.py --calls 1000 --rate 200 --window 10 -- --media-keepalive off --no-rtcp
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SIPP, cpu_seconds, free_udp_port, own_cpu_seconds, rss_kib, start_switch  # noqa: E402
from concurrent_calls import free_tcp_port, status  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=1000, help="answered calls held during the window")
    ap.add_argument("--rate", type=int, default=200, help="calls/s while they are placed")
    ap.add_argument("--window", type=float, default=10.0, help="seconds measured once all are up")
    ap.add_argument("--app", default="answer_wait", help="bench/apps/ app: answer_wait (silent) or answer_play")
    ap.add_argument("switch_args", nargs="*", help="after --: flags for the switch")
    a = ap.parse_args()
    control = free_tcp_port()
    sw = start_switch(a.app, ["--control", f"127.0.0.1:{control}", *a.switch_args])
    pid = sw.proc.pid
    ramp = a.calls / a.rate
    hold_ms = int(1000 * (ramp + a.window + 10))
    workdir = Path(tempfile.mkdtemp(prefix="bench-idlecpu-"))
    sipp = subprocess.Popen(
        [SIPP, "-sn", "uac", sw.sip_target, "-r", str(a.rate), "-m", str(a.calls), "-l", str(a.calls),
         "-d", str(hold_ms), "-i", "127.0.0.1", "-p", str(free_udp_port()), "-nostdin", "-max_socket", "5000"],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(ramp + 3)
    before = status(control)
    own0, all0, t0 = own_cpu_seconds(pid), cpu_seconds(pid), time.monotonic()
    time.sleep(a.window)
    after = status(control)
    dt = time.monotonic() - t0
    own, tot = own_cpu_seconds(pid) - own0, cpu_seconds(pid) - all0
    rss = rss_kib(pid) / 1024
    sipp.terminate()
    sipp.wait(30)
    sw.stop()
    n = after["live_calls"]
    print(json.dumps({
        "args": a.switch_args, "app": a.app, "live_calls": n, "clock_streams": after["media"]["streams"],
        "switch_cpu_pct": round(100 * own / dt, 1), "all_cpu_pct": round(100 * tot / dt, 1),
        "switch_ms_per_stream_s": round(1000 * own / (n * dt), 4) if n else None,
        "lateness_ms": after["media"]["send_lateness_ms"],
        "dropped": after["media"]["frames_dropped"] - before["media"]["frames_dropped"],
        "rss_mib": round(rss),
    }))


if __name__ == "__main__":
    main()
