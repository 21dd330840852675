"""The control API: HTTP/JSON on the switch's own loop (aiohttp), for the ``softswitch``
commands that act on a running switch (docs/control-api.md lists every endpoint).

Bound to 127.0.0.1:5080 unless configured (``--control HOST:PORT`` / ``control``); a
non-loopback bind is refused without ``control_token``, and with a token every request
needs ``Authorization: Bearer TOKEN``: installing an app runs its code, so nobody else on
the network may do it. Every error is ``{"error": MESSAGE}`` with a 4xx/5xx status.

Why on the switch's loop rather than a thread: the handlers read the live call and task
tables, which belong to the loop; they are cheap (no I/O but git, which runs as a
subprocess, and the apps.json fsync, which runs in a thread).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..apps.git import FetchError, check_source
from ..apps.store import DeployError

if TYPE_CHECKING:
    from ..server import Switch

logger = logging.getLogger("switch.control")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _version() -> str:
    try:
        return metadata.version("softswitch")
    except metadata.PackageNotFoundError:
        return "dev"


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


# Request bodies. Whatever a body holds, the answer is a 4xx naming what is wrong, never a
# 500: a typo in a script and a hostile page on the operator's machine get the same
# precise refusal, and nothing malformed reaches the store.
MAX_BODY = 1024 * 1024  # bytes (aiohttp's client_max_size): some 20,000 route rules
# The deepest valid body is {"routes": [{"match": ...}]}, 3 levels; json's decoder only
# stops near the interpreter's recursion limit (~1000), which is no limit to rely on.
MAX_DEPTH = 8
_ROUTE_INDEX = re.compile(r"[0-9]{1,18}")  # ASCII: str.isdigit() takes "²", which int() refuses


def _clip(text: str, limit: int = 40) -> str:
    """``text`` cut for an error message (a member name can be a megabyte long)."""
    return text if len(text) <= limit else text[:limit] + "..."


def _json_type(value: object) -> str:
    """What a decoded value is in JSON's terms (RFC 8259 §3), for "must be a string, not ..."."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _not_json_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON value (RFC 8259 §6)")  # Python's json takes NaN, Infinity


def _check_depth(body: object) -> None:
    """Refuse arrays and objects nested deeper than MAX_DEPTH (walked with a stack: a deep
    body must not exhaust the recursion our own checks would use)."""
    stack = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_DEPTH:
                raise DeployError(f"the request body is nested deeper than {MAX_DEPTH} levels")
            stack.extend((item, depth + 1) for item in (value.values() if isinstance(value, dict) else value))


@dataclass(frozen=True)
class Member:
    """One member of a request body's object: its JSON type (``str``, ``int`` or
    ``list``), whether it must be there, and for a string its longest length. Strings
    must not be blank; integers are 0 or more (and JSON's ``true`` is not 1)."""

    name: str
    kind: type[str] | type[int] | type[list[Any]]
    required: bool = True
    max_len: int = 256

    def check(self, value: object, where: str) -> object:
        what = f'{where}: "{self.name}"'
        if self.kind is int:
            if not isinstance(value, int) or isinstance(value, bool):
                raise DeployError(f"{what} must be an integer, not {_json_type(value)}")
            if value < 0:
                raise DeployError(f"{what} must be 0 or more, not {value}")
        elif not isinstance(value, self.kind):
            want = "a string" if self.kind is str else "an array"
            raise DeployError(f"{what} must be {want}, not {_json_type(value)}")
        elif isinstance(value, str):
            if not value.strip():
                raise DeployError(f"{what} must not be empty")
            if len(value) > self.max_len:
                raise DeployError(f"{what} is longer than {self.max_len} characters ({len(value)})")
        return value


def _members(obj: object, members: tuple[Member, ...], shape: str, where: str = "the body") -> dict[str, Any]:
    """``obj`` (``where``: the body, or a part of it) as an object of only ``members``,
    each of its type. Unknown members are refused, not ignored: a misspelt optional one
    ("idx") would otherwise silently act as absent."""
    if not isinstance(obj, dict):
        raise DeployError(f"{where} must be {shape}, not {_json_type(obj)}")
    known = {m.name for m in members}
    unknown = [name for name in obj if name not in known]
    if unknown:
        more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        names = ", ".join(_clip(json.dumps(name)) for name in unknown[:3])
        raise DeployError(f"{where}: unknown member(s) {names}{more}; it is {shape}")
    out: dict[str, Any] = {}
    for m in members:
        if m.name in obj:
            out[m.name] = m.check(obj[m.name], where)
        elif m.required:
            raise DeployError(f'{where}: "{m.name}" is missing; it is {shape}')
    return out


APP_SHAPE = '{"source": "git", "url": URL, "commit": COMMIT}'
APP_BODY = (Member("source", str, required=False, max_len=16), Member("url", str, max_len=4096),
            Member("commit", str))
