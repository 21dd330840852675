"""The Prometheus metrics (switch/metrics.py) over the real call engine, transaction layer,
media clock, worker pool and security log (the engine rig of test_calls_engine.py, on a
virtual clock), read back through prometheus_client's own parser as a scraper would."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from media.clock import MediaClock
from media.ports import RtpPortPool
from switch.calls.call import AppInfo, Call, TaskSink
from switch.apps.store import AppStore, DeployError
from switch.metrics import NO_APP, Buckets, SendLateness, SwitchMetrics
from switch.sip.counts import SipCounts
from switch.sip.message import SipResponse
from switch.tasks.app import JsApp
from switch.tasks.pool import WorkerPool, task_outcome

from test_apps_store import FakeFetch, reject
from test_control_api import serve_api
from test_calls_engine import PHONE, FakeMedia, Rig, answered_call, bridge, callee_reply, from_caller, invite

DOCS = Path(__file__).resolve().parents[2] / "docs" / "control-api.md"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


class CountingMedia(FakeMedia):
    """A leg's media whose packet counters the test sets; ``stats()`` reports them, as
    MediaSession's does at the leg's end."""

    packets_sent = 0
    packets_received = 0

    def stats(self) -> dict[str, Any]:
        return {"packets_sent": self.packets_sent, "bytes_sent": 160 * self.packets_sent,
                "packets_received": self.packets_received, "bytes_received": 160 * self.packets_received,
                "lost": 3, "peer_cumulative_lost": None, "srtp_dropped": 2}


class Clock:
    """The loop's time, moved by the test (nothing here waits on a timer)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class MetricsRig(Rig):
    """The engine rig, with counting media, calls served by app "sales", a virtual clock,
    and a switch around it for the metrics to read."""

    def __init__(self, loop: asyncio.AbstractEventLoop, launch_error: str | None = None,
                 apps: AppStore | None = None) -> None:
        self.clock = Clock()
        loop.time = self.clock  # type: ignore[method-assign]
        super().__init__(loop, launch_error=launch_error)
        self.pool = WorkerPool(loop, 2)
        self.switch = SimpleNamespace(
            loop=loop, engine=self.engine, tasks=self.pool, apps=apps, app=None,
            sip=SimpleNamespace(layer=self.sip.layer, bad_datagrams=2, flood_dropped=5, streams={}, tls_failures=1),
            clock=MediaClock(loop), ports=RtpPortPool(20000, 20099), lag=SimpleNamespace(lag=0.004, sustained=0.001),
            access=self.engine.access,
        )
        self.metrics = SwitchMetrics(self.switch)  # type: ignore[arg-type]
        self.metrics.start()

    async def _open_media(self, call_id: str, family: int = 0) -> CountingMedia:
        await asyncio.sleep(0)
        return CountingMedia(30000 + 2 * len(self.media), self.media)  # type: ignore[arg-type]

    def _launch(self, call: Call) -> TaskSink:
        sink = super()._launch(call)  # (raises CallError with launch_error: no app chosen)
        call.app = AppInfo("sales", "c0ffee", None)
        return sink

    def real_time(self) -> None:
        """Back to the loop's own clock, for code that waits on timers (aiohttp)."""
        del self.loop.time

    def scrape(self) -> Samples:
        body, content_type = self.run(self.metrics.exposition())
        assert content_type.startswith("text/plain")
        return parse(body.decode())


@pytest.fixture
def rig(loop: asyncio.AbstractEventLoop) -> Any:
    rig = MetricsRig(loop)
    yield rig
    rig.metrics.stop()


# ---------------------------------------------------------------------- pieces


