"""TaskRuntime: blocking verbs, events, errors, limits, termination (real loop, FakeLeg)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import pytest

from switch.tasks.boundary import CallError
from switch.tasks.runtime import TaskRuntime, TaskState
from test_tasks_support import FakeLeg, make_app, run, task_logs, until_idle

# Scripts report values with out(x): a log line "task[tid app] = <json>".
OUT = "function out(v) { console.log('=', JSON.stringify(v)); }\n"
_OUT = re.compile(r"^task\[(\d+) \S+\] = (.*)$")


def outputs(caplog: Any, tid: int | None = None) -> list[Any]:
    got = []
    for msg in task_logs(caplog):
        m = _OUT.match(msg)
        if m and (tid is None or int(m.group(1)) == tid):
            got.append(json.loads(m.group(2)))
    return got


def errors(caplog: Any) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("switch.tasks") and r.levelno >= logging.ERROR]


@pytest.fixture(autouse=True)
def _info_logs(caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="switch.tasks")


# ---- ReadInput / events ----------------------------------------------------------------


def test_read_input_timeout_returns_null(tmp_path: Path, caplog: Any) -> None:
    app = make_app(tmp_path, {"main.js": OUT + "function Main() { out(ReadInput(0.05)); out(ReadInput(0)); }"})

    async def test(rt: TaskRuntime) -> float:
        t0 = time.monotonic()
        rt.start(app, "Main")
        await until_idle(rt)
        return time.monotonic() - t0

    elapsed = run(test)
    assert outputs(caplog) == [None, None]
    assert 0.04 < elapsed < 1.0


def test_read_input_forever_is_woken_by_an_event_and_timer_is_cancelled(tmp_path: Path, caplog: Any) -> None:
    app = make_app(tmp_path, {"main.js": OUT + "function Main() { out(ReadInput()); out(ReadInput(null)); out(ReadInput(30)); }"})

    async def test(rt: TaskRuntime) -> None:
        task = rt.start(app, "Main")
        for n in range(3):
            await asyncio.sleep(0.02)
            assert task.state is TaskState.WAITING_INPUT
            assert rt.post(task.tid, {"type": "ping", "n": n})
        await until_idle(rt)
        assert task._timer is None
        assert not rt.post(task.tid, {"type": "late"})  # ended: no such task

    run(test)
    assert outputs(caplog) == [{"type": "ping", "n": 0}, {"type": "ping", "n": 1}, {"type": "ping", "n": 2}]


def test_events_are_fifo_and_queue_while_the_task_is_busy(tmp_path: Path, caplog: Any) -> None:
    app = make_app(
        tmp_path,
        {"main.js": OUT + "function Main() { var got = []; for (var i = 0; i < 5; i++) got.push(ReadInput(1).n); out(got); }"},
    )

    async def test(rt: TaskRuntime) -> None:
        task = rt.start(app, "Main")
        for n in range(5):  # posted before the task even started
            task.post({"type": "x", "n": n})
        await until_idle(rt)

    run(test)
    assert outputs(caplog) == [[0, 1, 2, 3, 4]]


def test_spawn_send_event_parent_and_this_task(tmp_path: Path, caplog: Any) -> None:
    app = make_app(
        tmp_path,
        {
            "main.js": OUT
            + """
function Main() {
  var kid = Spawn('child', {greeting: 'hi'});
  out({me: ThisTask(), parent: ParentTask(), kid: kid});
  var evt = ReadInput(2);
  out(evt);
  out(SendEvent(kid, 'bye', [1, 2]));
  out(ReadInput(2));
  out(SendEvent(99999, 'nobody'));
  try { Spawn('nope'); } catch (e) { out(e.message); }
}
function child(p) {
  SendEvent(ParentTask(), 'hello', {got: p, me: ThisTask()});
  var evt = ReadInput(2);
  SendEvent(evt.from, 'ack', evt.param);
}
"""
        },
    )

    async def test(rt: TaskRuntime) -> None:
        rt.start(app, "Main")
        await until_idle(rt)

    run(test)
    me = outputs(caplog)
    assert me[0] == {"me": 1, "parent": None, "kid": 2}
    assert me[1] == {"type": "hello", "param": {"got": {"greeting": "hi"}, "me": 2}, "from": 2}
    assert me[2] is True
    assert me[3] == {"type": "ack", "param": [1, 2], "from": 2}
    assert me[4] is False
    assert me[5] == "Spawn: no function \"nope\" in the app"


def test_spawned_task_has_no_call_and_call_verbs_throw(tmp_path: Path, caplog: Any) -> None:
    app = make_app(
        tmp_path,
        {
            "main.js": OUT
            + """
