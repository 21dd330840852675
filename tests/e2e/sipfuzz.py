"""A SIP mutation fuzzer over UDP against the real switch, shared by tests/e2e/test_fuzz.py
(a few thousand datagrams in CI) and bench/fuzz_sip.py (the 20,000 of issue 10).

``SipMutator`` makes datagrams from valid INVITE (with SDP), BYE, REGISTER, OPTIONS,
CANCEL and ACK requests, each mutated the ways a fuzzer does it: flipped bytes,
truncations, duplicated or removed headers, huge numbers, a wrong Content-Length, random
header values, unknown methods, spliced separators, mangled SDP and plain garbage. It is
driven by one seeded ``random.Random``: a run is replayed exactly from its seed.

``FuzzClient`` sends them at a steady rate from one or more local addresses and reads
what comes back on the sending sockets. It keys each response by the server transaction
it belongs to (top Via, Call-ID and CSeq, which the switch copies from the request into
every response of the transaction: RFC 3261 §8.2.6, §17.2.3), ACKs every final response
to an INVITE as a UAC must (§17.1.1.3, §13.2.2.4), so the switch's transactions end, and
answers a BYE from an app that answered a call. A transaction that got a provisional
response and never a final one is left hanging: what issue 10 found and must not happen.

Like harness.py, nothing here imports the switch: it is seen only through its sockets,
its log and /proc.
"""

from __future__ import annotations

import random
import re
import select
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .harness import SwitchProcess, control_status, sdp_offer

Addr = tuple[str, int]

SEED_METHODS = ("INVITE", "BYE", "REGISTER", "OPTIONS", "CANCEL", "ACK")
MAX_DATAGRAM = 65000  # under IPv4 UDP's 65,507-byte payload limit
# Bytes that mean something to a SIP parser, spliced in more often than chance would.
SPECIAL = [b"\x00", b"\r", b"\n", b"\r\n", b"\r\n\r\n", b" ", b"\t", b":", b";", b",", b"<", b">", b'"', b"\\",
           b"[", b"]", b"%", b"=", b"@", b"?", b"\xff", b"\xc3", b"SIP/2.0", b"z9hG4bK", b"\r\n "]
HUGE = [b"9" * 5000, b"4294967296", b"2147483648", b"18446744073709551616", b"-1", b"0", b"1e9", b"0x10",
        b"99999999999999999999", b"1" * 300]
USERS = ["service", "busy", "1000", "+15551234567", "alice", "%2B1555"]
# What the switch logs only when a bug of ours escapes (switch/sip/transport.py, the task
# pool, asyncio itself); every one carries a traceback when logged.
BUG_MARKS = ("Traceback", "Unhandled exception", "error receiving", "error handling", "error in the call engine",
             "Exception in callback", "exception was never retrieved")
_STATUS = re.compile(rb"SIP/2\.0 (\d{3}) ")
_COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length"}


@dataclass(frozen=True)
class Datagram:
    index: int
    seed: str  # the method of the valid request it was made from
    mutations: tuple[str, ...]  # () for one sent as it is
    data: bytes


@dataclass
class _Invite:
    """What a CANCEL or ACK needs to target an INVITE sent before it (RFC 3261 §9.1)."""

    ruri: str
    via: str
    from_: str
    to: str
    call_id: str
    cseq: int


