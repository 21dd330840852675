"""Where a JS task's start time and idle memory go, step by step (issue 7, point 4).

Runs in this process, no switch: N of each step are made and kept, and the time per
item and the RSS (and, for the shared runtime, the engine's own heap count) per item
are printed as a Markdown table. The app is the one of tests/unit/test_tasks_perf.py
(a ~50-line main.js with one require). Best of --runs for time; memory is exact enough
from one run.

    .venv/bin/python bench/task_cost.py --n 500 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "unit"))

import quickjs  # noqa: E402

from switch.tasks import heap  # noqa: E402
from switch.tasks.app import MAIN, JsApp  # noqa: E402
from switch.tasks.engine import ENGINE, INTRINSICS  # noqa: E402
from switch.tasks.runtime import TaskRuntime, TaskState, _prelude  # noqa: E402

for _name in ("JS_NewRuntime", "JS_NewContext"):
    _fn = getattr(ENGINE, _name)
    _fn.restype = ctypes.c_void_p
    _fn.argtypes = [] if _name == "JS_NewRuntime" else [ctypes.c_void_p]


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def perf_app() -> JsApp:
    import test_tasks_perf as perf

    return JsApp.from_sources("bench", {MAIN: perf.MAIN, "lib/call.js": perf.LIB})


class Step:
    def __init__(self, label: str, n: int, runs: int) -> None:
        self.label, self.n, self.runs = label, n, runs

    def measure(self, make: Callable[[], Any], shared: heap.SharedRuntime | None = None) -> tuple[float, float, float]:
        """(ms per item, RSS KiB per item, engine heap KiB per item); items are kept."""
        best = float("inf")
        rss = js = 0.0
        for run in range(self.runs):
            gc.collect()
            gc.disable()
            r0, h0 = rss_kib(), shared.size if shared else 0
            t0 = time.perf_counter()
            items = [make() for _ in range(self.n)]
            best = min(best, (time.perf_counter() - t0) / self.n * 1000)
            if run == 0:
                rss = (rss_kib() - r0) / self.n
                js = ((shared.size - h0) / self.n / 1024) if shared else float("nan")
            KEEP.append(items)
            gc.enable()
        return best, rss, js


KEEP: list[Any] = []


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=500, help="items per step (default 500)")
    ap.add_argument("--runs", type=int, default=3, help="runs per step; the best time is shown (default 3)")
    args = ap.parse_args()
    n, runs = args.n, args.runs
    app = perf_app()
    rows: list[tuple[str, float, float, float]] = []

    def row(label: str, make: Callable[[], Any], shared: heap.SharedRuntime | None = None) -> None:
        rows.append((label, *Step(label, n, runs).measure(make, shared)))

    quickjs.Context()  # warm the allocator
    row("binding `quickjs.Context()` (before: one per task)", quickjs.Context)
    row("`JS_NewRuntime` alone", ENGINE.JS_NewRuntime)

    def own_runtime_context() -> int:
        context = ENGINE.JS_NewContextRaw(ENGINE.JS_NewRuntime())
        for name in INTRINSICS:
            getattr(ENGINE, f"JS_AddIntrinsic{name}")(context)
        return int(context)

    row("runtime + context with INTRINSICS", own_runtime_context)
    shared = heap.SharedRuntime(lambda *a: None, 0, 1024 * 1024)
    row("`JS_NewContext` (all intrinsics) in a shared runtime", lambda: ENGINE.JS_NewContext(shared.runtime), shared)
    row("task context (INTRINSICS) in the shared runtime", lambda: shared.new_context(heap.HeapShare()), shared)

    prelude = _prelude().data
    contexts = iter([shared.new_context(heap.HeapShare()) for _ in range(n * runs)])
    row("prelude from bytecode", lambda: next(contexts).run(prelude), shared)

    async def tasks() -> None:
        rt = TaskRuntime(asyncio.get_running_loop())
        warm = [rt.start(app, "idle") for _ in range(20)]
        await asyncio.sleep(0.05)
        rt.terminate_all()
        await asyncio.sleep(0.05)
        gc.collect()
        r0, h0 = rss_kib(), rt._shared.size
        t0 = time.perf_counter()
        started = [rt.start(app, "idle") for _ in range(n)]
        while any(t.state is not TaskState.WAITING_INPUT for t in started):
            await asyncio.sleep(0)
        ms = (time.perf_counter() - t0) / n * 1000
        gc.collect()
        rows.append(("whole task, start() to blocked in ReadInput (TaskRuntime)", ms, (rss_kib() - r0) / n,
                     (rt._shared.size - h0) / n / 1024))
        t0 = time.perf_counter()
        rt._shared.collect()
        gc_ms = (time.perf_counter() - t0) * 1000
        rows.append((f"one cycle collection with {len(rt)} idle tasks (per task)", gc_ms / len(rt), 0.0, 0.0))
        assert not any(t.alive for t in warm)
        rt.terminate_all()
        await asyncio.sleep(0.05)

    asyncio.run(tasks())
    print(f"| step ({n} each, best of {runs}) | ms per item | RSS KiB per item | JS heap KiB per item |")
    print("|---|---:|---:|---:|")
    for label, ms, rss, js in rows:
        js_text = "" if js != js else f"{js:.1f}"
        print(f"| {label} | {ms:.3f} | {rss:.1f} | {js_text} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
