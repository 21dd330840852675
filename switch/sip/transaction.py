"""The four RFC 3261 §17 transaction state machines, sans-I/O.

``TransactionLayer`` is driven like aioquic's connection: feed it parsed
messages with ``receive(msg, addr, now)`` and expired timers with
``handle_timer(now)``; pull ``datagrams_to_send()``, ``next_event()`` and
``get_timer()``. It never touches a socket or the clock, so tests run it on
virtual time (Timer B at 64*T1 is checked without sleeping).

Choices the RFC leaves open, written down here:
- UDP only (reliable-transport timer shortcuts are not needed yet).
- The INVITE server transaction sends 100 Trying at once (§17.2.1 allows it and
  our TU starts a JS task that may take longer than 200 ms to respond).
- RFC 6026's Accepted state is used on both sides: the server transaction
  retransmits its 2xx (Timer G doubling to T2, as §13.3.1.4 asks of the UAS
  core) until the ACK arrives, absorbs INVITE retransmissions until Timer L,
  and reports ``AckTimedOut`` so the TU can send BYE. The client side passes
  retransmitted 2xx to the TU until Timer M so it can re-ACK.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import logging
import os
from typing import Any
from collections import deque

from .events import (
    AckReceived,
    AckTimedOut,
    RequestReceived,
    ResponseReceived,
    SipEvent,
    TransactionTimedOut,
)
from .counts import SipCounts, cseq_method
from .message import MAGIC_COOKIE, SipRequest, SipResponse, make_response

logger = logging.getLogger(__name__)

T1 = 0.5
T2 = 4.0
T4 = 5.0

Addr = tuple[str, int]
# A transaction's identity (RFC 3261 §17.1.3, §17.2.3): the branch with the sent-by and the
# method, or for a request without an RFC 3261 branch the RFC 2543 fields.
Key = tuple[object, ...]


class TransactionError(RuntimeError):
    """The TU asked for something the transaction's state does not allow."""


_branch_prefix = MAGIC_COOKIE + os.urandom(4).hex()
_branch_counter = itertools.count(1)


def new_branch() -> str:
    """A branch unique in space and time (§8.1.1.7): random per process plus a counter."""
    return f"{_branch_prefix}.{next(_branch_counter)}"


class State(enum.Enum):
    TRYING = "Trying"
    CALLING = "Calling"
    PROCEEDING = "Proceeding"
    ACCEPTED = "Accepted"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    TERMINATED = "Terminated"


# §17.1.2.2 and §17.2.2 share one shape (Figures 6 and 8).
_NON_INVITE_TRANSITIONS = {
    State.TRYING: frozenset((State.PROCEEDING, State.COMPLETED, State.TERMINATED)),
    State.PROCEEDING: frozenset((State.COMPLETED, State.TERMINATED)),
    State.COMPLETED: frozenset((State.TERMINATED,)),
    State.TERMINATED: frozenset(),
}


