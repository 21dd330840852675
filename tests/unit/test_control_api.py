"""The control API's HTTP surface (switch/control/api.py) against a fake switch: JSON errors,
the token, the single-app (--app) mode, and the call list read from legs and tasks."""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from media.clock import MediaClock
from media.ports import RtpPortPool

from switch.apps.store import AppStore
from switch.calls.call import AppInfo, Call, TaskSink
from switch.calls.inbound import InboundLeg
from switch.calls.leg import Local
from switch.control.api import ControlApi
from switch.security.access import Caller, CallerKind
from switch.sip.message import parse_message
from switch.tasks.app import JsApp

INVITE = (
    b"INVITE sip:2000@pbx.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1\r\n"
    b"From: <sip:alice@example.com>;tag=1\r\nTo: <sip:2000@pbx.example.com>\r\n"
    b"Call-ID: call-1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
)


def fake_switch(tmp_path: Path, *, single_app: bool = False) -> Any:
    loop = asyncio.get_running_loop()
    app = JsApp.from_sources("sales", {"main.js": "function Main() {}"}, "c0ffee" * 6 + "abcd")
    task = SimpleNamespace(app=app)
    invite = parse_message(INVITE)
    engine = SimpleNamespace(loop=loop, live_calls=lambda: 1, calls_started=1, legs={})
    leg = InboundLeg(SimpleNamespace(reliable=False), invite, None, Local("127.0.0.1", 5060), loop.time() - 3)  # type: ignore[arg-type]
    call = Call(engine, leg, Caller(CallerKind.USER, "alice", False, "192.0.2.5"))  # type: ignore[arg-type]
    call.app = AppInfo(app.name, app.version, app.root)
    call.sinks[leg] = TaskSink(7, lambda event: True)
    engine.calls = {leg.key: call}
    engine.legs = {leg: call}
    store = None if single_app else AppStore(tmp_path, fetch=None)
    return SimpleNamespace(
        loop=loop, apps=store, app=app if single_app else None,
        config=SimpleNamespace(app="/srv/app" if single_app else "", data_path=tmp_path),
        engine=engine,
        sip=SimpleNamespace(bad_datagrams=0, streams={}, layer=[]),
        tasks=_Tasks(lambda tid: task if tid == 7 else None),
        clock=MediaClock(loop), ports=RtpPortPool(20000, 20099), admission=SimpleNamespace(refused=0),
        lag=SimpleNamespace(lag=0.0, sustained=0.0),
    )


async def with_api(tmp_path: Path, fn: Any, *, token: str = "", single_app: bool = False) -> None:
    await serve_api(fake_switch(tmp_path, single_app=single_app), fn, token=token)


async def serve_api(sw: Any, fn: Any, *, token: str = "") -> None:
    """The control API of ``sw`` on a free loopback port while ``await fn(http)`` runs
    (``http``: an aiohttp session for that port)."""
    api = ControlApi(sw, "127.0.0.1", 0, token=token)
    await api._runner.setup()
    site = aiohttp.web.TCPSite(api._runner, "127.0.0.1", 0)
    await site.start()
    port = api._runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            await fn(http)
    finally:
        await api.stop()


class _Tasks:
    deaths = 0

    def __init__(self, get: Any) -> None:
        self.get = get

    def __len__(self) -> int:
        return 1

    def info(self) -> list[dict[str, Any]]:
        return [{"index": 0, "pid": 4711, "alive": True, "tasks": 1, "restarts": 0}]


