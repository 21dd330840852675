"""THE JavaScript API: one export table, Kamailio-KEMI style.

Every script-callable function is one ``JsVerb`` in ``VERBS``. From the table come:

* the QuickJS bindings (``js_bindings()``): for each verb with a Python ``impl`` a hidden
  callable plus a JS wrapper that checks argument types (``TypeError('PlayFile(url, loop):
  url must be a string')``) and turns our tagged result into a value or a JS ``Error``;
  verbs with a ``js`` body (the event predicates) are pure JS and never cross into Python;
* ``docs/js-api.md`` (``python -m switch.tasks.api --markdown``);
* ``docs/softswitch.d.ts`` (``python -m switch.tasks.api --dts``).

A unit test fails if the committed docs drift from the table. Adding a verb is one entry
here plus its ``impl(task, *args)``; the impl may return a value (JSON-able), an awaitable
(the task blocks on it), or raise ``CallError`` (the script gets ``Error('<Verb>: msg')``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import events
from .boundary import CallError

if TYPE_CHECKING:
    from .runtime import Task


class ScriptTypeError(Exception):
    """A verb was called with a bad value the JS-side checks cannot see; a JS TypeError."""


# Parameter types: the JS check, the phrase in the TypeError, and the TypeScript type.
TYPES: dict[str, tuple[str | None, str, str]] = {
    "string": ("typeof {v} === 'string'", "a string", "string"),
    "number": ("typeof {v} === 'number' && {v} === {v}", "a number", "number"),
    "integer": ("Number.isInteger({v})", "an integer", "number"),
    "boolean": ("typeof {v} === 'boolean'", "a boolean", "boolean"),
    "tid": ("Number.isInteger({v})", "a task id (integer)", "number"),
    "event": ("{v} !== null && typeof {v} === 'object'", "an event object", "TaskEvent"),
    "json": (None, "a JSON value", "JsonValue"),
    "any": (None, "anything", "unknown"),
}


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    optional: bool = False
    rest: bool = False  # ...name: every remaining argument, each shown as a string
    doc: str = ""

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"unknown parameter type {self.type!r}")


@dataclass(frozen=True)
class JsVerb:
    name: str
    params: tuple[Param, ...]
    returns: str  # TypeScript type of the result
    emits: str | None  # event type the verb may cause, for the docs
    doc: str
    impl: Callable[..., Any] | None = None  # impl(task, *args); None for pure-JS verbs
    js: str | None = None  # body of a pure-JS verb (no Python crossing)
    predicate_of: str | None = None  # a pure-JS event predicate: evt.type === predicate_of
    section: str = "task"
    blocking: bool = False  # may suspend the task (for the docs)
    js_pre: str | None = field(default=None, repr=False)  # extra JS check before crossing
    # A call verb: the ``CallControl`` method (on the switch side, ``switch.calls.call.
    # LegControl``) that implements it; ``impl`` then just checks and forwards the
    # arguments. Adding a call verb is this entry plus that method: the JS workers and
    # the switch find the method by this name (``LEG_METHODS``).
    leg_method: str | None = None

    @property
    def signature(self) -> str:
        return f"{self.name}({', '.join(('...' if p.rest else '') + p.name for p in self.params)})"


SECTIONS = {
    "task": "Task primitives",
    "call": "Call control (on the task's own leg)",
    "bridge": "Bridging",
    "event": "Event predicates",
    "log": "Logging",
}


# ---- implementations (task is a runtime.Task) ---------------------------------------


def _spawn(task: Task, name: str, param: Any = None) -> Any:
    return task.runtime.spawn(task.app, name, param, task.tid)


def _this_task(task: Task) -> int:
    return task.tid


def _parent_task(task: Task) -> int | None:
    return task.parent


def _send_event(task: Task, tid: int, what: str, param: Any = None) -> Any:
    return task.runtime.send_event(tid, events.user_event(what, param, task.tid))


def _read_input(task: Task, timeout: float | None = None) -> events.Event | None:
    return task.read_input(timeout)


def _on_leg(method: str, check: Callable[..., tuple[Any, ...]] | None = None) -> Callable[..., Any]:
    """The impl of a call verb: ``check(*args)`` (raises ScriptTypeError, returns the
    arguments as the method takes them), then the task's leg's ``method``."""

    def impl(task: Task, *args: Any) -> Any:
        return task.call_leg().verb(method, *(check(*args) if check is not None else args))

    return impl


def _reject_args(code: int, reason: str | None = None) -> tuple[Any, ...]:
    if not 300 <= code <= 699:
        raise ScriptTypeError(f"code must be a final error status 300-699, not {code}")
    return code, reason


def _play_args(url: str, loop: bool | None = None) -> tuple[Any, ...]:
    return url, bool(loop)


def _is_connected(task: Task) -> bool:
    return task.leg is not None and task.leg.is_connected()


def _switchboard(task: Task) -> Any:
    board = task.runtime.switchboard
    if board is None:
        raise CallError("bridging is not available in this runtime")
    return board


def _start_bridge(task: Task, tid: int) -> Any:
    return _switchboard(task).start_bridge(task, task.call_leg(), tid)


def _start_bridged_call(task: Task, dest: str, bridge: Any) -> Any:
    if not isinstance(bridge, dict) or bridge.get("type") != events.EventType.BRIDGE.value:
        raise ScriptTypeError("bridge must be the Bridge event that StartBridge delivered")
    return _switchboard(task).start_bridged_call(task, dest, bridge)


def _reject_bridge(task: Task, bridge: Any) -> Any:
    if not isinstance(bridge, dict) or bridge.get("type") != events.EventType.BRIDGE.value:
        raise ScriptTypeError("bridge must be the Bridge event that StartBridge delivered")
    return _switchboard(task).reject_bridge(task, bridge)


def _break_bridge(task: Task) -> Any:
    return _switchboard(task).break_bridge(task)


LOG_LEVELS = ("debug", "info", "warn", "error")


def _log(task: Task, *parts: str) -> None:
    level = "info"
    if len(parts) > 1 and parts[0] in LOG_LEVELS:
        level, parts = parts[0], parts[1:]
    task.script_log(level, " ".join(parts))


_EVT = (Param("evt", "any"),)
_ET = events.EventType

VERBS: list[JsVerb] = [
    # -- task primitives
    JsVerb(
        "Spawn",
        (Param("name", "string"), Param("param", "json", optional=True)),
        "number",
        None,
        "Start a new task running app function `name(param)` in its own context "
        "(same app and version, no call); returns its tid. Throws if the app has no such function.",
        _spawn,
        js_pre="if (!__sw.hasEntry(name)) throw new Error('Spawn: no function ' + "
        "JSON.stringify(name) + ' in the app');",
    ),
    JsVerb("ThisTask", (), "number", None, "The tid of this task.", _this_task),
    JsVerb(
        "ParentTask",
        (),
        "number | null",
        None,
        "The tid of the task that spawned this one; `null` for a root task (an inbound call).",
        _parent_task,
    ),
    JsVerb(
        "SendEvent",
        (Param("tid", "tid"), Param("what", "string"), Param("param", "json", optional=True)),
        "boolean",
        "<what>",
        "Put the event `{type: what, param, from: ThisTask()}` on task `tid`'s queue; "
        "`false` if there is no such task.",
        _send_event,
    ),
    JsVerb(
        "ReadInput",
        (Param("timeoutSec", "number", optional=True),),
        "TaskEvent | null",
        None,
        "Take the first event from this task's queue, waiting up to `timeoutSec` seconds "
        "(omitted or `null`: forever); `null` on timeout.",
        _read_input,
        blocking=True,
    ),
    # -- call control
    JsVerb(
        "PendingRequestData",
        (Param("name", "string"),),
        "string | null",
        None,
        "A header or field of the inbound INVITE: `'To'`, `'From'`, `'Request-URI'`, any header "
        "name; `null` if absent. `'X-Softswitch-Caller'` is who the switch admitted the call from "
        "(`trunk:NAME`, `user:NAME` or `local`), never the INVITE's own header of that name.",
        _on_leg("request_data"),
        section="call",
        leg_method="request_data",
    ),
    JsVerb(
        "ProvisionCall",
        (),
        "void",
        None,
        "Send a provisional answer (180 Ringing, or 183 with SDP for early media).",
        _on_leg("provision"),
        section="call",
        leg_method="provision",
    ),
    JsVerb(
        "AcceptCall",
        (),
        "void",
        None,
        "Answer: 200 OK with our SDP; returns once it is sent, throws if the call is gone.",
        _on_leg("accept"),
        section="call",
        leg_method="accept",
        blocking=True,
    ),
    JsVerb(
        "RejectCall",
        (Param("code", "integer"), Param("reason", "string", optional=True)),
        "void",
        None,
        "Refuse an unanswered call with a final status 300-699 (e.g. 486, 404, 503).",
        _on_leg("reject", _reject_args),
        section="call",
        leg_method="reject",
    ),
    JsVerb(
        "PlayFile",
        (Param("url", "string"), Param("loop", "boolean", optional=True)),
        "void",
        _ET.PLAY_FILE_COMPLETED.value,
        "Play audio to the caller: a file path inside the app, `file://` or `http(s)://`; WAV, "
        "MP3, OGG (a 16-bit mono 8 kHz PCM WAV, the telephone's own format, is used as it is; "
        "anything else is decoded and resampled by FFmpeg, once per file version). Returns once playing starts (throws if the file cannot be played); a "
        "`PlayFileCompleted` event arrives at the end unless `loop`.",
        _on_leg("play_file", _play_args),
        section="call",
        leg_method="play_file",
        blocking=True,
    ),
    JsVerb("StopPlay", (), "void", None, "Stop playing.", _on_leg("stop_play"), section="call",
           leg_method="stop_play"),
    JsVerb(
        "IsConnected",
        (),
        "boolean",
        None,
        "The task's leg exists and has not ended (ringing included); `false` for a task "
        "without a call.",
        _is_connected,
        section="call",
    ),
    JsVerb(
        "Disconnect",
        (),
        "void",
        None,
        "Hang up (BYE; CANCEL or an error response if unanswered).",
        _on_leg("disconnect"),
        section="call",
        leg_method="disconnect",
    ),
    JsVerb(
        "SetCdrField",
        (Param("name", "string"), Param("value", "string")),
        "void",
        None,
        "Add a field to this leg's call detail record (in its `fields` JSON object): `name` is "
        "letters, digits and `_` (up to 64), `value` up to 1024 characters, at most 32 fields; "
        "setting a name again replaces its value. Kept after the call ended, until its record is written.",
        _on_leg("set_cdr_field"),
        section="call",
        leg_method="set_cdr_field",
    ),
    # -- bridging (the seed's ingress/egress pattern)
    JsVerb(
        "StartBridge",
        (Param("tid", "tid"),),
        "void",
        events.EventType.BRIDGE.value,
        "Ingress: offer this task's call to task `tid`, which receives a `Bridge` event: the "
        "bridge handle. The call is answered when the bridged call is.",
        _start_bridge,
        section="bridge",
    ),
    JsVerb(
        "StartBridgedCall",
        (Param("dest", "string"), Param("bridge", "event")),
        "void",
        _ET.CALL_COMPLETED.value,
        "Egress: place an outbound call to `dest` (a SIP URI, a To header value, or a number "
        "routed by the config's gateways) bound to `bridge`; it becomes this task's leg. "
        "Returns once the INVITE is sent; then exactly one event: `CallCompleted` when it "
        "answers (both legs are joined, the ingress answered), or `Disconnect` with the SIP "
        "`status` when it fails. Ringing and early media reach the caller by themselves.",
        _start_bridged_call,
        section="bridge",
        blocking=True,
    ),
    JsVerb(
        "RejectBridge",
        (Param("bridge", "event"),),
        "void",
        _ET.BREAK_BRIDGE.value,
        "Egress: give up the bridge (an unanswered outbound call is cancelled); the ingress "
        "task gets a `BreakBridge` event carrying the callee's status, if any.",
        _reject_bridge,
        section="bridge",
    ),
    JsVerb(
        "BreakBridge",
        (),
        "void",
        _ET.BREAK_BRIDGE.value,
        "Tear down this task's bridge; the other side gets a `BreakBridge` event. No-op if "
        "there is none.",
        _break_bridge,
        section="bridge",
    ),
    # -- event predicates (pure JS)
    JsVerb(
        "IsDisconnectEvent",
        _EVT,
        "boolean",
        None,
        "`evt` is a `Disconnect` event (`evt.status`, `evt.reason`).",
        predicate_of=_ET.DISCONNECT.value,
        section="event",
    ),
    JsVerb(
        "IsPlayFileCompletedEvent",
        _EVT,
        "boolean",
        None,
        "`evt` is a `PlayFileCompleted` event (`evt.url`).",
        predicate_of=_ET.PLAY_FILE_COMPLETED.value,
        section="event",
    ),
    JsVerb(
        "IsCallCompletedEvent",
        _EVT,
        "boolean",
        None,
        "`evt` is a `CallCompleted` event: the outbound call was answered.",
        predicate_of=_ET.CALL_COMPLETED.value,
        section="event",
    ),
    JsVerb(
        "IsBreakBridgeEvent",
        _EVT,
        "boolean",
        None,
        "`evt` is a `BreakBridge` event.",
        predicate_of=_ET.BREAK_BRIDGE.value,
        section="event",
    ),
    JsVerb(
        "IsDtmfEvent",
        _EVT,
        "boolean",
        None,
        "`evt` is a `Dtmf` event (`evt.digit`).",
        predicate_of=_ET.DTMF.value,
        section="event",
    ),
    # -- logging
    JsVerb(
        "Log",
        (Param("args", "any", rest=True),),
        "void",
        None,
        "Write to this task's log (prefix `task[tid app]`). If the first of several arguments is "
        "`'debug'`, `'info'`, `'warn'` or `'error'` it is the level (default info). Non-strings "
        "are shown as JSON. `console.log/info/warn/error/debug` do the same.",
        _log,
        section="log",
    ),
]

# The CallControl methods the call verbs name: what a JS worker forwards to the switch and
# what the switch's LegControl answers (``switch/tasks/pool.py``, ``switch/calls/call.py``).
LEG_METHODS: frozenset[str] = frozenset(v.leg_method for v in VERBS if v.leg_method is not None)


def verb(name: str) -> JsVerb:
    for v in VERBS:
        if v.name == name:
            return v
    raise KeyError(name)


# ---- QuickJS bindings ----------------------------------------------------------------
#
# Each task compiles these again (no bytecode cache), and QuickJS compiles ~15 KB/ms, so
# the wrappers are built at run time by one generic ``bind`` from a compact spec rather
# than written out one by one (that halved the prelude's compile time).

JSON_TYPES = ("json", "any", "event")  # cross as JSON strings; the rest as JS primitives

def _js_string(text: str) -> str:
    return json.dumps(text)


def _js_wrapper(v: JsVerb) -> str:
    """One verb's JS function: checks, then ``gate(verb, ...args)``; written out per verb
    (not made by a factory at run time) because it runs from bytecode compiled once per
    process: a factory cost every task ~0.16 ms and ~28 KiB (closures, their renamed
    ``name`` and the parsed specs), the written-out functions ~5 KiB of bytecode."""
    sig = v.name + "(" + ", ".join(("..." if p.rest else "") + p.name for p in v.params) + ")"
    args = [f"a{i}" for i, p in enumerate(v.params) if not p.rest]
    body: list[str] = []
    crossing: list[str] = []
    rest_at: int | None = None
    for i, p in enumerate(v.params):
        if p.rest:
            rest_at = i
            break
        a = f"a{i}"
        check = TYPES[p.type][0]
        if check is not None:
            error = f"throw new TypeError({_js_string(f'{sig}: {p.name} must be {TYPES[p.type][1]}')});"
            if p.optional:
                body.append(f"if ({a} !== undefined && {a} !== null && !({check.format(v=a)})) {error}")
            else:
                body.append(f"if ({a} === undefined || {a} === null || !({check.format(v=a)})) {error}")
        crossing.append(f"{a} === undefined ? {a} : json({_js_string(v.name)}, {a})" if p.type in JSON_TYPES else a)
    if v.js_pre:
        params = ", ".join(p.name for p in v.params if not p.rest)
        body.append(f"(function ({params}) {{ {v.js_pre} }}).apply(null, arguments);")
    if rest_at is None:
        body.append(f"return ret(gate({', '.join([_js_string(v.name)] + crossing)}));")
    else:
        body.append(f"var a = [{', '.join([_js_string(v.name)] + crossing)}];")
        body.append(f"for (var j = {rest_at}; j < arguments.length; j++) a.push(show(arguments[j]));")
        body.append("return ret(gate.apply(null, a));")
    return f"g.{v.name} = function {v.name}({', '.join(args)}) {{\n" + "\n".join(body) + "\n};\n"


def js_bindings() -> str:
    """The JS that defines every verb; runs inside the prelude (``g``, ``gate``, ``ret``,
    ``json``, ``show``, ``__sw`` in scope)."""
    out = [_js_wrapper(v) for v in VERBS if v.impl is not None]
    for v in VERBS:
        if v.predicate_of:
            out.append(f"g.{v.name} = function {v.name}(evt) {{ return evt !== null && typeof evt === 'object' "
                       f"&& evt.type === {_js_string(v.predicate_of)}; }};\n")
        elif v.js is not None:
            names = ", ".join(p.name for p in v.params if not p.rest)
            out.append(f"g.{v.name} = function {v.name}({names}) {{ {v.js} }};\n")
    return "".join(out)


def json_params(v: JsVerb) -> tuple[int, ...]:
    """Indexes of the parameters that cross as JSON strings."""
    return tuple(i for i, p in enumerate(v.params) if p.type in JSON_TYPES and not p.rest)


def python_verbs() -> list[JsVerb]:
    return [v for v in VERBS if v.impl is not None]


# ---- docs ----------------------------------------------------------------------------

_HEADER = "Generated by `python -m switch.tasks.api` from `switch/tasks/api.py`; do not edit."


def _ts_param(p: Param) -> str:
    ts = TYPES[p.type][2]
    if p.rest:
        return f"...{p.name}: {ts}[]"
    if p.optional:
        return f"{p.name}?: {ts} | null"
    return f"{p.name}: {ts}"


def markdown() -> str:
    out = [
        "# JavaScript API reference",
        "",
        f"<!-- {_HEADER} -->",
        "",
        "Every call runs in the task's own QuickJS context. A verb called with arguments of "
        "the wrong type throws `TypeError`; a verb that fails throws `Error` whose message "
        "starts with the verb name (e.g. `PlayFile: ...`); both can be caught. Call-control "
        "verbs on a task without a call throw `Error('<Verb>: this task has no call')`. "
        "*Blocks*: the task waits (other calls keep running) until the verb completes.",
        "",
        "Modules are CommonJS: `require('lib/call.js')` (relative to the app root, or `./x` "
        "relative to the requiring file; `.js` optional), `exports` / `module.exports`. "
        "An error that ends a task is logged with the app's file:line and stack, and so is an "
        "`e.stack` passed to `console.log`/`Log`; the `e.stack` string itself holds the engine's "
        "frames only (no message line, as in QuickJS) with global `<input>:line:col` positions.",
        "",
        "The language is ECMAScript as QuickJS-ng 0.17 implements it, with these globals: the "
        "base objects (`Object`, `Function`, `Array`, `String`, `Number`, `Boolean`, `Symbol`, "
        "`BigInt`, the `Error` types, `Math`, `Reflect`, `Iterator`, generators, `parseInt` and "
        "the like), `Date`, `eval`, `RegExp`, `JSON`, `Map`, `Set`, `WeakMap`, `WeakSet`, plus "
        "`console` and the verbs below. Not there: `Promise` (nothing runs the job queue between "
        "verbs, so a promise could never settle; an `async` function returns an object with no "
        "`then` and never resumes after an `await`), "
        "`Proxy`, `ArrayBuffer` and the typed arrays, `WeakRef`, `atob`/`btoa`, `performance`. "
        "Apps run from bytecode compiled once per app version, so `String(fn)` of an app "
        "function shows no body.",
        "",
    ]
    bar = "\\|"  # a pipe inside a markdown table cell
    for key, title in SECTIONS.items():
        verbs = [v for v in VERBS if v.section == key]
        if not verbs:
            continue
        out += [f"## {title}", "", "| call | returns | event | meaning |", "|---|---|---|---|"]
        for v in verbs:
            params = ", ".join(_ts_param(p) for p in v.params)
            doc = (v.doc + (" *Blocks.*" if v.blocking else "")).replace("|", "\\|")
            emits = f"`{v.emits}`" if v.emits else ""
            returns = v.returns.replace("|", "\\|")
            out.append(f"| `{v.name}({params.replace('|', bar)})` | `{returns}` | {emits} | {doc} |")
        out.append("")
    out += ["## Events", "", "Every event is a plain object with at least `type`.", ""]
    out += ["| type | predicate | fields | meaning |", "|---|---|---|---|"]
    for e in events.EVENTS:
        fields = ", ".join(f"`{f.name}`: {f.doc}" for f in e.fields)
        pred = f"`{e.predicate}`" if e.predicate else ""
        out.append(f"| `{e.type}` | {pred} | {fields} | {e.doc} |")
    out.append("")
    return "\n".join(out)


def dts() -> str:
    out = [
        f"// {_HEADER}",
        "// TypeScript declarations for softswitch apps (QuickJS, CommonJS).",
        "",
        "type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };",
        "",
        "/** Every event is a plain object with at least `type`. */",
        "interface TaskEvent {",
        "  type: string;",
        "  [field: string]: unknown;",
        "}",
        "",
    ]
    for e in events.EVENTS:
        if e.predicate is None:
            name, type_ = "UserEvent", "string"
        else:
            name, type_ = f"{e.type}Event", json.dumps(e.type).replace('"', "'")
        out.append(f"/** {e.doc} */")
        out.append(f"interface {name} extends TaskEvent {{")
        out.append(f"  type: {type_};")
        for f in e.fields:
            fname = f.name if f.name.isidentifier() else json.dumps(f.name)
            out.append(f"  /** {f.doc} */")
            out.append(f"  {fname}: {f.ts_type};")
        out.append("}")
        out.append("")
    by_pred = {e.predicate: f"{e.type}Event" for e in events.EVENTS if e.predicate}
    for v in VERBS:
        params = ", ".join(_ts_param(p) for p in v.params)
        returns = f"evt is {by_pred[v.name]}" if v.name in by_pred else v.returns
        doc = v.doc + (" Blocks." if v.blocking else "")
        if v.emits:
            doc += f" Event: `{v.emits}`."
        out.append(f"/** {doc} */")
        out.append(f"declare function {v.name}({params}): {returns};")
    out += [
        "",
        "declare const console: {",
        "  log(...args: unknown[]): void;",
        "  info(...args: unknown[]): void;",
        "  warn(...args: unknown[]): void;",
        "  error(...args: unknown[]): void;",
        "  debug(...args: unknown[]): void;",
        "};",
        "",
        "/** CommonJS: paths relative to the app root, or ./x relative to this file; '.js' optional. */",
        "declare function require(path: string): any;",
        "declare const module: { exports: any };",
        "declare const exports: any;",
        "",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m switch.tasks.api", description=__doc__.split("\n")[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--markdown", action="store_true", help="print docs/js-api.md")
    g.add_argument("--dts", action="store_true", help="print docs/softswitch.d.ts")
    args = ap.parse_args(argv)
    sys.stdout.write(markdown() if args.markdown else dts())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
