"""The flood guard (pike-like), the auth-failure brake and the security log, on virtual time."""

from __future__ import annotations

import logging

import pytest

from switch.security.log import SecurityLog, clean
from switch.security.ratelimit import AuthFailures, FloodGuard, source_key

FLOODER = "203.0.113.9"
OTHER = "198.51.100.20"


def send(guard: FloodGuard, ip: str, count: int, start: float, spacing: float = 0.001) -> list[bool]:
    return [guard.allow(ip, start + i * spacing) for i in range(count)]


def test_past_the_density_a_source_is_blocked_and_others_are_not(security_lines: list[str]) -> None:
    guard = FloodGuard(window=2.0, density=30, block_seconds=60)
    assert send(guard, FLOODER, 30, 0.0) == [True] * 30
    assert send(guard, FLOODER, 5, 0.1) == [False] * 5
    assert guard.allow(OTHER, 0.2) and guard.blocked(FLOODER, 0.2) and not guard.blocked(OTHER, 0.2)
    assert security_lines == [f"SECURITY blocked source={FLOODER} reason=flood requests=31 window=2s block=60s"]
    assert guard.blocks == 1


def test_a_new_window_starts_the_count_again() -> None:
    guard = FloodGuard(window=2.0, density=30, block_seconds=60)
    for second in range(0, 20, 2):  # 30 per window, every window: never blocked
        assert all(send(guard, FLOODER, 30, float(second), spacing=0.05))


def test_the_block_ends_after_its_time_unless_the_source_keeps_flooding(security_lines: list[str]) -> None:
    guard = FloodGuard(window=2.0, density=10, block_seconds=60)
    send(guard, FLOODER, 11, 0.0)
    assert not guard.allow(FLOODER, 59.0)  # a trickle inside the block: still dropped, not renewed
    assert guard.allow(FLOODER, 61.0)  # over: served again
    assert security_lines[-1] == f"SECURITY unblocked source={FLOODER} reason=flood dropped=2"
    send(guard, FLOODER, 11, 70.0)  # blocked again at 70
    send(guard, FLOODER, 20, 120.0)  # still flooding at 120: renewed to 180
    assert not guard.allow(FLOODER, 170.0)
    assert guard.allow(FLOODER, 181.0)


def test_exempt_addresses_and_networks_are_never_counted() -> None:
    guard = FloodGuard(density=5, exempt=["192.0.2.7", "10.1.0.0/16", "::1"])
    assert all(send(guard, "192.0.2.7", 100, 0.0))
    assert all(send(guard, "10.1.2.3", 100, 0.0))
    assert all(send(guard, "::1", 100, 0.0))
    assert all(send(guard, "::ffff:192.0.2.7", 100, 0.0))  # a dual-stack socket's form of it
    assert not all(send(guard, "10.2.0.1", 100, 0.0))
    assert FloodGuard(density=0).allow(FLOODER, 0.0)  # density 0: the guard is off
    assert all(send(FloodGuard(density=0), FLOODER, 1000, 0.0))


def test_idle_sources_expire_and_the_table_is_capped() -> None:
    guard = FloodGuard(window=2.0, density=30, block_seconds=10, max_sources=100)
    for i in range(100):
        guard.allow(f"10.0.{i // 256}.{i % 256}", 0.0)
    assert len(guard) == 100
    for i in range(500):  # a spoofed-source flood: memory stays at the cap
        guard.allow(f"172.16.{i // 256}.{i % 256}", 1.0)
    assert len(guard) == 100
    guard.allow("192.0.2.1", 100.0)  # long after: each newcomer clears idle ones as it arrives
    for i in range(20):
        guard.allow(f"192.0.3.{i}", 100.0)
    assert len(guard) < 100


def test_a_blocked_source_is_not_expired_while_blocked() -> None:
    guard = FloodGuard(window=2.0, density=3, block_seconds=60, max_sources=1000)
    send(guard, FLOODER, 4, 0.0)
    for i in range(50):  # newcomers 30 s later try to expire old entries
        guard.allow(f"10.9.0.{i}", 30.0)
    assert guard.blocked(FLOODER, 30.0) and not guard.allow(FLOODER, 30.0)


