"""Safe on a real network (issue 9): who may call, who may dial out, throttled abuse,
tried against the real switch as an operator (and an attacker) would.

Every test plays callers from other loopback addresses (SIPp `-i 127.0.0.N`), so the
switch's trust rules see real source addresses: with the default `trust_loopback = true`
only 127.0.0.1 and ::1 are "local"; 127.0.0.2 and up are strangers unless a trunk lists
them. What is checked is what a user sees: SIP statuses, the audio, the app's own log of
`PendingRequestData('X-Softswitch-Caller')`, `GET /status` and `/calls`, the `SECURITY`
log lines (and that the README's fail2ban filter matches them), and what sipvicious's
svmap, svwar and svcrack can learn.
"""

from __future__ import annotations

import json
import re
import select
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .harness import (
    LOCALHOST,
    REPO,
    SO_TIMESTAMPNS,
    RtpSink,
    SippResult,
    SipSocket,
    SwitchProcess,
    ack_for,
    control_status,
    free_tcp_port,
    kernel_rx_time,
    sdp_offer,
    sip_request,
    start_bridge_switch,
    start_uas,
    status_of,
    stop_clean,
)

pytestmark = pytest.mark.e2e

STRANGER = "127.0.0.2"  # not 127.0.0.1: loopback trust covers only 127.0.0.1 and ::1
TRUNK_IP = "127.0.0.2"
PHONE_IP = "127.0.0.3"  # where the users' phones call from
SECURITY_LOG = Path(REPO) / "switch" / "security" / "log.py"
README = Path(REPO) / "README.md"

# fail2ban's <HOST> (fail2ban 1.0 server/failregex.py R_HOST: an IPv4 address, optionally
# IPv4-mapped, an IPv6 address, or a host name), with the address captured as `host`.
F2B_HOST = r"(?:::f{4,6}:)?(?P<host>\d{1,3}(?:\.\d{1,3}){3}|[0-9a-fA-F:]*:[0-9a-fA-F:.]+|[\w\-.^_]*\w)"
# A log file's line as fail2ban's failregex sees it: its date detector (the ISO 8601
# template, anchored at the line start) cuts the time stamp out first.
F2B_FILE_DATE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:[.,]\d+)?(?:\s*Z)?")


# --------------------------------------------------------------------------- helpers


def from_ip(ip: str) -> list[str]:
    """SIPp arguments for a caller on another loopback address (the later -i wins)."""
    return ["-i", ip, "-mi", ip]


