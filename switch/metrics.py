"""Prometheus metrics of the switch, served as ``GET /metrics`` on the control listener
(``switch/control/api.py``; docs/control-api.md "GET /metrics" lists every name).

The cost stays off the paths that run per packet and per SIP message. Almost everything is
read from live state when Prometheus scrapes: the call and task tables, the workers, the
media clock, the loop lag monitor, the registrar, and the plain counters the owners keep
anyway (``SipCounts`` in the transaction layer, refusals in the engine, task starts and ends
in the pool, security events in their log, installs in the app store). Two things happen
between scrapes:

* ``CallRecorder`` is one of the engine's observers (``CallEngine.observers``): once per
  finished call it counts the call by app and final status, and feeds the duration and
  post-dial delay histograms and the RTP totals;
* every ``DRAIN_INTERVAL`` the media clock's new send lateness samples go into their
  histogram (``SendLateness``).

Our own registry (not prometheus_client's global one): the metrics are the switch's, and
two switches in one process (the tests) must not share them. Histograms are ``Buckets``:
plain counts, ~0.13 µs an observation where prometheus_client's ``Histogram.observe``
takes ~0.9 µs (it locks), which matters for the ~200 lateness samples a second.

Measured (2-core dev box): the observer takes ~1.4 µs per call, the SIP counts ~1 µs per
call; a scrape with 1000 live calls holds the loop ~2.7 ms (median; the process figures
and the text are made in a thread, see ``exposition``).
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric

from .calls.call import Call
from .calls.outbound import OutboundLeg

if TYPE_CHECKING:
    from .server import Switch

NO_APP = "-"  # the app label of a call no app served (no app name starts with "-")
DRAIN_INTERVAL = 10.0  # s; the media clock keeps ~60 s of lateness samples

# Post-dial delay: a SIP callee rings within ~100 ms on a LAN, a PSTN gateway in 1-5 s,
# and ITU-T E.721's objective for international calls is under ~8 s.
PDD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0)
DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0)
# Send lateness: under 1 ms idle, p99 ~5 ms with 2000 streams; 20 ms is a whole frame late.
LATENESS_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.02, 0.05, 0.1)

Family = TypeVar("Family", CounterMetricFamily, GaugeMetricFamily)


class Buckets:
    """A histogram's counts, exported cumulatively (Prometheus' ``le``: at most the bound)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def family(self, name: str, doc: str) -> HistogramMetricFamily:
        cumulative = list(itertools.accumulate(self.counts))
        buckets = [(repr(bound), float(n)) for bound, n in zip(self.bounds, cumulative)]
        buckets.append(("+Inf", float(cumulative[-1])))
        return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=self.sum)


def final_status(call: Call) -> int:
    """The final status the caller got: 200 once its INVITE was answered (however the call
    ended later), else the status its leg was refused or ended with (486, 487 for a CANCEL,
    480...); 0 if none was recorded."""
    ingress = call.ingress
    if ingress.answered_at is not None:
        return 200
    return ingress.end_status or 0


def _app(call: Call) -> str:
    return call.app.name if call.app is not None else NO_APP


@dataclass(frozen=True, slots=True)
class Census:
    """What one pass over the live calls found (``SwitchCollector._census``)."""

    calls: dict[str, int]  # app -> live calls
    legs: dict[str, int]  # app -> their legs
    packets: dict[str, int]  # direction -> RTP packets so far


class CallRecorder:
    """What is counted once per finished call (the engine observer)."""

    def __init__(self) -> None:
        self.calls: dict[tuple[str, int], int] = {}  # (app, final status) -> calls
        self.duration = Buckets(DURATION_BUCKETS)
        self.post_dial_delay = Buckets(PDD_BUCKETS)
        # RTP of the legs of finished calls; live ones are added at scrape time.
        self.packets = {"received": 0, "sent": 0}
        self.lost = {"received": 0, "sent": 0}
        self.srtp_dropped = 0  # packets that failed SRTP/SRTCP authentication (media/session.py)

    def __call__(self, call: Call) -> None:
        key = (_app(call), final_status(call))
        self.calls[key] = self.calls.get(key, 0) + 1
        ingress = call.ingress
        if ingress.answered_at is not None and ingress.ended_at is not None:
            self.duration.observe(ingress.ended_at - ingress.answered_at)
        for leg in call.history:
            if isinstance(leg, OutboundLeg) and leg.invite_sent_at is not None and leg.first_response_at is not None:
                self.post_dial_delay.observe(leg.first_response_at - leg.invite_sent_at)
        for stats in call.rtp_stats.values():
            self.packets["received"] += stats["packets_received"]
            self.packets["sent"] += stats["packets_sent"]
            # RFC 3550 A.3 counts duplicates against losses, so a leg's figure can be < 0.
            self.lost["received"] += max(0, stats.get("lost") or 0)
            self.lost["sent"] += max(0, stats.get("peer_cumulative_lost") or 0)
            self.srtp_dropped += stats.get("srtp_dropped") or 0