def test_calls_status_and_json_errors(tmp_path: Path) -> None:
    async def check(http: aiohttp.ClientSession) -> None:
        r = await http.get("/calls")
        calls = (await r.json())["calls"]
        assert calls == [{"id": "call-1", "app": "sales", "commit": "c0ffee" * 6 + "abcd",
                          "from": "sip:alice@example.com", "to": "sip:2000@pbx.example.com",
                          "request_uri": "sip:2000@pbx.example.com", "state": "incoming", "age_s": 3.0, "task": 7,
                          "caller": "user:alice", "legs": [{"kind": "call", "sip_call_id": "call-1", "state": "incoming", "task": 7,
                                    "codec": None, "srtp": None, "rtp": None}]}]
        s = await (await http.get("/status")).json()
        assert s["live_calls"] == 1 and s["live_legs"] == 1 and s["live_tasks"] == 1 and s["mode"] == "installed"
        assert s["sip_transactions"] == 0 and s["bad_sip_messages"] == 0
        assert s["js_workers"] == [{"index": 0, "pid": 4711, "alive": True, "tasks": 1, "restarts": 0}]
        assert s["media"]["streams"] == 0 and s["media"]["send_lateness_ms"]["ticks"] == 0
        r = await http.put("/apps/x", data=b"not json")  # sent as application/octet-stream
        assert r.status == 415 and "JSON" in (await r.json())["error"]
        r = await http.put("/apps/x", json={"source": "svn", "url": "u", "commit": "c"})
        assert r.status == 400 and "svn" in (await r.json())["error"]
        r = await http.put("/apps/..", json={"url": "u", "commit": "c"})
        assert r.status in (400, 404)
        r = await http.get("/nope")
        assert r.status == 404 and "error" in await r.json()
        r = await http.delete("/routes/3")
        assert r.status == 404 and "no route 3" in (await r.json())["error"]
        r = await http.post("/routes", data=b'{"match": "9*", "app": "sales"}',
                            headers={"Content-Type": "text/plain"})  # what a cross-site form can send
        assert r.status == 415 and "application/json" in (await r.json())["error"]
        r = await http.post("/routes", json={"match": "2*", "app": "sales"})
        assert (await r.json())["routes"][0]["app"] == "sales"

    asyncio.run(with_api(tmp_path, check))


def test_the_token_is_required_when_configured(tmp_path: Path) -> None:
    async def check(http: aiohttp.ClientSession) -> None:
        r = await http.get("/apps")
        assert r.status == 401 and "token" in (await r.json())["error"]
        r = await http.get("/apps", headers={"Authorization": "Bearer wrong"})
        assert r.status == 401
        r = await http.get("/apps", headers={"Authorization": "Bearer s3cret"})
        assert r.status == 200

    asyncio.run(with_api(tmp_path, check, token="s3cret"))


def test_single_app_mode_refuses_installs(tmp_path: Path) -> None:
    async def check(http: aiohttp.ClientSession) -> None:
        r = await http.put("/apps/default", json={"url": "u", "commit": "c"})
        assert r.status == 409 and "--app" in (await r.json())["error"]
        apps = (await (await http.get("/apps")).json())["apps"]
        assert apps[0]["source"] == "dir" and apps[0]["live_calls"] == 1

    asyncio.run(with_api(tmp_path, check, single_app=True))


def test_non_loopback_control_needs_a_token() -> None:
    from switch.config import ConfigError, load

    with pytest.raises(ConfigError, match="control_token"):
        load(None, {"control": "0.0.0.0:5080"})
    assert load(None, {"control": "off"}).control_addr is None
    assert load(None, {}).control_addr == ("127.0.0.1", 5080)


# ---------------------------------------------------------------------- malformed requests
# Issue 10 item 5: every malformed body or path parameter gets a 4xx whose message names
# the problem, never a 500 (nor the 502 of a fetch). Each case runs against a fresh API.

JSON = {"Content-Type": "application/json"}
APP = {"source": "git", "url": "/nonexistent/repo", "commit": "abc123"}  # valid: fails at the fetch
ROUTE = {"match": "9*", "app": "sales"}
# endpoint -> a valid body, and its members by path with the JSON type each must have
ENDPOINTS: dict[tuple[str, str], tuple[Any, dict[tuple[str | int, ...], type]]] = {
    ("PUT", "/apps/x"): (APP, {("source",): str, ("url",): str, ("commit",): str}),
    ("POST", "/routes"): ({**ROUTE, "index": 0}, {("match",): str, ("app",): str, ("index",): int}),
    ("PUT", "/routes"): ({"routes": [ROUTE]}, {("routes",): list, ("routes", 0, "match"): str,
                                                ("routes", 0, "app"): str}),
}
OPTIONAL = {("source",), ("index",)}
MUST_BE = {str: "a string", int: "an integer", list: "an array"}
WRONG: dict[type, list[tuple[object, str]]] = {  # a value of another type, and its JSON name in the message
    str: [(7, "a number"), (1.5, "a number"), (True, "a boolean"), (None, "null"), ([], "an array"),
          (["x"], "an array"), ({}, "an object"), ({"a": "b"}, "an object")],
    int: [("1", "a string"), (1.5, "a number"), (True, "a boolean"), (False, "a boolean"), (None, "null"),
          ([0], "an array"), ({}, "an object")],
    list: [("9*", "a string"), (0, "a number"), (None, "null"), ({"match": "9*"}, "an object")],
}


