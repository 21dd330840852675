"""The call engine and its calls over a real transaction layer with no sockets: every way
a call ends leaves nothing behind (no call, leg, dialog, transaction index or RTP session)
and each task hears what it should. Media is a fake that only counts opens and closes."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from media.ports import NoRtpPorts
from switch.calls.admission import Admission
from switch.calls.bridge import Switchboard
from switch.calls.call import Call, LegControl, TaskSink
from switch.calls.engine import CallEngine
from switch.calls.routing import OutboundRoutes
from switch.security.access import Caller, CallerKind
from switch.sip.message import SipRequest, SipResponse, make_response, parse_message
from switch.sip.tls import TlsError
from switch.sip.transaction import TransactionLayer
from switch.tasks import events
from switch.tasks.boundary import CallError

PHONE = ("127.0.0.1", 5070)
CALLEE = ("127.0.0.1", 5090)
SDP = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n")


class FakeMedia:
    def __init__(self, port: int, opened: list[FakeMedia]) -> None:
        self.local_port = port
        self.params: Any = None
        self.closed = False
        self.on_dtmf: Any = None
        self.on_rtp: Any = None
        self.comfort_noise = False
        opened.append(self)

    def stop_play(self) -> None:
        pass

    def configure(self, params: Any) -> None:
        self.params = params

    def stats(self) -> dict[str, int]:
        return dict.fromkeys(("packets_sent", "bytes_sent", "packets_received", "bytes_received"), 0)

    def close(self) -> None:
        self.closed = True


class FakeTransport:
    """What the engine needs of SipTransport, over a real TransactionLayer."""

    local_addr = ("127.0.0.1", 5060)
    tls_addr: tuple[str, int] | None = ("127.0.0.1", 5061)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.layer = TransactionLayer()
        self.streams: dict[Any, Any] = {}
        self.tls_connected: list[tuple[tuple[str, int], str]] = []  # (address, name checked)
        self.tls_refusal: str | None = None  # connect_tls fails with this reason
        self.user: Any = None
        self.wire: list[tuple[SipRequest | SipResponse, tuple[str, int]]] = []

    def transport_of(self, addr: tuple[str, int]) -> str:
        return "TLS" if any(a == addr for a, _ in self.tls_connected) else "UDP"

    async def connect_tls(self, addr: tuple[str, int], server_name: str) -> None:
        await asyncio.sleep(0)
        if self.tls_refusal is not None:
            raise TlsError(self.tls_refusal)
        self.tls_connected.append((addr, server_name))

    def _service(self) -> None:
        while (event := self.layer.next_event()) is not None:
            self.user.handle_sip_event(event)
        for data, addr in self.layer.datagrams_to_send():
            self.wire.append((parse_message(data), addr))

    def send_response(self, txn: Any, response: SipResponse) -> None:
        self.layer.send_response(txn, response, self.loop.time())
        self._service()

    def send_request(self, request: SipRequest, addr: tuple[str, int]) -> Any:
        txn = self.layer.send_request(request, addr, self.loop.time())
        self._service()
        return txn

    def send_stateless(self, msg: Any, addr: tuple[str, int]) -> None:
        self.layer.send_stateless(msg, addr)
        self._service()

    def deliver(self, message: bytes | SipRequest | SipResponse, source: tuple[str, int]) -> None:
        parsed = parse_message(message if isinstance(message, bytes) else bytes(message))
        self.layer.receive(parsed, source, self.loop.time())
        self._service()

    def take(self) -> list[SipRequest | SipResponse]:
        out, self.wire = self.wire, []
        return [m for m, _ in out]


class Rig:
    """An engine with a fake task launcher: each call's task is a list of its events."""

    def __init__(self, loop: asyncio.AbstractEventLoop, rtp_ports: int = 10, launch_error: str | None = None,
                 gateway: str = f"sip:{CALLEE[0]}:{CALLEE[1]}") -> None:
        self.loop = loop
        self.sip = FakeTransport(loop)
        self.media: list[FakeMedia] = []
        self.families: list[int] = []  # the address family of each RTP socket asked for
        self.free_ports = rtp_ports
        self.events: dict[int, list[events.Event]] = {}
        self.controls: dict[int, LegControl] = {}
        self.launch_error = launch_error
        admission = Admission(_Lag(loop), 100)  # type: ignore[arg-type]
        self.engine = CallEngine(loop, self.sip, admission, None, open_media=self._open_media,  # type: ignore[arg-type]
                                 launch=self._launch, gateways=OutboundRoutes(gateway))
        self.board = Switchboard(self.engine, self.post)

    async def _open_media(self, call_id: str, family: int = socket.AF_INET) -> FakeMedia:
        self.families.append(family)
        await asyncio.sleep(0)
        if self.free_ports == 0:
            raise NoRtpPorts("RTP port range exhausted (widen --rtp-ports)")
        self.free_ports -= 1
        return FakeMedia(30000 + 2 * len(self.media), self.media)

    def post(self, tid: int, event: events.Event) -> bool:
        if tid not in self.events:
            return False
        self.events[tid].append(event)
        return True

    def task(self, tid: int) -> Any:
        rig = self

        class Task:
            def __init__(self) -> None:
                self.tid = tid
                rig.events.setdefault(tid, [])

            def post(self, event: events.Event) -> bool:
                return rig.post(tid, event)

            def attach_leg(self, leg: Any) -> None:
                rig.controls[tid] = leg

        return Task()

    def _launch(self, call: Call) -> TaskSink:
        if self.launch_error:
            raise CallError(self.launch_error)
        tid = len(self.events) + 1
        self.events[tid] = []
        self.controls[tid] = call.control(call.ingress)
        return TaskSink(tid, lambda event: self.post(tid, event))

    def run(self, awaitable: Any) -> Any:
        return self.loop.run_until_complete(awaitable)

    def assert_nothing_left(self) -> None:
        engine = self.engine
        assert engine.calls == {} and engine.legs == {}
        assert engine._dialogs == {} and engine._invites == {} and engine._client == {} and engine._txns_of == {}
        assert engine._silent == {}  # no failover timer outlives its INVITE
        assert all(m.closed for m in self.media)


