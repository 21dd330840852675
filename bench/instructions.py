"""Instructions per call: the one figure of CPU work this shared machine cannot blur.

CPU time per call here moves by 20-40 % within an hour with nothing changed (the
hypervisor's steal, other tenants' caches: bench/README.md); an instruction count does
not. This runs the switch and its JS workers under valgrind's callgrind (instruction
counting only, no cache model), counts the instructions they execute while SIPp places
``--calls`` calls, then twice as many in the same time, and prints the difference per
call: what one call costs, without the work the switch does per second whatever the
calls (media clock ticks, the loop-lag probe, metrics), which cancels out.

Instructions are not time: a change that only makes memory access friendlier (a batch
instead of scattered pieces) shows here as nothing. Under valgrind everything runs ~30x
slower, so the rate stays low (SIPp ``uac``, --hold-ms calls, as in setup_rate.py).
Repeatability: the same commit measured 231.8 and 232.1 M instructions (0.13 %). Compare
runs of the same --calls and --duration only: how many calls overlap decides how many
media clock ticks each shares (3.28 M per call in the switch at 50/100 calls in 25 s,
3.41 in 50 s). Only user space is counted: the kernel's side of a sendto is not.
``callgrind_control`` turns counting on and off for every callgrind process of this
user: run nothing else under callgrind meanwhile.

    .venv/bin/python bench/instructions.py --calls 50 --duration 25 [--app answer_wait]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import APPS, sipp_load  # noqa: E402
from tests.e2e.harness import SwitchProcess  # noqa: E402


def count(calls: int, duration: float, app: str, hold_ms: int, outdir: Path,
          log_level: str = "warning") -> tuple[int, int, int]:
    """(switch instructions, workers' instructions, successful calls) for one run."""
    for old in outdir.glob("cg.*"):
        old.unlink()
    os.environ["E2E_SWITCH_CMD"] = (f"valgrind --tool=callgrind --instr-atstart=no --trace-children=yes "
                                    f"--callgrind-out-file={outdir}/cg.%p {sys.executable} -m switch.cli run")
    switch = SwitchProcess(APPS / app, ["--max-calls", "20000"], log_level=log_level, rtp_range=(20000, 29999))
    switch.ready_timeout = 300.0
    switch.start()
    try:
        time.sleep(2.0)  # the workers' start-up, uncounted
        subprocess.run(["callgrind_control", "-i", "on"], check=True, capture_output=True)
        res = sipp_load(switch.sip_target, rate=calls / duration, calls=calls, hold_ms=hold_ms,
                        limit=100, timeout=duration * 3 + 60)
        subprocess.run(["callgrind_control", "-i", "off"], check=True, capture_output=True)
        subprocess.run(["callgrind_control", "-d"], check=True, capture_output=True)
        time.sleep(2.0)
    finally:
        switch.kill()
    assert switch.proc is not None
    ours, workers = 0, 0
    for dump in outdir.glob("cg.*.*"):  # cg.PID.N: the dump callgrind_control -d asked for
        pid = int(dump.name.split(".")[1])
        total = _total(dump)
        if pid == switch.proc.pid:
            ours += total
        else:
            workers += total
    if res.successful < calls:  # (a refused call does less work: the figure is off by about its share)
        print(f"warning: {calls - res.successful} of {calls} calls failed under valgrind; per call counts the "
              "successful ones (a lower rate: fewer --calls or a longer --duration)", file=sys.stderr)
    return ours, workers, max(1, res.successful)


def _total(dump: Path) -> int:
    text = subprocess.run(["callgrind_annotate", str(dump)], capture_output=True, text=True, check=True).stdout
    found = re.search(r"^([\d,]+) \([\d.]+%\)\s+PROGRAM TOTALS", text, re.M)
    return int(found.group(1).replace(",", "")) if found else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=50, help="calls of the first run (the second places twice as many)")
    ap.add_argument("--duration", type=float, default=25.0, help="seconds each run places its calls over")
    ap.add_argument("--hold-ms", type=int, default=1000)
    ap.add_argument("--app", default="answer_play", help="app under bench/apps")
    ap.add_argument("--log-level", default="warning",
                    help="the switch's (the other benches run it at warning; its default is info)")
    args = ap.parse_args()
    for tool in ("valgrind", "callgrind_control", "callgrind_annotate"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: apt install valgrind")
    with tempfile.TemporaryDirectory(prefix="bench-callgrind-") as tmp:
        outdir = Path(tmp)
        s1, w1, n1 = count(args.calls, args.duration, args.app, args.hold_ms, outdir, args.log_level)
        s2, w2, n2 = count(2 * args.calls, args.duration, args.app, args.hold_ms, outdir, args.log_level)
    per_switch = (s2 - s1) / (n2 - n1)
    per_workers = (w2 - w1) / (n2 - n1)
    fixed = (s1 - n1 * per_switch) / args.duration
    print("| app | log level | calls | M instructions per call: switch + workers = total | switch's own, M per second |")
    print("|---|---|---:|---:|---:|")
    print(f"| {args.app} | {args.log_level} | {n1} and {n2} in {args.duration:.0f} s | "
          f"{per_switch / 1e6:.2f} + {per_workers / 1e6:.2f} = "
          f"{(per_switch + per_workers) / 1e6:.2f} | {fixed / 1e6:.2f} |")


if __name__ == "__main__":
    main()
