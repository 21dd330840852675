"""The installed apps and the route table: what serves calls, persisted under the data dir.

Files (``DATA`` is ``--data-dir``)::

    DATA/apps.json               {"apps": {NAME: record}, "routes": [rule, ...]}
    DATA/apps/NAME/FULLSHA/      one exported commit per directory, never modified
    DATA/git/SHA1(URL).git       bare mirrors (see git.py)

Install = fetch (mirror + export) -> check (``JsApp.load``: main.js exists, every file
parses) -> persist the new ``apps.json`` (temp file + fsync + ``os.replace``) -> swap the
in-memory ``JsApp``. Nothing before the ``os.replace`` changes what serves calls, so a
fetch error, a syntax error or a crash mid-install leaves the old version live, and a
restart finds the old record. A new call picks the app's current ``JsApp`` when its
INVITE arrives; a running task holds the ``JsApp`` (sources read once) and the leg holds
its version's directory, so a call runs the commit it started on to its end.

Pruning: after each install and removal, and at startup, version directories of an app
are deleted except the live one, the ``KEEP_VERSIONS - 1`` most recently installed others
(their files are still on disk for a quick look) and every directory a live call uses.
A rollback to a pruned commit re-exports it from the mirror (no network: the mirror keeps
every commit it fetched).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Awaitable, Callable, Iterable

from ..tasks.app import AppError, JsApp
from .git import FetchError, GitMirror, mirror_path
from .routing import DEFAULT_APP_NAME, Route, RouteError, RouteTable

logger = logging.getLogger("switch.apps")

STATE_FILE = "apps.json"
KEEP_VERSIONS = 3
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

# (name, url, commit) -> (full sha, directory holding that commit's tree)
Fetch = Callable[[str, str, str], Awaitable[tuple[str, Path]]]


class DeployError(Exception):
    """An install, removal or route change is refused; ``status`` is the HTTP status the
    control API answers with (400 bad request, 404 unknown, 409 conflict, 422 the app does
    not check, 502 the repository cannot be fetched)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def check_app_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise DeployError(f"bad app name {name!r}: letters, digits, '.', '_' and '-', up to 64, "
                          "starting with a letter or digit")
    return name


@dataclass
class InstalledApp:
    """One installed app: where it came from and which commit is live."""

    name: str
    url: str
    commit: str  # full SHA
    requested: str  # what the operator asked for (short SHA, tag, branch)
    installed_at: float  # epoch seconds
    previous: str | None = None  # the commit it replaced, for the operator's rollback
    source: str = "git"
    app: JsApp | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("app")
        return d


