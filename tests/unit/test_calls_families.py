"""IPv6 and host names in the call engine, over a real transaction layer with no sockets
(the rig of test_calls_engine): IPv6 offers get IPv6 media or 488, an IPv6 caller bridges
to an IPv4 callee, a destination's name is resolved before its INVITE, and an in-dialog
request to a named Contact waits for its lookup (in order) instead of reaching sendto().
The route probe and the DNS are fakes."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from switch.calls.addressing import LocalAddresses
from switch.calls.leg import SendStateless
from switch.calls.routing import OutboundRoutes
from switch.sip.dns_records import Address, DnsRecords, Srv
from switch.sip.locator import dns_lookup
from switch.sip.message import SipRequest, SipResponse, make_response
from switch.sip.resolver import Resolver
from switch.tasks import events
from switch.tasks.boundary import CallError
from test_calls_addressing import DUAL_ROUTES, Probe
from test_calls_engine import CALLEE, PHONE, SDP, Rig, bridge, callee_reply, from_caller, invite, statuses
from test_sip_locator import FakeZone
from test_sip_resolver import FakeDns

V4, V6 = socket.AF_INET, socket.AF_INET6
PHONE6 = ("::1", 5070)
SDP6 = SDP.replace(b"IN IP4 127.0.0.1", b"IN IP6 ::1")


def invite6(call_id: str = "c6", sdp: bytes = SDP6) -> bytes:
    """The rig's INVITE from an IPv6 phone: [::1] in the Request-URI, Via and Contact."""
    head, body = invite(call_id, sdp).split(b"\r\n\r\n", 1)
    return head.replace(b"127.0.0.1", b"[::1]") + b"\r\n\r\n" + body


def dual_stack(rig: Rig, dns: FakeDns | None = None) -> Rig:
    """The rig as a switch listening on [::] (both families), with a fake route probe."""
    rig.sip.local_addr = ("::", 5060)  # type: ignore[misc]
    rig.engine.addresses = LocalAddresses(lambda: rig.sip.local_addr, None, Probe(dict(DUAL_ROUTES)))
    if dns is not None:
        with_dns(rig, dns)
    return rig


def with_dns(rig: Rig, dns: FakeDns) -> FakeDns:
    rig.engine.resolver = Resolver(rig.loop, lambda: rig.engine.addresses.families, lookup=dns)  # type: ignore[arg-type]
    return dns


def sent(rig: Rig) -> list[tuple[Any, tuple[str, int]]]:
    """What went on the wire since the last look, with where it went."""
    out, rig.sip.wire = rig.sip.wire, []
    return out


def answer(rig: Rig, message: bytes, source: tuple[str, int]) -> SipResponse:
    rig.sip.deliver(message, source)
    rig.run(rig.controls[len(rig.controls)].accept())
    trying, ok = rig.sip.take()
    assert isinstance(ok, SipResponse) and (trying.status, ok.status) == (100, 200), statuses([trying, ok])
    return ok


# ---------------------------------------------------------------------- IPv6 media
def test_an_ipv6_call_on_a_dual_stack_switch_gets_ipv6_sip_and_media(loop: asyncio.AbstractEventLoop) -> None:
    rig = dual_stack(Rig(loop))
    ok = answer(rig, invite6(), PHONE6)
    assert b"c=IN IP6 ::1" in ok.body and b"o=- " in ok.body and b"IN IP4" not in ok.body
    assert ok.get("contact") == "<sip:[::1]:5060>"  # RFC 5118 §4.4: the port after the ]
    assert rig.families == [V6]  # the RTP socket is IPv6
    rig.sip.deliver(from_caller("ACK", ok, 1).replace(b"127.0.0.1", b"[::1]"), PHONE6)
    rig.sip.deliver(from_caller("BYE", ok, 2).replace(b"127.0.0.1", b"[::1]"), PHONE6)
    assert [(m.status, addr) for m, addr in sent(rig)] == [(200, PHONE6)]
    rig.assert_nothing_left()


def test_an_ipv6_offer_over_ipv4_sip_is_answered_from_our_ipv6_address(loop: asyncio.AbstractEventLoop) -> None:
    rig = dual_stack(Rig(loop))
    ok = answer(rig, invite("c1", SDP6), PHONE)
    assert b"c=IN IP6 ::1" in ok.body and ok.get("contact") == "<sip:127.0.0.1:5060>"
    assert rig.families == [V6]


