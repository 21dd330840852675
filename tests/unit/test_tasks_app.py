"""JsApp: loading once, syntax checks with file:line, CommonJS require semantics."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from switch.tasks.app import AppError, JsApp, ModuleNotFound
from switch.tasks.runtime import TaskRuntime
from test_tasks_support import make_app, run, until_idle

OUT = "function out(v) { console.log('=', JSON.stringify(v)); }\n"


def outputs(caplog: Any) -> list[Any]:
    return [json.loads(r.getMessage().split("] = ", 1)[1]) for r in caplog.records if "] = " in r.getMessage()]


@pytest.fixture(autouse=True)
def _info_logs(caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="switch.tasks")


async def _main(rt: TaskRuntime, app: JsApp) -> Any:
    task = rt.start(app, "Main")
    await until_idle(rt)
    return task


def test_syntax_error_in_main_js(tmp_path: Path) -> None:
    with pytest.raises(AppError) as ei:
        make_app(tmp_path, {"main.js": "function Main() {\n  var x = 1;\n  if (x {\n  }\n}\n"})
    assert str(ei.value).startswith("main.js:3: SyntaxError:")
    assert (ei.value.file, ei.value.line) == ("main.js", 3)


def test_syntax_error_in_a_required_lib(tmp_path: Path) -> None:
    with pytest.raises(AppError) as ei:
        make_app(
            tmp_path,
            {"main.js": "var l = require('lib/util');\nfunction Main() {}\n", "lib/util.js": "exports.a = 1;\n\nexports.b = ;\n"},
        )
    assert str(ei.value).startswith("lib/util.js:3: SyntaxError:")


def test_missing_main_and_hidden_dirs(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(AppError, match="no main.js"):
        JsApp.load("empty", tmp_path / "empty")
    app = make_app(tmp_path, {"main.js": "function Main() {}", ".git/hooks/x.js": "broken(", "node_modules/m/i.js": "("})
    assert sorted(app.files) == ["main.js"]


def test_resolve_rules() -> None:
    app = JsApp.from_sources(
        "a", {"main.js": "", "lib/call.js": "", "lib/util.js": "", "lib/sub/index.js": "", "x.js": ""}, check=False
    )
    assert app.resolve("main.js", "lib/call.js") == "lib/call.js"
    assert app.resolve("main.js", "lib/call") == "lib/call.js"
    assert app.resolve("main.js", "./lib/call") == "lib/call.js"
    assert app.resolve("lib/call.js", "./util") == "lib/util.js"
    assert app.resolve("lib/call.js", "../x") == "x.js"
    assert app.resolve("lib/call.js", "lib/util.js") == "lib/util.js"  # bare = from the app root
    assert app.resolve("main.js", "lib/sub") == "lib/sub/index.js"
    for spec, msg in [
        ("../etc/passwd", "is outside the app"),
        ("lib/../../x", "is outside the app"),
        ("/etc/passwd", "only paths inside the app"),
        ("file:///etc/passwd", "only paths inside the app"),
        ("lib/nope", "no module 'lib/nope.js' in app 'a'"),
    ]:
        with pytest.raises(ModuleNotFound, match=msg):
            app.resolve("main.js", spec)


def test_require_in_a_task(tmp_path: Path, caplog: Any) -> None:
    app = make_app(
        tmp_path,
        {
            "main.js": OUT
            + """
