"""The RFC 3261 §17 transaction machines on virtual time (no sockets, no sleeping)."""

from switch.sip.events import AckReceived, AckTimedOut, RequestReceived, ResponseReceived, TransactionTimedOut
from switch.sip.message import SipRequest, make_response, parse_message
from switch.sip.transaction import State, TransactionLayer, make_cancel, new_branch

PEER = ("127.0.0.1", 5061)


def invite(branch="z9hG4bK-a", cseq=1, method="INVITE", to_tag=None, rport=False):
    to = "<sip:svc@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    via = f"SIP/2.0/UDP 127.0.0.1:5061;branch={branch}" + (";rport" if rport else "")
    return parse_message(
        f"{method} sip:svc@127.0.0.1 SIP/2.0\r\nVia: {via}\r\n"
        f"From: <sip:c@127.0.0.1>;tag=f1\r\nTo: {to}\r\nCall-ID: call-1\r\n"
        f"CSeq: {cseq} {method}\r\nContact: <sip:c@127.0.0.1:5061>\r\nContent-Length: 0\r\n\r\n".encode()
    )


def sent(layer):
    return [parse_message(data) for data, _ in layer.datagrams_to_send()]


def events(layer):
    out = []
    while (ev := layer.next_event()) is not None:
        out.append(ev)
    return out


def test_invite_server_sends_100_and_absorbs_retransmission():
    layer = TransactionLayer()
    layer.receive(invite(), PEER, 0.0)
    (ev,) = events(layer)
    assert isinstance(ev, RequestReceived)
    assert [m.status for m in sent(layer)] == [100]
    layer.receive(invite(), PEER, 0.5)  # retransmission: answered from the transaction
    assert events(layer) == []
    assert [m.status for m in sent(layer)] == [100]


def test_2xx_retransmitted_until_ack_timer_g():
    layer = TransactionLayer()
    layer.receive(invite(), PEER, 0.0)
    (ev,) = events(layer)
    sent(layer)
    layer.send_response(ev.transaction, make_response(ev.request, 200, to_tag="t"), 0.0)
    assert [m.status for m in sent(layer)] == [200]
    times = []
    now = 0.0
    while (deadline := layer.get_timer()) is not None and deadline < 3.6:
        now = deadline
        layer.handle_timer(now)
        if sent(layer):
            times.append(now)
    assert times == [0.5, 1.5, 3.5]  # T1, then doubling
    ack = invite(branch="z9hG4bK-ack", method="ACK", to_tag="t")
    ack.set("cseq", "1 ACK")
    layer.receive(ack, PEER, 3.6)
    assert isinstance(events(layer)[0], AckReceived)
    layer.handle_timer(10.0)
    assert sent(layer) == []  # no more 2xx after the ACK
    layer.receive(invite(), PEER, 10.0)  # a late INVITE retransmission: absorbed until Timer L
    assert events(layer) == [] and sent(layer) == [] and len(layer) == 1
    layer.handle_timer(32.0)
    assert len(layer) == 0


def test_2xx_without_ack_reports_ack_timeout_at_64_t1():
    layer = TransactionLayer()
    layer.receive(invite(), PEER, 0.0)
    (ev,) = events(layer)
    layer.send_response(ev.transaction, make_response(ev.request, 200, to_tag="t"), 0.0)
    layer.handle_timer(31.9)
    assert events(layer) == []
    layer.handle_timer(32.0)
    (timeout,) = events(layer)
    assert isinstance(timeout, AckTimedOut) and timeout.transaction is ev.transaction


def test_error_response_completed_ack_confirms():
    layer = TransactionLayer()
    layer.receive(invite(), PEER, 0.0)
    (ev,) = events(layer)
    layer.send_response(ev.transaction, make_response(ev.request, 486, to_tag="t"), 0.0)
    sent(layer)
    layer.handle_timer(0.5)
    assert [m.status for m in sent(layer)] == [486]  # Timer G
    ack = invite(method="ACK", to_tag="t")  # same branch as the INVITE (§17.1.1.3)
    ack.set("cseq", "1 ACK")
    layer.receive(ack, PEER, 0.6)
    assert events(layer) == []  # ACK of a failure is absorbed, not given to the TU
    layer.receive(ack, PEER, 1.0)  # retransmitted ACK: still absorbed (Timer I)
    layer.receive(invite(), PEER, 1.0)  # and so is a late INVITE: no new call, no reply
    assert events(layer) == [] and sent(layer) == [] and len(layer) == 1
    layer.handle_timer(0.6 + 5.0)
    assert len(layer) == 0


