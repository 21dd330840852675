"""SRTP and SRTCP (RFC 3711) for one leg, with the keys SDES negotiated (media/sdes.py).

libsrtp does the cryptography (through pylibsrtp, the binding aiortc maintains); this
module gives a leg one object with the four operations it needs and one error type.
Two libsrtp sessions per leg: one sends with our key (any SSRC we send from, so a new
SSRC after a re-INVITE needs nothing new), one receives with the peer's (any SSRC the
peer sends from). Each keeps its own rollover counter and replay window (RFC 3711
§3.3.1, §3.3.2), so a retransmitted or replayed packet fails like a forged one.

A peer whose crypto line has an MKI puts it in every packet, between the encrypted
part and the tag (RFC 3711 §3.1, §3.4; outside what the tag covers): we check it and cut
it out before libsrtp sees the packet (pylibsrtp cannot give libsrtp an MKI). Our own
packets carry none: our lines declare none.

A re-key (a re-INVITE with a new key, RFC 4568 §7.1.4) is a new ``SrtpContext``: the
leg replaces the whole object when its ``SrtpKeys`` change (media/session.py).

Measured cost: bench/srtp_cost.py (numbers in bench/README.md).

pylibsrtp is imported by the first ``SrtpContext``, not with this module: its binding
(libsrtp with its own crypto) is ~5 MiB of the switch's RSS, a process serving only plain
RTP never needs it (issue 7 point 4 holds 1000 calls to 200 MB), and the import takes
~7 ms once, on the loop, at the first SRTP answer.
"""

from __future__ import annotations

from .sdes import SUITES, SrtpKeys

# Suite name (RFC 4568 §6.2, RFC 7714 §12) -> libsrtp profile (a pylibsrtp.Policy name).
_PROFILES: dict[str, str] = {
    "AES_CM_128_HMAC_SHA1_80": "SRTP_PROFILE_AES128_CM_SHA1_80",
    "AES_CM_128_HMAC_SHA1_32": "SRTP_PROFILE_AES128_CM_SHA1_32",
    "AEAD_AES_128_GCM": "SRTP_PROFILE_AEAD_AES_128_GCM",
    "AEAD_AES_256_GCM": "SRTP_PROFILE_AEAD_AES_256_GCM",
}
assert set(_PROFILES) == set(SUITES), "media/sdes.py and media/srtp.py must list the same suites"
# What libsrtp raises: (pylibsrtp.Error, ValueError) once it is loaded (an ``except`` names
# these only when something was raised, and nothing is raised before the first context).
_ERRORS: tuple[type[Exception], ...] = (ValueError,)
# Authentication tag bytes (RTP, RTCP) of the suites an MKI is taken with (RFC 4568 §6.2:
# _32 is a 32-bit tag on SRTP, 80 bits on SRTCP).
_TAGS: dict[str, tuple[int, int]] = {"AES_CM_128_HMAC_SHA1_80": (10, 10), "AES_CM_128_HMAC_SHA1_32": (4, 10)}


class SrtpError(ValueError):
    """A packet could not be protected or unprotected: failed authentication, a replay,
    a packet too short to be SRTP. The packet is dropped; the message says why."""


class SrtpContext:
    """The SRTP state of one leg for one pair of keys."""

    __slots__ = ("suite", "_tx", "_rx", "_mki", "_tags")

    def __init__(self, keys: SrtpKeys) -> None:
        profile = _PROFILES.get(keys.suite)
        if profile is None:
            raise ValueError(f"SRTP suite {keys.suite} is not supported (we have {', '.join(_PROFILES)})")
        self.suite = keys.suite
        self._mki = keys.rx_mki
        self._tags = _TAGS.get(keys.suite, (0, 0))
        if self._mki is not None and keys.suite not in _TAGS:
            raise ValueError(f"SRTP {keys.suite}: an MKI is taken with the AES-CM suites only")
        global _ERRORS
        import pylibsrtp  # the first context loads the binding (module doc); later ones find it

        _ERRORS = (pylibsrtp.Error, ValueError)
        policy, number = pylibsrtp.Policy, getattr(pylibsrtp.Policy, profile)
        try:
            self._tx: pylibsrtp.Session = pylibsrtp.Session(policy(
                key=keys.tx_key, ssrc_type=policy.SSRC_ANY_OUTBOUND, srtp_profile=number))
            self._rx: pylibsrtp.Session = pylibsrtp.Session(policy(
                key=keys.rx_key, ssrc_type=policy.SSRC_ANY_INBOUND, srtp_profile=number))
        except _ERRORS as exc:  # (the message never holds the key)
            raise ValueError(f"SRTP {keys.suite}: libsrtp refused the keys: {exc}") from None

    def protect_rtp(self, packet: bytes) -> bytes:
        try:
            return self._tx.protect(packet)
        except _ERRORS as exc:
            raise SrtpError(f"SRTP protect failed: {exc}") from None

    def protect_rtcp(self, packet: bytes) -> bytes:
        try:
            return self._tx.protect_rtcp(packet)
        except _ERRORS as exc:
            raise SrtpError(f"SRTCP protect failed: {exc}") from None

    def unprotect_rtp(self, packet: bytes) -> bytes:
        if self._mki is not None:
            packet = self._strip_mki(packet, self._tags[0], 12, "SRTP")
        try:
            return self._rx.unprotect(packet)
        except _ERRORS as exc:
            raise SrtpError(f"SRTP {exc}") from None

    def unprotect_rtcp(self, packet: bytes) -> bytes:
        if self._mki is not None:
            packet = self._strip_mki(packet, self._tags[1], 8 + 4, "SRTCP")  # (+ the E flag and index)
        try:
            return self._rx.unprotect_rtcp(packet)
        except _ERRORS as exc:
            raise SrtpError(f"SRTCP {exc}") from None

    def _strip_mki(self, packet: bytes, tag: int, header: int, what: str) -> bytes:
        mki = self._mki
        assert mki is not None
        end = len(packet) - tag
        if end - len(mki) < header or packet[end - len(mki):end] != mki:
            raise SrtpError(f"{what} packet without the negotiated MKI")
        return packet[:end - len(mki)] + packet[end:]

    def __repr__(self) -> str:
        return f"<SrtpContext {self.suite}>"