class Transaction:
    """What all four machines share: identity, state with a transition table, timers."""

    TRANSITIONS: dict[State, frozenset[State]] = {}
    kind = "transaction"

    def __init__(self, layer: TransactionLayer, key: Key, request: SipRequest, addr: Addr,
                 state: State, reliable: bool = False) -> None:
        self.layer = layer
        self.reliable = reliable  # over TCP: no retransmissions, no wait for stray copies
        self.key = key
        self.request: SipRequest | None = request  # dropped once only retransmissions remain
        self.method = request.method
        self.call_id = request.call_id
        self.addr = addr
        self.state = state
        self.timers: dict[str, float] = {}

    def _set_state(self, new: State) -> None:
        if new not in self.TRANSITIONS[self.state]:
            raise TransactionError(f"{self.kind}: illegal transition {self.state.value} -> {new.value}")
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s %s %s: %s -> %s", self.kind, self.method, self.key[0],
                         self.state.value, new.value)
        self.state = new
        if new is State.TERMINATED:
            self.layer._stale_timers += len(self.timers)
            self.timers.clear()
            self.layer._forget(self)

    def _start_timer(self, name: str, delay: float, now: float) -> None:
        if self.reliable:
            # §17: a reliable transport does its own retransmission (Timers A and E are
            # not started) and delivers no stray copies to wait for (D, I, J, K are zero).
            if name in ("A", "E"):
                return
            if name in ("D", "I", "J", "K"):
                delay = 0.0
        deadline = now + delay
        self.timers[name] = deadline
        self.layer._schedule(deadline, self, name)

    def _stop_timer(self, name: str) -> None:
        if self.timers.pop(name, None) is not None:
            self.layer._stale_timers += 1

    def on_timer(self, name: str, now: float) -> None:
        raise NotImplementedError

    def _forget_request(self) -> None:
        """Only retransmissions remain to be absorbed or answered: keep bytes, not the
        parsed message. Thousands of these linger for 32 s (Timers J/L) and every object
        they hold makes each full GC pass longer (measured: 27 -> 6 objects each)."""
        self.request = None

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED


# --------------------------------------------------------------------------- server side
class ServerTransaction(Transaction):
    reply: bytes | None = None  # the last response sent, for retransmission
    status = 0  # its status code

    def _send_reply(self, response: SipResponse) -> None:
        self.reply = self.layer.wire(response)
        self.status = response.status
        self.layer._out.append((self.reply, self.addr))
        self.layer.counts.response(True, self.method, response.status)

    def _resend_reply(self) -> None:
        if self.reply is not None:
            self.layer._out.append((self.reply, self.addr))
            self.layer.counts.retransmissions_sent += 1

    def _linger(self, until: float, resend: bool) -> None:
        """What is left of this transaction is answering (``resend``: with our final) or
        absorbing retransmissions until ``until``: hand that to the layer as plain data and
        terminate the object."""
        self._set_state(State.TERMINATED)
        if not self.reliable:  # a stream transport delivers no retransmissions to absorb
            self.layer._linger(self.key, until, self.reply if resend else None, self.addr)

    def send_response(self, response: SipResponse, now: float) -> None:
        raise NotImplementedError

    def receive_retransmission(self, now: float) -> None:
        raise NotImplementedError


