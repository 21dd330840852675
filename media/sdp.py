"""SDP (RFC 4566) for RTP/AVP and RTP/SAVP audio, and RFC 3264 offer/answer.

Lean on purpose: we model the lines a G.711 softswitch acts on (o=, s=, c=, t=, m=,
a=rtpmap/fmtp/ptime/direction, a=rtcp, a=crypto) and keep every other line verbatim so
re-serialising an SDP does not lose what we do not understand.

SRTP (RFC 3711) keyed by SDES (RFC 4568, media/sdes.py): an ``RTP/SAVP`` stream carries
``a=crypto`` lines; the answer takes the first one we support, by tag, with a fresh key
of ours (§7.1.2). Which profiles a leg answers is its ``srtp`` policy (``SRTP_POLICIES``):
"off" answers RTP/AVP only, "optional" either (SRTP when offered), "required" RTP/SAVP
only. The keys end up in ``MediaParams.srtp`` (``SrtpKeys``, never in a ``repr``).

Comfort noise (RFC 3389, static PT 13 "CN/8000" in RFC 3551 §6) is negotiated only when
the caller asks with ``cn=True`` (a leg whose keepalive mode is "cn"): without it offers
and answers are exactly what they were before CN existed here, whatever the peer offers.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Collection
from dataclasses import dataclass, field

from . import sdes
from .sdes import KeySource, SrtpKeys

logger = logging.getLogger(__name__)

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
# RFC 3264 §6.1: the answer's direction mirrors the offer's.
_MIRROR = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}
# RFC 3551 §6 static payload types we can carry.
STATIC_PTS = {0: "PCMU", 8: "PCMA"}
_STATIC_BY_NAME = {v: k for k, v in STATIC_PTS.items()}
TELEPHONE_EVENT = "telephone-event"
COMFORT_NOISE = "CN"
CN_STATIC_PT = 13
_HOLD_ADDRS = ("0.0.0.0", "::")
PLAIN_PROFILE = "RTP/AVP"
SRTP_PROFILE = sdes.SRTP_PROFILE
# A leg's SRTP policy -> the m= profiles it answers (RFC 4566 §5.14 <proto>).
SRTP_POLICIES: dict[str, tuple[str, ...]] = {
    "off": (PLAIN_PROFILE,),
    "optional": (PLAIN_PROFILE, SRTP_PROFILE),
    "required": (SRTP_PROFILE,),
}


class NoCommonCodec(ValueError):
    """The offer/answer has no audio codec we support (the caller answers 488)."""


class SrtpRefused(NoCommonCodec):
    """The audio's security cannot be agreed: RTP/SAVP without a crypto line we support
    (``warning`` 306, "Attribute not understood", RFC 3261 §20.43), or a profile our SRTP
    policy refuses (302, "Incompatible transport protocol"). The caller answers 488."""

    def __init__(self, detail: str, warning: int) -> None:
        super().__init__(detail)
        self.warning = warning


@dataclass
class Origin:
    username: str = "-"
    session_id: int = 0
    version: int = 0
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "0.0.0.0"

    @classmethod
    def parse(cls, value: str) -> Origin:
        parts = value.split()
        if len(parts) != 6:
            raise ValueError(f"SDP o= needs 6 fields, got {len(parts)}: {value!r}")
        try:
            sid, ver = int(parts[1]), int(parts[2])
        except ValueError:
            raise ValueError(f"SDP o= session id and version must be numeric: {value!r}") from None
        return cls(parts[0], sid, ver, parts[3], parts[4], parts[5])

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


def _parse_connection(value: str) -> tuple[str, str]:
    """c=IN IP4 <addr>[/ttl[/n]] -> (address type, address); multicast suffixes dropped."""
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise ValueError(f"SDP c= must be 'IN IP4|IP6 <address>': {value!r}")
    return parts[1], parts[2].split("/", 1)[0]


def _addrtype(addr: str) -> str:
    return "IP6" if ":" in addr else "IP4"


class AddressFamilyMismatch(ValueError):
    """A stream's c= address type is not the one our RTP socket has (the caller answers
    488 with Warning 301, "Incompatible network address formats", RFC 3261 §20.43)."""


@dataclass
class Rtpmap:
    pt: int
    encoding: str
    clock_rate: int
    channels: int | None = None

    @classmethod
    def parse(cls, value: str) -> Rtpmap:
        # "0 PCMU/8000" or "101 telephone-event/8000" or "9 G722/8000/1"
        try:
            pt_s, rest = value.split(None, 1)
            bits = rest.strip().split("/")
            return cls(int(pt_s), bits[0], int(bits[1]), int(bits[2]) if len(bits) > 2 else None)
        except (ValueError, IndexError):
            raise ValueError(f"SDP a=rtpmap is malformed: {value!r}") from None

    def __str__(self) -> str:
        ch = f"/{self.channels}" if self.channels is not None else ""
        return f"{self.pt} {self.encoding}/{self.clock_rate}{ch}"


@dataclass
class MediaDescription:
    media: str
    port: int
    proto: str
    fmts: list[str]
    connection: str | None = None  # media-level c= address
    # Attributes in order, as (name, value or None for flags), e.g. ("rtpmap", "0 PCMU/8000").
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    other_lines: list[str] = field(default_factory=list)  # i=, b=, k= kept verbatim
    # The c= line's address type as written (RFC 4566 §5.7): a name (c=IN IP6 host.example)
    # does not show it; None: derived from the address (SDP we build).
    addrtype: str | None = None

    @classmethod
    def parse_m(cls, value: str) -> MediaDescription:
        parts = value.split()
        if len(parts) < 3:
            raise ValueError(f"SDP m= needs media, port and proto: {value!r}")
        port_s = parts[1].split("/", 1)[0]  # "port/count" form
        if not port_s.isdigit() or int(port_s) > 65535:
            raise ValueError(f"SDP m= port is not a port number: {value!r}")
        return cls(parts[0], int(port_s), parts[2], parts[3:])

    def attribute(self, name: str) -> str | None:
        for k, v in self.attributes:
            if k == name:
                return v
        return None

    def has_attribute(self, name: str) -> bool:
        return any(k == name for k, _ in self.attributes)

    @property
    def rtpmaps(self) -> dict[int, Rtpmap]:
        out: dict[int, Rtpmap] = {}
        for k, v in self.attributes:
            if k == "rtpmap" and v:
                m = Rtpmap.parse(v)
                out[m.pt] = m
        return out

    @property
    def fmtps(self) -> dict[int, str]:
        out: dict[int, str] = {}
        for k, v in self.attributes:
            if k == "fmtp" and v:
                pt_s, _, params = v.partition(" ")
                if pt_s.isdigit():
                    out[int(pt_s)] = params.strip()
        return out

    @property
    def ptime(self) -> int | None:
        v = self.attribute("ptime")
        if v is None:
            return None
        try:
            return int(float(v))
        except ValueError:
            raise ValueError(f"SDP a=ptime is not a number: {v!r}") from None

    @property
    def crypto_lines(self) -> list[str]:
        """The values of the stream's a=crypto lines (RFC 4568 §9.1), in order."""
        return [v for k, v in self.attributes if k == "crypto" and v is not None]

    @property
    def secure(self) -> bool:
        return self.proto.upper() == SRTP_PROFILE

    def direction(self, default: str = "sendrecv") -> str:
        for k, _ in self.attributes:
            if k in DIRECTIONS:
                return k
        return default

    def lines(self) -> list[str]:
        out = [f"m={self.media} {self.port} {self.proto} {' '.join(self.fmts)}".rstrip()]
        out.extend(self.other_lines)
        if self.connection is not None:
            out.append(f"c=IN {self.addrtype or _addrtype(self.connection)} {self.connection}")
        for k, v in self.attributes:
            out.append(f"a={k}" if v is None else f"a={k}:{v}")
        return out


