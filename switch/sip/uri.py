"""SIP URIs and name-addr values (RFC 3261 §19.1, §20.10, §25.1).

Own code for the same reason as message.py: it runs for every request.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from urllib.parse import unquote


class UriError(ValueError):
    pass


# RFC 3261 §25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
_TOKENS_LWS = TOKEN_CHARS | frozenset(" \t")  # *(token LWS): an unquoted display-name
# RFC 3261 §25.1 hostname characters, plus "_": not in the grammar, but common in the
# names of containers and internal hosts that operators put in configs and Via headers,
# and harmless to accept (be liberal in what you accept, RFC 3261 §8.2.2 spirit).
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._")
# Characters no URI may hold unescaped (RFC 3261 §25.1 / RFC 2396 §2.4.3): LWS would split the
# start line, <> and " delimit name-addrs. A URI that has them is malformed (RFC 4475 §3.1.2.7,
# §3.1.2.8, §3.1.2.14).
_NOT_IN_URI = frozenset(' \t\r\n<>"\x00')


_COMMON_SCHEMES = frozenset(("sip", "sips", "tel"))


def is_token(text: str) -> bool:
    return bool(text) and TOKEN_CHARS.issuperset(text)


def small_uint(text: str, max_digits: int) -> int | None:
    """``text`` as a non-negative integer of at most ``max_digits`` ASCII digits, else None.

    ``str.isdigit`` alone accepts non-ASCII digits (``int`` then raises) and any length
    (``int`` raises past sys.get_int_max_str_digits, 4300 by default): every number read
    from the wire goes through here so neither can escape as a non-parse error."""
    if not text or len(text) > max_digits or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def split_commas(value: str) -> list[str]:
    """Split a header value on commas that are outside quotes and <...>."""
    if "," not in value:
        return [value]
    parts: list[str] = []
    depth = 0
    quoted = False
    start = 0
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(value[start:i].strip())
            start = i + 1
        i += 1
    parts.append(value[start:].strip())
    return [p for p in parts if p]


def split_hostport(text: str) -> tuple[str, int | None]:
    """``host``, ``host:port`` or ``[v6]:port`` (RFC 3261 §25.1 hostport). An IPv6 reference
    keeps its brackets in the host (that is how it is written back into a header) and must
    hold a valid address (RFC 5118 §4.1, §4.2); nothing but ``:port`` may follow the ``]``."""
    if text.startswith("["):  # IPv6 reference
        end = text.find("]")
        if end < 0 or not is_ipv6_address(text[1:end]):
            raise UriError(f"bad IPv6 reference in {text[:60]!r}")
        host, rest = text[: end + 1], text[end + 1 :]
        if rest and rest[0] != ":":
            raise UriError(f"junk after the IPv6 reference in {text[:60]!r}")
        port_text = rest[1:]
    else:
        host, _, port_text = text.partition(":")
        if "]" in host or "[" in host:
            raise UriError(f"bad host in {text!r}")
    if port_text or text.endswith(":"):
        port = small_uint(port_text, 5)
        if port is None or not 0 < port < 65536:
            raise UriError(f"bad port in {text[:60]!r}")
        return host, port
    return host, None


def is_ipv6_address(text: str) -> bool:
    """``text`` (without brackets) is an IPv6 address. RFC 3261's ABNF, taken from RFC 2373,
    also derives ``2001:db8:::192.0.2.1`` (three colons before an embedded IPv4 address); RFC
    5118 §4.10 asks receivers to tolerate it, so it is read as the ``::`` it means."""
    known = _IPV6_SEEN.get(text)
    if known is not None:
        return known
    valid = bool(text) and text.isascii() and (
        _ipv6(text) or (text.count(":::") == 1 and _ipv6(text.replace(":::", "::"))))
    if len(_IPV6_SEEN) < 4096:  # bounded: a flood of odd addresses must not grow it
        _IPV6_SEEN[text] = valid
    return valid


# ipaddress takes ~4 µs an address, twice an IPv6 INVITE (Request-URI, Via); peers send
# the same few addresses again and again, so the verdicts are kept (like _NAMES in message.py).
_IPV6_SEEN: dict[str, bool] = {}


def _ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def host_address(host: str) -> str:
    """A Via or URI host as the socket API writes the address: an IPv6 reference loses
    its brackets (RFC 3261 §19.1.1 ``IPv6reference``; the ``received`` parameter may come
    with or without them, RFC 5118 §4.5)."""
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1]
    return host


def join_hostport(address: str, port: int | None = None) -> str:
    """The ``hostport`` (RFC 3261 §25.1) for an address as the socket API writes it, for
    the Via sent-by and Contact we send: an IPv6 address goes in brackets (RFC 5118 §4.4:
    the port after the ``]``)."""
    host = f"[{address}]" if ":" in address and not address.startswith("[") else address
    return host if port is None else f"{host}:{port}"


def same_host(host: str, address: str) -> bool:
    """Does a Via sent-by ``host`` name the source ``address`` a datagram came from?
    IPv6 has many spellings of one address (``[2001:DB8::0:1]`` is ``2001:db8::1``), so
    IPv6 hosts compare as addresses; anything else (IPv4, a host name) as text."""
    if host == address:
        return True
    bare = host_address(host)
    if bare == address:
        return True
    if ":" not in bare or ":" not in address:
        return False
    try:
        return ipaddress.IPv6Address(bare.replace(":::", "::")) == ipaddress.IPv6Address(address)
    except ValueError:
        return False


def unescape(text: str) -> str:
    """Undo RFC 3261 §25.1 ``escaped`` (%HH) in a URI component, once: the application
    must treat an escape as the octet it stands for (RFC 4475 §3.1.1.3) but never unescape
    twice (``value%25%34%31`` is ``value%41``, RFC 3986 §2.4). Octets that are not UTF-8,
    and NUL (RFC 4475 §3.1.1.4), survive: the result is not shortened at a NUL, and a
    non-UTF-8 octet becomes a lone surrogate that ``.encode(errors="surrogateescape")``
    turns back into it."""
    if "%" not in text:
        return text
    return unquote(text, errors="surrogateescape")


def _parse_params(text: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    if not text:
        return params
    for item in text.split(";"):
        if not item:
            continue
        key, eq, val = item.partition("=")
        params[key.strip().lower()] = val.strip() if eq else None
    return params


def _end_of_quoted(text: str) -> int:
    """Index of the quote closing the quoted-string at ``text[0]`` (RFC 3261 §25.1: a
    backslash escapes the next character, NUL and controls included, RFC 4475 §3.1.1.2)."""
    i = 1
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == '"':
            return i
        i += 1
    raise UriError(f"unterminated quoted string in {text[:60]!r}")


def format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


@dataclass(slots=True)
class SipUri:
    """``sip:user:password@host:port;params?headers`` (also sips: and tel:)."""

    scheme: str
    user: str | None
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str = ""
    password: str | None = None

    @classmethod
    def parse(cls, text: str) -> SipUri:
        text = text.strip()
        scheme, colon, rest = text.partition(":")
        scheme = scheme.lower()
        if not colon or not rest:
            raise UriError(f"not a URI: {text[:60]!r}")
        if not _NOT_IN_URI.isdisjoint(rest):
            raise UriError(f"white space or <>\" in URI {text[:60]!r}")
        if scheme == "tel":
            number, _, params = rest.partition(";")
            return cls("tel", number, "", None, _parse_params(params))
        if scheme not in ("sip", "sips"):
            raise UriError(f"unsupported URI scheme {scheme!r} in {text[:60]!r}")
        user: str | None = None
        password: str | None = None
        # RFC 3261 §19.1.1 / §25.1: the userinfo may hold ";", "?" and "," unescaped (RFC 4475
        # §3.1.1.2, §3.1.1.9) but never "@", so it ends at the last "@"; headers ("?") and
        # parameters (";") are looked for only after it.
        at = rest.rfind("@")
        if at >= 0:
            userinfo, rest = rest[:at], rest[at + 1 :]
            user, _, pw = userinfo.partition(":")
            password = pw or None
            if not user:
                raise UriError(f"empty user in {text[:60]!r}")
        rest, _, headers = rest.partition("?")
        hostport, _, params = rest.partition(";")
        host, port = split_hostport(hostport)
        if not host or not (host[0] == "[" or _HOST_CHARS.issuperset(host)):
            raise UriError(f"bad host in {text[:60]!r}")
        return cls(scheme, user, host.lower(), port, _parse_params(params), headers, password)

    @property
    def hostport(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        if self.scheme == "tel":
            return f"tel:{self.user}{format_params(self.params)}"
        userinfo = ""
        if self.user is not None:
            userinfo = self.user if self.password is None else f"{self.user}:{self.password}"
            userinfo += "@"
        tail = f"?{self.headers}" if self.headers else ""
        return f"{self.scheme}:{userinfo}{self.hostport}{format_params(self.params)}{tail}"


# RFC 3261 §19.1.4: these URI parameters must match when either URI has one.
_MUST_MATCH = ("user", "ttl", "method", "maddr", "transport")


def same_uri(a: SipUri, b: SipUri) -> bool:
    """RFC 3261 §19.1.4 equivalence, for finding a registrar's binding (§10.3 step 7): the
    scheme, user and password as octets once unescaped (case-sensitive), the host without
    regard to case, the port only if both or neither give it (sip:h is not sip:h:5060),
    ``user``/``ttl``/``method``/``maddr``/``transport`` present in either must match, other
    parameters only where both have them (values without regard to case), and the headers
    must be the same set."""
    if a.scheme != b.scheme or a.port != b.port or a.host.lower() != b.host.lower():
        return False
    if unescape(a.user or "") != unescape(b.user or "") or unescape(a.password or "") != unescape(b.password or ""):
        return False
    for name in set(a.params) | set(b.params):
        if name in a.params and name in b.params or name in _MUST_MATCH:
            if unescape(a.params.get(name) or "").lower() != unescape(b.params.get(name) or "").lower():
                return False
            if (name in a.params) != (name in b.params):
                return False
    return _headers(a.headers) == _headers(b.headers)


def _headers(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in text.split("&") if text else ():
        name, _, value = item.partition("=")
        out[unescape(name).lower()] = unescape(value)
    return out


@dataclass(slots=True)
class NameAddr:
    """A From/To/Contact/Route value: ``"Display" <uri>;tag=x`` or a bare ``uri;tag=x``."""

    uri: str
    display: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        """Strict enough that what passes is what RFC 3261 §20.10 / §25.1 allow: a quoted
        display name must close (RFC 4475 §3.1.2.6), an unquoted one is tokens (§3.1.2.15),
        nothing but the URI goes inside <> (§3.1.2.14), and an addr-spec without <> holds
        no "?" or "," (§20: such a URI must be enclosed; RFC 4475 §3.1.2.13)."""
        text = text.strip()
        if not text:
            raise UriError("empty address")
        if text[0] == '"':
            end = _end_of_quoted(text)
            display: str | None = text[1:end]
            rest = text[end + 1 :].lstrip()
            if not rest.startswith("<"):
                raise UriError(f"no <URI> after the display name in {text[:60]!r}")
            lt = 0
            text = rest
        else:
            display = None
            lt = text.find("<")
            if lt >= 0:
                name = text[:lt].strip()
                if name:
                    if not _TOKENS_LWS.issuperset(name):
                        raise UriError(f"unquoted display name is not tokens in {text[:60]!r}")
                    display = name
        if lt >= 0:
            gt = text.find(">", lt)
            if gt < 0:
                raise UriError(f"unclosed '<' in {text[:60]!r}")
            uri = text[lt + 1 : gt]
            params_text = text[gt + 1 :].strip()
            if params_text and params_text[0] != ";":
                raise UriError(f"junk after '>' in {text[:60]!r}")
            params = _parse_params(params_text)
        else:
            # addr-spec form: parameters after the URI belong to the header (§20.10).
            uri, _, params_text = text.partition(";")
            uri = uri.rstrip()  # SEMI = SWS ";" SWS (§25.1; RFC 4475 §3.1.1.1)
            if "?" in uri or "," in uri:
                raise UriError(f"a URI with '?' or ',' must be in <> in {text[:60]!r}")
            params = _parse_params(params_text)
        scheme, colon, rest = uri.partition(":")
        if (not rest or not _NOT_IN_URI.isdisjoint(uri)
                or (scheme not in _COMMON_SCHEMES and not is_token(scheme))):
            raise UriError(f"no URI in address {text[:60]!r}")
        return cls(uri, display, params)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    @property
    def sip_uri(self) -> SipUri:
        return SipUri.parse(self.uri)

    def __str__(self) -> str:
        display = f'"{self.display}" ' if self.display else ""
        return f"{display}<{self.uri}>{format_params(self.params)}"
