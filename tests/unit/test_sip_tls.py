"""SIP over TLS, no sockets: the contexts (startup errors that say what to do), the
sans-I/O TlsSession driven pairwise in memory, and the tls_* config keys."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from e2e.certs import Pki, make_pki
from switch.config import ConfigError, load
from switch.sip.events import RequestReceived, ResponseReceived, SipEvent
from switch.sip.listeners import bind_listeners
from switch.sip.message import SipRequest, make_response, parse_message
from switch.sip.tls import TlsConfigError, TlsError, TlsSession, client_context, server_context
from switch.sip.transport import SipTransport
from test_sip_listeners import _Datagrams, _has_ipv6


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def handshake(server: TlsSession, client: TlsSession, rounds: int = 6) -> None:
    """Shuttle records between the two until neither has anything to say."""
    client.start()
    for _ in range(rounds):
        to_server = client.data_to_send()
        if to_server:
            server.receive(to_server)
        to_client = server.data_to_send()
        if to_client:
            client.receive(to_client)
        if not to_server and not to_client:
            return


def test_a_verified_session_carries_sip_both_ways(pki: Pki) -> None:
    server = TlsSession(server_context(str(pki.cert), str(pki.key)), server_side=True)
    client = TlsSession(client_context(str(pki.ca)), server_side=False, server_hostname="127.0.0.1")
    handshake(server, client)
    assert server.established and client.established
    assert client.version in ("TLSv1.2", "TLSv1.3")
    client.send(b"OPTIONS sip:127.0.0.1 SIP/2.0\r\n\r\n")
    assert server.receive(client.data_to_send()) == b"OPTIONS sip:127.0.0.1 SIP/2.0\r\n\r\n"
    server.send(b"SIP/2.0 200 OK\r\n\r\n")
    assert client.receive(server.data_to_send()) == b"SIP/2.0 200 OK\r\n\r\n"


@pytest.mark.parametrize(("ca", "name", "why"), [
    ("system", "127.0.0.1", "the peer's certificate was refused: .*(self.signed|unable to get local issuer)"),
    ("test CA", "pbx.example.com", "the peer's certificate was refused: .*(mismatch|match)"),  # RFC 5922 §7.2
])
def test_a_certificate_we_cannot_trust_for_that_name_ends_the_handshake(pki: Pki, ca: str, name: str,
                                                                        why: str) -> None:
    server = TlsSession(server_context(str(pki.cert), str(pki.key)), server_side=True)
    client = TlsSession(client_context(str(pki.ca) if ca == "test CA" else ""), server_side=False,
                        server_hostname=name)
    with pytest.raises(TlsError, match=why):
        handshake(server, client)
    assert not client.established


def test_without_verification_a_self_signed_peer_is_accepted(pki: Pki) -> None:
    server = TlsSession(server_context(str(pki.rogue_cert), str(pki.rogue_key)), server_side=True)
    client = TlsSession(client_context(verify=False), server_side=False, server_hostname="127.0.0.1")
    handshake(server, client)
    assert client.established


def test_plain_sip_sent_to_the_tls_port_is_named_for_what_it_is(pki: Pki) -> None:
    server = TlsSession(server_context(str(pki.cert), str(pki.key)), server_side=True)
    with pytest.raises(TlsError, match=r"not TLS \(plain SIP over TCP sent to the TLS port\?\)"):
        server.receive(b"OPTIONS sip:127.0.0.1:5061 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1\r\n\r\n")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_1_1_and_older_are_refused(pki: Pki) -> None:
    ctx = client_context(str(pki.ca))
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_1  # RFC 8996
    server = TlsSession(server_context(str(pki.cert), str(pki.key)), server_side=True)
    client = TlsSession(ctx, server_side=False, server_hostname="127.0.0.1")
    with pytest.raises(TlsError):
        handshake(server, client)
    assert not server.established


# ---------------------------------------------------------------------- startup errors
def test_missing_files_say_which_and_what_to_give(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(TlsConfigError, match=r"tls_cert '.*nope.pem': no such file; give the certificate"):
        server_context(str(tmp_path / "nope.pem"), str(pki.key))
    with pytest.raises(TlsConfigError, match=r"tls_key '.*' is not a file"):
        server_context(str(pki.cert), str(tmp_path))
    with pytest.raises(TlsConfigError, match=r"tls_ca_file '.*nope.pem': no such file"):
        client_context(str(tmp_path / "nope.pem"))


def test_a_key_that_is_not_the_certificates_says_how_to_check(pki: Pki) -> None:
    with pytest.raises(TlsConfigError, match=r"is not the key of tls_cert .*\(openssl x509 -noout -pubkey"):
        server_context(str(pki.cert), str(pki.rogue_key))


def test_an_encrypted_key_says_how_to_decrypt_it_instead_of_prompting(tmp_path: Path, pki: Pki) -> None:
    locked = tmp_path / "locked.pem"
    subprocess.run(["openssl", "pkey", "-in", str(pki.key), "-out", str(locked), "-aes256", "-passout", "pass:x"],
                   check=True, capture_output=True)
    with pytest.raises(TlsConfigError, match=r"encrypted with a passphrase: .*\(openssl pkey -in"):
        server_context(str(pki.cert), str(locked))


def test_a_file_that_is_not_pem_says_what_it_should_look_like(tmp_path: Path, pki: Pki) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("hello\n")
    with pytest.raises(TlsConfigError, match="BEGIN CERTIFICATE"):
        server_context(str(junk), str(pki.key))
    with pytest.raises(TlsConfigError, match="no PEM CA certificate"):
        client_context(str(junk))


# ---------------------------------------------------------------------- config
def test_the_tls_keys_are_checked_when_the_config_loads(pki: Pki) -> None:
    good = {"tls_cert": str(pki.cert), "tls_key": str(pki.key)}
    config = load(None, {"tls_listen": "[::]:5061", **good, "tls_ca_file": str(pki.ca)})
    assert config.tls_listen_addr == ("::", 5061)
    server, client = config.tls_contexts()
    assert server is not None and client.check_hostname
    assert load(None, {}).tls_listen_addr is None  # off by default
    assert load(None, {"tls_verify": False}).tls_contexts()[1].verify_mode.name == "CERT_NONE"
    with pytest.raises(ConfigError, match="needs tls_cert and tls_key .* openssl req -x509"):
        load(None, {"tls_listen": "0.0.0.0:5061"})
    with pytest.raises(ConfigError, match="tls_cert and tls_key go together"):
        load(None, {"tls_cert": str(pki.cert)})
    with pytest.raises(ConfigError, match="is the SIP port .* 5061 by convention"):
        load(None, {"listen": "127.0.0.1:5070", "tls_listen": "127.0.0.1:5070", **good})
    with pytest.raises(ConfigError, match="an IPv6 address goes in brackets"):
        load(None, {"tls_listen": "::1:5061", **good})
    with pytest.raises(ConfigError, match="not the key of tls_cert"):
        load(None, {"tls_listen": "127.0.0.1:5061", "tls_cert": str(pki.cert), "tls_key": str(pki.rogue_key)})


# ---------------------------------------------------------------------- the transport, on loopback
class Answerer:
    """Answers every request 200 and notes the transport it came over."""

    def __init__(self, sip: SipTransport) -> None:
        self.sip = sip
        self.came_over: list[str] = []

    def handle_sip_event(self, event: SipEvent) -> None:
        if isinstance(event, RequestReceived):
            self.came_over.append(self.sip.transport_of(event.transaction.addr))
            self.sip.send_response(event.transaction, make_response(event.request, 200))


def options_over(transport: str, here: tuple[str, int]) -> SipRequest:
    request = parse_message((f"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/{transport} {here[0]}:{here[1]};"
                             f"branch=z9hG4bK-{here[1]};rport\r\nFrom: <sip:t@127.0.0.1>;tag=1\r\n"
                             f"To: <sip:s@127.0.0.1>\r\nCall-ID: {here[1]}@t\r\nCSeq: 1 OPTIONS\r\n"
                             "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(request, SipRequest)
    return request


class Catcher:
    def __init__(self) -> None:
        self.responses: list[int] = []

    def handle_sip_event(self, event: SipEvent) -> None:
        if isinstance(event, ResponseReceived):
            self.responses.append(event.response.status)


def test_a_tls_connection_we_open_carries_requests_and_is_never_replaced_by_udp(
        loop: asyncio.AbstractEventLoop, pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> None:
        server = SipTransport(loop)
        server.user = answerer = Answerer(server)
        await server.listen_tls("127.0.0.1", 0, server_context(str(pki.cert), str(pki.key)))
        assert server.tls_addr is not None
        client = SipTransport(loop)
        client.user = catcher = Catcher()
        client.client_tls = client_context(str(pki.ca))
        await client.connect_tls(server.tls_addr, "127.0.0.1")
        assert client.transport_of(server.tls_addr) == "TLS"
        await client.connect_tls(server.tls_addr, "127.0.0.1")  # reused, not a second connection
        assert len(client.streams) == 1
        client.send_request(options_over("TLS", client.streams[server.tls_addr].transport.get_extra_info(
            "sockname")[:2]), server.tls_addr)
        for _ in range(100):
            if catcher.responses:
                break
            await asyncio.sleep(0.01)
        assert catcher.responses == [200] and answerer.came_over == ["TLS"]
        # The server goes away: what is meant for it is not sent over UDP instead.
        server.close()
        for _ in range(100):
            if not client.streams:
                break
            await asyncio.sleep(0.01)
        assert not client.streams and server.tls_addr in client.secure_peers
        datagrams = client.transport = _Datagrams()  # type: ignore[assignment]
        client.send_stateless(options_over("TLS", ("127.0.0.1", 1)), server.tls_addr)
        assert datagrams.sent == []
        assert f"not sending to 127.0.0.1:{server.tls_addr[1]}: its TLS connection is closed" in caplog.text
        client.transport = None
        client.close()

    loop.run_until_complete(run())


def test_an_untrusted_server_or_plain_sip_on_the_tls_port_fails_and_is_counted(
        loop: asyncio.AbstractEventLoop, pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> None:
        server = SipTransport(loop)
        await server.listen_tls("127.0.0.1", 0, server_context(str(pki.rogue_cert), str(pki.rogue_key)))
        assert server.tls_addr is not None
        client = SipTransport(loop)
        client.client_tls = client_context(str(pki.ca))
        with pytest.raises(TlsError, match="certificate was refused: self.signed"):
            await client.connect_tls(server.tls_addr, "127.0.0.1")
        assert client.tls_failures == 1 and not client.streams
        reader, writer = await asyncio.open_connection(*server.tls_addr)
        writer.write(options_over("TCP", writer.get_extra_info("sockname")[:2]).__bytes__())
        assert await asyncio.wait_for(reader.read(), 2) == b""  # closed at once
        writer.close()
        for _ in range(100):  # the server also saw the client refuse its certificate
            if server.tls_failures == 2:
                break
            await asyncio.sleep(0.01)
        assert server.tls_failures == 2 and not server.streams
        # One line per address a minute: the refused certificate's; the plain SIP is folded in.
        assert "failed: the peer does not trust our certificate (unknown CA)" in caplog.text
        assert "not TLS" not in caplog.text
        server.close()
        client.close()

    loop.run_until_complete(run())


def test_tls_listens_on_tcp_only_in_one_family_or_both() -> None:
    bound = bind_listeners("127.0.0.1", 0, kinds=(socket.SOCK_STREAM,))
    try:
        assert bound.udp == [] and len(bound.tcp) == 1
    finally:
        bound.close()
    if _has_ipv6():  # --tls-listen [::]:5061: an IPv6 and an IPv4 socket, like --listen
        bound = bind_listeners("::", 0, kinds=(socket.SOCK_STREAM,))
        try:
            assert bound.udp == [] and [s.family for s in bound.tcp] == [socket.AF_INET6, socket.AF_INET]
        finally:
            bound.close()


def test_a_client_that_never_completes_its_handshake_is_dropped(
        loop: asyncio.AbstractEventLoop, pki: Pki, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr("switch.sip.transport.HANDSHAKE_TIMEOUT", 0.2)  # (10 s in service)

    async def run() -> None:
        server = SipTransport(loop)
        await server.listen_tls("127.0.0.1", 0, server_context(str(pki.cert), str(pki.key)))
        assert server.tls_addr is not None
        reader, writer = await asyncio.open_connection(*server.tls_addr)  # and then says nothing
        started = loop.time()
        assert await asyncio.wait_for(reader.read(), 3) == b""
        assert 0.15 < loop.time() - started < 1.5
        writer.close()
        assert server.tls_failures == 1 and not server.streams
        assert "failed: no TLS handshake within 0.2 s" in caplog.text
        server.close()

    loop.run_until_complete(run())


def test_a_source_opening_connections_faster_than_the_flood_guard_allows_is_cut_off(
        loop: asyncio.AbstractEventLoop, pki: Pki) -> None:
    """Each new connection counts with the flood guard as a request does: past its density
    the source's connections are closed on arrival (no handshake, no socket held)."""
    from switch.security.ratelimit import FloodGuard

    async def run() -> None:
        guard = FloodGuard(window=10.0, density=3, block_seconds=60.0)
        server = SipTransport(loop, admit=guard.allow)
        await server.listen_tls("127.0.0.1", 0, server_context(str(pki.cert), str(pki.key)))
        assert server.tls_addr is not None
        opened = [await asyncio.open_connection(*server.tls_addr) for _ in range(6)]
        closed = []
        for reader, _ in opened:  # the ones cut off read EOF at once; the others wait for a ClientHello
            try:
                closed.append(await asyncio.wait_for(reader.read(), 0.3) == b"")
            except TimeoutError:
                closed.append(False)
        assert closed == [False, False, False, True, True, True]
        assert server.flood_dropped == 3 and guard.blocked("127.0.0.1", loop.time())
        for _, writer in opened:
            writer.close()
        server.close()

    loop.run_until_complete(run())