def test_ipv6_is_counted_per_64_and_mapped_ipv4_as_ipv4() -> None:
    assert source_key("2001:db8:1:2::5") == source_key("2001:db8:1:2:aaaa::9") == "2001:db8:1:2::/64"
    assert source_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert source_key("192.0.2.1") == "192.0.2.1"
    guard = FloodGuard(density=10)
    results = [guard.allow(f"2001:db8:1:2::{i:x}", 0.0) for i in range(1, 20)]  # a new address per request
    assert results[:10] == [True] * 10 and not any(results[10:])


def test_auth_failures_by_source_block_with_403_for_the_block_time(security_lines: list[str]) -> None:
    failures = AuthFailures(limit=3, block_seconds=600)
    for i in range(3):
        assert not failures.blocked(FLOODER, f"user{i}", float(i))
        failures.failed(FLOODER, f"user{i}", "REGISTER", float(i))
    assert failures.blocked(FLOODER, "anyone", 3.0)
    assert not failures.blocked(OTHER, "anyone", 3.0)
    assert not failures.blocked(FLOODER, "anyone", 603.0)
    assert security_lines[:3] == [f"SECURITY auth-failed source={FLOODER} user=user{i} method=REGISTER"
                                  for i in range(3)]
    assert security_lines[3] == f"SECURITY blocked source={FLOODER} reason=auth-failures failures=3 method=REGISTER block=600s"


def test_auth_failures_by_user_catch_guessing_from_many_sources() -> None:
    failures = AuthFailures(limit=3, block_seconds=600)
    for i in range(3):
        failures.failed(f"192.0.2.{i}", "alice", "INVITE", 10.0 + i)
    assert failures.blocked("192.0.2.200", "alice", 20.0)  # any source, for alice
    assert not failures.blocked("192.0.2.200", "bob", 20.0)
    # unknown names are counted the same way: the block tells nothing about which exist
    for i in range(3):
        failures.failed(f"192.0.2.{i}", "nosuchuser", "INVITE", 10.0 + i)
    assert failures.blocked("192.0.2.200", "nosuchuser", 20.0)


def test_a_pair_that_authenticated_before_passes_blocks_until_it_fails() -> None:
    failures = AuthFailures(limit=3, block_seconds=600)
    failures.succeeded("192.0.2.50", "alice")  # alice's phone
    for i in range(3):  # a stranger guesses alice's password; a bad phone on alice's NAT fails as bob
        failures.failed(f"203.0.113.{i}", "alice", "REGISTER", float(i))
        failures.failed("192.0.2.50", "bob", "REGISTER", float(i))
    assert failures.blocked("203.0.113.77", "alice", 5.0) and failures.blocked("192.0.2.50", "carol", 5.0)
    assert not failures.blocked("192.0.2.50", "alice", 5.0)  # her phone still registers and calls
    failures.failed("192.0.2.50", "alice", "REGISTER", 6.0)  # a failure from the pair itself
    assert failures.blocked("192.0.2.50", "alice", 7.0)


def test_the_counting_window_restarts_but_a_block_under_way_stays() -> None:
    failures = AuthFailures(limit=3, block_seconds=100)
    failures.failed(FLOODER, "a", "INVITE", 0.0)
    failures.failed(FLOODER, "b", "INVITE", 50.0)
    failures.failed(FLOODER, "c", "INVITE", 150.0)  # the first two are past the window
    assert not failures.blocked(FLOODER, "d", 151.0)
    failures.failed(FLOODER, "d", "INVITE", 160.0)
    failures.failed(FLOODER, "e", "INVITE", 170.0)  # 3 within 100 s: blocked until 270
    failures.succeeded(FLOODER, "f")
    failures.failed(FLOODER, "f", "INVITE", 260.0)  # a failure in a new window...
    assert failures.blocked(FLOODER, "g", 265.0)  # ...does not lift the block


