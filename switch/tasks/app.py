"""A JS app: a directory of CommonJS sources with an entry ``main.js``.

``JsApp.load`` reads every ``.js`` file ONCE and checks it parses, so a running call
keeps the code it started with even if the files (or the installed version) change.

Line layout. quickjs-ng names every evaluated source ``<input>`` and has no filename
parameter, so each file gets its own range of "global" line numbers: the source text
evaluated for file F is padded with newlines so that line 1 of F is global line
``F.first_line``. A frame ``<input>:N:C`` then names exactly one file and line
(``JsApp.locate``); lines below ``first_line`` of the first file belong to the runtime
prelude and are hidden from stack traces. Libraries are wrapped in a CommonJS function
whose header sits alone on the line before the file's first line, so columns are exact
too. ``main.js`` is evaluated as a global script (its functions are the task entries, as
in the seed) and is never wrapped.
"""

from __future__ import annotations

import bisect
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

import quickjs

MAIN = "main.js"
MODULE_HEADER = "(function (exports, require, module, __filename, __dirname) {"
_SKIP_DIRS = {"node_modules"}


class AppError(Exception):
    """The app cannot be loaded (missing main.js, unreadable file, syntax error)."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.file = file
        self.line = line


class ModuleNotFound(Exception):
    """``require()`` could not resolve; the message is thrown into JS as an Error."""


@dataclass(frozen=True)
class SourceFile:
    path: str  # posix path relative to the app root, e.g. 'lib/call.js'
    text: str
    first_line: int  # global line number of the file's line 1
    lines: int
    code: str  # what the task evaluates: padded (and wrapped, unless main.js)

    @property
    def last_line(self) -> int:
        return self.first_line + self.lines - 1


_FRAME_INPUT = re.compile(r"<input>:(\d+)(?::(\d+))?")


class JsApp:
    """An app at one version: immutable sources plus their line layout."""

    def __init__(self, name: str, version: str, root: Path | None, sources: dict[str, str], first_line: int) -> None:
        if MAIN not in sources:
            raise AppError(f"app {name!r} has no {MAIN}")
        self.name = name
        self.version = version
        self.root = root
        files: dict[str, SourceFile] = {}
        line = first_line
        for path in [MAIN] + sorted(p for p in sources if p != MAIN):
            text = sources[path]
            n = text.count("\n") + 1
            if path == MAIN:
                code = "\n" * (line - 1) + text + "\n;void 0;"
            else:  # header alone on the line before the file's first line
                code = "\n" * (line - 2) + MODULE_HEADER + "\n" + text + "\n})"
            files[path] = SourceFile(path, text, line, n, code)
            line += n + 2  # room for the next file's header line and this file's footer
        self.files = files
        self._starts = [f.first_line for f in files.values()]
        self._order = list(files.values())

    # -- construction

    @classmethod
    def load(cls, name: str, root: Path, version: str = "local", *, check: bool = True) -> JsApp:
        """Read every ``.js`` under ``root`` (hidden dirs and node_modules skipped)."""
        root = Path(root)
        if not (root / MAIN).is_file():
            raise AppError(f"app {name!r}: no {MAIN} in {root}")
        sources: dict[str, str] = {}
        for p in sorted(root.rglob("*.js")):
            rel = p.relative_to(root)
            if any(part.startswith(".") or part in _SKIP_DIRS for part in rel.parts[:-1]):
                continue
            if not p.is_file():
                continue
            try:
                sources[rel.as_posix()] = p.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise AppError(f"{rel.as_posix()}: cannot read: {e}", rel.as_posix()) from e
        return cls.from_sources(name, sources, version, root=root, check=check)

    @classmethod
    def from_sources(
        cls, name: str, sources: dict[str, str], version: str = "local", *, root: Path | None = None, check: bool = True
    ) -> JsApp:
        from .prelude import PRELUDE_LINES  # the prelude's size decides where apps start

        app = cls(name, version, root, dict(sources), PRELUDE_LINES + 2)
        if check:
            app.check()
        return app

    def check(self) -> None:
        """Compile every file without running it; a syntax error raises AppError('file:line: ...')."""
        ctx = quickjs.Context()
        for f in self._order:
            if f.path == MAIN:  # a script cannot be compiled without running: wrap it like a module
                code = "\n" * (f.first_line - 2) + "(function () {\n" + f.text + "\n})"
            else:
                code = f.code
            try:
                ctx.eval(code + ";void 0;")
            except quickjs.JSException as e:
                text = str(e)
                msg = text.split("\n", 1)[0]
                m = _FRAME_INPUT.search(text)
                where = self.locate(int(m.group(1))) if m else None
                if where is None:
                    raise AppError(f"{f.path}: {msg}", f.path) from None
                raise AppError(f"{where[0]}:{where[1]}: {msg}", where[0], where[1]) from None

    # -- CommonJS resolution

    def resolve(self, from_path: str, spec: str) -> str:
        """``require(spec)`` from file ``from_path`` -> the app path of the module."""
        if spec.startswith("/") or spec.startswith("\\") or re.match(r"^[a-zA-Z]+:", spec):
            raise ModuleNotFound(f"require({spec!r}): only paths inside the app are allowed")
        if spec.startswith("./") or spec.startswith("../"):
            base = posixpath.join(posixpath.dirname(from_path), spec)
        else:
            base = spec
        norm = posixpath.normpath(base)
        if norm == ".." or norm.startswith("../"):
            raise ModuleNotFound(f"require({spec!r}): {norm!r} is outside the app")
        for cand in (norm, norm + ".js", posixpath.join(norm, "index.js")):
            if cand in self.files:
                return cand
        want = norm if norm.endswith(".js") else norm + ".js"
        raise ModuleNotFound(f"require({spec!r}): no module {want!r} in app {self.name!r}")

    # -- line mapping

    def locate(self, line: int) -> tuple[str, int] | None:
        """Global line -> (file, line in file); None for runtime lines."""
        i = bisect.bisect_right(self._starts, line) - 1
        if i < 0:
            return None
        f = self._order[i]
        if line > f.last_line:
            return None
        return f.path, line - f.first_line + 1

    def map_text(self, text: str) -> str:
        """Rewrite the engine's ``<input>:N:C`` locations to ``file:line:col``
        (``<runtime>`` for the runtime's own lines)."""

        def sub(m: re.Match[str]) -> str:
            where = self.locate(int(m.group(1)))
            if where is None:
                return "<runtime>"
            col = f":{m.group(2)}" if m.group(2) else ""
            return f"{where[0]}:{where[1]}{col}"

        return _FRAME_INPUT.sub(sub, text)

    def map_stack(self, text: str) -> str:
        """``map_text``, and the stack frames of the runtime's own code left out (its
        prelude runs from bytecode without positions: ``<null>``)."""
        if "<input>" not in text:
            return text
        return "\n".join(ln for ln in self.map_text(text).split("\n")
                         if not (ln.lstrip().startswith("at ") and ("<runtime>" in ln or "<null>" in ln)))

    def __repr__(self) -> str:
        return f"JsApp({self.name!r}, version={self.version!r}, files={len(self.files)})"