@dataclass
class SessionDescription:
    origin: Origin = field(default_factory=Origin)
    session_name: str = "-"
    connection: str | None = None  # session-level c= address
    timing: str = "0 0"
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    other_lines: list[str] = field(default_factory=list)  # i=, u=, e=, b=, ... kept verbatim
    addrtype: str | None = None  # the session-level c= line's address type (as in MediaDescription)

    @classmethod
    def parse(cls, text: str | bytes) -> SessionDescription:
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError("SDP is not valid UTF-8") from None
        sd = cls()
        seen_v = seen_o = False
        current: MediaDescription | None = None
        for raw in text.splitlines():
            line = raw.strip()
            if not line:
                continue
            if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
                raise ValueError(f"SDP line is not '<type>=<value>': {line[:60]!r}")
            kind, value = line[0], line[2:]
            if not seen_v:
                if kind != "v":
                    raise ValueError("SDP must start with v=")
                if value.strip() != "0":
                    raise ValueError(f"SDP version must be 0, got {value!r}")
                seen_v = True
                continue
            if kind == "m":
                current = MediaDescription.parse_m(value)
                sd.media.append(current)
            elif kind == "a":
                name, sep, val = value.partition(":")
                attr = (name.strip(), val.strip() if sep else None)
                (current.attributes if current else sd.attributes).append(attr)
            elif kind == "c":
                addrtype, addr = _parse_connection(value)
                if current:
                    current.connection, current.addrtype = addr, addrtype
                else:
                    sd.connection, sd.addrtype = addr, addrtype
            elif current is not None:
                current.other_lines.append(line)
            elif kind == "o":
                sd.origin = Origin.parse(value)
                seen_o = True
            elif kind == "s":
                sd.session_name = value or "-"
            elif kind == "t":
                sd.timing = value.strip()
            else:
                sd.other_lines.append(line)
        if not seen_v:
            raise ValueError("SDP is empty")
        if not seen_o:
            raise ValueError("SDP has no o= line")
        return sd

    def __str__(self) -> str:
        lines = ["v=0", f"o={self.origin}", f"s={self.session_name}"]
        lines.extend(self.other_lines)
        if self.connection is not None:
            lines.append(f"c=IN {self.addrtype or _addrtype(self.connection)} {self.connection}")
        lines.append(f"t={self.timing}")
        for k, v in self.attributes:
            lines.append(f"a={k}" if v is None else f"a={k}:{v}")
        for m in self.media:
            lines.extend(m.lines())
        return "\r\n".join(lines) + "\r\n"

    def to_bytes(self) -> bytes:
        return str(self).encode("utf-8")

    __bytes__ = to_bytes

    def media_connection(self, m: MediaDescription) -> str | None:
        return m.connection if m.connection is not None else self.connection

    def media_addrtype(self, m: MediaDescription) -> str | None:
        """"IP4" or "IP6": the address type of ``m``'s c= line (RFC 4566 §5.7; the media
        level one wins), i.e. the family its RTP travels in. None when it has no c=."""
        if m.connection is not None:
            return m.addrtype or _addrtype(m.connection)
        if self.connection is not None:
            return self.addrtype or _addrtype(self.connection)
        return None

    def media_direction(self, m: MediaDescription) -> str:
        session_default = "sendrecv"
        for k, _ in self.attributes:
            if k in DIRECTIONS:
                session_default = k
        return m.direction(session_default)


