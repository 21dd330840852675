"""Containment: JS tasks run in worker processes (--js-workers N, default 2); the main
process keeps SIP, RTP and the call legs. What one script does costs only its own call:

- a task computing for 2 s without calling a verb delays no other call: 200 calls keep
  their RTP on time (no gap over 40 ms between consecutive packets of any stream) and
  OPTIONS is answered within 50 ms meanwhile;
- a runaway script (even one that catches what is thrown into its loop) is stopped after
  --task-cpu-seconds of JS CPU with an ERROR line naming the app, its commit and the
  loop's main.js line; its call gets 500 (unanswered) or BYE (answered); so is a memory
  bomb (--task-memory-mb); the other calls carry on and new calls are served;
- SIGKILL of a JS worker tears down only the calls whose tasks ran there (BYE / 500),
  the other worker's calls keep their RTP, new calls are served, and the worker slot is
  restarted (GET /status: js_workers[i] gets a new pid and restarts + 1).

Timing is measured on the receiving side with the kernel's receive timestamps
(RtpPacket.kernel_time, SO_TIMESTAMPNS): on loopback that is when the switch sent each
packet, whatever the test process's own scheduling on the shared 2-core host.

The calls are placed by SIPp (background load) and by `Caller` (raw SIP over UDP, one
socket per call: each call's outcome, BYE or final status, is known exactly). The app is
tests/e2e/apps/containment: the Request-URI user picks what the call's task does.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from .harness import (
    LOCALHOST,
    SO_TIMESTAMPNS,
    RawCall,
    RtpPacket,
    RtpSink,
    SippRun,
    SwitchProcess,
    control_status,
    free_rtp_range,
    free_tcp_port,
    kernel_rx_time,
    prepare_app,
    sip_request,
    status_of,
    stop_clean,
)

pytestmark = pytest.mark.e2e

APP = "containment"
GAP_LIMIT_MS = 40.0  # between consecutive RTP packets of one stream (20 ms ptime)
OPTIONS_LIMIT_MS = 50.0
BUDGET_LINE = "exceeded its CPU budget"
WORKER_DIED = re.compile(r"js worker.*died")


# --------------------------------------------------------------------------- helpers


def poll(cond: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """cond()'s first truthy value within `timeout` s, else its last (falsy) value."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def loop_line(app: Path, name: str) -> int:
    """The main.js line of the loop marked `// LOOP: name`."""
    for n, line in enumerate((app / "main.js").read_text().splitlines(), 1):
        if line.rstrip().endswith(f"// LOOP: {name}"):
            return n
    raise AssertionError(f"no '// LOOP: {name}' in {app / 'main.js'}")


def loop_places(app: Path, name: str) -> list[str]:
    """Where a budget or memory error of the loop `// LOOP: name` may be reported:
    "main.js:N:" for N from its function's header to the loop. QuickJS records source
    positions at calls, not at jumps, so a loop without calls is reported at the last
    call before it (its `AcceptCall();`), or at the function's header."""
    loop = loop_line(app, name)
    lines = (app / "main.js").read_text().splitlines()
    header = next(n for n in range(loop, 0, -1) if lines[n - 1].startswith("function "))
    return [f"main.js:{n}:" for n in range(header, loop + 1)]


def error_lines_at(sw: SwitchProcess, places: list[str], *needles: str) -> list[str]:
    """ERROR lines with every needle and one of ``places``."""
    return [ln for ln in error_lines(sw, *needles) if any(p in ln for p in places)]


def control_addr(sw: SwitchProcess) -> str:
    args = sw.command()
    return args[args.index("--control") + 1]


def start_switch(switch: Callable[..., SwitchProcess], app: str | Path | None, *args: str, **kw: Any) -> SwitchProcess:
    """The switch with its control API on a free port (picked again if it was taken
    between the pick and the bind: other suites run on this host too)."""
    for attempt in range(3):
        try:
            return switch(app, ["--control", f"{LOCALHOST}:{free_tcp_port()}", *args], **kw)
        except AssertionError as e:
            if attempt == 2 or not re.search(r"could not bind|cannot listen|address already in use", str(e), re.I):
                raise
    raise AssertionError("unreachable")


def status(sw: SwitchProcess) -> dict[str, Any]:
    st = control_status(sw, timeout=2.0)
    assert st is not None, "GET /status did not answer\n" + sw.log_tail(30)
    return st


