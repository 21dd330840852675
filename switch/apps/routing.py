"""Which app serves an inbound INVITE: an ordered table of rules, first match wins.

A rule is ``{"match": PATTERN, "app": NAME}``. PATTERN is either

* a glob over the Request-URI user (the called number): ``18005551234``, ``1800*``,
  ``sales-?``, ``*``; or
* ``@`` followed by a glob over the Request-URI host (the called domain):
  ``@pbx.example.com``, ``@*.example.com``.

Matching is case-insensitive for domains (RFC 3261 §19.1.4 compares hosts that way) and
case-sensitive for users (§19.1.4: the user part is compared case-sensitively). When no
rule matches, the app named ``default`` serves the call.
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass
from typing import Any
from collections.abc import Iterable

DEFAULT_APP_NAME = "default"


class RouteError(ValueError):
    """A rule is malformed; the message says which field and why."""


@dataclass(frozen=True)
class Route:
    match: str
    app: str

    @classmethod
    def parse(cls, obj: Any) -> Route:
        """From ``{"match": ..., "app": ...}`` (JSON body, TOML ``[[routes]]`` or the store)."""
        if not isinstance(obj, dict):
            raise RouteError(f"a route is an object {{\"match\": PATTERN, \"app\": NAME}}, not {obj!r}")
        unknown = sorted(set(obj) - {"match", "app"})
        if unknown:
            raise RouteError(f"route {obj!r}: unknown key(s) {', '.join(unknown)}; a route has match and app")
        match, app = obj.get("match"), obj.get("app")
        if not isinstance(match, str) or not match.strip() or match.strip() == "@":
            raise RouteError(f"route {obj!r}: match must be a number/user glob (1800*) or @domain")
        if not isinstance(app, str) or not app:
            raise RouteError(f"route {obj!r}: app must be an app name")
        from .store import check_app_name  # one definition of a valid name

        check_app_name(app)
        return cls(match.strip(), app)

    def matches(self, user: str, host: str) -> bool:
        if self.match.startswith("@"):
            return fnmatch.fnmatchcase(host.lower(), self.match[1:].lower())
        return fnmatch.fnmatchcase(user, self.match)

    def to_json(self) -> dict[str, str]:
        return asdict(self)


class RouteTable:
    """API rules (editable at run time, persisted) first, then the config file's rules.

    Why API rules come first: they are the operator's latest intent, and the config's rules
    cannot be edited through the API, so a config rule must not be able to shadow them.
    """

    def __init__(self, config_routes: Iterable[Route] = (), api_routes: Iterable[Route] = ()) -> None:
        self.config_routes = list(config_routes)
        self.api_routes = list(api_routes)

    def rules(self) -> list[tuple[Route, str]]:
        """Every rule in match order with where it comes from: "api" or "config"."""
        return [(r, "api") for r in self.api_routes] + [(r, "config") for r in self.config_routes]

    def app_for(self, user: str | None, host: str) -> tuple[str, int | None]:
        """(app name, index of the matching rule) or (``default``, None)."""
        for i, (rule, _) in enumerate(self.rules()):
            if rule.matches(user or "", host):
                return rule.app, i
        return DEFAULT_APP_NAME, None

    def to_json(self) -> list[dict[str, Any]]:
        return [{"index": i, **r.to_json(), "origin": origin} for i, (r, origin) in enumerate(self.rules())]
