"""The per-task CPU budget: the engine's interrupt handler stops a runaway, uncatchably,
and only that task; a task that calls verbs is never interrupted (real QuickJS)."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

import pytest

from switch.tasks.engine import check_binding
from switch.tasks.runtime import TaskRuntime
from test_tasks_runtime import OUT, errors, outputs
from test_tasks_support import FakeLeg, make_app, run, until_idle


@pytest.fixture(autouse=True)
def _info_logs(caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="switch.tasks")


def test_the_installed_binding_has_the_layout_the_budget_relies_on() -> None:
    check_binding()  # raises BindingMismatch otherwise


@pytest.mark.parametrize("body", [
    "while (true) {}",
    # catching the interruption (or anything) must not save the script
    "while (true) { try { while (true) {} } catch (e) { out('caught'); } finally { out('finally'); } }",
])
def test_a_runaway_is_interrupted_after_its_budget_and_its_call_is_ended(
        tmp_path: Path, caplog: Any, body: str) -> None:
    app = make_app(tmp_path, {"main.js": OUT + "function Main() {\n  AcceptCall();\n  " + body + "\n}\n"})
    leg = FakeLeg()

    async def test(rt: TaskRuntime) -> float:
        t0 = time.monotonic()
        leg.task = rt.start(app, "Main", leg=leg)
        await until_idle(rt)
        return time.monotonic() - t0

    took = run(test, cpu_seconds=0.3)
    assert 0.25 < took < 2.0, took
    assert outputs(caplog) == []  # no catch and no finally ran
    [err] = errors(caplog)
    # QuickJS records source positions per statement, not per jump: an empty loop body
    # reports the statement before the loop (line 3) at worst.
    m = re.search(r"\] main\.js:(\d+): task exceeded its CPU budget \(0\.3 s of JS without calling a verb", err)
    assert m and m.group(1) in ("3", "4"), err
    assert "in app default@local: interrupted" in err
    assert re.search(r"\n\s+at Main \(main\.js:[34]:\d+\)", err), err  # the JS stack
    assert leg.ended and leg.ended[0] is not None and "CPU budget" in leg.ended[0]


def test_only_the_runaway_stops_other_tasks_carry_on(tmp_path: Path, caplog: Any) -> None:
    app = make_app(tmp_path, {"main.js": OUT + """
function Main() { Spawn('Spin'); for (var i = 0; i < 3; i++) { ReadInput(0.05); } out('main done'); }
function Spin() { while (true) {} }
"""})

    async def test(rt: TaskRuntime) -> None:
        rt.start(app, "Main")
        await until_idle(rt)

    run(test, cpu_seconds=0.2)
    assert outputs(caplog) == ["main done"]
    assert len(errors(caplog)) == 1


def test_compute_split_by_verbs_is_not_interrupted(tmp_path: Path, caplog: Any) -> None:
    # 0.8 s of compute in all, but never more than ~0.05 s between two verbs.
    app = make_app(tmp_path, {"main.js": OUT + """
function Main() {
  var end = Date.now() + 800, n = 0;
  while (Date.now() < end) { var t = Date.now() + 50; while (Date.now() < t) {} ThisTask(); n++; }
  out(n > 5);
}
"""})

    async def test(rt: TaskRuntime) -> None:
        rt.start(app, "Main")
        await until_idle(rt)

    run(test, cpu_seconds=0.3)
    assert outputs(caplog) == [True]
    assert errors(caplog) == []


def test_waiting_does_not_use_the_budget(tmp_path: Path, caplog: Any) -> None:
    app = make_app(tmp_path, {"main.js": OUT + "function Main() { ReadInput(0.5); out('woke'); }"})

    async def test(rt: TaskRuntime) -> None:
        rt.start(app, "Main")
        await until_idle(rt)

    run(test, cpu_seconds=0.1)
    assert outputs(caplog) == ["woke"]


def test_a_memory_bomb_that_catches_its_out_of_memory_errors_is_still_stopped(tmp_path: Path, caplog: Any) -> None:
    # At its heap limit the engine cannot build the interrupt's error; the budget gives
    # the heap headroom for it, so the catch-all loop still ends.
    app = make_app(tmp_path, {"main.js": OUT + """
function Main() {
  var keep = [];
  while (true) { try { keep.push(new Array(100000).join('x')); } catch (e) { keep = keep.slice(0, 1); keep.push(e); } }
}
"""})

    async def test(rt: TaskRuntime) -> float:
        t0 = time.monotonic()
        rt.start(app, "Main")
        await until_idle(rt, timeout=10)
        return time.monotonic() - t0

    took = run(test, cpu_seconds=0.5, memory_limit=8 * 1024 * 1024)
    assert took < 5, took
    [err] = errors(caplog)
    assert "task exceeded its CPU budget" in err, err