class InviteServerTransaction(ServerTransaction):
    """RFC 3261 §17.2.1 with RFC 6026's Accepted state."""

    kind = "IST"
    TRANSITIONS = {
        State.PROCEEDING: frozenset((State.ACCEPTED, State.COMPLETED, State.TERMINATED)),
        State.ACCEPTED: frozenset((State.TERMINATED,)),
        State.COMPLETED: frozenset((State.CONFIRMED, State.TERMINATED)),
        State.CONFIRMED: frozenset((State.TERMINATED,)),
        State.TERMINATED: frozenset(),
    }

    def __init__(self, layer: TransactionLayer, key: Key, request: SipRequest, addr: Addr,
                 now: float, reliable: bool = False) -> None:
        super().__init__(layer, key, request, addr, State.PROCEEDING, reliable)
        self.acked = False
        self.answer_tag: str | None = None  # the To tag of the 2xx we sent, once we did
        self._interval = layer.t1
        self._ack_key = (request.call_id, request.cseq.number)
        self._send_reply(make_response(request, 100))

    @property
    def answered(self) -> bool:
        """A final response has been sent."""
        return self.state is not State.PROCEEDING

    def send_response(self, response: SipResponse, now: float) -> None:
        status = response.status
        if self.state is not State.PROCEEDING:
            if self.state is State.ACCEPTED and 200 <= status < 300:
                return  # the 2xx is already being retransmitted by us
            raise TransactionError(f"IST: cannot send {status} in state {self.state.value}")
        self._send_reply(response)
        if status < 200:
            return
        self._forget_request()
        self._interval = self.layer.t1
        if status < 300:
            self._set_state(State.ACCEPTED)
            self.answer_tag = response.to_tag  # the dialog our 2xx made: its ACK carries this tag
            self._start_timer("G", self._interval, now)  # 2xx retransmission
            self._start_timer("L", 64 * self.layer.t1, now)
            self.layer._accepted[self._ack_key] = self
        else:
            self._set_state(State.COMPLETED)
            if not self.reliable:  # the 2xx above is retransmitted even over TCP (§13.3.1.4)
                self._start_timer("G", self._interval, now)
            self._start_timer("H", 64 * self.layer.t1, now)

    def receive_retransmission(self, now: float) -> None:
        # §17.2.1: resend the last provisional or the final; Accepted/Confirmed absorb it.
        if self.state in (State.PROCEEDING, State.COMPLETED):
            self._resend_reply()

    def receive_ack(self, request: SipRequest, now: float) -> bool:
        """An ACK matched this transaction. Returns True when it ACKs a 2xx (the TU's)."""
        if self.state is State.COMPLETED:
            # Confirmed: only ACK retransmissions remain, absorbed for Timer I.
            self._set_state(State.CONFIRMED)
            self._linger(now + self.layer.t4, resend=False)
            return False
        if self.state is State.ACCEPTED and not self.acked:
            if request.to_tag != self.answer_tag:
                # Not the ACK of our 2xx (RFC 3261 §17.1.1.3: that one is in its dialog, To
                # tag and all): taking it would swallow the real ACK and its Timer L.
                return False
            # Accepted and ACKed: INVITE retransmissions are absorbed until Timer L.
            self.acked = True
            self.layer._accepted.pop(self._ack_key, None)
            self._linger(self.timers.get("L", now), resend=False)
            return True
        return False

    def on_timer(self, name: str, now: float) -> None:
        if name == "G":
            self._resend_reply()
            self._interval = min(2 * self._interval, self.layer.t2)
            self._start_timer("G", self._interval, now)
        elif name == "H":
            logger.info("no ACK for %d to INVITE %s from %s:%d", self.status, self.call_id, *self.addr)
            self._set_state(State.TERMINATED)
        elif name == "L":
            self.layer._accepted.pop(self._ack_key, None)
            self._set_state(State.TERMINATED)
            if not self.acked:
                self.layer._events.append(AckTimedOut(self))


class NonInviteServerTransaction(ServerTransaction):
    """RFC 3261 §17.2.2."""

    kind = "NIST"
    TRANSITIONS = _NON_INVITE_TRANSITIONS

    def __init__(self, layer: TransactionLayer, key: Key, request: SipRequest, addr: Addr,
                 now: float, reliable: bool = False) -> None:
        super().__init__(layer, key, request, addr, State.TRYING, reliable)

    @property
    def answered(self) -> bool:
        return self.state in (State.COMPLETED, State.TERMINATED)

    def send_response(self, response: SipResponse, now: float) -> None:
        if self.state not in (State.TRYING, State.PROCEEDING):
            raise TransactionError(f"NIST: cannot send {response.status} in {self.state.value}")
        self._send_reply(response)
        if response.status < 200:
            if self.state is State.TRYING:
                self._set_state(State.PROCEEDING)
        else:
            self._forget_request()
            self._set_state(State.COMPLETED)
            # Completed: retransmitted requests get this final again until Timer J.
            self._linger(now + 64 * self.layer.t1, resend=True)

    def receive_retransmission(self, now: float) -> None:
        if self.state is not State.TRYING:
            self._resend_reply()

    def on_timer(self, name: str, now: float) -> None:
        pass  # NIST has no timer of its own: Timer J is the lingering (see _linger)


# --------------------------------------------------------------------------- client side
class ClientTransaction(Transaction):
    def __init__(self, layer: TransactionLayer, key: Key, request: SipRequest, addr: Addr,
                 state: State, reliable: bool = False) -> None:
        super().__init__(layer, key, request, addr, state, reliable)
        self.sent_request = request  # clients keep theirs: the TU builds ACK/CANCEL from it
        self._wire = layer.wire(request)
        layer._out.append((self._wire, addr))
        layer.counts.request(True, request.method)

    def _retransmit(self) -> None:
        self.layer._out.append((self._wire, self.addr))
        self.layer.counts.retransmissions_sent += 1

    def receive_response(self, response: SipResponse, now: float) -> None:
        raise NotImplementedError