@pytest.mark.parametrize("listen, message, source", [
    (("127.0.0.1", 5060), invite("c1", SDP6), PHONE),  # an IPv6 offer to an IPv4-only switch
    (("::1", 5060), invite6("c1", SDP), PHONE6),  # an IPv4 offer to an IPv6-only one
])
def test_an_offer_in_a_family_we_do_not_serve_gets_488_before_any_call(
        loop: asyncio.AbstractEventLoop, listen: tuple[str, int], message: bytes, source: tuple[str, int]) -> None:
    rig = Rig(loop)
    rig.sip.local_addr = listen  # type: ignore[misc]
    rig.sip.deliver(message, source)
    trying, refused = rig.sip.take()
    assert statuses([trying, refused]) == [100, 488]
    assert (refused.get("warning") or "").startswith('301 - "the offer\'s audio is IN IP')
    assert rig.events == {} and rig.media == [] and rig.engine.refusals == {"bad-sdp": 1}
    rig.assert_nothing_left()


def test_an_ipv6_offer_on_a_host_without_ipv6_gets_488(loop: asyncio.AbstractEventLoop) -> None:
    rig = Rig(loop)
    rig.sip.local_addr = ("::", 5060)  # type: ignore[misc]
    rig.engine.addresses = LocalAddresses(lambda: rig.sip.local_addr, None, Probe({"127.0.0.1": "127.0.0.1"}))
    rig.sip.deliver(invite("c1", SDP6), PHONE)  # no IPv6 route anywhere: no address to answer from
    assert statuses(rig.sip.take()) == [100, 488] and rig.events == {}
    rig.assert_nothing_left()


def test_an_ipv6_caller_bridged_to_an_ipv4_callee(loop: asyncio.AbstractEventLoop) -> None:
    rig = dual_stack(Rig(loop))
    egress, offer = bridge(rig, invite6(), PHONE6)
    rig.run(rig.board.start_bridged_call(egress, "1000", offer))
    ((out_invite, to),) = sent(rig)
    assert isinstance(out_invite, SipRequest) and to == CALLEE
    assert b"c=IN IP4 127.0.0.1" in out_invite.body and "127.0.0.1:5060" in (out_invite.get("contact") or "")
    callee_reply(rig, 200, out_invite, SDP)
    assert statuses(rig.sip.take()) == ["ACK"]
    rig.run(asyncio.sleep(0.01))  # the bridge answers the caller
    ((ok, to),) = sent(rig)
    assert isinstance(ok, SipResponse) and ok.status == 200 and to == PHONE6 and b"c=IN IP6 ::1" in ok.body
    assert rig.families == [V4, V6]  # the callee's socket (opened to dial), then the caller's
    rig.sip.deliver(from_caller("ACK", ok, 1).replace(b"127.0.0.1", b"[::1]"), PHONE6)
    call = next(iter(rig.engine.calls.values()))
    assert call.bridge is not None and call.bridge.relay is not None  # media joined across families
    rig.sip.deliver(from_caller("BYE", ok, 2).replace(b"127.0.0.1", b"[::1]"), PHONE6)
    out = sent(rig)
    assert [(statuses([m])[0], addr) for m, addr in out] == [(200, PHONE6), ("BYE", CALLEE)]
    rig.sip.deliver(make_response(out[1][0], 200), CALLEE)
    rig.assert_nothing_left()


def test_an_ipv4_caller_bridged_to_an_ipv6_gateway_is_offered_ipv6_media(loop: asyncio.AbstractEventLoop) -> None:
    rig = dual_stack(Rig(loop))
    rig.engine.router.gateways = OutboundRoutes("sip:[2001:db8::9]:5090")
    egress, offer = bridge(rig, invite(), PHONE)
    rig.run(rig.board.start_bridged_call(egress, "1000", offer))
    ((out_invite, to),) = sent(rig)
    assert isinstance(out_invite, SipRequest) and to == ("2001:db8::9", 5090)
    assert out_invite.uri == "sip:1000@[2001:db8::9]:5090"
    # Our addresses in the callee's family, every one a valid hostport (RFC 5118 §4.4).
    assert out_invite.via.sent_by == "[fd00::2]:5060" and out_invite.get("contact") == "<sip:[fd00::2]:5060>"
    assert out_invite.from_.sip_uri.host == "[fd00::2]"
    assert b"c=IN IP6 fd00::2" in out_invite.body and rig.families == [V6]