@dataclass
class MediaParams:
    codec: str  # 'PCMU' | 'PCMA'
    pt: int  # payload type to send the codec with (0 / 8)
    dtmf_pt: int | None  # the peer's telephone-event/8000 PT, e.g. 101
    remote_addr: tuple[str, int] | None  # None when port 0 or c=0.0.0.0 (hold)
    direction: str  # OUR direction
    ptime: int = 20
    cn_pt: int | None = None  # RFC 3389 CN payload type, when both sides listed CN/8000
    rtcp_addr: tuple[str, int] | None = None  # the peer's RFC 3605 a=rtcp, if it gave one
    srtp: SrtpKeys | None = None  # RTP/SAVP: the suite and both keys (RFC 4568); None: plain RTP


def _codec_of(m: MediaDescription, rtpmaps: dict[int, Rtpmap], fmt: str) -> tuple[int, str] | None:
    """(pt, upper-case encoding name) of one m= format, or None if it is not an 8 kHz codec."""
    if not fmt.isdigit():
        return None
    pt = int(fmt)
    rm = rtpmaps.get(pt)
    if rm is not None:
        if rm.clock_rate != 8000:
            return None
        name = rm.encoding
        return pt, (name if name == TELEPHONE_EVENT else name.upper())
    if pt in STATIC_PTS:
        return pt, STATIC_PTS[pt]
    return None


