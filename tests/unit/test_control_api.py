"""The control API's HTTP surface (switch/control/api.py) against a fake switch: JSON errors,
the token, the single-app (--app) mode, and the call list read from legs and tasks."""

from __future__ import annotations

import asyncio
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
        sip=SimpleNamespace(bad_datagrams=0, streams={}),
        tasks=_Tasks(lambda tid: task if tid == 7 else None),
        clock=MediaClock(loop), ports=RtpPortPool(20000, 20099), admission=SimpleNamespace(refused=0),
        lag=SimpleNamespace(lag=0.0, sustained=0.0),
    )


async def with_api(tmp_path: Path, fn: Any, *, token: str = "", single_app: bool = False) -> None:
    sw = fake_switch(tmp_path, single_app=single_app)
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
                                    "codec": None, "rtp": None}]}]
        s = await (await http.get("/status")).json()
        assert s["live_calls"] == 1 and s["live_legs"] == 1 and s["live_tasks"] == 1 and s["mode"] == "installed"
        assert s["js_workers"] == [{"index": 0, "pid": 4711, "alive": True, "tasks": 1, "restarts": 0}]
        assert s["media"]["streams"] == 0 and s["media"]["send_lateness_ms"]["ticks"] == 0
        r = await http.put("/apps/x", data=b"not json")
        assert r.status == 400 and "JSON" in (await r.json())["error"]
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
        assert r.status == 400 and "application/json" in (await r.json())["error"]
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


def test_malformed_bodies_get_4xx_never_500(tmp_path: Path) -> None:
    deep = b"[" * 100000 + b"]" * 100000  # past json's recursion limit, within no size limit
    bodies: list[tuple[str, str, bytes]] = [
        ("PUT", "/apps/x", b"[" * 20000 + b"]" * 20000),
        ("POST", "/routes", b'{"match": ' + b"[" * 20000 + b"]" * 20000 + b', "app": "sales"}'),
        ("PUT", "/routes", b'{"routes": 5}'),
        ("POST", "/routes", b'{"match": "1*", "app": "sales", "index": true}'),
        ("POST", "/routes", b'{"match": 7, "app": ["sales"]}'),
        ("PUT", "/apps/x", b'{"url": 1, "commit": null}'),
        ("PUT", "/apps/x", deep),
    ]

    async def check(http: aiohttp.ClientSession) -> None:
        for method, path, data in bodies:
            r = await http.request(method, path, data=data, headers={"Content-Type": "application/json"})
            answer = await r.json()
            assert 400 <= r.status < 500 and "error" in answer, (method, path, data[:40], r.status, answer)

    asyncio.run(with_api(tmp_path, check))
