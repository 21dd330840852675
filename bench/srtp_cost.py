"""What SRTP costs per packet: media/srtp.py's protect (every RTP packet a leg sends) and
unprotect (every one it receives), per suite, on a G.711 packet (12-byte header + 160
bytes, 20 ms); SRTCP for a typical compound report; plain RTP's packetizing beside it for scale.

No switch process, no sockets: the calls a MediaSession makes, timed in loops
(perf_counter), median of --runs runs. Prints a Markdown table.

    .venv/bin/python bench/srtp_cost.py [--runs 7] [--n 20000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from media import sdes  # noqa: E402
from media.rtcp import RtcpSession  # noqa: E402
from media.rtp import RtpSender  # noqa: E402
from media.srtp import SrtpContext  # noqa: E402

PAYLOAD = b"\xd5" * 160  # 20 ms of G.711


def per_packet_us(prepare: Callable[[int], Callable[[], None]], n: int, runs: int) -> tuple[float, float, float]:
    """prepare(n) returns a body that handles n packets (set up outside the timing);
    (median, min, max) µs per packet over the runs."""
    figures = []
    for _ in range(runs):
        body = prepare(n)
        start = time.perf_counter()
        body()
        figures.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(figures), min(figures), max(figures)


def pair(suite: str) -> tuple[SrtpContext, SrtpContext]:
    a, b = sdes.new_key(suite), sdes.new_key(suite)
    return SrtpContext(sdes.SrtpKeys(suite, a, b)), SrtpContext(sdes.SrtpKeys(suite, b, a))


def protect(suite: str) -> Callable[[int], Callable[[], None]]:
    def prepare(n: int) -> Callable[[], None]:
        us, _ = pair(suite)
        tx = RtpSender()
        packets = [tx.packet(PAYLOAD, 160, 0) for _ in range(n)]

        def body() -> None:
            p = us.protect_rtp
            for pkt in packets:
                p(pkt)
        return body
    return prepare


def unprotect(suite: str) -> Callable[[int], Callable[[], None]]:
    def prepare(n: int) -> Callable[[], None]:
        us, peer = pair(suite)
        tx = RtpSender()
        wire = [us.protect_rtp(tx.packet(PAYLOAD, 160, 0)) for _ in range(n)]

        def body() -> None:
            u = peer.unprotect_rtp
            for pkt in wire:
                u(pkt)
        return body
    return prepare


def rtcp_round_trip(suite: str) -> Callable[[int], Callable[[], None]]:
    def prepare(n: int) -> Callable[[], None]:
        us, peer = pair(suite)
        session = RtcpSession(0x1234, 0.0)
        report = session.report(1.0, 50, 8000, 8000)  # SR + SDES CNAME, what a leg sends

        def body() -> None:
            for _ in range(n):
                peer.unprotect_rtcp(us.protect_rtcp(report))
        return body
    return prepare


def plain_packetize(n: int) -> Callable[[], None]:
    tx = RtpSender()

    def body() -> None:
        packet = tx.packet
        for _ in range(n):
            packet(PAYLOAD, 160, 0)
    return body


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--n", type=int, default=20000, help="packets per run")
    args = ap.parse_args()
    print(f"{args.runs} runs of {args.n} packets; µs per packet, median (min-max)\n")
    print("| suite | protect RTP (send) | unprotect RTP (receive) | both, per call-second (50 pkt/s each way) "
          "| SRTCP protect + unprotect |")
    print("|---|---:|---:|---:|---:|")
    for suite in sdes.OFFERED_SUITES:
        p = per_packet_us(protect(suite), args.n, args.runs)
        u = per_packet_us(unprotect(suite), args.n, args.runs)
        r = per_packet_us(rtcp_round_trip(suite), max(args.n // 10, 100), args.runs)
        print(f"| {suite} | {p[0]:.2f} ({p[1]:.2f}-{p[2]:.2f}) | {u[0]:.2f} ({u[1]:.2f}-{u[2]:.2f}) "
              f"| {50 * (p[0] + u[0]) / 1000:.3f} ms | {r[0]:.2f} |")
    plain = per_packet_us(plain_packetize, args.n, args.runs)
    print(f"\nFor scale: building the plain RTP packet (RtpSender.packet) {plain[0]:.2f} µs "
          f"({plain[1]:.2f}-{plain[2]:.2f}).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