# ---------------------------------------------------------------------- names, resolved off the loop
def test_a_gateway_name_is_resolved_before_the_invite(loop: asyncio.AbstractEventLoop) -> None:
    rig = Rig(loop)
    dns = with_dns(rig, FakeDns({"gw.example.net": [(V6, "2001:db8::1"), (V4, "127.0.0.1")]}))
    rig.engine.router.gateways = OutboundRoutes("sip:gw.example.net:5090")
    egress, offer = bridge(rig, invite(), PHONE)
    rig.run(rig.board.start_bridged_call(egress, "1000", offer))
    ((out_invite, to),) = sent(rig)
    assert to == CALLEE  # the IPv4 address: this switch serves IPv4 only
    assert out_invite.uri == "sip:1000@gw.example.net:5090"  # the Request-URI keeps the name
    assert dns.asked == ["gw.example.net"] and rig.engine.resolver.cached(("gw.example.net", 5090)) == CALLEE
    callee_reply(rig, 486, out_invite)
    rig.sip.take()
    rig.controls[1].disconnect()
    assert statuses(rig.sip.take()) == [486]
    rig.assert_nothing_left()


@pytest.mark.parametrize("gateway, dns, status, why", [
    ("sip:gw.example.net:5090", {"gw.example.net": socket.gaierror(socket.EAI_NONAME, "Name or service not known")},
     404, "cannot send to 'gw.example.net': .*not known"),
    ("sip:gw.example.net:5090", {"gw.example.net": socket.gaierror(socket.EAI_AGAIN, "Temporary failure")},
     503, "cannot send to 'gw.example.net': .*Temporary failure"),
    ("sip:[2001:db8::1]:5090", {}, 503, "cannot send to '2001:db8::1': it is IPv6 only and the switch listens on IPv4"),
])
def test_a_destination_we_cannot_reach_fails_the_verb_and_the_caller_hears_why(
        loop: asyncio.AbstractEventLoop, gateway: str, dns: dict[str, Any], status: int, why: str) -> None:
    rig = Rig(loop)
    with_dns(rig, FakeDns(dns))
    rig.engine.router.gateways = OutboundRoutes(gateway)
    egress, offer = bridge(rig, invite(), PHONE)
    with pytest.raises(CallError, match=f"StartBridgedCall: {why}") as failed:
        rig.run(rig.board.start_bridged_call(egress, "1000", offer))
    assert failed.value.status == status and rig.sip.take() == [] and rig.media == []  # no INVITE, no socket
    assert len(rig.engine.legs) == 1  # no leg was made for it
    rig.controls[1].disconnect()
    assert statuses(rig.sip.take()) == [status]
    rig.assert_nothing_left()


def test_the_caller_hanging_up_during_the_lookup_places_no_call(loop: asyncio.AbstractEventLoop) -> None:
    rig = Rig(loop)
    dns = with_dns(rig, FakeDns({"gw.example.net": [(V4, "127.0.0.1")]}))
    dns.gate = loop.create_future()
    rig.engine.router.gateways = OutboundRoutes("sip:gw.example.net:5090")
    egress, offer = bridge(rig, invite(), PHONE)
    dialling = loop.create_task(rig.board.start_bridged_call(egress, "1000", offer))
    rig.run(asyncio.sleep(0.01))
    rig.controls[1].disconnect()
    assert statuses(rig.sip.take()) == [480]
    dns.gate.set_result(None)
    with pytest.raises(CallError, match="the bridge is gone|the call has ended"):
        rig.run(dialling)
    assert rig.sip.take() == [] and rig.media == []
    rig.assert_nothing_left()


def named_contact_call(rig: Rig, dns: FakeDns) -> SipResponse:
    """An answered call whose caller's Contact (our BYE's target) is a host name."""
    with_dns(rig, dns)
    named = invite().replace(b"Contact: <sip:alice@127.0.0.1:5070>", b"Contact: <sip:alice@phone.example:5070>")
    ok = answer(rig, named, PHONE)
    rig.sip.deliver(from_caller("ACK", ok, 1), PHONE)
    return ok


def test_a_bye_to_a_named_contact_waits_for_the_lookup_and_keeps_the_legs_order(
        loop: asyncio.AbstractEventLoop) -> None:
    rig = Rig(loop)
    dns = FakeDns({"phone.example": [(V4, "127.0.0.1")]})
    dns.gate = loop.create_future()
    named_contact_call(rig, dns)
    rig.controls[1].disconnect()
    assert rig.sip.take() == []  # nothing reached the transport with a name in it
    leg = rig.controls[1].leg
    assert leg.dialog is not None
    later = leg.dialog.create_request("OPTIONS", leg.local.sent_by)
    leg.outbox.append(SendStateless(later, PHONE))  # an IP, yet queued behind the held BYE
    rig.engine.transmit(leg)
    assert rig.sip.take() == []
    dns.gate.set_result(None)
    rig.run(asyncio.sleep(0.01))
    out = sent(rig)
    assert [(m.method, addr) for m, addr in out] == [("BYE", PHONE), ("OPTIONS", PHONE)]
    assert out[0][0].uri == "sip:alice@phone.example:5070"  # the Request-URI keeps the name
    rig.sip.deliver(make_response(out[0][0], 200), PHONE)
    rig.assert_nothing_left()
    assert dns.asked == ["phone.example"]


