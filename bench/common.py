"""Shared by the benchmarks: the switch process, SIPp load runs, /proc readings.

The switch is started exactly as the e2e tests start it (tests/e2e/harness.py), so a
benchmark measures the real process on loopback; SIPp runs without message tracing so
it is not the bottleneck.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.e2e.harness import SIPP, SwitchProcess, free_udp_port  # noqa: E402

APPS = Path(__file__).resolve().parent / "apps"
CLK_TCK = 100


def children(pid: int) -> list[int]:
    """The switch's JS worker processes (its direct children)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return sorted(kids)


def own_cpu_seconds(pid: int) -> float:
    times = own_times(pid)
    return times.user + times.system


def cpu_seconds(pid: int) -> float:
    """CPU time of the switch and its JS workers: everything a call costs."""
    return sum(own_cpu_seconds(p) for p in [pid, *children(pid)])


def _proc_numbers(path: str, fields: tuple[str, ...]) -> list[int]:
    """The figures (kB, or plain counts) of ``fields`` in a /proc file of ``Name:  1234 kB``
    lines, read once; 0 for each if the process is gone."""
    try:
        text = Path(path).read_text()
    except OSError:
        return [0] * len(fields)
    found = dict.fromkeys(fields, 0)
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in found:
            found[name] = int(rest.split()[0])
    return [found[f] for f in fields]


def _proc_kib(path: str, field: str) -> int:
    """The kB figure of ``field`` in a /proc file (``_proc_numbers``)."""
    return _proc_numbers(path, (field,))[0]


def own_rss_kib(pid: int, field: str = "VmRSS") -> int:
    return _proc_kib(f"/proc/{pid}/status", field)


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """RSS of the switch plus its JS workers (VmHWM: the sum of each one's peak)."""
    return sum(own_rss_kib(p, field) for p in [pid, *children(pid)])


def own_pss_kib(pid: int) -> int:
    """Proportional set size: the process's private pages plus its share of the pages it
    shares (the interpreter's and the libraries' code, mapped by the switch and every
    worker). A sum of RSS counts each shared page once per process that maps it; a sum of
    PSS counts it once in all, which is what the group really takes from the host."""
    return _proc_kib(f"/proc/{pid}/smaps_rollup", "Pss")


def pss_kib(pid: int) -> int:
    """PSS of the switch plus its JS workers (see own_pss_kib)."""
    return sum(own_pss_kib(p) for p in [pid, *children(pid)])


@dataclass
class LoadResult:
    successful: int
    failed: int
    seconds: float


def sipp_load(target: str, *, rate: float, calls: int, hold_ms: int, limit: int,
              timeout: float, extra: list[str] | None = None, scenario: str | None = "uac") -> LoadResult:
    """Run a SIPp caller (built-in ``scenario``, or ``-sf FILE`` in ``extra``) at ``rate``
    calls/s; count successful and failed calls."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-sipp-"))
    screen = workdir / "screen.txt"
    cmd = [SIPP, *(["-sn", scenario] if scenario else []), target, "-r", str(rate), "-m", str(calls), "-d", str(hold_ms),
           "-l", str(limit), "-i", "127.0.0.1", "-p", str(free_udp_port()), "-nostdin",
           "-timeout", f"{int(timeout)}s", "-trace_screen", "-screen_file", str(screen),
           "-max_socket", "5000", *(extra or [])]
    start = time.monotonic()
    try:
        subprocess.run(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=timeout + 30)
    except subprocess.TimeoutExpired:  # SIPp itself wedged under overload: count what it saw
        pass
    elapsed = time.monotonic() - start
    text = screen.read_text(errors="replace") if screen.exists() else ""
    return LoadResult(_count(text, "Successful call"), _count(text, "Failed call"), elapsed)


def _count(screen: str, label: str) -> int:
    found = re.findall(rf"{label}\s*\|\s*\d+\s*\|\s*(\d+)", screen)
    return int(found[-1]) if found else 0


@dataclass
class ProcTimes:
    """One process's (or a group's summed) CPU seconds, user and system apart, and its
    context switches: voluntary (it slept: one per wake-up) and involuntary (preempted)."""
    user: float = 0.0
    system: float = 0.0
    voluntary: int = 0
    involuntary: int = 0

    def __add__(self, other: ProcTimes) -> ProcTimes:
        return ProcTimes(self.user + other.user, self.system + other.system,
                         self.voluntary + other.voluntary, self.involuntary + other.involuntary)

    def __sub__(self, other: ProcTimes) -> ProcTimes:
        return ProcTimes(self.user - other.user, self.system - other.system,
                         self.voluntary - other.voluntary, self.involuntary - other.involuntary)


def own_times(pid: int) -> ProcTimes:
    """User/system seconds (/proc/PID/stat fields 14-15) and context switches
    (/proc/PID/status) of one process; zeros if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return ProcTimes()
    switches = _proc_numbers(f"/proc/{pid}/status", ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"))
    return ProcTimes(int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK, *switches)


def split_times(pid: int) -> dict[str, ProcTimes]:
    """``own_times`` of the switch process itself and of its JS workers (summed), apart."""
    workers = ProcTimes()
    for child in children(pid):
        workers = workers + own_times(child)
    return {"switch": own_times(pid), "workers": workers}


def host_ticks() -> tuple[int, int]:
    """(steal, all) CPU ticks of the machine so far (/proc/stat): on a virtual machine,
    steal is time its vCPUs were ready to run but the hypervisor ran something else.
    The share over a run says how far its figures are the host's rather than ours."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def steal_percent(before: tuple[int, int], after: tuple[int, int]) -> float:
    return 100 * (after[0] - before[0]) / max(1, after[1] - before[1])


def split_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of the switch process itself and of its JS workers, apart."""
    return {who: t.user + t.system for who, t in split_times(pid).items()}


def start_switch(app: str, extra: list[str] | None = None) -> SwitchProcess:
    return SwitchProcess(APPS / app, ["--max-calls", "20000", *(extra or [])], log_level="warning",
                         rtp_range=(20000, 29999)).start()


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