def workers_rss_mib(sw: SwitchProcess) -> float:
    """The JS worker processes' RSS in all (MiB)."""
    total = 0
    for w in js_workers(sw):
        for line in Path(f"/proc/{w['pid']}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def js_workers(sw: SwitchProcess) -> list[dict[str, Any]]:
    st = status(sw)
    assert "js_workers" in st, f"GET /status has no js_workers: {st}"
    return sorted(st["js_workers"], key=lambda w: w["index"])


def error_lines(sw: SwitchProcess, *needles: str) -> list[str]:
    """ERROR lines of the switch log that contain every needle."""
    return [ln for ln in sw.log_text().splitlines()
            if re.search(r"\bERROR\b", ln) and all(n in ln for n in needles)]  # fmt: skip


class HostLoad:
    """What the host did during a window, for failure messages: the box is shared (2
    cores), so a late packet may be the switch's fault or another process's."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.max_runnable = 0
        self.t0, self.host0, self.proc0 = time.monotonic(), self._host(), self._proc()

    @staticmethod
    def _host() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # all, idle + iowait

    def _proc(self) -> int:
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0
        return int(fields[11]) + int(fields[12])  # utime + stime

    def sample(self) -> None:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("procs_running"):
                self.max_runnable = max(self.max_runnable, int(line.split()[1]))

    def describe(self) -> str:
        (total1, idle1), proc1 = self._host(), self._proc()
        total, idle = total1 - self.host0[0], idle1 - self.host0[1]
        wall = time.monotonic() - self.t0
        cores = os.cpu_count() or 1
        switch_s = (proc1 - self.proc0) / os.sysconf("SC_CLK_TCK")
        return (f"host: {100 * cores * (total - idle) / max(total, 1):.0f}% CPU busy of {100 * cores}%, "
                f"the switch's main process {100 * switch_s / max(wall, 1e-3):.0f}%, "
                f"up to {self.max_runnable} runnable tasks")


class OptionsProbe:
    """OPTIONS pings whose round trip ends at the kernel's receive timestamp of the answer."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.bind((LOCALHOST, 0))
        self.addr: tuple[str, int] = self.sock.getsockname()
        self.results: list[tuple[float, int | None, float | None]] = []  # (sent, status, rtt ms)

    def ping(self, timeout: float = 1.0) -> tuple[float, int | None, float | None]:
        call_id = uuid.uuid4().hex
        req = sip_request("OPTIONS", self.target, self.addr, call_id=call_id)
        sent = time.time()
        self.sock.sendto(req, self.target)
        deadline = time.monotonic() + timeout
        result: tuple[float, int | None, float | None] = (sent, None, None)
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([self.sock], [], [], left)[0]:
                break
            data, anc, _, _ = self.sock.recvmsg(65535, 64)
            code = status_of(data)
            if call_id.encode() not in data or code is None or code < 200:
                continue  # a provisional, or the late answer to an earlier ping
            at = kernel_rx_time(anc) or time.time()
            result = (sent, code, (at - sent) * 1000)
            break
        self.results.append(result)
        return result

    def close(self) -> None:
        self.sock.close()


class Caller(RawCall):
    """A raw-SIP caller driven by pump(): it ACKs final responses (200 and errors alike),
    answers the switch's BYE with 200 and records when each thing happened."""

    def __init__(self, sw: SwitchProcess, user: str, sink: RtpSink) -> None:
        super().__init__(sw.sip_addr, sink.port, user=user)
        self.sink = sink
        self.invited_at: float | None = None
        self.final_at: float | None = None
        self.bye_at: float | None = None  # the switch's BYE reached us
        self.bye_status: int | None = None  # the answer to our own BYE
        self.cancel_status: int | None = None
        self.statuses: list[int] = []

    def __repr__(self) -> str:
        return (f"<{self.user} {self.call_id[:8]} final={self.status} bye_at={self.bye_at} "
                f"statuses={self.statuses}>")  # fmt: skip

    @property
    def status(self) -> int | None:
        return self.final.status if self.final is not None else None

    @property
    def ruri(self) -> str:
        return f"sip:{self.user}@{self.target[0]}:{self.target[1]}"

    def start(self) -> Caller:
        self.invited_at = time.time()
        self._send("INVITE", self.ruri, 1, self.branch, None, self.sdp)
        return self

    def hangup(self) -> None:
        """Send our BYE (its answer lands in bye_status)."""
        assert self.final is not None and self.final.status == 200
        self.cseq += 1
        self._send("BYE", self.remote_target, self.cseq, "z9hG4bK-" + uuid.uuid4().hex[:16],
                   self.final.to_tag)  # fmt: skip

    def cancel(self) -> None:
        self._send("CANCEL", self.ruri, 1, self.branch, None)

    def media_src(self) -> tuple[str, int]:
        """Where the switch sends this call's RTP from (symmetric RTP: its SDP address)."""
        return self.media_addr()

    def packets(self) -> list[RtpPacket]:
        src = self.media_src()
        return [p for p in self.sink.snapshot(0) if p.src == src]

    def on_datagram(self, data: bytes, src: tuple[str, int], at: float) -> None:
        code = status_of(data)
        if code is None:  # a request from the switch: BYE (or anything else) gets 200
            self.sock.send(_ok_for(data), src)
            if data.startswith(b"BYE ") and self.bye_at is None:
                self.bye_at = at
            return
        m = self._msg(data)
        self.statuses.append(code)
        if m.method == "INVITE" and code >= 200:
            if self.final is None:
                self.final, self.final_at = m, at
            if code < 300:
                self.ack()
            else:  # RFC 3261 17.1.1.3: ACK in the INVITE transaction
                self._send("ACK", self.ruri, 1, self.branch, m.to_tag)
        elif m.method == "BYE" and code >= 200:
            self.bye_status = code
        elif m.method == "CANCEL" and code >= 200:
            self.cancel_status = code


def _ok_for(request: bytes) -> bytes:
    head = request.decode(errors="replace").split("\r\n\r\n", 1)[0].split("\r\n")
    keep = [ln for ln in head[1:] if ln.split(":", 1)[0].strip().lower()
            in ("via", "v", "from", "f", "to", "t", "call-id", "i", "cseq")]  # fmt: skip
    return ("\r\n".join(["SIP/2.0 200 OK", *keep, "Content-Length: 0"]) + "\r\n\r\n").encode()


def pump(callers: Iterable[Caller], until: Callable[[], Any], timeout: float) -> Any:
    """Feed every datagram the callers receive to them until `until()` is truthy (its
    value) or `timeout` s have passed (then until()'s last value)."""
    socks = {c.sock.sock: c for c in callers}
    deadline = time.monotonic() + timeout
    while True:
        done = until()
        left = deadline - time.monotonic()
        if done or left <= 0:
            return done
        for s in select.select(list(socks), [], [], min(left, 0.05))[0]:
            data, src = s.recvfrom(65535)
            socks[s].on_datagram(data, src, time.time())


def place(callers: Sequence[Caller], timeout: float = 10.0) -> None:
    """Start the INVITEs and wait for every final response (answered calls: ACKed)."""
    for c in callers:
        c.start()
    pump(callers, lambda: all(c.final is not None for c in callers), timeout)
    missing = [c for c in callers if c.final is None]
    assert not missing, f"no final response for {missing}"


def ring(callers: Sequence[Caller], timeout: float = 5.0) -> None:
    """Start the INVITEs and wait until each rings (180), unanswered."""
    for c in callers:
        c.start()
    pump(callers, lambda: all(180 in c.statuses for c in callers), timeout)
    bad = [c for c in callers if 180 not in c.statuses or c.final is not None]
    assert not bad, f"expected 180 and no final response: {bad}"


def finish(callers: Sequence[Caller], timeout: float = 5.0) -> None:
    """Hang up every answered call still up (BYE -> 200) and cancel every ringing one
    (CANCEL -> 200, INVITE -> 487)."""
    up = [c for c in callers if c.status == 200 and c.bye_at is None]
    ringing = [c for c in callers if c.final is None]
    for c in up:
        c.hangup()
    for c in ringing:
        c.cancel()
    pump(callers, lambda: all(c.bye_status for c in up) and all(c.final for c in ringing), timeout)
    assert [c.bye_status for c in up] == [200] * len(up), f"BYE not answered 200: {up}"
    assert [c.status for c in ringing] == [487] * len(ringing), f"CANCEL did not end in 487: {ringing}"


def by_stream(sinks: Iterable[RtpSink]) -> dict[tuple[str, int], list[RtpPacket]]:
    """PCMU packets per sending address (each leg sends from its own RTP port)."""
    out: dict[tuple[str, int], list[RtpPacket]] = {}
    for sink in sinks:
        for p in sink.snapshot(0):
            out.setdefault(p.src, []).append(p)
    for pkts in out.values():
        assert all(p.kernel_time is not None for p in pkts), "no kernel receive timestamps (SO_TIMESTAMPNS)"
        pkts.sort(key=lambda p: p.kernel_time)  # type: ignore[arg-type, return-value]
    return out


def wait_streams_past(sinks: Sequence[RtpSink], sources: Iterable[tuple[str, int]], t: float) -> None:
    """Until each source has a packet received after wall time t (bounded: a stream that
    stopped shows up as a gap in continuity_failures)."""
    want = set(sources)

    def caught_up() -> bool:
        streams = by_stream(sinks)
        return all(streams.get(s) and streams[s][-1].kernel_time > t for s in want)  # type: ignore[operator]

    poll(caught_up, 2.0)


def continuity_failures(streams: dict[tuple[str, int], list[RtpPacket]], since: float, until: float) -> list[str]:
    """Streams with a gap over GAP_LIMIT_MS within [since, until] (the edges count: a
    stream must have packets right after `since` and right before `until`) or a lost
    packet (sequence gap)."""
    bad: list[tuple[float, str]] = []
    for src, pkts in streams.items():
        inside = [p for p in pkts if since <= p.kernel_time <= until]  # type: ignore[operator]
        times = [since, *(p.kernel_time for p in inside), until]
        gaps = [(b - a, a) for a, b in zip(times, times[1:])]  # type: ignore[operator]
        worst, at = max(gaps)
        lost = RtpSink.seq_gaps(inside)
        if worst * 1000 > GAP_LIMIT_MS or lost:
            bad.append((worst, f"{src}: {len(inside)} packets, gap {worst * 1000:.0f} ms at "
                                f"+{at - since:.3f}s, seq gaps {lost[:3]}"))  # fmt: skip
    return [text for _, text in sorted(bad, reverse=True)]


def serves_a_new_call(sw: SwitchProcess, sink: RtpSink, when: str) -> None:
    """A new ordinary call is answered and gets RTP, then hangs up cleanly."""
    fresh = Caller(sw, "play", sink)
    place([fresh])
    assert fresh.status == 200, fresh
    assert poll(lambda: len(fresh.packets()) >= 10, 3.0), f"no RTP on a call placed {when}"
    finish([fresh])


def worst_gap_ms(streams: dict[tuple[str, int], list[RtpPacket]], since: float, until: float) -> float:
    """The largest gap between two packets of one stream inside [since, until] (ms)."""
    worst = 0.0
    for pkts in streams.values():
        times = sorted(p.kernel_time for p in pkts if since <= p.kernel_time <= until)  # type: ignore[operator]
        worst = max([worst, *((b - a) * 1000 for a, b in zip(times, times[1:]))])
    return worst


def sipp_play_calls(sipp_bg: Callable[..., SippRun], sw: SwitchProcess, sink: RtpSink, calls: int,
                    hold_ms: int, rate: int) -> SippRun:  # fmt: skip
    """`calls` SIPp callers of the `play` behaviour, RTP to `sink`; each hangs up after
    hold_ms (a BYE from the switch fails the call)."""
    return sipp_bg("uac_hangup", sw, service="play", calls=calls, rate=rate, keys={"rtpport": sink.port},
                   pause_ms=hold_ms, timeout=hold_ms // 1000 + 30, extra_args=["-l", str(calls)])


def wait_sources(sinks: Sequence[RtpSink], n: int, timeout: float) -> set[tuple[str, int]]:
    got = poll(lambda: len(set().union(*(s.sources() for s in sinks))) >= n, timeout, interval=0.1)
    assert got, f"{len(by_stream(sinks))} of {n} RTP streams arrived within {timeout}s"
    return set(by_stream(sinks))


@pytest.fixture
def sinks() -> Iterator[Callable[[int], list[RtpSink]]]:
    made: list[RtpSink] = []

    def make(n: int) -> list[RtpSink]:
        new = [RtpSink().start() for _ in range(n)]
        made.extend(new)
        return new

    yield make
    for s in made:
        s.stop()


# --------------------------------------------------------------------------- 1. compute


def test_a_task_computing_2s_delays_no_other_call(switch, sipp_bg, sinks):
    """200 calls play a tone; one task computes for 2 s without calling a verb: every one
    of the 200 streams keeps a packet at least every 40 ms and OPTIONS is answered within
    50 ms throughout; the computing task then carries on (its Disconnect: a BYE >= 2 s
    after the answer)."""
    # one even RTP port per call: 201 calls need more than the harness's default 200 ports
    sw = start_switch(switch, APP, "--js-workers", "2", rtp_range=free_rtp_range(600))
    bg_sinks = sinks(2)  # 100 streams each
    compute_sink, = sinks(1)
    runs = [sipp_play_calls(sipp_bg, sw, s, 100, hold_ms=12000, rate=50) for s in bg_sinks]
    background = wait_sources(bg_sinks, 200, timeout=15)

    probe = OptionsProbe(sw.sip_addr)
    computing = Caller(sw, "compute", compute_sink)
    load = HostLoad(sw.proc.pid)  # type: ignore[union-attr]
    try:
        place([computing])
        assert computing.status == 200, computing
        while computing.bye_at is None and time.time() - computing.final_at < 10:  # type: ignore[operator]
            probe.ping()
            load.sample()
            pump([computing], lambda: computing.bye_at, 0.05)
    finally:
        probe.close()
    host = load.describe()
    assert computing.bye_at is not None, "the computing task never hung up\n" + sw.log_tail(30)
    took = computing.bye_at - computing.final_at  # type: ignore[operator]
    assert 1.9 <= took <= 4.0, f"BYE {took:.2f}s after the answer: the task computes 2 s, then hangs up"
    since, until = computing.invited_at, computing.bye_at  # the compute lies inside
    assert since is not None

    pings = [r for r in probe.results if since <= r[0] <= until]
    unanswered = [r for r in pings if r[1] != 200]
    assert not unanswered, f"{len(unanswered)} of {len(pings)} OPTIONS not answered 200 within 1 s: {unanswered[:5]}; {host}"
    slow = sorted((r[2] for r in pings if r[2] is not None and r[2] >= OPTIONS_LIMIT_MS), reverse=True)
    assert not slow, f"{len(slow)} of {len(pings)} OPTIONS answered in >= 50 ms: {[round(x) for x in slow[:10]]}; {host}"
    assert len(pings) >= 15, f"only {len(pings)} OPTIONS during the compute"
    worst = max(r[2] for r in pings if r[2] is not None)

    wait_streams_past(bg_sinks, background, until)
    streams = {src: pkts for src, pkts in by_stream(bg_sinks).items() if src in background}
    bad = continuity_failures(streams, since, until)
    assert not bad, (f"{len(bad)} of 200 streams late or lossy while one task computed "
                     f"({until - since:.2f}s window, OPTIONS worst {worst:.1f} ms; {host}):\n" + "\n".join(bad[:15]))  # fmt: skip

    # the figures for bench/README.md (pytest -s shows them)
    print(f"\ncompute 2 s next to 200 calls: worst RTP gap {worst_gap_ms(streams, since, until):.1f} ms, "
          f"OPTIONS worst {worst:.1f} ms over {len(pings)} probes")
    for run in runs:
        res = run.wait()
        assert res.ok and res.successful == 100, res.describe(3000)
    assert BUDGET_LINE not in sw.log_text(), "a 2 s compute is within the default 5 s budget\n" + sw.log_tail(30)
    stop_clean(sw)


# --------------------------------------------------------------------------- 2. runaways


def control_request(sw: SwitchProcess, method: str, path: str, body: object) -> dict[str, Any]:
    req = urllib.request.Request(f"http://{control_addr(sw)}{path}", data=json.dumps(body).encode(),
                                 method=method, headers={"Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return dict(json.loads(r.read()))
    except urllib.error.HTTPError as e:
        raise AssertionError(f"{method} {path}: {e.code} {e.read().decode(errors='replace')}") from None


def git_repo_with(app: Path, repo: Path) -> str:
    """A git repository holding `app` (main.js and its audio) in one commit; its full SHA."""
    shutil.copytree(app, repo)
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}  # fmt: skip

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True,
                              text=True).stdout.strip()  # fmt: skip

    git("init", "--quiet", "--initial-branch=main")
    git("add", "-A")
    git("commit", "--quiet", "-m", "containment app")
    return git("rev-parse", "HEAD")


def test_runaway_scripts_are_stopped_after_their_cpu_budget(switch, sipp_bg, sinks, tmp_path):
    """Next to 20 calls playing audio, two scripts spin forever catching whatever is thrown
    into their loops, one after answering, one before. With --task-cpu-seconds 1 each is
    stopped after ~1 s: BYE for the answered one, 500 for the other, and an ERROR line
    naming 'exceeded its CPU budget', the app, its commit and the loop's main.js line.
    The 20 calls keep their RTP on time and end normally; the switch serves a new call."""
    app = prepare_app(APP, tmp_path / "apps")
    sha = git_repo_with(app, tmp_path / "repo")
    sw = start_switch(switch, None, "--js-workers", "2", "--task-cpu-seconds", "1")  # installed apps
    control_request(sw, "PUT", "/apps/contained", {"source": "git", "url": str(tmp_path / "repo"), "commit": sha[:10]})
    control_request(sw, "PUT", "/routes", {"routes": [{"match": "*", "app": "contained"}]})

    bg_sink, call_sink = sinks(2)
    run = sipp_play_calls(sipp_bg, sw, bg_sink, 20, hold_ms=9000, rate=40)
    background = wait_sources([bg_sink], 20, timeout=10)

    spinning = Caller(sw, "spin", call_sink)  # spins before answering
    runaway = Caller(sw, "runaway", call_sink)  # answers, then spins
    spinning.start()
    runaway.start()
    pump([spinning, runaway], lambda: spinning.final and runaway.bye_at, 12)
    assert spinning.status == 500, f"the unanswered runaway's call: {spinning}\n" + sw.log_tail(30)
    assert runaway.status == 200 and runaway.bye_at is not None, f"the answered runaway: {runaway}\n" + sw.log_tail(30)
    took_spin = spinning.final_at - spinning.invited_at  # type: ignore[operator]
    took_run = runaway.bye_at - runaway.final_at  # type: ignore[operator]
    assert 0.9 <= took_spin <= 6, f"500 {took_spin:.2f}s after the INVITE, for a 1 s CPU budget"
    assert 0.9 <= took_run <= 6, f"BYE {took_run:.2f}s after the answer, for a 1 s CPU budget"

    for behaviour in ("spin", "runaway"):
        where = loop_places(app, behaviour)
        lines = poll(lambda: error_lines_at(sw, where, BUDGET_LINE), 2.0)  # noqa: B023
        assert lines, f"no ERROR line with {BUDGET_LINE!r} and one of {where}\n" + sw.log_tail(40)
        assert "contained" in lines[0] and sha[:7] in lines[0], (
            f"the line must name the app 'contained' and its commit {sha[:10]}:\n{lines[0]}")

    since, until = spinning.invited_at, max(spinning.final_at, runaway.bye_at)  # type: ignore[type-var]
    wait_streams_past([bg_sink], background, until)
    bad = continuity_failures(by_stream([bg_sink]), since, until)  # type: ignore[arg-type]
    assert not bad, f"{len(bad)} of 20 streams late or lossy next to the runaways:\n" + "\n".join(bad)

    assert sw.running(), "the switch exited\n" + sw.log_tail(30)
    serves_a_new_call(sw, call_sink, "after the runaways")
    res = run.wait()
    assert res.ok and res.successful == 20, res.describe(3000)
    stop_clean(sw)


def test_runaway_with_the_default_limits_ends_its_call_not_the_switch(switch, sipp_bg):
    """Formerly the watchdog's case (a loop that never calls a verb ended the process with
    exit 70): with the defaults (2 JS workers, 5 s CPU budget) the runaway's call gets a
    BYE after ~5 s, the log names the app and main.js:3-5 (the runaway app's Main), and the
    switch stays up, answering
    OPTIONS within 50 ms while the script spins; SIGTERM then stops it with exit 0."""
    sw = start_switch(switch, "runaway")
    cores = len(os.sched_getaffinity(0))
    assert len(js_workers(sw)) == cores, f"default --js-workers is one per core ({cores}): {js_workers(sw)}"
    call = sipp_bg("uac_pcmu_wait_bye", sw, timeout=20)
    probe = OptionsProbe(sw.sip_addr)
    try:
        while call.running():
            assert probe.ping()[1] == 200, "OPTIONS unanswered while a script spins\n" + sw.log_tail(20)
            time.sleep(0.2)
    finally:
        probe.close()
    res = call.wait()
    assert res.ok, res.describe()
    ok_at = res.received("INVITE", 200)[0].time
    took = res.received("BYE")[0].time - ok_at
    assert 4.5 <= took <= 10, f"BYE {took:.1f}s after the answer; the default budget is 5 s"
    rtts = [r[2] for r in probe.results if r[0] > ok_at and r[2] is not None]
    assert len(rtts) >= 10 and max(rtts) < OPTIONS_LIMIT_MS, f"OPTIONS round trips {sorted(rtts)[-5:]} ms"
    where = ["main.js:3:", "main.js:4:", "main.js:5:"]  # Main() { AcceptCall(); ...; while (true) { n++; }
    lines = poll(lambda: error_lines_at(sw, where, BUDGET_LINE), 2.0)
    assert lines and "default" in lines[0], f"no ERROR {BUDGET_LINE!r} line naming default and {where}\n" + sw.log_tail(30)
    assert sw.running() and status(sw)["live_tasks"] == 0, sw.log_tail(20)


def test_memory_bombs_end_their_own_calls(switch, sipp_bg, sinks):
    """With --task-memory-mb 32, a script allocating without bound ends with an ERROR
    line about memory at its loop; one that catches the out-of-memory error and keeps
    allocating is stopped too, by the CPU budget (3 s here) at the latest. Both calls get
    a BYE; 10 calls beside them keep their RTP and end normally; a new call is served;
    the JS workers' memory comes back near where it was (the bombs' heaps are freed)."""
    budget = 3
    sw = start_switch(switch, APP, "--task-memory-mb", "32", "--task-cpu-seconds", str(budget))
    app = sw.app_dir
    bg_sink, call_sink = sinks(2)
    run = sipp_play_calls(sipp_bg, sw, bg_sink, 10, hold_ms=10000, rate=40)
    background = wait_sources([bg_sink], 10, timeout=10)
    rss_before = workers_rss_mib(sw)

    bombs = [Caller(sw, "bomb", call_sink), Caller(sw, "bomb_caught", call_sink)]
    for b in bombs:
        b.start()
    pump(bombs, lambda: all(b.bye_at or (b.status or 0) >= 300 for b in bombs), 15)
    for b in bombs:
        assert b.status == 200 and b.bye_at is not None, f"{b.user}: {b}\n" + sw.log_tail(30)
        took = b.bye_at - b.final_at  # type: ignore[operator]
        assert took <= budget + 4, f"{b.user}: BYE {took:.1f}s after the answer ({budget} s CPU budget)\n" + sw.log_tail(30)
    plain = poll(lambda: error_lines_at(sw, loop_places(app, "bomb")), 2.0)
    assert plain and "memory" in plain[0].lower(), "no ERROR line about memory at the bomb's loop\n" + sw.log_tail(30)
    caught = poll(lambda: error_lines_at(sw, loop_places(app, "bomb_caught")), 2.0)
    assert caught and re.search(r"memory|CPU budget", caught[0], re.I), (
        "no ERROR line (memory or CPU budget) at the caught bomb's loop\n" + sw.log_tail(30))

    since, until = min(b.invited_at for b in bombs), max(b.bye_at for b in bombs)  # type: ignore[type-var]
    wait_streams_past([bg_sink], background, until)
    bad = continuity_failures(by_stream([bg_sink]), since, until)  # type: ignore[arg-type]
    assert not bad, f"{len(bad)} of 10 streams late or lossy next to the memory bombs:\n" + "\n".join(bad)

    rss_after = workers_rss_mib(sw)
    print(f"\nJS workers' RSS before the bombs {rss_before:.0f} MiB, after {rss_after:.0f} MiB")
    # each bomb filled a 32 MiB heap; what stays is allocator slack, not the heaps
    assert rss_after < rss_before + 16, f"workers' RSS {rss_before:.0f} -> {rss_after:.0f} MiB after the bombs"
    serves_a_new_call(sw, call_sink, "after the bombs")
    res = run.wait()
    assert res.ok and res.successful == 10, res.describe(3000)
    stop_clean(sw)


# --------------------------------------------------------------------------- 3. worker crash


def kill_worker(sw: SwitchProcess, worker: dict[str, Any]) -> float:
    os.kill(worker["pid"], signal.SIGKILL)
    return time.time()


def restarted(sw: SwitchProcess, before: dict[str, Any]) -> dict[str, Any] | None:
    """The slot of `before` once a new worker runs in it: new pid, restarts + 1 (and, if
    /status says whether the worker is up yet, up: the pid shows as soon as it spawns)."""
    slot = next((w for w in js_workers(sw) if w["index"] == before["index"]), None)
    if (slot and slot["pid"] not in (None, before["pid"]) and slot["restarts"] == before["restarts"] + 1
            and slot.get("alive") is not False):
        return slot
    return None


def test_killing_a_js_worker_costs_only_the_calls_it_ran(switch, sinks):
    """12 answered calls and 6 ringing ones spread over 2 workers; SIGKILL one worker:
    exactly its calls end (BYE if answered, 500 if ringing), within 3 s; the other calls
    keep their RTP (no gap over 40 ms) and keep ringing; a new call is answered meanwhile;
    the slot restarts (new pid, restarts 1) and serves calls again."""
    sw = start_switch(switch, APP, "--js-workers", "2")
    sink, = sinks(1)
    answered = [Caller(sw, "play", sink) for _ in range(12)]
    ringing = [Caller(sw, "ring", sink) for _ in range(6)]
    everyone = answered + ringing
    place(answered)
    assert [c.status for c in answered] == [200] * 12, answered
    ring(ringing)
    assert poll(lambda: sum(w["tasks"] for w in js_workers(sw)) == 18, 5.0), js_workers(sw)
    workers = js_workers(sw)
    assert len(workers) == 2 and all(w["tasks"] > 0 for w in workers), (
        f"18 tasks should be spread over both workers: {workers}")
    victim, other = workers
    # 0.5 s of RTP on every call before the kill: the window below starts 0.3 s before it
    assert poll(lambda: all(len(c.packets()) >= 25 for c in answered), 3.0), "RTP not flowing on every call"

    killed_at = kill_worker(sw, victim)

    def torn_down() -> list[Caller]:
        return [c for c in answered if c.bye_at] + [c for c in ringing if c.final]

    pump(everyone, lambda: len(torn_down()) >= victim["tasks"], 3.0)
    gone = torn_down()
    assert len(gone) == victim["tasks"], (
        f"{len(gone)} calls ended, but worker {victim['index']} ran {victim['tasks']} tasks: {gone}\n" + sw.log_tail(30))
    assert any(c in answered for c in gone) and any(c in ringing for c in gone), (
        f"the killed worker should have run answered and ringing calls: {gone}")
    assert [c.status for c in ringing if c.final] == [500] * len([c for c in ringing if c.final]), ringing
    assert poll(lambda: WORKER_DIED.search(sw.log_text()), 2.0), "no 'js worker ... died' line\n" + sw.log_tail(30)
    # Once the switch knows (the line above), while the slot restarts: a new call is served.
    newcomer = Caller(sw, "play", sink)
    everyone.append(newcomer)
    place([newcomer], timeout=5.0)
    assert newcomer.status == 200, f"a call placed while the worker restarts: {newcomer}\n" + sw.log_tail(30)

    new_slot = poll(lambda: restarted(sw, victim), 5.0)
    assert new_slot, f"worker slot {victim['index']} not restarted within 5 s: {js_workers(sw)}"
    same = next(w for w in js_workers(sw) if w["index"] == other["index"])
    assert same["pid"] == other["pid"] and same["restarts"] == other["restarts"], (other, same)

    # The calls of the other worker: still up, RTP on time across the kill and the restart.
    later = [Caller(sw, "play", sink) for _ in range(4)]
    everyone += later
    place(later)
    assert [c.status for c in later] == [200] * 4, later
    assert poll(lambda: next(w for w in js_workers(sw) if w["index"] == victim["index"])["tasks"] > 0, 3.0), (
        f"none of 4 new calls runs in the restarted worker: {js_workers(sw)}")
    observed = time.time()
    assert torn_down() == gone, f"more calls ended after the first {len(gone)}: {torn_down()}"
    survivors = [c for c in answered if c not in gone]
    assert survivors, "the other worker ran no answered call"
    wait_streams_past([sink], [c.media_src() for c in survivors], observed)
    streams = {src: p for src, p in by_stream([sink]).items() if src in {c.media_src() for c in survivors}}
    bad = continuity_failures(streams, killed_at - 0.3, observed)
    assert not bad, f"{len(bad)} of {len(survivors)} surviving streams late or lossy:\n" + "\n".join(bad)
    for c in gone:
        if c.bye_at:
            late = [p for p in c.packets() if p.kernel_time > c.bye_at + 0.1]  # type: ignore[operator]
            assert not late, f"{len(late)} RTP packets after the BYE of {c}"
    assert poll(lambda: all(len(c.packets()) >= 10 for c in [newcomer, *later]), 3.0), "no RTP on the new calls"
    finish(everyone)
    stop_clean(sw)


def test_killing_the_only_js_worker_keeps_the_switch(switch, sinks):
    """--js-workers 1: SIGKILL of the only worker ends its calls (BYE / 500); the switch
    keeps answering OPTIONS, restarts the worker, and new calls succeed."""
    sw = start_switch(switch, APP, "--js-workers", "1")
    sink, = sinks(1)
    answered = [Caller(sw, "play", sink) for _ in range(3)]
    ringing = [Caller(sw, "ring", sink) for _ in range(2)]
    place(answered)
    assert [c.status for c in answered] == [200] * 3, answered
    ring(ringing)
    assert poll(lambda: [w["tasks"] for w in js_workers(sw)] == [5], 5.0), js_workers(sw)
    only, = js_workers(sw)

    killed_at = kill_worker(sw, only)
    pump(answered + ringing, lambda: all(c.bye_at for c in answered) and all(c.final for c in ringing), 5.0)
    assert all(c.bye_at and c.bye_at - killed_at <= 3 for c in answered), f"{answered}\n" + sw.log_tail(30)
    assert [c.status for c in ringing] == [500, 500], f"{ringing}\n" + sw.log_tail(30)
    probe = OptionsProbe(sw.sip_addr)
    try:
        assert probe.ping()[1] == 200, "OPTIONS unanswered after the worker died\n" + sw.log_tail(30)
    finally:
        probe.close()
    assert poll(lambda: WORKER_DIED.search(sw.log_text()), 2.0), "no 'js worker ... died' line\n" + sw.log_tail(30)
    assert poll(lambda: restarted(sw, only), 5.0), f"the worker was not restarted within 5 s: {js_workers(sw)}"

    fresh = [Caller(sw, "play", sink) for _ in range(2)]
    place(fresh)
    assert [c.status for c in fresh] == [200, 200], f"{fresh}\n" + sw.log_tail(30)
    assert poll(lambda: all(len(c.packets()) >= 10 for c in fresh), 3.0), "no RTP on calls after the restart"
    finish(fresh)
    assert sw.running()
    stop_clean(sw)


def nice_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


@pytest.mark.parametrize("configured", [None, 0, 9])
def test_js_workers_run_below_the_switchs_cpu_priority(switch, tmp_path, configured):
    """The workers are nicer than the switch (js_worker_nice, default 5: pool.py says why),
    also after a restart; 0 keeps them at the switch's priority."""
    args = ["--js-workers", "2"]
    if configured is not None:
        cfg = tmp_path / "nice.toml"
        cfg.write_text(f"js_worker_nice = {configured}\n")
        args += ["--config", str(cfg)]
    sw = start_switch(switch, APP, *args)
    expected = nice_of(sw.proc.pid) + (5 if configured is None else configured)
    workers = js_workers(sw)
    assert [nice_of(w["pid"]) for w in workers] == [expected, expected], workers
    os.kill(workers[0]["pid"], signal.SIGKILL)
    assert poll(lambda: js_workers(sw)[0]["alive"] and js_workers(sw)[0]["pid"] != workers[0]["pid"], 5.0)
    assert nice_of(js_workers(sw)[0]["pid"]) == expected
