"""What SIP listens on (switch/sip/listeners.py, SipTransport.listen) and where it sends:
``[::]`` is dual stack (IPv4 peers seen as IPv4, each answered from the socket of its
family, over UDP and TCP), a host without IPv6 falls back to IPv4, a host name never
reaches sendto(), and Via maddr never redirects a response (RFC 3261 §18.2.2)."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket

import pytest

from switch.config import ConfigError, parse_hostport
from switch.sip import listeners
from switch.sip.events import RequestReceived, SipEvent
from switch.sip.message import SipRequest, make_response, parse_message
from switch.sip.transaction import response_address, stamp_via
from switch.sip.transport import SipTransport


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _has_ipv6(), reason="this host has no IPv6 loopback")


def options(host: str, port: int) -> bytes:
    sent_by = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return (f"OPTIONS sip:{sent_by} SIP/2.0\r\nVia: SIP/2.0/UDP {sent_by};branch=z9hG4bK-{port};rport\r\n"
            f"From: <sip:t@{sent_by}>;tag=1\r\nTo: <sip:s@{sent_by}>\r\nCall-ID: {port}@t\r\nCSeq: 1 OPTIONS\r\n"
            "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()


class Answerer:
    """A transaction user that answers every request 200."""

    def __init__(self, sip: SipTransport) -> None:
        self.sip = sip
        self.sources: list[tuple[str, int]] = []

    def handle_sip_event(self, event: SipEvent) -> None:
        if isinstance(event, RequestReceived):
            self.sources.append(event.transaction.addr)
            self.sip.send_response(event.transaction, make_response(event.request, 200))


async def _udp_exchange(family: int, host: str, port: int) -> tuple[bytes, tuple[str, int]]:
    with socket.socket(family, socket.SOCK_DGRAM) as peer:
        peer.bind((host, 0))
        peer.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_sendto(peer, options(host, peer.getsockname()[1]), (host, port))
        data, source = await asyncio.wait_for(loop.sock_recvfrom(peer, 65535), 2)
        return data, source[:2]


async def _tcp_exchange(host: str, port: int) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(options(host, writer.get_extra_info("sockname")[1]))
    data = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
    writer.close()
    return data


@needs_ipv6
def test_dual_stack_answers_each_family_from_its_own_socket(loop: asyncio.AbstractEventLoop) -> None:
    async def run() -> None:
        sip = SipTransport(loop)
        tu = Answerer(sip)
        sip.user = tu
        await sip.listen("::", 0)
        try:
            host, port = sip.local_addr
            assert host == "::" and sip.transport4 is not None
            for family, peer in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
                data, source = await _udp_exchange(family, peer, port)
                assert data.startswith(b"SIP/2.0 200 ") and source == (peer, port)
                assert f";received={peer}".encode() in data  # an IPv4 peer is no ::ffff: address
                assert (await _tcp_exchange(peer, port)).startswith(b"SIP/2.0 200 ")
            assert [h for h, _ in tu.sources] == ["127.0.0.1", "127.0.0.1", "::1", "::1"]
        finally:
            sip.close()

    loop.run_until_complete(run())


@needs_ipv6
def test_an_ipv6_address_listens_on_ipv6_only(loop: asyncio.AbstractEventLoop) -> None:
    async def run() -> None:
        sip = SipTransport(loop)
        sip.user = Answerer(sip)
        await sip.listen("::1", 0)
        try:
            assert sip.local_addr[0] == "::1" and sip.transport4 is None
            data, _ = await _udp_exchange(socket.AF_INET6, "::1", sip.local_addr[1])
            assert data.startswith(b"SIP/2.0 200 ")
        finally:
            sip.close()

    loop.run_until_complete(run())


def test_a_host_without_ipv6_listens_on_ipv4(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    real = listeners._socket

    def no_ipv6(family: socket.AddressFamily, kind: socket.SocketKind, host: str, port: int) -> socket.socket:
        if family == socket.AF_INET6:
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
        return real(family, kind, host, port)

    monkeypatch.setattr(listeners, "_socket", no_ipv6)
    with caplog.at_level(logging.WARNING):
        bound = listeners.bind_listeners("::", 0)
    try:
        assert bound.host == "0.0.0.0" and len(bound.udp) == len(bound.tcp) == 1
        assert bound.udp[0].family == socket.AF_INET and "IPv6 offers get 488" in caplog.text
    finally:
        bound.close()


def test_a_taken_port_is_an_error() -> None:
    bound = listeners.bind_listeners("127.0.0.1", 0)
    try:
        with pytest.raises(OSError) as taken:
            listeners.bind_listeners("127.0.0.1", bound.port)
        assert taken.value.errno == errno.EADDRINUSE
    finally:
        bound.close()


class _Datagrams:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))


def test_a_host_name_never_reaches_sendto(loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture) -> None:
    sip = SipTransport(loop)
    wire = sip.transport = _Datagrams()  # type: ignore[assignment]
    request = parse_message(options("192.0.2.1", 5060))
    assert isinstance(request, SipRequest)
    sip.send_stateless(request, ("gw.example.net", 5060))  # a bug upstream: refused, not resolved
    sip.send_stateless(request, ("192.0.2.1", 5060))
    assert [addr for _, addr in wire.sent] == [("192.0.2.1", 5060)]
    assert "not sending to gw.example.net:5060" in caplog.text


def test_a_dual_stack_transport_sends_each_datagram_from_its_family(loop: asyncio.AbstractEventLoop) -> None:
    sip = SipTransport(loop)
    v6, v4 = _Datagrams(), _Datagrams()
    sip.transport, sip.transport4 = v6, v4  # type: ignore[assignment]
    request = parse_message(options("192.0.2.1", 5060))
    assert isinstance(request, SipRequest)
    sip.send_stateless(request, ("2001:db8::1", 5060))
    sip.send_stateless(request, ("192.0.2.1", 5060))
    assert [a for _, a in v6.sent] == [("2001:db8::1", 5060)] and [a for _, a in v4.sent] == [("192.0.2.1", 5060)]


@pytest.mark.parametrize("via, source, dest", [
    # §18.1.1 defines maddr for requests sent to a multicast group; we listen unicast, so a
    # request that reached us was not one, and following maddr would send our response to
    # whatever address (or name) the request picked.
    ("SIP/2.0/UDP 192.0.2.1:5062;maddr=203.0.113.9;branch=z9hG4bK1", ("192.0.2.1", 5062), ("192.0.2.1", 5062)),
    ("SIP/2.0/UDP 192.0.2.1;maddr=victim.example.com;branch=z9hG4bK1;rport", ("192.0.2.1", 40000),
     ("192.0.2.1", 40000)),
    ("SIP/2.0/UDP phone.example.com:5070;maddr=239.0.0.1;branch=z9hG4bK1", ("2001:db8::5", 5070),
     ("2001:db8::5", 5070)),
])
def test_maddr_never_redirects_a_response_and_the_host_is_always_an_address(
        via: str, source: tuple[str, int], dest: tuple[str, int]) -> None:
    request = parse_message(options("192.0.2.1", 5062).replace(b"Via: SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bK-5062;rport",
                                                               f"Via: {via}".encode()))
    assert isinstance(request, SipRequest) and request.via.params.get("maddr")
    stamp_via(request, source)
    assert response_address(request, source) == dest


@pytest.mark.parametrize("text, expected", [
    ("[::]:5060", ("::", 5060)), ("[::1]:5070", ("::1", 5070)), ("[2001:DB8::1]:5060", ("2001:DB8::1", 5060)),
    ("0.0.0.0:5060", ("0.0.0.0", 5060)), ("127.0.0.1:5070", ("127.0.0.1", 5070)), (":5060", ("0.0.0.0", 5060)),
])
def test_listen_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(text, "listen") == expected


@pytest.mark.parametrize("text", ["::1:5060", "[::1:5060", "[::1]x:5060", "[192.0.2.1]:5060", "[]:5060", "[::1]"])
def test_an_ipv6_address_must_be_in_brackets(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_hostport(text, "listen")
