"""Bridged calls: SIPp caller -> switch (js_apps/bridge, the seed's ingress/egress) -> SIPp
callee. The caller plays 7 s of A-law speech (g711a.pcap); the callee (SIPp's uas with
-rtp_echo) answers PCMU and echoes it, so the switch relays and transcodes both ways.

Reports failed calls, the switch's CPU and RSS, and the CPU per live bridged call.

    python bench/bridged_calls.py --rate 20 --calls 400 --hold-ms 10000 --runs 3
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from common import (REPO, SIPP, SwitchProcess, cpu_seconds, free_udp_port, median, rss_kib,
                    sipp_load)

SCENARIO = Path(__file__).resolve().parent / "scenarios" / "uac_pcap_audio.xml"


def one_run(rate: float, calls: int, hold_ms: int) -> tuple[int, float, float, float]:
    uas_port = free_udp_port()
    workdir = Path(tempfile.mkdtemp(prefix="bench-uas-"))
    uas = subprocess.Popen(
        [SIPP, "-sn", "uas", "-i", "127.0.0.1", "-p", str(uas_port), "-rtp_echo", "-mp", "17000",
         "-nostdin", "-max_socket", "5000"],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    switch = SwitchProcess(REPO / "js_apps" / "bridge",
                           ["--max-calls", "20000", "--gateway", f"sip:127.0.0.1:{uas_port}",
                            "--control", "off"],
                           log_level="info", rtp_range=(20000, 29999)).start()
    pid = switch.proc.pid
    concurrent = rate * hold_ms / 1000
    # CPU over the steady state: once the first calls hang up (live = rate * hold) until
    # the last call has been placed.
    cpu: dict[str, tuple[float, float]] = {}

    def sample(tag: str) -> None:
        cpu[tag] = (cpu_seconds(pid), time.monotonic())

    threading.Timer(hold_ms / 1000 + 0.5, sample, ("a",)).start()
    threading.Timer(calls / rate - 0.5, sample, ("b",)).start()
    res = sipp_load(switch.sip_target, rate=rate, calls=calls, hold_ms=hold_ms,
                    limit=int(concurrent) + 50, timeout=calls / rate + hold_ms / 1000 + 60,
                    extra=["-sf", str(SCENARIO), "-mp", "16000"], scenario=None)
    rss = rss_kib(pid, "VmHWM") / 1024
    try:
        switch.stop()
    finally:
        uas.kill()
    relayed = sum(int(n) for n in re.findall(r"'(?:a_to_b|b_to_a)': (\d+)", switch.log_text()))
    uas.wait(10)
    steady = float("nan")
    if "a" in cpu and "b" in cpu and cpu["b"][1] > cpu["a"][1]:
        steady = 100 * (cpu["b"][0] - cpu["a"][0]) / (cpu["b"][1] - cpu["a"][1])
    failed = res.failed + (calls - res.successful - res.failed)
    return failed, steady, rss, concurrent, relayed / max(1, res.successful)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=20)
    ap.add_argument("--calls", type=int, default=400, help="must exceed rate * (hold + 2 s)")
    ap.add_argument("--hold-ms", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    rows = [one_run(args.rate, args.calls, args.hold_ms) for _ in range(args.runs)]
    failed, cpu, rss, concurrent, relayed = (median([r[i] for r in rows]) for i in range(5))
    print("| rate | calls | hold s | live bridged calls | failed | RTP relayed per call | switch CPU % (steady) "
          "| CPU % per call | peak RSS MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {args.rate:.0f} | {args.calls} | {args.hold_ms / 1000:.0f} | {concurrent:.0f} | {failed:.0f} | "
          f"{relayed:.0f} | {cpu:.0f} | {cpu / concurrent:.2f} | {rss:.0f} |")


if __name__ == "__main__":
    main()
