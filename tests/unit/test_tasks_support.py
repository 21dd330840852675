"""Shared fakes and helpers for the task runtime tests (no tests here)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from switch.tasks import events
from switch.tasks.app import JsApp
from switch.tasks.boundary import CallError
from switch.tasks.runtime import Task, TaskRuntime


class FakeLeg:
    """A CallControl that records what the script asked and plays by simple rules.

    ``play_file`` resolves after ``play_delay`` (the "decode") and posts PlayFileCompleted
    after ``play_length``; urls in ``missing`` fail with CallError from the awaitable.
    """

    def __init__(self, headers: dict[str, str] | None = None, *, missing: tuple[str, ...] = ()) -> None:
        self.headers = headers or {"To": "<sip:100@example.com>", "From": "<sip:alice@example.com>"}
        self.missing = set(missing)
        self.calls: list[tuple[Any, ...]] = []
        self._watchers: list[Callable[[], None]] = []
        self._connected = True
        self.answered = False
        self.ended: list[str | None] = []
        self.task: Task | None = None
        self.play_delay = 0.01
        self.play_length = 0.02
        self.fail: dict[str, BaseException] = {}  # verb name -> exception raised at once

    def verb(self, name: str, *args: Any) -> Any:
        return getattr(self, name)(*args)

    def _record(self, *call: Any) -> None:
        self.calls.append(call)
        exc = self.fail.get(call[0])
        if exc is not None:
            raise exc

    def request_data(self, name: str) -> str | None:
        self._record("request_data", name)
        return self.headers.get(name)

    def provision(self) -> None:
        self._record("provision")

    def accept(self) -> Awaitable[None]:
        self._record("accept")

        async def answer() -> None:
            await asyncio.sleep(0.005)
            if not self.connected:
                raise CallError("the caller hung up", status=487)
            self.answered = True

        return answer()

    def reject(self, code: int, reason: str | None) -> None:
        self._record("reject", code, reason)
        self.connected = False

    def play_file(self, url: str, loop: bool) -> Awaitable[None]:
        self._record("play_file", url, loop)

        async def decode() -> None:
            await asyncio.sleep(self.play_delay)
            if url in self.missing:
                raise CallError(f"cannot open {url!r}")
            if not loop:
                asyncio.get_running_loop().call_later(self.play_length, self._completed, url)

        return decode()

    def _completed(self, url: str) -> None:
        if self.task is not None:
            self.task.post(events.play_file_completed(url))

    def stop_play(self) -> None:
        self._record("stop_play")

    def is_connected(self) -> bool:
        return self.connected

    @property
    def connected(self) -> bool:
        return self._connected

    @connected.setter
    def connected(self, value: bool) -> None:
        was, self._connected = self._connected, value
        if was and not value:
            watchers, self._watchers = self._watchers, []
            for callback in watchers:
                callback()

    def on_end(self, callback: Callable[[], None]) -> None:
        if self._connected:
            self._watchers.append(callback)
        else:
            callback()

    def disconnect(self) -> None:
        self._record("disconnect")
        self.connected = False

    def task_ended(self, error: str | None) -> None:
        self.ended.append(error)
        self.connected = False

    # the far end
    def hangup(self) -> None:
        self.connected = False
        if self.task is not None:
            self.task.post(events.disconnect(None, "BYE"))


def make_app(tmp_path: Path, files: dict[str, str], name: str = "default", **kw: Any) -> JsApp:
    root = tmp_path / name
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return JsApp.load(name, root, **kw)


async def until_idle(rt: TaskRuntime, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while len(rt):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"tasks still running: {list(rt.tasks.values())}")
        await asyncio.sleep(0.002)


def run(test: Callable[[TaskRuntime], Awaitable[Any]], **kw: Any) -> Any:
    """Run ``test(runtime)`` on a fresh loop; every task must have ended by the end."""

    async def main() -> Any:
        rt = TaskRuntime(asyncio.get_running_loop(), **kw)
        try:
            return await asyncio.wait_for(test(rt), 15)
        finally:
            await rt.shutdown()
            assert len(rt) == 0

    return asyncio.run(main())


def task_logs(caplog: Any, level: int = logging.INFO) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("switch.tasks") and r.levelno >= level]
