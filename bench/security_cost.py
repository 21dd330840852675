"""What the security checks cost per call: FloodGuard.allow (runs per datagram) and
AccessPolicy.check_invite (per out-of-dialog INVITE), plus the flood guard's memory.

No switch process: the pure objects on a virtual clock, timed in loops (perf_counter),
median of --runs runs. Prints a Markdown table.

    .venv/bin/python bench/security_cost.py [--runs 7] [--n 100000]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from switch.security.access import AccessPolicy, Refusal, parse_trunks, parse_users  # noqa: E402
from switch.security.digest import digest_response, parse_digest  # noqa: E402
from switch.security.ratelimit import FloodGuard  # noqa: E402
from switch.sip.message import SipRequest, parse_message  # noqa: E402


def per_call_us(body: Callable[[int], None], n: int, runs: int) -> tuple[float, float, float]:
    """body(n) makes n calls; (median, min, max) µs per call over the runs."""
    figures = []
    for _ in range(runs):
        start = time.perf_counter()
        body(n)
        figures.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(figures), min(figures), max(figures)


def invite(auth: str = "") -> SipRequest:
    lines = ["INVITE sip:1000@pbx SIP/2.0", "Via: SIP/2.0/UDP 10.0.0.7:5062;branch=z9hG4bK1",
             "From: <sip:alice@pbx>;tag=1", "To: <sip:1000@pbx>", "Call-ID: a1", "CSeq: 1 INVITE",
             "Content-Length: 0"]
    if auth:
        lines.append(f"Proxy-Authorization: {auth}")
    msg = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(msg, SipRequest)
    return msg


def flood_cases() -> dict[str, Callable[[int], None]]:
    steady = FloodGuard(density=10**9)  # never past the density: the counting path

    def allowed(n: int) -> None:
        allow = steady.allow
        for i in range(n):
            allow("198.51.100.20", i * 1e-6)

    flooded = FloodGuard(window=2.0, density=30, block_seconds=60)
    for i in range(31):
        flooded.allow("203.0.113.9", 0.0 + i * 1e-4)

    def blocked(n: int) -> None:  # the 5000 INVITEs/s source, once blocked
        allow = flooded.allow
        for i in range(n):
            allow("203.0.113.9", 1.0 + i * 1e-7)

    exempt = FloodGuard(exempt=["192.0.2.5"])

    def trunk(n: int) -> None:
        allow = exempt.allow
        for i in range(n):
            allow("192.0.2.5", i * 1e-6)

    cidr = FloodGuard(exempt=["192.0.2.0/24"])

    def trunk_cidr(n: int) -> None:
        allow = cidr.allow
        for i in range(n):
            allow("192.0.2.77", i * 1e-6)

    capped = FloodGuard(max_sources=65536)
    addresses = [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(200_000)]

    def spoofed(n: int) -> None:  # a new source address every request: table at its cap
        allow = capped.allow
        for i in range(n):
            allow(addresses[i % 200_000], 1.0)

    v6 = FloodGuard(density=10**9)

    def ipv6(n: int) -> None:
        allow = v6.allow
        for i in range(n):
            allow("2001:db8:1:2::5", i * 1e-6)

    return {"allow: source under the density": allowed, "allow: blocked source (the flood)": blocked,
            "allow: exempt trunk, single address": trunk, "allow: exempt trunk, CIDR": trunk_cidr,
            "allow: new source each request (spoofed, table full)": spoofed, "allow: IPv6 source (per /64)": ipv6}


def invite_cases() -> dict[str, Callable[[int], None]]:
    trunks = parse_trunks([{"name": "carrier1", "addresses": ["192.0.2.5"]},
                           {"name": "carrier2", "addresses": ["198.51.100.0/24"]}])
    users = parse_users({"alice": "s3cret"})
    policy = AccessPolicy(trunks, users, realm="pbx")
    nobody = AccessPolicy(trunks, {}, realm="pbx")
    plain = invite()

    def case(p: AccessPolicy, request: SipRequest, source: tuple[str, int]) -> Callable[[int], None]:
        def body(n: int) -> None:
            check = p.check_invite
            for i in range(n):
                check(request, source, 1000.0 + i * 1e-6)
        return body

    def authenticated(n: int) -> None:
        # each call: its own nonce count on one nonce, as a phone placing calls does
        challenge = policy.check_invite(plain, ("10.0.0.7", 5062), 1000.0)
        assert isinstance(challenge, Refusal)
        values = challenge.headers["proxy-authenticate"]
        assert isinstance(values, list)
        nonce = parse_digest(values[0])["nonce"]
        requests = []
        for i in range(1, n + 1):
            nc = f"{i:08x}"
            resp = digest_response("alice", "pbx", "s3cret", "INVITE", "sip:1000@pbx", nonce, "auth", nc, "c1")
            requests.append(invite(f'Digest username="alice", realm="pbx", nonce="{nonce}", uri="sip:1000@pbx", '
                                   f'response="{resp}", qop=auth, nc={nc}, cnonce="c1", algorithm=MD5'))
        check = policy.check_invite
        start = time.perf_counter()
        for request in requests:
            check(request, ("10.0.0.7", 5062), 1000.0)
        authenticated.elapsed = time.perf_counter() - start  # type: ignore[attr-defined]

    return {"check_invite: trunk, single address": case(policy, plain, ("192.0.2.5", 5060)),
            "check_invite: trunk, CIDR": case(policy, plain, ("198.51.100.40", 5060)),
            "check_invite: local (127.0.0.1)": case(policy, plain, ("127.0.0.1", 5070)),
            "check_invite: stranger, no users (403, log folded)": case(nobody, plain, ("203.0.113.9", 5060)),
            "check_invite: user, no credentials (407 challenge)": case(policy, plain, ("10.0.0.7", 5062)),
            "check_invite: user, digest checked (MD5)": authenticated}


def memory_per_source(count: int = 65536) -> float:
    tracemalloc.start()
    guard = FloodGuard(max_sources=count)
    addresses = [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(count)]
    before = tracemalloc.get_traced_memory()[0]
    for ip in addresses:
        guard.allow(ip, 1.0)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / count  # the address strings are the packets', counted apart


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--n", type=int, default=100_000)
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)  # the folded refusal lines are not what is measured
    print(f"Python {sys.version.split()[0]}, {args.runs} runs of {args.n} calls (digest: {args.n // 10})\n")
    print("| call | µs per call, median | min | max |")
    print("|---|---:|---:|---:|")
    for name, body in {**flood_cases(), **invite_cases()}.items():
        n = args.n // 10 if "digest" in name else args.n
        if name.endswith("(MD5)"):
            figures = []
            for _ in range(args.runs):
                body(n)
                figures.append(body.elapsed / n * 1e6)  # type: ignore[attr-defined]
            med, lo, hi = statistics.median(figures), min(figures), max(figures)
        else:
            med, lo, hi = per_call_us(body, n, args.runs)
        print(f"| {name} | {med:.2f} | {lo:.2f} | {hi:.2f} |")
    per_source = memory_per_source()
    print(f"\nFlood guard memory: {per_source:.0f} bytes per tracked source "
          f"(65536 sources, the default cap: {per_source * 65536 / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
