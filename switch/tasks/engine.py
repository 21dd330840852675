"""What we use of the QuickJS engine beyond the quickjs-ng binding's Python API.

The wheel's extension module exports the engine's C API, and every ``quickjs.Context``
owns its own ``JSRuntime`` and ``JSContext``, whose pointers are the first fields after
the object header (quickjs-ng 0.17 ``module.c``: ``RuntimeData { PyObject_HEAD;
JSRuntime *runtime; JSContext *context; ...}``). Through ctypes this is a binding of
our own over the same engine, for what the binding's Python API does not offer:

* contexts of our own in one runtime (``heap.py``: a task's context, ``JS_NewContextRaw``
  plus ``INTRINSICS``; all tasks of a worker share the runtime of one binding Context);
* the interrupt handler, for the per-task CPU budget (``budget.py``);
* the context's interrupt counter (``request_poll``): the engine polls the handler every
  10,000 operations, and one operation can be a native call that runs long, so the
  budget's watcher thread sets the counter to 1 to have the very next operation poll;
  the counter's offset in the private ``JSContext`` struct is found and verified at
  start-up (``counter_offset``), never assumed;
* the runtime's ``malloc_size``/``malloc_limit`` (``heap_size``), for each task's share
  of the shared heap;
* bytecode (``compile_script``, ``Bytecode``): the prelude is compiled once per process,
  each app file once per app version, and a task reads bytecode instead of compiling
  (the prelude's 7 KB of source: 0.19 ms instead of 0.81 ms per task, loaded machine).

``check_binding()`` verifies the layout once (the struct size, and that
``JS_GetRuntime(context) == runtime``), and ``heap.SharedRuntime`` the private fields it
uses, so a binding whose layout changed fails at start-up with a clear message instead
of corrupting memory; pyproject pins the range.

Why not a C extension: this keeps the maintained wheel and needs no compiler at install
time or in CI. What ctypes cannot do is be called from JS as a function (a ctypes
callback cannot return the ``JSValue`` struct), so the one JS function that calls into
Python is the binding's own (``heap.py``).
"""

from __future__ import annotations

import ctypes

import _quickjs  # the binding's extension module, which carries the engine
import quickjs

RUNTIME_DATA_SIZE = 80  # sizeof(RuntimeData) in quickjs-ng 0.17's module.c (64-bit)
JS_TAG_NULL = 2
JS_TAG_UNDEFINED = 3
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
        "JS_NewContextRaw": ([vp], vp),
        "JS_FreeContext": ([vp], None),
        "JS_RunGC": ([vp], None),
        "JS_SetGCThreshold": ([vp, size_t], None),
        "JS_GetGCThreshold": ([vp], size_t),
        "JS_SetMaxStackSize": ([vp, size_t], None),
        "JS_GetGlobalObject": ([vp], JSValue),
        "JS_GetPropertyStr": ([vp, JSValue, ctypes.c_char_p], JSValue),
        "JS_SetPropertyStr": ([vp, JSValue, ctypes.c_char_p, JSValue], ctypes.c_int),
        "JS_DupValue": ([vp, JSValue], JSValue),
        "JS_NewStringLen": ([vp, ctypes.c_char_p, size_t], JSValue),
        "JS_ParseJSON": ([vp, ctypes.c_char_p, size_t, ctypes.c_char_p], JSValue),
        **{f"JS_AddIntrinsic{name}": ([vp], ctypes.c_int) for name in INTRINSICS},
    }
    for name, (args, result) in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, result
    return lib


def _load_releasing_gil() -> ctypes.CDLL:
    # CDLL: the calls that run JS release the GIL, as the binding's eval does: the
    # binding's Python callable (our verb gate) takes the GIL back with the thread state
    # that ``SharedRuntime`` puts in the binding's RuntimeData before each call.
    lib = ctypes.CDLL(_quickjs.__file__)
    vp = ctypes.c_void_p
    lib.JS_EvalFunction.argtypes, lib.JS_EvalFunction.restype = [vp, JSValue], JSValue
    lib.JS_Call.argtypes = [vp, JSValue, JSValue, ctypes.c_int, ctypes.POINTER(JSValue)]
    lib.JS_Call.restype = JSValue
    return lib


