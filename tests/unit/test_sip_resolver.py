"""Name resolution off the loop (switch/sip/resolver.py): IP literals pass untouched, names
are looked up once and cached for a TTL (failures for a shorter one), concurrent lookups
of a name are one, slow lookups time out, and the address is picked in a family we serve.
The lookup is a fake and the clock virtual: nothing here touches DNS."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pytest

from switch.sip.resolver import ResolveError, Resolver, family_names, is_ip_literal

V4, V6 = socket.AF_INET, socket.AF_INET6


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeDns:
    """Answers from a table; ``gate`` (when set) holds every lookup until it is done."""

    def __init__(self, table: dict[str, list[tuple[int, str]] | Exception]) -> None:
        self.table = table
        self.asked: list[str] = []
        self.gate: asyncio.Future[None] | None = None

    async def __call__(self, host: str) -> tuple[list[tuple[int, str]], float | None]:
        self.asked.append(host)
        if self.gate is not None:
            await self.gate
        await asyncio.sleep(0)  # a real lookup always yields: it runs in an executor
        answer = self.table[host]
        if isinstance(answer, Exception):
            raise answer
        return answer, None


def resolver(loop: asyncio.AbstractEventLoop, dns: FakeDns, clock: Clock,
             families: Callable[[], frozenset[int]] = lambda: frozenset((V4,)), **kw: float) -> Resolver:
    return Resolver(loop, families, lookup=dns, clock=clock, **kw)  # type: ignore[arg-type]


def test_ip_literals_need_no_lookup_and_do_not_yield(loop: asyncio.AbstractEventLoop) -> None:
    dns, clock = FakeDns({}), Clock()
    r = resolver(loop, dns, clock, lambda: frozenset((V4, V6)))
    assert r.cached(("192.0.2.1", 5060)) == ("192.0.2.1", 5060)
    assert r.cached(("[2001:db8::1]", 5070)) == ("2001:db8::1", 5070)  # a URI host keeps its brackets
    coro = r.resolve(("2001:db8::1", 5060))
    with pytest.raises(StopIteration) as done:  # finished at the first step: the loop never ran
        coro.send(None)
    assert done.value.value == ("2001:db8::1", 5060)
    assert dns.asked == [] and r.lookups == 0


def test_a_name_is_looked_up_once_then_served_from_the_cache_until_its_ttl(loop: asyncio.AbstractEventLoop) -> None:
    dns, clock = FakeDns({"gw.example.net": [(V4, "192.0.2.7")]}), Clock()
    r = resolver(loop, dns, clock, ttl=60)
    assert r.cached(("gw.example.net", 5060)) is None  # not known yet: resolve() it
    assert loop.run_until_complete(r.resolve(("gw.example.net", 5060))) == ("192.0.2.7", 5060)
    assert r.cached(("gw.example.net", 5080)) == ("192.0.2.7", 5080)  # the port is the URI's
    assert loop.run_until_complete(r.resolve(("gw.example.net", 5060))) == ("192.0.2.7", 5060)
    assert dns.asked == ["gw.example.net"]
    clock.now += 60
    assert r.cached(("gw.example.net", 5060)) is None  # expired
    dns.table["gw.example.net"] = [(V4, "192.0.2.8")]  # the gateway moved
    assert loop.run_until_complete(r.resolve(("gw.example.net", 5060))) == ("192.0.2.8", 5060)
    assert dns.asked == ["gw.example.net"] * 2


def test_concurrent_lookups_of_one_name_are_one(loop: asyncio.AbstractEventLoop) -> None:
    dns, clock = FakeDns({"gw.example.net": [(V4, "192.0.2.7")]}), Clock()
    dns.gate = loop.create_future()
    r = resolver(loop, dns, clock)

    async def three() -> list[tuple[str, int]]:
        waiting = [asyncio.ensure_future(r.resolve(("gw.example.net", port))) for port in (1, 2, 3)]
        await asyncio.sleep(0.01)
        assert dns.gate is not None
        dns.gate.set_result(None)
        return list(await asyncio.gather(*waiting))

    assert loop.run_until_complete(three()) == [("192.0.2.7", 1), ("192.0.2.7", 2), ("192.0.2.7", 3)]
    assert dns.asked == ["gw.example.net"] and r.lookups == 1


@pytest.mark.parametrize("failure, status", [
    (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), 404),  # no such name
    (socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"), 503),
    (UnicodeError("label empty or too long"), 404),  # "a..b": no host name at all
])
def test_failures_carry_a_status_and_are_cached_briefly(loop: asyncio.AbstractEventLoop, failure: Exception,
                                                        status: int) -> None:
    dns, clock = FakeDns({"nx.example.net": failure}), Clock()
    r = resolver(loop, dns, clock, negative_ttl=10)
    for _ in range(2):
        with pytest.raises(ResolveError) as info:
            loop.run_until_complete(r.resolve(("nx.example.net", 5060)))
        assert info.value.status == status and "nx.example.net" in str(info.value)
    assert dns.asked == ["nx.example.net"]  # the second failure came from the cache
    assert r.cached(("nx.example.net", 5060)) is None
    clock.now += 10
    dns.table["nx.example.net"] = [(V4, "192.0.2.9")]
    assert loop.run_until_complete(r.resolve(("nx.example.net", 5060))) == ("192.0.2.9", 5060)


def test_a_slow_lookup_fails_with_503_after_the_timeout(loop: asyncio.AbstractEventLoop) -> None:
    dns, clock = FakeDns({"slow.example.net": [(V4, "192.0.2.1")]}), Clock()
    dns.gate = loop.create_future()  # never answered
    r = resolver(loop, dns, clock, timeout=0.05)
    with pytest.raises(ResolveError, match="no answer within 0.05 s") as info:
        loop.run_until_complete(r.resolve(("slow.example.net", 5060)))
    assert info.value.status == 503


def test_the_address_is_the_first_in_a_family_we_serve(loop: asyncio.AbstractEventLoop) -> None:
    dual = [(V6, "2001:db8::7"), (V4, "192.0.2.7")]  # RFC 6724 order: IPv6 first
    dns, clock = FakeDns({"gw": dual, "v6only": [(V6, "2001:db8::8")]}), Clock()
    families = {"now": frozenset((V4,))}
    r = resolver(loop, dns, clock, lambda: families["now"])
    assert loop.run_until_complete(r.resolve(("gw", 5060))) == ("192.0.2.7", 5060)
    with pytest.raises(ResolveError, match="IPv6 only and the switch listens on IPv4") as info:
        loop.run_until_complete(r.resolve(("v6only", 5060)))
    assert info.value.status == 503 and r.cached(("v6only", 5060)) is None
    with pytest.raises(ResolveError, match="listens on IPv4"):  # a literal of a family we lack
        loop.run_until_complete(r.resolve(("2001:db8::1", 5060)))
    families["now"] = frozenset((V4, V6))
    assert loop.run_until_complete(r.resolve(("gw", 5060))) == ("2001:db8::7", 5060)
    assert r.cached(("v6only", 5060)) == ("2001:db8::8", 5060)


def test_the_cache_is_bounded(loop: asyncio.AbstractEventLoop) -> None:
    names = [f"h{i}.example.net" for i in range(5)]
    dns, clock = FakeDns({n: [(V4, f"192.0.2.{i}")] for i, n in enumerate(names)}), Clock()
    r = resolver(loop, dns, clock, max_entries=3)
    for name in names:
        loop.run_until_complete(r.resolve((name, 5060)))
    assert [r.cached((n, 5060)) is not None for n in names] == [False, False, True, True, True]


def test_close_cancels_lookups_in_flight(loop: asyncio.AbstractEventLoop) -> None:
    dns, clock = FakeDns({"gw": [(V4, "192.0.2.7")]}), Clock()
    dns.gate = loop.create_future()
    r = resolver(loop, dns, clock)
    waiting = loop.create_task(r.resolve(("gw", 5060)))
    loop.run_until_complete(asyncio.sleep(0.01))
    r.close()
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(waiting)


def test_helpers() -> None:
    assert is_ip_literal("192.0.2.1") and is_ip_literal("::1") and is_ip_literal("2001:db8::1")
    assert not is_ip_literal("gw1") and not is_ip_literal("example.com") and not is_ip_literal("[::1]")
    assert not is_ip_literal("192.0.2.256") and not is_ip_literal("")
    assert is_ip_literal("fe80::1%eth0") and not is_ip_literal("192.0.2.1%eth0")  # a zone: IPv6 link-local only
    assert family_names([V6, V4]) == "IPv4 and IPv6" and family_names([V4]) == "IPv4"