def write_json_atomic(path: Path, data: Any) -> None:
    """Temp file in the same directory, fsync, rename over, fsync the directory: a reader
    (or a restart after a crash) sees the old file or the new one, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class AppStore:
    """Installed apps and routes of one switch. Lives on the switch's loop."""

    def __init__(
        self,
        data_dir: Path,
        *,
        config_routes: Iterable[Route] = (),
        fallback: JsApp | None = None,
        in_use: Callable[[], set[Path]] = set,
        fetch: Fetch | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.apps_dir = self.data_dir / "apps"
        self.state_path = self.data_dir / STATE_FILE
        self.fallback = fallback  # serves 'default' while nothing is installed under that name
        self.in_use = in_use
        self._fetch: Fetch = fetch or self._fetch_git
        self.apps: dict[str, InstalledApp] = {}
        self.routes = RouteTable(config_routes)
        self._app_locks: dict[str, asyncio.Lock] = {}
        self._mirror_locks: dict[Path, asyncio.Lock] = {}
        self._state_lock = asyncio.Lock()  # one apps.json writer at a time: no lost update
        # Install attempts by (app, result): ok, fetch_failed (502), check_failed (422),
        # failed (anything else, e.g. apps.json not written); for the metrics.
        self.installs: dict[tuple[str, str], int] = {}

    # ------------------------------------------------------------------ startup

    def load(self) -> None:
        """Read apps.json and load each recorded version. An app whose version directory is
        missing or does not check is logged and left out (its calls fall to routing's
        error), never a reason for the switch not to start."""
        for tmp in self.apps_dir.glob("*/.tmp-*"):  # exports a crash interrupted
            shutil.rmtree(tmp, ignore_errors=True)
        if not self.state_path.exists():
            return
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError) as exc:
            raise DeployError(f"{self.state_path} is unreadable ({exc}); fix or remove it") from exc
        for name, rec in state.get("apps", {}).items():
            try:
                installed = InstalledApp(**rec)
                installed.app = JsApp.load(name, self.apps_dir / name / installed.commit, version=installed.commit)
            except (TypeError, AppError) as exc:
                logger.error("installed app %r does not load: %s", name, exc)
                continue
            self.apps[name] = installed
        routes = []
        for obj in state.get("routes", []):
            try:
                routes.append(Route.parse(obj))
            except (RouteError, DeployError) as exc:
                logger.error("stored route dropped: %s", exc)
        self.routes.api_routes = routes
        for name in list(self.apps):
            self.prune(name)
        logger.info("apps: %s; %d route(s)", ", ".join(f"{a.name}@{a.commit[:10]}" for a in self.apps.values())
                    or "none installed", len(self.routes.rules()))

    # ------------------------------------------------------------------ serving calls

    def app_for(self, user: str | None, host: str) -> JsApp:
        """The JsApp for a call to ``user@host``; AppError when its app is not installed."""
        name, index = self.routes.app_for(user, host)
        installed = self.apps.get(name)
        if installed is not None and installed.app is not None:
            return installed.app
        if name == DEFAULT_APP_NAME and self.fallback is not None:
            return self.fallback
        rule = f"route {index} ({self.routes.rules()[index][0].match})" if index is not None else "the fallback"
        raise AppError(f"{rule} sends {user}@{host} to app {name!r}, which is not installed")

    # ------------------------------------------------------------------ installing

    async def install(self, name: str, url: str, commit: str) -> dict[str, Any]:
        """Fetch, check and make live; returns the record plus ``timings_ms``. Installs of
        one app are serialized (a per-app lock), so the last one to finish is live."""
        check_app_name(name)
        result = "failed"
        try:
            out = await self._install(name, url, commit)
            result = "ok"
            return out
        except DeployError as exc:
            result = {502: "fetch_failed", 422: "check_failed"}.get(exc.status, result)
            raise
        finally:
            self.installs[name, result] = self.installs.get((name, result), 0) + 1

    async def _install(self, name: str, url: str, commit: str) -> dict[str, Any]:
        lock = self._app_locks.setdefault(name, asyncio.Lock())
        async with lock:
            t0 = time.perf_counter()
            try:
                sha, root = await self._fetch(name, url, commit)
            except FetchError as exc:
                raise DeployError(f"cannot fetch {commit} from {url}: {exc}", 502) from None
            t1 = time.perf_counter()
            try:
                app = await asyncio.to_thread(JsApp.load, name, root, sha)
            except AppError as exc:
                raise DeployError(f"app {name!r} at {sha[:10]} does not check: {exc}", 422) from None
            t2 = time.perf_counter()
            old = self.apps.get(name)
            record = InstalledApp(name, url, sha, commit, time.time(), old.commit if old else None, app=app)
            async with self._state_lock:
                await self._persist(apps={**self.apps, name: record})
                self.apps[name] = record  # from here new calls get the new version
            t3 = time.perf_counter()
            logger.info("app %s: %s -> %s (%s) live; fetch %.0f ms, check %.0f ms, persist %.0f ms",
                        name, old.commit[:10] if old else "none", sha[:10], url,
                        (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3)
            self.prune(name)
            out = record.to_json()
            out["files"] = len(app.files)
            out["timings_ms"] = {"fetch": round((t1 - t0) * 1e3, 1), "check": round((t2 - t1) * 1e3, 1),
                                 "persist": round((t3 - t2) * 1e3, 1), "total": round((t3 - t0) * 1e3, 1)}
            return out

    async def remove(self, name: str) -> dict[str, Any]:
        """Stop serving new calls with ``name``; running calls finish on it. Refused while
        an API route still sends calls to it (they would fail)."""
        check_app_name(name)
        async with self._app_locks.setdefault(name, asyncio.Lock()):
            if name not in self.apps:
                raise DeployError(f"no app named {name!r} is installed", 404)
            users = [str(i) for i, (r, _) in enumerate(self.routes.rules()) if r.app == name]
            if users and name != DEFAULT_APP_NAME:
                raise DeployError(f"route(s) {', '.join(users)} still send calls to {name!r}: "
                                  "remove them first (softswitch route remove INDEX)", 409)
            async with self._state_lock:
                rest = {k: v for k, v in self.apps.items() if k != name}
                await self._persist(apps=rest)
                removed = self.apps.pop(name)
            self.prune(name)
            logger.info("app %s removed (was %s)", name, removed.commit[:10])
            return removed.to_json()

    async def _fetch_git(self, name: str, url: str, commit: str) -> tuple[str, Path]:
        path = mirror_path(self.data_dir, url)
        mirror = GitMirror(self.data_dir, url, self._mirror_locks.setdefault(path, asyncio.Lock()))
        sha = await mirror.resolve(commit)
        dest = self.apps_dir / name / sha
        if not await mirror.export(sha, dest):
            os.utime(dest)  # reinstalled: counts as recent for pruning
        return sha, dest

    # ------------------------------------------------------------------ routes

    async def set_routes(self, rules: list[Any]) -> list[dict[str, Any]]:
        routes = [self._parse_route(r) for r in rules]
        async with self._state_lock:
            await self._persist(routes=routes)
            self.routes.api_routes = routes
        return self.routes.to_json()

    async def add_route(self, rule: Any, index: int | None = None) -> list[dict[str, Any]]:
        route = self._parse_route(rule)
        async with self._state_lock:
            routes = list(self.routes.api_routes)
            routes.insert(len(routes) if index is None else max(0, index), route)
            await self._persist(routes=routes)
            self.routes.api_routes = routes
        return self.routes.to_json()

    async def remove_route(self, index: int) -> list[dict[str, Any]]:
        async with self._state_lock:
            routes = list(self.routes.api_routes)
            total = len(self.routes.rules())
            if not 0 <= index < total:
                raise DeployError(f"no route {index} (there are {total})", 404)
            if index >= len(routes):
                raise DeployError(f"route {index} comes from the config file: edit it there", 409)
            del routes[index]
            await self._persist(routes=routes)
            self.routes.api_routes = routes
        return self.routes.to_json()

    @staticmethod
    def _parse_route(rule: Any) -> Route:
        try:
            return Route.parse(rule)
        except RouteError as exc:
            raise DeployError(str(exc)) from None

    # ------------------------------------------------------------------ disk

    async def _persist(self, *, apps: dict[str, InstalledApp] | None = None,
                       routes: list[Route] | None = None) -> None:
        """Write apps.json as it will be after this change (the caller holds _state_lock
        and applies the change in memory only once this returned)."""
        apps = self.apps if apps is None else apps
        routes = self.routes.api_routes if routes is None else routes
        state = {"version": 1, "apps": {k: v.to_json() for k, v in apps.items()},
                 "routes": [r.to_json() for r in routes]}
        # fsync can take tens of ms on a busy disk: not on the loop, where RTP runs.
        await asyncio.to_thread(write_json_atomic, self.state_path, state)

    def prune(self, name: str) -> list[Path]:
        """Delete old version directories of ``name`` (see the module docstring)."""
        app_dir = self.apps_dir / name
        if not app_dir.is_dir():
            return []
        live = self.apps.get(name)
        keep = {app_dir / live.commit} if live else set()
        used = {Path(p).resolve() for p in self.in_use()}
        versions = [p for p in app_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
        versions.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        if live:
            keep.update([p for p in versions if p not in keep][: KEEP_VERSIONS - 1])
        removed = []
        for p in versions:
            if p not in keep and p.resolve() not in used:
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
        if not live and not any(app_dir.iterdir()):
            app_dir.rmdir()
        return removed
