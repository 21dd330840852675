"""Where the switch process's time goes during a setup-rate run: py-spy (raw, 200 Hz, 10 s)
of the switch while SIPp places calls at --rate against bench/apps/answer_play, then the
functions with the largest inclusive share. With --against OTHER.txt (an earlier run's
raw profile, e.g. from a worktree of an older commit) it prints the growth instead.
With --worker the switch runs one JS worker (--js-workers 1) and that worker is
profiled instead; --native adds the C frames (the QuickJS engine's functions; py-spy
then pauses the process at each sample, which slows it).

    .venv/bin/python bench/profile_setup.py --rate 400 --out /tmp/new.txt [--against /tmp/old.txt]
    .venv/bin/python bench/profile_setup.py --rate 100 --worker --native --out /tmp/worker.txt
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import children, sipp_load, start_switch  # noqa: E402


def shares(path: Path) -> tuple[collections.Counter[str], int]:
    """Inclusive samples per function ("name file") in a py-spy raw profile."""
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        seen = set()
        for frame in stack.split(";"):
            name, _, where = frame.partition(" (")
            key = f"{name} {where.split(':')[0].rsplit('/', 1)[-1]}"
            if key not in seen:
                inclusive[key] += n
                seen.add(key)
    return inclusive, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=400.0, help="calls/s")
    ap.add_argument("--out", type=Path, required=True, help="where the raw profile goes")
    ap.add_argument("--against", type=Path, help="an earlier raw profile to compare with")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--hz", type=int, default=200, help="py-spy samples per second")
    ap.add_argument("--worker", action="store_true", help="profile the (one) JS worker, not the switch")
    ap.add_argument("--native", action="store_true", help="include C frames (py-spy --native)")
    a = ap.parse_args()
    sw = start_switch("answer_play", ["--js-workers", "1"] if a.worker else [])
    pid = children(sw.proc.pid)[0] if a.worker else sw.proc.pid
    spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(pid), "-d", "10",
                            "-r", str(a.hz), "-f", "raw", "-o", str(a.out),
                            # C frames need the process paused at each sample
                            *(["--native"] if a.native else ["--nonblocking"])],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    res = sipp_load(sw.sip_target, rate=a.rate, calls=int(a.rate * 12), hold_ms=1000, limit=int(a.rate * 10) + 100,
                    timeout=80)
    spy.wait(60)
    sw.stop()
    print(f"{res.successful} calls, {res.failed} failed")
    new, total = shares(a.out)
    if a.against is None:
        for key, n in new.most_common(a.top):
            print(f"{100 * n / total:6.1f}%  {key}")
        return
    old, old_total = shares(a.against)
    keys = sorted(set(old) | set(new), key=lambda k: -(new[k] / total - old[k] / old_total))
    for key in keys[:a.top]:
        print(f"{100 * old[key] / old_total:6.1f}% -> {100 * new[key] / total:6.1f}%  {key}")


if __name__ == "__main__":
    main()
