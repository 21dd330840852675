"""End-to-end harness: the real switch as a subprocess, SIPp as the caller, and an RTP
sink standing in for the caller's media port.

Everything binds 127.0.0.1 on ports picked here, so the suite can run twice in a row and
next to a switch already listening on 5060. Nothing here imports the switch: it is driven
only through its command line, SIP and RTP, as a user would.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import os
import random
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
import wave
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "sipp_scenarios"
TEST_APPS = Path(__file__).resolve().parent / "apps"
JS_APPS = REPO / "js_apps"
LOCALHOST = "127.0.0.1"
LOCALHOST6 = "::1"
SIPP = shutil.which("sipp") or "sipp"


# --------------------------------------------------------------------------- ports


def family(host: str) -> socket.AddressFamily:
    """The socket family of an address (an IPv6 one has a colon)."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def hostport(host: str, port: int) -> str:
    """host:port as SIP and SIPp write it: an IPv6 address in brackets (RFC 5118 §4.4)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def free_udp_port(host: str = LOCALHOST) -> int:
    """A UDP port that was free a moment ago (the kernel's pick, so from the ephemeral range)."""
    with socket.socket(family(host), socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_rtp_range(size: int = 200, host: str = LOCALHOST, lowest: int = 20000,
                   highest: int = 32000) -> tuple[int, int]:  # fmt: skip
    """An even-based block of `size` UDP ports, all free now, below the ephemeral range
    (Linux: 32768+) so free_udp_port() picks can never land inside it."""
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(50):
        low = rng.randrange(lowest, highest - size, 2)
        socks: list[socket.socket] = []
        try:
            for port in range(low, low + size):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((host, port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return low, low + size - 1
    raise RuntimeError("no free RTP port range found")


def sipp_media_port() -> int:
    """For SIPp's -mp: it binds N, N+1 (RTCP), N+2 and N+3 (video), so find 4 free ones
    (in 10000-20000: apart from the switches' RTP ranges and the ephemeral range)."""
    return free_rtp_range(4, lowest=10000, highest=20000)[0]


# --------------------------------------------------------------------------- raw SIP


def sip_request(
    method: str,
    target: tuple[str, int],
    local: tuple[str, int],
    *,
    user: str = "service",
    call_id: str | None = None,
    branch: str | None = None,
    cseq: int = 1,
    body: str = "",
    extra_headers: Sequence[str] = (),
    omit: Iterable[str] = (),
) -> bytes:
    """A well-formed request (UDP), with headers in `omit` (e.g. "Via") left out."""
    there, here = hostport(*target), hostport(*local[:2])
    branch = branch or "z9hG4bK-" + uuid.uuid4().hex[:16]
    call_id = call_id or uuid.uuid4().hex + "@" + local[0]
    headers = {
        "Via": f"SIP/2.0/UDP {here};branch={branch};rport",
        "Max-Forwards": "70",
        "From": f"<sip:e2e@{here}>;tag={uuid.uuid4().hex[:8]}",
        "To": f"<sip:{user}@{there}>",
        "Call-ID": call_id,
        "CSeq": f"{cseq} {method}",
        "Contact": f"<sip:e2e@{here}>",
    }
    lines = [f"{method} sip:{user}@{there} SIP/2.0"]
    omitted = {o.lower() for o in omit}
    lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() not in omitted]
    lines += list(extra_headers)
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def sdp_offer(rtp_port: int, pts: str = "0 101", host: str = LOCALHOST, proto: str = "RTP/AVP",
              attributes: Sequence[str] = ()) -> str:
    """An audio offer; ``proto`` RTP/SAVP with ``attributes`` ["crypto:1 ..."] for SRTP."""
    maps = {
        "0": "a=rtpmap:0 PCMU/8000",
        "8": "a=rtpmap:8 PCMA/8000",
        "18": "a=rtpmap:18 G729/8000",
        "101": "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15",
    }
    addrtype = "IP6" if ":" in host else "IP4"
    lines = [
        "v=0",
        f"o=e2e 1 1 IN {addrtype} {host}",
        "s=-",
        f"c=IN {addrtype} {host}",
        "t=0 0",
        f"m=audio {rtp_port} {proto} {pts}",
    ]
    lines += [maps[pt] for pt in pts.split() if pt in maps]
    lines += ["a=ptime:20", "a=sendrecv", *(f"a={a}" for a in attributes)]
    return "\r\n".join(lines) + "\r\n"


def status_of(data: bytes) -> int | None:
    m = re.match(rb"SIP/2\.0 (\d{3}) ", data)
    return int(m.group(1)) if m else None


def ack_for(invite: bytes, response: bytes) -> bytes:
    """The ACK of a non-2xx final response (RFC 3261 §17.1.1.3): the INVITE's Request-URI,
    Via (branch), From, Call-ID and CSeq number; To from the response (with its tag)."""
    req = invite.decode(errors="replace").split("\r\n\r\n", 1)[0].split("\r\n")
    resp_to = next((line for line in response.decode(errors="replace").split("\r\n")
                    if line.lower().startswith(("to:", "t:"))), None)  # fmt: skip
    out = ["ACK " + req[0].split(" ", 2)[1] + " SIP/2.0"]
    for line in req[1:]:
        name = line.split(":", 1)[0].strip().lower()
        if name in ("via", "v", "from", "f", "call-id", "i", "max-forwards"):
            out.append(line)
        elif name in ("to", "t"):
            out.append(resp_to or line)
        elif name == "cseq":
            out.append("CSeq: " + line.split(":", 1)[1].split()[0] + " ACK")
    out.append("Content-Length: 0")
    return ("\r\n".join(out) + "\r\n\r\n").encode()


def response_to(request: bytes, status: int, reason: str, to_tag: str = "e2e") -> bytes:
    """A UAS's response to `request` (RFC 3261 §8.2.6.2): its Via, From, Call-ID and CSeq
    lines, its To with `to_tag` added."""
    out = [f"SIP/2.0 {status} {reason}"]
    for line in request.decode(errors="replace").split("\r\n\r\n", 1)[0].split("\r\n")[1:]:
        name = line.split(":", 1)[0].strip().lower()
        if name in ("via", "v", "from", "f", "call-id", "i", "cseq"):
            out.append(line)
        elif name in ("to", "t"):
            out.append(line if ";tag=" in line else f"{line};tag={to_tag}")
    out.append("Content-Length: 0")
    return ("\r\n".join(out) + "\r\n\r\n").encode()


class SipSocket:
    """A bare UDP socket that sends requests and collects whatever comes back."""

    def __init__(self, host: str = LOCALHOST) -> None:
        self.sock = socket.socket(family(host), socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.addr: tuple[str, int] = self.sock.getsockname()[:2]

    def send(self, data: bytes, target: tuple[str, int]) -> None:
        self.sock.sendto(data, target)

    def recv_all(self, timeout: float, until_final: bool = True) -> list[bytes]:
        """Datagrams received within `timeout` s (stops early at a final response)."""
        out: list[bytes] = []
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                break
            data, _ = self.sock.recvfrom(65535)
            out.append(data)
            code = status_of(data)
            if until_final and code is not None and code >= 200:
                break
        return out

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> SipSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def options_ping(target: tuple[str, int], timeout: float = 0.5) -> int | None:
    """Send one OPTIONS; the status code of the final response, or None."""
    with SipSocket(LOCALHOST6 if ":" in target[0] else LOCALHOST) as s:
        s.send(sip_request("OPTIONS", target, s.addr), target)
        for data in s.recv_all(timeout):
            code = status_of(data)
            if code is not None and code >= 200:
                return code
    return None


# --------------------------------------------------------------------------- the switch


class SwitchProcess:
    """The real switch, started as `python -m switch.cli run ...` on free ports.

    Use as a context manager, or call start()/stop(). stop() sends SIGTERM and asserts
    that the process exits with code 0 within `stop_timeout` seconds.
    """

    def __init__(
        self,
        app_dir: Path | str | None,
        extra_args: Sequence[str] = (),
        *,
        package_dir: Path | None = None,
        workdir: Path | str | None = None,
        host: str = LOCALHOST,
        port: int | None = None,
        rtp_range: tuple[int, int] | None = None,
        log_level: str = "debug",
        ready_timeout: float = 10.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.app_dir = Path(app_dir) if app_dir is not None else None  # None: the bundled/installed apps
        self.package_dir = package_dir  # run the package installed there, not this checkout
        self.extra_args = list(extra_args)
        self.workdir = Path(workdir) if workdir else Path(
            __import__("tempfile").mkdtemp(prefix="switch-e2e-")
        )
        self.host = host
        self._picked_port = port is None  # ours to pick again if another process takes it
        self.port = port or free_udp_port(host)
        self.rtp_range = rtp_range or free_rtp_range()
        self.log_level = log_level
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "switch.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None

    @property
    def sip_addr(self) -> tuple[str, int]:
        """Where to reach it: a wildcard listen address ("::" is dual stack) on the loopback."""
        return ({"::": LOCALHOST6, "0.0.0.0": LOCALHOST}.get(self.host, self.host), self.port)

    @property
    def sip_target(self) -> str:
        """host:port, as SIPp wants its remote host ([::1]:port for IPv6)."""
        return hostport(*self.sip_addr)

    def command(self) -> list[str]:
        """`python -m switch.cli run ...`; E2E_SWITCH_CMD (e.g. "softswitch run") replaces
        the part before the flags, to test an installed build."""
        lo, hi = self.rtp_range
        prefix = os.environ.get("E2E_SWITCH_CMD")
        return [
            *(prefix.split() if prefix else [sys.executable, "-m", "switch.cli", "run"]),
            "--listen", hostport(self.host, self.port),
            "--rtp-ports", f"{lo}-{hi}",
            *(["--app", str(self.app_dir)] if self.app_dir is not None else []),
            "--data-dir", str(self.data_dir),
            "--log-level", self.log_level,
            # the control API's default port is one per host: tests that want it pass their own
            *([] if "--control" in self.extra_args else ["--control", "off"]),
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> SwitchProcess:
        """Start it; when a port picked a moment ago was taken meanwhile by another process
        on this host (other suites run here too), pick fresh ports and start again."""
        for attempt in range(3):
            try:
                return self._start()
            except AssertionError as e:
                if attempt == 2 or not self._picked_port or "address already in use" not in str(e).lower():
                    raise
            self.port = free_udp_port(self.host)
            self.rtp_range = free_rtp_range()
            if "--control" in self.extra_args:
                i = self.extra_args.index("--control") + 1
                if self.extra_args[i] != "off":
                    self.extra_args[i] = f"{self.extra_args[i].rsplit(':', 1)[0]}:{free_tcp_port()}"
        raise AssertionError("unreachable")

    def _start(self) -> SwitchProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        root = self.package_dir or REPO
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.command(), cwd=self.workdir if self.package_dir else REPO, env=env, stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                self.returncode = self.proc.returncode
                self._close_log()
                raise AssertionError(
                    f"switch exited with {self.proc.returncode} before answering OPTIONS\n"
                    + self.log_tail()
                )
            if options_ping(self.sip_addr, timeout=0.25) == 200:
                return
        self.kill()
        self.returncode = -9
        raise AssertionError(f"switch not ready (no 200 to OPTIONS) in {self.ready_timeout}s\n"
                             + self.log_tail())

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        self.returncode = self.proc.wait(timeout)
        return self.returncode

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float | None = None, expect_rc: int | None = 0) -> int:
        """SIGTERM, then assert a clean exit (code `expect_rc`) within `timeout` s."""
        assert self.proc is not None, "switch was never started"
        timeout = self.stop_timeout if timeout is None else timeout
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"switch did not exit within {timeout}s of SIGTERM\n" + self.log_tail()
            ) from None
        finally:
            self._close_log()
        self.returncode = rc
        if expect_rc is not None and rc != expect_rc:
            raise AssertionError(f"switch exited with {rc}, expected {expect_rc}\n" + self.log_tail())
        return rc

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self._close_log()

    def _close_log(self) -> None:
        with contextlib.suppress(Exception):
            self._log.close()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        tail = self.log_text().splitlines()[-lines:]
        return f"--- switch log tail ({self.log_path}) ---\n" + "\n".join(tail)

    def __enter__(self) -> SwitchProcess:
        return self.start()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self.proc is None or self.returncode is not None:
            return
        if exc_type is None:
            self.stop()
        else:  # don't mask the test's own failure
            try:
                self.stop()
            except AssertionError as e:
                print(e, file=sys.stderr)


# --------------------------------------------------------------------------- SIPp


@dataclass
class SipMessage:
    """One message from SIPp's -message_file."""

    direction: str  # "sent" or "received"
    time: float  # epoch seconds (SIPp's wall clock)
    text: str

    @property
    def first_line(self) -> str:
        return self.text.split("\n", 1)[0].strip()

    @property
    def status(self) -> int | None:
        m = re.match(r"SIP/2\.0 (\d{3})", self.first_line)
        return int(m.group(1)) if m else None

    @property
    def method(self) -> str | None:
        """Request method, or the CSeq method for a response."""
        if self.status is None:
            return self.first_line.split(" ", 1)[0]
        cseq = self.header("CSeq")
        return cseq.split()[-1] if cseq else None

    @property
    def cseq(self) -> int | None:
        cseq = self.header("CSeq")
        return int(cseq.split()[0]) if cseq else None

    def header(self, name: str) -> str | None:
        head = self.text.split("\n\n", 1)[0]
        compact = {"via": "v", "from": "f", "to": "t", "call-id": "i", "contact": "m",
                   "content-type": "c", "content-length": "l"}  # fmt: skip
        names = {name.lower(), compact.get(name.lower(), name.lower())}
        for line in head.split("\n")[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() in names:
                return v.strip()
        return None

    @property
    def body(self) -> str:
        parts = self.text.split("\n\n", 1)
        return parts[1].strip() if len(parts) == 2 else ""

    @property
    def to_tag(self) -> str | None:
        to = self.header("To") or ""
        m = re.search(r";\s*tag=([^;>\s]+)", to)
        return m.group(1) if m else None


_MSG_SEP = re.compile(
    r"^-{10,} (\d{4}-\d\d-\d\d)[ \t](\d\d:\d\d:\d\d\.\d+)\s*\n"
    r"\S+ message (sent|received)[^\n]*\n\n",
    re.M,
)


def parse_message_file(text: str) -> list[SipMessage]:
    out = []
    matches = list(_MSG_SEP.finditer(text))
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        when = _dt.datetime.strptime(f"{m.group(1)} {m.group(2)}", "%Y-%m-%d %H:%M:%S.%f")
        body = text[m.end():end].replace("\r\n", "\n").strip("\n") + "\n"
        out.append(SipMessage(m.group(3), when.timestamp(), body))
    return out


@dataclass
class SippResult:
    returncode: int
    scenario: str
    workdir: Path
    created: int = 0
    successful: int = 0
    failed: int = 0
    message_path: Path = field(default_factory=Path)
    log_path: Path = field(default_factory=Path)
    error_path: Path = field(default_factory=Path)
    screen_path: Path = field(default_factory=Path)
    stat_path: Path = field(default_factory=Path)
    stdout_path: Path = field(default_factory=Path)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.failed == 0 and self.successful == self.created

    def messages(self) -> list[SipMessage]:
        return parse_message_file(_read(self.message_path))

    def received(self, method: str | None = None, status: int | None = None) -> list[SipMessage]:
        return [m for m in self.messages() if m.direction == "received"
                and (method is None or m.method == method)
                and (status is None or m.status == status)]  # fmt: skip

    def sent(self, method: str | None = None) -> list[SipMessage]:
        return [m for m in self.messages() if m.direction == "sent"
                and (method is None or m.method == method)]  # fmt: skip

    def final_status(self, method: str = "INVITE", cseq: int = 1) -> int | None:
        """Status of the first final response received for (method, cseq)."""
        for m in self.received(method):
            if m.status is not None and m.status >= 200 and m.cseq == cseq:
                return m.status
        return None

    def statuses(self, method: str = "INVITE") -> list[int]:
        return [m.status for m in self.received(method) if m.status is not None]

    def log_text(self) -> str:
        return _read(self.log_path)

    def errors_text(self) -> str:
        return _read(self.error_path)

    def screen_text(self) -> str:
        return _read(self.screen_path)

    def describe(self, max_chars: int = 6000) -> str:
        """What to print when an assertion on this run fails."""
        msgs = _read(self.message_path)
        if len(msgs) > max_chars:
            msgs = "[...]\n" + msgs[-max_chars:]
        return (
            f"sipp {self.scenario}: rc={self.returncode} created={self.created} "
            f"ok={self.successful} failed={self.failed}\n"
            f"--- sipp errors ---\n{self.errors_text()[-2000:]}\n"
            f"--- sipp output (tail) ---\n{_read(self.stdout_path)[-1500:]}\n"
            f"--- sipp messages ---\n{msgs}"
        )


def _read(p: Path) -> str:
    try:
        return p.read_text(errors="replace")
    except (FileNotFoundError, IsADirectoryError):
        return ""


def scenario_path(scenario: str) -> Path:
    p = Path(scenario)
    if p.is_file():
        return p
    p = SCENARIOS / (scenario if scenario.endswith(".xml") else scenario + ".xml")
    if not p.is_file():
        raise FileNotFoundError(p)
    return p


class SippRun:
    """A SIPp process started in the background (see run_sipp for the arguments)."""

    def __init__(
        self,
        scenario: str,
        target: str,
        *,
        keys: dict[str, object] | None = None,
        calls: int = 1,
        rate: float | None = None,
        timeout: float = 30.0,
        service: str = "service",
        pause_ms: int | None = None,
        workdir: Path | str | None = None,
        extra_args: Sequence[str] = (),
        sip_port: int | None = None,
        local_ip: str = LOCALHOST,
        media_ip: str | None = None,
    ) -> None:
        self.scenario = scenario
        # A UAS must listen where the switch's --gateway points: the test picks the port.
        self.sip_port = sip_port or free_udp_port(local_ip)
        self.workdir = Path(workdir) if workdir else Path(
            __import__("tempfile").mkdtemp(prefix="sipp-e2e-")
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        stem = Path(scenario).stem.replace(":", "_") + "-" + uuid.uuid4().hex[:6]
        d = self.workdir
        self.paths = dict(
            message_path=d / f"{stem}.messages.log",
            log_path=d / f"{stem}.actions.log",
            error_path=d / f"{stem}.errors.log",
            screen_path=d / f"{stem}.screen.log",
            stat_path=d / f"{stem}.stat.csv",
        )
        self.stdout_path = d / f"{stem}.stdout"
        self.timeout = timeout
        if scenario.startswith("sn:"):
            scen_args = ["-sn", scenario[3:]]
        else:
            scen_args = ["-sf", str(scenario_path(scenario))]
        cmd = [SIPP, target, *scen_args,
               # local_ip ::1: SIP over IPv6; media_ip: the SDP's c= (IN IP6 for ::1), default local_ip
               "-i", local_ip, "-mi", media_ip or local_ip,
               "-p", str(self.sip_port), "-mp", str(sipp_media_port()),
               "-s", service, "-m", str(calls), "-nostdin",
               "-timeout", f"{timeout}s", "-timeout_error",
               "-max_retrans", "5",
               "-trace_msg", "-message_file", str(self.paths["message_path"]),
               "-trace_logs", "-log_file", str(self.paths["log_path"]),
               "-trace_err", "-error_file", str(self.paths["error_path"]),
               "-trace_screen", "-screen_file", str(self.paths["screen_path"]),
               "-trace_stat", "-stf", str(self.paths["stat_path"]), "-fd", "1"]  # fmt: skip
        if rate is not None:
            cmd += ["-r", str(rate)]
        if pause_ms is not None:
            cmd += ["-d", str(pause_ms)]
        # Scenarios put [rtpport] in their SDP: default to the discard port when the test
        # doesn't care where media goes.
        for k, v in {"rtpport": 9, **(keys or {})}.items():
            cmd += ["-key", str(k), str(v)]
        cmd += list(extra_args)
        self.cmd = cmd
        self._out = open(self.stdout_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=d, stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.started = time.time()

    def wait(self, timeout: float | None = None) -> SippResult:
        """Wait for SIPp to finish (its own -timeout plus a margin) and parse its files."""
        try:
            rc = self.proc.wait(self.timeout + 10 if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            rc = self.proc.wait(5)
        self._out.close()
        res = SippResult(rc, self.scenario, self.workdir, stdout_path=self.stdout_path, **self.paths)
        _fill_counts(res)
        return res

    def running(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        """The -log_file so far (SIPp writes <log> actions as they happen)."""
        return _read(self.paths["log_path"])

    def wait_log(self, pattern: str, timeout: float = 5.0, count: int = 1) -> list[re.Match[str]]:
        """Wait until `pattern` (a regex) has matched `count` times in the -log_file (e.g. a
        UAS's "offer m=audio P" line: where the switch wants the callee's RTP)."""
        deadline = time.monotonic() + timeout
        while True:
            found = list(re.finditer(pattern, self.log_text()))
            if len(found) >= count:
                return found
            if time.monotonic() >= deadline or not self.running():
                found = list(re.finditer(pattern, self.log_text()))
                if len(found) >= count:
                    return found
                raise AssertionError(
                    f"sipp {self.scenario}: {count} x /{pattern}/ not logged within {timeout}s "
                    f"(running={self.running()})\n--- log ---\n{self.log_text()[-2000:]}"
                    f"\n--- messages ---\n{_read(self.paths['message_path'])[-4000:]}"
                )
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGKILL a SIPp that is still running (e.g. a UAS whose calls the test is done with)."""
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)


def _fill_counts(res: SippResult) -> None:
    """Cumulative counters from the last row of the -trace_stat CSV, else the screen."""
    rows = list(csv.reader(_read(res.stat_path).splitlines(), delimiter=";"))
    if len(rows) >= 2:
        head, last = rows[0], rows[-1]
        col = {k: i for i, k in enumerate(head)}

        def get(name: str) -> int:
            i = col.get(name)
            try:
                return int(last[i]) if i is not None and i < len(last) else 0
            except ValueError:
                return 0

        res.created = get("OutgoingCall(C)") + get("IncomingCall(C)")
        res.successful = get("SuccessfulCall(C)")
        res.failed = get("FailedCall(C)")
    screen = res.screen_text()
    # The screen's final cumulative values are more recent than the last periodic dump.
    for label, attr in (("Successful call", "successful"), ("Failed call", "failed"),
                        ("Total Calls created", "created")):  # fmt: skip
        found = re.findall(rf"{label}\s*\|[^|\n]*\|\s*(\d+)", screen)
        if found:
            setattr(res, attr, int(found[-1]))


def run_sipp(scenario: str, target: str, **kw: Any) -> SippResult:
    """Run a scenario from sipp_scenarios/ (name or path; "sn:uac" for a built-in) against
    `target` ("host:port") and wait for it. The keyword arguments are SippRun's:

    keys: -key NAME VALUE pairs (e.g. {"rtpport": sink.port}); calls: -m; rate: -r calls/s;
    timeout: SIPp's global -timeout (it then fails, -timeout_error); service: -s (the
    Request-URI user); pause_ms: -d (the default <pause/>); workdir; extra_args;
    local_ip: -i (::1 for SIP over IPv6; the target then "[::1]:port"); media_ip: -mi.
    """
    return SippRun(scenario, target, **kw).wait()


# --------------------------------------------------------------------------- G.711


def _ulaw_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    mag = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(sign != 0, -mag, mag).astype(np.int16)


def _alaw_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    sign = a & 0x80
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    mag = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return np.where(sign != 0, mag, -mag).astype(np.int16)


ULAW_TO_LINEAR = _ulaw_table()
ALAW_TO_LINEAR = _alaw_table()


def g711_decode(payload: bytes, pt: int) -> np.ndarray:
    table = ULAW_TO_LINEAR if pt == 0 else ALAW_TO_LINEAR if pt == 8 else None
    if table is None:
        raise ValueError(f"PT {pt} is not G.711")
    return table[np.frombuffer(payload, dtype=np.uint8)]


def g711_encode(samples: np.ndarray, pt: int = 0) -> bytes:
    """Nearest-code encoder (a lookup, fine for test signals)."""
    table = ULAW_TO_LINEAR if pt == 0 else ALAW_TO_LINEAR
    order = np.argsort(table)
    sorted_vals = table[order].astype(np.int32)
    s = np.asarray(samples, dtype=np.int32)
    idx = np.clip(np.searchsorted(sorted_vals, s), 1, 255)
    left, right = sorted_vals[idx - 1], sorted_vals[idx]
    idx = np.where(np.abs(s - left) <= np.abs(right - s), idx - 1, idx)
    return order[idx].astype(np.uint8).tobytes()


def dbfs(samples: np.ndarray) -> float:
    """RMS level in dB relative to digital full scale (32768)."""
    if len(samples) == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(np.square(samples.astype(np.float64)))))
    return 20 * np.log10(rms / 32768.0) if rms > 0 else float("-inf")


def wav_duration(path: Path | str) -> float:
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / float(w.getframerate())


def tone_dbfs(level: float = 0.3) -> float:
    """The level of what ``write_tone_wav(level=...)`` writes, in dBFS (a sine's RMS is
    its peak over sqrt 2): -13.5 for the default 0.3."""
    return float(20 * np.log10(level / np.sqrt(2)))


def write_tone_wav(path: Path | str, seconds: float, freq: float = 440.0, level: float = 0.3,
                   rate: int = 8000) -> Path:  # fmt: skip
    t = np.arange(int(seconds * rate)) / rate
    pcm = (np.sin(2 * np.pi * freq * t) * level * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return Path(path)


# --------------------------------------------------------------------------- RTP


@dataclass
class RtpPacket:
    time: float  # time.time() at arrival
    mono: float  # time.monotonic() at arrival
    src: tuple[str, int]
    pt: int
    seq: int
    ts: int
    ssrc: int
    marker: bool
    payload: bytes
    # the kernel's receive timestamp (SO_TIMESTAMPNS, time.time() clock): when the packet
    # reached the socket, however late the sink's thread got to read it
    kernel_time: float | None = None


def parse_rtp(data: bytes) -> tuple[int, int, int, int, bool, bytes]:
    """(pt, seq, ts, ssrc, marker, payload); ValueError if it is not RTP v2."""
    if len(data) < 12:
        raise ValueError("shorter than an RTP header")
    b0, b1, seq, ts, ssrc = struct.unpack("!BBHII", data[:12])
    if b0 >> 6 != 2:
        raise ValueError("not RTP version 2")
    off = 12 + 4 * (b0 & 0x0F)
    if b0 & 0x10:  # header extension
        if len(data) < off + 4:
            raise ValueError("truncated extension")
        off += 4 + 4 * struct.unpack("!H", data[off + 2:off + 4])[0]
    end = len(data)
    if b0 & 0x20 and end > off:  # padding
        end -= data[-1]
    return b1 & 0x7F, seq, ts, ssrc, bool(b1 & 0x80), data[off:end]


def build_rtp(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF,
                       ts & 0xFFFFFFFF, ssrc) + payload  # fmt: skip


DTMF_EVENTS = "0123456789*#ABCD"
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux: struct timespec per datagram


def kernel_rx_time(ancdata: Sequence[tuple[int, int, bytes]]) -> float | None:
    """The SO_TIMESTAMPNS receive time from recvmsg()'s ancillary data, if present."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            sec, nsec = struct.unpack("qq", data[:16])
            return sec + nsec / 1e9
    return None


class RtpSink:
    """The caller's RTP port: records every packet that arrives, and can send RTP from the
    same socket (symmetric RTP: the switch should latch onto this source)."""

    def __init__(self, host: str = LOCALHOST, port: int = 0) -> None:
        self.sock = socket.socket(family(host), socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.bind((host, port))
        self.host, self.port = self.sock.getsockname()[:2]
        self.packets: list[RtpPacket] = []
        self.junk: list[bytes] = []  # datagrams that were not RTP (e.g. RTCP)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rtp-sink-{self.port}", daemon=True)
        self._send_seq = random.randrange(1 << 16)
        self._send_ts = random.randrange(1 << 32)
        self.send_ssrc = random.randrange(1, 1 << 32)

    def start(self) -> RtpSink:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)
        self.sock.close()

    def __enter__(self) -> RtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            r, _, _ = select.select([self.sock], [], [], 0.05)
            if not r:
                continue
            try:
                data, anc, _, src = self.sock.recvmsg(65535, 64)
            except OSError:
                return
            now, mono = time.time(), time.monotonic()
            ktime = kernel_rx_time(anc)
            try:
                pt, seq, ts, ssrc, marker, payload = parse_rtp(data)
            except ValueError:
                self.junk.append(data)
                continue
            if 72 <= pt <= 76:  # RTCP (RFC 5761 range) sent to the RTP port
                self.junk.append(data)
                continue
            with self._lock:
                self.packets.append(RtpPacket(now, mono, src[:2], pt, seq, ts, ssrc, marker, payload, ktime))

    # ---- sending
    def send(self, dest: tuple[str, int], payload: bytes, pt: int = 0, marker: bool = False,
             samples: int | None = None) -> None:  # fmt: skip
        self.sock.sendto(build_rtp(pt, self._send_seq, self._send_ts, self.send_ssrc, payload, marker), dest)
        self._send_seq += 1
        self._send_ts += len(payload) if samples is None else samples

    def send_stream(self, dest: tuple[str, int], seconds: float, pt: int = 0,
                    samples: np.ndarray | None = None) -> None:  # fmt: skip
        """Send `seconds` of 20 ms G.711 frames, paced in real time (blocks)."""
        n = int(seconds * 50)
        if samples is None:
            samples = np.zeros(160 * n, dtype=np.int16)
        data = g711_encode(samples, pt)
        t0 = time.monotonic()
        for i in range(n):
            self.send(dest, data[160 * i:160 * (i + 1)] or data[:160], pt=pt, marker=(i == 0))
            delay = t0 + (i + 1) * 0.02 - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def send_frames(self, dest: tuple[str, int], payloads: Sequence[bytes], pt: int = 0) -> float:
        """Send one payload per 20 ms frame (160 samples each), paced in real time (blocks);
        returns the wall time the first frame left."""
        t0, start = time.monotonic(), time.time()
        for i, payload in enumerate(payloads):
            self.send(dest, payload, pt=pt, marker=(i == 0), samples=160)
            delay = t0 + (i + 1) * 0.02 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        return start

    def send_dtmf(self, dest: tuple[str, int], digits: str, pt: int = 101, duration_ms: int = 100,
                  gap_ms: int = 100, volume: int = 10) -> None:  # fmt: skip
        """RFC 4733 §2.5 events, paced in real time (blocks): per digit, one packet every
        20 ms with the event's start timestamp and a growing duration (marker on the first),
        then the end packet sent three times; `gap_ms` of nothing between digits."""
        for digit in digits:
            event = DTMF_EVENTS.index(digit.upper())
            ts = self._send_ts
            steps = max(1, duration_ms // 20)
            for i in range(1, steps + 1):
                end = i == steps
                body = struct.pack("!BBH", event, (0x80 if end else 0) | (volume & 0x3F), 160 * i)
                for _ in range(3 if end else 1):
                    self.sock.sendto(build_rtp(pt, self._send_seq, ts, self.send_ssrc, body,
                                               marker=(i == 1)), dest)  # fmt: skip
                    self._send_seq += 1
                time.sleep(0.02)
            self._send_ts += 160 * steps + 8 * gap_ms
            time.sleep(gap_ms / 1000)

    # ---- queries
    def snapshot(self, pt: int | None = None, since: float | None = None,
                 until: float | None = None) -> list[RtpPacket]:  # fmt: skip
        """Packets so far (optionally of one PT, arrived within [since, until] wall time)."""
        with self._lock:
            pkts = list(self.packets)
        return [p for p in pkts if (pt is None or p.pt == pt)
                and (since is None or p.time >= since)
                and (until is None or p.time <= until)]  # fmt: skip

    def count(self, pt: int | None = None) -> int:
        return len(self.snapshot(pt))

    def wait_for(self, n: int = 1, timeout: float = 5.0, pt: int | None = None) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count(pt) >= n:
                return True
            time.sleep(0.01)
        return self.count(pt) >= n

    def wait_quiet(self, quiet: float = 0.3, timeout: float = 10.0) -> bool:
        """Wait until no packet has arrived for `quiet` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pkts = self.snapshot()
            last = pkts[-1].mono if pkts else 0.0
            if time.monotonic() - last >= quiet:
                return True
            time.sleep(0.02)
        return False

    def ssrcs(self, pt: int | None = None) -> set[int]:
        return {p.ssrc for p in self.snapshot(pt)}

    def payload_types(self) -> set[int]:
        return {p.pt for p in self.snapshot()}

    def sources(self) -> set[tuple[str, int]]:
        return {p.src for p in self.snapshot()}

    @staticmethod
    def seq_gaps(pkts: Sequence[RtpPacket]) -> list[tuple[int, int]]:
        """(previous seq, next seq) wherever a packet's seq is not previous+1 (mod 2^16)."""
        return [(a.seq, b.seq) for a, b in zip(pkts, pkts[1:]) if (a.seq + 1) & 0xFFFF != b.seq]

    @staticmethod
    def interarrival_jitter_ms(pkts: Sequence[RtpPacket], clock: int = 8000) -> float:
        """RFC 3550 §6.4.1 interarrival jitter estimate, in ms."""
        j = 0.0
        for a, b in zip(pkts, pkts[1:]):
            d = (b.mono - a.mono) - ((b.ts - a.ts) & 0xFFFFFFFF) / clock
            j += (abs(d) - j) / 16
        return j * 1000

    @staticmethod
    def max_gap_ms(pkts: Sequence[RtpPacket]) -> float:
        return max(((b.mono - a.mono) * 1000 for a, b in zip(pkts, pkts[1:])), default=0.0)

    def audio(self, pt: int | None = None) -> np.ndarray:
        """Decoded G.711 samples of all packets of `pt` (default: the first G.711 PT seen)."""
        pkts = self.snapshot()
        if pt is None:
            pt = next((p.pt for p in pkts if p.pt in (0, 8)), 0)
        chunks = [g711_decode(p.payload, pt) for p in pkts if p.pt == pt]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

    def level_dbfs(self, pt: int | None = None) -> float:
        return dbfs(self.audio(pt))

    def dtmf_digits(self, pt: int = 101) -> str:
        """RFC 4733 events, one digit per event (events are keyed by their RTP timestamp)."""
        digits: list[str] = []
        seen: set[int] = set()
        for p in self.snapshot(pt):
            if len(p.payload) < 4 or p.ts in seen:
                continue
            seen.add(p.ts)
            ev = p.payload[0]
            digits.append(DTMF_EVENTS[ev] if ev < len(DTMF_EVENTS) else "?")
        return "".join(digits)


# --------------------------------------------------------------------------- apps


def prepare_app(name_or_dir: str | Path, dest_root: Path) -> Path:
    """Copy an app (tests/e2e/apps/NAME, js_apps/NAME, or a path) into dest_root/NAME and
    add the audio the test apps play: greeting.wav (from js_apps/greeting), tone.wav (1 s
    440 Hz) and short.wav (0.5 s 440 Hz)."""
    src = Path(name_or_dir)
    if not src.is_dir():
        for root in (TEST_APPS, JS_APPS):
            if (root / str(name_or_dir)).is_dir():
                src = root / str(name_or_dir)
                break
        else:
            raise FileNotFoundError(f"no app named {name_or_dir}")
    dest = dest_root / src.name
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest)
    greeting = JS_APPS / "greeting" / "greeting.wav"
    if not (dest / "greeting.wav").exists() and greeting.exists():
        shutil.copy(greeting, dest / "greeting.wav")
    if not (dest / "tone.wav").exists():
        write_tone_wav(dest / "tone.wav", 1.0)
    if not (dest / "short.wav").exists():
        write_tone_wav(dest / "short.wav", 0.5)
    return dest


def switch_available() -> bool:
    return (REPO / "switch" / "cli.py").is_file() or (REPO / "switch" / "cli" / "__init__.py").is_file()


@contextlib.contextmanager
def rtp_sink() -> Iterator[RtpSink]:
    s = RtpSink().start()
    try:
        yield s
    finally:
        s.stop()


# --------------------------------------------------------------------------- a raw caller


class RawCall:
    """A minimal UAC over a bare socket, for what a SIPp scenario cannot do mid-call
    (e.g. learn the switch's media port, then send RTP there from another socket)."""

    def __init__(self, target: tuple[str, int], sdp_port: int, *, user: str = "service",
                 pts: str = "0 101", sdp: str | None = None) -> None:  # fmt: skip
        self.target = target
        self.sock = SipSocket()
        self.call_id = uuid.uuid4().hex + "@" + LOCALHOST
        self.from_tag = uuid.uuid4().hex[:8]
        self.branch = "z9hG4bK-" + uuid.uuid4().hex[:16]
        self.user = user
        self.sdp = sdp if sdp is not None else sdp_offer(sdp_port, pts)
        self.final: SipMessage | None = None
        self.cseq = 1

    def _headers(self, method: str, cseq: int, branch: str, to_tag: str | None) -> list[str]:
        lh, lp = self.sock.addr
        h, p = self.target
        to = f"<sip:{self.user}@{h}:{p}>" + (f";tag={to_tag}" if to_tag else "")
        return [
            f"Via: SIP/2.0/UDP {lh}:{lp};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:e2e@{lh}:{lp}>;tag={self.from_tag}",
            f"To: {to}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:e2e@{lh}:{lp}>",
        ]

    def _send(self, method: str, ruri: str, cseq: int, branch: str, to_tag: str | None,
              body: str = "") -> None:  # fmt: skip
        lines = [f"{method} {ruri} SIP/2.0", *self._headers(method, cseq, branch, to_tag)]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        self.sock.send(("\r\n".join(lines) + "\r\n\r\n" + body).encode(), self.target)

    @staticmethod
    def _msg(data: bytes) -> SipMessage:
        return SipMessage("received", time.time(), data.decode(errors="replace").replace("\r\n", "\n"))

    def invite(self, timeout: float = 5.0) -> SipMessage:
        h, p = self.target
        self._send("INVITE", f"sip:{self.user}@{h}:{p}", 1, self.branch, None, self.sdp)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for data in self.sock.recv_all(deadline - time.monotonic()):
                m = self._msg(data)
                if m.status is not None and m.status >= 200:
                    self.final = m
                    return m
        raise AssertionError("no final response to the INVITE")

    @property
    def remote_target(self) -> str:
        assert self.final is not None
        contact = self.final.header("Contact") or ""
        m = re.search(r"<([^>]+)>", contact)
        return m.group(1) if m else contact.split(";")[0]

    def ack(self) -> None:
        assert self.final is not None and self.final.status == 200
        self._send("ACK", self.remote_target, 1, "z9hG4bK-" + uuid.uuid4().hex[:16],
                   self.final.to_tag)  # fmt: skip

    def reinvite(self, sdp: str, timeout: float = 5.0) -> SipMessage:
        """A re-INVITE with a new offer (RFC 3261 §14.1); its 2xx is ACKed. Returns the
        final response (``self.final`` stays the dialog's first 200)."""
        assert self.final is not None
        self.cseq += 1
        self._send("INVITE", self.remote_target, self.cseq, "z9hG4bK-" + uuid.uuid4().hex[:16],
                   self.final.to_tag, sdp)  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for data in self.sock.recv_all(deadline - time.monotonic()):
                m = self._msg(data)
                if m.status is not None and m.status >= 200 and m.method == "INVITE" and m.cseq == self.cseq:
                    if m.status == 200:
                        self._send("ACK", self.remote_target, self.cseq, "z9hG4bK-" + uuid.uuid4().hex[:16],
                                   self.final.to_tag)  # fmt: skip
                    return m
        raise AssertionError("no final response to the re-INVITE")

    def bye(self, timeout: float = 3.0) -> int | None:
        assert self.final is not None
        self.cseq += 1
        self._send("BYE", self.remote_target, self.cseq, "z9hG4bK-" + uuid.uuid4().hex[:16],
                   self.final.to_tag)  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for data in self.sock.recv_all(deadline - time.monotonic()):
                m = self._msg(data)
                if m.status is not None and m.status >= 200 and m.method == "BYE":
                    return m.status
        return None

    def info(self, body: str, content_type: str = "application/dtmf-relay", timeout: float = 2.0) -> int | None:
        """An in-dialog INFO (e.g. SIP INFO DTMF); returns the status of its final response."""
        assert self.final is not None
        self.cseq += 1
        lines = [f"INFO {self.remote_target} SIP/2.0",
                 *self._headers("INFO", self.cseq, "z9hG4bK-" + uuid.uuid4().hex[:16], self.final.to_tag),
                 f"Content-Type: {content_type}", f"Content-Length: {len(body.encode())}"]
        self.sock.send(("\r\n".join(lines) + "\r\n\r\n" + body).encode(), self.target)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for data in self.sock.recv_all(deadline - time.monotonic()):
                m = self._msg(data)
                if m.status is not None and m.status >= 200 and m.method == "INFO":
                    return m.status
        return None

    def media_addr(self) -> tuple[str, int]:
        """The switch's RTP address from its answer."""
        assert self.final is not None
        body = self.final.body
        c = re.search(r"^c=IN IP4 (\S+)", body, re.M)
        m = re.search(r"^m=audio (\d+)", body, re.M)
        assert c and m, f"no c=/m= in\n{body}"
        return c.group(1), int(m.group(1))

    def close(self) -> None:
        self.sock.close()


# --------------------------------------------------------------------------- bridged calls
# (tests/e2e/test_bridge.py, test_phone.py): the switch with --gateway, a SIPp callee on a
# port of its own, the RTP addresses the SIPp sides logged, a clean stop.

OFFER = r"offer m=audio (\d+) RTP/AVP([ 0-9]*) c=IN IP[46] ([0-9a-fA-F.:]+)"  # logged by uas_*.xml
ANSWER = r"answer m=audio (\d+) RTP/AVP([ 0-9]*) c=IN IP[46] ([0-9a-fA-F.:]+)"  # logged by uac_*.xml
STOP_LINE = re.compile(r"stopping: (\d+) live calls, (\d+) tasks")


def start_bridge_switch(switch: Callable[..., SwitchProcess], app: Path, gateway_port: int,
                        *extra: str, gateway_host: str = LOCALHOST, gateway_params: str = "",
                        **kw: object) -> SwitchProcess:  # fmt: skip
    """The switch (via the `switch` fixture) with --gateway at a callee on 127.0.0.1 (or
    `gateway_host`; `gateway_params` after it: ";transport=tls") and --sip-t1 0.05 (Timer B
    3.2 s); `kw` goes to SwitchProcess (e.g. rtp_range: a bridged call takes two legs, 4
    ports; host: where it listens)."""
    for attempt in range(3):
        control = ["--control", f"{LOCALHOST}:{free_tcp_port()}"] if "--control" not in extra else []
        try:
            return switch(app, ["--gateway", f"sip:{hostport(gateway_host, gateway_port)}{gateway_params}",
                                "--sip-t1", "0.05",
                                *control, *extra], **kw)  # fmt: skip
        except AssertionError as e:
            # A port picked a moment ago was taken meanwhile (other suites run on this
            # host too): pick again. Anything else is the switch's failure.
            if attempt == 2 or not re.search(r"could not bind|cannot listen|address already in use", str(e)):
                raise
    raise AssertionError("unreachable")


def free_tcp_port(host: str = LOCALHOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def control_status(sw: SwitchProcess, timeout: float = 1.0) -> dict[str, object] | None:
    """GET /status from the switch's control API (docs/control-api.md), if it was started
    with --control HOST:PORT; None when there is none or it does not answer."""
    import json
    import urllib.request

    args = sw.command()
    if "--control" not in args:
        return None
    addr = args[args.index("--control") + 1]
    if addr == "off":
        return None
    try:
        with urllib.request.urlopen(f"http://{addr}/status", timeout=timeout) as r:
            return dict(json.loads(r.read()))
    except (OSError, ValueError):
        return None


def start_uas(sipp_bg: Callable[..., SippRun], scenario: str, *, calls: int = 1,
              rtpport: int = 9, pause_ms: int | None = None, timeout: float = 20,
              local_ip: str = LOCALHOST) -> SippRun:  # fmt: skip
    """A SIPp callee listening on a port of its own (the switch's --gateway points there)."""
    uas = sipp_bg(scenario, hostport(local_ip, 9), sip_port=free_udp_port(local_ip), calls=calls,
                  keys={"rtpport": rtpport}, pause_ms=pause_ms, timeout=timeout, local_ip=local_ip)  # fmt: skip
    time.sleep(0.15)  # let it bind before the switch sends an INVITE there
    assert uas.running(), uas.wait(1).describe()
    return uas


def media_dest(run: SippRun, pattern: str, timeout: float = 5.0) -> tuple[tuple[str, int], list[int]]:
    """The switch's RTP address and payload types from the SDP a SIPp side logged."""
    m = run.wait_log(pattern, timeout)[0]
    return (m.group(3), int(m.group(1))), [int(x) for x in m.group(2).split()]


def _left_behind(status: dict[str, Any]) -> tuple[Any, ...]:
    """What a switch with no calls must hold none of: calls, legs, tasks, RTP sockets."""
    return (status.get("live_calls"), status.get("live_legs"), status.get("live_tasks"),
            status.get("media", {}).get("rtp_ports_in_use"))


def stop_clean(sw: SwitchProcess, settle: float = 3.0) -> None:
    """Assert the switch holds nothing of a call once the calls are over: its control
    API's /status must reach 0 live calls, legs, tasks and RTP ports within `settle` s
    (without a control API: wait `settle`/5 s), and at SIGTERM it must log
    "stopping: 0 live calls, 0 tasks"."""
    deadline = time.monotonic() + settle
    status = control_status(sw)
    if status is None:
        time.sleep(settle / 5)  # the last transactions (BYE/200, ACK) and task ends
    while status is not None and _left_behind(status) != (0, 0, 0, 0):
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
        status = control_status(sw)
    sw.stop()
    if status is not None:
        assert _left_behind(status) == (0, 0, 0, 0), \
            f"GET /status {settle}s after the calls: {status}\n" + sw.log_tail()  # fmt: skip
    found = STOP_LINE.findall(sw.log_text())
    assert found, "no 'stopping: N live calls, M tasks' line\n" + sw.log_tail()
    assert found[-1] == ("0", "0"), f"left behind: {found[-1][0]} calls, {found[-1][1]} tasks\n" + sw.log_tail()


def tone(seconds: float, freq: float = 1000.0, level: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * 8000)) / 8000
    return (np.sin(2 * np.pi * freq * t) * level * 32767).astype(np.int16)


def voiced_audio(sink: RtpSink, pt: int, floor_dbfs: float = -50) -> np.ndarray:
    """The decoded samples of `pt` frames louder than `floor_dbfs` (drops silence the
    switch may send before or after the relayed audio)."""
    chunks = [g711_decode(p.payload, pt) for p in sink.snapshot(pt)]
    return np.concatenate([c for c in chunks if dbfs(c) > floor_dbfs] or [np.zeros(0, np.int16)])