def _first_codec(m: MediaDescription, accept: Collection[str]) -> tuple[tuple[int, str] | None, int | None]:
    """The first (pt, name) in ``m``'s order whose name is in ``accept``, and the first
    telephone-event PT."""
    rtpmaps = m.rtpmaps
    chosen: tuple[int, str] | None = None
    dtmf: int | None = None
    for fmt in m.fmts:
        c = _codec_of(m, rtpmaps, fmt)
        if c is None:
            continue
        if c[1] == TELEPHONE_EVENT:
            dtmf = c[0] if dtmf is None else dtmf
        elif chosen is None and c[1] in accept:
            chosen = c
    return chosen, dtmf


def _cn_pt(m: MediaDescription) -> int | None:
    """The PT ``m`` lists for comfort noise at 8 kHz: 13 (static, RFC 3551) or a CN/8000 rtpmap."""
    rtpmaps = m.rtpmaps
    for fmt in m.fmts:
        if not fmt.isdigit():
            continue
        pt = int(fmt)
        rm = rtpmaps.get(pt)
        if rm is None and pt == CN_STATIC_PT:
            return pt
        if rm is not None and rm.encoding.upper() == COMFORT_NOISE and rm.clock_rate == 8000:
            return pt
    return None


def _rtcp_addr(m: MediaDescription, remote: tuple[str, int] | None) -> tuple[str, int] | None:
    """RFC 3605 ``a=rtcp:PORT [IN IP4 ADDR]``. A malformed one is ignored: RTCP then goes
    to the RTP port + 1, and a call must never fail over RTCP."""
    value = m.attribute("rtcp")
    if value is None or remote is None:
        return None
    parts = value.split()
    if not parts or not parts[0].isdigit() or not 0 < int(parts[0]) <= 65535:
        logger.debug("SDP a=rtcp:%s ignored: no port", value)
        return None
    addr = parts[3].split("/", 1)[0] if len(parts) >= 4 and parts[1] == "IN" else remote[0]
    try:
        ipaddress.ip_address(addr)  # a host name would be resolved, blocking, by sendto()
    except ValueError:
        logger.debug("SDP a=rtcp:%s ignored: not an IP address", value)
        return None
    return addr, int(parts[0])


def _is_rtp_audio(m: MediaDescription) -> bool:
    return m.media == "audio" and m.proto.upper() in (PLAIN_PROFILE, SRTP_PROFILE)


def _pick_stream(offer: SessionDescription, supported: Collection[str], srtp: str
                 ) -> tuple[MediaDescription, sdes.CryptoAttribute | None] | None:
    """The m= line to answer (RFC 3264 §6: the first usable audio stream) and, for
    RTP/SAVP, the crypto line to answer (RFC 4568 §7.1.2: the first we support). None
    when no stream has a codec of ours; SrtpRefused when one has, but its security
    cannot be agreed (the 488's Warning says why)."""
    allowed = SRTP_POLICIES[srtp]
    refused_crypto: list[str] = []
    refused_profile = False
    for m in offer.media:
        if not _is_rtp_audio(m) or m.port == 0 or _first_codec(m, supported)[0] is None:
            continue
        if m.proto.upper() not in allowed:
            refused_profile = True
            continue
        if not m.secure:
            return m, None
        crypto, why = sdes.pick(m.crypto_lines)
        if crypto is not None:
            return m, crypto
        refused_crypto.extend(why or ["no a=crypto line (RFC 4568 §5)"])
    if refused_crypto:
        raise SrtpRefused(f"SDP offer's {SRTP_PROFILE} audio has no a=crypto we support: "
                          + "; ".join(refused_crypto), 306)
    if refused_profile and srtp == "required":
        raise SrtpRefused(f'this switch requires SRTP (srtp = "required"): offer {SRTP_PROFILE} with a=crypto', 302)
    if refused_profile:
        raise SrtpRefused(f'SRTP is off on this switch (srtp = "off"): offer {PLAIN_PROFILE}', 302)
    return None


