"""The floor: the least CPU a Python process can spend per call of setup_rate.py's load.

A stand-in for the switch that does only what cannot be left out: uvloop, one UDP SIP
socket, canned responses (100, then 200 with SDP, 200 to BYE; header lines copied, no
parser, no transactions, no retransmissions), an RTP socket opened and closed per call
as the switch does, 50 packets/s per answered call from one 20 ms timer for all of them
(header + payload + sendto), and with ``--worker`` a second process standing in for the
JS worker that exchanges the switch's per-call messages over a socket pair as JSON lines
(start -> verb -> reply -> verb -> reply, then leg-ended -> ended: AcceptCall and
PlayFile as in ``bench/apps/answer_play``) and runs no JS. The same SIPp load as
``setup_rate.py`` (built-in ``uac``, --hold-ms calls), CPU per call of each process.

What it tells: whatever the switch does beyond this (parsing and checking SIP, the
transaction and dialog layers, offer/answer, the call and task bookkeeping, QuickJS)
is the part our code can shrink; this part it cannot, in Python on this host.

    .venv/bin/python bench/floor.py --rates 100 --duration 15 --runs 3 [--worker]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ProcTimes, median, own_times, sipp_load  # noqa: E402

PAYLOAD = bytes(range(256)) * 63  # 2 s of "audio" to slice 160-byte frames from
HEADER = struct.Struct("!BBHII")


class Floor(asyncio.DatagramProtocol):
    """The SIP and RTP side."""

    def __init__(self, loop: asyncio.AbstractEventLoop, worker: socket.socket | None) -> None:
        self.loop = loop
        self.transport: Any = None
        self.calls: dict[bytes, dict[str, Any]] = {}
        self.streams: dict[bytes, list[Any]] = {}  # call-id -> [transport, dest, seq, ts, offset]
        self.port = 30000
        self.ticking = False
        self.worker: Any = None
        self.worker_buffer = b""
        if worker is not None:
            loop.create_task(self._connect_worker(worker))

    async def _connect_worker(self, sock: socket.socket) -> None:
        self.worker, _ = await self.loop.connect_accepted_socket(lambda: _Lines(self.on_worker), sock)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        method = lines[0].split(b" ", 1)[0]
        keep = [line for line in lines[1:] if line[:4].lower() in (b"via:", b"from", b"to: ", b"call", b"cseq")]
        call_id = next(line.split(b":", 1)[1].strip() for line in keep if line[:4].lower() == b"call")
        if method == b"INVITE":
            self.reply(b"100 Trying", keep, addr)
            port = next(int(line.split()[1]) for line in body.split(b"\r\n") if line.startswith(b"m=audio"))
            self.calls[call_id] = {"keep": keep, "addr": addr, "dest": ("127.0.0.1", port)}
            self.loop.create_task(self.open_rtp(call_id))
        elif method == b"BYE":
            self.reply(b"200 OK", keep, addr)
            stream = self.streams.pop(call_id, None)
            if stream is not None:
                stream[0].close()
            if self.worker is not None:
                self.worker.write(json.dumps(["leg-ended", call_id.decode()]).encode() + b"\n")

    def reply(self, status: bytes, keep: list[bytes], addr: Any, sdp: bytes = b"") -> None:
        lines = [b"SIP/2.0 " + status, *(line + b";tag=floor" if line[:3].lower() == b"to:" and sdp else line
                                         for line in keep)]
        if sdp:
            lines += [b"Contact: <sip:floor@127.0.0.1>", b"Content-Type: application/sdp"]
        lines.append(b"Content-Length: %d" % len(sdp))
        self.transport.sendto(b"\r\n".join(lines) + b"\r\n\r\n" + sdp, addr)

    async def open_rtp(self, call_id: bytes) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        while True:
            self.port = 30000 + (self.port - 29998) % 9000
            try:
                sock.bind(("127.0.0.1", self.port))
                break
            except OSError:
                continue
        transport, _ = await self.loop.create_datagram_endpoint(asyncio.DatagramProtocol, sock=sock)
        call = self.calls[call_id]
        call["rtp"] = (transport, self.port)
        if self.worker is None:
            self.answer(call_id)
        else:
            self.worker.write(json.dumps(["start", call_id.decode()]).encode() + b"\n")

    def on_worker(self, message: list[Any]) -> None:
        call_id = message[1].encode()
        if message[0] == "verb":  # AcceptCall, then PlayFile
            if message[2] == "AcceptCall":
                self.answer(call_id)
            self.worker.write(json.dumps(["reply", message[1], True, None]).encode() + b"\n")

    def answer(self, call_id: bytes) -> None:
        call = self.calls.pop(call_id)
        transport, port = call["rtp"]
        sdp = (b"v=0\r\no=floor 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
               b"m=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n" % port)
        self.reply(b"200 OK", call["keep"], call["addr"], sdp)
        self.streams[call_id] = [transport, call["dest"], 0, 0, 0]
        if not self.ticking:
            self.ticking = True
            self.loop.call_later(0.02, self.tick)

    def tick(self) -> None:
        pack = HEADER.pack
        for stream in self.streams.values():
            transport, dest, seq, ts, offset = stream
            transport.sendto(pack(0x80, 0, seq, ts, 0x12345678) + PAYLOAD[offset:offset + 160], dest)
            stream[2] = (seq + 1) & 0xFFFF
            stream[3] = (ts + 160) & 0xFFFFFFFF
            stream[4] = (offset + 160) % 16000
        self.loop.call_later(0.02, self.tick)


class _Lines(asyncio.Protocol):
    """JSON lines, as switch/tasks/wire.py frames them."""

    def __init__(self, on_message: Any) -> None:
        self.on_message = on_message
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        *lines, self.buffer = (self.buffer + data).split(b"\n")
        for line in lines:
            self.on_message(json.loads(line))


async def worker_main(fd: int) -> None:
    """The stand-in JS worker: answers the switch's messages as answer_play's task would."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    transport: Any = None
    verbs: dict[str, int] = {}

    def on_message(message: list[Any]) -> None:
        kind, call = message[0], message[1]
        if kind == "start":
            verbs[call] = 1
            transport.write(json.dumps(["verb", call, "AcceptCall", []]).encode() + b"\n")
        elif kind == "reply" and verbs.get(call) == 1:
            verbs[call] = 2
            transport.write(json.dumps(["verb", call, "PlayFile", ["tone.wav", True]]).encode() + b"\n")
        elif kind == "leg-ended":
            verbs.pop(call, None)
            transport.write(json.dumps(["ended", call, None]).encode() + b"\n")

    transport, _ = await loop.connect_accepted_socket(lambda: _Lines(on_message), socket.socket(fileno=fd))
    await done