class _Lag:
    lag = 0.0
    sustained = 0.0

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop


def invite(call_id: str = "c1", sdp: bytes = SDP) -> bytes:
    return (f"INVITE sip:100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-{call_id}\r\n"
            f"From: <sip:alice@127.0.0.1>;tag=caller\r\nTo: <sip:100@127.0.0.1>\r\nCall-ID: {call_id}\r\n"
            f"CSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:5070>\r\nMax-Forwards: 70\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n").encode() + sdp


def from_caller(method: str, ok: SipResponse, cseq: int) -> bytes:
    """An in-dialog request from the caller, in the dialog our 200 ``ok`` created."""
    return (f"{method} sip:100@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-{method}{cseq}\r\n"
            f"From: <sip:alice@127.0.0.1>;tag=caller\r\nTo: <sip:100@127.0.0.1>;tag={ok.to_tag}\r\n"
            f"Call-ID: {ok.call_id}\r\nCSeq: {cseq if method != 'ACK' else 1} {method}\r\nMax-Forwards: 70\r\n"
            f"Content-Length: 0\r\n\r\n").encode()


def statuses(messages: list[Any]) -> list[Any]:
    return [m.status if isinstance(m, SipResponse) else m.method for m in messages]


def answered_call(rig: Rig) -> SipResponse:
    rig.sip.deliver(invite(), PHONE)
    rig.run(rig.controls[1].accept())
    trying, ok = rig.sip.take()
    assert (trying.status, ok.status) == (100, 200) and isinstance(ok, SipResponse)
    rig.sip.deliver(from_caller("ACK", ok, 1), PHONE)
    return ok


def test_caller_hangs_up_and_nothing_is_left(loop: asyncio.AbstractEventLoop) -> None:
    rig = Rig(loop)
    ok = answered_call(rig)
    assert len(rig.engine.calls) == 1 and len(rig.engine.legs) == 1 and rig.media[0].params.codec == "PCMU"
    rig.sip.deliver(from_caller("BYE", ok, 2), PHONE)
    assert statuses(rig.sip.take()) == [200]
    assert rig.events[1] == [events.disconnect(None, "BYE")] and not rig.controls[1].is_connected()
    rig.assert_nothing_left()


def test_no_app_gets_500_and_nothing_is_left(loop: asyncio.AbstractEventLoop) -> None:
    rig = Rig(loop, launch_error="app 'default': no main.js")
    rig.sip.deliver(invite(), PHONE)
    assert statuses(rig.sip.take()) == [100, 500]
    rig.assert_nothing_left()