def test_error_response_without_ack_timer_h():
    layer = TransactionLayer()
    layer.receive(invite(), PEER, 0.0)
    (ev,) = events(layer)
    layer.send_response(ev.transaction, make_response(ev.request, 486, to_tag="t"), 0.0)
    layer.handle_timer(31.99)
    assert ev.transaction.state is State.COMPLETED
    layer.handle_timer(32.0)
    assert ev.transaction.state is State.TERMINATED


def test_cancel_finds_invite_and_is_its_own_transaction():
    layer = TransactionLayer()
    layer.receive(invite(), PEER, 0.0)
    (inv,) = events(layer)
    cancel = invite(method="CANCEL")
    layer.receive(cancel, PEER, 0.1)
    (ev,) = events(layer)
    assert ev.request.method == "CANCEL" and ev.transaction is not inv.transaction
    assert layer.find_invite(ev.request) is inv.transaction


def test_rport_and_received_stamped_and_used():
    layer = TransactionLayer()
    layer.receive(invite(rport=True), ("10.1.1.1", 40000), 0.0)
    (ev,) = events(layer)
    assert ev.request.via.params["received"] == "10.1.1.1"
    assert ev.request.via.params["rport"] == "40000"
    assert layer.datagrams_to_send()[0][1] == ("10.1.1.1", 40000)


def test_rfc2543_peer_without_magic_cookie():
    layer = TransactionLayer()
    layer.receive(invite(branch="oldstyle"), PEER, 0.0)
    assert len(events(layer)) == 1
    layer.receive(invite(branch="oldstyle"), PEER, 0.2)
    assert events(layer) == []


def test_finished_transactions_are_remembered_as_untracked_data():
    import gc

    layer = TransactionLayer()
    for i in range(100):
        layer.receive(invite(branch=f"z9hG4bK-{i}", method="BYE", to_tag="t"), PEER, 0.0)
        (ev,) = events(layer)
        layer.send_response(ev.transaction, make_response(ev.request, 200), 0.0)
    del ev
    gc.collect()
    gc.collect()  # a tuple is untracked once its members are: the inner ones first
    assert len(layer) == 100
    assert not any(gc.is_tracked(v) for v in layer._lingering.values())  # nothing for a full GC to walk


def test_non_invite_server_resends_final():
    layer = TransactionLayer()
    bye = invite(method="BYE", to_tag="t")
    layer.receive(bye, PEER, 0.0)
    (ev,) = events(layer)
    assert sent(layer) == []  # no 100 for non-INVITE
    layer.send_response(ev.transaction, make_response(bye, 200), 0.0)
    sent(layer)
    layer.receive(invite(method="BYE", to_tag="t"), PEER, 1.0)
    assert [m.status for m in sent(layer)] == [200] and events(layer) == []
    layer.handle_timer(32.0)
    assert len(layer) == 0


def client_invite():
    req = invite(branch=new_branch())
    return req


def test_invite_client_timer_a_and_b():
    layer = TransactionLayer()
    txn = layer.send_request(client_invite(), PEER, 0.0)
    retransmits = []
    while (deadline := layer.get_timer()) is not None:
        layer.handle_timer(deadline)
        if layer.datagrams_to_send():
            retransmits.append(deadline)
        if txn.terminated:
            break
    assert retransmits[:6] == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    (ev,) = events(layer)
    assert isinstance(ev, TransactionTimedOut) and deadline == 32.0  # Timer B = 64*T1


def test_an_abandoned_invite_is_silent_but_still_acks_a_late_failure_and_ends_at_timer_b():
    # RFC 3263 §4.3 failover: the TU gave up on this server at 0.3 s
    layer = TransactionLayer()
    req = client_invite()
    txn = layer.send_request(req, PEER, 0.0)
    sent(layer)
    layer.abandon(txn)
    layer.handle_timer(1.0)
    assert sent(layer) == [] and events(layer) == []  # Timer A no longer retransmits
    late = make_response(req, 486, to_tag="slow")
    layer.receive(parse_message(bytes(late)), PEER, 2.0)
    assert [m.method for m in sent(layer)] == ["ACK"]  # §17.1.1.2, to stop its retransmissions
    assert [e.response.status for e in events(layer)] == [486]  # the TU knows it gave this one up
    other = layer.send_request(client_invite(), PEER, 3.0)
    layer.abandon(other)
    layer.handle_timer(3.0 + 32.0)
    assert other.terminated and events(layer) == []  # Timer B ends it without a timeout event