def _remote_addr(sd: SessionDescription, m: MediaDescription) -> tuple[str, int] | None:
    addr = sd.media_connection(m)
    if addr is None:
        raise ValueError("SDP has no c= line for the audio stream")
    if m.port == 0 or addr in _HOLD_ADDRS:
        return None
    return addr, m.port


def _our_session(local_ip: str, session_id: int, version: int) -> SessionDescription:
    return SessionDescription(
        origin=Origin("-", session_id, version, "IN", _addrtype(local_ip), local_ip),
        session_name="-",
        connection=local_ip,
    )


def answer_offer(
    offer: SessionDescription,
    local_ip: str,
    local_port: int,
    session_id: int,
    version: int,
    supported: tuple[str, ...] = ("PCMU", "PCMA"),
    cn: bool = False,
    srtp: str = "optional",
    random: KeySource = os.urandom,
    keep: SrtpKeys | None = None,
) -> tuple[SessionDescription, MediaParams]:
    """RFC 3264 §6: answer the first usable audio stream, reject every other m= line.

    We pick the first of the offerer's codecs we support (the offerer's preference order),
    echo telephone-event/8000 with the offerer's PT, and mirror the direction. With
    ``cn``, comfort noise the offer lists is echoed too (with the offerer's PT).

    An RTP/SAVP stream (allowed by the ``srtp`` policy) is answered RTP/SAVP with the
    offer's first usable crypto line's tag and suite and a fresh key of ours from
    ``random`` (RFC 4568 §7.1.2). ``keep``: the keys this leg has now (a re-INVITE): when
    the offer keeps the peer's suite and key, our key stays too, so nothing re-keys.
    """
    answer = _our_session(local_ip, session_id, version)
    picked = _pick_stream(offer, supported, srtp)
    stream, crypto = picked if picked is not None else (None, None)
    if stream is not None and offer.media_addrtype(stream) not in (None, _addrtype(local_ip)):
        # RFC 4566 §5.7: the offerer sends and receives in the family its c= line names; an
        # answer from a socket of the other family would be a call with no media.
        raise AddressFamilyMismatch(
            f"SDP offer's audio is IN {offer.media_addrtype(stream)}; this leg's media is "
            f"{_addrtype(local_ip)} ({local_ip})")
    params: MediaParams | None = None
    for m in offer.media:
        chosen: tuple[int, str] | None = None
        dtmf: int | None = None
        if m is stream:
            chosen, dtmf = _first_codec(m, supported)
        if chosen is None:
            # §6: a rejected stream keeps its m= line with port 0.
            answer.media.append(MediaDescription(m.media, 0, m.proto, m.fmts[:1]))
            continue
        pt, codec = chosen
        offer_dir = offer.media_direction(m)
        remote = _remote_addr(offer, m)
        if remote is None and offer_dir == "sendrecv":
            # RFC 3264 §8.4: c=0.0.0.0 is the old (RFC 2543) way to say "don't send to me".
            offer_dir = "sendonly"
        direction = _MIRROR[offer_dir]
        am = MediaDescription("audio", local_port, SRTP_PROFILE if crypto else PLAIN_PROFILE, [str(pt)])
        am.attributes.append(("rtpmap", f"{pt} {codec}/8000"))
        cn_pt = _cn_pt(m) if cn else None
        _finish_audio(am, dtmf, m.fmtps.get(dtmf) if dtmf is not None else None, direction, cn_pt)
        keys = None
        if crypto is not None:
            same = keep is not None and (keep.suite, keep.rx_key) == (crypto.suite, crypto.key)
            ours = keep.tx_key if same and keep is not None else sdes.new_key(crypto.suite, random)
            am.attributes.append(("crypto", str(sdes.CryptoAttribute(crypto.tag, crypto.suite, ours))))
            keys = SrtpKeys(crypto.suite, ours, crypto.key, crypto.mki_bytes)
        answer.media.append(am)
        params = MediaParams(codec, pt, dtmf, remote, direction, m.ptime or 20, cn_pt,
                             _rtcp_addr(m, remote), keys)
    if params is None:
        offered = "; ".join(f"m={m.media} {m.proto} {' '.join(m.fmts)}" for m in offer.media)
        raise NoCommonCodec(
            f"SDP offer has no audio codec we support ({'/'.join(supported)}): "
            f"{offered or 'no m= lines'}"
        )
    return answer, params


