"""Memory of idle calls: N concurrent answered calls whose tasks wait in ReadInput.

Measures the RSS of the switch and its JS workers before and with N calls up (no RTP:
the app plays nothing), and reports RSS per call; also the group's PSS (shared library
and interpreter pages counted once, not once per process: ``common.own_pss_kib``). ``--scrape K``: also time K scrapes of GET /metrics while the
calls are up (the control API on a free port).

    python bench/idle_calls.py --calls 500
    python bench/idle_calls.py --calls 1000 --rate 200 --scrape 20
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from common import SIPP, free_udp_port, own_rss_kib, pss_kib, rss_kib, start_switch

from tests.e2e.harness import free_tcp_port


def time_gets(control: str, path: str, count: int) -> tuple[float, float, int]:
    """Median and max wall time of ``count`` GETs of ``path`` (ms), and the body's size."""
    took, size = [], 0
    for _ in range(count):
        t0 = time.perf_counter()
        with urllib.request.urlopen(f"http://{control}{path}", timeout=10) as r:
            size = len(r.read())
        took.append(1000 * (time.perf_counter() - t0))
        time.sleep(0.2)
    return statistics.median(took), max(took), size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--rate", type=int, default=100)
    ap.add_argument("--scrape", type=int, default=0, help="time this many GET /metrics with the calls up")
    args = ap.parse_args()
    control = f"127.0.0.1:{free_tcp_port()}"
    switch = start_switch("answer_wait", ["--control", control] if args.scrape else [])
    pid = switch.proc.pid
    time.sleep(1.0)
    before, switch_before, pss_before = rss_kib(pid), own_rss_kib(pid, "VmRSS"), pss_kib(pid)
    workdir = Path(tempfile.mkdtemp(prefix="bench-idle-"))
    hold_ms = int(1000 * (args.calls / args.rate + 15))
    sipp = subprocess.Popen(
        [SIPP, "-sn", "uac", switch.sip_target, "-r", str(args.rate), "-m", str(args.calls),
         "-l", str(args.calls), "-d", str(hold_ms), "-i", "127.0.0.1", "-p", str(free_udp_port()),
         "-nostdin", "-max_socket", "5000"],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(args.calls / args.rate + 5)
    during, switch_during, pss_during = rss_kib(pid), own_rss_kib(pid, "VmRSS"), pss_kib(pid)
    # /status, nearly free to build, is the yardstick: the rest is HTTP and the loop's queue.
    gets = {path: time_gets(control, path, args.scrape) for path in ("/status", "/metrics")} if args.scrape else {}
    sipp.terminate()
    sipp.wait(30)
    switch.stop()
    per_call = (during - before) / args.calls
    switch_share = (switch_during - switch_before) / args.calls
    print("| idle calls | RSS before (MiB) | RSS with calls (MiB) | per call (KiB) | of which switch + workers "
          "| PSS before (MiB) | PSS with calls (MiB) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {args.calls} | {before / 1024:.0f} | {during / 1024:.0f} | {per_call:.0f} | "
          f"{switch_share:.0f} + {per_call - switch_share:.0f} | {pss_before / 1024:.0f} | {pss_during / 1024:.0f} |")
    for path, (median, worst, size) in gets.items():
        print(f"GET {path} with {args.calls} calls up: median {median:.1f} ms, max {worst:.1f} ms "
              f"({args.scrape} requests), {size} bytes")


if __name__ == "__main__":
    main()