function Main() { Spawn('worker'); }
function worker() {
  out(IsConnected());
  try { AcceptCall(); } catch (e) { out([e.name, e.message]); }
  try { PendingRequestData('To'); } catch (e) { out(e.message); }
}
"""
        },
    )
    run(lambda rt: _start_and_wait(rt, app))
    assert outputs(caplog) == [False, ["Error", "AcceptCall: this task has no call"], "PendingRequestData: this task has no call"]


async def _start_and_wait(rt: TaskRuntime, app: Any, entry: str = "Main", leg: Any = None) -> Any:
    task = rt.start(app, entry, leg=leg)
    if leg is not None:
        leg.task = task
    await until_idle(rt)
    return task


def test_tasks_do_not_share_globals(tmp_path: Path, caplog: Any) -> None:
    app = make_app(tmp_path, {"main.js": OUT + "var n = 0; function Main() { n++; globalThis.shared = (globalThis.shared || 0) + 1; out([n, shared]); }"})

    async def test(rt: TaskRuntime) -> None:
        for _ in range(3):
            rt.start(app, "Main")
        await until_idle(rt)

    run(test)
    assert outputs(caplog) == [[1, 1]] * 3


# ---- call control through the boundary -------------------------------------------------


GREETING = OUT + """
function Main() {
  out(PendingRequestData('To'));
  out(PendingRequestData('X-Missing'));
  ProvisionCall();
  AcceptCall();
  PlayFile('greeting.wav');
  while (IsConnected()) {
    var evt = ReadInput(3600);
    out(evt.type);
    if (IsPlayFileCompletedEvent(evt)) break;
    if (IsDisconnectEvent(evt)) break;
  }
  Disconnect();
}
"""


def test_seed_greeting_flow_with_awaitable_accept_and_play(tmp_path: Path, caplog: Any) -> None:
    app = make_app(tmp_path, {"main.js": GREETING})
    leg = FakeLeg()
    run(lambda rt: _start_and_wait(rt, app, leg=leg))
    assert outputs(caplog) == ["<sip:100@example.com>", None, "PlayFileCompleted"]
    assert [c[0] for c in leg.calls] == ["request_data", "request_data", "provision", "accept", "play_file", "disconnect"]
    assert leg.calls[4] == ("play_file", "greeting.wav", False)
    assert leg.answered and leg.ended == [None]


def test_play_file_failure_from_the_awaitable_is_a_catchable_error(tmp_path: Path, caplog: Any) -> None:
    app = make_app(
        tmp_path,
        {
            "main.js": OUT
            + """
function Main() {
  try { PlayFile('missing.wav'); } catch (e) { out([e.name, e.message, e instanceof Error]); }
  PlayFile('ok.wav', true);
  out('next');
}
"""
        },
    )
    leg = FakeLeg(missing=("missing.wav",))
    run(lambda rt: _start_and_wait(rt, app, leg=leg))
    assert outputs(caplog) == [["Error", "PlayFile: cannot open 'missing.wav'", True], "next"]
    assert leg.calls[-1] == ("play_file", "ok.wav", True)
    assert leg.ended == [None] and errors(caplog) == []


def test_python_errors_in_a_verb_reach_js_as_errors_and_js_continues(tmp_path: Path, caplog: Any) -> None:
    app = make_app(
        tmp_path,
        {
            "main.js": OUT
            + """
