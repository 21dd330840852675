"""The route table: which app serves an INVITE (switch/apps/routing.py)."""

from __future__ import annotations

import pytest

from switch.apps.routing import DEFAULT_APP_NAME, Route, RouteError, RouteTable
from switch.apps.store import DeployError


def table(api: list[tuple[str, str]] = (), config: list[tuple[str, str]] = ()) -> RouteTable:  # type: ignore[assignment]
    return RouteTable([Route(m, a) for m, a in config], [Route(m, a) for m, a in api])


def test_first_match_wins_and_default_is_the_fallback() -> None:
    t = table(api=[("18005551234", "special"), ("1800*", "tollfree"), ("@pbx.example.com", "pbx")])
    assert t.app_for("18005551234", "x") == ("special", 0)
    assert t.app_for("18009999999", "x") == ("tollfree", 1)
    assert t.app_for("alice", "PBX.example.com") == ("pbx", 2)  # hosts compare case-insensitively
    assert t.app_for("alice", "other.example.com") == (DEFAULT_APP_NAME, None)
    assert t.app_for(None, "other") == (DEFAULT_APP_NAME, None)  # no user part: sip:host


def test_user_globs_and_domain_globs() -> None:
    assert Route("sales-?", "s").matches("sales-1", "h")
    assert not Route("sales-?", "s").matches("sales-12", "h")
    assert not Route("Alice", "a").matches("alice", "h")  # RFC 3261 §19.1.4: user is case-sensitive
    assert Route("@*.example.com", "e").matches("x", "a.example.com")
    assert not Route("@*.example.com", "e").matches("x", "example.org")
    assert not Route("1800*", "t").matches("", "h")


def test_api_rules_come_before_config_rules() -> None:
    t = table(api=[("18001234", "special")], config=[("1800*", "tollfree")])
    assert t.app_for("18001234", "h") == ("special", 0)
    assert t.app_for("18005678", "h") == ("tollfree", 1)
    assert [r["origin"] for r in t.to_json()] == ["api", "config"]
    assert t.to_json()[1] == {"index": 1, "match": "1800*", "app": "tollfree", "origin": "config"}


@pytest.mark.parametrize("obj", [
    "1800*", {"match": "", "app": "x"}, {"match": "@", "app": "x"}, {"match": "1*"},
    {"match": "1*", "app": "x", "extra": 1}, {"match": 1800, "app": "x"},
])  # fmt: skip
def test_bad_rules_are_refused_with_a_message(obj: object) -> None:
    with pytest.raises(RouteError):
        Route.parse(obj)


def test_app_names_are_checked() -> None:
    with pytest.raises(DeployError, match="bad app name"):
        Route.parse({"match": "1*", "app": "../etc"})
    assert Route.parse({"match": " 1800* ", "app": "toll-free.v2"}) == Route("1800*", "toll-free.v2")
