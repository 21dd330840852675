"""What SIP over TLS costs per call setup against UDP, on the real switch process.

SIPp (Debian's) has no TLS, so the caller is this script: an asyncio client keeping
`--concurrency` calls in flight, each an INVITE with SDP that the switch's task refuses
(`tests/e2e/apps/reject486`: the To names a "busy" user, so 486) and our ACK. Three ways:

- `udp`: every call over UDP, the baseline;
- `tls`: every call over one TLS connection (a trunk, or a phone's registration);
- `tls-new`: a new TLS connection (full handshake, P-256 certificate) for every call, the
  worst case: phones that do not keep their connection.

Certificates come from tests/e2e/certs.py (openssl). Prints a Markdown table: calls,
failed, achieved rate, setup time (INVITE sent -> 486 received) median and p95, and CPU
ms per call of the switch process and of its JS workers (from /proc). The client runs on
the same box, so the absolute rate is the client's as much as the switch's; the CPU per
call is the switch's own.

    .venv/bin/python bench/tls_setup.py [--calls 1000] [--concurrency 20] [--modes udp,tls,tls-new]
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from common import REPO, split_cpu

from tests.e2e.certs import make_pki, tls_args, tls_port
from tests.e2e.harness import LOCALHOST, SwitchProcess

SDP = (f"v=0\r\no=bench 1 1 IN IP4 {LOCALHOST}\r\ns=-\r\nc=IN IP4 {LOCALHOST}\r\nt=0 0\r\n"
       "m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def invite(transport: str, here: tuple[str, int], there: tuple[str, int], call_id: str) -> tuple[bytes, bytes]:
    """An INVITE to the busy user and the ACK for its 486 (same branch, RFC 3261 §17.1.1.3)."""
    branch = "z9hG4bK-" + uuid.uuid4().hex[:16]
    scheme = ";transport=tls" if transport == "TLS" else ""
    common = (f"Via: SIP/2.0/{transport} {here[0]}:{here[1]};branch={branch};rport\r\nMax-Forwards: 70\r\n"
              f"From: <sip:bench@{here[0]}>;tag=b{call_id[:8]}\r\nCall-ID: {call_id}\r\n")
    uri = f"sip:busy@{there[0]}:{there[1]}{scheme}"
    inv = (f"INVITE {uri} SIP/2.0\r\n{common}To: <sip:busy@{there[0]}>\r\nCSeq: 1 INVITE\r\n"
           f"Contact: <sip:bench@{here[0]}:{here[1]}{scheme}>\r\nContent-Type: application/sdp\r\n"
           f"Content-Length: {len(SDP)}\r\n\r\n{SDP}").encode()
    return inv, (f"ACK {uri} SIP/2.0\r\n{common}To: <sip:busy@{there[0]}>;tag={{tag}}\r\nCSeq: 1 ACK\r\n"
                 "Content-Length: 0\r\n\r\n").encode()


def final_of(message: bytes) -> tuple[int, str] | None:
    """(status, To tag) of a final response, None for a provisional."""
    head = message.split(b"\r\n\r\n", 1)[0].decode(errors="replace")
    status = int(head.split(" ", 2)[1])
    if status < 200:
        return None
    tag = head.split(";tag=", 1)[1].split("\r\n", 1)[0].split(";")[0] if ";tag=" in head else ""
    return status, tag


class Stream:
    """SIP messages framed off one TLS connection (responses: Content-Length 0 here)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def read(self) -> bytes:
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith((b"content-length:", b"l:")):
                length = int(line.split(b":", 1)[1])
        return head + (await self.reader.readexactly(length) if length else b"")


