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
import logging
import time
from importlib import metadata
from typing import TYPE_CHECKING, Any
from collections.abc import Awaitable, Callable

from aiohttp import web

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


class ControlApi:
    """The HTTP server; started by ``Switch.start()``, stopped by ``Switch.stop()``."""

    def __init__(self, switch: Switch, host: str, port: int, token: str = "") -> None:
        self.switch = switch
        self.host, self.port = host, port
        self.token = token
        self.started = time.time()
        app = web.Application(middlewares=[self._errors, self._auth], client_max_size=64 * 1024)
        r = app.router
        r.add_get("/status", self.status)
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
        # Only application/json: a web page in the operator's browser can send "simple"
        # cross-origin POSTs (text/plain, forms) to 127.0.0.1 but not JSON ones, so this
        # keeps such pages from adding routes (PUT/DELETE already need a CORS preflight).
        if request.content_type != "application/json":
            raise DeployError("the request body must be JSON (Content-Type: application/json)")
        try:
            return await request.json()
        except (ValueError, UnicodeDecodeError):
            raise DeployError("the request body must be JSON") from None
        except RecursionError:  # json's decoder gives up on deep nesting: a bad body, not our bug
            raise DeployError("the request body is nested too deeply") from None

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
            "tcp_connections": len(sw.sip.streams),
            "loop_lag_ms": {"smoothed": round(sw.lag.lag * 1000, 1),
                            "median_2s": round(sw.lag.sustained * 1000, 1)},
        })  # fmt: skip

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
        body = await self._body(request)
        if not isinstance(body, dict):
            raise DeployError('the body is {"source": "git", "url": URL, "commit": COMMIT}')
        if body.get("source", "git") != "git":
            raise DeployError(f"unknown source {body.get('source')!r}: only \"git\" is supported")
        url, commit = body.get("url"), body.get("commit")
        if not isinstance(url, str) or not isinstance(commit, str) or not url or not commit:
            raise DeployError('the body needs "url" and "commit" (strings)')
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
        rules = body.get("routes") if isinstance(body, dict) else body
        if not isinstance(rules, list):
            raise DeployError('the body is {"routes": [{"match": PATTERN, "app": NAME}, ...]}')
        return web.json_response({"routes": await self._store().set_routes(rules)})

    async def add_route(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if not isinstance(body, dict):
            raise DeployError('the body is {"match": PATTERN, "app": NAME} (and "index": N to insert)')
        index = body.pop("index", None)
        if index is not None and (not isinstance(index, int) or isinstance(index, bool)):
            raise DeployError("index must be an integer")
        return web.json_response({"routes": await self._store().add_route(body, index)})

    async def remove_route(self, request: web.Request) -> web.Response:
        text = request.match_info["index"]
        if not text.isdigit():
            raise DeployError(f"route index must be a number, not {text!r}", 404)
        return web.json_response({"routes": await self._store().remove_route(int(text))})