def test_buckets_are_cumulative_and_a_bound_holds_values_equal_to_it() -> None:
    buckets = Buckets((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 7.0):
        buckets.observe(v)
    family = buckets.family("x_seconds", "x")
    got = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert got == {("x_seconds_bucket", "0.1"): 2, ("x_seconds_bucket", "1.0"): 3, ("x_seconds_bucket", "+Inf"): 4,
                   ("x_seconds_count", None): 4, ("x_seconds_sum", None): pytest.approx(7.65)}


def test_send_lateness_takes_each_sample_of_the_clock_once(loop: asyncio.AbstractEventLoop) -> None:
    clock = MediaClock(loop, slots=1)  # keeps the last 3000 samples
    feed = SendLateness(clock.lateness)
    # Computed, so each sample is a float object of its own, as the clock's are.
    clock.lateness.extend(i / 10000 for i in range(1, 11))  # 0.1 .. 1 ms
    feed.drain()
    feed.drain()  # nothing new
    assert feed.histogram.counts[:2] == [5, 5] and sum(feed.histogram.counts) == 10
    clock.lateness.append(0.25)  # 250 ms: past every bound
    feed.drain()
    assert feed.histogram.counts[-1] == 1 and sum(feed.histogram.counts) == 11
    assert feed.histogram.sum == pytest.approx(0.0055 + 0.25)
    # More than the deque holds since the last drain: every sample in it is new.
    clock.lateness.extend(0.002 + i * 1e-9 for i in range(3500))
    feed.drain()
    assert sum(feed.histogram.counts) == 11 + 3000


@pytest.mark.parametrize(("error", "outcome"), [
    (None, "ok"),
    ("main.js:4: TypeError: x is not a function", "error"),
    ("main.js:9: task exceeded its CPU budget (5 s of JS without calling a verb, --task-cpu-seconds) in app "
     "sales@c0ffee: interrupted", "cpu_budget"),
    ("main.js: out of memory (uncaught null; the JS heap limit is 32 MiB)", "memory_limit"),
    ("lib/a.js:2: InternalError: out of memory", "memory_limit"),
    ("JS worker died", "worker_died"),
])
def test_task_outcomes(error: str | None, outcome: str) -> None:
    assert task_outcome(error) == outcome


# ---------------------------------------------------------------------- calls


def test_an_answered_call_live_then_counted_with_its_duration_and_rtp(rig: MetricsRig) -> None:
    ok = answered_call(rig)
    media = rig.media[0]
    media.packets_sent, media.packets_received = 250, 240  # type: ignore[attr-defined]
    live = rig.scrape()
    assert value(live, "softswitch_calls_active", app="sales") == 1
    assert value(live, "softswitch_calls_active", app="default") == 0  # shown at 0: "idle", not "no data"
    assert value(live, "softswitch_legs_active", app="sales") == 1
    assert value(live, "softswitch_calls_started_total") == 1
    assert value(live, "softswitch_rtp_packets_total", direction="sent") == 250  # counted while the call is up
    assert value(live, "softswitch_rtp_packets_total", direction="received") == 240
    assert value(live, "softswitch_call_duration_seconds_count") == 0
    rig.clock.now += 42.0
    media.packets_sent += 10  # type: ignore[attr-defined]
    rig.sip.deliver(from_caller("BYE", ok, 2), PHONE)
    rig.assert_nothing_left()
    done = rig.scrape()
    assert value(done, "softswitch_calls_active", app="sales") == 0
    assert value(done, "softswitch_legs_active", app="sales") == 0
    assert value(done, "softswitch_calls_total", app="sales", status="200") == 1
    assert value(done, "softswitch_rtp_packets_total", direction="sent") == 260  # no dip when the call ends
    assert value(done, "softswitch_rtp_packets_lost_total", direction="received") == 3
    assert value(done, "softswitch_rtp_packets_lost_total", direction="sent") == 0  # no RTCP report from the peer
    assert value(live, "softswitch_srtp_packets_dropped_total") == 0
    assert value(done, "softswitch_srtp_packets_dropped_total") == 2
    assert value(done, "softswitch_call_duration_seconds_count") == 1
    assert value(done, "softswitch_call_duration_seconds_sum") == pytest.approx(42.0)
    assert value(done, "softswitch_call_duration_seconds_bucket", le="30.0") == 0
    assert value(done, "softswitch_call_duration_seconds_bucket", le="60.0") == 1
    # SIP, first copies: the INVITE, its ACK and the BYE in; 100, 200 and the BYE's 200 out.
    assert {k: v for k, v in done.items() if k[0] == "softswitch_sip_requests_total"} == {
        ("softswitch_sip_requests_total", frozenset({("direction", "received"), ("method", m)})): 1.0
        for m in ("INVITE", "ACK", "BYE")}
    assert value(done, "softswitch_sip_responses_total", direction="sent", method="INVITE", code="100") == 1
    assert value(done, "softswitch_sip_responses_total", direction="sent", method="INVITE", code="200") == 1
    assert value(done, "softswitch_sip_responses_total", direction="sent", method="BYE", code="200") == 1
    assert value(done, "softswitch_sip_parse_errors_total") == 2
    assert value(done, "softswitch_sip_flood_dropped_total") == 5


def test_a_callee_busy_call_counts_486_and_the_post_dial_delay(rig: MetricsRig) -> None:
    egress, offer = bridge(rig)
    rig.run(rig.board.start_bridged_call(egress, "1000", offer))
    (out_invite,) = rig.sip.take()
    rig.clock.now += 1.5
    callee_reply(rig, 180, out_invite)  # type: ignore[arg-type]
    rig.clock.now += 3.0
    callee_reply(rig, 486, out_invite)  # type: ignore[arg-type]
    rig.controls[1].disconnect()  # the caller's task passes the 486 on
    assert [m.status for m in rig.sip.take() if isinstance(m, SipResponse)] == [180, 486]
    rig.assert_nothing_left()
    got = rig.scrape()
    assert value(got, "softswitch_calls_total", app="sales", status="486") == 1
    assert value(got, "softswitch_post_dial_delay_seconds_count") == 1  # INVITE -> 180, not -> 486
    assert value(got, "softswitch_post_dial_delay_seconds_sum") == pytest.approx(1.5)
    assert value(got, "softswitch_post_dial_delay_seconds_bucket", le="1.0") == 0
    assert value(got, "softswitch_post_dial_delay_seconds_bucket", le="2.0") == 1
    assert value(got, "softswitch_call_duration_seconds_count") == 0  # never answered
    assert value(got, "softswitch_sip_requests_total", direction="sent", method="INVITE") == 1
    assert value(got, "softswitch_sip_requests_total", direction="sent", method="ACK") == 1  # for the 486
    assert value(got, "softswitch_sip_responses_total", direction="received", method="INVITE", code="486") == 1


def test_refusals_by_reason_and_retransmissions(rig: MetricsRig) -> None:
    rig.sip.deliver(invite("s1"), ("192.0.2.9", 5060))  # a stranger: 403
    rig.sip.deliver(invite("s1"), ("192.0.2.9", 5060))  # ... who sends it again
    rig.engine.admission.draining = True
    rig.sip.deliver(invite("d1"), PHONE)  # 503 while draining
    assert [m.status for m in rig.sip.take()] == [100, 403, 403, 100, 503]
    got = rig.scrape()
    assert value(got, "softswitch_calls_refused_total", reason="not-a-trunk-or-user") == 1
    assert value(got, "softswitch_calls_refused_total", reason="draining") == 1
    assert value(got, "softswitch_security_events_total", event="refused", reason="not-a-trunk-or-user") == 1
    assert value(got, "softswitch_calls_started_total") == 0
    assert value(got, "softswitch_sip_requests_total", direction="received", method="INVITE") == 3
    assert value(got, "softswitch_sip_retransmissions_total", direction="received") == 1
    assert value(got, "softswitch_sip_retransmissions_total", direction="sent") == 1  # the 403 replayed
    assert value(got, "softswitch_sip_responses_total", direction="sent", method="INVITE", code="403") == 1


def test_unknown_methods_are_one_label() -> None:
    counts = SipCounts()
    for method in ("INVITE", "FOO", "BAR", "INVITE"):
        counts.request(False, method)
    counts.response(True, "X" * 100, 404)
    assert counts.requests_received == {"INVITE": 2, "other": 2}
    assert counts.responses_sent == {("other", 404): 1}


# ---------------------------------------------------------------------- tasks, media, the rest


def test_tasks_by_app_and_outcome_workers_and_lateness(rig: MetricsRig) -> None:
    pool = rig.pool
    worker = pool.workers[0]
    worker.alive = True  # (no process: sends go nowhere)
    worker.root_tids = iter(range(1, 100))
    app = JsApp.from_sources("sales", {"main.js": "function Main() {}"}, "c0ffee")
    first, second = pool.start_task(app, "Main"), pool.start_task(app, "Main")
    pool.on_spawned(worker, 5000, first.tid, "Egress")
    got = rig.scrape()
    assert value(got, "softswitch_tasks_active", app="sales") == 3
    assert value(got, "softswitch_tasks_started_total", app="sales") == 3
    assert value(got, "softswitch_js_workers") == 2 and value(got, "softswitch_js_workers_up") == 1
    pool.on_task_ended(worker, first.tid, None)
    pool.on_task_ended(worker, second.tid, "main.js:1: task exceeded its CPU budget (5 s ...): interrupted")
    pool.on_task_ended(worker, 5000, "egress.js:3: Error: boom")
    got = rig.scrape()
    assert value(got, "softswitch_tasks_active", app="sales") == 0
    ended = {dict(labels)["outcome"]: v for (name, labels), v in got.items() if name == "softswitch_tasks_ended_total"}
    assert ended == {"ok": 1, "cpu_budget": 1, "error": 1}

    rig.switch.clock.lateness.extend(n / 1000 for n in (1, 2, 30))  # type: ignore[attr-defined]
    got = rig.scrape()
    assert value(got, "softswitch_rtp_send_lateness_seconds_count") == 3
    assert value(got, "softswitch_rtp_send_lateness_seconds_bucket", le="0.002") == 2
    assert value(got, "softswitch_loop_lag_seconds") == pytest.approx(0.004)
    assert value(got, "softswitch_rtp_ports") == 50 and value(got, "softswitch_rtp_ports_in_use") == 0
    assert any(name == "process_cpu_seconds_total" for name, _ in got)


def test_a_call_no_app_served_is_counted_under_the_no_app_label(loop: asyncio.AbstractEventLoop) -> None:
    rig = MetricsRig(loop, launch_error="app 'default': no main.js")
    rig.sip.deliver(invite(), PHONE)
    rig.assert_nothing_left()
    assert value(rig.scrape(), "softswitch_calls_total", app=NO_APP, status="500") == 1
    rig.metrics.stop()


def test_app_installs_and_the_live_versions(loop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    fetch = FakeFetch(tmp_path)
    fallback = JsApp.from_sources("default", {"main.js": "function Main() {}"}, "bundled")
    store = AppStore(tmp_path, fallback=fallback, fetch=fetch)
    rig = MetricsRig(loop, apps=store)
    rig.real_time()
    sha = fetch.add("a1b2c3", reject(486)).ljust(40, "0")
    fetch.add("badbad", {"main.js": "function Main() {"})
    rig.run(store.install("sales", "repo", "a1b2c3"))
    for commit, url in (("badbad", "repo"), ("a1b2c3", "bad")):
        with pytest.raises(DeployError):
            rig.run(store.install("sales", url, commit))
    got = rig.scrape()
    installs = {dict(labels)["result"]: v for (name, labels), v in got.items()
                if name == "softswitch_app_installs_total"}
    assert installs == {"ok": 1, "check_failed": 1, "fetch_failed": 1}
    assert value(got, "softswitch_app_info", app="sales", version=sha) == 1
    assert value(got, "softswitch_app_info", app="default", version="bundled") == 1
    assert value(got, "softswitch_calls_active", app="sales") == 0  # an installed app: shown idle
    rig.metrics.stop()


# ---------------------------------------------------------------------- the endpoint, the docs


def test_the_endpoint_serves_both_formats_behind_the_token(rig: MetricsRig) -> None:
    async def check(http: aiohttp.ClientSession) -> None:
        r = await http.get("/metrics")
        assert r.status == 401
        auth = {"Authorization": "Bearer s3cret"}
        r = await http.get("/metrics", headers=auth)
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
        assert value(parse(await r.text()), "softswitch_calls_started_total") == 0
        r = await http.get("/metrics", headers={**auth, "Accept": "application/openmetrics-text"})
        assert r.headers["Content-Type"].startswith("application/openmetrics-text")
        assert (await r.text()).endswith("# EOF\n")

    rig.switch.metrics = rig.metrics  # type: ignore[attr-defined]
    rig.real_time()
    rig.run(serve_api(rig.switch, check, token="s3cret"))


def test_every_metric_is_documented(rig: MetricsRig) -> None:
    documented = set(re.findall(r"^\| `(softswitch_\w+)`", DOCS.read_text(), re.M))
    # A family is named without the suffix its samples carry (_total, _info).
    emitted = {family.name + {"counter": "_total", "info": "_info"}.get(family.type, "")
               for family in rig.metrics.registry.collect() if family.name.startswith("softswitch_")}
    assert emitted == documented, f"undocumented: {emitted - documented}; gone: {documented - emitted}"