def test_the_task_ending_hangs_up_with_bye_and_the_call_closes_on_its_answer(loop: asyncio.AbstractEventLoop) -> None:
    rig = Rig(loop)
    answered_call(rig)
    rig.controls[1].task_ended("main.js:3: boom")
    (bye,) = rig.sip.take()
    assert isinstance(bye, SipRequest) and bye.method == "BYE"
    assert len(rig.engine.legs) == 1  # until the BYE is answered
    rig.sip.deliver(make_response(bye, 200), PHONE)
    rig.assert_nothing_left()


def test_shutdown_stops_every_call_and_its_future_is_done_when_the_byes_are_answered(
        loop: asyncio.AbstractEventLoop) -> None:
    rig = Rig(loop)
    answered_call(rig)
    rig.sip.deliver(invite("c2"), PHONE)  # a second call, not answered yet
    rig.sip.take()
    ending = rig.engine.stop_all("switch shutting down")
    out = rig.sip.take()
    assert sorted(statuses(out), key=str) == [503, "BYE"]
    assert events.disconnect(None, "switch shutting down") in rig.events[1]
    assert events.disconnect(None, "switch shutting down") in rig.events[2]
    assert [f.done() for f in ending] == [False, True]
    bye = next(m for m in out if isinstance(m, SipRequest))
    rig.sip.deliver(make_response(bye, 200), PHONE)
    assert all(f.done() for f in ending)
    rig.assert_nothing_left()


def bridge(rig: Rig, message: bytes | None = None, source: tuple[str, int] = PHONE) -> Any:
    """A call (``message`` from ``source``; default our INVITE from the phone) whose task
    offers a bridge to task 9, which takes it: that Task and the offer."""
    rig.sip.deliver(message if message is not None else invite(), source)
    rig.sip.take()
    egress = rig.task(9)
    rig.board.start_bridge(rig.task(1), rig.controls[1], 9)
    (offer,) = rig.events[9]
    return egress, offer


def test_no_rtp_port_for_the_callee_fails_the_verb_and_leaves_no_ghost_leg(loop: asyncio.AbstractEventLoop) -> None:
    rig = Rig(loop, rtp_ports=0)
    egress, offer = bridge(rig)
    with pytest.raises(CallError, match="StartBridgedCall: RTP port range exhausted"):
        rig.run(rig.board.start_bridged_call(egress, "1000", offer))
    assert rig.events[1] == [events.break_bridge(503, "cannot place the call: StartBridgedCall: RTP port range "
                                                      "exhausted (widen --rtp-ports)")]
    assert len(rig.engine.legs) == 1  # only the caller's leg is left, for its task
    rig.controls[1].disconnect()
    assert statuses(rig.sip.take()) == [503]  # the callee's failure passed on
    rig.assert_nothing_left()


def callee_reply(rig: Rig, status: int, request: SipRequest, body: bytes = b"") -> None:
    headers: dict[str, str | list[str]] = {"contact": "<sip:1000@127.0.0.1:5090>"}
    if body:
        headers["content-type"] = "application/sdp"
    rig.sip.deliver(make_response(request, status, to_tag="callee", headers=headers, body=body), CALLEE)


def test_bridged_call_rings_answers_relays_and_the_caller_hanging_up_ends_the_callee(
        loop: asyncio.AbstractEventLoop) -> None:
    rig = Rig(loop)
    egress, offer = bridge(rig)
    rig.run(rig.board.start_bridged_call(egress, "1000", offer))
    (out_invite,) = rig.sip.take()
    assert isinstance(out_invite, SipRequest) and out_invite.method == "INVITE" and out_invite.uri == "sip:1000@127.0.0.1:5090"
    callee_reply(rig, 180, out_invite)
    assert statuses(rig.sip.take()) == [180]  # the caller hears the ringing
    callee_reply(rig, 200, out_invite, SDP)
    assert statuses(rig.sip.take()) == ["ACK"]
    assert rig.events[9][-1] == events.call_completed()
    rig.run(asyncio.sleep(0.01))  # the bridge answers the caller
    (ok,) = rig.sip.take()
    assert isinstance(ok, SipResponse) and ok.status == 200
    rig.sip.deliver(from_caller("ACK", ok, 1), PHONE)
    call = next(iter(rig.engine.calls.values()))
    assert call.bridge is not None and call.bridge.relay is not None
    rig.sip.deliver(from_caller("BYE", ok, 2), PHONE)
    out = rig.sip.take()
    assert statuses(out) == [200, "BYE"]  # the whole call stops: the callee is hung up too
    assert events.break_bridge(None, "remote hung up") in rig.events[9]
    rig.sip.deliver(make_response(out[1], 200), CALLEE)  # type: ignore[arg-type]
    rig.assert_nothing_left()