class SendLateness:
    """The media clock's send lateness (``MediaClock.lateness``: a deque of the last ~60 s
    of samples, which /status summarises too) as a histogram, fed with the samples not seen
    before. A deque has no running index, so the newest sample taken is remembered by
    identity: every sample is a float object of its own (the clock computes each one), and
    the reference held here keeps its id from being reused. Were it gone (a minute without
    a drain), every sample in the deque is new."""

    def __init__(self, samples: deque[float]) -> None:
        self.samples = samples
        self.histogram = Buckets(LATENESS_BUCKETS)
        self._newest: float | None = None

    def drain(self) -> None:
        newest = self._newest
        fresh = list(itertools.takewhile(lambda sample: sample is not newest, reversed(self.samples)))
        for sample in fresh:
            self.histogram.observe(sample)
        if fresh:
            self._newest = fresh[0]


def _as_tuple(key: Any) -> tuple[Any, ...]:
    return key if isinstance(key, tuple) else (key,)


def _labelled(family: Family, values: Mapping[Any, float]) -> Family:
    """``family`` with one sample per entry of ``values`` (key: the label values)."""
    for key, value in sorted(values.items()):
        family.add_metric([str(k) for k in _as_tuple(key)], value)
    return family


def _counter(name: str, doc: str, labels: tuple[str, ...], values: Mapping[Any, float]) -> CounterMetricFamily:
    return _labelled(CounterMetricFamily(name, doc, labels=labels), values)


def _gauge(name: str, doc: str, labels: tuple[str, ...], values: Mapping[Any, float]) -> GaugeMetricFamily:
    return _labelled(GaugeMetricFamily(name, doc, labels=labels), values)


def _by_direction(received: Mapping[Any, int], sent: Mapping[Any, int]) -> dict[Any, int]:
    """Two tables into one keyed (direction, *key)."""
    out: dict[Any, int] = {}
    for direction, table in (("received", received), ("sent", sent)):
        for key, n in table.items():
            out[(direction, *_as_tuple(key))] = n
    return out


