"""SIP messages (RFC 3261 §7): parse from a datagram, build, serialize.

Written here rather than taken from a library because parsing is on the hot
path of every call: the Python SIP parsers measured in DESIGN.md §4 take
15-32 µs per INVITE, and this one does the minimum eagerly (start line, header
split, folding, compact forms, comma-split of the multi-valued headers we route
on) and parses Via/From/To/CSeq only when asked, caching the result.

Headers are kept as ``{lower-case name: [values]}``. RFC 3261 §7.3.1 makes the
relative order of *different* header names insignificant, and the order of
values of one name is preserved, so this loses nothing a proxy or UA needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Iterable

from .uri import NameAddr, SipUri, UriError, split_commas, split_hostport


class SipParseError(ValueError):
    """A datagram that is not a valid SIP message; the text says why."""


# RFC 3261 §7.3.3 and the IANA registry: compact header forms.
COMPACT_FORMS = {
    "a": "accept-contact", "b": "referred-by", "c": "content-type", "d": "request-disposition",
    "e": "content-encoding", "f": "from", "i": "call-id", "j": "reject-contact", "k": "supported",
    "l": "content-length", "m": "contact", "n": "identity-info", "o": "event", "r": "refer-to",
    "s": "subject", "t": "to", "u": "allow-events", "v": "via", "x": "session-expires",
    "y": "identity",
}

# Headers that may carry several comma-separated values we must see one by one.
_MULTI_VALUED = frozenset(("via", "route", "record-route", "contact"))

_CANONICAL = {
    name.lower(): name
    for name in (
        "Via", "Max-Forwards", "Route", "Record-Route", "From", "To", "Call-ID", "CSeq",
        "Contact", "Allow", "Supported", "Require", "Unsupported", "Content-Type",
        "Content-Length", "User-Agent", "Server", "Reason", "Retry-After", "Accept",
        "Expires", "Session-Expires", "Min-SE", "Event", "Refer-To", "WWW-Authenticate",
        "Authorization", "Proxy-Authenticate", "Proxy-Authorization", "Warning",
        "P-Asserted-Identity", "Date", "Timestamp", "Organization", "Subject",
    )
}

REASON_PHRASES = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 300: "Multiple Choices",
    301: "Moved Permanently", 302: "Moved Temporarily", 400: "Bad Request", 401: "Unauthorized",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    413: "Request Entity Too Large", 415: "Unsupported Media Type", 416: "Unsupported URI Scheme",
    420: "Bad Extension", 480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 484: "Address Incomplete", 486: "Busy Here",
    487: "Request Terminated", 488: "Not Acceptable Here", 491: "Request Pending",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 600: "Busy Everywhere", 603: "Decline",
    604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}

MAGIC_COOKIE = "z9hG4bK"  # RFC 3261 §8.1.1.7


def canonical_name(name: str) -> str:
    known = _CANONICAL.get(name)
    if known:
        return known
    return "-".join(part.capitalize() for part in name.split("-"))


@dataclass(slots=True)
class Via:
    """One Via value (RFC 3261 §20.42): ``SIP/2.0/UDP host:port;branch=...``."""

    transport: str
    host: str
    port: int | None
    params: dict[str, str | None]

    @classmethod
    def parse(cls, value: str) -> Via:
        proto, _, rest = value.strip().partition(" ")
        parts = proto.split("/")
        if len(parts) != 3 or parts[0].strip().upper() != "SIP":
            raise SipParseError(f"Via has a bad protocol: {proto!r}")
        sent_by, *params = rest.strip().split(";")
        sent_by = sent_by.strip()
        if not sent_by:
            raise SipParseError("Via has no sent-by")
        try:
            host, port = split_hostport(sent_by)
        except UriError as exc:
            raise SipParseError(f"Via sent-by: {exc}") from None
        parsed: dict[str, str | None] = {}
        for param in params:
            key, eq, val = param.strip().partition("=")
            parsed[key.lower()] = val.strip() if eq else None
        return cls(parts[2].strip().upper(), host, port, parsed)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        params = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.params.items())
        return f"SIP/2.0/{self.transport} {self.sent_by}{params}"


@dataclass(slots=True)
class CSeq:
    number: int
    method: str

    @classmethod
    def parse(cls, value: str) -> CSeq:
        num, _, method = value.strip().partition(" ")
        method = method.strip()
        if not num.isdigit() or not method or len(num) > 10:
            raise SipParseError(f"bad CSeq {value!r}")
        number = int(num)
        if number >= 2**31:  # RFC 3261 §8.1.1.5
            raise SipParseError(f"CSeq number out of range in {value!r}")
        return cls(number, method.upper())

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


class SipMessage:
    """Common part of requests and responses: headers, body and cached views."""

    __slots__ = ("headers", "body", "_via", "_from", "_to", "_cseq")

    headers: dict[str, list[str]]
    body: bytes

    def _init_common(self, headers: dict[str, list[str]], body: bytes) -> None:
        self.headers = headers
        self.body = body
        self._via: Via | None = None
        self._from: NameAddr | None = None
        self._to: NameAddr | None = None
        self._cseq: CSeq | None = None

    # -- header access -------------------------------------------------------------
    def get(self, name: str) -> str | None:
        """First value of a header (name case-insensitive, compact forms accepted)."""
        name = name.lower()
        values = self.headers.get(COMPACT_FORMS.get(name, name))
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return list(self.headers.get(COMPACT_FORMS.get(name, name), ()))

    def set(self, name: str, value: str | Iterable[str]) -> None:
        """Replace a header (a str is one value, an iterable several)."""
        name = name.lower()
        self.headers[name] = [value] if isinstance(value, str) else list(value)
        self._invalidate(name)

    def add(self, name: str, value: str, first: bool = False) -> None:
        name = name.lower()
        values = self.headers.setdefault(name, [])
        if first:
            values.insert(0, value)
        else:
            values.append(value)
        self._invalidate(name)

    def remove(self, name: str) -> None:
        name = name.lower()
        self.headers.pop(name, None)
        self._invalidate(name)

    def freeze(self) -> None:
        """The message will not change any more (e.g. the INVITE a call keeps for its
        whole life): hold header values as tuples and drop the parsed views. Tuples of
        strings are untracked by the garbage collector, so a live call's request costs
        its passes nothing; the views are parsed again if asked for."""
        self.headers = {name: tuple(values) for name, values in self.headers.items()}  # type: ignore[misc]
        self._via = self._from = self._to = self._cseq = None

    def _invalidate(self, name: str) -> None:
        if name == "via":
            self._via = None
        elif name == "from":
            self._from = None
        elif name == "to":
            self._to = None
        elif name == "cseq":
            self._cseq = None

    def _required(self, name: str) -> str:
        values = self.headers.get(name)
        if not values:
            raise SipParseError(f"missing {canonical_name(name)} header")
        return values[0]

    # -- parsed views ----------------------------------------------------------------
    @property
    def via(self) -> Via:
        """The top Via."""
        if self._via is None:
            self._via = Via.parse(self._required("via"))
        return self._via

    @property
    def from_(self) -> NameAddr:
        if self._from is None:
            self._from = NameAddr.parse(self._required("from"))
        return self._from

    @property
    def to(self) -> NameAddr:
        if self._to is None:
            self._to = NameAddr.parse(self._required("to"))
        return self._to

    @property
    def cseq(self) -> CSeq:
        if self._cseq is None:
            self._cseq = CSeq.parse(self._required("cseq"))
        return self._cseq

    @property
    def call_id(self) -> str:
        return self._required("call-id")

    @property
    def from_tag(self) -> str | None:
        return self.from_.tag

    @property
    def to_tag(self) -> str | None:
        return self.to.tag

    def set_to_tag(self, tag: str) -> None:
        to = self.to
        if to.tag is None:
            to.params["tag"] = tag
            self.headers["to"] = [str(to)]

    def validate(self) -> None:
        """Check the headers every message needs (RFC 3261 §8.1.1); raises SipParseError."""
        self.via  # noqa: B018 - parse to validate
        self.from_  # noqa: B018
        self.to  # noqa: B018
        self.cseq  # noqa: B018
        if not self.call_id.strip():
            raise SipParseError("empty Call-ID")

    def _serialize(self, start_line: str) -> bytes:
        lines = [start_line]
        for name, values in self.headers.items():
            if name == "content-length":
                continue
            cname = canonical_name(name)
            for value in values:
                lines.append(f"{cname}: {value}")
        lines.append(f"Content-Length: {len(self.body)}")
        lines.append("\r\n")
        return "\r\n".join(lines).encode() + self.body


class SipRequest(SipMessage):
    __slots__ = ("method", "uri", "_ruri")

    def __init__(
        self, method: str, uri: str, headers: dict[str, list[str]] | None = None, body: bytes = b""
    ) -> None:
        self.method = method
        self.uri = uri
        self._ruri: SipUri | None = None
        self._init_common(headers if headers is not None else {}, body)

    @property
    def request_uri(self) -> SipUri:
        if self._ruri is None:
            self._ruri = SipUri.parse(self.uri)
        return self._ruri

    def __bytes__(self) -> bytes:
        return self._serialize(f"{self.method} {self.uri} SIP/2.0")

    def __repr__(self) -> str:
        return f"<SipRequest {self.method} {self.uri}>"


class SipResponse(SipMessage):
    __slots__ = ("status", "reason")

    def __init__(
        self, status: int, reason: str | None = None, headers: dict[str, list[str]] | None = None,
        body: bytes = b"",
    ) -> None:
        self.status = status
        self.reason = reason if reason is not None else REASON_PHRASES.get(status, "Unknown")
        self._init_common(headers if headers is not None else {}, body)

    def __bytes__(self) -> bytes:
        return self._serialize(f"SIP/2.0 {self.status} {self.reason}")

    def __repr__(self) -> str:
        return f"<SipResponse {self.status} {self.reason}>"


def parse_message(data: bytes, check_length: bool = True) -> SipRequest | SipResponse:
    """Parse one datagram. Raises SipParseError with a reason fit for a 400.

    ``check_length=False`` accepts a body shorter than Content-Length: used only to
    find where to send the 400 for such a message."""
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        head, body = data[:end], data[end + 4 :]
    else:
        end = data.find(b"\n\n")  # tolerate bare LF (RFC 3261 §7.5 says be lenient)
        if end < 0:
            raise SipParseError("no blank line after the headers (truncated message?)")
        head, body = data[:end], data[end + 2 :]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipParseError(f"headers are not UTF-8 at byte {exc.start}") from None
    lines = text.split("\r\n") if "\r\n" in text else text.split("\n")
    start = lines[0]
    headers: dict[str, list[str]] = {}
    last: list[str] | None = None
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t":  # header folding, RFC 3261 §7.3.1
            if last is None:
                raise SipParseError("continuation line before any header")
            last[-1] = f"{last[-1]} {line.strip()}"
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise SipParseError(f"header line without a colon: {line[:40]!r}")
        name = name.strip().lower()
        if not name or " " in name:
            raise SipParseError(f"bad header name {name!r}")
        if len(name) == 1:
            name = COMPACT_FORMS.get(name, name)
        last = headers.get(name)
        if last is None:
            last = headers[name] = []
        last.append(value.strip())
    for name in _MULTI_VALUED:
        values = headers.get(name)
        if values and any("," in v for v in values):
            headers[name] = [part for v in values for part in split_commas(v)]

    cl = headers.get("content-length")
    if cl is not None:
        text_len = cl[0]
        if not text_len.isdigit():
            raise SipParseError(f"bad Content-Length {text_len!r}")
        length = int(text_len)
        if length > len(body) and check_length:  # RFC 3261 §18.3: a short UDP body is an error
            raise SipParseError(f"Content-Length {length} but only {len(body)} body bytes")
        body = body[:length]

    if start.startswith("SIP/"):
        version, _, rest = start.partition(" ")
        code, _, reason = rest.partition(" ")
        if version != "SIP/2.0":
            raise SipParseError(f"unsupported version {version!r}")
        if len(code) != 3 or not code.isdigit() or not 100 <= int(code) <= 699:
            raise SipParseError(f"bad status code {code!r}")
        return SipResponse(int(code), reason, headers, body)
    parts = start.split(" ")
    if len(parts) != 3:
        raise SipParseError(f"bad request line {start[:60]!r}")
    method, uri, version = parts
    if version != "SIP/2.0":
        raise SipParseError(f"unsupported version {version!r}")
    if not method.isalpha() or not method.isupper():
        raise SipParseError(f"bad method {method!r}")
    if ":" not in uri:
        raise SipParseError(f"bad Request-URI {uri!r}")
    return SipRequest(method, uri, headers, body)


_COPIED = ("via", "from", "to", "call-id", "cseq")


def make_response(
    request: SipRequest,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: dict[str, str | list[str]] | None = None,
    body: bytes = b"",
) -> SipResponse:
    """A response to ``request`` (RFC 3261 §8.2.6): Via, From, To, Call-ID, CSeq copied."""
    copied: dict[str, list[str]] = {}
    for name in _COPIED:
        values = request.headers.get(name)
        if values:
            copied[name] = list(values)
    if status != 100 and "record-route" in request.headers and 100 < status < 300:
        # RFC 3261 §12.1.1: dialog-creating responses copy Record-Route.
        copied["record-route"] = list(request.headers["record-route"])
    response = SipResponse(status, reason, copied, body)
    if to_tag and status != 100:
        response.set_to_tag(to_tag)
    if headers:
        for name, value in headers.items():
            response.set(name, value)
    return response
