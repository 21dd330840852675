"""The export table: docs do not drift, bindings follow the table, adding a verb is one entry."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from switch.tasks import api, events
from switch.tasks.app import JsApp
from switch.tasks.runtime import TaskRuntime

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_committed_markdown_matches_the_table() -> None:
    assert (DOCS / "js-api.md").read_text() == api.markdown(), "run: python -m switch.tasks.api --markdown > docs/js-api.md"


def test_committed_dts_matches_the_table() -> None:
    assert (DOCS / "softswitch.d.ts").read_text() == api.dts(), "run: python -m switch.tasks.api --dts > docs/softswitch.d.ts"


def test_table_covers_the_design_api() -> None:
    names = {v.name for v in api.VERBS}
    assert {
        "Spawn", "ThisTask", "ParentTask", "SendEvent", "ReadInput", "PendingRequestData", "ProvisionCall",
        "AcceptCall", "RejectCall", "PlayFile", "StopPlay", "IsConnected", "Disconnect", "IsDisconnectEvent",
        "IsPlayFileCompletedEvent", "IsCallCompletedEvent", "IsBreakBridgeEvent", "IsDtmfEvent", "Log",
    } <= names
    assert len(names) == len(api.VERBS)
    for v in api.VERBS:
        assert (v.impl is None) == (v.js is not None or v.predicate_of is not None), v.name
        assert v.doc and v.name in api.markdown() and f"declare function {v.name}(" in api.dts()
    for spec in events.EVENTS:
        if spec.predicate:
            assert api.verb(spec.predicate).predicate_of == spec.type


def test_cli(capsys: Any) -> None:
    assert api.main(["--dts"]) == 0
    assert capsys.readouterr().out == api.dts()


def test_adding_a_verb_is_one_table_entry(monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    """A new verb (as the bridge verbs will be) needs only a JsVerb and its impl."""
    import importlib

    from switch.tasks import prelude, runtime

    def double(task: Any, n: int, what: Any = None) -> Any:
        if n < 0:
            raise api.ScriptTypeError("n must not be negative")
        return {"n": n * 2, "what": what, "tid": task.tid}

    extra = api.JsVerb("Double", (api.Param("n", "integer"), api.Param("what", "json", optional=True)), "object", None, "Test verb.", double)
    monkeypatch.setattr(api, "VERBS", api.VERBS + [extra])
    importlib.reload(prelude)
    monkeypatch.setattr(runtime, "PRELUDE", prelude.PRELUDE)
    monkeypatch.setattr(runtime, "_PRELUDE_CODE", [])  # compiled once per process: not the new one yet
    caplog.set_level(logging.INFO, logger="switch.tasks")
    try:
        app = JsApp.from_sources(
            "x",
            {
                "main.js": "function Main() {\n console.log(JSON.stringify([Double(21, {a: [1]}), Double(1)]));\n"
                " try { Double(-1); } catch (e) { console.log(e.name + ': ' + e.message); }\n"
                " try { Double('x'); } catch (e) { console.log(e.message); }\n}\n"
            },
        )

        async def main() -> None:
            rt = TaskRuntime(asyncio.get_running_loop())
            rt.start(app, "Main")
            while len(rt):
                await asyncio.sleep(0.005)

        asyncio.run(main())
    finally:
        monkeypatch.undo()
        importlib.reload(prelude)
    msgs = [r.getMessage() for r in caplog.records]
    assert 'task[1 x] [{"n":42,"what":{"a":[1]},"tid":1},{"n":2,"what":null,"tid":1}]' in msgs
    assert "task[1 x] TypeError: Double: n must not be negative" in msgs
    assert "task[1 x] Double(n, what): n must be an integer" in msgs


def test_event_constructors_are_json_dicts_with_a_type() -> None:
    import json

    for ev in [
        events.disconnect(486, "Busy Here"),
        events.disconnect(),
        events.play_file_completed("a.wav"),
        events.dtmf("5"),
        events.call_completed(),
        events.break_bridge(),
        events.user_event("hello", {"x": [1]}, 3),
    ]:
        assert isinstance(ev["type"], str) and json.loads(json.dumps(ev)) == ev
    assert events.user_event("hello", 1, 3) == {"type": "hello", "param": 1, "from": 3}
    assert events.disconnect(404, "Not Found") == {"type": "Disconnect", "status": 404, "reason": "Not Found"}