@pytest.mark.parametrize(("gateway", "contact"), [
    (f"sip:{CALLEE[0]}:{CALLEE[1]};transport=tls", "<sip:127.0.0.1:5061;transport=tls>"),
    (f"sips:{CALLEE[0]}:{CALLEE[1]}", "<sips:127.0.0.1:5061>"),  # RFC 3261 §8.1.1.8: a SIPS Contact
])
def test_a_tls_route_connects_first_and_names_tls_in_via_and_contact(
        loop: asyncio.AbstractEventLoop, gateway: str, contact: str) -> None:
    rig = Rig(loop, gateway=gateway)
    egress, offer = bridge(rig)
    rig.run(rig.board.start_bridged_call(egress, "1000", offer))
    assert rig.sip.tls_connected == [(CALLEE, CALLEE[0])]  # the certificate must name the URI's host
    (out_invite,) = rig.sip.take()
    assert isinstance(out_invite, SipRequest)
    assert out_invite.uri == gateway.replace(f"{CALLEE[0]}", f"1000@{CALLEE[0]}"), out_invite.uri
    assert out_invite.headers["via"][0].startswith("SIP/2.0/TLS 127.0.0.1:5061;"), out_invite.headers["via"]
    assert out_invite.headers["contact"] == [contact]
    callee_reply(rig, 200, out_invite, SDP)
    (ack,) = rig.sip.take()
    assert isinstance(ack, SipRequest) and ack.headers["via"][0].startswith("SIP/2.0/TLS "), ack
    rig.run(asyncio.sleep(0.01))  # the bridge answers the caller (over UDP: its own transport)
    (ok,) = rig.sip.take()
    assert isinstance(ok, SipResponse) and ok.status == 200 and ok.headers["contact"] == ["<sip:127.0.0.1:5060>"]
    rig.sip.deliver(from_caller("ACK", ok, 1), PHONE)
    rig.sip.deliver(from_caller("BYE", ok, 2), PHONE)
    answer, bye = rig.sip.take()
    assert isinstance(bye, SipRequest) and bye.method == "BYE" and bye.headers["via"][0].startswith("SIP/2.0/TLS ")
    rig.sip.deliver(make_response(bye, 200), CALLEE)
    rig.assert_nothing_left()


def tls_bridged_call(rig: Rig) -> SipResponse:
    """A call bridged to the TLS gateway, answered both ways: our 200 to the caller."""
    egress, offer = bridge(rig)
    rig.run(rig.board.start_bridged_call(egress, "1000", offer))
    (out_invite,) = rig.sip.take()
    assert isinstance(out_invite, SipRequest)
    callee_reply(rig, 200, out_invite, SDP)
    rig.run(asyncio.sleep(0.01))
    ack, ok = rig.sip.take()
    assert isinstance(ok, SipResponse) and ok.status == 200
    rig.sip.deliver(from_caller("ACK", ok, 1), PHONE)
    return ok


@pytest.mark.parametrize("refused", [None, "cannot connect to 127.0.0.1:5090: Connection refused"])
def test_a_tls_leg_whose_connection_closed_connects_again_for_its_bye_or_fails_it_never_udp(
        loop: asyncio.AbstractEventLoop, refused: str | None) -> None:
    rig = Rig(loop, gateway=f"sips:{CALLEE[0]}:{CALLEE[1]}")
    ok = tls_bridged_call(rig)
    rig.sip.tls_connected.clear()  # the gateway closed the connection mid-call
    rig.sip.tls_refusal = refused
    rig.sip.deliver(from_caller("BYE", ok, 2), PHONE)
    assert statuses(rig.sip.take()) == [200]  # the caller's BYE is answered; ours waits for a connection
    rig.run(asyncio.sleep(0.01))
    if refused is None:
        assert rig.sip.tls_connected == [(CALLEE, CALLEE[0])]  # connected again, the name checked again
        (bye,) = rig.sip.take()
        assert isinstance(bye, SipRequest) and bye.method == "BYE" and bye.headers["via"][0].startswith("SIP/2.0/TLS")
        rig.sip.deliver(make_response(bye, 200), CALLEE)
    else:
        assert rig.sip.take() == []  # not sent at all: the leg ends as if the BYE got a 503
    rig.assert_nothing_left()


