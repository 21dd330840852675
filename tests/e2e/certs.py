"""Certificates the TLS tests make for themselves with the `openssl` command line, and the
switch flags that use them.

`make_pki(dir)`: a test CA; a server certificate it signs for 127.0.0.1 and localhost
(what the switch and the TLS peers present); and a self-signed "rogue" certificate for
the same names, which nothing trusts (a peer a verifying switch must refuse). Keys are
unencrypted P-256 (fast to make: the whole set takes ~50 ms).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from .harness import LOCALHOST, SwitchProcess, free_tcp_port

NAMES = "subjectAltName=IP:127.0.0.1,DNS:localhost"


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA certificate to trust
    cert: Path  # signed by the CA for 127.0.0.1 and localhost
    key: Path
    rogue_cert: Path  # self-signed for the same names: trusted by nobody
    rogue_key: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


def _key(path: Path) -> Path:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path))
    return path


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.pem", _key(directory / "ca-key.pem")
    _openssl("req", "-x509", "-new", "-key", str(ca_key), "-out", str(ca), "-days", "2", "-subj", "/CN=e2e test CA",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
    key, csr, cert = _key(directory / "key.pem"), directory / "server.csr", directory / "cert.pem"
    _openssl("req", "-new", "-key", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    ext = directory / "server.ext"
    ext.write_text(f"{NAMES}\nextendedKeyUsage=serverAuth,clientAuth\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
             "-out", str(cert), "-days", "2", "-extfile", str(ext))
    rogue_key, rogue = _key(directory / "rogue-key.pem"), directory / "rogue.pem"
    _openssl("req", "-x509", "-new", "-key", str(rogue_key), "-out", str(rogue), "-days", "2",
             "-subj", "/CN=127.0.0.1", "-addext", NAMES)
    return Pki(ca, cert, key, rogue, rogue_key)


def tls_args(pki: Pki) -> list[str]:
    """Switch flags: a TLS listener on a free port with the CA's certificate, trusting that CA."""
    return ["--tls-listen", f"{LOCALHOST}:{free_tcp_port()}", "--tls-cert", str(pki.cert),
            "--tls-key", str(pki.key), "--tls-ca-file", str(pki.ca)]


def tls_port(sw: SwitchProcess) -> int:
    """The port `tls_args` gave the switch."""
    return int(sw.extra_args[sw.extra_args.index("--tls-listen") + 1].rsplit(":", 1)[1])
