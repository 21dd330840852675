"""A real DNS server for the RFC 3263 tests: Debian's dnsmasq on a free loopback port,
authoritative for the zone ``test`` (RFC 6761 §6.2: names under .test are never real), with
the NAPTR, SRV and A records a test gives it, and its query log to assert what was asked.
scripts/setup.sh installs it (dnsmasq-base)."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import dns.exception
import dns.resolver

from .harness import LOCALHOST

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
READY = "ready.test"  # asked until dnsmasq answers (NXDOMAIN: it is up and authoritative)


def dnsmasq_available() -> bool:
    return Path(DNSMASQ).is_file()


def _free_port() -> int:
    """A port free for UDP and TCP both (dnsmasq listens on both)."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((LOCALHOST, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((LOCALHOST, port))
                except OSError:
                    continue
                return port
    raise AssertionError("no port free for UDP and TCP")


class DnsServer:
    """``DnsServer(workdir, srv=[...], naptr=[...], hosts=[...]).start()``; records as
    dnsmasq writes them: srv ``"_sip._udp.gw.test,gw1.test,5071,10,0"`` (name, target,
    port, priority, weight), naptr ``"gw.test,10,50,S,SIP+D2U,,_sip._udp.gw.test"``,
    hosts ``"gw1.test,127.0.0.1"``."""

    def __init__(self, workdir: Path, *, srv: Sequence[str] = (), naptr: Sequence[str] = (),
                 hosts: Sequence[str] = (), ttl: int = 30) -> None:
        self.workdir = workdir
        self.srv, self.naptr, self.hosts, self.ttl = srv, naptr, hosts, ttl
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "dnsmasq.log"

    @property
    def address(self) -> str:
        """As the switch's dns_servers wants it."""
        return f"{LOCALHOST}:{self.port}"

    def start(self) -> DnsServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            self.port = _free_port()
            args = [DNSMASQ, "-k", f"--port={self.port}", f"--listen-address={LOCALHOST}", "--bind-interfaces",
                    "--no-resolv", "--no-hosts", "--conf-file=/dev/null", "--pid-file=", f"--user={getpass.getuser()}",
                    "--local=/test/", f"--local-ttl={self.ttl}", "--log-queries", "--log-facility=-",
                    *(f"--srv-host={r}" for r in self.srv), *(f"--naptr-record={r}" for r in self.naptr),
                    *(f"--host-record={r}" for r in self.hosts)]
            with self.log.open("wb") as out:
                self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
            if self._ready():
                return self
            self.stop()
        raise AssertionError("dnsmasq did not start:\n" + self.log.read_text(errors="replace"))

    def _ready(self, timeout: float = 3.0) -> bool:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [LOCALHOST]
        resolver.port = self.port
        resolver.lifetime = 0.3
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                resolver.resolve(READY + ".", "A")
            except dns.resolver.NXDOMAIN:
                return True  # it answers, authoritatively
            except dns.exception.DNSException:
                time.sleep(0.05)
        return False

    def queries(self) -> list[tuple[str, str]]:
        """(type, name) of every query it was asked, in order (our readiness probe aside)."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            _, _, rest = line.partition(": query[")
            if rest:
                rdtype, _, tail = rest.partition("] ")
                name = tail.split(" from ")[0]
                if name != READY:
                    out.append((rdtype, name))
        return out

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
