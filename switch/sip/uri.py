"""SIP URIs and name-addr values (RFC 3261 §19.1, §20.10, §25.1).

Own code for the same reason as message.py: it runs for every request.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class UriError(ValueError):
    pass


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
    """``host``, ``host:port`` or ``[v6]:port`` (RFC 3261 §25.1 hostport)."""
    if text.startswith("["):  # IPv6 reference
        end = text.find("]")
        if end < 0:
            raise UriError(f"bad IPv6 host {text!r}")
        host, rest = text[: end + 1], text[end + 1 :]
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = text.partition(":")
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise UriError(f"bad port in {text!r}")
        return host, int(port_text)
    return host, None


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


def _format_params(params: dict[str, str | None]) -> str:
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
            raise UriError(f"not a URI: {text!r}")
        if scheme == "tel":
            number, _, params = rest.partition(";")
            return cls("tel", number, "", None, _parse_params(params))
        if scheme not in ("sip", "sips"):
            raise UriError(f"unsupported URI scheme {scheme!r} in {text!r}")
        rest, _, headers = rest.partition("?")
        user: str | None = None
        password: str | None = None
        if "@" in rest:
            userinfo, _, rest = rest.rpartition("@")
            user, _, pw = userinfo.partition(":")
            password = pw or None
        hostport, _, params = rest.partition(";")
        host, port = split_hostport(hostport)
        if not host:
            raise UriError(f"no host in {text!r}")
        return cls(scheme, user, host.lower(), port, _parse_params(params), headers, password)

    @property
    def hostport(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        if self.scheme == "tel":
            return f"tel:{self.user}{_format_params(self.params)}"
        userinfo = ""
        if self.user is not None:
            userinfo = self.user if self.password is None else f"{self.user}:{self.password}"
            userinfo += "@"
        tail = f"?{self.headers}" if self.headers else ""
        return f"{self.scheme}:{userinfo}{self.hostport}{_format_params(self.params)}{tail}"


@dataclass(slots=True)
class NameAddr:
    """A From/To/Contact/Route value: ``"Display" <uri>;tag=x`` or a bare ``uri;tag=x``."""

    uri: str
    display: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        text = text.strip()
        if not text:
            raise UriError("empty address")
        lt = text.find("<")
        if lt >= 0:
            gt = text.find(">", lt)
            if gt < 0:
                raise UriError(f"unclosed '<' in {text!r}")
            display = text[:lt].strip().strip('"') or None
            uri = text[lt + 1 : gt].strip()
            params = _parse_params(text[gt + 1 :].strip())
        else:
            # addr-spec form: parameters after the URI belong to the header (§20.10).
            uri, _, params_text = text.partition(";")
            display = None
            params = _parse_params(params_text)
        if ":" not in uri:
            raise UriError(f"no URI in address {text!r}")
        return cls(uri, display, params)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    @property
    def sip_uri(self) -> SipUri:
        return SipUri.parse(self.uri)

    def __str__(self) -> str:
        display = f'"{self.display}" ' if self.display else ""
        return f"{display}<{self.uri}>{_format_params(self.params)}"
