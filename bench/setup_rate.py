"""Call setup rate with a JS task per call: the largest rate SIPp sustains with 0 failed.

Each call: INVITE -> the app answers and plays a looping tone -> SIPp hangs up after
--hold-ms -> BYE/200. For each rate, a fresh switch; median over --runs.

    python bench/setup_rate.py --rates 100,200,300 --duration 20 --runs 3
"""

from __future__ import annotations

import argparse

from common import ProcTimes, host_ticks, median, rss_kib, sipp_load, split_times, start_switch, steal_percent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="100,200,300", help="calls/s to try, comma-separated")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of load per run")
    ap.add_argument("--runs", type=int, default=3, help="runs per rate (median reported)")
    ap.add_argument("--hold-ms", type=int, default=1000, help="how long each call stays up")
    ap.add_argument("--js-workers", type=int, default=0, help="--js-workers of the switch (0: its default)")
    ap.add_argument("--app", default="answer_play", help="app under bench/apps (answer_wait: answers, sends no RTP)")
    ap.add_argument("--config", metavar="FILE", help="a config file for the switch (e.g. one saying cdr = false)")
    ap.add_argument("--detail", action="store_true",
                    help="also print, per call and process, user and system ms and context switches "
                         "(voluntary: wake-ups; involuntary: preemptions)")
    args = ap.parse_args()
    extra = ["--js-workers", str(args.js_workers)] if args.js_workers else []
    if args.config:
        extra += ["--config", args.config]
    print("| rate (calls/s) | achieved (median) | calls | failed (median) | CPU % switch + workers (median) | "
          "CPU ms/call: switch + workers = total | peak RSS MiB, all processes (median) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for rate in (float(r) for r in args.rates.split(",")):
        calls = int(rate * args.duration)
        failed, cpu_main, cpu_js, rss, per_call, achieved = [], [], [], [], [], []
        details: list[tuple[dict[str, ProcTimes], int]] = []
        steal: list[float] = []
        for _ in range(args.runs):
            switch = start_switch(args.app, extra)
            pid = switch.proc.pid
            times0 = split_times(pid)
            host0 = host_ticks()
            res = sipp_load(switch.sip_target, rate=rate, calls=calls, hold_ms=args.hold_ms,
                            limit=int(rate * 10) + 100, timeout=args.duration * 3 + 30)
            times1 = split_times(pid)
            steal.append(steal_percent(host0, host_ticks()))
            delta = {k: times1[k] - times0[k] for k in times0}
            cpu = {k: t.user + t.system for k, t in delta.items()}
            cpu_main.append(100 * cpu["switch"] / res.seconds)
            cpu_js.append(100 * cpu["workers"] / res.seconds)
            done = max(1, res.successful)
            details.append((delta, done))
            per_call.append(tuple(1000 * cpu[k] / done for k in ("switch", "workers")))
            rss.append(rss_kib(pid, "VmHWM") / 1024)
            failed.append(res.failed + (calls - res.successful - res.failed))
            # SIPp may fall behind the asked rate when the machine is saturated
            achieved.append(res.successful / max(0.1, res.seconds - args.hold_ms / 1000))
            switch.stop()
        print(f"| {rate:.0f} | {median(achieved):.0f} | {calls} | {median(failed):.0f} | {median(cpu_main):.0f} + {median(cpu_js):.0f} | "
              f"{median([p[0] for p in per_call]):.2f} + {median([p[1] for p in per_call]):.2f} = "
              f"{median([p[0] + p[1] for p in per_call]):.2f} | {median(rss):.0f} |", flush=True)
        if args.detail:
            print_detail(rate, details, steal)


def print_detail(rate: float, details: list[tuple[dict[str, ProcTimes], int]], steal: list[float]) -> None:
    """Per call, for the switch and for its workers together: user ms, system ms,
    voluntary and involuntary context switches (median of the runs); and the share of
    the machine's CPU time the hypervisor took (steal) during each run."""
    print(f"\n| {rate:.0f} calls/s, per call | user ms | system ms | wake-ups | preemptions |")
    print("|---|---:|---:|---:|---:|")
    for who in ("switch", "workers"):
        rows = [(delta[who], calls) for delta, calls in details]
        print(f"| {who} | {median([1000 * t.user / n for t, n in rows]):.2f} | "
              f"{median([1000 * t.system / n for t, n in rows]):.2f} | "
              f"{median([t.voluntary / n for t, n in rows]):.1f} | "
              f"{median([t.involuntary / n for t, n in rows]):.1f} |", flush=True)
    print(f"\nhost steal during the runs: {', '.join(f'{x:.1f}' for x in steal)} % of the machine's CPU time\n")


if __name__ == "__main__":
    main()