def test_a_failed_tls_handshake_fails_the_leg_with_503_and_sends_nothing(loop: asyncio.AbstractEventLoop) -> None:
    rig = Rig(loop, gateway=f"sips:{CALLEE[0]}:{CALLEE[1]}")
    rig.sip.tls_refusal = "the peer's certificate was refused: self-signed certificate"
    egress, offer = bridge(rig)
    with pytest.raises(CallError, match="TLS to 127.0.0.1 .* failed: the peer's certificate was refused"):
        rig.run(rig.board.start_bridged_call(egress, "1000", offer))
    assert rig.sip.take() == []  # no INVITE went anywhere, in the clear or otherwise
    (broken,) = rig.events[1]
    assert broken == events.break_bridge(503, broken["reason"]) and "certificate" in broken["reason"], broken
    assert rig.media == []  # no RTP port was taken for it
    rig.controls[1].disconnect()
    assert statuses(rig.sip.take()) == [503]
    rig.assert_nothing_left()


def test_caller_cancels_while_the_callee_rings(loop: asyncio.AbstractEventLoop) -> None:
    rig = Rig(loop)
    egress, offer = bridge(rig)
    rig.run(rig.board.start_bridged_call(egress, "1000", offer))
    (out_invite,) = rig.sip.take()
    callee_reply(rig, 180, out_invite)  # type: ignore[arg-type]
    rig.sip.take()
    cancel = invite().replace(b"INVITE sip", b"CANCEL sip", 1).replace(b"1 INVITE", b"1 CANCEL")
    cancel = cancel.split(b"Content-Type")[0] + b"Content-Length: 0\r\n\r\n"
    rig.sip.deliver(cancel, PHONE)
    out = rig.sip.take()
    assert statuses(out) == [200, 487, "CANCEL"]
    assert rig.events[1] == [events.disconnect(487, "CANCEL")]
    callee_reply(rig, 487, out_invite)  # type: ignore[arg-type]
    assert statuses(rig.sip.take()) == ["ACK"]  # the transaction layer ACKs the 487
    rig.assert_nothing_left()


@pytest.mark.parametrize("status", [486, 503, 603])
def test_callee_failure_reaches_the_caller_with_its_status(loop: asyncio.AbstractEventLoop, status: int) -> None:
    rig = Rig(loop)
    egress, offer = bridge(rig)
    rig.run(rig.board.start_bridged_call(egress, "1000", offer))
    (out_invite,) = rig.sip.take()
    callee_reply(rig, status, out_invite)  # type: ignore[arg-type]
    rig.sip.take()
    assert rig.events[9][-1]["type"] == "Disconnect" and rig.events[9][-1]["status"] == status
    assert rig.events[1][-1]["type"] == "BreakBridge" and rig.events[1][-1]["status"] == status
    rig.controls[1].disconnect()
    assert statuses(rig.sip.take()) == [status]
    rig.assert_nothing_left()


# ---------------------------------------------------------------------- who may call, dial out
def test_a_stranger_gets_403_before_any_call_exists(loop: asyncio.AbstractEventLoop) -> None:
    rig = Rig(loop)
    rig.sip.deliver(invite(), ("192.0.2.9", 5060))
    assert statuses(rig.sip.take()) == [100, 403]
    assert rig.events == {} and rig.media == []
    rig.assert_nothing_left()


def test_the_app_sees_who_called_never_the_invites_own_claim(loop: asyncio.AbstractEventLoop) -> None:
    rig = Rig(loop)
    forged = invite().replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\nX-Softswitch-Caller: trunk:bank\r\n")
    rig.sip.deliver(forged, PHONE)
    assert rig.controls[1].request_data("X-Softswitch-Caller") == "local"
    assert rig.controls[1].request_fields()["x-softswitch-caller"] == "local"  # type: ignore[index]


