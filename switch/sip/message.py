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

import re
from dataclasses import dataclass
from collections.abc import Iterable

from .uri import (
    NameAddr, SipUri, UriError, host_address, is_token, same_host, small_uint, split_commas, split_hostport,
)


class SipParseError(ValueError):
    """A datagram that is not a valid SIP message; the text says why.

    When the start line read as a request, ``method`` is its method and ``headers`` what
    the header section held (raw values), so the 400 (``status``: 505 for a SIP version we
    do not speak, RFC 3261 §8.2.6 / §21.5.6) is built from them with ``make_error_response``
    and the datagram is never parsed a second time."""

    def __init__(self, reason: str, status: int = 400, method: str | None = None,
                 headers: dict[str, list[str]] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.method = method
        self.headers = headers


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

_VIA_PROTOCOL = re.compile(r"SIP *\/ *2\.0 *\/ *([^ /;,]+) +", re.IGNORECASE)
# Where a 400 for a message with a broken Via can still go: its sent-by (RFC 3261 §18.2.2).
_VIA_SENT_BY = re.compile(r"\s*SIP\s*/\s*[0-9.]+\s*/\s*[^\s/;,]+\s+([^\s;,]+)", re.IGNORECASE)
_VERSION = re.compile(r"SIP/[0-9]+\.[0-9]+")


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
        value = value.strip()
        if value.startswith("SIP/2.0/"):  # the common case, no LWS in sent-protocol
            transport, _, rest = value[8:].partition(" ")
        else:
            # RFC 3261 §25.1: SLASH = SWS "/" SWS, so "SIP / 2.0 / UDP" is legal (RFC 4475
            # §3.1.1.1); folding has already become single spaces.
            m = _VIA_PROTOCOL.match(value)
            if m is None:
                raise SipParseError(f"Via has a bad protocol: {value[:40]!r}")
            transport, rest = m.group(1), value[m.end() :]
        if not is_token(transport):
            raise SipParseError(f"Via has a bad transport: {transport[:20]!r}")
        sent_by, *params = rest.strip().split(";")
        sent_by = sent_by.strip()
        if not sent_by or " " in sent_by:
            raise SipParseError(f"Via has a bad sent-by {sent_by[:40]!r}")
        try:
            host, port = split_hostport(sent_by)
        except UriError as exc:
            raise SipParseError(f"Via sent-by: {exc}") from None
        parsed: dict[str, str | None] = {}
        for param in params:
            key, eq, val = param.partition("=")
            key = key.strip().lower()
            if not is_token(key):  # ";;" is no parameter (RFC 4475 §3.1.2.1)
                raise SipParseError(f"Via has a bad parameter {param[:30]!r}")
            parsed[key] = val.strip() if eq else None
        rport = parsed.get("rport")
        if rport is not None and small_uint(rport, 5) is None:
            raise SipParseError(f"Via has a bad rport {rport[:20]!r}")
        return cls(transport.upper(), host, port, parsed)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    def stamp(self, source: tuple[str, int]) -> bool:
        """Note where the request really came from (RFC 3261 §18.2.1, RFC 3581 §4); True
        when a parameter changed. ``received`` is set when the sent-by does not name the
        source or the client asked with ``rport`` (RFC 3581 §4: then even if identical), and
        it replaces one the sender wrote itself: responses follow it (§18.2.2), so a forged
        ``received`` or ``rport`` value would reflect them at a third party. An IPv6 source
        goes in without brackets (RFC 5118 §4.5)."""
        host, port = source[0], source[1]
        params = self.params
        changed = False
        rport = "rport" in params
        received = params.get("received")
        if received != host and (rport or received is not None or not same_host(self.host, host)):
            params["received"] = host
            changed = True
        if rport and params["rport"] != str(port):
            params["rport"] = str(port)
            changed = True
        return changed

    def response_address(self, source: tuple[str, int]) -> tuple[str, int]:
        """Where a response goes over UDP once ``stamp(source)`` ran (RFC 3261 §18.2.2 with
        RFC 3581 §4): the ``received`` address, else the sent-by host, which then names the
        source (given in the source's own spelling); the ``rport`` port, else the sent-by
        port or 5060. ``maddr`` is not followed: it is multicast, which we do not serve,
        and an address a request may pick freely. The host never is a name to resolve: a
        named sent-by always gets ``received``."""
        received = self.params.get("received")
        if received:
            host = host_address(received)
        else:
            host = source[0] if same_host(self.host, source[0]) else host_address(self.host)
        rport = self.params.get("rport")
        if rport:
            return (host, int(rport))
        return (host, self.port or 5060)

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
        number = small_uint(num, 10)
        # RFC 3261 §8.1.1.5 (below 2**31) and §20.16 (the method is a token, case kept:
        # methods are case-sensitive, §7.1).
        if number is None or number >= 2**31 or not is_token(method):
            raise SipParseError(f"bad CSeq {value[:40]!r}")
        return cls(number, method)

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
        """Check the headers every message needs (RFC 3261 §8.1.1); raises SipParseError.
        ``parse_message`` already did (and more) for what came off the wire; this is for
        messages built here."""
        try:
            _check_common(self)
        except UriError as exc:
            raise SipParseError(str(exc)) from None

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


def parse_message(data: bytes) -> SipRequest | SipResponse:
    """Parse one datagram into a message fully valid for the layers above, or raise
    SipParseError with a reason fit for a 400 (RFC 3261 §7, §8.2, §20, §25; the cases of
    RFC 4475 §3.1.2). There is one strict path: nothing downstream re-checks syntax."""
    error: str | None = None
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        head, body = data[:end], data[end + 4 :]
    else:
        end = data.find(b"\n\n")  # tolerate bare LF (RFC 3261 §7.5 says be lenient)
        if end >= 0:
            head, body = data[:end], data[end + 2 :]
        else:
            # RFC 3261 §7: the empty line is mandatory. Still read the headers, so that a
            # request is answered 400 rather than dropped (RFC 4475 §3.1.2.15's message
            # ends right after its last header).
            error = "no blank line after the headers (truncated message?)"
            head, body = data.rstrip(b"\r\n"), b""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # Still read the headers (as Latin-1, byte for byte) so the 400 can be addressed.
        error = f"headers are not UTF-8 at byte {exc.start}"
        text = head.decode("latin-1")
    lines = text.split("\r\n") if "\r\n" in text else text.split("\n")
    start = lines[0]
    headers: dict[str, list[str]] = {}
    last: list[str] | None = None
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t":  # header folding, RFC 3261 §7.3.1
            if last is None:
                error = error or "continuation line before any header"
                continue
            # A value that starts on the next line (RFC 4475 §3.1.1.1's "TO :") gets no
            # leading space: HCOLON's LWS is not part of it, and bytes() must round-trip.
            last[-1] = f"{last[-1]} {line.strip()}" if last[-1] else line.strip()
            continue
        raw, colon, value = line.partition(":")
        name = _NAMES.get(raw)
        if name is None:
            name = _header_name(raw) if colon else None
            if name is None:  # field-name = token (§25.1)
                error = error or f"bad header line {line[:40]!r}"
                last = None
                continue
        last = headers.get(name)
        if last is None:
            last = headers[name] = []
        last.append(value.strip())
    for name in _MULTI_VALUED:
        values = headers.get(name)
        if values and any("," in v for v in values):
            headers[name] = [part for v in values for part in split_commas(v)]

    if start.startswith("SIP/"):
        # A bad response is only dropped (RFC 3261 §17: never answered), so no error info.
        return _parse_response(start, headers, body, error)
    method, uri, version = _request_line(start)
    try:
        if error is not None:
            raise SipParseError(error)
        if version != "SIP/2.0":
            if method and _VERSION.fullmatch(version):  # RFC 3261 §8.2.6 / §21.5.6
                raise SipParseError(f"unsupported version {version!r}", 505)
            raise SipParseError(f"bad request line {start[:60]!r}")
        if not method:
            raise SipParseError(f"bad request line {start[:60]!r}")
        request = SipRequest(method, uri, headers, _body(headers, body))
        _check_request(request)
        return request
    except (SipParseError, UriError) as exc:
        # For the 400 the method only tells an ACK (never answered) from the rest, so the
        # first word of a broken request line is good enough (RFC 4475 §3.1.2.9).
        words = text.split(None, 1)  # (the head: a leading CRLF leaves the start line empty)
        said = method or (words[0] if words and is_token(words[0]) else None)
        raise SipParseError(str(exc), getattr(exc, "status", 400), said, headers) from None


# Header names as written -> our key (lower case, compact form expanded); a message has
# ~10 and they repeat across messages, so this saves the strip/lower/token check per line.
_NAMES: dict[str, str] = {}


def _header_name(raw: str) -> str | None:
    name = raw.strip().lower()
    if not is_token(name):
        return None
    if len(name) == 1:
        name = COMPACT_FORMS.get(name, name)
    if len(_NAMES) < 4096:  # bounded: a flood of odd names must not grow it
        _NAMES[raw] = name
    return name


def _request_line(start: str) -> tuple[str, str, str]:
    """``Method SP Request-URI SP SIP-Version`` with exactly single spaces (RFC 3261 §7.1;
    RFC 4475 §3.1.2.9, §3.1.2.10). Returns an empty method when the line is not one."""
    parts = start.split(" ")
    if len(parts) != 3:
        return "", "", ""
    method, uri, version = parts
    # Method = token (§25.1): "!interesting-Method..." is legal (RFC 4475 §3.1.1.2).
    if not (method.isalpha() and method.isascii()) and not is_token(method):
        return "", "", version if _VERSION.fullmatch(version) else ""
    return method, uri, version


def _body(headers: dict[str, list[str]], body: bytes) -> bytes:
    cl = headers.get("content-length")
    if cl is None:
        return body  # UDP: the datagram ends the body (§18.3)
    if len(cl) > 1 and any(v != cl[0] for v in cl):  # RFC 4475 §3.3.9
        raise SipParseError("more than one Content-Length")
    length = small_uint(cl[0], 10)
    if length is None:  # RFC 4475 §3.1.2.3: a negative or non-numeric Content-Length
        raise SipParseError(f"bad Content-Length {cl[0][:20]!r}")
    if length > len(body):  # RFC 3261 §18.3: a short UDP body is an error (RFC 4475 §3.1.2.2)
        raise SipParseError(f"Content-Length {length} but only {len(body)} body bytes")
    return body[:length]  # extra octets after it are ignored (RFC 4475 §3.1.1.8)


def _check_common(msg: SipMessage) -> None:
    """The headers every message needs, each once and well-formed (RFC 3261 §8.1.1,
    §20; RFC 4475 §3.3.8)."""
    headers = msg.headers
    for name in ("from", "to", "call-id", "cseq"):
        values = headers.get(name)
        if not values:
            raise SipParseError(f"missing {canonical_name(name)} header")
        if len(values) > 1:
            raise SipParseError(f"more than one {canonical_name(name)} header")
    msg.via  # noqa: B018 - parse (and cache) the top Via
    msg.from_  # noqa: B018
    msg.to  # noqa: B018
    msg.cseq  # noqa: B018
    if not headers["call-id"][0] or " " in headers["call-id"][0]:
        raise SipParseError("bad Call-ID")


def _check_request(request: SipRequest) -> None:
    _check_common(request)
    if request.cseq.method != request.method:  # RFC 3261 §8.2.x / RFC 4475 §3.1.2.17-18
        raise SipParseError(f"CSeq method {request.cseq.method[:20]!r} is not {request.method[:20]!r}")
    uri = request.uri
    scheme = uri[: uri.find(":")].lower()
    if scheme in ("sip", "sips"):
        ruri = request.request_uri  # cached for the TU
        if ruri.headers:  # RFC 3261 §19.1.5: no headers in a Request-URI (RFC 4475 §3.1.2.11)
            raise SipParseError(f"Request-URI has headers: {uri[:60]!r}")
    elif not _ABSOLUTE_URI.fullmatch(uri):  # other schemes: RFC 3261 §25.1 absoluteURI
        raise SipParseError(f"bad Request-URI {uri[:60]!r}")
    headers = request.headers
    max_forwards = headers.get("max-forwards")
    if max_forwards is not None:
        hops = small_uint(max_forwards[0].lstrip("0") or "0", 3)  # "0068" is 68 (RFC 4475 §3.1.1.1)
        if hops is None or hops > 255 or len(max_forwards) > 1:  # §20.22; RFC 4475 §3.1.2.4
            raise SipParseError(f"bad Max-Forwards {max_forwards[0][:20]!r}")
    if request.method in _TARGET_REFRESH:
        _check_remote_target(request)
    else:
        for contact in headers.get("contact", ()):
            # An addr-spec Contact must not hide "?" or "," outside <> (RFC 3261 §20.10, RFC 4475
            # §3.1.2.13); a <...> one is parsed by whoever uses it (the registrar).
            if "<" not in contact and contact != "*":
                NameAddr.parse(contact)
    date = headers.get("date")
    if date is not None and not date[0].endswith(" GMT"):  # §20.17 (RFC 4475 §3.1.2.12)
        raise SipParseError(f"bad Date {date[0][:40]!r}")


def _parse_response(start: str, headers: dict[str, list[str]], body: bytes,
                    error: str | None) -> SipResponse:
    if error is not None:
        raise SipParseError(error)
    version, _, rest = start.partition(" ")
    code, _, reason = rest.partition(" ")
    if version != "SIP/2.0":
        raise SipParseError(f"unsupported version {version!r}")
    # Status-Code = 3DIGIT (§7.2; RFC 4475 §3.1.2.19); the reason may be empty or any UTF-8.
    status = small_uint(code, 3)
    if status is None or len(code) != 3 or not 100 <= status <= 699:
        raise SipParseError(f"bad status code {code[:20]!r}")
    try:
        response = SipResponse(status, reason, headers, _body(headers, body))
        _check_common(response)
        if 200 <= status < 300 and response.cseq.method in _TARGET_REFRESH:
            _check_remote_target(response)  # a 2xx sets the remote target (RFC 3261 §12.1.2)
    except UriError as exc:
        raise SipParseError(str(exc)) from None
    return response


_ABSOLUTE_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s<>\"]+")
# Requests whose Contact becomes (or replaces) a dialog's remote target: RFC 3261 §12.1,
# §12.2.2; UPDATE, RFC 3311 §5.2.
_TARGET_REFRESH = frozenset(("INVITE", "UPDATE"))