def answered_stream(offer: SessionDescription, supported: Collection[str] = ("PCMU", "PCMA"),
                    srtp: str = "optional") -> MediaDescription | None:
    """The m= line ``answer_offer`` answers (RFC 3264 §6): the first audio stream with a
    port, a codec in ``supported`` and a profile (and crypto) the ``srtp`` policy takes;
    None when there is none."""
    try:
        picked = _pick_stream(offer, supported, srtp)
    except SrtpRefused:
        return None
    return picked[0] if picked is not None else None


def _finish_audio(m: MediaDescription, dtmf_pt: int | None, events: str | None, direction: str,
                  cn_pt: int | None = None) -> None:
    """Our m=audio tail: telephone-event (RFC 4733) if any, CN (RFC 3389) if asked, 20 ms
    ptime, the direction."""
    if dtmf_pt is not None:
        m.fmts.append(str(dtmf_pt))
        m.attributes.append(("rtpmap", f"{dtmf_pt} {TELEPHONE_EVENT}/8000"))
        m.attributes.append(("fmtp", f"{dtmf_pt} {events or '0-16'}"))
    if cn_pt is not None:
        m.fmts.append(str(cn_pt))
        m.attributes.append(("rtpmap", f"{cn_pt} {COMFORT_NOISE}/8000"))
    m.attributes.append(("ptime", "20"))
    m.attributes.append((direction, None))


def make_offer(
    local_ip: str,
    local_port: int,
    session_id: int,
    version: int,
    codecs: tuple[str, ...] = ("PCMU", "PCMA"),
    dtmf_pt: int | None = 101,
    direction: str = "sendrecv",
    cn: bool = False,
    crypto: list[sdes.CryptoAttribute] | None = None,
) -> SessionDescription:
    """Our offer: ``codecs`` in order, telephone-event, and with ``cn`` comfort noise (13).
    With ``crypto`` (sdes.offer_lines()) the stream is RTP/SAVP with those lines: the
    answerer picks one by tag (RFC 4568 §7.1.2); the keys are ours, to send with."""
    if direction not in DIRECTIONS:
        raise ValueError(f"SDP direction must be one of {DIRECTIONS}, not {direction!r}")
    sd = _our_session(local_ip, session_id, version)
    m = MediaDescription("audio", local_port, SRTP_PROFILE if crypto else PLAIN_PROFILE, [])
    for name in codecs:
        if name not in _STATIC_BY_NAME:
            raise ValueError(f"SDP offer codec must be PCMU or PCMA, not {name!r}")
        pt = _STATIC_BY_NAME[name]
        m.fmts.append(str(pt))
        m.attributes.append(("rtpmap", f"{pt} {name}/8000"))
    _finish_audio(m, dtmf_pt, None, direction, CN_STATIC_PT if cn else None)
    m.attributes.extend(("crypto", str(c)) for c in crypto or ())
    sd.media.append(m)
    return sd