class InviteClientTransaction(ClientTransaction):
    """RFC 3261 §17.1.1 with RFC 6026's Accepted state."""

    kind = "ICT"
    TRANSITIONS = {
        State.CALLING: frozenset((State.PROCEEDING, State.ACCEPTED, State.COMPLETED, State.TERMINATED)),
        State.PROCEEDING: frozenset((State.ACCEPTED, State.COMPLETED, State.TERMINATED)),
        State.ACCEPTED: frozenset((State.TERMINATED,)),
        State.COMPLETED: frozenset((State.TERMINATED,)),
        State.TERMINATED: frozenset(),
    }

    def __init__(self, layer: TransactionLayer, key: Key, request: SipRequest, addr: Addr,
                 now: float, reliable: bool = False) -> None:
        super().__init__(layer, key, request, addr, State.CALLING, reliable)
        self._interval = layer.t1
        self._ack: bytes | None = None
        self.abandoned = False  # the TU failed over to another server (TransactionLayer.abandon)
        self._start_timer("A", self._interval, now)
        self._start_timer("B", 64 * layer.t1, now)

    def receive_response(self, response: SipResponse, now: float) -> None:
        status = response.status
        state = self.state
        if state in (State.CALLING, State.PROCEEDING):
            if status < 200:
                if state is State.CALLING:
                    self._stop_timer("A")
                    self._stop_timer("B")
                    self._set_state(State.PROCEEDING)
            elif status < 300:
                self._stop_timer("A")
                self._stop_timer("B")
                self._set_state(State.ACCEPTED)
                self._start_timer("M", 64 * self.layer.t1, now)
            else:
                self._stop_timer("A")
                self._stop_timer("B")
                self._set_state(State.COMPLETED)
                self._ack = self.layer.wire(make_ack_for_failure(self.sent_request, response))
                self.layer._out.append((self._ack, self.addr))
                self.layer.counts.request(True, "ACK")
                self._start_timer("D", 32.0, now)
            self.layer._events.append(ResponseReceived(self, response))
        elif state is State.ACCEPTED and 200 <= status < 300:
            self.layer._events.append(ResponseReceived(self, response))  # TU re-ACKs
        elif state is State.COMPLETED and status >= 300 and self._ack is not None:
            self.layer._out.append((self._ack, self.addr))  # §17.1.1.2: ACK again, no event
            self.layer.counts.retransmissions_received += 1
            self.layer.counts.retransmissions_sent += 1

    def on_timer(self, name: str, now: float) -> None:
        if name == "A":
            self._retransmit()
            self._interval *= 2
            self._start_timer("A", self._interval, now)
        elif name == "B":
            self._stop_timer("A")
            self._set_state(State.TERMINATED)
            if not self.abandoned:  # (the TU gave up on it long ago)
                self.layer._events.append(TransactionTimedOut(self))
        elif name in ("D", "M"):
            self._set_state(State.TERMINATED)


