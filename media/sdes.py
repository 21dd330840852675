"""SDES key exchange for SRTP (RFC 4568): the ``a=crypto`` attribute of an RTP/SAVP stream.

    a=crypto:<tag> <crypto-suite> inline:<base64(master key || master salt)>[|lifetime][|MKI:length] [session params]

The key in an SDP is the key its sender encrypts with (RFC 4568 §6.1): we decrypt what
the peer sends with the key of its SDP, and encrypt what we send with the key of ours.
An answer takes one of the offer's lines, by tag, with the same suite and the answerer's
own fresh key (§7.1.2).

What we take (each refused line gets a reason the 488's Warning quotes):

* suites AES_CM_128_HMAC_SHA1_80 and _32 (RFC 4568 §6.2), AEAD_AES_128_GCM and
  AEAD_AES_256_GCM (RFC 7714 §12): what libsrtp (pylibsrtp) implements for us;
* one key per line. Its MKI (RFC 3711 §3.1: an index the sender puts in every packet,
  before the tag, outside what the tag covers) is taken with the AES-CM suites: with one
  key there is one MKI to check and strip from what arrives (media/srtp.py; pylibsrtp
  cannot configure libsrtp's own). Several keys per line (a key list, switched by MKI)
  and an MKI with the AEAD suites are refused;
* any lifetime: it bounds the packets its *sender* may protect with that key (§6.1), so
  a peer's lifetime is the peer's to keep (it re-keys with a re-INVITE, which we take);
  our own lines carry none (libsrtp's limits, RFC 3711 §9.2, apply);
* no session parameters (KDR, UNENCRYPTED_SRTP, FEC_ORDER, ...; §6.3): each changes the
  transform, which we would get wrong silently. WSH (a window size hint) is the
  exception: it asks for nothing we must do.

Pure: no sockets, no libsrtp (media/srtp.py applies the keys).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field

# Suite name -> master key + master salt length in bytes (RFC 4568 §6.2, RFC 7714 §12).
SUITES: dict[str, int] = {
    "AES_CM_128_HMAC_SHA1_80": 16 + 14,
    "AES_CM_128_HMAC_SHA1_32": 16 + 14,
    "AEAD_AES_128_GCM": 16 + 12,
    "AEAD_AES_256_GCM": 32 + 12,
}
# What our offers list, in our order of preference: the RFC 4568 mandatory suite first
# (every SDES peer has it), then the short tag (cheaper on the wire), then AEAD.
OFFERED_SUITES = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32", "AEAD_AES_128_GCM", "AEAD_AES_256_GCM")
SRTP_PROFILE = "RTP/SAVP"
_TAG = re.compile(r"^[0-9]{1,9}$")
_LIFETIME = re.compile(r"^(?:2\^([0-9]{1,2})|([0-9]{1,20}))$")
_MKI = re.compile(r"^([0-9]{1,20}):([0-9]{1,3})$")

KeySource = Callable[[int], bytes]  # n -> n random bytes (os.urandom; tests pass their own)


class UnsupportedCrypto(ValueError):
    """A well-formed a=crypto line we cannot honour (the reason says which part)."""


@dataclass(frozen=True)
class CryptoAttribute:
    """One ``a=crypto`` line. ``key`` is master key || master salt; it is kept out of
    ``repr()`` (and so out of every log line and traceback that prints the object)."""

    tag: int
    suite: str
    key: bytes = field(repr=False)
    lifetime: int | None = None  # packets (the "2^20" form, expanded)
    mki: tuple[int, int] | None = None  # (value, length in bytes)
    session_params: tuple[str, ...] = ()
    extra_keys: int = 0  # further ";inline:" key-params (a list of keys, §6.1)

    @classmethod
    def parse(cls, value: str) -> CryptoAttribute:
        """The value after ``a=crypto:``; ValueError naming the malformed part. A suite
        we do not know parses (its key-params are not checked): ``check()`` refuses it."""
        parts = value.split()
        if len(parts) < 3:
            raise ValueError(f"a=crypto needs a tag, a suite and key params: {_masked(value)!r}")
        tag_s, suite, key_params, *session = parts
        if not _TAG.match(tag_s):
            raise ValueError(f"a=crypto tag must be 1-9 digits, not {tag_s!r}")
        keys = key_params.split(";")
        first = keys[0]
        method, sep, info = first.partition(":")
        if not sep or method != "inline":
            raise ValueError(f"a=crypto key method must be 'inline:' (RFC 4568 §6.1), not {method!r}")
        key_s, *rest = info.split("|")
        try:
            key = base64.b64decode(key_s, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("a=crypto inline key is not base64") from None
        lifetime: int | None = None
        mki: tuple[int, int] | None = None
        for item in rest:
            if ":" in item:
                m = _MKI.match(item)
                if m is None or mki is not None:
                    raise ValueError(f"a=crypto MKI must be VALUE:LENGTH, once, not {item!r}")
                mki = (int(m[1]), int(m[2]))
            else:
                m = _LIFETIME.match(item)
                if m is None or lifetime is not None or mki is not None:
                    raise ValueError(f"a=crypto lifetime must be N or 2^N, before the MKI, not {item!r}")
                lifetime = 2 ** int(m[1]) if m[1] is not None else int(m[2])
        return cls(int(tag_s), suite, key, lifetime, mki, tuple(session), len(keys) - 1)

    def __str__(self) -> str:
        params = "inline:" + base64.b64encode(self.key).decode("ascii")
        if self.lifetime is not None:
            exp = self.lifetime.bit_length() - 1
            params += f"|2^{exp}" if self.lifetime == 1 << exp else f"|{self.lifetime}"
        if self.mki is not None:
            params += f"|{self.mki[0]}:{self.mki[1]}"
        return " ".join((str(self.tag), self.suite, params, *self.session_params))

    def check(self) -> None:
        """UnsupportedCrypto when we cannot use this line (see the module doc for why)."""
        if self.suite not in SUITES:
            raise UnsupportedCrypto(f"crypto suite {self.suite} is not supported (we have {', '.join(SUITES)})")
        if len(self.key) != SUITES[self.suite]:
            raise UnsupportedCrypto(f"{self.suite} needs a {SUITES[self.suite]}-byte key and salt, "
                                    f"the line has {len(self.key)}")
        if self.extra_keys:
            raise UnsupportedCrypto(f"{self.suite} line {self.tag}: several keys (an MKI key list) are not supported")
        if self.mki is not None:
            value, length = self.mki
            if self.suite.startswith("AEAD_"):
                raise UnsupportedCrypto(f"{self.suite} line {self.tag}: an MKI with an AEAD suite is not supported")
            if not 1 <= length <= 128 or value >= 256**length:
                raise UnsupportedCrypto(f"{self.suite} line {self.tag}: MKI {value}:{length} does not fit "
                                        "its length (1-128 bytes)")
        unknown = [p for p in self.session_params if not p.startswith("WSH=")]
        if unknown:
            raise UnsupportedCrypto(f"{self.suite} line {self.tag}: session parameter {unknown[0].split('=')[0]} "
                                    "is not supported")


    @property
    def mki_bytes(self) -> bytes | None:
        """The MKI as it appears in each packet (RFC 3711 §3.1), None without one."""
        return self.mki[0].to_bytes(self.mki[1], "big") if self.mki is not None else None


def new_key(suite: str, random: KeySource = os.urandom) -> bytes:
    """A fresh master key || salt for ``suite`` (RFC 4568 §6.1: from a good random source)."""
    return random(SUITES[suite])


def offer_lines(random: KeySource = os.urandom) -> list[CryptoAttribute]:
    """Our offer's crypto lines, tags 1.., each suite with a key of its own."""
    return [CryptoAttribute(i, suite, new_key(suite, random)) for i, suite in enumerate(OFFERED_SUITES, 1)]


def pick(lines: list[str]) -> tuple[CryptoAttribute | None, list[str]]:
    """The first of an offer's a=crypto values we can use (the offerer's order, RFC 4568
    §7.1.2), and why each one before it was refused (for the 488's Warning)."""
    refused: list[str] = []
    for value in lines:
        try:
            attr = CryptoAttribute.parse(value)
            attr.check()
        except ValueError as exc:
            refused.append(str(exc))
            continue
        return attr, refused
    return None, refused


@dataclass(frozen=True)
class SrtpKeys:
    """The negotiated SRTP of one leg: the suite, the key we send with (ours) and the key
    we receive with (the peer's), and the MKI the peer's packets carry, if its line had
    one. ``repr()`` shows the suite only: keys are never logged."""

    suite: str
    tx_key: bytes = field(repr=False)
    rx_key: bytes = field(repr=False)
    rx_mki: bytes | None = field(default=None, repr=False)


def _masked(value: str) -> str:
    """An a=crypto value with its key replaced, for error messages and logs."""
    return re.sub(r"inline:[^|;\s]*", "inline:<key>", value)