def _check_remote_target(msg: SipMessage) -> None:
    """RFC 3261 §8.1.1.8: the Contact of a message that sets a dialog's remote target is
    exactly one SIP or SIPS URI; our BYE and re-INVITEs go there, so it is checked here,
    once, and the dialog layer never meets one it cannot use. Its absence is for the
    dialog layer to judge: an RFC 2543 INVITE has none (RFC 4475 §3.1.1.13)."""
    contacts = msg.headers.get("contact")
    if not contacts:
        return
    if len(contacts) > 1:
        raise SipParseError("more than one Contact")
    uri = SipUri.parse(NameAddr.parse(contacts[0]).uri)
    if uri.scheme not in ("sip", "sips"):
        raise SipParseError(f"Contact is not a SIP URI: {contacts[0][:60]!r}")


def make_error_response(error: SipParseError, addr: tuple[str, int]) -> tuple[SipResponse, tuple[str, int]] | None:
    """The 400/505 for a request that failed to parse, from what ``parse_message`` could
    read (RFC 3261 §8.2.6: Via, From, To, Call-ID and CSeq copied), and where to send it;
    None when nothing can be answered: a response or an ACK (§17), or no Via to route a
    response along (§18.2.2)."""
    headers = error.headers
    if headers is None or not error.method or error.method == "ACK":
        return None
    vias = headers.get("via")
    if not vias:
        return None
    top = vias[0]
    try:
        via: Via | None = Via.parse(top)
    except SipParseError:
        via = None
    if via is not None:
        # The same routing as for a request that parsed (received, rport: RFC 3261
        # §18.2.2, RFC 3581), never the sent-by host as written.
        via.stamp(addr)
        dest = via.response_address(addr)
        top = str(via)
    else:
        # Only the sent-by port is trusted from a broken Via: the response goes to the
        # source address, to the source port too when the client asked with rport.
        m = _VIA_SENT_BY.match(top)
        if m is None:
            return None
        try:
            _, port = split_hostport(m.group(1))
        except UriError:
            port = None
        rport = re.search(r";\s*rport\b", top, re.IGNORECASE) is not None
        dest = addr if rport else (addr[0], port or 5060)
        top = f"{top};received={addr[0]}"
    copied: dict[str, list[str]] = {}
    for name in _COPIED:
        values = headers.get(name)
        if values:
            copied[name] = list(values)
    copied["via"][0] = top
    reason = f"{REASON_PHRASES[error.status]} ({error.reason})"[:120]
    # The reason phrase is TEXT-UTF8 without CR/LF (§25.1): keep our text on one line.
    reason = reason.replace("\r", " ").replace("\n", " ")
    return SipResponse(error.status, reason, copied), dest


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