def config_file(tmp_path: Path, text: str, name: str = "switch.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def security_lines(sw: SwitchProcess, event: str | None = None, source: str | None = None) -> list[str]:
    """The switch's `SECURITY <event> source=<ip> ...` log lines."""
    lines = [line for line in sw.log_text().splitlines() if " SECURITY " in line]
    if event is not None:
        lines = [line for line in lines if f" SECURITY {event} " in line]
    if source is not None:
        lines = [line for line in lines if f" source={source} " in line or line.endswith(f" source={source}")]
    return lines


def wait_for(predicate: Callable[[], object], timeout: float = 3.0) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(0.05)


def control_get(sw: SwitchProcess, path: str) -> dict[str, object]:
    args = sw.command()
    addr = args[args.index("--control") + 1]
    with urllib.request.urlopen(f"http://{addr}{path}", timeout=2) as r:
        return dict(json.loads(r.read()))


def with_control(*args: str) -> list[str]:
    return [*args, "--control", f"{LOCALHOST}:{free_tcp_port()}"]


def statuses(res: SippResult, cseq: int) -> list[int]:
    return [m.status for m in res.received("INVITE") if m.status is not None and m.cseq == cseq]


def app_callers(sw: SwitchProcess) -> list[str]:
    """What the log_caller app logged: PendingRequestData('X-Softswitch-Caller') per call."""
    return re.findall(r"task\[\d+ [^\]]*\] caller=(\S+)", sw.log_text())


def readme_failregex() -> str:
    """The failregex of the filter file the README's Security section gives."""
    text = README.read_text()
    section = text[text.index("## Security"):]
    block = section[section.index("/etc/fail2ban/filter.d/softswitch.conf"):]
    return re.search(r"^failregex\s*=\s*(.+)$", block, re.M).group(1).strip()  # type: ignore[union-attr]


def security_log_failregex() -> str:
    """The sample failregex in switch/security/log.py's docstring."""
    text = SECURITY_LOG.read_text()
    found = re.search(r"^\s*failregex\s*=\s*(.+)$", text, re.M)
    assert found, "no sample failregex in switch/security/log.py"
    # the docstring is not raw: "\\S" in the source is "\S" in the text fail2ban users copy
    return found.group(1).strip().replace("\\\\", "\\")


def f2b_pattern(failregex: str) -> re.Pattern[str]:
    return re.compile(failregex.replace("<HOST>", F2B_HOST))


# --------------------------------------------------------------------------- 1. strangers


def test_a_stranger_is_refused_before_anything_runs_with_one_fail2ban_line(switch, sipp, tmp_path):
    sw = switch("log_caller", with_control())
    res = sipp("uac_expect_final", sw, calls=3, rate=10, extra_args=from_ip(STRANGER), timeout=10)
    assert res.ok and [m.status for m in res.received("INVITE") if (m.status or 0) >= 200] == [403] * 3, \
        res.describe()
    assert all(m.header("Proxy-Authenticate") is None for m in res.received("INVITE")), "no challenge without [users]"
    status = control_status(sw)
    assert status is not None and status["calls_started"] == 0 and status["live_tasks"] == 0, status
    assert app_callers(sw) == [], "the app ran for a stranger"

    # One line for the three INVITEs (repeats of a source and reason are folded), exactly:
    lines = wait_for(lambda: security_lines(sw, "refused", STRANGER))
    assert len(lines) == 1, security_lines(sw)  # type: ignore[arg-type]
    [line] = lines  # type: ignore[misc]
    assert line.split(" WARNING ", 1)[1].split() == [
        "security", "SECURITY", "refused", f"source={STRANGER}", "reason=not-a-trunk-or-user", "method=INVITE"], line

    # The sample filter in switch/security/log.py matches the whole line, with <HOST> as
    # fail2ban expands it. (Not as fail2ban reads a log file, though: fail2ban 1.0 cuts the
    # time stamp out before it applies failregex, and "^\S+ WARNING" then finds no token
    # before WARNING. The README's filter allows for that.)
    m = f2b_pattern(security_log_failregex()).search(line)
    assert m and m.group("host") == STRANGER, (security_log_failregex(), line)
    # The README's filter matches the line as fail2ban really reads it: from a log file
    # (time stamp cut out by the date detector) and from the journal (backend = systemd:
    # "host identifier[pid]: " before the message, which keeps our time stamp).
    readme = f2b_pattern(readme_failregex())
    as_file = F2B_FILE_DATE.sub("", line, count=1)
    as_journal = f"pbx1 softswitch[4242]: {line}"
    for shape in (as_file, as_journal):
        m = readme.search(shape)
        assert m and m.group("host") == STRANGER, (readme_failregex(), shape)
    # ...and no line that is not a refusal, nor text a caller put into the log:
    for other in security_lines(sw):
        if " SECURITY refused " not in other:
            assert not readme.search(F2B_FILE_DATE.sub("", other, count=1)), other
    forged = line.replace("SECURITY refused", "tasks          task[1 default] x SECURITY refused")
    assert not readme.search(F2B_FILE_DATE.sub("", forged, count=1)), forged
    stop_clean(sw)


# --------------------------------------------------------------------------- 2. trunks


@pytest.fixture
def sink_on() -> Iterator[Callable[[str], RtpSink]]:
    """sink_on(ip) -> an RtpSink on that loopback address: SIPp's SDP (c= is its -mi
    address) asks for the caller's audio there."""
    sinks: list[RtpSink] = []

    def make(ip: str) -> RtpSink:
        sinks.append(RtpSink(host=ip).start())
        return sinks[-1]

    yield make
    for sink in sinks:
        sink.stop()


def test_a_trunk_is_admitted_by_cidr_and_the_app_sees_it_unforgeably(switch, sipp, sipp_bg, tmp_path, sink_on):
    rtp_sink = sink_on(TRUNK_IP)
    cfg = config_file(tmp_path, '[[trunks]]\nname = "carrier"\naddresses = ["127.0.0.2/31"]\n')
    sw = switch("log_caller", with_control("--config", str(cfg)))

    call = sipp_bg("uac_pcmu_wait_bye", sw, keys={"rtpport": rtp_sink.port}, extra_args=from_ip(TRUNK_IP),
                   timeout=10)
    calls = wait_for(lambda: control_get(sw, "/calls")["calls"])
    res = call.wait()
    assert res.ok and res.final_status() == 200, res.describe()
    assert calls and [c["caller"] for c in calls] == ["trunk:carrier"], calls  # type: ignore[union-attr]
    rtp_sink.wait_quiet(0.3, timeout=3)
    assert rtp_sink.count(0) >= 40 and rtp_sink.level_dbfs(0) > -20, \
        (rtp_sink.count(0), rtp_sink.level_dbfs(0))  # the app's second of tone reached the trunk

    # The other address of the /31, with a forged header naming another trunk:
    forged = sipp("uac_forged_caller_wait_bye", sw, extra_args=from_ip("127.0.0.3"), timeout=10)
    assert forged.ok and forged.final_status() == 200, forged.describe()
    assert "X-Softswitch-Caller: trunk:bank" in forged.sent("INVITE")[0].text
    # Just outside it: a stranger.
    outside = sipp("uac_expect_final", sw, extra_args=from_ip("127.0.0.4"), timeout=10)
    assert outside.final_status() == 403, outside.describe()

    assert app_callers(sw) == ["trunk:carrier", "trunk:carrier"], sw.log_tail(30)
    assert security_lines(sw, "refused", "127.0.0.4") and not security_lines(sw, source=TRUNK_IP), \
        security_lines(sw)
    status = control_status(sw)
    assert status is not None and status["calls_started"] == 2, status
    stop_clean(sw)


# --------------------------------------------------------------------------- 3. users


@pytest.fixture
def alice(tmp_path: Path) -> list[str]:
    cfg = config_file(tmp_path, 'realm = "e2e"\n[users]\nalice = "secret"\n')
    return with_control("--config", str(cfg))


def call_as(sipp, sw, user: str, password: str, ip: str = PHONE_IP, **kw: object) -> SippResult:
    return sipp("uac_auth_wait_bye", sw, extra_args=[*from_ip(ip), "-au", user, "-ap", password],
                timeout=10, **kw)


def test_users_answer_a_407_on_every_invite_and_wrong_or_unknown_get_the_same_403(switch, sipp, alice, sink_on):
    rtp_sink = sink_on(PHONE_IP)
    sw = switch("log_caller", alice)
    ok = call_as(sipp, sw, "alice", "secret", calls=2, rate=10, keys={"rtpport": rtp_sink.port})
    assert ok.ok and ok.successful == 2, ok.describe()
    # Each call's first INVITE was challenged (the previous call's success is no proof),
    # and its retry with Proxy-Authorization answered.
    assert statuses(ok, 1) == [100, 407, 100, 407], ok.describe()
    assert [s for s in statuses(ok, 2) if s >= 200] == [200, 200], ok.describe()
    challenge = ok.received("INVITE", 407)[0]
    assert 'realm="e2e"' in (challenge.header("Proxy-Authenticate") or ""), challenge.text
    retry = [m for m in ok.sent("INVITE") if m.cseq == 2][0]
    assert (retry.header("Proxy-Authorization") or "").startswith('Digest username="alice"'), retry.text
    rtp_sink.wait_quiet(0.3, timeout=3)
    assert rtp_sink.count(0) >= 80, rtp_sink.count(0)  # a second of tone per call
    assert app_callers(sw) == ["user:alice", "user:alice"], sw.log_tail(20)

    wrong = call_as(sipp, sw, "alice", "guess")
    unknown = call_as(sipp, sw, "mallory", "secret")
    for res in (wrong, unknown):
        # 403 for the retry, not another 407 (no loop to guess in), and no task
        assert statuses(res, 1)[-1] == 407 and [s for s in statuses(res, 2) if s >= 200] == [403], res.describe()
    w403, u403 = wrong.received("INVITE", 403)[0], unknown.received("INVITE", 403)[0]
    assert w403.first_line == u403.first_line == "SIP/2.0 403 Forbidden", (w403.text, u403.text)
    same = ("Server", "Content-Length", "Proxy-Authenticate", "WWW-Authenticate", "Warning", "Retry-After")
    assert [w403.header(h) for h in same] == [u403.header(h) for h in same], (w403.text, u403.text)
    assert len(security_lines(sw, "auth-failed", PHONE_IP)) == 2, security_lines(sw)
    status = control_status(sw)
    assert status is not None and status["calls_started"] == 2, status
    stop_clean(sw)


# --------------------------------------------------------------------------- 4. dial-out


def test_dial_out_to_the_gateway_needs_the_permission(switch, sipp, sipp_bg, bridge_app, tmp_path):
    cfg = config_file(tmp_path, 'realm = "e2e"\n[users]\nalice = "alice-pw"\n'
                                'bob = { password = "bob-pw", dial_out = true }\n')
    gateway = start_uas(sipp_bg, "uas_answer_bye", pause_ms=1000, timeout=20)
    sw = start_bridge_switch(switch, bridge_app(timeout_s=5), gateway.sip_port, "--config", str(cfg))

    refused = call_as(sipp, sw, "alice", "alice-pw", service="5551234")
    assert [s for s in statuses(refused, 2) if s >= 200] == [403], refused.describe()
    time.sleep(0.3)  # an INVITE that was placed anyway would have reached the gateway by now
    assert "INVITE" not in gateway.log_text() and not re.search(r"offer m=audio", gateway.log_text()), \
        "the switch called the gateway for a caller without dial_out"
    lines = security_lines(sw, "dial-refused", PHONE_IP)
    assert len(lines) == 1 and "reason=no-dial-out caller=user:alice target=gateway" in lines[0], \
        security_lines(sw)

    allowed = call_as(sipp, sw, "bob", "bob-pw", service="5551234")
    assert allowed.ok and [s for s in statuses(allowed, 2) if s >= 200] == [200], allowed.describe()
    assert allowed.received("BYE"), "the gateway's BYE should reach bob"
    callee = gateway.wait()
    assert callee.ok, callee.describe()
    invites = callee.received("INVITE")
    assert len(invites) == 1 and invites[0].first_line.startswith(f"INVITE sip:5551234@{LOCALHOST}:{gateway.sip_port}"), \
        callee.describe()
    assert len(security_lines(sw, "dial-refused")) == 1, security_lines(sw)
    stop_clean(sw)


# --------------------------------------------------------------------------- 5. sipvicious

# Runs a sipvicious tool with every socket it binds on SOURCE (Debian's sipvicious 0.3.3
# ignores svwar's and svcrack's -b), and waiting at most 2 s for late answers (its 10 s
# socket timeout only makes the test slow: the switch answers on loopback in ms).
SIPVICIOUS_FROM = """
import os, runpy, socket, sys
source, tool = sys.argv[1], sys.argv[2]
bind, settimeout = socket.socket.bind, socket.socket.settimeout
socket.socket.bind = lambda self, addr: bind(self, (source, *addr[1:]))
socket.socket.settimeout = lambda self, t: settimeout(self, t if t is None else min(t, 2.0))
sys.argv = sys.argv[2:]
sys.path.insert(0, os.path.dirname(os.path.realpath(tool)))
runpy.run_path(tool, run_name="__main__")
"""


def sipvicious_tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(f"sipvicious_{name}")
    if path is None:
        pytest.skip("sipvicious is not installed (apt-get install sipvicious; scripts/setup.sh does)")
    return path


def run_sipvicious(name: str, source: str, sw: SwitchProcess, *args: str, timeout: float = 30) -> str:
    tool = sipvicious_tool(name)
    with open(tool, "rb") as f:
        shebang = f.readline().decode().strip()
    python = shebang[2:].split()[0] if shebang.startswith("#!") and "python" in shebang else "python3"
    cmd = [python, "-c", SIPVICIOUS_FROM, source, tool, *args, "-x", source, "-p", str(sw.port), sw.host]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return done.stdout + done.stderr


def table(output: str) -> dict[str, str]:
    """A sipvicious result table: first column -> second column."""
    rows = re.findall(r"^\|\s*(.*?)\s*\|\s*(.*?)\s*\|$", output, re.M)
    return {k: v for k, v in rows[1:]} if rows else {}


def test_sipvicious_learns_nothing_and_password_guessing_is_blocked(switch, sipp, tmp_path):
    cfg = config_file(tmp_path, 'realm = "e2e"\n[users]\nalice = "correct-horse"\n')
    sw = switch("log_caller", with_control("--config", str(cfg)))
    # alice's own phone registers first (from 127.0.0.3)
    register = ["uac_register", sw]
    reg = dict(keys={"user": "alice", "contactport": 9, "expires": 60}, timeout=10)
    phone = sipp(*register, extra_args=[*from_ip(PHONE_IP), "-au", "alice", "-ap", "correct-horse"], **reg)
    assert phone.ok, phone.describe()

    names = tmp_path / "names.txt"
    names.write_text("alice\nbob\n100\nadmin\nnosuchuser\n")
    guesses = tmp_path / "guesses.txt"
    guesses.write_text("w1\nw2\nw3\nw4\nw5\nw6\ncorrect-horse\n")  # the password only after the block
    control = tmp_path / "control.txt"
    control.write_text("correct-horse\n")

    # svcrack can find the password when it is in the list and nothing has blocked it:
    found = run_sipvicious("svcrack", "127.0.0.10", sw, "-u", "alice", "-d", str(control))
    assert table(found) == {"alice": "correct-horse"}, found

    # The scans and the attack, side by side, each from an address of its own:
    out: dict[str, str] = {}
    jobs = {
        "svmap": ("svmap", "127.0.0.6"),
        "svwar REGISTER": ("svwar", "127.0.0.7", "--force", "-m", "REGISTER", "-d", str(names)),
        "svwar INVITE": ("svwar", "127.0.0.8", "--force", "-m", "INVITE", "-d", str(names)),
        "svwar OPTIONS": ("svwar", "127.0.0.9", "--force", "-m", "OPTIONS", "-d", str(names)),
        "svcrack": ("svcrack", "127.0.0.4", "-u", "alice", "-d", str(guesses)),
    }
    threads = [threading.Thread(target=lambda k=k, j=j: out.__setitem__(k, run_sipvicious(j[0], j[1], sw, *j[2:])))
               for k, j in jobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(40)
    report = "\n".join(f"===== {k}\n{v[-3000:]}" for k, v in out.items())

    # svmap finds a SIP device and its User-Agent, without a version to look up holes by
    assert table(out["svmap"]) == {f"{LOCALHOST}:{sw.port}": "softswitch"}, report
    # svwar cannot tell alice from names that do not exist: every name gets the same
    # answer (401 to REGISTER, 407 to INVITE, 200 to OPTIONS), so it reports nothing, or
    # all of them alike
    for key in ("svwar REGISTER", "svwar INVITE", "svwar OPTIONS"):
        found_names = table(out[key])
        assert "alice" not in found_names or len(set(found_names.values())) == 1 and \
            {"bob", "nosuchuser"} <= set(found_names), report
    # The same holds for a bare request: a known and an unknown name get the same status
    # and the same headers (only the nonce differs), to REGISTER and to INVITE.
    with SipSocket("127.0.0.12") as probe:
        for method, body in (("REGISTER", ""), ("INVITE", sdp_offer(9, host="127.0.0.12"))):
            answers = []
            for user in ("alice", "nosuchuser"):
                request = sip_request(method, sw.sip_addr, probe.addr, user=user, body=body)
                probe.send(request, sw.sip_addr)
                final = [r for r in probe.recv_all(1.0) if (status_of(r) or 0) >= 200]
                assert final, f"no answer to {method} for {user}"
                if method == "INVITE":
                    probe.send(ack_for(request, final[0]), sw.sip_addr)
                head = final[0].decode(errors="replace").split("\r\n\r\n")[0].split("\r\n")
                answers.append((head[0], sorted(h.split(":")[0].lower() for h in head[1:])))
            assert answers[0] == answers[1] and answers[0][0].split()[1] in ("401", "407"), (method, answers)
    # svcrack does not find the password, although it is the last guess:
    assert table(out["svcrack"]) == {} and "found nothing" in out["svcrack"], report
    attacker = "127.0.0.4"
    failed = security_lines(sw, "auth-failed", attacker)
    assert len(failed) == 5, "\n".join(security_lines(sw))  # auth_fail_limit = 5, then no more checks
    blocked = security_lines(sw, "blocked", attacker)
    assert any("reason=auth-failures " in b and "block=600s" in b for b in blocked), security_lines(sw)
    assert any("reason=auth-failures-user user=alice" in b for b in blocked), security_lines(sw)
    assert security_lines(sw, "refused", attacker) and "reason=auth-blocked" in security_lines(sw, "refused", attacker)[0]

    # Blocked: the right password from the attacker's address gets 403 without a check...
    retry = sipp(*register, extra_args=[*from_ip(attacker), "-au", "alice", "-ap", "correct-horse"], **reg)
    assert [m.status for m in retry.received("REGISTER")] == [401, 403], retry.describe()
    # ...and so does a new address guessing alice (the block is per user too), while
    # alice's phone, which proved its password from its address before, keeps working.
    other = sipp(*register, extra_args=[*from_ip("127.0.0.11"), "-au", "alice", "-ap", "correct-horse"], **reg)
    assert [m.status for m in other.received("REGISTER")] == [401, 403], other.describe()
    again = sipp(*register, extra_args=[*from_ip(PHONE_IP), "-au", "alice", "-ap", "correct-horse"], **reg)
    assert again.ok, again.describe()
    assert len(security_lines(sw, "auth-failed", attacker)) == 5, security_lines(sw)
    status = control_status(sw)
    assert status is not None and status["calls_started"] == 0, status  # svwar's INVITEs started nothing
    stop_clean(sw)


# --------------------------------------------------------------------------- 6. flood


class OptionsProbe:
    """OPTIONS from 127.0.0.1 every `interval` s; each round trip ends at the kernel's
    receive time of the answer (so the test process's own scheduling does not count)."""

    def __init__(self, target: tuple[str, int], interval: float = 0.02) -> None:
        self.target = target
        self.interval = interval
        self.rtts_ms: list[float | None] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> OptionsProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.bind((LOCALHOST, 0))
            while not self._stop.is_set():
                call_id = uuid.uuid4().hex
                sent = time.time()
                sock.sendto(sip_request("OPTIONS", self.target, sock.getsockname(), call_id=call_id), self.target)
                rtt = None
                deadline = time.monotonic() + 1.0
                while (left := deadline - time.monotonic()) > 0 and select.select([sock], [], [], left)[0]:
                    data, anc, _, _ = sock.recvmsg(65535, 64)
                    if call_id.encode() in data and (status_of(data) or 0) >= 200:
                        rtt = ((kernel_rx_time(anc) or time.time()) - sent) * 1000
                        break
                self.rtts_ms.append(rtt)
                self._stop.wait(self.interval)


def test_a_flood_from_one_source_is_blocked_and_does_not_hurt_trunk_calls(switch, sipp_bg, tmp_path):
    flooder = "127.0.0.5"
    cfg = config_file(tmp_path, '[[trunks]]\nname = "carrier"\naddresses = ["127.0.0.2"]\n')
    sw = switch("log_caller", with_control("--config", str(cfg)))
    flood = sipp_bg("uac_flood_invite", sw, calls=25000, rate=5000, extra_args=from_ip(flooder), timeout=15)
    with OptionsProbe(sw.sip_addr) as probe:
        assert wait_for(lambda: security_lines(sw, "blocked", flooder), timeout=2), security_lines(sw)
        trunk = sipp_bg("uac_pcmu_wait_bye", sw, calls=20, rate=10, extra_args=from_ip(TRUNK_IP), timeout=15)
        during = control_status(sw)
        calls = trunk.wait()
        flooding = flood.running()
        flood_result = flood.wait()
    assert flooding, "the flood ended before the trunk calls did: it did not overlap them"
    assert calls.ok and calls.successful == 20 and calls.failed == 0, calls.describe(3000)
    assert flood_result.created == 25000, flood_result.describe(1000)
    rate = re.findall(r"Call Rate\s*\|[^|]*\|\s*([\d.]+) cps", flood_result.screen_text())
    assert rate and float(rate[-1]) > 4000, f"the flood ran at {rate[-1:]} calls/s, not ~5000"
    [line] = security_lines(sw, "blocked", flooder)
    assert "reason=flood" in line and "block=60s" in line, line
    assert app_callers(sw) == ["trunk:carrier"] * 20, "a flood INVITE reached the app"
    answered = [r for r in probe.rtts_ms if r is not None]
    assert len(answered) == len(probe.rtts_ms) >= 50, f"{len(answered)}/{len(probe.rtts_ms)} OPTIONS answered"
    assert max(answered) < 50, f"OPTIONS round trips during the flood, worst: {sorted(answered)[-5:]} ms"
    assert during is not None and during["loop_lag_ms"]["median_2s"] < 20, during  # type: ignore[index]
    status = control_status(sw)
    assert status is not None and status["calls_started"] == 20, status
    stop_clean(sw)