class NonInviteClientTransaction(ClientTransaction):
    """RFC 3261 §17.1.2."""

    kind = "NICT"
    TRANSITIONS = _NON_INVITE_TRANSITIONS

    def __init__(self, layer: TransactionLayer, key: Key, request: SipRequest, addr: Addr,
                 now: float, reliable: bool = False) -> None:
        super().__init__(layer, key, request, addr, State.TRYING, reliable)
        self._interval = layer.t1
        self._start_timer("E", self._interval, now)
        self._start_timer("F", 64 * layer.t1, now)

    def receive_response(self, response: SipResponse, now: float) -> None:
        if self.state not in (State.TRYING, State.PROCEEDING):
            self.layer.counts.retransmissions_received += 1
            return  # Completed absorbs retransmitted finals
        if response.status < 200:
            if self.state is State.TRYING:
                self._set_state(State.PROCEEDING)
        else:
            self._stop_timer("E")
            self._stop_timer("F")
            self._set_state(State.COMPLETED)
            self._start_timer("K", self.layer.t4, now)
        self.layer._events.append(ResponseReceived(self, response))

    def on_timer(self, name: str, now: float) -> None:
        if name == "E":
            self._retransmit()
            if self.state is State.PROCEEDING:
                self._interval = self.layer.t2
            else:
                self._interval = min(2 * self._interval, self.layer.t2)
            self._start_timer("E", self._interval, now)
        elif name == "F":
            self._stop_timer("E")
            self._set_state(State.TERMINATED)
            self.layer._events.append(TransactionTimedOut(self))
        elif name == "K":
            self._set_state(State.TERMINATED)


def make_ack_for_failure(invite: SipRequest, response: SipResponse) -> SipRequest:
    """§17.1.1.3: the ACK for a non-2xx final reuses the INVITE's branch and Route set;
    its To is the response's (with the callee's tag)."""
    return _same_branch_request("ACK", invite, response.headers["to"])


def make_cancel(invite: SipRequest) -> SipRequest:
    """§9.1: CANCEL copies the INVITE's Request-URI, top Via, From, To, Call-ID, Route."""
    return _same_branch_request("CANCEL", invite, invite.headers["to"])


def _same_branch_request(method: str, invite: SipRequest, to: list[str]) -> SipRequest:
    headers: dict[str, list[str]] = {
        "via": [invite.headers["via"][0]],
        "from": list(invite.headers["from"]),
        "to": list(to),
        "call-id": list(invite.headers["call-id"]),
        "cseq": [f"{invite.cseq.number} {method}"],
        "max-forwards": ["70"],
    }
    if "route" in invite.headers:
        headers["route"] = list(invite.headers["route"])
    return SipRequest(method, invite.uri, headers)


