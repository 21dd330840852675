"""The switch process: wires SIP, the call engine and media on one loop, and the JS
workers that run the tasks (``switch/tasks/pool.py``).

Each piece has one owner here: ``Switch.start()`` starts them in order and
``Switch.stop()`` stops them in reverse, so nothing is left running.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import gc
import time
import logging
import signal
import socket
from importlib import metadata
from pathlib import Path

from media.clock import MediaClock
from media.playback import PlaybackCache
from media.ports import RtpPortPool
from media.session import MediaSession

from .apps.store import AppStore
from .calls.addressing import WILDCARDS, ip_family
from .calls.admission import Admission, LoopLagMonitor
from .calls.bridge import Switchboard
from .calls.call import AppInfo, Call, TaskSink
from .calls.engine import CallEngine
from .calls.registrar import Registrar
from .calls.outbound import Credentials
from .calls.routing import OutboundRoutes
from .cdr.postgres import PostgresShipper
from .cdr.store import FILENAME as CDR_FILE
from .cdr.writer import CdrWriter
from .config import DEFAULT_APP, Config
from .security.access import AccessPolicy
from .control.api import ControlApi
from .metrics import SwitchMetrics
from .sip.dialog import uri_wants_tls
from .sip.message import SipRequest
from .sip.transaction import TransactionLayer
from .sip.resolver import family_names
from .sip.transport import SipTransport
from .sip.uri import join_hostport
from .tasks.app import AppError, JsApp
from .tasks.boundary import CallError
from .tasks.pool import WorkerPool, default_worker_count
from .watchdog import LoopWatchdog

logger = logging.getLogger("switch")

DRAIN_TIMEOUT = 5.0  # seconds to wait for BYEs to be answered on SIGTERM


def product_name(with_version: bool) -> str:
    """What our Server/User-Agent headers say: the product, and its version only when the
    operator asks (a version tells a scanner which known holes to try)."""
    if not with_version:
        return "softswitch"
    try:
        return f"softswitch/{metadata.version('softswitch')}"
    except metadata.PackageNotFoundError:
        return "softswitch/dev"


def watch_gc_pauses(threshold: float = 0.02) -> None:
    """Log garbage-collector pauses long enough to disturb RTP timing."""
    started: list[float] = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pause = time.perf_counter() - started[0]
            if pause > threshold:
                logger.warning("gc pause %.0f ms (generation %d, %d collected, %d tracked objects)",
                               pause * 1000, info["generation"], info["collected"], len(gc.get_objects()))

    gc.callbacks.append(callback)


class Switch:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self.app: JsApp | None = None  # --app DIR: this one app serves every call
        self.app_error: str | None = None
        self.apps: AppStore | None = None  # otherwise: installed apps and routes
        self.control: ControlApi | None = None
        self.cdr_shipper: PostgresShipper | None = None

    async def start(self) -> None:
        cfg = self.config
        loop = self.loop
        host, port = cfg.listen_addr
        # Who may call, dial out, and how fast a source may send (switch/security/): the
        # flood guard sees every request before it is parsed.
        self.access = AccessPolicy.from_config(cfg)
        self.sip = SipTransport(loop, TransactionLayer(t1=cfg.sip_t1, product=product_name(cfg.server_version)),
                                admit=self.access.flood.allow)
        self.ports = RtpPortPool(*cfg.rtp_range)
        self.clock = MediaClock(loop)
        # Decoding and HTTP fetches run here, never on the loop.
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="media-decode")
        self.playback = PlaybackCache(self.executor)
        self.tasks = WorkerPool(loop, cfg.js_workers or default_worker_count(), memory_mb=cfg.task_memory_mb,
                                cpu_seconds=cfg.task_cpu_seconds, stall_timeout=cfg.watchdog_s or 10.0,
                                log_level=cfg.log_level, log_format=cfg.log_format, nice=cfg.js_worker_nice)
        self.lag = LoopLagMonitor(loop)  # started once start-up's own stalls are over (below)
        self.admission = Admission(self.lag, cfg.max_calls,
                                   rtp_ports_free=lambda: self.ports.capacity - self.ports.in_use,
                                   tasks_available=lambda: self.tasks.available)
        self.engine = CallEngine(
            loop, self.sip, self.admission, self.playback,
            open_media=self._open_media, launch=self._launch,
            advertise=cfg.advertise or None,
            gateways=OutboundRoutes(cfg.gateway or None, cfg.gateway_rules,
                                    {gw: Credentials(*cred) for gw, cred in cfg.gateway_credentials.items()},
                                    srtp=cfg.srtp_gateways),
            registrar=Registrar(cfg.users, cfg.realm, algorithms=tuple(cfg.digest_algorithms),
                                failures=self.access.failures),  # REGISTER and INVITE guesses count together
            access=self.access,
            dns_servers=cfg.dns_servers,
            failover_timeout=cfg.failover_timeout,
            srtp=cfg.srtp,
        )
        self.tasks.switchboard = Switchboard(self.engine, self.tasks.post)
        self.cdr: CdrWriter | None = None
        if cfg.cdr:  # every finished call's records, committed off the loop (switch/cdr/)
            cfg.data_path.mkdir(parents=True, exist_ok=True)
            self.cdr = CdrWriter(cfg.data_path / CDR_FILE, loop.time)
            self.cdr.start()
            self.engine.observers.append(self.cdr)
            if cfg.cdr_url:
                self.cdr_shipper = PostgresShipper(cfg.data_path / CDR_FILE, cfg.cdr_url)
                self.cdr_shipper.start()
        self.watchdog: LoopWatchdog | None = None
        if cfg.watchdog_s > 0:
            self.watchdog = LoopWatchdog(loop, cfg.watchdog_s)
            self.watchdog.start()
        self._load_app()
        await self.tasks.start()
        self.metrics = SwitchMetrics(self)  # GET /metrics on the control listener
        self.metrics.start()
        await self._start_control()
        # Everything loaded so far (modules, codecs, tables) lives forever: keep it out
        # of the collector's full passes, which otherwise stall the loop (and RTP) for
        # ~100 ms at 300 calls/s (measured with the gc pause log below).
        gc.collect()
        gc.freeze()
        watch_gc_pauses()
        cfg.data_path.mkdir(parents=True, exist_ok=True)
        # The loop-lag probe from here: start-up's stalls (compiling apps, spawning the
        # workers, the full collection just above) are not load, and measured as lag they
        # made the median shed the first calls with 503 "overloaded (20 ms for 2 s)".
        self.lag.start()
        # SIP last: no INVITE may arrive before the engine and the apps are ready.
        await self.sip.listen(host, port)
        tls_server, self.sip.client_tls = cfg.tls_contexts()  # (checked at load: the files may have changed)
        tls = cfg.tls_listen_addr
        if tls is not None and tls_server is not None:
            await self.sip.listen_tls(*tls, tls_server)
        if tls is None:
            for gateway in self.engine.router.gateways.gateways():
                if uri_wants_tls(gateway):
                    logger.warning("gateway %s is called over TLS but the switch has no --tls-listen: its requests "
                                   "to us (a BYE, a re-INVITE) can only come over the connection we opened; set "
                                   "--tls-listen HOST:5061", gateway)
        logger.info("softswitch listening on udp+tcp %s%s (%s), rtp %s, app %s, data %s",
                    join_hostport(*self.sip.local_addr),
                    f", tls {join_hostport(*self.sip.tls_addr)}" if self.sip.tls_addr else "",
                    family_names(self.engine.addresses.families),
                    cfg.rtp_ports, cfg.app or "installed apps", cfg.data_path)

    def _load_app(self) -> None:
        if not self.config.app:
            self._load_installed_apps()
            return
        try:
            self.app = JsApp.load("default", Path(self.config.app))
        except AppError as exc:
            # Keep running: calls get 500 with this error logged, and the operator sees
            # the problem without the switch flapping under a supervisor.
            self.app_error = f"app {self.config.app} does not load: {exc}"
            logger.error("%s", self.app_error)

    def _load_installed_apps(self) -> None:
        """Installed apps and routes from the data dir (switch/apps/store.py); the bundled
        greeting serves 'default' until an app is installed under that name."""
        data = self.config.data_path
        data.mkdir(parents=True, exist_ok=True)
        self.apps = AppStore(data, config_routes=self.config.route_rules,
                             fallback=JsApp.load("default", DEFAULT_APP, version="bundled"),
                             in_use=self._app_dirs_in_use)
        self.apps.load()

    def _app_dirs_in_use(self) -> set[Path]:
        """App version directories live calls still use: never pruned under them."""
        dirs = {c.app.root for c in self.engine.calls.values() if c.app is not None and c.app.root is not None}
        dirs.update(t.app.root for t in self.tasks.tasks.values() if t.app is not None and t.app.root is not None)
        return dirs

    async def _start_control(self) -> None:
        addr = self.config.control_addr
        if addr is None:
            return
        control = ControlApi(self, *addr, token=self.config.control_token)
        try:
            await control.start()
        except OSError as exc:
            if self.config.control:  # asked for explicitly: not having it is an error
                raise
            # The default address is best effort, so two switches on one host both start.
            logger.warning("control API off: cannot listen on %s:%d (%s); set --control HOST:PORT", *addr, exc)
            await control.stop()
            return
        self.control = control

    async def _open_media(self, call_id: str, family: socket.AddressFamily) -> MediaSession:
        # RTP binds where SIP listens, in the family the leg's SDP names: "::" (dual stack)
        # gives IPv6 legs "::" and IPv4 legs "0.0.0.0" (addressing.py).
        host = self.sip.local_addr[0]
        bind_ip = host if ip_family(host) == family else WILDCARDS[family]
        return await MediaSession.open(self.loop, bind_ip, self.ports, self.clock, f"rtp[{call_id}]",
                                       rtcp=self.config.rtcp, keepalive=self.config.media_keepalive)

    def app_for(self, invite: SipRequest) -> JsApp:
        """The app that serves this INVITE. Raises AppError when there is none."""
        if self.apps is not None:
            uri = invite.request_uri
            return self.apps.app_for(uri.user, uri.host)
        if self.app is None:
            raise AppError(self.app_error or "no app")
        return self.app

    def _launch(self, call: Call) -> TaskSink:
        """Start the task that runs ``Main()`` for a new call, in the app its INVITE
        routes to. Raises CallError (the call gets 500) when no app or worker can."""
        try:
            app = self.app_for(call.ingress.invite)
        except AppError as exc:
            raise CallError(str(exc)) from None
        call.app = AppInfo(app.name, app.version, app.root)
        task = self.tasks.start_task(app, "Main", leg=call.control(call.ingress))
        return TaskSink(task.tid, functools.partial(self.tasks.post, task.tid))

    # ------------------------------------------------------------------ lifecycle
    def request_stop(self) -> None:
        self._stopping.set()

    async def serve(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.request_stop)
        await self._stopping.wait()
        await self.stop()

    async def stop(self) -> None:
        """Drain: refuse new calls (503), BYE the running ones, wait for answers, stop."""
        logger.info("stopping: %d live calls, %d tasks", self.engine.live_calls(), len(self.tasks))
        if self.control is not None:  # no installs while draining
            await self.control.stop()
        self.admission.draining = True
        ending = self.engine.stop_all("switch shutting down")
        if ending:  # every call's dialogs finished (BYEs answered), or the deadline
            await asyncio.wait(ending, timeout=DRAIN_TIMEOUT)
        await self.tasks.shutdown()
        if self.cdr is not None:  # every record of every call that ended, on disk
            await self.loop.run_in_executor(None, self.cdr.stop)
            if self.cdr_shipper is not None:
                await self.loop.run_in_executor(None, self.cdr_shipper.stop)
        self.lag.stop()
        self.metrics.stop()
        if self.watchdog is not None:
            self.watchdog.stop()
        self.clock.stop()
        self.engine.close()
        self.sip.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
        logger.info("stopped")
