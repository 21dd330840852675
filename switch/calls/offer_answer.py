"""RFC 3264 offer/answer for one leg: negotiated once, kept in one place.

A leg owns one ``OfferAnswer``. It knows our SDP session identity (o= id and version),
the local RTP port once media is open, the peer's offer or ours, and the negotiated
``MediaParams``. Every SDP the leg sends comes from here, and every SDP it receives is
read here, so a call's media description is never computed twice: the answer to an
offer is built once and reused for the 183 and the 200 (RFC 3261 §13.2.1 says they
must be the same), and a new version is made only for a new offer (RFC 3264 §8).

Failures raise ``OfferAnswerError`` carrying the SIP status the peer should get:
488 with a Warning for no common codec (RFC 3261 §21.4.26, Warning 305) or media in an
address family we cannot serve (Warning 301), 400 for SDP that does not parse.

SRTP (RFC 4568 SDES, media/sdes.py): an inbound leg answers by the switch's ``srtp``
policy ("optional": SRTP when the offer is RTP/SAVP, plain otherwise; "required": a plain
offer is 488 with Warning 302; "off": an RTP/SAVP offer is 488 with Warning 302), and an
RTP/SAVP offer whose a=crypto lines we cannot use is 488 with Warning 306. An outbound
leg offers RTP/SAVP when its route says so (``offer_srtp``), plain RTP/AVP otherwise.
The keys live in ``MediaParams.srtp``; a re-INVITE that keeps the peer's key keeps ours.

Address families (RFC 4566 §5.7, RFC 5118 §4.6): a leg's RTP socket has one family,
chosen when the leg is made (the offer's ``c=IN IP6`` gets an IPv6 socket, our offer the
family of the callee's address), so every SDP the leg receives must keep to it: an answer
or a re-INVITE in the other family is refused rather than accepted into a silent call.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Collection

from media import sdes
from media.sdp import (
    SRTP_POLICIES, AddressFamilyMismatch, MediaParams, NoCommonCodec, SessionDescription, SrtpRefused, accept_answer,
    answer_offer, answered_stream, make_offer,
)

from ..sip.resolver import family_names

SDP = "application/sdp"
CODECS = ("PCMU", "PCMA")
# SDP address types (RFC 4566 §5.7) as socket families, and the address that stands for
# "any" in each (a placeholder answer checks an offer before any socket exists).
FAMILIES = {"IP4": socket.AF_INET, "IP6": socket.AF_INET6}
_ANY = {"IP4": "0.0.0.0", "IP6": "::"}


class OfferAnswerError(Exception):
    """The peer's SDP cannot be used; ``status`` is what to answer (488 or 400), and
    ``warning`` the RFC 3261 §20.43 code a 488 carries (305: media format, 301: address
    format)."""

    def __init__(self, status: int, detail: str, warning: int = 305) -> None:
        # (SDES keys never reach a detail: media/sdes.py's messages name suites and tags)
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.warning = warning

    @property
    def reason(self) -> str | None:
        """A reason phrase for a 400 (the parse error); 488 keeps its standard phrase."""
        return f"Bad SDP ({self.detail})"[:100] if self.status == 400 else None

    @property
    def headers(self) -> dict[str, str | list[str]]:
        """RFC 3261 §20.43: 305 "Incompatible media format" or 301 "Incompatible network
        address formats" says why a 488 was sent."""
        if self.status != 488:
            return {}
        text = self.detail.replace("\\", "\\\\").replace('"', '\\"')  # a quoted-string (RFC 3261 §25.1)
        return {"warning": f'{self.warning} - "{text}"'}


def parse_offer(body: bytes, families: Collection[int] = tuple(FAMILIES.values()),
                srtp: str = "optional") -> SessionDescription:
    """The peer's offer, checked answerable before any call or task exists: a codec we
    have, in an address family of ``families`` (those we have sockets for), in a profile
    (and with crypto) the ``srtp`` policy takes."""
    offer = _parse(body)
    try:
        addrtype = offer_media(offer, srtp)[0]  # (reads the rtpmaps: a malformed one is a 400)
    except ValueError as exc:
        raise _refusal(exc) from None
    if addrtype is not None and FAMILIES[addrtype] not in families:
        raise OfferAnswerError(488, f"the offer's audio is IN {addrtype}; this switch serves "
                                    f"{family_names(families)} only", 301)
    _answer(offer, _ANY[addrtype or "IP4"], 9, 0, 0, srtp=srtp)
    return offer


def offer_media(offer: SessionDescription, srtp: str = "optional") -> tuple[str | None, str | None]:
    """The address type ("IP4"/"IP6") and c= address of the stream we would answer;
    (None, None) when there is no such stream or it has no c= (answering says why)."""
    stream = answered_stream(offer, CODECS, srtp)
    if stream is None:
        return None, None
    return offer.media_addrtype(stream), offer.media_connection(stream)


def _parse(body: bytes) -> SessionDescription:
    try:
        return SessionDescription.parse(body)
    except ValueError as exc:
        raise _refusal(exc) from None


def _answer(offer: SessionDescription, ip: str, port: int, session: int, version: int, cn: bool = False,
            srtp: str = "optional", keep: sdes.SrtpKeys | None = None) -> tuple[SessionDescription, MediaParams]:
    try:
        return answer_offer(offer, ip, port, session, version, cn=cn, srtp=srtp, keep=keep)
    except ValueError as exc:
        raise _refusal(exc) from None


