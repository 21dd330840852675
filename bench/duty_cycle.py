"""Why CPU per call is higher at 100 calls/s than at 500 on this machine: the same fixed
piece of Python work, run back to back and run with a sleep after each piece, and the
CPU time one piece costs in each case (the process's own user + system time). A process
that sleeps between short bursts, as the switch and its workers do at low load, finds
its caches (and, on a virtual machine, possibly its core's clock) cold at every wake-up.
This is a property of the host, not of the switch; figures in bench/README.md.

    .venv/bin/python bench/duty_cycle.py --runs 3
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time


def work() -> int:
    s = 0
    for i in range(2000):
        s += i * i
    return s


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def per_piece(sleep: float, seconds: float) -> float:
    """CPU µs per piece of work, pieces separated by ``sleep`` seconds of sleep."""
    n, c0, t0 = 0, cpu(), time.monotonic()
    while time.monotonic() - t0 < seconds:
        work()
        n += 1
        if sleep:
            time.sleep(sleep)
    return 1e6 * (cpu() - c0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0, help="per case and run")
    a = ap.parse_args()
    print("| sleep after each piece | CPU µs per piece (median) | vs back to back |")
    print("|---:|---:|---:|")
    base = 0.0
    for sleep in (0.0, 0.0005, 0.002, 0.010):
        us = statistics.median(per_piece(sleep, a.seconds) for _ in range(a.runs))
        base = base or us
        print(f"| {sleep * 1000:g} ms | {us:.0f} | {us / base:.2f}x |")


if __name__ == "__main__":
    main()