class SipMutator:
    """Seeded datagrams for a switch at ``target``: ``datagram(i, local)`` is the i-th, as
    sent from ``local`` (which its Via, From and Contact name). A share of ``clean`` of
    them go unmutated, so ordinary traffic runs between the broken messages."""

    def __init__(self, seed: int, target: Addr, clean: float = 0.15) -> None:
        self.rng = random.Random(seed)
        self.target = target
        self.clean = clean
        self._last_invite: _Invite | None = None

    def datagrams(self, count: int, local: Addr, start: int = 0) -> Iterator[Datagram]:
        for i in range(start, start + count):
            yield self.datagram(i, local)

    def datagram(self, index: int, local: Addr) -> Datagram:
        rng = self.rng
        method = rng.choice(SEED_METHODS)
        data = self.seed_message(method, index, local)
        if rng.random() < self.clean:
            return Datagram(index, method, (), data)
        kinds = tuple(rng.choice(MUTATIONS) for _ in range(rng.choice((1, 1, 1, 2, 2, 3))))
        for kind in kinds:
            data = _MUTATIONS[kind](self, data)
        return Datagram(index, method, kinds, data[:MAX_DATAGRAM])

    # ------------------------------------------------------------------ valid requests

    def seed_message(self, method: str, index: int, local: Addr) -> bytes:
        """A valid request; a CANCEL or ACK targets the last INVITE made (most of the
        time), so the switch matches them to a transaction it holds."""
        rng = self.rng
        host, port = self.target
        lhost, lport = local
        tag = f"{rng.getrandbits(32):08x}"
        user = rng.choice(USERS)
        ruri = f"sip:{user}@{host}:{port}"
        via = f"SIP/2.0/UDP {lhost}:{lport};branch=z9hG4bK-fz{index}-{rng.getrandbits(24):06x};rport"
        from_ = f'"Fuzz {index}" <sip:fuzz@{lhost}:{lport}>;tag={tag}'
        to = f"<sip:{user}@{host}:{port}>"
        call_id = f"fz{index}-{rng.getrandbits(48):012x}@{lhost}"
        cseq = rng.randrange(1, 2**31)
        body = ""
        extra: list[str] = []
        last = self._last_invite
        if method in ("CANCEL", "ACK") and last is not None and rng.random() < 0.8:
            ruri, via, from_, to, call_id, cseq = last.ruri, last.via, last.from_, last.to, last.call_id, last.cseq
        elif method == "BYE":
            to += f";tag={rng.getrandbits(32):08x}"  # in-dialog: a dialog the switch does not have (481)
        elif method == "REGISTER":
            ruri = f"sip:{host}:{port}"
            from_, to = f"<sip:{user}@{host}>;tag={tag}", f"<sip:{user}@{host}>"
            extra = ["Expires: 60"]
        if method == "INVITE":
            body = sdp_offer(rng.randrange(10000, 60000, 2))
            self._last_invite = _Invite(ruri, via, from_, to, call_id, cseq)
        lines = [f"{method} {ruri} SIP/2.0", f"Via: {via}", "Max-Forwards: 70", f"From: {from_}", f"To: {to}",
                 f"Call-ID: {call_id}", f"CSeq: {cseq} {method}", f"Contact: <sip:fuzz@{lhost}:{lport}>", *extra]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()

    # ------------------------------------------------------------------ mutations

    def _at(self, data: bytes | bytearray) -> int:
        return self.rng.randrange(len(data)) if data else 0

    @staticmethod
    def _split(data: bytes) -> tuple[list[bytes], bytes]:
        head, sep, body = data.partition(b"\r\n\r\n")
        return head.split(b"\r\n"), body if sep else b""

    @staticmethod
    def _join(lines: list[bytes], body: bytes) -> bytes:
        return b"\r\n".join(lines) + b"\r\n\r\n" + body

    def _flip(self, data: bytes) -> bytes:
        out = bytearray(data)
        for _ in range(self.rng.randint(1, 4)):
            if out:
                out[self._at(out)] = self.rng.randrange(256)
        return bytes(out)

    def _truncate(self, data: bytes) -> bytes:
        return data[:self._at(data)]

    def _duplicate_header(self, data: bytes) -> bytes:
        lines, body = self._split(data)
        i = self.rng.randrange(1, len(lines)) if len(lines) > 1 else 0
        lines.insert(i, lines[i])
        return self._join(lines, body)

    def _remove_header(self, data: bytes) -> bytes:
        lines, body = self._split(data)
        if len(lines) > 1:
            del lines[self.rng.randrange(1, len(lines))]
        return self._join(lines, body)

    def _huge_number(self, data: bytes) -> bytes:
        """A number (CSeq, port, Max-Forwards, Content-Length, SDP port...) made huge or odd."""
        numbers = [m.span() for m in re.finditer(rb"\d+", data)]
        if not numbers:
            return data
        start, end = self.rng.choice(numbers)
        return data[:start] + self.rng.choice(HUGE) + data[end:]

    def _content_length(self, data: bytes) -> bytes:
        lines, body = self._split(data)
        value = self.rng.choice([str(len(body) + self.rng.randint(1, 500)), str(max(len(body) - 1, 0)), "-5",
                                 "zero", "", "4294967296", "9" * 5000, f"{len(body)} {len(body)}", "0x10"])
        lines = [line for line in lines if not line.lower().startswith((b"content-length:", b"l:"))]
        lines.append(b"Content-Length: " + value.encode())
        if self.rng.random() < 0.2:  # and a second, disagreeing one
            lines.append(b"Content-Length: 0")
        return self._join(lines, body)

    def _header_value(self, data: bytes) -> bytes:
        lines, body = self._split(data)
        if len(lines) < 2:
            return data
        i = self.rng.randrange(1, len(lines))
        name = lines[i].split(b":", 1)[0]
        rng = self.rng
        value = rng.choice([
            bytes(rng.randrange(256) for _ in range(rng.randint(0, 60))),
            bytes(rng.randrange(32, 127) for _ in range(rng.randint(0, 200))),
            b"".join(rng.choice(SPECIAL) for _ in range(rng.randint(1, 30))),
            b"<sip:" + b"x" * rng.randint(1, 20000) + b">",
            b"",
        ])
        lines[i] = name + b": " + value
        return self._join(lines, body)

    def _method(self, data: bytes) -> bytes:
        """An unknown method, legal (a token: RFC 3261 §25.1) or not, in the request line
        and, half the time, in the CSeq too."""
        rng = self.rng
        legal = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcxyz0123456789-.!%*_+`'~") for _ in range(rng.randint(1, 16)))
        method = rng.choice([legal, legal, "INVITE ", "IN VITE", "", "\x00\x01", "INVITE" * 2000, "é"]).encode()
        _, sep, rest = data.partition(b" ")
        if rng.random() < 0.5:
            rest = re.sub(rb"(CSeq:\s*\d+ )\S+", lambda m: m.group(1) + method, rest, count=1)
        return method + sep + rest

    def _splice(self, data: bytes) -> bytes:
        at = self._at(data)
        return data[:at] + self.rng.choice(SPECIAL) + data[at:]

    def _sdp(self, data: bytes) -> bytes:
        """One SDP line made wrong (or the body replaced), Content-Length kept right: the
        offer, not the framing, is what is broken."""
        lines, body = self._split(data)
        rng = self.rng
        sdp = body.split(b"\r\n")
        choice = rng.randrange(6)
        if choice == 0:
            sdp = [b"c=IN IP6 ::1" if line.startswith(b"c=") else line for line in sdp]
        elif choice == 1:
            sdp = [line.split(b" ")[0] + b" " + rng.choice(HUGE) + b" RTP/AVP 0" if line.startswith(b"m=") else line
                   for line in sdp]
        elif choice == 2:
            sdp.insert(rng.randrange(len(sdp) + 1), b"a=rtpmap:" + rng.choice(HUGE) + b" " + rng.choice(SPECIAL))
        elif choice == 3 and sdp:
            del sdp[rng.randrange(len(sdp))]
        elif choice == 4:
            sdp = [b"m=audio 9 RTP/AVP " + b" ".join(str(rng.randrange(-5, 300)).encode() for _ in range(60))]
        else:
            sdp = [bytes(rng.randrange(256) for _ in range(rng.randint(0, 300)))]
        body = b"\r\n".join(sdp)
        lines = [line for line in lines if not line.lower().startswith((b"content-length:", b"l:"))]
        if not any(line.lower().startswith(b"content-type:") for line in lines):
            lines.append(b"Content-Type: application/sdp")
        lines.append(b"Content-Length: " + str(len(body)).encode())
        return self._join(lines, body)

    def _garbage(self, data: bytes) -> bytes:
        """Random bytes, behind a real request line a third of the time so they get past
        the first bytes check into the parser."""
        rng = self.rng
        junk = bytes(rng.randrange(256) for _ in range(rng.randint(0, 1500)))
        return (data.split(b"\r\n", 1)[0] + b"\r\n" + junk) if rng.random() < 0.33 else junk


_MUTATIONS: dict[str, Callable[[SipMutator, bytes], bytes]] = {
    "flip": SipMutator._flip, "truncate": SipMutator._truncate, "duplicate-header": SipMutator._duplicate_header,
    "remove-header": SipMutator._remove_header, "huge-number": SipMutator._huge_number,
    "content-length": SipMutator._content_length, "header-value": SipMutator._header_value,
    "method": SipMutator._method, "splice": SipMutator._splice, "sdp": SipMutator._sdp, "garbage": SipMutator._garbage,
}
MUTATIONS = tuple(_MUTATIONS)


# --------------------------------------------------------------------------- responses


def _headers(data: bytes) -> tuple[int | None, dict[str, str]]:
    """The status (None for a request) and the first value of each header (compact
    names expanded); a loose read, enough to key, ACK or answer the message."""
    m = _STATUS.match(data)
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace").split("\r\n")
    headers: dict[str, str] = {}
    for line in head[1:]:
        name, sep, value = line.partition(":")
        if sep:
            key = name.strip().lower()
            headers.setdefault(_COMPACT.get(key, key), value.strip())
    return (int(m.group(1)) if m else None), headers


def _message(start: str, headers: dict[str, str], **replace: str) -> bytes:
    """``start`` and the dialog headers copied from ``headers`` (some replaced)."""
    names = {"via": "Via", "from": "From", "to": "To", "call_id": "Call-ID", "cseq": "CSeq"}
    lines = [start, *(f"{name}: {replace.get(key, headers.get(name.lower(), ''))}" for key, name in names.items()),
             "Content-Length: 0"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "replace")


def ack_for_final(headers: dict[str, str], status: int, target: Addr, n: int) -> bytes:
    """The ACK of a final response to an INVITE, from the response alone: for a non-2xx
    the INVITE's top Via (RFC 3261 §17.1.1.3: the Request-URI takes no part in matching);
    for a 2xx an in-dialog request to the Contact, with a branch of its own (§13.2.2.4)."""
    cseq = headers.get("cseq", "").split()
    ack_cseq = f"{cseq[0] if cseq else '1'} ACK"
    if status >= 300:
        return _message(f"ACK sip:fuzz@{target[0]}:{target[1]} SIP/2.0", headers, cseq=ack_cseq)
    contact = re.search(r"<([^>]*)>", headers.get("contact", ""))
    via = re.sub(r"branch=[^;,\s]*", f"branch=z9hG4bK-fzack{n}", headers.get("via", ""))
    ruri = contact.group(1) if contact else f"sip:fuzz@{target[0]}:{target[1]}"
    return _message(f"ACK {ruri} SIP/2.0", headers, via=via, cseq=ack_cseq)


Key = tuple[str, str, str]  # top Via, Call-ID, CSeq of a response: one server transaction


@dataclass
class Tally:
    """What one local address sent and got back."""

    sent: Counter[str] = field(default_factory=Counter)  # by seed method
    mutations: Counter[str] = field(default_factory=Counter)
    responses: Counter[int] = field(default_factory=Counter)  # by status
    transactions: dict[Key, list[int]] = field(default_factory=dict)  # statuses, in order
    not_sip: int = 0  # datagrams back that are neither a response nor a BYE
    acks: int = 0
    byes: int = 0  # BYEs from the switch (for calls an app answered), answered 200
    send_errors: int = 0

    @property
    def datagrams(self) -> int:
        return sum(self.sent.values())

    def hanging(self) -> list[tuple[Key, list[int]]]:
        """Transactions with a provisional response and no final one."""
        return [(k, s) for k, s in self.transactions.items() if not any(c >= 200 for c in s)]

    def invites_answered(self) -> list[Key]:
        """INVITE transactions that got a 2xx: calls the switch accepted."""
        return [k for k, s in self.transactions.items() if k[2].endswith("INVITE") and any(200 <= c < 300 for c in s)]


class FuzzClient:
    """UDP sockets on ``hosts`` (127.0.0.1 and, for the flood guard, 127.0.0.2) that send
    to ``target``, read every response and ACK finals to INVITEs."""

    def __init__(self, target: Addr, hosts: Iterable[str] = ("127.0.0.1",)) -> None:
        self.target = target
        self.socks: dict[str, socket.socket] = {}
        for host in hosts:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.bind((host, 0))
            sock.setblocking(False)
            self.socks[host] = sock
        self.tallies = {host: Tally() for host in self.socks}
        self._by_fd = {sock.fileno(): host for host, sock in self.socks.items()}
        self.last_response = time.monotonic()

    def addr(self, host: str = "127.0.0.1") -> Addr:
        name: Addr = self.socks[host].getsockname()
        return name

    def send(self, d: Datagram, host: str = "127.0.0.1") -> None:
        tally = self.tallies[host]
        tally.sent[d.seed] += 1
        tally.mutations.update(d.mutations)
        try:
            self.socks[host].sendto(d.data, self.target)
        except OSError:  # EMSGSIZE and the like: the kernel refused it, the switch never saw it
            tally.send_errors += 1

    def run(self, datagrams: Iterable[Datagram], rate: float, host: str = "127.0.0.1") -> float:
        """Send at ``rate`` datagrams/s (reading responses in between); seconds taken."""
        start = time.monotonic()
        for n, d in enumerate(datagrams):
            self.pump(start + n / rate)
            self.send(d, host)
        return time.monotonic() - start

    def pump(self, until: float) -> None:
        """Read and handle responses until ``until`` (monotonic)."""
        socks = list(self.socks.values())
        while True:
            left = until - time.monotonic()
            ready, _, _ = select.select(socks, [], [], max(left, 0))
            if not ready:
                if left <= 0:
                    return
                continue
            for sock in ready:
                self._read(sock)

    def settle(self, timeout: float, quiet: float = 1.5) -> None:
        """Read until no transaction hangs and nothing came for ``quiet`` s, or ``timeout``
        s: the switch's finals (and their retransmissions, until our ACK lands) arrive."""
        deadline = time.monotonic() + timeout
        while (now := time.monotonic()) < deadline:
            if now - self.last_response >= quiet and not any(t.hanging() for t in self.tallies.values()):
                return
            self.pump(min(deadline, now + 0.1))

    def _read(self, sock: socket.socket) -> None:
        host = self._by_fd[sock.fileno()]
        tally = self.tallies[host]
        while True:
            try:
                data = sock.recv(65535)
            except BlockingIOError:
                return
            self.last_response = time.monotonic()
            status, headers = _headers(data)
            if status is None:
                if data.startswith(b"BYE "):  # an app that answered hangs up: 200 (RFC 3261 §15.1.2)
                    self._reply(sock, tally, _message("SIP/2.0 200 OK", headers))
                    tally.byes += 1
                else:
                    tally.not_sip += 1
                continue
            tally.responses[status] += 1
            key = (headers.get("via", ""), headers.get("call-id", ""), headers.get("cseq", ""))
            tally.transactions.setdefault(key, []).append(status)
            if status >= 200 and key[2].endswith("INVITE"):
                tally.acks += 1
                self._reply(sock, tally, ack_for_final(headers, status, self.target, tally.acks))

    def _reply(self, sock: socket.socket, tally: Tally, data: bytes) -> None:
        try:
            sock.sendto(data, self.target)
        except OSError:
            tally.send_errors += 1

    def close(self) -> None:
        for sock in self.socks.values():
            sock.close()

    def __enter__(self) -> FuzzClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- a run


@dataclass
class FuzzRun:
    """One run against a switch started with its control API on (see ``fuzz_switch``)."""

    tally: Tally  # from 127.0.0.1
    flood: Tally | None  # from FLOOD_HOST, when a flood slice was sent
    seconds: float  # sending the main run
    rss_before_kib: int  # the switch process alone (its JS workers are other processes)
    rss_after_kib: int
    status_after: dict[str, Any]  # GET /status once it held nothing, or at the deadline
    drained_s: float | None  # from the end of sending until /status held nothing; None: never
    bad_sip_messages: int  # what the switch counted as not SIP during the run

    def held(self) -> dict[str, Any]:
        return held(self.status_after)


FLOOD_HOST = "127.0.0.2"  # not loopback-trusted (only 127.0.0.1 and ::1 are): flood-counted


def held(status: dict[str, Any]) -> dict[str, Any]:
    """What a switch with no calls and no traffic must hold none of."""
    media = status.get("media") or {}
    return {"live_calls": status.get("live_calls"), "live_legs": status.get("live_legs"),
            "live_tasks": status.get("live_tasks"), "rtp_ports_in_use": media.get("rtp_ports_in_use"),
            "sip_transactions": status.get("sip_transactions")}


def fuzz_switch(sw: SwitchProcess, *, datagrams: int, rate: float, seed: int, flood_datagrams: int = 0,
                settle_s: float = 15.0, drain_s: float = 15.0) -> FuzzRun:
    """Fuzz a running switch: ``flood_datagrams`` sent as fast as they go from FLOOD_HOST
    (the flood guard must block them, not fall over), then ``datagrams`` from 127.0.0.1
    at ``rate``/s; wait for the finals, then for /status to hold nothing."""
    assert sw.proc is not None
    pid = sw.proc.pid

    def status() -> dict[str, Any]:
        got = control_status(sw, timeout=5.0)
        assert got is not None, "no control API: start the switch with --control HOST:PORT"
        return got

    bad_before = status()["bad_sip_messages"]
    rss_before = vm_rss_kib(pid)
    mutator = SipMutator(seed, sw.sip_addr)
    hosts = ("127.0.0.1", FLOOD_HOST) if flood_datagrams else ("127.0.0.1",)
    with FuzzClient(sw.sip_addr, hosts) as client:
        if flood_datagrams:
            client.run(mutator.datagrams(flood_datagrams, client.addr(FLOOD_HOST)), rate=5000, host=FLOOD_HOST)
        seconds = client.run(mutator.datagrams(datagrams, client.addr(), start=flood_datagrams), rate)
        sent = time.monotonic()
        client.settle(settle_s)
    deadline = time.monotonic() + drain_s
    while any(held(after := status()).values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    drained = None if any(held(after).values()) else time.monotonic() - sent
    return FuzzRun(client.tallies["127.0.0.1"], client.tallies.get(FLOOD_HOST), seconds, rss_before,
                   vm_rss_kib(pid), after, drained, after["bad_sip_messages"] - bad_before)


# --------------------------------------------------------------------------- the process


def vm_rss_kib(pid: int) -> int:
    """VmRSS of one process (/proc/PID/status), 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def bug_lines(log: str) -> list[str]:
    """Log lines that only a bug of ours produces (see BUG_MARKS)."""
    return [line for line in log.splitlines() if any(mark in line for mark in BUG_MARKS)]