def _refusal(exc: ValueError) -> OfferAnswerError:
    """What the peer gets for SDP we cannot use: 488 (Warning 305 codec, 301 family, 302
    profile, 306 crypto), or 400 for SDP that does not parse."""
    if isinstance(exc, AddressFamilyMismatch):
        return OfferAnswerError(488, str(exc), 301)
    if isinstance(exc, SrtpRefused):
        return OfferAnswerError(488, str(exc), exc.warning)
    return OfferAnswerError(488 if isinstance(exc, NoCommonCodec) else 400, str(exc))


class OfferAnswer:
    def __init__(self, local_ip: str, remote_offer: SessionDescription | None = None,
                 codecs: tuple[str, ...] = CODECS, srtp: str = "optional", offer_srtp: bool = False) -> None:
        if srtp not in SRTP_POLICIES:
            raise ValueError(f"srtp must be one of {', '.join(SRTP_POLICIES)}, not {srtp!r}")
        self.local_ip = local_ip
        self.codecs = codecs  # what we offer, in our order of preference
        self.srtp = srtp  # which profiles an offer to us may use (SRTP_POLICIES)
        self.offer_srtp = offer_srtp  # our offers are RTP/SAVP (the route says so)
        self.remote_offer = remote_offer
        self.our_offer: SessionDescription | None = None
        self.params: MediaParams | None = None
        self.local_port: int | None = None
        self.cn = False  # offer/accept RFC 3389 comfort noise (media_keepalive = "cn")
        self._session = random.randrange(1, 2**31)
        self._version = 0
        self._answer: bytes | None = None  # our answer to remote_offer, once built

    @property
    def ready(self) -> bool:
        """Media is open: we have a port to put in our SDP."""
        return self.local_port is not None

    def media_opened(self, port: int, cn: bool = False) -> None:
        self.local_port = port
        self.cn = cn
        if self.remote_offer is not None and self.params is None:
            self.answer()  # the params are known as soon as we can answer

    def predicted_codec(self) -> str | None:
        """The codec this leg uses, or will once answered (the offerer's first we support)."""
        if self.params is not None:
            return self.params.codec
        if self.remote_offer is None:
            return None
        return _answer(self.remote_offer, self.local_ip, 9, 0, 0, srtp=self.srtp)[1].codec

    # ------------------------------------------------------------------ what we send
    def answer(self) -> bytes:
        """Our answer to the peer's offer: built once, the same bytes for 183 and 200."""
        assert self.remote_offer is not None and self.local_port is not None
        if self._answer is None:
            answer, self.params = _answer(self.remote_offer, self.local_ip, self.local_port,
                                          self._session, self._version, self.cn, self.srtp)
            self._answer = answer.to_bytes()
        return self._answer

    def offer(self) -> bytes:
        """Our offer (an outbound INVITE, or the 200 to an INVITE without SDP)."""
        assert self.local_port is not None
        self.our_offer = make_offer(self.local_ip, self.local_port, self._session, self._version,
                                    codecs=self.codecs, cn=self.cn, crypto=self._offer_crypto())
        return self.our_offer.to_bytes()

    def _offer_crypto(self) -> list[sdes.CryptoAttribute] | None:
        """Our crypto lines: fresh keys for a first offer; the same ones again for a new
        version of it while the keys are in use (a new key is a re-key, RFC 4568 §7.1.4)."""
        if not self.offer_srtp:
            return None
        if self.our_offer is not None and self.params is not None and self.params.srtp is not None:
            return [sdes.CryptoAttribute.parse(v) for m in self.our_offer.media for v in m.crypto_lines]
        return sdes.offer_lines()

    def local_sdp(self) -> bytes:
        """What a 2xx/183 of ours carries: the answer if the peer offered, else our offer."""
        return self.answer() if self.remote_offer is not None else self.offer()

    def current(self) -> bytes:
        """Our current description as a new offer (a re-INVITE without SDP, RFC 3261 §14.2)."""
        if self.remote_offer is not None:
            return self.answer()
        return self.our_offer.to_bytes() if self.our_offer is not None else self.offer()

    # ------------------------------------------------------------------ what we receive
    def take_answer(self, body: bytes) -> MediaParams:
        """The peer's answer to our offer (a 2xx/183, or the ACK of a late offer)."""
        assert self.our_offer is not None
        answer = _parse(body)
        try:
            self.params = accept_answer(self.our_offer, answer)
        except ValueError as exc:
            raise _refusal(exc) from None
        return self.params

    def new_offer(self, body: bytes) -> bytes:
        """A re-INVITE's offer: answered with a new version of ours (RFC 3264 §8). Nothing
        changes unless it is usable; then later answers (and a re-INVITE without SDP)
        derive from it."""
        assert self.local_port is not None
        offer = _parse(body)
        keep = self.params.srtp if self.params is not None else None
        answer, params = _answer(offer, self.local_ip, self.local_port, self._session, self._version + 1, self.cn,
                                 self.srtp, keep)
        self._version += 1
        self.remote_offer, self.params = offer, params
        self._answer = answer.to_bytes()
        return self._answer