def test_a_user_without_dial_out_reaches_no_gateway(loop: asyncio.AbstractEventLoop) -> None:
    rig = Rig(loop)
    egress, offer = bridge(rig)
    call = next(iter(rig.engine.calls.values()))
    call.caller = Caller(CallerKind.USER, "alice", False, "192.0.2.5")  # as a 407-proven alice would be
    with pytest.raises(CallError, match="no dial_out permission") as refused:
        rig.run(rig.board.start_bridged_call(egress, "1000", offer))
    assert refused.value.status == 403 and rig.sip.take() == []  # no INVITE left the switch
    assert call.bridge is not None and call.bridge.failure_status == 403
    rig.controls[1].disconnect()
    assert statuses(rig.sip.take()) == [403]


def test_observers_hear_of_each_call_once_with_every_leg_and_its_figures(loop: asyncio.AbstractEventLoop) -> None:
    rig = Rig(loop)
    closed: list[Call] = []
    rig.engine.observers.append(closed.append)
    rig.engine.observers.insert(0, lambda call: 1 / 0)  # a broken observer changes nothing
    egress, offer = bridge(rig)
    rig.run(rig.board.start_bridged_call(egress, "1000", offer))
    (out_invite,) = rig.sip.take()
    callee_reply(rig, 486, out_invite)  # type: ignore[arg-type]
    rig.sip.take()
    rig.controls[9].task_ended("egress.js:4: Error: boom")
    rig.controls[1].disconnect()
    rig.sip.take()
    (call,) = closed
    ingress, outbound = call.history
    assert (ingress.end_status, outbound.end_status, outbound.ended_by_peer) == (486, 486, True)
    assert set(call.rtp_stats) == {outbound}  # the caller was never answered: no media opened
    assert call.task_errors == {outbound: "egress.js:4: Error: boom"}
    rig.assert_nothing_left()


# ---------------------------------------------------------------------- Max-Forwards
def test_an_invite_with_max_forwards_0_is_ours_to_answer(loop: asyncio.AbstractEventLoop) -> None:
    # RFC 4475 §3.3.11: the endpoint processes it as if the value were positive.
    rig = Rig(loop)
    rig.sip.deliver(invite().replace(b"Max-Forwards: 70", b"Max-Forwards: 0"), PHONE)
    rig.run(rig.controls[1].accept())
    trying, ok = rig.sip.take()
    assert (trying.status, ok.status) == (100, 200)
    rig.sip.deliver(from_caller("ACK", ok, 1), PHONE)
    rig.sip.deliver(from_caller("BYE", ok, 2), PHONE)
    assert statuses(rig.sip.take()) == [200]
    rig.assert_nothing_left()


def test_max_forwards_0_goes_no_further_than_us(loop: asyncio.AbstractEventLoop) -> None:
    # RFC 7332 §3 / RFC 3261 §16.3: the callee's INVITE would need Max-Forwards -1: 483.
    rig = Rig(loop)
    egress, offer = bridge(rig, invite().replace(b"Max-Forwards: 70", b"Max-Forwards: 0"))
    with pytest.raises(CallError, match="Max-Forwards: 0, so it may go no further") as refused:
        rig.run(rig.board.start_bridged_call(egress, "1000", offer))
    assert refused.value.status == 483 and rig.sip.take() == [] and rig.media == []
    rig.controls[1].disconnect()
    assert statuses(rig.sip.take()) == [483]  # the caller hears why
    rig.assert_nothing_left()


@pytest.mark.parametrize("caller, callee", [(b"Max-Forwards: 10", "9"), (b"", "70")])
def test_the_callees_invite_carries_the_callers_hop_count_less_one(
        loop: asyncio.AbstractEventLoop, caller: bytes, callee: str) -> None:
    rig = Rig(loop)
    egress, offer = bridge(rig, invite().replace(b"Max-Forwards: 70\r\n", caller + b"\r\n" if caller else b""))
    rig.run(rig.board.start_bridged_call(egress, "1000", offer))
    (out_invite,) = rig.sip.take()
    assert out_invite.get("max-forwards") == callee  # none from the caller (RFC 2543): a fresh 70
    callee_reply(rig, 486, out_invite)
    rig.sip.take()
    rig.controls[1].disconnect()
    assert statuses(rig.sip.take()) == [486]
    rig.assert_nothing_left()
