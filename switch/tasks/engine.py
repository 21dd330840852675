"""What we use of the QuickJS engine beyond the quickjs-ng binding's Python API.

The wheel's extension module exports the engine's C API, and every ``quickjs.Context``
owns its own ``JSRuntime`` and ``JSContext``, whose pointers are the first fields after
the object header (quickjs-ng 0.17 ``module.c``: ``RuntimeData { PyObject_HEAD;
JSRuntime *runtime; JSContext *context; ...}``). Through ctypes we use two engine
features the binding does not offer:

* the interrupt handler, for the per-task CPU budget (``budget.py``);
* the context's interrupt counter (``request_poll``): the engine polls the handler every
  10,000 operations, and one operation can be a native call that runs long, so the
  budget's watcher thread sets the counter to 1 to have the very next operation poll;
  the counter's offset in the private ``JSContext`` struct is found and verified at
  start-up (``counter_offset``), never assumed;
* precompiled bytecode (``Bytecode``): the task prelude is compiled once per process
  and each task reads the bytecode instead of compiling 7 KB of source (measured on the
  dev box: 0.19 ms instead of 0.81 ms per task, loaded machine; DESIGN.md §4 puts most
  of a task's start in that compile).

``check_binding()`` verifies the layout once (the struct size, and that
``JS_GetRuntime(context) == runtime``), so a binding whose layout changed fails at
start-up with a clear message instead of corrupting memory; pyproject pins the range.

Why not a binding of our own: this keeps the maintained wheel and needs no compiler at
install time. What it cannot do: share one ``JSRuntime`` between tasks (each binding
Context has its own, ~166 KiB of an idle task's RSS), which is what a smaller idle task
needs (issue 7, point 4).
"""

from __future__ import annotations

import ctypes

import _quickjs  # the binding's extension module, which carries the engine
import quickjs

RUNTIME_DATA_SIZE = 80  # sizeof(RuntimeData) in quickjs-ng 0.17's module.c (64-bit)
JS_TAG_EXCEPTION = 6
JS_EVAL_TYPE_GLOBAL = 0
JS_EVAL_FLAG_COMPILE_ONLY = 1 << 5
JS_WRITE_OBJ_BYTECODE = 1 << 0
JS_WRITE_OBJ_STRIP_SOURCE = 1 << 4
JS_WRITE_OBJ_STRIP_DEBUG = 1 << 5
JS_READ_OBJ_BYTECODE = 1 << 0

INTERRUPT_HANDLER = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


class JSValue(ctypes.Structure):
    """``JSValue`` without NaN boxing (64-bit): a union and a tag, passed by value."""

    _fields_ = [("u", ctypes.c_uint64), ("tag", ctypes.c_int64)]


class BindingMismatch(RuntimeError):
    """The installed quickjs binding is not laid out as this module expects."""


def _load() -> ctypes.PyDLL:
    # PyDLL: calls keep the GIL. Nothing we call runs a Python callable of the binding
    # (whose glue expects the GIL released by the binding itself), so holding it is safe.
    lib = ctypes.PyDLL(_quickjs.__file__)
    vp, size_t = ctypes.c_void_p, ctypes.c_size_t
    signatures = {
        "JS_SetInterruptHandler": ([vp, INTERRUPT_HANDLER, vp], None),
        "JS_GetRuntime": ([vp], vp),
        "JS_SetMemoryLimit": ([vp, ctypes.c_size_t], None),
        "JS_UpdateStackTop": ([vp], None),
        "JS_Eval": ([vp, ctypes.c_char_p, size_t, ctypes.c_char_p, ctypes.c_int], JSValue),
        "JS_WriteObject": ([vp, ctypes.POINTER(size_t), JSValue, ctypes.c_int], vp),
        "JS_ReadObject": ([vp, ctypes.c_char_p, size_t, ctypes.c_int], JSValue),
        "JS_EvalFunction": ([vp, JSValue], JSValue),
        "JS_FreeValue": ([vp, JSValue], None),
        "JS_GetException": ([vp], JSValue),
        "JS_ToCStringLen2": ([vp, ctypes.POINTER(size_t), JSValue, ctypes.c_int], vp),
        "JS_FreeCString": ([vp, vp], None),
        "js_free": ([vp, vp], None),
    }
    for name, (args, result) in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, result
    return lib


ENGINE = _load()


def pointers(ctx: quickjs.Context) -> tuple[int, int]:
    """(JSRuntime*, JSContext*) of a binding Context."""
    fields = ctypes.cast(id(ctx) + object.__basicsize__, ctypes.POINTER(ctypes.c_void_p))
    return fields[0] or 0, fields[1] or 0


