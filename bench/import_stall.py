"""What the loop sees while a heavy library is imported in a thread (issue 7 point 4):
PyAV at the first file that is not a plain WAV (media/playback.py) and dnspython at the
first DNS query (switch/sip/dns_records.py) are imported in the executor, so the loop
only waits while the importing thread holds the GIL. A 1 ms timer on the loop records
its worst lateness during the import; pylibsrtp is imported on the loop (its ~7 ms).
One fresh interpreter per library and run; prints a Markdown row per library.

    .venv/bin/python bench/import_stall.py --runs 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = r"""
import asyncio, importlib, json, sys, time
import switch.server  # what the switch has loaded already
modules = sys.argv[1].split(",")
on_loop = sys.argv[2] == "loop"

async def main():
    loop = asyncio.get_running_loop()
    worst = 0.0
    stop = False
    async def tick():
        nonlocal worst
        while not stop:
            t = loop.time()
            await asyncio.sleep(0.001)
            worst = max(worst, loop.time() - t - 0.001)
    ticker = asyncio.ensure_future(tick())
    await asyncio.sleep(0.2)
    worst = 0.0
    t0 = time.perf_counter()
    if on_loop:
        for m in modules:
            importlib.import_module(m)
    else:
        await loop.run_in_executor(None, lambda: [importlib.import_module(m) for m in modules])
    took = time.perf_counter() - t0
    await asyncio.sleep(0.05)
    stop = True
    await ticker
    print(json.dumps({"import_ms": took * 1000, "worst_late_ms": worst * 1000}))

import uvloop
uvloop.run(main())
"""

CASES = [
    ("PyAV (media/playback.py)", "av", "thread"),
    ("dnspython (switch/sip/dns_records.py)",
     "dns.asyncresolver,dns.exception,dns.nameserver,dns.rdatatype,dns.resolver", "thread"),
    ("pylibsrtp (media/srtp.py)", "pylibsrtp", "loop"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    print("| library | imported | import ms (median) | worst loop lateness ms (median, max) |")
    print("|---|---|---:|---:|")
    for label, modules, where in CASES:
        runs = [json.loads(subprocess.run([sys.executable, "-c", PROBE, modules, where], cwd=ROOT, check=True,
                                          capture_output=True, text=True).stdout) for _ in range(a.runs)]
        late = [r["worst_late_ms"] for r in runs]
        print(f"| {label} | {'on the loop' if where == 'loop' else 'in the executor'} "
              f"| {statistics.median(r['import_ms'] for r in runs):.0f} "
              f"| {statistics.median(late):.1f}, {max(late):.1f} |")


if __name__ == "__main__":
    main()
