"""Call setup rate with a JS task per call: the largest rate SIPp sustains with 0 failed.

Each call: INVITE -> the app answers and plays a looping tone -> SIPp hangs up after
--hold-ms -> BYE/200. For each rate, a fresh switch; median over --runs.

    python bench/setup_rate.py --rates 100,200,300 --duration 20 --runs 3
"""

from __future__ import annotations

import argparse

from common import cpu_seconds, median, rss_kib, sipp_load, start_switch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="100,200,300", help="calls/s to try, comma-separated")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of load per run")
    ap.add_argument("--runs", type=int, default=3, help="runs per rate (median reported)")
    ap.add_argument("--hold-ms", type=int, default=1000, help="how long each call stays up")
    args = ap.parse_args()
    print("| rate (calls/s) | calls | failed (median) | switch CPU % (median) | peak RSS MiB (median) |")
    print("|---:|---:|---:|---:|---:|")
    for rate in (float(r) for r in args.rates.split(",")):
        calls = int(rate * args.duration)
        failed, cpu, rss = [], [], []
        for _ in range(args.runs):
            switch = start_switch("answer_play")
            pid = switch.proc.pid
            cpu0 = cpu_seconds(pid)
            res = sipp_load(switch.sip_target, rate=rate, calls=calls, hold_ms=args.hold_ms,
                            limit=int(rate * 10) + 100, timeout=args.duration * 3 + 30)
            cpu.append(100 * (cpu_seconds(pid) - cpu0) / res.seconds)
            rss.append(rss_kib(pid, "VmHWM") / 1024)
            failed.append(res.failed + (calls - res.successful - res.failed))
            switch.stop()
        print(f"| {rate:.0f} | {calls} | {median(failed):.0f} | {median(cpu):.0f} | {median(rss):.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