function Main() {
  try { ProvisionCall(); } catch (e) { out(e.message); }
  try { StopPlay(); } catch (e) { out(e.message); }
  try { RejectCall(200); } catch (e) { out([e.name, e.message]); }
  out(PendingRequestData('To'));
  RejectCall(486, 'Busy Here');
}
"""
        },
    )
    leg = FakeLeg()
    leg.fail["provision"] = CallError("the call is gone")
    leg.fail["stop_play"] = KeyError("engine bug")
    run(lambda rt: _start_and_wait(rt, app, leg=leg))
    assert outputs(caplog) == [
        "ProvisionCall: the call is gone",
        "StopPlay: internal error (KeyError: 'engine bug')",
        ["TypeError", "RejectCall: code must be a final error status 300-699, not 200"],
        "<sip:100@example.com>",
    ]
    assert leg.calls[-1] == ("reject", 486, "Busy Here")
    assert leg.ended == [None]
    # the engine bug is logged with its traceback; the task itself ended cleanly
    errs = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errs) == 1 and "StopPlay: error in the call engine" in errs[0].getMessage() and errs[0].exc_info


@pytest.mark.parametrize(
    "call, message",
    [
        ("PlayFile(42)", "PlayFile(url, loop): url must be a string"),
        ("PlayFile('a.wav', 'yes')", "PlayFile(url, loop): loop must be a boolean"),
        ("ReadInput('soon')", "ReadInput(timeoutSec): timeoutSec must be a number"),
        ("RejectCall('486')", "RejectCall(code, reason): code must be an integer"),
        ("SendEvent('1', 'x')", "SendEvent(tid, what, param): tid must be a task id (integer)"),
        ("SendEvent(1, 'x', {f: function () {}, big: 10n})", "SendEvent: arguments must be JSON values"),
        ("Spawn()", "Spawn(name, param): name must be a string"),
        ("require(7)", "require(path): path must be a string"),
    ],
)
def test_wrong_argument_types_throw_catchable_type_errors(tmp_path: Path, caplog: Any, call: str, message: str) -> None:
    app = make_app(
        tmp_path,
        {"main.js": OUT + f"function Main() {{ try {{ {call}; out('no throw'); }} catch (e) {{ out([e.name, e.message]); }} out(ThisTask()); }}"},
    )
    run(lambda rt: _start_and_wait(rt, app, leg=FakeLeg()))
    (name, msg), tid = outputs(caplog)
    assert name == "TypeError" and msg.startswith(message) and tid == 1


def test_hidden_python_callables_are_not_reachable(tmp_path: Path, caplog: Any) -> None:
    app = make_app(tmp_path, {"main.js": OUT + "function Main() { out(Object.keys(globalThis).filter(function (k) { return k.indexOf('__sw_py') === 0; })); }"})
    run(lambda rt: _start_and_wait(rt, app))
    assert outputs(caplog) == [[]]


def test_predicates_and_console(tmp_path: Path, caplog: Any) -> None:
    app = make_app(
        tmp_path,
        {
            "main.js": OUT
            + """
