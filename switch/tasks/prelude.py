"""The JS every task context evaluates first: the runtime side of the boundary.

It captures the task's one hidden Python callable (``__sw_py(verb, ...args)``) into a
closure and deletes the global, defines the verb wrappers generated from ``api.VERBS``, ``console``,
CommonJS ``require`` with a per-task module cache, and ``__sw_entry`` that finds the
task's entry function. Stack traces keep the engine's global ``<input>:line:col``; the
runtime maps them to ``file:line:col`` (``JsApp.map_stack``) when it logs them.

Calling convention (measured: a JSON round trip per call cost ~3 us, this ~0.5 us): the
wrapper passes primitives as they are and JSON-typed parameters as JSON strings; the
Python callable never raises and returns null/boolean/number as they are, or a string
whose first character is a tag: ``s`` string, ``j`` JSON value, ``e`` Error message,
``t`` TypeError message, ``x`` the task is being terminated. Only JSON and primitives
cross, so no ``quickjs.Object`` outlives its context.
"""

from __future__ import annotations


from . import api


_CORE = r"""(function (g) {
'use strict';
var gate = g.__sw_py;  // gate(verb, ...args): the task's one Python callable
delete g.__sw_py;
function terminated() {
  var e = new Error('task terminated');
  e.name = 'TaskTerminated';
  return e;
}
// Result tags (see runtime.TaskRuntime._bind): non-strings are values as they are.
function ret(r) {
  if (typeof r !== 'string') return r;
  switch (r.charAt(0)) {
    case 's': return r.slice(1);
    case 'j': return JSON.parse(r.slice(1));
    case 'e': throw new Error(r.slice(1));
    case 't': throw new TypeError(r.slice(1));
    default: throw terminated();
  }
}
function json(name, v) {
  try { var s = JSON.stringify(v); } catch (e) {
    throw new TypeError(name + ': arguments must be JSON values (' + e.message + ')');
  }
  return s === undefined ? 'null' : s;
}
function call(name, args) { return ret(gate.apply(null, [name].concat(args))); }
function show(v) {
  if (typeof v === 'string') return v;
  if (v instanceof Error) return String(v);
  if (v === undefined) return 'undefined';
  if (typeof v === 'function') return '[function ' + (v.name || 'anonymous') + ']';
  try { var s = JSON.stringify(v); return s === undefined ? String(v) : s; } catch (e) { return String(v); }
}
Error.stackTraceLimit = 20;
// No Error.prepareStackTrace hook: a JS hook runs inside the engine's error construction,
// and an interrupt (the CPU budget) that lands in it is lost, which let a script that
// catches its own out-of-memory errors outlive its budget. Stacks keep the engine's
// "<input>:line:col" and the runtime maps them (JsApp.map_stack) when it logs them.
var cache = {};
function dirname(p) { var i = p.lastIndexOf('/'); return i < 0 ? '' : p.slice(0, i); }
function makeRequire(from) {
  return function require(spec) {
    if (typeof spec !== 'string') throw new TypeError('require(path): path must be a string');
    var path = call('$resolve', [from, spec]);
    var m = cache[path];
    if (m !== undefined) return m.exports;
    m = { id: path, exports: {}, loaded: false };
    cache[path] = m;
    try {
      // compiled once per app version; the source only when it does not compile, so
      // that the engine reports the syntax error at the require as it would
      var src = call('$load', [path]);
      var fn = src === null ? g.__sw_module : (0, eval)(src);
      delete g.__sw_module;
      fn.call(m.exports, m.exports, makeRequire(path), m, path, dirname(path));
    } catch (e) {
      delete cache[path];
      throw e;
    }
    m.loaded = true;
    return m.exports;
  };
}
var mainModule = { id: 'main.js', exports: {}, loaded: false };
cache['main.js'] = mainModule;
g.module = mainModule;
g.exports = mainModule.exports;
g.require = makeRequire('main.js');
var IDENT = /^[A-Za-z_$][\w$]*$/;
function entry(name) {
  var fn;
  if (IDENT.test(name)) { try { fn = (0, eval)(name); } catch (e) { fn = undefined; } }
  if (typeof fn !== 'function' && mainModule.exports) fn = mainModule.exports[name];
  return typeof fn === 'function' ? fn : null;
}
var __sw = { ret: ret, json: json, call: call, show: show, hasEntry: function (n) { return entry(n) !== null; } };
__BINDINGS__
function logger(level) {
  return function () {
    var a = [level];
    for (var i = 0; i < arguments.length; i++) a.push(show(arguments[i]));
    if (a.length === 1) a.push('');
    return call('Log', a);
  };
}
g.console = { log: logger('info'), info: logger('info'), warn: logger('warn'),
              error: logger('error'), debug: logger('debug') };
// the task's entry function; the runtime calls it itself (TaskContext.enter), so a task
// waiting in a verb has one JS frame less on its stack (~1.7 KiB of C stack each)
g.__sw_entry = function (name) {
  mainModule.loaded = true;
  var fn = entry(name);
  if (fn === null) throw new Error('no function ' + JSON.stringify(name) + ' in the app');
  return fn;
};
})(globalThis);
"""

def _minify(js: str) -> str:
    """Drop indentation and comment lines (compile time is per character; keep the lines)."""
    return "\n".join("" if ln.strip().startswith("//") else ln.strip() for ln in js.split("\n"))



PRELUDE = _minify(
    _CORE.replace("__BINDINGS__", api.js_bindings())
)
PRELUDE_LINES = PRELUDE.count("\n") + 1