# What a task's context gets (JS_NewContext adds these and Promise, Proxy, TypedArrays,
# WeakRef, AToB, Performance). Measured in a shared runtime (best of 5 x 200 contexts,
# dev box): BaseObjects alone 0.061 ms, with Date, Eval, RegExp, JSON the same, MapSet
# +0.027 ms, Promise +0.012 ms; JS_NewContext's full set ~53 KiB against ~37 KiB.
# Promise is left out because nothing runs the engine's job queue between a task's
# verbs, so a promise would never settle and an async function never resume: a
# ReferenceError says so at once. The others are for byte buffers, metaprogramming and
# browsers. The list is in docs/js-api.md.
INTRINSICS = ("BaseObjects", "Date", "Eval", "RegExp", "JSON", "MapSet")

ENGINE = _load()
JS_RUN = _load_releasing_gil()


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


MALLOC_SIZE_OFFSET = 48  # JSRuntime: JSMallocFunctions (5 pointers), then JSMallocState
MALLOC_LIMIT_OFFSET = 56  # {malloc_count, malloc_size, malloc_limit}: checked in heap.py


def heap_size(runtime: int) -> int:
    """What the engine counts as allocated in ``runtime`` (``malloc_state.malloc_size``)."""
    return int(ctypes.c_size_t.from_address(runtime + MALLOC_SIZE_OFFSET).value)


def request_poll(context: int, offset: int) -> None:
    """Make the context's next operation call the interrupt handler (any thread)."""
    ctypes.c_int32.from_address(context + offset).value = 1


def _string(context: int, value: JSValue) -> str | None:
    size = ctypes.c_size_t()
    ptr = ENGINE.JS_ToCStringLen2(context, ctypes.byref(size), value, 0)
    if not ptr:
        return None
    text = ctypes.string_at(ptr, size.value).decode("utf-8", "replace")
    ENGINE.JS_FreeCString(context, ptr)
    return text


def _take_exception(context: int) -> str:
    exc = ENGINE.JS_GetException(context)
    text = _string(context, exc)
    ENGINE.JS_FreeValue(context, exc)
    return text if text is not None else "unknown error"


def _exception(context: int) -> quickjs.JSException:
    """The pending JS exception as the binding's eval raises it: ``String(e)``, a
    newline and ``e.stack`` (the runtime's error reports parse that shape)."""
    exc = ENGINE.JS_GetException(context)
    text = _string(context, exc)
    stack: str | None = None
    if exc.tag not in (JS_TAG_NULL, JS_TAG_UNDEFINED):
        value = ENGINE.JS_GetPropertyStr(context, exc, b"stack")
        if value.tag != JS_TAG_EXCEPTION:
            stack = _string(context, value)
            ENGINE.JS_FreeValue(context, value)
        else:
            ENGINE.JS_FreeValue(context, ENGINE.JS_GetException(context))
    ENGINE.JS_FreeValue(context, exc)
    if text is None:
        return quickjs.JSException("unknown error (the thrown value cannot be made a string)")
    kind = quickjs.StackOverflow if "stack overflow" in text or "call stack size exceeded" in text else quickjs.JSException
    return kind(f"{text}\n{stack or ''}")


def compile_script(context: int, source: str, *, debug: bool) -> bytes:
    """A global script compiled to bytecode (``<input>`` as its file name, as the
    binding's eval names every source). ``debug``: keep line numbers, for stacks that
    name the app's file:line; the source text is never kept (``Function.prototype.
    toString`` of app functions then shows no body; nothing in a call flow needs it)."""
    code = source.encode()
    fn = ENGINE.JS_Eval(context, code, len(code), b"<input>", JS_EVAL_TYPE_GLOBAL | JS_EVAL_FLAG_COMPILE_ONLY)
    if fn.tag == JS_TAG_EXCEPTION:
        raise _exception(context)
    size = ctypes.c_size_t()
    flags = JS_WRITE_OBJ_BYTECODE | JS_WRITE_OBJ_STRIP_SOURCE | (0 if debug else JS_WRITE_OBJ_STRIP_DEBUG)
    buf = ENGINE.JS_WriteObject(context, ctypes.byref(size), fn, flags)
    ENGINE.JS_FreeValue(context, fn)
    if not buf:
        raise MemoryError("JS_WriteObject failed")
    data = ctypes.string_at(buf, size.value)
    ENGINE.js_free(context, buf)
    return data


class Bytecode:
    """A global script compiled once, to run in many contexts (no source; no debug info
    unless ``debug``: our own code's frames are hidden from stack traces anyway)."""

    def __init__(self, source: str, *, debug: bool = False) -> None:
        ctx = quickjs.Context()
        self.data = compile_script(pointers(ctx)[1], source, debug=debug)

    def run(self, ctx: quickjs.Context) -> None:
        """Evaluate in a binding ``ctx`` (its result is dropped); a JS exception raises
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