ROUTE_SHAPE = '{"match": PATTERN, "app": NAME}'
ROUTE_BODY = (Member("match", str), Member("app", str, max_len=64))
NEW_ROUTE_SHAPE = '{"match": PATTERN, "app": NAME} (and "index": N to insert)'
NEW_ROUTE_BODY = (*ROUTE_BODY, Member("index", int, required=False))
ROUTES_SHAPE = '{"routes": [{"match": PATTERN, "app": NAME}, ...]}'
ROUTES_BODY = (Member("routes", list),)


class ControlApi:
    """The HTTP server; started by ``Switch.start()``, stopped by ``Switch.stop()``."""

    def __init__(self, switch: Switch, host: str, port: int, token: str = "") -> None:
        self.switch = switch
        self.host, self.port = host, port
        self.token = token
        self.started = time.time()
        app = web.Application(middlewares=[self._errors, self._auth], client_max_size=MAX_BODY)
        r = app.router
        r.add_get("/status", self.status)
        r.add_get("/metrics", self.metrics)
        r.add_get("/apps", self.list_apps)
        r.add_put("/apps/{name}", self.install_app)
        r.add_delete("/apps/{name}", self.remove_app)
        r.add_get("/calls", self.list_calls)
        r.add_get("/routes", self.list_routes)
        r.add_put("/routes", self.replace_routes)
        r.add_post("/routes", self.add_route)
        r.add_delete("/routes/{index}", self.remove_route)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        logger.info("control API on http://%s:%d%s", self.host, self.port, " (token required)" if self.token else "")

    async def stop(self) -> None:
        await self._runner.cleanup()

    # ------------------------------------------------------------------ middlewares

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except DeployError as exc:
            return _error(exc.status, str(exc))
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return _error(exc.status, f"{exc.reason}: {request.method} {request.path}")
        except Exception as exc:  # the API must answer JSON, and the switch keep serving calls
            logger.exception("control %s %s failed", request.method, request.path)
            return _error(500, f"internal error: {exc}")

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.token:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
                return _error(401, "this switch's control API needs a token: pass --token or set SOFTSWITCH_TOKEN")
        return await handler(request)

    # ------------------------------------------------------------------ helpers

    def _store(self) -> Any:
        store = self.switch.apps
        if store is None:
            raise DeployError(f"this switch serves every call with --app {self.switch.config.app} (development "
                              "mode): run it without --app to install apps and set routes", 409)
        return store

    @staticmethod
    async def _body(request: web.Request) -> Any:
        """The decoded JSON body, or DeployError with the 4xx naming what is wrong."""
        # Only application/json: a web page in the operator's browser can send "simple"
        # cross-origin POSTs (text/plain, forms) to 127.0.0.1 but not JSON ones, so this
        # keeps such pages from adding routes (PUT/DELETE already need a CORS preflight).
        if request.content_type != "application/json":
            raise DeployError("the request body must be JSON (Content-Type: application/json, not "
                              f"{_clip(request.content_type)})", 415)
        # RFC 8259 §8.1: JSON between systems is UTF-8. (aiohttp's request.json() decodes
        # with whatever charset the header names: an unknown one was a LookupError, a 500.)
        charset = request.charset
        if charset is not None and charset.lower() not in ("utf-8", "utf8"):
            raise DeployError(f"the request body must be UTF-8 JSON, not charset {_clip(charset)}", 415)
        too_large = DeployError(f"the request body is larger than {MAX_BODY} bytes", 413)
        if (request.content_length or 0) > MAX_BODY:
            raise too_large  # without reading it
        try:
            raw = await request.read()  # chunked or compressed: aiohttp counts what it decoded
        except web.HTTPRequestEntityTooLarge:
            raise too_large from None
        try:
            body = json.loads(raw.decode(), parse_constant=_not_json_constant)
        except UnicodeDecodeError:
            raise DeployError("the request body is not UTF-8") from None
        except RecursionError:  # json's decoder gives up on deep nesting: a bad body, not our bug
            raise DeployError(f"the request body is nested deeper than {MAX_DEPTH} levels") from None
        except ValueError as exc:  # not JSON, NaN, or an integer past Python's 4300 digits
            raise DeployError(f"the request body is not JSON: {_clip(str(exc), 120)}") from None
        _check_depth(body)
        return body

    def _calls(self) -> list[dict[str, Any]]:
        return [call.info() for call in list(self.switch.engine.calls.values())]

    # ------------------------------------------------------------------ handlers

    async def status(self, request: web.Request) -> web.Response:
        sw = self.switch
        return web.json_response({
            "version": _version(),
            "uptime_s": round(time.time() - self.started, 1),
            "live_calls": sw.engine.live_calls(),
            "live_legs": len(sw.engine.legs),
            "live_tasks": len(sw.tasks),
            "js_workers": sw.tasks.info(),
            "js_worker_deaths": sw.tasks.deaths,
            "mode": "installed" if sw.apps is not None else "single-app",
            "app_dir": sw.config.app or None,
            "apps": len(sw.apps.apps) if sw.apps is not None else 0,
            "data_dir": str(sw.config.data_path),
            "media": {
                "streams": len(sw.clock),
                "send_lateness_ms": sw.clock.lateness_ms(),
                "late_ticks": sw.clock.late_ticks,
                "frames_dropped": sw.clock.frames_dropped,
                "rtp_ports_in_use": sw.ports.in_use,
            },
            "calls_started": sw.engine.calls_started,
            "calls_refused": sw.admission.refused,
            "bad_sip_messages": sw.sip.bad_datagrams,
            "sip_transactions": len(sw.sip.layer),  # open + lingering (RFC 3261 Timers I, J; RFC 6026 L)
            "tcp_connections": len(sw.sip.streams),
            "loop_lag_ms": {"smoothed": round(sw.lag.lag * 1000, 1),
                            "median_2s": round(sw.lag.sustained * 1000, 1)},
        })  # fmt: skip

    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus metrics (switch/metrics.py), behind the token like every endpoint:
        they name apps, commits and call volumes."""
        body, content_type = await self.switch.metrics.exposition(request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def list_apps(self, request: web.Request) -> web.Response:
        calls = self._calls()
        store = self.switch.apps
        apps = []
        if store is None:
            app = self.switch.app
            apps.append({"name": app.name if app else "default", "source": "dir", "url": self.switch.config.app,
                         "commit": "local", "installed_at": self.started,
                         "live_calls": len(calls)})
        else:
            for rec in store.apps.values():
                mine = [c for c in calls if c["app"] == rec.name]
                by_commit: dict[str, int] = {}
                for c in mine:
                    by_commit[c["commit"]] = by_commit.get(c["commit"], 0) + 1
                apps.append({**rec.to_json(), "live_calls": len(mine), "calls_by_commit": by_commit})
            if "default" not in store.apps and store.fallback is not None:
                apps.append({"name": "default", "source": "bundled", "url": str(store.fallback.root),
                             "commit": "bundled", "installed_at": None,
                             "live_calls": sum(1 for c in calls if c["app"] == "default")})
        return web.json_response({"apps": sorted(apps, key=lambda a: a["name"])})

    async def install_app(self, request: web.Request) -> web.Response:
        store = self._store()
        body = _members(await self._body(request), APP_BODY, APP_SHAPE)
        if body.get("source", "git") != "git":
            raise DeployError(f"unknown source {_clip(json.dumps(body['source']))}: only \"git\" is supported")
        url, commit = body["url"], body["commit"]
        try:
            check_source(url, commit)  # what git could take for an option: a bad request, not the 502 of a fetch
        except FetchError as exc:
            raise DeployError(_clip(str(exc), 200)) from None
        name = request.match_info["name"]
        logger.info("install %s from %s at %s (from %s)", name, url, commit, request.remote)
        return web.json_response(await store.install(name, url, commit))

    async def remove_app(self, request: web.Request) -> web.Response:
        return web.json_response(await self._store().remove(request.match_info["name"]))

    async def list_calls(self, request: web.Request) -> web.Response:
        return web.json_response({"calls": self._calls()})

    async def list_routes(self, request: web.Request) -> web.Response:
        store = self.switch.apps
        return web.json_response({"routes": store.routes.to_json() if store is not None else []})

    async def replace_routes(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        # {"routes": [...]}, or the bare array
        rules = _members(body, ROUTES_BODY, ROUTES_SHAPE)["routes"] if isinstance(body, dict) else body
        if not isinstance(rules, list):
            raise DeployError(f"the body must be {ROUTES_SHAPE}, not {_json_type(rules)}")
        rules = [_members(rule, ROUTE_BODY, ROUTE_SHAPE, f"routes[{i}]") for i, rule in enumerate(rules)]
        return web.json_response({"routes": await self._store().set_routes(rules)})

    async def add_route(self, request: web.Request) -> web.Response:
        body = _members(await self._body(request), NEW_ROUTE_BODY, NEW_ROUTE_SHAPE)
        index = body.pop("index", None)
        return web.json_response({"routes": await self._store().add_route(body, index)})

    async def remove_route(self, request: web.Request) -> web.Response:
        text = request.match_info["index"]
        if not _ROUTE_INDEX.fullmatch(text):
            raise DeployError(f"no route {_clip(json.dumps(text))}: a route index is a number from 0", 404)
        return web.json_response({"routes": await self._store().remove_route(int(text))})
