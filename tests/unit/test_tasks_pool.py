"""The switch side of the JS workers, with real worker processes: verbs reach the leg,
events reach the task, tids are unique, a runaway ends only its task, and a worker
killed with SIGKILL ends its tasks' calls and is started again."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from switch.tasks import events
from switch.tasks.app import JsApp
from switch.tasks.boundary import CallError
from switch.tasks import pool as pool_module
from switch.tasks.pool import TaskRecord, WorkerPool
from test_tasks_support import FakeLeg, make_app


class WireLeg(FakeLeg):
    """FakeLeg whose events go through the pool, and whose INVITE fields travel with start."""

    record: TaskRecord | None = None

    def request_fields(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.headers.items()}

    def _completed(self, url: str) -> None:
        assert self.record is not None
        self.record.post(events.play_file_completed(url))

    def reason(self) -> Any:
        """What the script reported with RejectCall(499, JSON.stringify(x))."""
        [(_, code, reason)] = [c for c in self.calls if c[0] == "reject"]
        assert code == 499
        return json.loads(reason)


def start(pool: WorkerPool, app: JsApp, leg: WireLeg) -> TaskRecord:
    leg.record = pool.start_task(app, "Main", leg=leg)
    return leg.record


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def run(test: Callable[[WorkerPool], Awaitable[Any]], workers: int = 1, **kw: Any) -> Any:
    async def main() -> Any:
        pool = WorkerPool(asyncio.get_running_loop(), workers, **kw)
        await pool.start()
        try:
            return await asyncio.wait_for(test(pool), 30)
        finally:
            await pool.shutdown()
            assert len(pool) == 0

    return asyncio.run(main())


def test_a_call_flow_runs_in_the_worker_against_the_leg_in_the_switch(tmp_path: Path) -> None:
    app = make_app(tmp_path, {"main.js": """
function Main() {
  var to = PendingRequestData('To');
  AcceptCall();
  PlayFile('tone.wav');
  var evt = ReadInput(5);
  var connected = IsConnected();
  RejectCall(499, JSON.stringify([to, evt.type, evt.url, connected, ThisTask()]));
}
"""})
    leg = WireLeg()

    async def test(pool: WorkerPool) -> None:
        record = start(pool, app, leg)
        await until(lambda: leg.ended != [])
        assert leg.reason() == ["<sip:100@example.com>", "PlayFileCompleted", "tone.wav", True, record.tid]
        assert [c[0] for c in leg.calls] == ["accept", "play_file", "reject"]  # To came with the start
        assert leg.ended == [None]

    run(test)


def test_spawned_tasks_share_the_worker_and_tids_are_unique_across_workers(tmp_path: Path) -> None:
    app = make_app(tmp_path, {"main.js": """
function Main() {
  var kids = [Spawn('Kid', 1), Spawn('Kid', 2)];
  var got = [ReadInput(5), ReadInput(5)].map(function (e) { return [e.type, e.param, e.from]; });
  got.sort();
  RejectCall(499, JSON.stringify({me: ThisTask(), kids: kids, got: got}));
}
function Kid(n) { SendEvent(ParentTask(), 'hello', n * 10); }
"""})
    legs = [WireLeg() for _ in range(4)]

    async def test(pool: WorkerPool) -> None:
        records = [start(pool, app, leg) for leg in legs]
        assert {r.worker.index for r in records} == {0, 1}  # spread over both workers
        await until(lambda: all(leg.ended for leg in legs))
        tids: list[int] = []
        for leg, record in zip(legs, records):
            out = leg.reason()
            assert out["me"] == record.tid
            assert out["got"] == sorted([["hello", 10, out["kids"][0]], ["hello", 20, out["kids"][1]]])
            tids += [out["me"], *out["kids"]]
        assert len(set(tids)) == len(tids) == 12

    run(test, workers=2)


def test_a_script_error_reaches_the_leg_with_file_and_line(tmp_path: Path) -> None:
    app = make_app(tmp_path, {"main.js": "function Main() {\n  AcceptCall();\n  null.x;\n}\n"})
    leg = WireLeg()

    async def test(pool: WorkerPool) -> None:
        start(pool, app, leg)
        await until(lambda: leg.ended != [])
        assert leg.ended[0] is not None and leg.ended[0].startswith("main.js:3: TypeError"), leg.ended

    run(test)


def test_a_runaway_ends_only_its_own_task_in_a_shared_worker(tmp_path: Path) -> None:
    app = make_app(tmp_path, {"main.js": """