class UdpCaller(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.waiting: dict[str, asyncio.Queue[bytes]] = {}

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        call_id = next((line.split(b":", 1)[1].strip().decode() for line in data.split(b"\r\n")
                        if line.lower().startswith((b"call-id:", b"i:"))), "")
        queue = self.waiting.get(call_id)
        if queue is not None:
            queue.put_nowait(data)


async def run_mode(mode: str, there: tuple[str, int], calls: int, concurrency: int,
                   ca: Path) -> tuple[list[float], int]:
    """Setup times (s) of the calls that got their 486, and how many failed."""
    loop = asyncio.get_running_loop()
    ctx = ssl.create_default_context(cafile=str(ca))
    times: list[float] = []
    failed = 0
    statuses: dict[object, int] = {}
    udp: UdpCaller | None = None
    shared: Stream | None = None
    lock = asyncio.Lock()  # one reader at a time on the shared connection
    pending: dict[str, asyncio.Queue[bytes]] = {}
    if mode == "udp":
        transport, udp = await loop.create_datagram_endpoint(UdpCaller, local_addr=(LOCALHOST, 0))
        here = transport.get_extra_info("sockname")[:2]
    elif mode == "tls":
        shared = Stream(*await asyncio.open_connection(*there, ssl=ctx, server_hostname=there[0]))
        here = shared.writer.get_extra_info("sockname")[:2]

    async def pump_shared() -> None:  # responses on the one connection, to their call
        assert shared is not None
        while True:
            msg = await shared.read()
            call_id = next((line.split(b":", 1)[1].strip().decode() for line in msg.split(b"\r\n")
                            if line.lower().startswith(b"call-id:")), "")
            if call_id in pending:
                pending[call_id].put_nowait(msg)

    pumper = loop.create_task(pump_shared()) if shared is not None else None

    async def one_call() -> None:
        nonlocal failed
        call_id = uuid.uuid4().hex
        started = time.perf_counter()
        try:
            if mode == "tls-new":
                stream = Stream(*await asyncio.open_connection(*there, ssl=ctx, server_hostname=there[0]))
                local = stream.writer.get_extra_info("sockname")[:2]
                inv, ack = invite("TLS", local, there, call_id)
                stream.writer.write(inv)
                while (final := final_of(await asyncio.wait_for(stream.read(), 10))) is None:
                    pass
                stream.writer.write(ack.replace(b"{tag}", final[1].encode()))
                await stream.writer.drain()
                stream.writer.close()
            else:
                queue: asyncio.Queue[bytes] = asyncio.Queue()
                inv, ack = invite("UDP" if udp else "TLS", here, there, call_id)
                if udp is not None:
                    udp.waiting[call_id] = queue
                    transport.sendto(inv, there)
                else:
                    assert shared is not None
                    pending[call_id] = queue
                    async with lock:
                        shared.writer.write(inv)
                while (final := final_of(await asyncio.wait_for(queue.get(), 10))) is None:
                    pass
                message = ack.replace(b"{tag}", final[1].encode())
                if udp is not None:
                    transport.sendto(message, there)
                    udp.waiting.pop(call_id, None)
                else:
                    assert shared is not None
                    shared.writer.write(message)
                    pending.pop(call_id, None)
            if final[0] != 486:
                failed += 1
                statuses[final[0]] = statuses.get(final[0], 0) + 1
                return
            times.append(time.perf_counter() - started)
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
            failed += 1
            statuses[type(exc).__name__] = statuses.get(type(exc).__name__, 0) + 1

    semaphore = asyncio.Semaphore(concurrency)

    async def limited() -> None:
        async with semaphore:
            await one_call()

    await asyncio.gather(*(limited() for _ in range(calls)))
    if pumper is not None:
        pumper.cancel()
    if shared is not None:
        shared.writer.close()
    if udp is not None:
        transport.close()
    if statuses:
        print(f"({mode}: failed {statuses})", file=sys.stderr)
    return times, failed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--modes", default="udp,tls,tls-new")
    args = ap.parse_args()
    pki = make_pki(Path(tempfile.mkdtemp(prefix="bench-pki-")))
    sw = SwitchProcess(REPO / "tests" / "e2e" / "apps" / "reject486",
                       ["--max-calls", "20000", "--js-workers", "1", *tls_args(pki)], log_level="warning").start()
    print("| mode | calls | failed | calls/s | setup median ms | setup p95 ms | switch CPU ms/call | workers CPU ms/call |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    try:
        for mode in args.modes.split(","):
            there = sw.sip_addr if mode == "udp" else (LOCALHOST, tls_port(sw))
            before = split_cpu(sw.proc.pid)  # type: ignore[union-attr]
            t0 = time.perf_counter()
            times, failed = asyncio.run(run_mode(mode, there, args.calls, args.concurrency, pki.ca))
            wall = time.perf_counter() - t0
            after = split_cpu(sw.proc.pid)  # type: ignore[union-attr]
            times.sort()
            p95 = times[int(len(times) * 0.95)] if times else float("nan")
            print(f"| {mode} | {args.calls} | {failed} | {args.calls / wall:.0f} | "
                  f"{statistics.median(times) * 1000:.1f} | {p95 * 1000:.1f} | "
                  f"{(after['switch'] - before['switch']) / args.calls * 1000:.2f} | "
                  f"{(after['workers'] - before['workers']) / args.calls * 1000:.2f} |")
    finally:
        sw.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
