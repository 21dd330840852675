"""The shared JS runtime (switch/tasks/heap.py): every task of a TaskRuntime has its own
context in one JSRuntime, and still its own memory limit, its own globals and its own
stack frames."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from switch.tasks.heap import MiB
from switch.tasks.runtime import TaskRuntime, TaskState
from test_tasks_support import FakeLeg, make_app, run, until_idle

# keep(n): hold n more MiB (100 KB strings, kept for the task's life), then wait
KEEP = """
var held = [];
function keep(mib) { for (var i = 0; i < mib * 10; i++) held.push(new Array(100001).join(String(i % 10))); }
"""


@pytest.fixture(autouse=True)
def _info_logs(caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="switch.tasks")


def _errors(caplog: Any) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("switch.tasks") and r.levelno >= logging.ERROR]


async def _wait_for(rt: TaskRuntime, tids: list[int], state: TaskState) -> None:
    while any((t := rt.get(tid)) is not None and (t.state is not state or t.queue) for tid in tids):
        await asyncio.sleep(0.002)


async def _deliver(rt: TaskRuntime, tids: list[int]) -> None:
    """One event to each task, each taken in a segment of its own (not queued up)."""
    await _wait_for(rt, tids, TaskState.WAITING_INPUT)
    for tid in tids:
        rt.post(tid, {"type": "go"})
        await asyncio.sleep(0)  # the wake-up
        await _wait_for(rt, [tid], TaskState.WAITING_INPUT)


def test_each_task_has_its_own_memory_limit_across_its_verbs(tmp_path: Path, caplog: Any) -> None:
    """Limit 8 MiB per task. A task that keeps 3 MiB per event ends at its third event
    with out of memory; one that holds 6 MiB, and one that keeps 2 MiB per event for
    three events (6 MiB), carry on: the runtime's heap (20+ MiB) is shared, the limits
    are not."""
    app = make_app(tmp_path, {"main.js": KEEP + """
function grower(mib) { for (;;) { keep(mib); ReadInput(); } }
function Main() { grower(3); }
function holder() { keep(6); ReadInput(); console.log('holder', held.length); }
function steady() { for (var k = 0; k < 3; k++) { keep(2); ReadInput(); } console.log('steady', held.length); }
"""})

    async def test(rt: TaskRuntime) -> tuple[Any, Any, Any]:
        hog = rt.start(app, "Main", leg=FakeLeg())
        holder = rt.start(app, "holder")
        steady = rt.start(app, "steady")
        tids = [hog.tid, holder.tid, steady.tid]
        for _ in range(3):
            await _deliver(rt, tids)
        await until_idle(rt)
        return hog, holder, steady

    hog, holder, steady = run(test, memory_limit=8 * MiB)
    assert hog.error is not None and "out of memory" in hog.error, hog.error
    assert holder.error is None and steady.error is None, _errors(caplog)
    logs = [r.getMessage() for r in caplog.records if r.name.startswith("switch.tasks")]
    assert any(m.endswith("holder 60") for m in logs) and any(m.endswith("steady 60") for m in logs), logs


def test_a_computation_making_cyclic_garbage_is_collected_inside_it(tmp_path: Path, caplog: Any) -> None:
    """~40 MiB of garbage cycles (an object pointing at itself per step) made without a
    verb call, under an 8 MiB limit: the engine's collector runs inside the task."""
    app = make_app(tmp_path, {"main.js": """
function Main() {
  var n = 0;
  for (var i = 0; i < 200000; i++) { var o = { pad: new Array(40).join('z') }; o.self = o; n++; }
  console.log('made', n);
}
"""})
    task = run(lambda rt: _start_and_end(rt, app), memory_limit=8 * MiB)
    assert task.error is None, task.error
    assert any(r.getMessage().endswith("made 200000") for r in caplog.records)


def test_cyclic_garbage_over_many_events_does_not_add_up_to_the_limit(tmp_path: Path, caplog: Any) -> None:
    """A long call making ~0.8 MiB of garbage cycles per event (below what lets the engine
    collect inside it), 40 events, 8 MiB limit: the collections between tasks credit it
    with what they freed of it."""
    app = make_app(tmp_path, {"main.js": """
function Main() {
  for (var k = 0; k < 40; k++) {
    for (var i = 0; i < 4000; i++) { var o = { pad: new Array(40).join('q') }; o.self = o; }
    ReadInput();
  }
  console.log('events', k);
}
"""})

    async def test(rt: TaskRuntime) -> Any:
        task = rt.start(app, "Main")
        for _ in range(40):
            await _deliver(rt, [task.tid])
            rt._shared.collect()  # as ended tasks' garbage would trigger it
        await until_idle(rt)
        return task

    task = run(test, memory_limit=8 * MiB)
    assert task.error is None, task.error
    assert any(r.getMessage().endswith("events 40") for r in caplog.records)


def test_ended_tasks_contexts_are_freed(tmp_path: Path) -> None:
    """200 tasks start and end: their contexts (and heaps) go with the collections, and
    the runtime's heap comes back to within 1 MiB of where it was."""
    app = make_app(tmp_path, {"main.js": KEEP + "function Main() { keep(0.1); }\n"})

    async def test(rt: TaskRuntime) -> tuple[int, int, int]:
        rt.start(app, "Main")
        await until_idle(rt)
        rt._shared.collect()
        before = rt._shared.size
        for _ in range(200):
            rt.start(app, "Main")
        await until_idle(rt)
        rt._shared.collect()
        return before, rt._shared.size, rt._shared.context_count - len(rt._spares)

    before, after, contexts = run(test)
    assert contexts == 0  # but the spares made ahead for the next tasks
    assert after - before < 1 * MiB, f"heap {before} -> {after} bytes after 200 ended tasks"