def accept_answer(offer: SessionDescription, answer: SessionDescription) -> MediaParams:
    """RFC 3264 §7: read the answer to our offer; the codec must be one we offered."""
    index = next(
        (i for i, m in enumerate(offer.media) if _is_rtp_audio(m) and m.port != 0), None
    )
    if index is None:
        raise ValueError("SDP offer has no audio stream to accept an answer for")
    if len(answer.media) <= index:
        raise ValueError(
            f"SDP answer has {len(answer.media)} m= lines, the offer had {len(offer.media)}"
        )
    om, am = offer.media[index], answer.media[index]
    if am.media != "audio" or am.port == 0:
        raise NoCommonCodec("SDP answer rejected the audio stream (port 0)")
    ours, theirs = offer.media_addrtype(om), answer.media_addrtype(am)
    if theirs is not None and ours is not None and theirs != ours:
        # Our RTP socket has the family of our offer's c= (RFC 4566 §5.7).
        raise AddressFamilyMismatch(f"SDP answer's audio is IN {theirs}; we offered IN {ours}")
    # By name: an answerer may use another PT number for a codec we offered; we then
    # send with theirs.
    offered = {c[1] for f in om.fmts if (c := _codec_of(om, om.rtpmaps, f)) is not None}
    chosen, dtmf = _first_codec(am, offered)
    if chosen is None:
        raise NoCommonCodec(
            f"SDP answer picks no codec we offered ({' '.join(om.fmts)}): {' '.join(am.fmts)}"
        )
    answer_dir = answer.media_direction(am)
    remote = _remote_addr(answer, am)
    direction = _MIRROR[answer_dir]
    offered_dir = offer.media_direction(om)
    direction = _intersect(direction, offered_dir)
    # CN only if we offered it (make_offer(cn=True)) and the answer kept it.
    cn_pt = _cn_pt(am) if _cn_pt(om) is not None else None
    return MediaParams(chosen[1], chosen[0], dtmf, remote, direction, am.ptime or 20, cn_pt,
                       _rtcp_addr(am, remote), _accept_crypto(om, am))


def _accept_crypto(om: MediaDescription, am: MediaDescription) -> SrtpKeys | None:
    """RFC 4568 §7.1.3 (the offerer): the answer keeps our profile and takes one of our
    crypto lines by tag, same suite, with the answerer's key; anything else is refused
    (RFC 3264 §6: the answer's <proto> is the offer's)."""
    if om.secure != am.secure:
        raise SrtpRefused(f"SDP answer's audio is {am.proto}; we offered {om.proto}", 302)
    if not om.secure:
        return None
    ours = {c.tag: c for c in (sdes.CryptoAttribute.parse(v) for v in om.crypto_lines)}
    lines = am.crypto_lines
    if len(lines) != 1:
        raise SrtpRefused(f"SDP answer must carry one a=crypto line (RFC 4568 §7.1.2), it has {len(lines)}", 306)
    theirs = sdes.CryptoAttribute.parse(lines[0])
    offered = ours.get(theirs.tag)
    if offered is None or offered.suite != theirs.suite:
        raise SrtpRefused(f"SDP answer's a=crypto tag {theirs.tag} {theirs.suite} is not one we offered", 306)
    try:
        theirs.check()
    except sdes.UnsupportedCrypto as exc:
        raise SrtpRefused(f"SDP answer's a=crypto: {exc}", 306) from None
    return SrtpKeys(theirs.suite, offered.key, theirs.key, theirs.mki_bytes)


def _intersect(a: str, b: str) -> str:
    """The direction both allow (e.g. we offered sendonly, answer says sendrecv)."""
    send = a in ("sendrecv", "sendonly") and b in ("sendrecv", "sendonly")
    recv = a in ("sendrecv", "recvonly") and b in ("sendrecv", "recvonly")
    return {(True, True): "sendrecv", (True, False): "sendonly",
            (False, True): "recvonly", (False, False): "inactive"}[(send, recv)]
