"""Stream framing over TCP (RFC 3261 §18.3) with Content-Length on any header line.

Header order is free (RFC 3261 §7.3.1): linphone's authenticated REGISTER puts
`Content-Length: 0` before `Authorization`, and a switch that only found Content-Length as
the last header closed the connection instead of answering. Each test here writes its
requests by hand on one TCP connection, with Content-Length before other headers (also
compact, mixed case, spaced), and requires the answers a correct framer gives.
"""

from __future__ import annotations

import hashlib
import re
import select
import socket
import ssl
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from .harness import RtpSink, sdp_offer

pytestmark = pytest.mark.e2e


class TcpPhone:
    """One TCP connection to the switch (TLS over it with ``tls``, verified for the
    target's host): sends hand-written requests, frames what comes back (its own small
    framer: the harness never imports the switch)."""

    def __init__(self, target: tuple[str, int], tls: ssl.SSLContext | None = None) -> None:
        self.target = target
        self.transport = "TLS" if tls else "TCP"
        self.sock = socket.create_connection(target, timeout=2)
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname=target[0])
        self.addr: tuple[str, int] = self.sock.getsockname()[:2]
        self._buf = b""
        self.call_id = uuid.uuid4().hex + "@e2e"
        self.from_tag = uuid.uuid4().hex[:8]
        self.requests_seen: list[str] = []  # requests from the switch (its BYE)

    def request(self, method: str, ruri: str, cseq: int, *, cl_first: str = "Content-Length: {n}",
                body: str = "", to_user: str = "service", to_tag: str | None = None,
                extra: tuple[str, ...] = ()) -> bytes:
        """A request whose Content-Length line (`cl_first`, `{n}` = body length) comes
        right after the start line, before every other header."""
        lh, lp = self.addr
        h, p = self.target
        to = f"<sip:{to_user}@{h}:{p}>" + (f";tag={to_tag}" if to_tag else "")
        lines = [
            f"{method} {ruri} SIP/2.0",
            cl_first.format(n=len(body.encode())),
            f"Via: SIP/2.0/{self.transport} {lh}:{lp};branch=z9hG4bK-{uuid.uuid4().hex[:16]};rport",
            "Max-Forwards: 70",
            f"From: <sip:e2e@{lh}:{lp}>;tag={self.from_tag}",
            f"To: {to}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:e2e@{lh}:{lp};transport={self.transport.lower()}>",
            *extra,
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        data = ("\r\n".join(lines) + "\r\n\r\n" + body).encode()
        self.sock.sendall(data)
        return data

    def read(self, timeout: float = 5.0) -> str | None:
        """The next whole message, or None on timeout; fails if the switch closed the
        connection (what it does when it cannot frame our request)."""
        deadline = time.monotonic() + timeout
        while True:
            end = self._buf.find(b"\r\n\r\n")
            if end >= 0:
                head = self._buf[:end].decode(errors="replace")
                m = re.search(r"^(?:content-length|l)\s*:\s*(\d+)", head, re.I | re.M)
                total = end + 4 + (int(m.group(1)) if m else 0)
                if len(self._buf) >= total:
                    msg, self._buf = self._buf[:total], self._buf[total:]
                    return msg.decode(errors="replace")
            left = deadline - time.monotonic()
            pending = isinstance(self.sock, ssl.SSLSocket) and self.sock.pending() > 0  # decrypted, unread
            if left <= 0 or not (pending or select.select([self.sock], [], [], left)[0]):
                return None
            data = self.sock.recv(65536)
            assert data, "the switch closed the TCP connection (could not frame our request?)"
            self._buf += data

    def responses(self, method: str, until: int = 200, timeout: float = 5.0) -> list[str]:
        """Responses to `method` until a final one >= `until`; requests from the switch
        (e.g. its BYE) go to requests_seen."""
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            msg = self.read(left)
            if msg is None:
                break
            if not msg.startswith("SIP/2.0 "):
                self.requests_seen.append(msg)
                continue
            if cseq_method(msg) != method:
                continue
            out.append(msg)
            if status(msg) >= until:
                break
        return out

    def close(self) -> None:
        self.sock.close()


def digest_authorization(user: str, realm: str, password: str, method: str, uri: str, nonce: str) -> str:
    """An Authorization header for one challenge: RFC 2617 digest, MD5, qop=auth, nc 1
    (written out here: the tests do not use the switch's own digest code)."""
    nc, cnonce = "00000001", uuid.uuid4().hex[:8]
    ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()  # noqa: S324 - RFC 2617 MD5
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()  # noqa: S324
    digest = hashlib.md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}".encode()).hexdigest()  # noqa: S324
    return (f'Authorization: Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
            f'response="{digest}", algorithm=MD5, qop=auth, nc={nc}, cnonce="{cnonce}"')


def status(msg: str) -> int:
    return int(msg.split(" ", 2)[1])


