"""Simultaneous calls with live RTP: N answered calls, each playing a looping tone.

SIPp places N calls (held long enough to all be up at once); the switch sends 50 RTP
packets/s on each. Over a steady window the switch's own media clock reports send
lateness (GET /status: how late each 20 ms tick's last packet left, p50/p99/max) and
dropped frames; we add CPU and RSS.

    python bench/concurrent_calls.py --calls 1000 --rate 200 --window 10
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from common import SIPP, cpu_seconds, free_udp_port, rss_kib, start_switch


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as r:
        return json.load(r)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--rate", type=int, default=200)
    ap.add_argument("--window", type=float, default=10.0, help="seconds measured once all calls are up")
    args = ap.parse_args()
    control = free_tcp_port()
    switch = start_switch("answer_play", ["--control", f"127.0.0.1:{control}"])
    pid = switch.proc.pid
    ramp = args.calls / args.rate
    hold_ms = int(1000 * (ramp + args.window + 10))
    workdir = Path(tempfile.mkdtemp(prefix="bench-conc-"))
    sipp = subprocess.Popen(
        [SIPP, "-sn", "uac", switch.sip_target, "-r", str(args.rate), "-m", str(args.calls),
         "-l", str(args.calls), "-d", str(hold_ms), "-i", "127.0.0.1", "-p", str(free_udp_port()),
         "-nostdin", "-max_socket", "5000"],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(ramp + 3)
    before = status(control)
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(args.window)
    after = status(control)
    cpu = 100 * (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
    rss = rss_kib(pid) / 1024
    sipp.terminate()
    sipp.wait(30)
    switch.stop()
    lat = after["media"]["send_lateness_ms"]
    dropped = after["media"]["frames_dropped"] - before["media"]["frames_dropped"]
    print("| live calls (RTP streams) | send lateness p50 / p99 / max ms | frames dropped | switch CPU % | RSS MiB |")
    print("|---:|---:|---:|---:|---:|")
    print(f"| {after['live_calls']} ({after['media']['streams']}) | {lat['p50']} / {lat['p99']} / {lat['max']} "
          f"| {dropped} | {cpu:.0f} | {rss:.0f} |")


if __name__ == "__main__":
    main()
