"""SIP over TLS (RFC 3261 §26.2.1, §26.3.1): the TLS contexts and a sans-I/O TLS session.

The TLS record layer is Python's ``ssl`` (OpenSSL) driven through memory BIOs
(``ssl.SSLObject``): ``TlsSession`` takes the bytes a socket read and returns the bytes
to write and the plaintext that came out, like every other protocol core here, so the
transport (``transport.py``) owns the socket, one code path serves asyncio and uvloop,
and a failed handshake is ours to report. asyncio's own TLS transport reports nothing
when a handshake fails (no callback, no log line), and uvloop's ``start_tls`` could not
take over an accepted socket: measured here, the handshake never completed.

What is checked where:

* ``server_context`` (our listener, ``--tls-cert``/``--tls-key``): TLS 1.2 or newer (RFC
  8996 retired 1.0 and 1.1), OpenSSL's default ciphers; we do not ask phones for client
  certificates (they authenticate with digest, RFC 3261 §22).
* ``client_context`` (calls we place over TLS): TLS 1.2+, the server's certificate
  verified against the system store or ``tls_ca_file``, and its name checked against
  the host of the URI we call (RFC 5922 §7: the identity is the URI's host, a name or an
  IP literal). ``verify=False`` (``tls_verify = false``) turns both checks off: the
  signalling is still encrypted but anyone in the path can pose as the peer. Our own
  certificate, when configured, is offered to peers that ask (mutual TLS trunks).

Startup errors (a missing, unreadable or mismatched file, an encrypted key) are
``TlsConfigError`` with a message saying what to do, never an OpenSSL traceback.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field

# A TLS record starts with its content type; a ClientHello is a handshake record (RFC 8446
# §5.1, RFC 5246 §6.2.1). Anything else as the first byte is not TLS at all: typically
# plain SIP sent to the TLS port.
HANDSHAKE_RECORD = 0x16

# Until then a connection has no messages and holds a socket: a client that connects and
# says nothing (or trickles its hello) is dropped after this.
HANDSHAKE_TIMEOUT = 10.0

_READ_SIZE = 65536


class TlsConfigError(ValueError):
    """A TLS setting cannot be used; the message says which file and what to do."""


class TlsError(Exception):
    """A TLS connection failed: ``reason`` says why in words an operator can act on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _check_file(path: str, what: str, flag: str) -> None:
    if not path:
        raise TlsConfigError(f"{flag} is needed for TLS: give the {what} as a PEM file")
    if not os.path.exists(path):
        raise TlsConfigError(f"{flag} {path!r}: no such file; give the {what} as a PEM file")
    if not os.path.isfile(path):
        raise TlsConfigError(f"{flag} {path!r} is not a file; give the {what} as a PEM file")
    if not os.access(path, os.R_OK):
        raise TlsConfigError(f"{flag} {path!r} is not readable by this user (uid {os.geteuid()}): "
                             "fix its permissions or run the switch as its owner")


def _no_passphrase() -> str:
    # Without a callback OpenSSL would prompt on the terminal for the key's passphrase.
    raise TlsConfigError("encrypted")


def _load_pair(ctx: ssl.SSLContext, cert: str, key: str) -> None:
    _check_file(cert, "certificate (chain)", "tls_cert")
    _check_file(key, "private key", "tls_key")
    try:
        ctx.load_cert_chain(cert, key, password=_no_passphrase)
    except TlsConfigError:
        raise TlsConfigError(f"tls_key {key!r} is encrypted with a passphrase: the switch starts unattended, "
                             f"so store it decrypted (openssl pkey -in {key} -out KEY.pem) and readable "
                             "only by the switch's user") from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TlsConfigError(f"tls_key {key!r} is not the key of tls_cert {cert!r}: give the key the "
                                 "certificate was issued for (openssl x509 -noout -pubkey -in CERT and "
                                 "openssl pkey -pubout -in KEY must print the same key)") from None
        raise TlsConfigError(f"tls_cert {cert!r} / tls_key {key!r}: not a PEM certificate and its private key "
                             f"({exc.reason or exc}); they must look like -----BEGIN CERTIFICATE----- and "
                             "-----BEGIN PRIVATE KEY-----") from None


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """The listener's context: our certificate chain and key, TLS 1.2 or newer."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_pair(ctx, cert, key)
    return ctx


def client_context(ca_file: str = "", verify: bool = True, cert: str = "", key: str = "") -> ssl.SSLContext:
    """The context of connections we open: the peer verified against ``ca_file`` (else
    the system store) with its host name checked, unless ``verify`` is off; our own
    certificate offered when ``cert`` and ``key`` are given."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file:
        _check_file(ca_file, "CA certificate(s) to trust", "tls_ca_file")
        try:
            ctx.load_verify_locations(cafile=ca_file)
        except ssl.SSLError as exc:
            raise TlsConfigError(f"tls_ca_file {ca_file!r}: no PEM CA certificate in it ({exc.reason or exc}); "
                                 "give the certificate(s) of the CA that signed the peers' certificates") from None
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert and key:
        _load_pair(ctx, cert, key)
    return ctx


