"""RFC 3263 server location (switch/sip/locator.py) and its DNS cache (dns_records.py) on a
fake DNS and a virtual clock: NAPTR picks the transport, SRV the servers in RFC 2782 order,
A/AAAA their addresses; an explicit port or an IP skips NAPTR/SRV; TTLs are kept. The real
DNS server (dnsmasq) is in tests/e2e/test_dns.py."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest

from switch.config import Config, ConfigError, load
from switch.sip.dns_records import Address, DnsFailure, DnsRecords, Naptr, Record, Srv, parse_dns_server
from switch.sip.locator import Target, dns_lookup, locate, naptr_services, order_srv
from switch.sip.resolver import ResolveError, Resolver
from switch.sip.uri import SipUri
from test_sip_resolver import Clock

V4, V6 = socket.AF_INET, socket.AF_INET6
UDP = frozenset({"UDP"})
ALL = frozenset({"UDP", "TCP", "TLS"})


class FakeZone:
    """(name, type) -> records; a missing entry is "no such record"; an exception is raised."""

    def __init__(self, table: dict[tuple[str, str], Sequence[Record] | Exception], ttl: float = 300) -> None:
        self.table, self.ttl = table, ttl
        self.asked: list[tuple[str, str]] = []

    async def __call__(self, name: str, rdtype: str) -> tuple[Sequence[Record], float]:
        self.asked.append((name, rdtype))
        await asyncio.sleep(0)
        found = self.table.get((name, rdtype), [])
        if isinstance(found, Exception):
            raise found
        return found, self.ttl


def rig(loop: asyncio.AbstractEventLoop, zone: FakeZone, clock: Clock | None = None,
        families: frozenset[int] = frozenset((V4,))) -> tuple[Resolver, DnsRecords]:
    clock = clock or Clock()
    records = DnsRecords(("127.0.0.1:5353",), clock=clock, query=zone)
    return Resolver(loop, lambda: families, lookup=dns_lookup(records), clock=clock), records


def where(loop: asyncio.AbstractEventLoop, zone: FakeZone, uri: str, transports: frozenset[str] = UDP,
          rand: float = 0.0, **kw: object) -> list[str]:
    resolver, records = rig(loop, zone, **kw)  # type: ignore[arg-type]
    targets = loop.run_until_complete(locate(SipUri.parse(uri), transports, resolver, records, lambda: rand))
    return [str(t) for t in targets]


GW = {
    ("gw.test", "NAPTR"): [Naptr(20, 10, "S", "SIP+D2U", "_sip._udp.gw.test"),
                           Naptr(10, 10, "S", "SIP+D2T", "_sip._tcp.gw.test")],
    ("_sip._udp.gw.test", "SRV"): [Srv(20, 0, 5072, "gw2.test"), Srv(10, 0, 5071, "gw1.test")],
    ("_sip._tcp.gw.test", "SRV"): [Srv(10, 0, 5073, "gw1.test")],
    ("gw1.test", "A"): [Address(V4, "192.0.2.1")],
    ("gw2.test", "A"): [Address(V4, "192.0.2.2")],
    ("gw2.test", "AAAA"): [Address(V6, "2001:db8::2")],
}


# ---------------------------------------------------------------------- RFC 2782 and §4.1 ordering
def test_srv_records_are_ordered_by_priority_then_by_weighted_draw() -> None:
    records = [Srv(20, 0, 1, "c"), Srv(10, 60, 1, "a"), Srv(10, 20, 1, "b"), Srv(10, 0, 1, "z")]
    assert [r.target for r in order_srv(records, lambda: 0.0)] == ["z", "a", "b", "c"]  # a draw of 0: weight 0 first
    assert [r.target for r in order_srv(records, lambda: 0.99)] == ["b", "a", "z", "c"]
    import random

    rng = random.Random(7)
    firsts = Counter(order_srv(records, rng.random)[0].target for _ in range(4000))
    assert 0.70 < firsts["a"] / 4000 < 0.80 and 0.20 < firsts["b"] / 4000 < 0.30  # 60:20 is 3 in 4
    assert firsts["c"] == 0  # a lower priority never goes first


def test_naptr_keeps_s_flagged_sip_services_the_switch_sends_in_order_and_preference() -> None:
    records = [Naptr(50, 50, "S", "SIPS+D2T", "_sips._tcp.x"), Naptr(10, 20, "S", "SIP+D2U", "_sip._udp.x"),
               Naptr(10, 10, "S", "SIP+D2T", "_sip._tcp.x"), Naptr(5, 5, "U", "E2U+sip", "!^.*$!sip:x!"),
               Naptr(1, 1, "S", "SIP+D2S", "_sip._sctp.x")]
    assert naptr_services(records, UDP, secure=False) == [("UDP", "_sip._udp.x")]
    assert naptr_services(records, ALL, secure=False) == [("TCP", "_sip._tcp.x"), ("UDP", "_sip._udp.x"),
                                                          ("TLS", "_sips._tcp.x")]
    assert naptr_services(records, ALL, secure=True) == [("TLS", "_sips._tcp.x")]  # sips: TLS only


# ---------------------------------------------------------------------- locate()
def test_naptr_then_srv_then_a_for_a_name_without_port(loop: asyncio.AbstractEventLoop) -> None:
    zone = FakeZone(GW)
    # NAPTR prefers TCP (order 10), which the switch does not send: UDP's SRV it is.
    assert where(loop, zone, "sip:1000@gw.test") == ["192.0.2.1:5071/UDP", "192.0.2.2:5072/UDP"]
    assert zone.asked[:2] == [("gw.test", "NAPTR"), ("_sip._udp.gw.test", "SRV")]


def test_the_transport_is_data_a_tcp_capable_switch_gets_tcp_first(loop: asyncio.AbstractEventLoop) -> None:
    assert where(loop, FakeZone(GW), "sip:gw.test", ALL) == ["192.0.2.1:5073/TCP"]


def test_without_naptr_the_srv_of_each_transport_we_send_is_tried(loop: asyncio.AbstractEventLoop) -> None:
    table = {k: v for k, v in GW.items() if k[1] != "NAPTR"}
    zone = FakeZone(table)
    assert where(loop, zone, "sip:gw.test") == ["192.0.2.1:5071/UDP", "192.0.2.2:5072/UDP"]
    assert ("_sip._tcp.gw.test", "SRV") not in zone.asked  # the first transport with records wins


def test_without_srv_the_host_itself_at_5060(loop: asyncio.AbstractEventLoop) -> None:
    zone = FakeZone({("gw1.test", "A"): [Address(V4, "192.0.2.1")]})
    assert where(loop, zone, "sip:gw1.test") == ["192.0.2.1:5060/UDP"]
    assert zone.asked == [("gw1.test", "NAPTR"), ("_sip._udp.gw1.test", "SRV"), ("gw1.test", "AAAA"),
                          ("gw1.test", "A")]


@pytest.mark.parametrize("uri, expected", [
    ("sip:gw.test:5090", []),  # RFC 3263 §4.2: a port: no NAPTR, no SRV
    ("sip:192.0.2.9", None),  # a numeric host: no DNS at all
    ("sip:localhost", []),  # RFC 6761 §6.3: never asked of DNS as NAPTR/SRV
])
def test_a_port_an_ip_or_localhost_skips_naptr_and_srv(loop: asyncio.AbstractEventLoop, uri: str,
                                                       expected: list[str] | None) -> None:
    zone = FakeZone({**GW, ("gw.test", "A"): [Address(V4, "192.0.2.7")]})
    got = where(loop, zone, uri)
    assert got == {"sip:gw.test:5090": ["192.0.2.7:5090/UDP"], "sip:192.0.2.9": ["192.0.2.9:5060/UDP"],
                   "sip:localhost": ["127.0.0.1:5060/UDP"]}[uri]
    assert not any(t in ("NAPTR", "SRV") for _, t in zone.asked)
    assert ("localhost", "A") not in zone.asked  # RFC 6761 §6.3: loopback without asking


def test_a_transport_parameter_picks_the_srv_and_refuses_what_we_cannot_send(loop: asyncio.AbstractEventLoop) -> None:
    zone = FakeZone(GW)
    assert where(loop, zone, "sip:gw.test;transport=udp") == ["192.0.2.1:5071/UDP", "192.0.2.2:5072/UDP"]
    assert ("gw.test", "NAPTR") not in zone.asked
    with pytest.raises(ResolveError, match="reached over TCP and the switch sends UDP") as refused:
        where(loop, zone, "sip:gw.test;transport=tcp")
    assert refused.value.status == 503
    with pytest.raises(ResolveError, match="reached over TLS"):
        where(loop, zone, "sips:gw.test:5061")


def test_targets_that_do_not_resolve_are_skipped_and_a_dot_offers_nothing(loop: asyncio.AbstractEventLoop) -> None:
    zone = FakeZone({("_sip._udp.gw.test", "SRV"): [Srv(10, 0, 5071, "nowhere.test"), Srv(20, 0, 5072, "gw2.test")],
                     ("gw2.test", "A"): [Address(V4, "192.0.2.2")], ("gw2.test", "AAAA"): [Address(V6, "2001:db8::2")]})
    assert where(loop, zone, "sip:gw.test") == ["192.0.2.2:5072/UDP"]  # the IPv6 one: not a family we serve
    assert where(loop, zone, "sip:gw.test", families=frozenset((V4, V6))) == ["[2001:db8::2]:5072/UDP",
                                                                               "192.0.2.2:5072/UDP"]
    dot = FakeZone({("_sip._udp.gw.test", "SRV"): [Srv(0, 0, 0, "")]})
    with pytest.raises(ResolveError, match="not offered") as none:
        where(loop, dot, "sip:gw.test")
    assert none.value.status == 404


def test_a_failing_dns_for_naptr_and_srv_falls_back_to_the_address(loop: asyncio.AbstractEventLoop) -> None:
    zone = FakeZone({("gw.test", "NAPTR"): DnsFailure("no answer within 3 s"),
                     ("_sip._udp.gw.test", "SRV"): DnsFailure("no answer within 3 s"),
                     ("gw.test", "A"): [Address(V4, "192.0.2.7")]})
    assert where(loop, zone, "sip:gw.test") == ["192.0.2.7:5060/UDP"]
    down = FakeZone({k: DnsFailure("REFUSED") for k in [("gw.test", t) for t in ("NAPTR", "A", "AAAA")]})
    with pytest.raises(ResolveError) as failed:
        where(loop, down, "sip:gw.test:5060")
    assert failed.value.status == 503  # the DNS could not say: a transport failure, not "no such host"
    with pytest.raises(ResolveError) as missing:
        where(loop, FakeZone({}), "sip:gw.test:5060")
    assert missing.value.status == 404


# ---------------------------------------------------------------------- the cache
def test_records_are_cached_for_their_ttl_and_failures_briefly(loop: asyncio.AbstractEventLoop) -> None:
    clock = Clock()
    zone = FakeZone(GW, ttl=30)
    resolver, records = rig(loop, zone, clock)
    uri = SipUri.parse("sip:gw.test")
    first = loop.run_until_complete(locate(uri, UDP, resolver, records, lambda: 0.0))
    asked = len(zone.asked)
    clock.now += 29
    assert loop.run_until_complete(locate(uri, UDP, resolver, records, lambda: 0.0)) == first
    assert len(zone.asked) == asked  # all from the cache
    clock.now += 2
    loop.run_until_complete(locate(uri, UDP, resolver, records, lambda: 0.0))
    assert len(zone.asked) == 2 * asked  # expired: asked again
    flaky = FakeZone({("gw.test", "SRV"): DnsFailure("SERVFAIL")})
    cache = DnsRecords(("127.0.0.1",), clock=clock, query=flaky)
    for _ in range(3):
        with pytest.raises(DnsFailure):
            loop.run_until_complete(cache.lookup("gw.test", "SRV"))
    assert flaky.asked == [("gw.test", "SRV")]  # one failure per FAILURE_TTL, not one per call
    clock.now += 6
    with pytest.raises(DnsFailure):
        loop.run_until_complete(cache.lookup("gw.test", "SRV"))
    assert len(flaky.asked) == 2


@pytest.mark.parametrize("text, parsed", [("192.0.2.53", ("192.0.2.53", 53)), ("127.0.0.1:5353", ("127.0.0.1", 5353)),
                                          ("[::1]:5353", ("::1", 5353))])
def test_dns_server_addresses(text: str, parsed: tuple[str, int]) -> None:
    assert parse_dns_server(text) == parsed


@pytest.mark.parametrize("text", ["dns.example.net", "127.0.0.1:0", "::1:53", ""])
def test_a_dns_server_must_be_an_address(text: str) -> None:
    with pytest.raises(ValueError, match="dns_servers: .* is not IP or IP:PORT"):
        parse_dns_server(text)


def test_target_names_its_transport() -> None:
    assert str(Target("UDP", "2001:db8::1", 5060)) == "[2001:db8::1]:5060/UDP"
    assert Target("TLS", "192.0.2.1", 5061).addr == ("192.0.2.1", 5061)


# ---------------------------------------------------------------------- the config keys
@pytest.mark.parametrize("setting, message", [
    ('dns_servers = ["dns.example.net"]', "dns_servers: 'dns.example.net' is not IP or IP:PORT"),
    ('dns_servers = "127.0.0.1"', "dns_servers must be a list"),
    ("failover_timeout = 0", "failover_timeout must be a number from 0.1"),
])
def test_bad_dns_settings_are_refused_with_what_to_write(tmp_path: Path, setting: str, message: str) -> None:
    path = tmp_path / "switch.toml"
    path.write_text(setting + "\n")
    with pytest.raises(ConfigError, match=message):
        load(str(path), {})


def test_dns_settings_load_and_a_long_failover_timeout_is_only_outrun_by_timer_b(tmp_path: Path) -> None:
    path = tmp_path / "switch.toml"
    path.write_text('dns_servers = ["127.0.0.1:5353", "[::1]"]\nfailover_timeout = 40\n')
    cfg = load(str(path), {"sip_t1": 0.05})
    assert cfg.dns_servers == ["127.0.0.1:5353", "[::1]"] and cfg.failover_timeout == 40
    assert DnsRecords(cfg.dns_servers, clock=Clock()).servers == [("127.0.0.1", 5353), ("::1", 53)]
    assert Config().dns_servers == [] and not DnsRecords((), clock=Clock()).configured  # resolv.conf


def test_concurrent_lookups_of_one_record_are_one_query(loop: asyncio.AbstractEventLoop) -> None:
    zone = FakeZone(GW)
    records = DnsRecords(("127.0.0.1",), clock=Clock(), query=zone)

    async def both() -> list[tuple[tuple[Record, ...], float]]:
        return list(await asyncio.gather(records.lookup("_sip._udp.gw.test", "SRV"),
                                         records.lookup("_SIP._udp.GW.test.", "SRV")))  # names are case-blind

    first, second = loop.run_until_complete(both())
    assert first == second and len(first[0]) == 2 and zone.asked == [("_sip._udp.gw.test", "SRV")]
    assert records.queries == 1