def test_a_bye_whose_name_does_not_resolve_ends_the_dialog_as_a_503(loop: asyncio.AbstractEventLoop,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig(loop)
    named_contact_call(rig, FakeDns({"phone.example": socket.gaierror(socket.EAI_NONAME, "Name or service not known")}))
    rig.controls[1].disconnect()
    rig.run(asyncio.sleep(0.01))
    assert rig.sip.take() == []
    assert "BYE not sent: cannot send to 'phone.example'" in caplog.text
    rig.assert_nothing_left()  # the leg took it as its BYE's answer (RFC 3261 §8.1.3.1) and was retired


def test_shutdown_stops_waiting_for_lookups(loop: asyncio.AbstractEventLoop) -> None:
    rig = Rig(loop)
    dns = FakeDns({"phone.example": [(V4, "127.0.0.1")]})
    dns.gate = loop.create_future()  # the DNS never answers
    named_contact_call(rig, dns)
    ending = rig.engine.stop_all("switch shutting down")
    assert rig.sip.take() == [] and not any(f.done() for f in ending)
    rig.engine.close()
    rig.run(asyncio.sleep(0.01))
    assert rig.engine._held == {} and rig.engine._lookups == set()
    assert events.disconnect(None, "switch shutting down") in rig.events[1]


# ---------------------------------------------------------------------- RFC 3263: SRV servers, failover
SERVERS = {("_sip._udp.gw.test", "SRV"): [Srv(10, 0, 5071, "gw1.test"), Srv(20, 0, 5072, "gw2.test")],
           ("gw1.test", "A"): [Address(V4, "127.0.0.1")], ("gw2.test", "A"): [Address(V4, "127.0.0.2")]}
FIRST, SECOND = ("127.0.0.1", 5071), ("127.0.0.2", 5072)


def srv_gateway(rig: Rig, failover_timeout: float = 4.0) -> FakeZone:
    """The rig with its default gateway at sip:gw.test (no port): two SRV servers."""
    zone = FakeZone(SERVERS)
    rig.engine.dns = DnsRecords(("127.0.0.1:5353",), clock=rig.loop.time, query=zone)
    rig.engine.resolver = Resolver(rig.loop, lambda: rig.engine.addresses.families, lookup=dns_lookup(rig.engine.dns))
    rig.engine.router.gateways = OutboundRoutes("sip:gw.test")
    rig.engine.failover_timeout = failover_timeout
    return zone


def test_an_invite_answered_503_goes_to_the_next_srv_server_as_a_new_transaction(
        loop: asyncio.AbstractEventLoop) -> None:
    rig = Rig(loop)
    srv_gateway(rig)
    egress, offer = bridge(rig, invite(), PHONE)
    rig.run(rig.board.start_bridged_call(egress, "1000", offer))
    ((first, to),) = sent(rig)
    assert to == FIRST and first.uri == "sip:1000@gw.test"  # the Request-URI keeps the name (RFC 3263 §4)
    rig.sip.deliver(make_response(first, 503, to_tag="busy"), FIRST)
    (ack, to1), (second, to2) = sent(rig)  # (and nothing to the caller: it hears nothing of the 503)
    assert (ack.method, to1) == ("ACK", FIRST) and to2 == SECOND  # the transaction layer ACKed the 503
    # §4.3: the same request, a new Via branch (a new transaction).
    assert (second.call_id, second.from_tag, str(second.cseq.number), second.body) == (
        first.call_id, first.from_tag, str(first.cseq.number), first.body)
    assert second.via.branch != first.via.branch
    rig.sip.deliver(make_response(second, 486, to_tag="callee"), SECOND)
    sent(rig)
    rig.controls[1].disconnect()
    assert statuses(rig.sip.take()) == [486]  # the last server's answer is the call's
    rig.assert_nothing_left()


def failed_over_from_a_silent_server(loop: asyncio.AbstractEventLoop) -> tuple[Rig, Any, Any, tuple[str, int]]:
    """A bridged call to sip:gw.test whose first SRV server never answered: after the
    0.05 s failover timeout its INVITE went to the second. (rig, first INVITE, second
    INVITE, where the second went)."""
    rig = Rig(loop)
    srv_gateway(rig, failover_timeout=0.05)
    egress, offer = bridge(rig, invite(), PHONE)
    rig.run(rig.board.start_bridged_call(egress, "1000", offer))
    ((first, _),) = sent(rig)
    rig.run(asyncio.sleep(0.1))
    ((second, to),) = sent(rig)
    return rig, first, second, to


def test_a_server_that_does_not_answer_at_all_is_given_up_after_the_failover_timeout(
        loop: asyncio.AbstractEventLoop) -> None:
    rig, first, second, to = failed_over_from_a_silent_server(loop)
    assert to == SECOND and second.via.branch != first.via.branch
    assert rig.engine._silent == {}  # the last server keeps the whole Timer B
    rig.sip.layer.handle_timer(rig.loop.time() + 0.6)  # past Timer A (T1 0.5 s): only the
    rig.sip._service()  # second server's INVITE goes again; the first lingers silently
    assert [(m.method, m.via.branch, to) for m, to in sent(rig)] == [("INVITE", second.via.branch, SECOND)]
    rig.sip.deliver(make_response(second, 100), SECOND)
    rig.sip.deliver(make_response(second, 180, to_tag="callee"), SECOND)
    assert statuses(rig.sip.take()) == [180]  # ringing reaches the caller
    rig.sip.deliver(make_response(first, 180, to_tag="late"), FIRST)  # the abandoned server, too late
    assert rig.sip.take() == []
    rig.sip.deliver(make_response(second, 486, to_tag="callee"), SECOND)
    rig.controls[1].disconnect()
    assert statuses(rig.sip.take()) == ["ACK", 486]
    rig.assert_nothing_left()


@pytest.mark.parametrize("late", [200, 503])
def test_a_late_answer_from_a_server_given_up_on_is_acked_and_a_2xx_hung_up(
        loop: asyncio.AbstractEventLoop, late: int) -> None:
    """RFC 3263 §4.3 moved the INVITE on; the first server was only slow. Its failure is
    ACKed (RFC 3261 §17.1.1.2), its 2xx ACKed and hung up (§13.2.2.4: every 2xx is ACKed),
    and the call goes on with the second server."""
    rig, first, second, _ = failed_over_from_a_silent_server(loop)
    rig.sip.deliver(make_response(second, 180, to_tag="callee"), SECOND)
    assert statuses(rig.sip.take()) == [180]
    slow = make_response(first, late, to_tag="slow")
    slow.set("contact", f"<sip:gw@{FIRST[0]}:{FIRST[1]}>")
    rig.sip.deliver(slow, FIRST)
    out = sent(rig)
    assert [(m.method, to) for m, to in out] == ([("ACK", FIRST), ("BYE", FIRST)] if late == 200 else [("ACK", FIRST)])
    assert all(m.to_tag == "slow" and m.call_id == first.call_id for m, _ in out)
    assert rig.sip.take() == []  # the caller hears nothing of it
    ok = make_response(second, 200, to_tag="callee")
    ok.set("contact", f"<sip:gw@{SECOND[0]}:{SECOND[1]}>")
    rig.sip.deliver(ok, SECOND)
    rig.run(asyncio.sleep(0.01))
    assert ("ACK", SECOND) in [(getattr(m, "method", m), to) for m, to in sent(rig)]  # the second's answer is the call
    assert rig.engine.calls and all(not leg.ended for leg in next(iter(rig.engine.calls.values())).legs)


def test_a_server_that_answers_keeps_the_call_even_if_slowly(loop: asyncio.AbstractEventLoop) -> None:
    rig = Rig(loop)
    srv_gateway(rig, failover_timeout=0.05)
    egress, offer = bridge(rig, invite(), PHONE)
    rig.run(rig.board.start_bridged_call(egress, "1000", offer))
    ((first, _),) = sent(rig)
    rig.sip.deliver(make_response(first, 100), FIRST)  # alive: RFC 3261 §17.2.1's 100 Trying
    rig.run(asyncio.sleep(0.1))
    assert sent(rig) == [] and rig.engine._silent == {}
    rig.sip.deliver(make_response(first, 486, to_tag="callee"), FIRST)  # its answer is the call's: no failover
    rig.controls[1].disconnect()
    assert statuses(rig.sip.take()) == ["ACK", 486]
    rig.assert_nothing_left()