function Main() {
  out([IsDisconnectEvent({type: 'Disconnect'}), IsDisconnectEvent(null), IsDtmfEvent(undefined),
       IsDtmfEvent({type: 'Dtmf', digit: '5'}), IsCallCompletedEvent({type: 'CallCompleted'}),
       IsBreakBridgeEvent({type: 'BreakBridge'}), IsPlayFileCompletedEvent('PlayFileCompleted')]);
  console.warn('careful', 1, {a: [2]}, null, undefined);
  console.log();
  Log('error', 'bad', 'thing');
  Log('just one');
}
"""
        },
    )
    run(lambda rt: _start_and_wait(rt, app))
    assert outputs(caplog) == [[True, False, False, True, True, True, False]]
    recs = [(r.levelno, r.getMessage()) for r in caplog.records if "=" not in r.getMessage()]
    assert (logging.WARNING, 'task[1 default] careful 1 {"a":[2]} null undefined') in recs
    assert (logging.INFO, "task[1 default] ") in recs
    assert (logging.ERROR, "task[1 default] bad thing") in recs
    assert (logging.INFO, "task[1 default] just one") in recs


# ---- errors: logged once with file:line, leg told ---------------------------------------


def test_throw_before_answer_is_logged_once_with_file_line_and_stack(tmp_path: Path, caplog: Any) -> None:
    app = make_app(
        tmp_path,
        {
            "main.js": "var call = require('lib/call.js');\n\nfunction Main() {\n  ProvisionCall();\n  call.check(PendingRequestData('To'));\n}\n",
            "lib/call.js": "function check(to) {\n  if (to) {\n    throw new Error('no route to ' + to);\n  }\n}\nexports.check = check;\n",
        },
    )
    leg = FakeLeg()
    task = run(lambda rt: _start_and_wait(rt, app, leg=leg))
    assert task.error == "lib/call.js:3: Error: no route to <sip:100@example.com>"
    assert leg.ended == [task.error]
    (err,) = errors(caplog)
    assert err.startswith("task[1 default] lib/call.js:3: Error: no route to <sip:100@example.com>\n")
    assert "    at check (lib/call.js:3:" in err
    assert "    at Main (main.js:5:" in err
    assert "<input>" not in err


def test_throw_after_answer_ends_the_task_and_the_call(tmp_path: Path, caplog: Any) -> None:
    app = make_app(tmp_path, {"main.js": "function Main() {\n  AcceptCall();\n  undefinedFunction();\n}\n"})
    leg = FakeLeg()
    task = run(lambda rt: _start_and_wait(rt, app, leg=leg))
    assert leg.answered
    assert task.error == "main.js:3: ReferenceError: undefinedFunction is not defined"
    assert leg.ended == [task.error]
    assert len(errors(caplog)) == 1


def test_throw_at_top_level_and_non_error_throws(tmp_path: Path, caplog: Any) -> None:
    app = make_app(
        tmp_path,
        {"main.js": "function Main() {}\nfunction str() { throw 'plain string'; }\n\nthrow new TypeError('at load');\n"},
    )
    leg = FakeLeg()
    task = run(lambda rt: _start_and_wait(rt, app, leg=leg))
    assert task.error == "main.js:4: TypeError: at load"
    app2 = make_app(tmp_path, {"main.js": "function Main() {}\nfunction str() {\n throw 'plain string';\n}\n"}, name="b")
    task2 = run(lambda rt: _start_and_wait(rt, app2, entry="str"))
    assert task2.error == "main.js: plain string"


def test_missing_entry_function(tmp_path: Path, caplog: Any) -> None:
    app = make_app(tmp_path, {"main.js": "function NotMain() {}\n"})
    leg = FakeLeg()
    task = run(lambda rt: _start_and_wait(rt, app, leg=leg))
    assert task.error == 'main.js: Error: no function "Main" in the app'
    assert leg.ended == [task.error]


def test_syntax_error_in_an_unchecked_lib_is_reported_at_require(tmp_path: Path, caplog: Any) -> None:
    app = make_app(
        tmp_path,
        {"main.js": "function Main() {\n  require('./lib/bad');\n}\n", "lib/bad.js": "// ok\nvar x = ;\n"},
        check=False,
    )
    task = run(lambda rt: _start_and_wait(rt, app, leg=FakeLeg()))
    assert task.error is not None and task.error.startswith("lib/bad.js:2: SyntaxError:")
    assert "at Main (main.js:2:" in errors(caplog)[0]


def test_stack_overflow_ends_the_task(tmp_path: Path, caplog: Any) -> None:
    app = make_app(tmp_path, {"main.js": "function r(n) { return r(n + 1) + 1; }\nfunction Main() { r(0); }\n"})
    task = run(lambda rt: _start_and_wait(rt, app))
    # the engine's own stack names the line (no JS stack hook has to run at the limit)
    assert task.error == "main.js:1: RangeError: Maximum call stack size exceeded"


def test_memory_limit_ends_the_task_with_out_of_memory_and_the_loop_is_fine(tmp_path: Path, caplog: Any) -> None:
    app = make_app(
        tmp_path,
        {
            "main.js": OUT
            + """
function Main() { var a = []; for (;;) a.push('x' + a.length + '..................................'); }
function quiet() { out(ReadInput(5)); }
"""
        },
    )

    async def test(rt: TaskRuntime) -> tuple[Any, Any]:
        other = rt.start(app, "quiet")
        hog = rt.start(app, "Main", leg=FakeLeg())
        while hog.alive:
            await asyncio.sleep(0.01)
        assert other.state is TaskState.WAITING_INPUT
        other.post({"type": "still-alive"})
        await until_idle(rt)
        return hog, other

    hog, other = run(test, memory_limit=8 * 1024 * 1024)
    assert hog.error is not None and "out of memory" in hog.error
    assert other.error is None
    assert outputs(caplog) == [{"type": "still-alive"}]


# ---- termination ------------------------------------------------------------------------


def test_shutdown_ends_blocked_tasks_and_tells_their_legs(tmp_path: Path, caplog: Any) -> None:
    app = make_app(
        tmp_path,
        {
            "main.js": OUT
            + """