class SwitchCollector:
    """Reads the switch's live state at scrape time (a prometheus_client collector)."""

    def __init__(self, switch: Switch, calls: CallRecorder, lateness: SendLateness) -> None:
        self.switch = switch
        self.recorder = calls
        self.lateness = lateness
        try:
            self.version = metadata.version("softswitch")
        except metadata.PackageNotFoundError:
            self.version = "dev"

    def collect(self) -> Iterator[Metric]:
        apps = self._app_names()
        census = self._census(apps)
        yield from self._calls(census)
        yield from self._tasks(apps)
        yield from self._sip()
        yield from self._media(census)
        yield from self._operations()

    def _app_names(self) -> set[str]:
        """Apps whose gauges are shown even at 0: those that can serve calls ("default"
        always: installed, bundled or the --app DIR), and any that ever had a call or a
        task (a gauge that vanishes at 0 reads as "no data", not "idle")."""
        names = {"default", *self.switch.tasks.started, *(app for app, _status in self.recorder.calls)}
        if self.switch.apps is not None:
            names.update(self.switch.apps.apps)
        return names

    def _census(self, apps: set[str]) -> Census:
        """Live calls and legs by app, and the RTP packets so far (finished calls' and live
        legs'), in one pass over the live calls: the part of a scrape that grows with them
        (~2 µs a call). Nothing changes the tables meanwhile: a scrape runs on the loop
        without awaiting."""
        calls = dict.fromkeys(apps, 0)
        legs = dict(calls)
        received, sent = self.recorder.packets["received"], self.recorder.packets["sent"]
        for call in self.switch.engine.calls.values():
            app = call.app.name if call.app is not None else NO_APP
            calls[app] = calls.get(app, 0) + 1
            legs[app] = legs.get(app, 0) + len(call.legs)
            for media in call.media.values():
                received += media.packets_received
                sent += media.packets_sent
            for stats in call.rtp_stats.values():  # legs that ended before their call
                received += stats["packets_received"]
                sent += stats["packets_sent"]
        return Census(calls, legs, {"received": received, "sent": sent})

    def _calls(self, census: Census) -> Iterator[Metric]:
        engine = self.switch.engine
        calls, legs = census.calls, census.legs
        rec = self.recorder
        yield _gauge("softswitch_calls_active", "Live calls (one per inbound INVITE taken on, its bridged legs included)",
                     ("app",), calls)
        yield _gauge("softswitch_legs_active", "Live SIP dialogs of the live calls (a bridged call has two)",
                     ("app",), legs)
        yield CounterMetricFamily("softswitch_calls_started_total",
                                  "Inbound INVITEs taken on as calls (rate(): the setup rate)",
                                  value=engine.calls_started)
        yield _counter("softswitch_calls_total", "Finished calls by app and the final SIP status the caller got "
                       "(200: answered)", ("app", "status"), rec.calls)
        yield _counter("softswitch_calls_refused_total", "New INVITEs refused before a call existed, by reason",
                       ("reason",), engine.refusals)
        yield rec.duration.family("softswitch_call_duration_seconds",
                                  "Answered calls: from the answer to the end of the caller's leg")
        yield rec.post_dial_delay.family("softswitch_post_dial_delay_seconds",
                                         "Outbound legs: from our INVITE to the callee's first answer above 100")
        registrar = engine.registrar
        now = registrar.clock()
        yield GaugeMetricFamily("softswitch_registrations", "Live registered contacts (bindings) of users",
                                value=sum(1 for bindings in registrar.bindings.values()
                                          for b in bindings if b.expires_at > now))

    def _tasks(self, apps: set[str]) -> Iterator[Metric]:
        pool = self.switch.tasks
        active = dict.fromkeys(apps, 0)
        for record in pool.tasks.values():
            app = record.app.name if record.app is not None else NO_APP
            active[app] = active.get(app, 0) + 1
        yield _gauge("softswitch_tasks_active", "Running JS tasks", ("app",), active)
        yield _counter("softswitch_tasks_started_total", "JS tasks started (a call's Main and the tasks it spawns)",
                       ("app",), pool.started)
        yield _counter("softswitch_tasks_ended_total", "JS tasks ended, by outcome: ok, error (threw), cpu_budget, "
                       "memory_limit, worker_died", ("app", "outcome"), pool.ended)
        yield GaugeMetricFamily("softswitch_js_workers", "JS worker processes configured", value=len(pool.workers))
        yield GaugeMetricFamily("softswitch_js_workers_up", "JS worker processes running",
                                value=sum(1 for w in pool.workers if w.alive))
        yield CounterMetricFamily("softswitch_js_worker_deaths_total",
                                  "JS worker processes that died (crash, kill, stalled loop)", value=pool.deaths)

    def _sip(self) -> Iterator[Metric]:
        sip = self.switch.sip
        counts = sip.layer.counts
        yield _counter("softswitch_sip_requests_total", "SIP requests received and sent (first copies)",
                       ("direction", "method"), _by_direction(counts.requests_received, counts.requests_sent))
        yield _counter("softswitch_sip_responses_total", "SIP responses received and sent (first copies), by the "
                       "method of their CSeq and status code", ("direction", "method", "code"),
                       _by_direction(counts.responses_received, counts.responses_sent))
        yield _counter("softswitch_sip_retransmissions_total", "SIP messages received again (a transaction had them "
                       "already) and sent again (timers, replayed finals)", ("direction",),
                       {"received": counts.retransmissions_received, "sent": counts.retransmissions_sent})
        yield CounterMetricFamily("softswitch_sip_parse_errors_total",
                                  "Datagrams and stream messages that were not valid SIP", value=sip.bad_datagrams)
        yield CounterMetricFamily("softswitch_sip_flood_dropped_total",
                                  "SIP requests dropped unread: their source is blocked for flooding",
                                  value=sip.flood_dropped)
        tls = sum(1 for stream in sip.streams.values() if stream.tls is not None)
        yield GaugeMetricFamily("softswitch_sip_tcp_connections", "Open SIP TCP connections (TLS ones apart)",
                                value=len(sip.streams) - tls)
        yield GaugeMetricFamily("softswitch_sip_tls_connections", "Open SIP TLS connections, handshake done",
                                value=tls)
        yield CounterMetricFamily("softswitch_sip_tls_failures_total", "TLS connections that failed: handshakes "
                                  "(accepted and ours: an untrusted certificate, not TLS, timed out) and records",
                                  value=sip.tls_failures)
        yield GaugeMetricFamily("softswitch_sip_transactions", "SIP transactions remembered (lingering ones included)",
                                value=len(sip.layer))

    def _media(self, census: Census) -> Iterator[Metric]:
        sw = self.switch
        yield _counter("softswitch_rtp_packets_total", "RTP packets received and sent by the call legs",
                       ("direction",), census.packets)
        yield _counter("softswitch_rtp_packets_lost_total", "RTP packets lost, counted when a call ends: received "
                       "(RFC 3550 loss of the peer's RTP) and sent (the peer's RTCP reports of ours)",
                       ("direction",), self.recorder.lost)
        yield CounterMetricFamily("softswitch_srtp_packets_dropped_total", "RTP and RTCP packets dropped by SRTP legs, "
                                  "counted when a call ends: failed authentication (forged, replayed, the wrong key, "
                                  "plain RTP on an SRTP leg)", value=self.recorder.srtp_dropped)
        self.lateness.drain()
        yield self.lateness.histogram.family(
            "softswitch_rtp_send_lateness_seconds",
            "How late the last packet of each media clock step left after its due time")
        clock = sw.clock
        yield GaugeMetricFamily("softswitch_media_streams", "Outgoing media streams on the media clock",
                                value=len(clock))
        yield CounterMetricFamily("softswitch_media_late_ticks_total",
                                  "Media clock steps that sent more than one frame (catching up)",
                                  value=clock.late_ticks)
        yield CounterMetricFamily("softswitch_media_frames_dropped_total",
                                  "Frames skipped when the media clock fell more than 100 ms behind",
                                  value=clock.frames_dropped)
        yield GaugeMetricFamily("softswitch_rtp_ports_in_use", "RTP ports held by legs", value=sw.ports.in_use)
        yield GaugeMetricFamily("softswitch_rtp_ports", "RTP ports in the --rtp-ports range", value=sw.ports.capacity)

    def _operations(self) -> Iterator[Metric]:
        sw = self.switch
        yield GaugeMetricFamily("softswitch_loop_lag_seconds", "Event loop lateness, smoothed (admission refuses "
                                "new calls past 0.1 s)", value=sw.lag.lag)
        yield GaugeMetricFamily("softswitch_loop_lag_median_seconds", "Median event loop lateness over 2 s "
                                "(admission refuses new calls past 0.015 s)", value=sw.lag.sustained)
        yield _counter("softswitch_security_events_total", "Security log events (refused, auth-failed, blocked...) "
                       "by event and reason", ("event", "reason"), sw.access.log.counts)
        store = sw.apps
        info = InfoMetricFamily("softswitch_app", "The version of each app that serves new calls",
                                labels=("app", "version"))
        if store is not None:
            for rec in sorted(store.apps.values(), key=lambda r: r.name):
                info.add_metric([rec.name, rec.commit], {})
            if "default" not in store.apps and store.fallback is not None:
                info.add_metric(["default", "bundled"], {})
        elif sw.app is not None:
            info.add_metric([sw.app.name, "local"], {})
        yield info
        yield _counter("softswitch_app_installs_total", "App installs through the control API, by result: ok, "
                       "fetch_failed, check_failed, failed", ("app", "result"),
                       store.installs if store is not None else {})
        yield InfoMetricFamily("softswitch_build", "The switch's version", value={"version": self.version})


