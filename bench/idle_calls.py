"""Memory of idle calls: N concurrent answered calls whose tasks wait in ReadInput.

Measures the switch's RSS before and with N calls up (no RTP: the app plays nothing),
and reports RSS per call.

    python bench/idle_calls.py --calls 500
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from common import SIPP, free_udp_port, rss_kib, start_switch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--rate", type=int, default=100)
    args = ap.parse_args()
    switch = start_switch("answer_wait")
    pid = switch.proc.pid
    time.sleep(1.0)
    before = rss_kib(pid)
    workdir = Path(tempfile.mkdtemp(prefix="bench-idle-"))
    hold_ms = int(1000 * (args.calls / args.rate + 15))
    sipp = subprocess.Popen(
        [SIPP, "-sn", "uac", switch.sip_target, "-r", str(args.rate), "-m", str(args.calls),
         "-l", str(args.calls), "-d", str(hold_ms), "-i", "127.0.0.1", "-p", str(free_udp_port()),
         "-nostdin", "-max_socket", "5000"],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(args.calls / args.rate + 5)
    during = rss_kib(pid)
    sipp.terminate()
    sipp.wait(30)
    switch.stop()
    per_call = (during - before) / args.calls
    print("| idle calls | RSS before (MiB) | RSS with calls (MiB) | per call (KiB) |")
    print("|---:|---:|---:|---:|")
    print(f"| {args.calls} | {before / 1024:.0f} | {during / 1024:.0f} | {per_call:.0f} |")


if __name__ == "__main__":
    main()