def replaced(body: Any, path: tuple[str | int, ...], value: object = ..., *, drop: bool = False) -> Any:
    """A deep copy of ``body`` with the member at ``path`` set to ``value`` (or removed)."""
    out = json.loads(json.dumps(body))
    parent = out
    for key in path[:-1]:
        parent = parent[key]
    if drop:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return out


def name_of(path: tuple[str | int, ...]) -> str:
    return f'"{path[-1]}"'


def body_cases() -> list[Any]:
    cases: list[Any] = []

    def add(id_: str, method: str, path: str, data: bytes, status: int, needle: str,
            headers: dict[str, str] | None = None) -> None:
        cases.append(pytest.param(method, path, data, JSON if headers is None else headers, status, needle, id=id_))

    for (method, path), (valid, members) in ENDPOINTS.items():
        at = f"{method} {path}"
        for member, kind in members.items():
            dotted = ".".join(map(str, member))
            for value, json_name in WRONG[kind]:
                add(f"{at} {dotted}={json.dumps(value)}", method, path, json.dumps(replaced(valid, member, value)).encode(),
                    400, f"{name_of(member)} must be {MUST_BE[kind]}, not {json_name}")
            if member not in OPTIONAL:
                add(f"{at} {dotted} missing", method, path, json.dumps(replaced(valid, member, drop=True)).encode(),
                    400, f"{name_of(member)} is missing")
            if kind is str:
                add(f"{at} {dotted} empty", method, path, json.dumps(replaced(valid, member, " ")).encode(),
                    400, f"{name_of(member)} must not be empty")
                add(f"{at} {dotted} too long", method, path, json.dumps(replaced(valid, member, "a" * 5000)).encode(),
                    400, f"{name_of(member)} is longer than")
        add(f"{at} unknown member", method, path, json.dumps({**valid, "comit": "abc"}).encode(), 400,
            'unknown member(s) "comit"')
        for top, json_name in [([valid], "an array"), ("x", "a string"), (7, "a number"), (None, "null")]:
            if method == "PUT" and path == "/routes" and isinstance(top, list):
                continue  # a bare array of rules is the other accepted form
            add(f"{at} body {json_name}", method, path, json.dumps(top).encode(), 400, f"not {json_name}")
        add(f"{at} not JSON", method, path, b"not json", 400, "not JSON")
        add(f"{at} empty", method, path, b"", 400, "not JSON")
        add(f"{at} NaN", method, path, b'{"index": NaN}', 400, "NaN is not a JSON value")
        add(f"{at} 5000-digit integer", method, path, b'{"index": ' + b"9" * 5000 + b"}", 400, "not JSON")
        add(f"{at} not UTF-8", method, path, b'{"match": "\xff"}', 400, "not UTF-8")
        for ctype in ["text/plain", "application/x-www-form-urlencoded", "application/octet-stream"]:
            add(f"{at} {ctype}", method, path, json.dumps(valid).encode(), 415, f"application/json, not {ctype}",
                {"Content-Type": ctype})
        for charset in ["latin-1", "no-such-codec"]:
            add(f"{at} charset={charset}", method, path, json.dumps(valid).encode(), 415, f"not charset {charset}",
                {"Content-Type": f"application/json; charset={charset}"})
        add(f"{at} 9 levels", method, path, b'{"match": ' + b"[" * 8 + b"]" * 8 + b"}", 400,
            "nested deeper than 8 levels")
        add(f"{at} 100000 levels", method, path, b"[" * 100000 + b"]" * 100000, 400, "nested deeper than 8 levels")
        add(f"{at} over 1 MiB", method, path, b'{"url": "' + b"a" * (1 << 20) + b'"}', 413,
            "larger than 1048576 bytes")
    return cases


@pytest.mark.parametrize("method, path, data, headers, status, needle", body_cases())
def test_malformed_bodies_get_4xx_naming_the_problem(tmp_path: Path, method: str, path: str, data: bytes,
                                                     headers: dict[str, str], status: int, needle: str) -> None:
    async def check(http: aiohttp.ClientSession) -> None:
        r = await http.request(method, path, data=data, headers=headers)
        answer = await r.json()
        assert (r.status, needle in answer.get("error", "")) == (status, True), answer

    asyncio.run(with_api(tmp_path, check))