function Main() { AcceptCall(); ReadInput(); out('not reached'); }
function stubborn() {
  for (var i = 0; i < 1000; i++) { try { ReadInput(); } catch (e) { out(e.name); } }
}
function playing() { PlayFile('long.wav'); out('not reached'); }
"""
        },
    )
    legs = [FakeLeg() for _ in range(3)]
    legs[2].play_delay = 10

    async def test(rt: TaskRuntime) -> list[Any]:
        tasks = [rt.start(app, name, leg=leg) for name, leg in zip(["Main", "stubborn", "playing"], legs)]
        pending = rt.start(app, "Main", leg=FakeLeg())  # never got to run
        await asyncio.sleep(0.05)
        assert [t.state for t in tasks] == [TaskState.WAITING_INPUT, TaskState.WAITING_INPUT, TaskState.WAITING_CALL]
        pending2 = rt.start(app, "Main")
        await rt.shutdown()
        assert len(rt) == 0
        assert pending.leg.ended == [None]  # type: ignore[union-attr]
        return tasks + [pending2]

    tasks = run(test)
    assert all(t.state is TaskState.ENDED and t.error is None for t in tasks)
    assert [leg.ended for leg in legs] == [[None]] * 3
    assert "not reached" not in outputs(caplog)
    assert errors(caplog) == []


SUBPROCESS = """
import asyncio, sys
sys.path.insert(0, {root!r})
from switch.tasks.app import JsApp
from switch.tasks.runtime import TaskRuntime

app = JsApp.from_sources('x', {{'main.js': '''
function Main() {{ var k = Spawn('child'); while (true) {{ ReadInput(); }} }}
function child() {{ function deep(n) {{ return n ? deep(n - 1) : ReadInput(); }} deep(50); }}
'''}})

async def main():
    rt = TaskRuntime(asyncio.get_running_loop())
    for _ in range(50):
        rt.start(app, 'Main')
    await asyncio.sleep(0.1)
    assert len(rt) == 100, len(rt)
    if {shutdown}:
        await rt.shutdown()
        assert len(rt) == 0
    print('ok', flush=True)
    return rt

rt = asyncio.run(main())
"""


@pytest.mark.parametrize("shutdown", [True, False])
def test_process_with_blocked_tasks_exits_cleanly(shutdown: bool) -> None:
    """Blocked greenlets inside QuickJS frames must not crash interpreter teardown."""
    import subprocess
    import sys

    root = str(Path(__file__).resolve().parents[2])
    p = subprocess.run(
        [sys.executable, "-c", SUBPROCESS.format(root=root, shutdown=shutdown)], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "ok"


def test_terminate_one_task(tmp_path: Path) -> None:
    app = make_app(tmp_path, {"main.js": "function Main() { ReadInput(); }"})

    async def test(rt: TaskRuntime) -> None:
        a, b = rt.start(app, "Main"), rt.start(app, "Main")
        await asyncio.sleep(0.01)
        assert rt.terminate(a.tid) and not rt.terminate(12345)
        assert not a.alive and b.alive and len(rt) == 1

    run(test)


# ---- scale -----------------------------------------------------------------------------


def test_1000_tasks_each_doing_100_rounds(tmp_path: Path, caplog: Any) -> None:
    app = make_app(
        tmp_path,
        {
            "main.js": """
function ping() {
  var peer = Spawn('pong');
  for (var i = 0; i < 100; i++) {
    SendEvent(peer, 'ping', i);
    var evt = ReadInput(10);
    if (evt === null || evt.param !== i) throw new Error('lost ' + i);
  }
  SendEvent(peer, 'stop');
}
function pong() {
  for (;;) {
    var evt = ReadInput(10);
    if (evt.type === 'stop') return;
    SendEvent(evt.from, 'pong', evt.param);
  }
}
"""
        },
    )

    async def test(rt: TaskRuntime) -> float:
        t0 = time.perf_counter()
        tasks = [rt.start(app, "ping") for _ in range(500)]
        await until_idle(rt, timeout=60)
        assert all(t.error is None for t in tasks)
        return time.perf_counter() - t0

    elapsed = run(test)
    assert errors(caplog) == []
    print(f"\n1000 tasks x 100 rounds: {elapsed:.2f} s ({elapsed / 100_000 * 1e6:.1f} us per event)")


def test_a_stack_the_script_logs_names_the_apps_files(tmp_path: Path, caplog: Any) -> None:
    app = make_app(tmp_path, {
        "main.js": "var lib = require('lib/x.js');\nfunction Main() {\n  try { lib.fail(); } catch (e) { console.log(e.stack); }\n}\n",
        "lib/x.js": "exports.fail = function () {\n  throw new Error('boom');\n};\n",
    })
    run(lambda rt: _start_and_wait(rt, app))
    logs = task_logs(caplog)
    # QuickJS's e.stack is the frames alone (no "Error: boom" line, unlike V8's)
    matches = [m for m in logs if "(lib/x.js:2:" in m]
    assert len(matches) == 1, logs
    logged = matches[0]
    assert "at Main (main.js:3:" in logged, logged
    assert "<input>" not in logged and "<runtime>" not in logged and "<null>" not in logged, logged
