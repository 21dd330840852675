"""Which families the switch serves and which address each peer sees (switch/calls/addressing.py).
The route probe is a fake (a table of peer -> our source address), so these hold on any host."""

from __future__ import annotations

import socket

import pytest

from switch.calls.addressing import LocalAddresses, ip_family, route_source, served_families

V4, V6 = socket.AF_INET, socket.AF_INET6


class Probe:
    def __init__(self, routes: dict[str, str | None]) -> None:
        self.routes = routes
        self.asked: list[str] = []

    def __call__(self, peer: str) -> str | None:
        self.asked.append(peer)
        return self.routes.get(peer)


DUAL_ROUTES = {"192.0.2.9": "192.0.2.2", "2001:db8::9": "fd00::2", "::1": "::1", "127.0.0.1": "127.0.0.1"}


def dual(advertise: str | None = None) -> tuple[LocalAddresses, Probe]:
    probe = Probe(dict(DUAL_ROUTES))
    return LocalAddresses(lambda: ("::", 5060), advertise, probe), probe


def test_families_follow_the_listen_address() -> None:
    assert served_families("::") == {V4, V6}  # dual stack
    assert served_families("0.0.0.0") == served_families("127.0.0.1") == {V4}
    assert served_families("::1") == served_families("2001:db8::1") == {V6}
    assert (ip_family("192.0.2.1"), ip_family("[2001:db8::1]"), ip_family("gw.example.net")) == (V4, V6, None)


def test_a_dual_stack_switch_names_itself_in_each_peers_family() -> None:
    addresses, probe = dual()
    assert addresses.sip("192.0.2.9") == "192.0.2.2"
    assert addresses.sip("2001:db8::9") == "fd00::2"
    assert addresses.sip("192.0.2.9") == "192.0.2.2" and probe.asked == ["192.0.2.9", "2001:db8::9"]  # cached
    assert addresses.is_ours("fd00::2") and addresses.is_ours("::1") and not addresses.is_ours("192.0.2.9")


def test_advertise_is_used_for_peers_of_its_family_only() -> None:
    addresses, _ = dual(advertise="203.0.113.10")
    assert addresses.sip("192.0.2.9") == "203.0.113.10"
    assert addresses.sip("2001:db8::9") == "fd00::2"  # an IPv4 address would not reach an IPv6 peer
    assert addresses.is_ours("203.0.113.10")


def test_a_switch_bound_to_one_address_names_only_that_one() -> None:
    addresses = LocalAddresses(lambda: ("::1", 5060), probe=Probe({}))
    assert addresses.sip("::1") == "::1" and addresses.towards("2001:db8::9") == "::1"
    assert addresses.towards("127.0.0.1") is None  # IPv4 is not served at all
    assert addresses.media(V4, "127.0.0.1", "::1") is None


def test_no_route_falls_back_to_the_loopback_for_sip_but_refuses_media() -> None:
    addresses = LocalAddresses(lambda: ("::", 5060), probe=Probe({}))  # the kernel knows no route anywhere
    assert addresses.sip("192.0.2.9") == "127.0.0.1" and addresses.sip("2001:db8::9") == "::1"
    assert addresses.media(V6, "2001:db8::9", "192.0.2.9") is None  # so the offer gets 488


@pytest.mark.parametrize("family, peer_media, sip_peer, expected", [
    (V6, "2001:db8::9", "192.0.2.9", "fd00::2"),  # IP6 offer over IPv4 SIP: faces its c= address
    (V4, "192.0.2.9", "2001:db8::9", "192.0.2.2"),  # and the other way round
    (V6, "::", "2001:db8::9", "fd00::2"),  # c=:: (hold): faces the SIP peer
    (V6, "::", "192.0.2.9", "::1"),  # ... or, of another family, our loopback
    (V6, "media.example.net", "192.0.2.9", "::1"),  # a name is not probed (that would resolve it)
    (V6, None, "2001:db8::9", "fd00::2"),
])
def test_media_address_in_the_offers_family(family: int, peer_media: str | None, sip_peer: str,
                                            expected: str) -> None:
    addresses, _ = dual()
    assert addresses.media(family, peer_media, sip_peer) == expected


def test_an_ipv4_only_switch_has_no_ipv6_media() -> None:
    addresses = LocalAddresses(lambda: ("0.0.0.0", 5060), probe=Probe(dict(DUAL_ROUTES)))
    assert addresses.families == {V4}
    assert addresses.media(V6, "2001:db8::9", "192.0.2.9") is None
    assert addresses.media(V4, "192.0.2.9", "192.0.2.9") == "192.0.2.2"


def test_route_source_on_this_host() -> None:
    assert route_source("127.0.0.1") == "127.0.0.1"
    assert route_source("gw.example.net") is None  # never resolves a name
    try:
        with socket.socket(V6, socket.SOCK_DGRAM) as s:
            s.connect(("::1", 9))
    except OSError:
        pytest.skip("this host has no IPv6 loopback")
    assert route_source("::1") == "::1"