def test_tasks_do_not_share_globals(tmp_path: Path, caplog: Any) -> None:
    app = make_app(tmp_path, {"main.js": """
function first() { globalThis.mine = 1; Array.prototype.extra = 'x'; ReadInput(); }
function second() { console.log('seen', typeof mine, typeof [].extra, typeof Promise); }
"""})

    async def test(rt: TaskRuntime) -> None:
        a = rt.start(app, "first")
        await _wait_for(rt, [a.tid], TaskState.WAITING_INPUT)
        rt.start(app, "second")
        await asyncio.sleep(0.05)
        await _deliver(rt, [a.tid])
        await until_idle(rt)

    run(test)
    assert any(r.getMessage().endswith("seen undefined undefined undefined") for r in caplog.records)


def test_a_task_suspended_deep_in_js_does_not_show_in_another_tasks_stack(tmp_path: Path, caplog: Any) -> None:
    """Task A waits in ReadInput three functions deep; task B then throws. B's error names
    only B's frames (the engine's one frame chain per runtime is swapped per task), and
    A carries on afterwards."""
    app = make_app(tmp_path, {"main.js": """
function deepOne() { return deepTwo(); }
function deepTwo() { return deepThree(); }
function deepThree() { return ReadInput(); }
function waiter() { var evt = deepOne(); console.log('waiter got', evt.type); }
function thrower() { helper(); }
function helper() { throw new Error('boom'); }
"""})

    async def test(rt: TaskRuntime) -> Any:
        a = rt.start(app, "waiter")
        await _wait_for(rt, [a.tid], TaskState.WAITING_INPUT)
        b = rt.start(app, "thrower")
        while b.alive:
            await asyncio.sleep(0.002)
        await _deliver(rt, [a.tid])
        await until_idle(rt)
        return b

    b = run(test)
    assert b.error == "main.js:7: Error: boom"
    report = "\n".join(_errors(caplog))
    assert "at helper (main.js:7" in report and "at thrower (main.js:6" in report, report
    assert "deep" not in report and "waiter" not in report, report
    assert any(r.getMessage().endswith("waiter got go") for r in caplog.records)


async def _start_and_end(rt: TaskRuntime, app: Any) -> Any:
    task = rt.start(app, "Main")
    await until_idle(rt)
    return task


def test_async_functions_are_inert_and_leave_no_job(tmp_path: Path, caplog: Any) -> None:
    """Without the Promise intrinsic (engine.INTRINSICS) an async function returns an
    object with no ``then`` and its continuation never runs, as docs/js-api.md says; no
    job is left in the runtime's one queue, where it would name a freed context."""
    app = make_app(tmp_path, {"main.js": """
async function later() { await 1; console.log('resumed'); }
function Main() { var r = later(); ReadInput(0.001); console.log('then is', typeof r.then, typeof Promise); }
"""})

    async def test(rt: TaskRuntime) -> bool:
        for _ in range(20):
            rt.start(app, "Main")
        await until_idle(rt)
        return rt._shared.jobs_pending

    assert run(test) is False
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.endswith("then is undefined undefined") for m in messages) == 20, messages
    assert not any("resumed" in m for m in messages)


def test_tasks_take_spare_contexts_made_ahead_and_are_charged_for_them(tmp_path: Path, caplog: Any) -> None:
    """The first task makes its own context and has SPARE_CONTEXTS made after it; the next
    ones take those (fresh: nothing of an earlier task in them), each charged in its own
    share for what the spare held; once the last is taken a new batch is made."""
    from switch.tasks.runtime import SPARE_CONTEXTS

    app = make_app(tmp_path, {"main.js": "function Main() { globalThis.seen = (globalThis.seen || 0) + 1; "
                                         "console.log('seen ' + seen); ReadInput(); }\n"})

    async def test(rt: TaskRuntime) -> tuple[list[int], list[int], int]:
        first = rt.start(app, "Main")
        await asyncio.sleep(0.05)
        spares = [len(rt._spares)]
        spare_heap = rt._spares[-1].share.used
        tasks = [first]
        for _ in range(SPARE_CONTEXTS):
            tasks.append(rt.start(app, "Main"))
            await asyncio.sleep(0.01)
            spares.append(len(rt._spares))
        used = [t.heap.used for t in tasks]
        rt.terminate_all()
        await until_idle(rt)
        return spares, used, spare_heap

    spares, used, spare_heap = run(test)
    seen = [r.getMessage().rsplit(" ", 2)[-2:] for r in caplog.records if " seen " in f" {r.getMessage()}"]
    assert seen == [["seen", "1"]] * (SPARE_CONTEXTS + 1), seen  # every task's globals are its own
    assert spares == [SPARE_CONTEXTS, *range(SPARE_CONTEXTS - 1, 0, -1), SPARE_CONTEXTS], spares
    assert spare_heap > 16 * 1024  # the intrinsics and the prelude: ~50 KiB
    assert all(u >= spare_heap for u in used), (used, spare_heap)
