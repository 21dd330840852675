"""RFC 3264 offer/answer for one leg: negotiated once, kept in one place.

A leg owns one ``OfferAnswer``. It knows our SDP session identity (o= id and version),
the local RTP port once media is open, the peer's offer or ours, and the negotiated
``MediaParams``. Every SDP the leg sends comes from here, and every SDP it receives is
read here, so a call's media description is never computed twice: the answer to an
offer is built once and reused for the 183 and the 200 (RFC 3261 §13.2.1 says they
must be the same), and a new version is made only for a new offer (RFC 3264 §8).

Failures raise ``OfferAnswerError`` carrying the SIP status the peer should get:
488 with a Warning for no common codec (RFC 3261 §21.4.26, Warning 305), 400 for SDP
that does not parse.
"""

from __future__ import annotations

import random

from media.sdp import MediaParams, NoCommonCodec, SessionDescription, accept_answer, answer_offer, make_offer

SDP = "application/sdp"
CODECS = ("PCMU", "PCMA")


class OfferAnswerError(Exception):
    """The peer's SDP cannot be used; ``status`` is what to answer (488 or 400)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail

    @property
    def reason(self) -> str | None:
        """A reason phrase for a 400 (the parse error); 488 keeps its standard phrase."""
        return f"Bad SDP ({self.detail})"[:100] if self.status == 400 else None

    @property
    def headers(self) -> dict[str, str | list[str]]:
        """RFC 3261 §20.43: 305 "Incompatible media format" says why a 488 was sent."""
        return {"warning": f'305 - "{self.detail}"'} if self.status == 488 else {}


def parse_offer(body: bytes) -> SessionDescription:
    """The peer's offer, checked answerable before any call or task exists."""
    offer = _parse(body)
    _answer(offer, "0.0.0.0", 9, 0, 0)
    return offer


def _parse(body: bytes) -> SessionDescription:
    try:
        return SessionDescription.parse(body)
    except NoCommonCodec as exc:
        raise OfferAnswerError(488, str(exc)) from None
    except ValueError as exc:
        raise OfferAnswerError(400, str(exc)) from None


def _answer(offer: SessionDescription, ip: str, port: int, session: int,
            version: int, cn: bool = False) -> tuple[SessionDescription, MediaParams]:
    try:
        return answer_offer(offer, ip, port, session, version, cn=cn)
    except NoCommonCodec as exc:
        raise OfferAnswerError(488, str(exc)) from None
    except ValueError as exc:
        raise OfferAnswerError(400, str(exc)) from None


class OfferAnswer:
    def __init__(self, local_ip: str, remote_offer: SessionDescription | None = None,
                 codecs: tuple[str, ...] = CODECS) -> None:
        self.local_ip = local_ip
        self.codecs = codecs  # what we offer, in our order of preference
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
        return _answer(self.remote_offer, self.local_ip, 9, 0, 0)[1].codec

    # ------------------------------------------------------------------ what we send
    def answer(self) -> bytes:
        """Our answer to the peer's offer: built once, the same bytes for 183 and 200."""
        assert self.remote_offer is not None and self.local_port is not None
        if self._answer is None:
            answer, self.params = _answer(self.remote_offer, self.local_ip, self.local_port,
                                          self._session, self._version, self.cn)
            self._answer = answer.to_bytes()
        return self._answer

    def offer(self) -> bytes:
        """Our offer (an outbound INVITE, or the 200 to an INVITE without SDP)."""
        assert self.local_port is not None
        self.our_offer = make_offer(self.local_ip, self.local_port, self._session, self._version,
                                    codecs=self.codecs, cn=self.cn)
        return self.our_offer.to_bytes()

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
        except NoCommonCodec as exc:
            raise OfferAnswerError(488, str(exc)) from None
        except ValueError as exc:
            raise OfferAnswerError(400, str(exc)) from None
        return self.params

    def new_offer(self, body: bytes) -> bytes:
        """A re-INVITE's offer: answered with a new version of ours (RFC 3264 §8). Nothing
        changes unless it is usable; then later answers (and a re-INVITE without SDP)
        derive from it."""
        assert self.local_port is not None
        offer = _parse(body)
        answer, params = _answer(offer, self.local_ip, self.local_port, self._session, self._version + 1, self.cn)
        self._version += 1
        self.remote_offer, self.params = offer, params
        self._answer = answer.to_bytes()
        return self._answer