def test_invite_client_failure_acks_with_same_branch():
    layer = TransactionLayer()
    req = client_invite()
    txn = layer.send_request(req, PEER, 0.0)
    sent(layer)
    resp = make_response(req, 486, to_tag="callee")
    layer.receive(parse_message(bytes(resp)), PEER, 0.1)
    (ev,) = events(layer)
    assert isinstance(ev, ResponseReceived) and ev.response.status == 486
    (ack,) = sent(layer)
    assert ack.method == "ACK" and ack.via.branch == req.via.branch and ack.to_tag == "callee"
    layer.receive(parse_message(bytes(resp)), PEER, 0.2)  # retransmitted 486: ACK again, no event
    assert events(layer) == [] and [m.method for m in sent(layer)] == ["ACK"]
    assert txn.state is State.COMPLETED


def test_invite_client_2xx_retransmissions_reach_tu():
    layer = TransactionLayer()
    req = client_invite()
    layer.send_request(req, PEER, 0.0)
    ok = parse_message(bytes(make_response(req, 200, to_tag="callee")))
    layer.receive(ok, PEER, 0.1)
    layer.receive(parse_message(bytes(ok)), PEER, 0.6)
    assert [e.response.status for e in events(layer)] == [200, 200]


def test_non_invite_client_timer_e_caps_at_t2_and_f_times_out():
    layer = TransactionLayer()
    req = invite(branch=new_branch(), method="BYE", to_tag="t")
    layer.send_request(req, PEER, 0.0)
    sent(layer)
    times = []
    last = None
    while (deadline := layer.get_timer()) is not None:
        last = deadline
        layer.handle_timer(deadline)
        if layer.datagrams_to_send():
            times.append(deadline)
    assert times[:5] == [0.5, 1.5, 3.5, 7.5, 11.5]  # doubling, capped at T2 = 4 s
    (ev,) = events(layer)
    assert isinstance(ev, TransactionTimedOut) and last == 32.0


def test_cancel_request_shape():
    req = client_invite()
    cancel = make_cancel(req)
    assert cancel.method == "CANCEL" and cancel.via.branch == req.via.branch
    assert cancel.cseq.number == req.cseq.number and cancel.cseq.method == "CANCEL"
    assert isinstance(cancel, SipRequest)


def test_everything_the_layer_sends_names_the_product():
    # RFC 3261 §20.35 Server (responses) and §20.41 User-Agent (requests): the 100 the layer
    # sends by itself, the TU's responses, our requests and the ACK for a failure.
    layer = TransactionLayer(product="softswitch")
    request = invite()
    layer.receive(request, PEER, 0.0)
    (ev,) = events(layer)
    layer.send_response(ev.transaction, make_response(request, 486, to_tag="t"), 0.0)
    assert [(m.status, m.get("server")) for m in sent(layer)] == [(100, "softswitch"), (486, "softswitch")]
    ours = client_invite()
    layer.send_request(ours, PEER, 0.0)
    layer.receive(parse_message(bytes(make_response(ours, 603, to_tag="x"))), PEER, 0.1)
    assert [m.get("user-agent") for m in sent(layer)] == ["softswitch", "softswitch"]  # INVITE, then ACK
    quiet = TransactionLayer()
    quiet.receive(invite(branch="z9hG4bK-b"), PEER, 0.0)
    assert [m.get("server") for m in sent(quiet)] == [None]


def test_an_ack_without_our_2xx_tag_is_not_taken_for_its_ack():
    """Found by the e2e fuzz run: an ACK on the INVITE's branch with no (or another) To tag
    used to count as the 2xx's ACK; the real one was then absorbed and never reached the
    call, and the no-ACK timeout was suppressed with it."""
    layer = TransactionLayer()
    layer.receive(invite(), PEER, 0.0)
    (ev,) = events(layer)
    layer.send_response(ev.transaction, make_response(ev.request, 200, to_tag="sw1"), 0.0)
    stray = invite(method="ACK")  # the INVITE's branch, no To tag
    stray.set("cseq", "1 ACK")
    layer.receive(stray, PEER, 0.1)
    assert [e.request.to_tag for e in events(layer)] == []
    real = invite(method="ACK", to_tag="sw1")
    real.set("cseq", "1 ACK")
    layer.receive(real, PEER, 0.2)
    (ack,) = events(layer)
    assert isinstance(ack, AckReceived) and ack.request.to_tag == "sw1"
    assert ev.transaction.acked


def test_a_2xx_never_properly_acked_still_times_out():
    layer = TransactionLayer()
    layer.receive(invite(), PEER, 0.0)
    (ev,) = events(layer)
    layer.send_response(ev.transaction, make_response(ev.request, 200, to_tag="sw1"), 0.0)
    stray = invite(method="ACK", to_tag="other")
    stray.set("cseq", "1 ACK")
    layer.receive(stray, PEER, 0.1)
    events(layer)
    layer.handle_timer(32.0)
    assert any(isinstance(e, AckTimedOut) for e in events(layer))