@pytest.mark.parametrize("method, path, body, status, needle", [
    pytest.param("PUT", "/apps/x", APP, 502, "cannot fetch", id="PUT /apps/x"),  # past every check, to git
    pytest.param("POST", "/routes", {**ROUTE, "index": 0}, 200, '"app": "sales"', id="POST /routes"),
    pytest.param("PUT", "/routes", {"routes": [ROUTE]}, 200, '"app": "sales"', id="PUT /routes"),
    pytest.param("PUT", "/routes", [ROUTE], 200, '"app": "sales"', id="PUT /routes bare array"),
])
def test_the_valid_bodies_behind_those_cases_pass(tmp_path: Path, method: str, path: str, body: Any,
                                                  status: int, needle: str) -> None:
    # Each malformed case above is this body with one thing wrong: the checks refuse that
    # thing, not the body.
    async def check(http: aiohttp.ClientSession) -> None:
        r = await http.request(method, path, data=json.dumps(body).encode(),
                               headers={"Content-Type": "application/json; charset=utf-8"})
        assert (r.status, needle in json.dumps(await r.json())) == (status, True), await r.text()

    asyncio.run(with_api(tmp_path, check))


@pytest.mark.parametrize("method, path, body, status, needle", [
    pytest.param("PUT", "/apps/bad%20name", APP, 400, "bad app name 'bad name'", id="PUT bad app name"),
    pytest.param("PUT", "/apps/" + "a" * 65, APP, 400, "bad app name", id="PUT app name too long"),
    pytest.param("PUT", "/apps/%00", APP, 400, "bad app name", id="PUT NUL app name"),
    pytest.param("DELETE", "/apps/-x", None, 400, "bad app name", id="DELETE bad app name"),
    pytest.param("DELETE", "/apps/nosuch", None, 404, "no app named 'nosuch'", id="DELETE unknown app"),
    pytest.param("DELETE", "/routes/abc", None, 404, 'no route "abc"', id="DELETE route abc"),
    pytest.param("DELETE", "/routes/-1", None, 404, 'no route "-1"', id="DELETE route -1"),
    pytest.param("DELETE", "/routes/%C2%B2", None, 404, "no route", id="DELETE route superscript two"),
    pytest.param("DELETE", "/routes/" + "9" * 5000, None, 404, "no route", id="DELETE route 5000 digits"),
    pytest.param("DELETE", "/routes/3", None, 404, "no route 3 (there are 0)", id="DELETE route 3 of 0"),
    pytest.param("POST", "/routes", {**ROUTE, "index": -1}, 400, '"index" must be 0 or more', id="negative index"),
    pytest.param("POST", "/routes", {"match": "@", "app": "sales"}, 400, "match must be", id="match @"),
    pytest.param("POST", "/routes", {"match": "9*", "app": "no/slash"}, 400, "bad app name", id="route app name"),
    pytest.param("PUT", "/apps/x", {**APP, "source": "svn"}, 400, 'unknown source "svn"', id="source svn"),
    pytest.param("PUT", "/apps/x", {**APP, "commit": "--upload-pack=x"}, 400, "bad commit", id="option commit"),
    pytest.param("PUT", "/apps/x", {**APP, "url": "-oProxyCommand=x"}, 400, "bad repository URL", id="option url"),
    pytest.param("PUT", "/apps/x", {**APP, "url": "a\nb"}, 400, "bad repository URL", id="newline url"),
    pytest.param("PUT", "/routes", {"routes": [ROUTE, 7]}, 400, "routes[1] must be", id="route not an object"),
    pytest.param("PUT", "/routes", {"routes": [{**ROUTE, "origin": "api"}]}, 400,
                 'routes[0]: unknown member(s) "origin"', id="route with origin"),
])
def test_bad_values_and_path_parameters_get_4xx(tmp_path: Path, method: str, path: str, body: Any,
                                                 status: int, needle: str) -> None:
    async def check(http: aiohttp.ClientSession) -> None:
        data = None if body is None else json.dumps(body).encode()
        r = await http.request(method, path, data=data, headers=JSON)
        answer = await r.json()
        assert (r.status, needle in answer.get("error", "")) == (status, True), answer

    asyncio.run(with_api(tmp_path, check))


def test_bodies_too_large_when_chunked_or_compressed(tmp_path: Path) -> None:
    # No Content-Length to refuse early on: the cap holds on what aiohttp decoded.
    big = b'{"url": "' + b"a" * (2 << 20) + b'"}'

    async def chunks() -> Any:
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]

    async def check(http: aiohttp.ClientSession) -> None:
        r = await http.put("/apps/x", data=chunks(), headers=JSON)
        assert r.status == 413 and "larger than" in (await r.json())["error"]
        r = await http.put("/apps/x", data=gzip.compress(big), headers={**JSON, "Content-Encoding": "gzip"})
        assert r.status == 413 and "larger than" in (await r.json())["error"]

    asyncio.run(with_api(tmp_path, check))
