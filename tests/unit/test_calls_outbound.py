"""OutboundLeg's UAC rules that SIPp cannot easily provoke (fakes, no sockets)."""

import asyncio
from types import SimpleNamespace

from switch.calls.outbound import OutboundLeg
from switch.sip.events import ResponseReceived
from switch.sip.message import make_response, parse_message
from switch.sip.uri import SipUri


class FakeSip:
    def __init__(self):
        self.stateless, self.requests = [], []
        self.streams = {}  # no TCP connections: the callee is reached over UDP

    def send_stateless(self, msg, addr):
        self.stateless.append(msg)

    def send_request(self, msg, addr):
        self.requests.append(msg)
        return SimpleNamespace(terminated=False)


def make_leg():
    loop = asyncio.new_event_loop()
    sip = FakeSip()
    engine = SimpleNamespace(
        loop=loop, sip=sip, ALLOW="INVITE, ACK, BYE", local_ip_for=lambda host: "127.0.0.1",
        contact_for=lambda ip, tcp=False: f"<sip:{ip}:5070>", via_sent_by=lambda ip: f"{ip}:5070",
        dialog_established=lambda leg: None, forget=lambda leg: None,
    )
    leg = OutboundLeg(engine, SipUri.parse("sip:1000@127.0.0.1:5090"), ("127.0.0.1", 5090), None, ("PCMU", "PCMA"))
    leg.invite = leg._build_invite(b"")
    leg.txn = SimpleNamespace()
    events = []
    leg.notify = events.append
    loop.close()
    return leg, sip, events


def answer(leg, tag):
    resp = make_response(leg.invite, 200, to_tag=tag, headers={"contact": f"<sip:callee-{tag}@127.0.0.1:5090>"})
    return ResponseReceived(leg.txn, parse_message(bytes(resp)))


def test_retransmitted_2xx_is_acked_again_and_a_forked_2xx_is_acked_then_hung_up():
    leg, sip, events = make_leg()
    leg.on_response(answer(leg, "first"))
    assert [e["type"] for e in events] == ["CallCompleted"]
    assert [m.method for m in sip.stateless] == ["ACK"]
    leg.on_response(answer(leg, "first"))  # retransmission of the same 2xx
    assert [m.method for m in sip.stateless] == ["ACK", "ACK"] and sip.requests == []
    leg.on_response(answer(leg, "second"))  # another branch of a fork answered too
    assert [m.method for m in sip.stateless] == ["ACK", "ACK", "ACK"]
    assert sip.stateless[-1].to_tag == "second"
    (bye,) = sip.requests
    assert bye.method == "BYE" and bye.to_tag == "second" and bye.uri == "sip:callee-second@127.0.0.1:5090"
    assert leg.dialog.remote_tag == "first" and len(events) == 1  # the call itself is untouched
