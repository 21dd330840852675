"""Call detail records end to end: real calls through the real switch, the records read
back with `softswitch cdr` (a second process, reading the switch's data dir) as an
operator would, and nothing lost at SIGTERM."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .harness import REPO, LOCALHOST, RtpSink, start_bridge_switch, start_uas

pytestmark = pytest.mark.e2e


def cdr(sw: Any, *args: str) -> str:
    """`softswitch cdr --data-dir DIR ARGS` as a user runs it; its stdout."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "switch.cli", "cdr", "--data-dir", str(sw.data_dir), *args],
                         capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def records(sw: Any, *args: str) -> list[dict[str, Any]]:
    return json.loads(cdr(sw, "--format", "json", *args))  # type: ignore[no-any-return]


def wait_records(sw: Any, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The writer commits within ~0.2 s of a call's end; give it a moment."""
    deadline = time.monotonic() + timeout
    while True:
        got = records(sw)
        if len(got) >= n or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def test_an_answered_call_is_recorded_with_its_media_and_exported(switch, sipp, rtp_sink: RtpSink):
    sw = switch("greeting")
    result = sipp("uac_pcmu_wait_bye", sw, keys={"rtpport": rtp_sink.port}, timeout=15)
    assert result.ok, result.describe()
    (rec,) = wait_records(sw, 1)
    assert (rec["direction"], rec["disposition"], rec["status"], rec["hangup_by"]) == ("inbound", "ANSWERED", 200,
                                                                                       "switch")
    assert rec["app"] == "default" and rec["caller"] == "local" and rec["codec"] == "PCMU"
    assert rec["request_uri"].startswith("sip:service@") and rec["from_uri"].startswith("sip:sipp@")
    assert rec["start"] <= rec["answer"] <= rec["end"] and abs(rec["start"] - time.time()) < 60
    assert rec["billsec"] > 1.0 and rec["duration"] >= rec["billsec"]
    # The greeting's RTP as the switch counted it matches what our sink received.
    assert rec["rtp_packets_sent"] >= len(rtp_sink.snapshot(0)) > 50
    # Exports: CSV with every field, the table an operator reads, filters.
    rows = list(csv.DictReader(io.StringIO(cdr(sw, "--format", "csv"))))
    assert len(rows) == 1 and rows[0]["leg_id"] == rec["leg_id"] and rows[0]["disposition"] == "ANSWERED"
    table = cdr(sw, "--since", "1h")
    assert "ANSWERED" in table and "1 record(s)" in table
    assert records(sw, "--app", "nosuchapp") == [] and records(sw, "--until", "2000-01-01") == []
    assert len(records(sw, "--number", "service")) == 1


def test_a_bridged_call_to_a_busy_callee_makes_two_linked_records(switch, bridge_app, sipp_bg, rtp_sink: RtpSink):
    uas = start_uas(sipp_bg, "uas_reject_486")
    sw = start_bridge_switch(switch, bridge_app(), uas.sip_port)
    uac = sipp_bg("uac_expect_final", sw, keys={"rtpport": rtp_sink.port}, timeout=10)
    uac.wait()
    uas.wait()
    caller, callee = wait_records(sw, 2)
    assert caller["call_id"] == callee["call_id"]
    assert (caller["direction"], caller["disposition"], caller["status"]) == ("inbound", "BUSY", 486)
    assert (callee["direction"], callee["disposition"], callee["status"], callee["hangup_by"]) == (
        "outbound", "BUSY", 486, "callee")
    assert callee["request_uri"] == f"sip:service@{LOCALHOST}:{uas.sip_port}" and callee["billsec"] == 0


def test_a_cancelled_call_and_a_throwing_app(switch, sipp, rtp_sink: RtpSink):
    sw = switch("provision_then_wait")
    result = sipp("uac_cancel", sw, keys={"rtpport": rtp_sink.port}, pause_ms=300, timeout=10)
    assert result.ok, result.describe()
    (rec,) = wait_records(sw, 1)
    assert (rec["disposition"], rec["status"], rec["hangup_by"], rec["answer"]) == ("CANCELLED", 487, "caller", None)
    assert rec["billsec"] == 0 and rec["reason"] == "cancelled" and rec["task_error"] is None

    sw = switch("throw_after_answer")
    result = sipp("uac_pcmu_wait_bye", sw, keys={"rtpport": rtp_sink.port}, timeout=10)
    assert result.ok, result.describe()
    (rec,) = wait_records(sw, 1)
    assert (rec["disposition"], rec["status"], rec["hangup_by"], rec["reason"]) == ("ANSWERED", 200, "switch",
                                                                                    "script error")
    assert rec["task_error"].startswith("main.js:5") and "boom after answer" in rec["task_error"], rec["task_error"]


def test_sigterm_writes_the_records_of_the_calls_it_ends(switch, sipp_bg, rtp_sink: RtpSink):
    sw = switch("greeting")
    uac = sipp_bg("uac_pcmu_wait_bye", sw, keys={"rtpport": rtp_sink.port}, calls=10, rate=50, timeout=15)
    time.sleep(0.8)  # 10 calls answered, the greeting playing
    sw.stop()  # drains: BYE to each, and every record is committed before the process exits
    uac.wait()
    got = records(sw)
    assert len(got) == 10, got
    assert {r["disposition"] for r in got} == {"ANSWERED"} and {r["hangup_by"] for r in got} == {"switch"}
    assert {r["reason"] for r in got} == {"switch shutting down"}


# --------------------------------------------------------------------------- PostgreSQL
class PostgresServer:
    """A PostgreSQL cluster of the test's own (Debian's postgresql package), on a free
    port on 127.0.0.1, trust auth, started and stopped by the test. As root it runs as the
    `postgres` user (initdb refuses root)."""

    def __init__(self) -> None:
        import glob
        import pwd
        import shutil
        import tempfile

        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        assert bins, "PostgreSQL is not installed: scripts/setup.sh installs Debian's postgresql"
        self.bin = os.path.dirname(bins[-1])
        from .harness import free_tcp_port

        self.port = free_tcp_port()
        # Not under pytest's tmp dir: its parents are 0700 root, closed to the postgres user.
        self.dir = Path(tempfile.mkdtemp(prefix="softswitch-pg-"))
        self.runas: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            shutil.chown(self.dir, user.pw_uid, user.pw_gid)
            self.runas = ["runuser", "-u", "postgres", "--"]
        self._pg(["initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres", "--no-sync"])
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _pg(self, cmd: list[str]) -> None:
        out = subprocess.run([*self.runas, os.path.join(self.bin, cmd[0]), *cmd[1:]], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, f"{cmd[0]}: {out.stdout}{out.stderr}"

    def start(self) -> None:
        self._pg(["pg_ctl", "-D", str(self.dir / "data"), "-l", str(self.dir / "log"), "-w", "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off", "start"])

    def stop(self) -> None:
        self._pg(["pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop"])

    def remove(self) -> None:
        import shutil

        subprocess.run([*self.runas, os.path.join(self.bin, "pg_ctl"), "-D", str(self.dir / "data"), "-m",
                        "immediate", "stop"], capture_output=True, timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)

    def row(self, leg_id: str) -> dict[str, Any]:
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(self.url, connect_timeout=3, row_factory=dict_row) as conn:
            found = conn.execute("SELECT * FROM cdr WHERE leg_id = %s", (leg_id,)).fetchone()
        assert found is not None, leg_id
        return dict(found)

    def leg_ids(self) -> list[str]:
        import psycopg

        try:
            with psycopg.connect(self.url, connect_timeout=3) as conn:
                return [row[0] for row in conn.execute("SELECT leg_id FROM cdr")]
        except psycopg.errors.UndefinedTable:
            return []


def wait_until(check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def test_postgresql_down_for_a_while_loses_no_record(switch, sipp_bg, rtp_sink: RtpSink, tmp_path):
    pg = PostgresServer()
    pg.start()
    try:
        config = tmp_path / "switch.toml"
        config.write_text(f'cdr_url = "{pg.url}"\n')
        sw = switch("short_greeting", ["--config", str(config)])
        first = sipp_bg("uac_pcmu_wait_bye", sw, keys={"rtpport": rtp_sink.port}, calls=3, rate=10, timeout=15)
        assert first.wait().ok
        assert wait_until(lambda: len(pg.leg_ids()) == 3, 10), pg.leg_ids()
        # Mid-traffic: the database goes away while calls keep ending, then comes back.
        during = sipp_bg("uac_pcmu_wait_bye", sw, keys={"rtpport": rtp_sink.port}, calls=12, rate=4, timeout=30)
        time.sleep(0.6)
        pg.stop()
        time.sleep(3.0)
        assert len(records(sw)) > 3  # still written locally (the spool) meanwhile
        pg.start()
        assert during.wait().ok
        assert wait_until(lambda: len(pg.leg_ids()) >= 15, 25), len(pg.leg_ids())
        ids = pg.leg_ids()
        local = {r["leg_id"] for r in records(sw)}
        assert len(ids) == len(set(ids)) == 15 and set(ids) == local  # every record once, none lost
        for rec in records(sw)[::5]:  # and field by field what the switch recorded
            assert pg.row(rec["leg_id"]) == rec
        log = sw.log_text()
        assert "CDR: cannot write to PostgreSQL at 127.0.0.1" in log and "is back" in log
        assert "postgres@" not in log  # the URL's credentials never reach the log
    finally:
        pg.remove()
