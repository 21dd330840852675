"""Call detail records: what a finished call's legs become, the SQLite store, the writer
thread (nothing lost, SIGTERM's flush), the app's own fields, and `softswitch cdr`'s times."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from pathlib import Path

import pytest
from test_calls_engine import PHONE, Rig, answered_call, bridge, callee_reply, from_caller, invite

from switch.calls.call import Call
from switch.cdr.command import parse_time
from switch.cdr.record import NAMES, disposition, records
from switch.cdr.store import CdrStore
from switch.cdr.writer import CdrWriter
from switch.sip.message import SipRequest
from switch.tasks.boundary import CallError

WALL = 1_800_000_000.0  # the offset that turns the rig's loop times into wall time


def finished(rig: Rig) -> list[Call]:
    closed: list[Call] = []
    rig.engine.observers.append(closed.append)
    return closed


def test_an_answered_call_hung_up_by_the_caller(loop: asyncio.AbstractEventLoop) -> None:
    rig = Rig(loop)
    closed = finished(rig)
    ok = answered_call(rig)
    rig.controls[1].verb("set_cdr_field", "account", "A-17")
    rig.sip.deliver(from_caller("BYE", ok, 2), PHONE)
    (call,) = closed
    (rec,) = records(call, WALL)
    assert set(rec) == set(NAMES)
    assert rec["call_id"] == call.uid and rec["leg_id"] == f"{call.uid}-1" and rec["sip_call_id"] == "c1"
    assert (rec["direction"], rec["disposition"], rec["status"], rec["hangup_by"]) == ("inbound", "ANSWERED", 200,
                                                                                       "caller")
    assert rec["from_uri"] == "sip:alice@127.0.0.1" and rec["request_uri"] == "sip:100@127.0.0.1"
    assert rec["caller"] == "local" and rec["codec"] == "PCMU" and rec["reason"] == "remote hung up"
    assert rec["start"] <= rec["answer"] <= rec["end"] and rec["start"] > WALL
    assert rec["billsec"] == pytest.approx(rec["end"] - rec["answer"], abs=0.002)
    assert rec["duration"] >= rec["billsec"] and rec["rtp_packets_sent"] == 0
    assert json.loads(rec["fields"]) == {"account": "A-17"}


def test_a_bridged_call_whose_callee_is_busy_makes_two_linked_records(loop: asyncio.AbstractEventLoop) -> None:
    rig = Rig(loop)
    closed = finished(rig)
    egress, offer = bridge(rig)
    rig.run(rig.board.start_bridged_call(egress, "1000", offer))
    (out_invite,) = rig.sip.take()
    callee_reply(rig, 486, out_invite)  # type: ignore[arg-type]
    rig.controls[1].disconnect()  # the bridge app passes the callee's 486 on
    (call,) = closed
    caller, callee = records(call, WALL)
    assert caller["call_id"] == callee["call_id"] and caller["leg_id"] != callee["leg_id"]
    assert (caller["direction"], caller["disposition"], caller["status"], caller["hangup_by"]) == (
        "inbound", "BUSY", 486, "switch")
    assert (callee["direction"], callee["disposition"], callee["status"], callee["hangup_by"]) == (
        "outbound", "BUSY", 486, "callee")
    assert callee["request_uri"] == "sip:1000@127.0.0.1:5090" and callee["billsec"] == 0.0


def test_a_cancelled_call_and_a_callee_we_gave_up_on(loop: asyncio.AbstractEventLoop) -> None:
    rig = Rig(loop)
    closed = finished(rig)
    egress, offer = bridge(rig)
    rig.run(rig.board.start_bridged_call(egress, "1000", offer))
    (out_invite,) = rig.sip.take()
    assert isinstance(out_invite, SipRequest)
    callee_reply(rig, 180, out_invite)
    rig.sip.take()
    rig.controls[9].disconnect()  # the egress app's timeout: we cancel the callee
    callee_reply(rig, 487, out_invite)
    cancel = (b"CANCEL sip:100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-c1\r\n"
              b"From: <sip:alice@127.0.0.1>;tag=caller\r\nTo: <sip:100@127.0.0.1>\r\nCall-ID: c1\r\n"
              b"CSeq: 1 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
    rig.sip.deliver(cancel, PHONE)
    (call,) = closed
    caller, callee = records(call, WALL)
    assert (caller["disposition"], caller["status"], caller["hangup_by"]) == ("CANCELLED", 487, "caller")
    assert (callee["disposition"], callee["status"], callee["hangup_by"]) == ("NO ANSWER", 487, "switch")


@pytest.mark.parametrize("status, answered, outbound, ours, expected", [
    (200, True, False, False, "ANSWERED"), (486, False, False, False, "BUSY"), (600, False, True, False, "BUSY"),
    (487, False, False, False, "CANCELLED"), (487, False, True, True, "NO ANSWER"), (408, False, True, False,
                                                                                      "NO ANSWER"),
    (480, False, False, False, "NO ANSWER"), (503, False, True, False, "FAILED"), (500, False, False, False,
                                                                                   "FAILED"),
])
def test_dispositions(status: int, answered: bool, outbound: bool, ours: bool, expected: str) -> None:
    assert disposition(status, answered, outbound, ours) == expected


def test_the_apps_fields_are_checked(loop: asyncio.AbstractEventLoop) -> None:
    rig = Rig(loop)
    answered_call(rig)
    control = rig.controls[1]
    with pytest.raises(CallError, match="letters, digits"):
        control.verb("set_cdr_field", "bad name", "x")
    with pytest.raises(CallError, match="at most 1024"):
        control.verb("set_cdr_field", "ok", "x" * 1025)
    for i in range(32):
        control.verb("set_cdr_field", f"f{i}", "v")
    control.verb("set_cdr_field", "f0", "again")  # replacing is not adding
    with pytest.raises(CallError, match="at most 32"):
        control.verb("set_cdr_field", "one_more", "v")


def sample(n: int, start: float = WALL) -> dict[str, object]:
    rec: dict[str, object] = dict.fromkeys(NAMES)
    rec.update(leg_id=f"c{n}-1", call_id=f"c{n}", app="sales" if n % 2 else "support", start=start + n,
               from_uri=f"sip:49301234{n}@carrier", disposition="ANSWERED", status=200, billsec=1.5)
    return rec


def test_the_store_keeps_each_record_once_and_finds_them_by_time_app_and_number(tmp_path: Path) -> None:
    store = CdrStore(tmp_path / "cdr.sqlite")
    assert store.add([sample(n) for n in range(10)]) == 10
    store.add([sample(3)])  # a batch retried: not doubled
    assert len(store.query()) == 10
    assert [r["leg_id"] for r in store.query(since=WALL + 8)] == ["c8-1", "c9-1"]
    assert {r["app"] for r in store.query(app="sales")} == {"sales"} and len(store.query(app="sales")) == 5
    assert [r["leg_id"] for r in store.query(number="492")] == []
    assert [r["leg_id"] for r in store.query(number="493012347")] == ["c7-1"]
    assert store.count_unshipped() == 10
    store.mark_shipped([r["leg_id"] for r in store.unshipped(4)])
    assert store.count_unshipped() == 6
    store.close()
    reader = CdrStore(tmp_path / "cdr.sqlite", readonly=True)  # softswitch cdr, another process
    assert len(reader.query()) == 10
    reader.close()
    with pytest.raises(FileNotFoundError, match="has the switch run"):
        CdrStore(tmp_path / "nope.sqlite", readonly=True)


def test_the_writer_commits_off_the_loop_and_its_stop_flushes_everything(loop: asyncio.AbstractEventLoop,
                                                                        tmp_path: Path) -> None:
    rig = Rig(loop)
    writer = CdrWriter(tmp_path / "cdr.sqlite", loop.time)
    committed_by: list[str] = []
    add = writer.store.add

    def spy(batch):  # type: ignore[no-untyped-def]
        committed_by.append(threading.current_thread().name)
        return add(batch)

    writer.store.add = spy  # type: ignore[method-assign]
    rig.engine.observers.append(writer)
    writer.start()
    for n in range(50):
        rig.sip.deliver(invite_from(n), PHONE)
        rig.controls[n + 1].reject(486, None)
    writer.stop()  # SIGTERM: every record of every ended call is on disk
    store = CdrStore(tmp_path / "cdr.sqlite", readonly=True)
    rows = store.query()
    assert len(rows) == 50 and {r["disposition"] for r in rows} == {"BUSY"} and writer.pending == 0
    assert set(committed_by) == {"cdr-writer"} and len(committed_by) < 50  # batched, never on the loop


def invite_from(n: int) -> bytes:
    return invite(f"c{n}")


def test_times_for_softswitch_cdr() -> None:
    assert parse_time("2026-12-01") == 1796083200.0
    assert parse_time("2026-12-01T09:30:00Z") == 1796083200.0 + 9.5 * 3600
    assert parse_time("2h", now=10_000.0) == 10_000.0 - 7200 and parse_time("15m", now=1000.0) == 100.0
    assert parse_time(None) is None
    with pytest.raises(ValueError, match="15m, 2h, 7d"):
        parse_time("yesterday")


def test_docs_cdr_md_describes_every_field() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "cdr.md").read_text()
    documented = set(re.findall(r"^\| `(\w+)` \|", text, re.M))
    assert documented == set(NAMES)