var call = require('lib/call.js');
var again = require('./lib/call');
function Main() {
  out([call === again, call.name(), call.helper(), require('lib/counter').next(), require('lib/counter.js').next()]);
  out(module.id);
  try { require('lib/missing'); } catch (e) { out([e.name, e.message]); }
  try { require('../../outside.js'); } catch (e) { out(e.message); }
  try { require('lib/throws'); } catch (e) { out(e.message); }
  try { require('lib/throws'); } catch (e) { out('again: ' + e.message); }
  out(require('lib/a').fromB);
}
""",
            "lib/call.js": "var h = require('./helpers/h');\nexports.name = function () { return __filename + ' in ' + __dirname; };\nexports.helper = h;\n",
            "lib/helpers/h.js": "module.exports = function () { return 'helped'; };\n",
            "lib/counter.js": "var n = 0;\nexports.next = function () { return ++n; };\n",
            "lib/throws.js": "throw new Error('lib failed at load');\n",
            "lib/a.js": "exports.early = 'a-early';\nvar b = require('./b');\nexports.fromB = b.seen;\n",
            "lib/b.js": "exports.seen = require('./a').early;\n",
            "outside.js": "",
        },
    )
    run(lambda rt: _main(rt, app))
    assert outputs(caplog) == [
        [True, "lib/call.js in lib", "helped", 1, 2],  # one module instance per task
        "main.js",
        ["Error", "require('lib/missing'): no module 'lib/missing.js' in app 'default'"],
        "require('../../outside.js'): '../../outside.js' is outside the app",
        "lib failed at load",
        "again: lib failed at load",  # a module that threw is not cached
        "a-early",  # cycles see the partial exports, as in Node
    ]


def test_module_cache_is_per_task(tmp_path: Path, caplog: Any) -> None:
    app = make_app(
        tmp_path,
        {"main.js": OUT + "var c = require('lib/counter');\nfunction Main() { out(c.next()); }\n", "lib/counter.js": "var n = 0;\nexports.next = function () { return ++n; };\n"},
    )

    async def test(rt: TaskRuntime) -> None:
        for _ in range(3):
            rt.start(app, "Main")
        await until_idle(rt)

    run(test)
    assert outputs(caplog) == [1, 1, 1]


def test_a_running_call_keeps_the_code_it_started_with(tmp_path: Path, caplog: Any) -> None:
    app = make_app(
        tmp_path,
        {"main.js": OUT + "function Main() { ReadInput(); out(require('lib/v').v); }\n", "lib/v.js": "exports.v = 1;\n"},
    )

    async def test(rt: TaskRuntime) -> None:
        task = rt.start(app, "Main")
        await asyncio_sleep(0.02)
        (tmp_path / "default" / "lib" / "v.js").write_text("exports.v = 2;\n")
        (tmp_path / "default" / "main.js").write_text("function Main() { throw new Error('new code'); }\n")
        task.post({"type": "go"})
        await until_idle(rt)
        new = JsApp.load("default", tmp_path / "default", version="v2")
        t2 = rt.start(new, "Main")
        await until_idle(rt)
        assert t2.error == "main.js:1: Error: new code"
        assert task.error is None

    run(test)
    assert outputs(caplog) == [1]


async def asyncio_sleep(t: float) -> None:
    import asyncio

    await asyncio.sleep(t)


def test_main_js_is_a_global_script_and_exports_are_entries(tmp_path: Path, caplog: Any) -> None:
    app = make_app(
        tmp_path,
        {
            "main.js": OUT
            + "const K = 7;\nlet seen = [];\nfunction Main() { Spawn('viaExports', K); Spawn('viaConst', K); }\n"
            + "exports.viaExports = function (p) { out(['exports', p]); };\n"
            + "const viaConst = function (p) { out(['const', p, typeof seen]); };\n"
        },
    )
    run(lambda rt: _main(rt, app))
    assert sorted(outputs(caplog)) == [["const", 7, "object"], ["exports", 7]]


def test_line_layout_maps_every_file_back() -> None:
    app = JsApp.from_sources("a", {"main.js": "a\nb\nc", "lib/x.js": "1\n2"})
    m, x = app.files["main.js"], app.files["lib/x.js"]
    assert app.locate(m.first_line) == ("main.js", 1)
    assert app.locate(m.first_line + 2) == ("main.js", 3)
    assert app.locate(x.first_line + 1) == ("lib/x.js", 2)
    assert app.locate(1) is None and app.locate(x.last_line + 1) is None
    assert x.code.count("\n") == x.first_line + 1  # padding + header line + 2 lines + footer
    assert app.map_text(f"at f (<input>:{x.first_line + 1}:5)") == "at f (lib/x.js:2:5)"