function Main() {
  if (PendingRequestData('X-Mode') === 'spin') { AcceptCall(); while (true) {} }
  var e = null;
  while (IsConnected()) { e = ReadInput(0.05); if (e && e.type === 'stop') break; }
  RejectCall(499, JSON.stringify(e && e.type));
}
"""})
    spinner = WireLeg({"X-Mode": "spin"})
    other = WireLeg({"X-Mode": "wait"})

    async def test(pool: WorkerPool) -> None:
        start(pool, app, other)
        start(pool, app, spinner)
        await until(lambda: spinner.ended != [])
        assert spinner.ended[0] is not None and "exceeded its CPU budget" in spinner.ended[0]
        assert other.ended == []
        assert other.record is not None
        other.record.post({"type": "stop"})
        await until(lambda: other.ended != [])
        assert other.reason() == 'stop' and other.ended == [None]  # it kept reading its events

    run(test, cpu_seconds=0.3)


def test_a_killed_worker_ends_its_tasks_calls_and_is_started_again(tmp_path: Path) -> None:
    app = make_app(tmp_path, {"main.js": """
function Main() {
  AcceptCall();
  var e = ReadInput(30);
  RejectCall(499, JSON.stringify(e && e.type));
}
"""})
    legs = [WireLeg() for _ in range(4)]

    async def test(pool: WorkerPool) -> None:
        records = [start(pool, app, leg) for leg in legs]
        await until(lambda: all(any(c[0] == "accept" for c in leg.calls) for leg in legs))
        victim = pool.workers[0]
        old_pid = victim.pid
        assert old_pid is not None
        os.kill(old_pid, signal.SIGKILL)
        await until(lambda: all(leg.ended for leg, r in zip(legs, records) if r.worker is victim))
        for leg, record in zip(legs, records):
            if record.worker is victim:
                assert leg.ended == ["JS worker died"]
            else:
                assert leg.ended == []
        assert pool.deaths == 1
        await until(lambda: victim.alive and victim.pid != old_pid)
        assert victim.restarts == 1
        for record in records:
            if record.worker is not victim:
                record.post({"type": "bye"})
        await until(lambda: all(leg.ended for leg in legs))
        assert [leg.reason() for leg, r in zip(legs, records) if r.worker is not victim] == ["bye", "bye"]
        # the restarted worker serves new calls
        new = WireLeg()
        record = start(pool, app, new)
        record.post({"type": "again"})
        await until(lambda: new.ended != [])
        assert new.reason() == "again"

    run(test, workers=2)


def test_is_connected_turns_false_in_order_with_the_verb_that_ended_the_call(tmp_path: Path) -> None:
    app = make_app(tmp_path, {"main.js": """
function Main() {
  var seen = [IsConnected()];
  Disconnect();
  seen.push(IsConnected());
  RejectCall(499, JSON.stringify(seen));
}
"""})
    leg = WireLeg()

    async def test(pool: WorkerPool) -> None:
        start(pool, app, leg)
        await until(lambda: leg.ended != [])

    run(test)
    # connected, then not right after Disconnect(), without an IsConnected round trip
    assert [c[0] for c in leg.calls] == ["disconnect", "reject"]
    assert leg.reason() == [True, False]


def test_a_verb_refused_by_the_switch_throws_in_the_script(tmp_path: Path) -> None:
    app = make_app(tmp_path, {"main.js": """
function Main() {
  try { RejectCall(486); } catch (e) { RejectCall(499, JSON.stringify(e.message)); }
}
"""})
    leg = WireLeg()
    leg.fail["reject"] = CallError("RejectCall: the call is already answered; use Disconnect()")

    async def test(pool: WorkerPool) -> None:
        start(pool, app, leg)
        await until(lambda: leg.ended != [])

    run(test)
    assert [c[:2] for c in leg.calls] == [("reject", 486), ("reject", 499)]
    assert json.loads(leg.calls[1][2]) == "RejectCall: the call is already answered; use Disconnect()"


def test_a_burst_of_spawns_larger_than_a_tid_block_waits_for_the_next_blocks(
        tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(pool_module, "TID_BLOCK", 8)
    app = make_app(tmp_path, {"main.js": """
function Main() {
  var kids = [];
  for (var i = 0; i < 30; i++) kids.push(Spawn('Kid', i));
  var from = [];
  for (var j = 0; j < 30; j++) from.push(ReadInput(5).from);
  RejectCall(499, JSON.stringify({kids: kids, from: from.sort(function (a, b) { return a - b; })}));
}
function Kid(n) { SendEvent(ParentTask(), 'hi', n); }
"""})
    legs = [WireLeg(), WireLeg()]

    async def test(pool: WorkerPool) -> None:
        for leg in legs:
            start(pool, app, leg)
        await until(lambda: all(leg.ended for leg in legs))

    run(test)
    all_tids = []
    for leg in legs:
        out = leg.reason()
        assert sorted(out["kids"]) == out["from"] and len(set(out["kids"])) == 30
        all_tids += out["kids"]
    assert len(set(all_tids)) == 60