class SwitchMetrics:
    """The switch's registry and what feeds it; ``start()``/``stop()`` by ``Switch``."""

    def __init__(self, switch: Switch) -> None:
        self.switch = switch
        self.registry = CollectorRegistry()
        self.calls = CallRecorder()
        self.lateness = SendLateness(switch.clock.lateness)
        self.registry.register(SwitchCollector(switch, self.calls, self.lateness))
        PlatformCollector(registry=self.registry)  # python_info
        # The standard process_* series (CPU, memory, open fds of the switch process, not
        # of the JS workers), which dashboards expect. Outside the registry: it reads /proc,
        # ~1 µs per open file (2 ms with 1000 calls' sockets), so it runs in a thread.
        self.process = ProcessCollector(registry=None)
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self.switch.engine.observers.append(self.calls)
        self._timer = self.switch.loop.call_later(DRAIN_INTERVAL, self._drain)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.calls in self.switch.engine.observers:
            self.switch.engine.observers.remove(self.calls)

    def _drain(self) -> None:
        self.lateness.drain()
        self._timer = self.switch.loop.call_later(DRAIN_INTERVAL, self._drain)

    async def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The metrics in the format the scraper asked for (Accept: OpenMetrics or the
        Prometheus text format), and its content type. The switch's state is read here on
        the loop that owns it (~3 ms with 1000 live calls, measured in the switch process);
        the process figures and the text are made in a thread, beside the calls."""
        encoder, content_type = choose_encoder(accept or "")
        families = Families(list(self.registry.collect()), self.process)
        return await asyncio.to_thread(encoder, families), content_type


class Families:
    """Metric families collected already, and a collector safe to run off the loop: what
    the encoder reads in its thread."""

    def __init__(self, collected: list[Metric], more: ProcessCollector) -> None:
        self.collected = collected
        self.more = more

    def collect(self) -> Iterator[Metric]:
        yield from self.collected
        yield from self.more.collect()