def test_auth_failure_tables_are_bounded_and_limit_zero_is_off() -> None:
    failures = AuthFailures(limit=3, max_entries=50)
    for i in range(500):
        failures.failed(f"10.0.{i // 256}.{i % 256}", f"name{i}", "REGISTER", 0.0)
    assert len(failures._by_source) <= 50 and len(failures._by_user) <= 50
    off = AuthFailures(limit=0)
    for _ in range(10):
        off.failed(FLOODER, "alice", "REGISTER", 0.0)
    assert not off.blocked(FLOODER, "alice", 1.0)


def test_log_values_from_the_message_cannot_forge_fields(security_lines: list[str]) -> None:
    assert clean("x source=8.8.8.8\nSECURITY") == "x?source?8.8.8.8?SECURITY"
    assert clean("") == "-" and len(clean("a" * 500)) == 64
    SecurityLog().event("auth-failed", FLOODER, 0.0, user='alice" source=8.8.8.8', method="INVITE")
    assert security_lines == [f"SECURITY auth-failed source={FLOODER} user=alice??source?8.8.8.8 method=INVITE"]


def test_repeats_are_folded_into_one_line_per_interval(security_lines: list[str]) -> None:
    log = SecurityLog()
    for i in range(100):
        log.event("refused", FLOODER, i * 0.05, fold=True, reason="not-a-trunk-or-user", method="INVITE")
    log.event("refused", OTHER, 1.0, fold=True, reason="not-a-trunk-or-user", method="INVITE")
    log.event("refused", FLOODER, 10.5, fold=True, reason="not-a-trunk-or-user", method="INVITE")
    assert security_lines == [
        f"SECURITY refused source={FLOODER} reason=not-a-trunk-or-user method=INVITE",
        f"SECURITY refused source={OTHER} reason=not-a-trunk-or-user method=INVITE",
        f"SECURITY refused source={FLOODER} reason=not-a-trunk-or-user method=INVITE repeated=99",
    ]


def test_json_lines_carry_the_fields(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="switch.security")
    SecurityLog().event("refused", FLOODER, 0.0, reason="not-a-trunk-or-user")
    [record] = caplog.records
    assert record.security == {"event": "refused", "source": FLOODER, "reason": "not-a-trunk-or-user"}  # type: ignore[attr-defined]


def test_the_documented_fail2ban_filter_matches_the_text_log_and_nothing_forged() -> None:
    import re

    from switch import logs
    from switch.security import log as security_log

    [failregex] = [line.split("=", 1)[1].strip() for line in (security_log.__doc__ or "").splitlines()
                   if line.strip().startswith("failregex")]
    pattern = re.compile(failregex.replace("<HOST>", r"(?P<host>[0-9a-fA-F.:]+)"))
    lines: list[str] = []

    class Format(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(logs.TextFormatter().format(record))

    logger = logging.getLogger("switch.security")
    handler = Format()
    logger.addHandler(handler)
    try:
        SecurityLog().event("refused", FLOODER, 0.0, reason="not-a-trunk-or-user", method="INVITE")
        SecurityLog().event("auth-failed", OTHER, 0.0, user="x source=8.8.8.8", method="REGISTER")
        SecurityLog().event("dial-refused", "192.0.2.1", 0.0, reason="no-dial-out")  # not a ban reason
        logging.getLogger("switch.security.access").warning("SECURITY refused source=8.8.8.8 reason=x")
    finally:
        logger.removeHandler(handler)
    # As fail2ban sees them: the whole line, the line with its timestamp cut out (a log
    # file), and as the journal shows it.
    for seen in (lines, [line.split(" ", 1)[1] for line in lines], [f"pbx softswitch[812]: {ln}" for ln in lines]):
        hosts = [m.group("host") for line in seen if (m := pattern.search(line))]
        assert hosts == [FLOODER, OTHER], seen