def _explain(exc: ssl.SSLError) -> str:
    """An OpenSSL error as what happened, for the log line an operator reads."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"the peer's certificate was refused: {exc.verify_message} (trust its CA with tls_ca_file)"
    reason = exc.reason or str(exc)
    return {
        "WRONG_VERSION_NUMBER": "not TLS, or a TLS version we do not speak (1.2 and newer)",
        "UNSUPPORTED_PROTOCOL": "the peer offers only TLS versions older than 1.2",
        "NO_SHARED_CIPHER": "no cipher in common",
        "TLSV1_ALERT_UNKNOWN_CA": "the peer does not trust our certificate (unknown CA)",
        "SSLV3_ALERT_BAD_CERTIFICATE": "the peer refused our certificate",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the peer says our certificate has expired",
        "HTTP_REQUEST": "an HTTP request, not TLS",
    }.get(reason, reason)


@dataclass
class TlsSession:
    """One TLS connection's record layer, sans-I/O: ``receive(bytes)`` returns the
    plaintext that arrived; what must go on the wire (handshake, encrypted data, alerts)
    is taken with ``data_to_send()``. Raises ``TlsError`` when the connection must end."""

    context: ssl.SSLContext
    server_side: bool
    server_hostname: str | None = None
    established: bool = False
    closed: bool = False  # the peer sent close_notify
    _incoming: ssl.MemoryBIO = field(default_factory=ssl.MemoryBIO)
    _outgoing: ssl.MemoryBIO = field(default_factory=ssl.MemoryBIO)
    _first_byte_seen: bool = False

    def __post_init__(self) -> None:
        self._tls = self.context.wrap_bio(self._incoming, self._outgoing, server_side=self.server_side,
                                          server_hostname=None if self.server_side else self.server_hostname)

    def start(self) -> None:
        """A client sends its ClientHello first."""
        self._handshake()

    @property
    def version(self) -> str | None:
        return self._tls.version()

    def receive(self, data: bytes) -> bytes:
        if not self._first_byte_seen and data:
            self._first_byte_seen = True
            if self.server_side and data[0] != HANDSHAKE_RECORD:
                raise TlsError("not TLS (plain SIP over TCP sent to the TLS port?)")
        self._incoming.write(data)
        if not self.established:
            self._handshake()
            if not self.established:
                return b""
        chunks = []
        while True:
            try:
                chunk = self._tls.read(_READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self.closed = True
                break
            except ssl.SSLError as exc:
                raise TlsError(_explain(exc)) from None
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def send(self, plaintext: bytes) -> None:
        """Encrypt ``plaintext`` (after the handshake); take the records with ``data_to_send``."""
        try:
            self._tls.write(plaintext)
        except ssl.SSLError as exc:
            raise TlsError(_explain(exc)) from None

    def data_to_send(self) -> bytes:
        return self._outgoing.read()

    def _handshake(self) -> None:
        try:
            self._tls.do_handshake()
        except ssl.SSLWantReadError:
            return
        except ssl.SSLError as exc:
            raise TlsError(_explain(exc)) from None
        self.established = True


__all__ = ["HANDSHAKE_TIMEOUT", "TlsConfigError", "TlsError", "TlsSession", "client_context", "server_context"]