def header(msg: str, name: str) -> str | None:
    m = re.search(rf"^{name}\s*:\s*(.*?)\r?$", msg.split("\r\n\r\n", 1)[0], re.I | re.M)
    return m.group(1) if m else None


def cseq_method(msg: str) -> str:
    return (header(msg, "CSeq") or "").split()[-1]


@pytest.fixture
def phone() -> Iterator[Callable[[tuple[str, int]], TcpPhone]]:
    phones: list[TcpPhone] = []

    def make(target: tuple[str, int]) -> TcpPhone:
        p = TcpPhone(target)
        phones.append(p)
        return p

    yield make
    for p in phones:
        p.close()


@pytest.mark.parametrize("cl", ["Content-Length: {n}", "l: {n}", "content-LENGTH : {n}"])
def test_options_with_content_length_first_is_answered(switch, phone, cl: str) -> None:
    sw = switch("reject486")
    p = phone(sw.sip_addr)
    h, port = sw.sip_addr
    for cseq in (1, 2):  # twice on the one connection: it stayed open after the first
        p.request("OPTIONS", f"sip:service@{h}:{port}", cseq, cl_first=cl)
        got = p.responses("OPTIONS")
        assert [status(m) for m in got] == [200], (got, sw.log_tail())
    assert "needs Content-Length" not in sw.log_text()


def test_linphone_style_register_with_content_length_before_authorization(switch, phone, tmp_path) -> None:
    config = tmp_path / "accounts.toml"
    config.write_text('realm = "e2e"\n[users]\nalice = "s3cret"\n')
    sw = switch("reject486", ["--config", str(config)])
    p = phone(sw.sip_addr)
    h, port = sw.sip_addr
    ruri = f"sip:{h}:{port}"
    p.request("REGISTER", ruri, 1, cl_first="Content-Length: 0", to_user="alice",
              extra=("Expires: 300",))
    challenge = p.responses("REGISTER")
    assert [status(m) for m in challenge] == [401], (challenge, sw.log_tail())
    nonce = re.search(r'nonce="([^"]+)"', header(challenge[0], "WWW-Authenticate") or "")
    assert nonce, challenge[0]
    auth = digest_authorization("alice", "e2e", "s3cret", "REGISTER", ruri, nonce.group(1))
    # linphone's order: the start line, Content-Length: 0, ..., Authorization last.
    data = p.request("REGISTER", ruri, 2, cl_first="Content-Length: 0", to_user="alice",
                     extra=("Expires: 300", "User-Agent: Linphone/5.2", auth))
    assert data.index(b"Content-Length: 0") < data.index(b"Authorization:")
    ok = p.responses("REGISTER")
    assert [status(m) for m in ok] == [200], (ok, sw.log_tail())
    assert f"{p.addr[0]}:{p.addr[1]}" in (header(ok[0], "Contact") or ""), ok[0]
    assert "needs Content-Length" not in sw.log_text()


def test_invite_over_tcp_with_content_length_before_the_sdp_headers(switch, phone, rtp_sink: RtpSink) -> None:
    sw = switch("short_greeting")
    p = phone(sw.sip_addr)
    h, port = sw.sip_addr
    ruri = f"sip:service@{h}:{port}"
    p.request("INVITE", ruri, 1, cl_first="l: {n}", body=sdp_offer(rtp_sink.port))
    got = p.responses("INVITE")
    assert [status(m) for m in got][0] == 100 and status(got[-1]) == 200, (got, sw.log_tail())
    ok = got[-1]
    assert re.search(r"^m=audio \d+ RTP/AVP 0", ok, re.M), ok
    to_tag = re.search(r";tag=([^;>\s]+)", header(ok, "To") or "")
    contact = re.search(r"<([^>]+)>", header(ok, "Contact") or "")
    assert to_tag and contact, ok
    p.request("ACK", contact.group(1), 1, cl_first="Content-Length: {n}", to_tag=to_tag.group(1))
    # The greeting plays (0.5 s: ~25 frames), then the switch hangs up over this connection.
    assert rtp_sink.wait_for(20, timeout=5, pt=0), f"{rtp_sink.count(0)} RTP packets"
    deadline = time.monotonic() + 5
    while not p.requests_seen and time.monotonic() < deadline:
        msg = p.read(deadline - time.monotonic())
        if msg is not None and not msg.startswith("SIP/2.0 "):
            p.requests_seen.append(msg)
    assert p.requests_seen and p.requests_seen[0].startswith("BYE "), (p.requests_seen, sw.log_tail())
    bye = p.requests_seen[0]
    reply = ["SIP/2.0 200 OK", *(f"{n}: {header(bye, n)}" for n in ("Via", "From", "To", "Call-ID", "CSeq")),
             "Content-Length: 0"]
    p.sock.sendall(("\r\n".join(reply) + "\r\n\r\n").encode())
    assert "needs Content-Length" not in sw.log_text()