def check_binding() -> None:
    hint = "install the quickjs-ng version pinned in pyproject.toml"
    size = type(quickjs.Context()).__basicsize__
    if size != RUNTIME_DATA_SIZE:
        raise BindingMismatch(f"quickjs binding: Context is {size} bytes, expected {RUNTIME_DATA_SIZE}; {hint}")
    runtime, context = pointers(quickjs.Context())
    if not runtime or not context or ENGINE.JS_GetRuntime(context) != runtime:
        raise BindingMismatch(f"quickjs binding: Context fields are not (runtime, context); {hint}")


_COUNTER: list[int | None] = []


def counter_offset() -> int | None:
    """Offset of ``int interrupt_counter`` in ``JSContext``, or None if it cannot be
    verified. Found by watching which int32 of a throwaway context falls by the same
    amount each time a fixed loop runs, then checked: writing 1 there must make the very
    next operation call the interrupt handler."""
    if _COUNTER:
        return _COUNTER[0]
    ctx = quickjs.Context()
    runtime, context = pointers(ctx)
    polls = [0]

    def count(rt: object, opaque: object) -> int:
        polls[0] += 1
        return 0

    handler = INTERRUPT_HANDLER(count)
    ENGINE.JS_SetInterruptHandler(runtime, handler, None)
    words = (ctypes.c_int32 * 200).from_address(context)
    found: int | None = None
    for _attempt in range(5):
        snaps = []
        for _ in range(4):
            ctx.eval("for (var i = 0; i < 100; i++) {}")
            snaps.append(list(words))
        candidates = [k for k in range(len(words))
                      if len({snaps[j][k] - snaps[j + 1][k] for j in range(3)}) == 1
                      and 50 < snaps[0][k] - snaps[1][k] < 5000]
        if len(candidates) == 1:
            k = candidates[0]
            before = polls[0]
            words[k] = 1
            ctx.eval("var x = 1;")
            if polls[0] > before:
                found = k * 4
            break
    ENGINE.JS_SetInterruptHandler(runtime, INTERRUPT_HANDLER(), None)  # a NULL handler
    _COUNTER.append(found)
    return found


def request_poll(context: int, offset: int) -> None:
    """Make the context's next operation call the interrupt handler (any thread)."""
    ctypes.c_int32.from_address(context + offset).value = 1


def _take_exception(context: int) -> str:
    exc = ENGINE.JS_GetException(context)
    size = ctypes.c_size_t()
    text_ptr = ENGINE.JS_ToCStringLen2(context, ctypes.byref(size), exc, 0)
    text = ctypes.string_at(text_ptr, size.value).decode("utf-8", "replace") if text_ptr else "unknown error"
    if text_ptr:
        ENGINE.JS_FreeCString(context, text_ptr)
    ENGINE.JS_FreeValue(context, exc)
    return text


class Bytecode:
    """A global script compiled once, to run in many contexts (no source, no debug info:
    for our own code, whose frames are hidden from stack traces anyway)."""

    def __init__(self, source: str) -> None:
        ctx = quickjs.Context()
        _, context = pointers(ctx)
        code = source.encode()
        fn = ENGINE.JS_Eval(context, code, len(code), b"<input>", JS_EVAL_TYPE_GLOBAL | JS_EVAL_FLAG_COMPILE_ONLY)
        if fn.tag == JS_TAG_EXCEPTION:
            raise quickjs.JSException(_take_exception(context))
        size = ctypes.c_size_t()
        flags = JS_WRITE_OBJ_BYTECODE | JS_WRITE_OBJ_STRIP_SOURCE | JS_WRITE_OBJ_STRIP_DEBUG
        buf = ENGINE.JS_WriteObject(context, ctypes.byref(size), fn, flags)
        ENGINE.JS_FreeValue(context, fn)
        if not buf:
            raise MemoryError("JS_WriteObject failed")
        self.data = ctypes.string_at(buf, size.value)
        ENGINE.js_free(context, buf)

    def run(self, ctx: quickjs.Context) -> None:
        """Evaluate in ``ctx`` (its result is dropped); a JS exception raises
        ``quickjs.JSException`` with the error's text, as ``Context.eval`` would."""
        runtime, context = pointers(ctx)
        ENGINE.JS_UpdateStackTop(runtime)  # greenlets move the C stack between evals
        fn = ENGINE.JS_ReadObject(context, self.data, len(self.data), JS_READ_OBJ_BYTECODE)
        if fn.tag == JS_TAG_EXCEPTION:
            raise quickjs.JSException(_take_exception(context))
        result = ENGINE.JS_EvalFunction(context, fn)  # takes ownership of fn
        if result.tag == JS_TAG_EXCEPTION:
            raise quickjs.JSException(_take_exception(context))
        ENGINE.JS_FreeValue(context, result)