async def switch_main(port: int, worker_fd: int | None, ready: int) -> None:
    loop = asyncio.get_running_loop()
    worker = socket.socket(fileno=worker_fd) if worker_fd is not None else None
    await loop.create_datagram_endpoint(lambda: Floor(loop, worker), local_addr=("127.0.0.1", port))
    os.write(ready, b"ready\n")
    await loop.create_future()


def run_child(role: str, *args: str, pass_fds: tuple[int, ...] = ()) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, __file__, "--role", role, *args], pass_fds=pass_fds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="100")
    ap.add_argument("--duration", type=float, default=15.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--hold-ms", type=int, default=1000)
    ap.add_argument("--worker", action="store_true", help="with the stand-in JS worker process")
    ap.add_argument("--role", choices=("switch", "worker"), help=argparse.SUPPRESS)
    ap.add_argument("--fd", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--ready", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    import uvloop

    if args.role == "worker":
        uvloop.run(worker_main(args.fd))
        return
    if args.role == "switch":
        uvloop.run(switch_main(args.port, args.fd, args.ready))
        return
    from tests.e2e.harness import free_udp_port

    print("| rate (calls/s) | worker | achieved | failed | CPU ms/call: switch + worker = total | "
          "switch user + system ms | wake-ups per call: switch, worker |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for rate in (float(r) for r in args.rates.split(",")):
        calls = int(rate * args.duration)
        rows = []
        for _ in range(args.runs):
            port = free_udp_port()
            ready_r, ready_w = os.pipe()
            kids: list[subprocess.Popen[bytes]] = []
            extra: list[str] = []
            fds: tuple[int, ...] = (ready_w,)
            if args.worker:
                ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                kids.append(run_child("worker", "--fd", str(theirs.fileno()), pass_fds=(theirs.fileno(),)))
                theirs.close()
                extra = ["--fd", str(ours.fileno())]
                fds += (ours.fileno(),)
            switch = run_child("switch", "--port", str(port), "--ready", str(ready_w), *extra, pass_fds=fds)
            if args.worker:
                ours.close()
            os.close(ready_w)
            os.read(ready_r, 16)
            os.close(ready_r)
            before = [own_times(p.pid) for p in [switch, *kids]]
            res = sipp_load(f"127.0.0.1:{port}", rate=rate, calls=calls, hold_ms=args.hold_ms,
                            limit=int(rate * 10) + 100, timeout=args.duration * 3 + 30)
            after = [own_times(p.pid) for p in [switch, *kids]]
            for p in [switch, *kids]:
                p.kill()
                p.wait()
            n = max(1, res.successful)
            delta = [a - b for a, b in zip(after, before)]
            rows.append((res, n, delta[0], delta[1] if len(delta) > 1 else ProcTimes()))
        def m(f: Any, rows: list[Any] = rows) -> float:
            return median([f(r) for r in rows])

        lost = [r[0].failed + calls - r[0].successful - r[0].failed for r in rows]
        print(f"| {rate:.0f} | {'yes' if args.worker else 'no'} | "
              f"{m(lambda r: r[0].successful / max(0.1, r[0].seconds - args.hold_ms / 1000)):.0f} | "
              f"{median(lost):.0f} | "
              f"{m(lambda r: 1000 * (r[2].user + r[2].system) / r[1]):.2f} + "
              f"{m(lambda r: 1000 * (r[3].user + r[3].system) / r[1]):.2f} = "
              f"{m(lambda r: 1000 * (r[2].user + r[2].system + r[3].user + r[3].system) / r[1]):.2f} | "
              f"{m(lambda r: 1000 * r[2].user / r[1]):.2f} + {m(lambda r: 1000 * r[2].system / r[1]):.2f} | "
              f"{m(lambda r: r[2].voluntary / r[1]):.1f}, {m(lambda r: r[3].voluntary / r[1]):.1f} |", flush=True)


if __name__ == "__main__":
    main()