# --------------------------------------------------------------------------- the layer
class TransactionLayer:
    """Matches messages to transactions (§17.1.3, §17.2.3) and owns every timer."""

    def __init__(self, t1: float = T1, t2: float = T2, t4: float = T4, product: str = "") -> None:
        self.t1, self.t2, self.t4 = t1, t2, t4
        # Server (responses) / User-Agent (requests), RFC 3261 §20.35/§20.41: operators and
        # peers see what they talk to; set on everything the layer sends, our own 100s and
        # ACKs included. "" sends neither.
        self.product = product
        self._server: dict[Key, ServerTransaction] = {}
        self._client: dict[Key, ClientTransaction] = {}
        self._accepted: dict[tuple[str, int], InviteServerTransaction] = {}
        self._timers: list[tuple[float, int, Transaction, str]] = []
        # Server transactions whose only duty left is to answer or absorb retransmissions
        # (NIST Completed, IST Confirmed, IST Accepted after the ACK) live on as plain data:
        # key -> (final to resend or None, address), expiring from a heap of (deadline, key).
        # Tuples of strings, bytes and numbers are untracked by the garbage collector, so the
        # ~25k of them at 400 calls/s cost a full collection nothing (as full objects: 40 ms).
        self._lingering: dict[Key, tuple[bytes | None, Addr]] = {}
        self._linger_heap: list[tuple[float, Key]] = []
        self._stale_timers = 0  # heap entries of stopped timers (they pin their transactions)
        self._seq = itertools.count()
        self._out: list[tuple[bytes, Addr]] = []
        self._events: deque[SipEvent] = deque()
        self.counts = SipCounts()  # messages by method and status, for the metrics

    # ---- outputs
    def datagrams_to_send(self) -> list[tuple[bytes, Addr]]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> SipEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        timers = self._timers
        deadline: float | None = None
        while timers:
            first, _, txn, name = timers[0]
            if txn.timers.get(name) == first:
                deadline = first
                break
            heapq.heappop(timers)  # stale: stopped or re-armed
        if self._linger_heap:
            first_linger = self._linger_heap[0][0]
            if deadline is None or first_linger < deadline:
                deadline = first_linger
        return deadline

    def __len__(self) -> int:
        """Transactions remembered (lingering ones included)."""
        return len(self._server) + len(self._client) + len(self._lingering)

    # ---- inputs
    def handle_timer(self, now: float) -> None:
        linger = self._linger_heap
        while linger and linger[0][0] <= now:
            self._lingering.pop(heapq.heappop(linger)[1], None)
        timers = self._timers
        while timers and timers[0][0] <= now:
            deadline, _, txn, name = heapq.heappop(timers)
            if txn.timers.get(name) != deadline:
                continue
            del txn.timers[name]
            txn.on_timer(name, now)

    def receive(self, msg: SipRequest | SipResponse, addr: Addr, now: float, reliable: bool = False) -> None:
        """A parsed, validated message from ``addr`` (``reliable``: it came over a stream
        connection, whose address the responses go back to, §18.2.2)."""
        if isinstance(msg, SipResponse):
            self.counts.response(False, msg.cseq.method, msg.status)
            self._receive_response(msg, now)
        else:
            self.counts.request(False, msg.method)
            self._receive_request(msg, addr, now, reliable)

    def send_response(self, txn: ServerTransaction, response: SipResponse, now: float) -> None:
        txn.send_response(response, now)

    def send_request(self, request: SipRequest, addr: Addr, now: float,
                     reliable: bool = False) -> ClientTransaction:
        """Start a client transaction; ``request`` must carry its Via with a fresh branch."""
        key = (request.via.branch, request.cseq.method)
        cls = InviteClientTransaction if request.method == "INVITE" else NonInviteClientTransaction
        txn = cls(self, key, request, addr, now, reliable)
        self._client[key] = txn
        return txn

    def abandon(self, txn: ClientTransaction) -> None:
        """The TU gives up on a client transaction that got no response at all (RFC 3263
        §4.3: it fails over to the next server before Timer B): no more retransmissions.
        An INVITE's transaction lives on silently until Timer B, so that a server that was
        only slow still gets what RFC 3261 owes it: a late failure is ACKed here
        (§17.1.1.2) and a late 2xx reaches the TU, which ACKs it and hangs up (§13.2.2.4);
        Timer B then ends it without a timeout event."""
        if isinstance(txn, InviteClientTransaction) and txn.state is State.CALLING:
            txn.abandoned = True
            txn._stop_timer("A")
        elif txn.state in (State.CALLING, State.TRYING):
            txn._set_state(State.TERMINATED)  # (its timers with it)

    def send_stateless(self, msg: SipRequest | SipResponse, addr: Addr) -> None:
        """Outside any transaction: the ACK for a 2xx, or a stateless error response."""
        self._out.append((self.wire(msg), addr))
        if isinstance(msg, SipResponse):
            self.counts.response(True, cseq_method(msg.headers), msg.status)
        else:
            self.counts.request(True, msg.method)

    def wire(self, msg: SipRequest | SipResponse) -> bytes:
        """The bytes we send for ``msg``, with our Server/User-Agent unless it has one."""
        if self.product:
            name = "server" if isinstance(msg, SipResponse) else "user-agent"
            if name not in msg.headers:
                msg.set(name, self.product)
        return bytes(msg)

    def find_invite(self, cancel: SipRequest) -> InviteServerTransaction | None:
        """The INVITE transaction a CANCEL targets (§9.2: same key, method INVITE)."""
        txn = self._server.get(self._server_key(cancel, "INVITE"))
        return txn if isinstance(txn, InviteServerTransaction) else None

    def invite_finished(self, cancel: SipRequest) -> bool:
        """The INVITE a CANCEL targets got its final response and is only remembered
        (§9.2: the CANCEL then gets 200 and changes nothing)."""
        return self._server_key(cancel, "INVITE") in self._lingering

    # ---- internals
    def _receive_request(self, request: SipRequest, addr: Addr, now: float, reliable: bool = False) -> None:
        stamp_via(request, addr)
        method = request.method
        key = self._server_key(request, "INVITE" if method == "ACK" else method)
        txn = self._server.get(key)
        if method == "ACK":
            if key in self._lingering:
                self.counts.retransmissions_received += 1
                return  # an ACK retransmission for a finished INVITE (§17.2.1 Confirmed)
            if isinstance(txn, InviteServerTransaction):
                if txn.receive_ack(request, now):
                    self._events.append(AckReceived(request, addr))
                return
            accepted = self._accepted.get((request.call_id, request.cseq.number))
            if accepted is not None:
                accepted.receive_ack(request, now)
            self._events.append(AckReceived(request, addr))
            return
        if txn is not None:
            self.counts.retransmissions_received += 1
            txn.receive_retransmission(now)
            return
        lingering = self._lingering.get(key)
        if lingering is not None:  # a retransmission of a finished request
            self.counts.retransmissions_received += 1
            if lingering[0] is not None:
                self._out.append(lingering)  # type: ignore[arg-type]
                self.counts.retransmissions_sent += 1
            return
        dest = addr if reliable else response_address(request, addr)
        if method == "INVITE":
            txn = InviteServerTransaction(self, key, request, dest, now, reliable)
        else:
            txn = NonInviteServerTransaction(self, key, request, dest, now, reliable)
        self._server[key] = txn
        self._events.append(RequestReceived(txn, request))

    def _receive_response(self, response: SipResponse, now: float) -> None:
        txn = self._client.get((response.via.branch, response.cseq.method))
        if txn is None:
            logger.debug("stray response %d %s dropped", response.status, response.call_id)
            return
        txn.receive_response(response, now)

    @staticmethod
    def _server_key(request: SipRequest, method: str) -> Key:
        via = request.via
        branch = via.branch
        if branch and len(branch) > len(MAGIC_COOKIE) and branch.startswith(MAGIC_COOKIE):
            return (branch, via.sent_by, method)
        # §17.2.3: RFC 2543 peers have no magic cookie; match on the request's identity.
        # So does a branch that is the bare cookie (RFC 4475 §3.2.1): every request from
        # that peer would otherwise share one key and look like a retransmission.
        return ("2543", request.call_id, request.from_tag, request.cseq.number, via.sent_by,
                branch, method)

    def _linger(self, key: Key, until: float, reply: bytes | None, addr: Addr) -> None:
        self._lingering[key] = (reply, addr)
        heapq.heappush(self._linger_heap, (until, key))

    def _schedule(self, deadline: float, txn: Transaction, name: str) -> None:
        heapq.heappush(self._timers, (deadline, next(self._seq), txn, name))
        if self._stale_timers > 1000 and 2 * self._stale_timers > len(self._timers):
            # Stopped timers stay in the heap until their deadline and keep finished
            # transactions alive: drop them once they are half of it (amortised O(1)).
            self._timers = [e for e in self._timers if e[2].timers.get(e[3]) == e[0]]
            heapq.heapify(self._timers)
            self._stale_timers = 0

    def _forget(self, txn: Transaction) -> None:
        table: dict[Key, Any] = self._client if isinstance(txn, ClientTransaction) else self._server
        if table.get(txn.key) is txn:
            del table[txn.key]


def stamp_via(request: SipRequest, addr: Addr) -> None:
    """§18.2.1 and RFC 3581: note where the request really came from in its top Via."""
    via = request.via
    if via.stamp(addr):
        request.headers["via"][0] = str(via)


def response_address(request: SipRequest, addr: Addr) -> Addr:
    """§18.2.2 with RFC 3581: received/rport if present, else the Via's sent-by (see
    ``Via.response_address``; the request has been stamped with its source ``addr``)."""
    return request.via.response_address(addr)
