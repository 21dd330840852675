"""A pjsua2 SIP phone for the end-to-end tests: a second, independent SIP/RTP stack.

pjsua2 allows one `Endpoint` per process and tears down badly inside an interpreter that
keeps running, so the phone lives in a subprocess (`python tests/e2e/phone.py ...`) and
talks JSON lines: commands on its stdin, events on its stdout. `Phone` is the test side.

    with Phone(tone_wav=tone, auto_answer_ms=300) as ph:       # a callee on ph.port
        ...dial it...
        ph.wait_event("confirmed"); ph.wait_event("disconnected")
        ph.digits(), ph.recorded_dbfs()
    with Phone(tone_wav=tone) as ph:                           # a caller
        ph.call("sip:1000@127.0.0.1:5070")
    with Phone(tone_wav=tone, srtp=True) as ph:                # SDES-SRTP only (RTP/SAVP)
        ph.call(...); ph.wait_event("media")["srtp"]           # e.g. "AES_CM_128_HMAC_SHA1_80"
    with Phone(tls=PhoneTls(ca=pki.ca)) as ph:                 # SIP over TLS too, on ph.tls_port
        ph.call("sip:1000@127.0.0.1:5061;transport=tls")       # (the switch's certificate verified)

Events (one JSON object a line, "event" plus fields):
  ready {port, tls_port}             the account is up, SIP on 127.0.0.1:port (UDP), and TLS
                                     on tls_port when asked for (else null)
  incoming {call_id, from}           an INVITE arrived (a callee answers after auto_answer_ms)
  state {call_id, state, code, reason}   every call state change (CALLING, EARLY, CONNECTING,
                                     CONFIRMED, DISCONNECTED) ; "confirmed"/"disconnected"
                                     are also sent as their own events, the latter with
                                     {code, reason, duration}
  media {call_id, codec, remote, srtp}  audio became active (codec name, remote RTP address;
                                     srtp: the crypto suite pjmedia's SRTP runs, "" for plain)
  dtmf {call_id, digit, method}      a digit was received (onDtmfDigit)
  recorded {call_id, dbfs, seconds}  after the call: level of what the phone heard
  error {message}

Facts this relies on (DESIGN §4): PJSUA_MAX_CALLS is 4 in the PyPI build, null audio
device, `sndAutoCloseTime = -1`, Python keeps the Call objects alive until DISCONNECTED.
Every pjsua2 call happens on the main thread (threadCnt 0, mainThreadOnly, the main loop
polls libHandleEvents), so no other thread needs libRegisterThread: the stdin reader only
queues commands.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Callable

import numpy as np

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class PhoneTls:
    """A TLS transport for the phone (pjsip's, OpenSSL): ``ca`` set: the peer's
    certificate is verified against it (pjsip checks the chain, not the name);
    ``cert``/``key``: what the phone presents when it is called over TLS."""

    ca: Path | str | None = None
    cert: Path | str | None = None
    key: Path | str | None = None

    def args(self) -> list[str]:
        out = ["--tls"]
        for flag, value in (("--tls-ca", self.ca), ("--tls-cert", self.cert), ("--tls-key", self.key)):
            if value:
                out += [flag, str(value)]
        return out


# --------------------------------------------------------------------------- the test side


class Phone:
    """Start a phone subprocess; read its events; send it commands."""

    def __init__(self, *, port: int = 0, tone_wav: Path | str | None = None,
                 auto_answer_ms: int | None = 200, answer_code: int = 200,
                 workdir: Path | str | None = None, log_level: int = 5, srtp: bool = False,
                 tls: PhoneTls | None = None) -> None:  # fmt: skip
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="phone-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "pjsua.log"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--port", str(port),
               "--record-dir", str(self.workdir), "--log-file", str(self.log_path),
               "--log-level", str(log_level), "--answer-code", str(answer_code)]  # fmt: skip
        if tone_wav:
            cmd += ["--play", str(tone_wav)]
        if auto_answer_ms is not None:
            cmd += ["--auto-answer-ms", str(auto_answer_ms)]
        if srtp:
            cmd += ["--srtp"]
        if tls is not None:
            cmd += tls.args()
        self.cmd = cmd
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self.stderr_path = self.workdir / "phone.stderr"
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._stderr, text=True, bufsize=1,
                                     start_new_session=True)  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        ready = self.wait_event("ready", timeout=15)
        self.port = int(ready["port"])
        self.tls_port: int | None = ready.get("tls_port")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            ev["t"] = time.time()
            with self._cond:
                self.events.append(ev)
                self._cond.notify_all()

    @property
    def uri(self) -> str:
        return f"sip:phone@127.0.0.1:{self.port}"

    def log_text(self) -> str:
        """pjsip's log: every message it sent or received, with the transport (\"TLS\")."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_event(self, name: str, timeout: float = 10.0, n: int = 1,
                   pred: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:  # fmt: skip
        """The n-th event called `name` (matching `pred`); AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [e for e in self.events if e["event"] == name and (pred is None or pred(e))]
                if len(found) >= n:
                    return found[n - 1]
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"phone: no {name!r} event #{n} in {timeout}s\n" + self.describe())
                self._cond.wait(min(left, 0.1))

    def named(self, name: str) -> list[dict[str, Any]]:
        with self._cond:
            return [e for e in self.events if e["event"] == name]

    def send(self, **cmd: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def call(self, uri: str) -> None:
        self.send(cmd="call", uri=uri)

    def hangup(self) -> None:
        self.send(cmd="hangup")

    def dtmf(self, digits: str) -> None:
        self.send(cmd="dtmf", digits=digits)

    def digits(self) -> str:
        return "".join(e["digit"] for e in self.named("dtmf"))

    def recorded_dbfs(self, timeout: float = 5.0) -> float:
        return float(self.wait_event("recorded", timeout)["dbfs"])

    def describe(self) -> str:
        try:
            log = self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            log = ""
        err = self.stderr_path.read_text(errors="replace")[-2000:] if self.stderr_path.exists() else ""
        evs = "\n".join(json.dumps(e) for e in self.events[-40:])
        return f"--- phone events ---\n{evs}\n--- phone stderr ---\n{err}\n--- pjsua log tail ---\n{log}"

    def close(self, timeout: float = 5.0) -> int:
        if self.proc.poll() is None:
            try:
                self.send(cmd="quit")
            except (BrokenPipeError, OSError):
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._stderr.close()
        return self.proc.returncode

    def __enter__(self) -> Phone:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- the phone process


def emit(event: str, **fields: object) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def wav_dbfs(path: Path, rate: int = 8000) -> tuple[float, float]:
    """(level in dBFS, seconds) of what a pjsua2 recorder has written so far (16-bit mono
    at the bridge's 8 kHz); the first 0.2 s are skipped. The file is read raw from its
    data chunk: pjmedia fixes the WAV sizes only when the recorder is destroyed, which
    the Python binding does not do on `del`."""
    raw = path.read_bytes()
    at = raw.find(b"data")
    pcm = np.frombuffer(raw[at + 8:] if at >= 0 else raw[44:], dtype="<i2")[int(0.2 * rate):]
    if len(pcm) == 0:
        return float("-inf"), 0.0
    rms = float(np.sqrt(np.mean(np.square(pcm.astype(np.float64)))))
    return (20 * np.log10(rms / 32768.0) if rms > 0 else float("-inf")), len(pcm) / rate


def srtp_suite(dump: str) -> str:
    """The suite of pjsua's call dump's "SRTP status: Active Crypto-suite: X" line, or ""."""
    m = re.search(r"SRTP status:\s*Active\s+Crypto-suite:\s*(\S+)", dump)
    return m.group(1) if m else ""


def run_phone(args: Any) -> int:  # noqa: C901 (one flat event loop reads best here)
    import pjsua2 as pj

    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.maxCalls = 4
    cfg.uaConfig.threadCnt = 0  # every callback on our thread, from libHandleEvents
    cfg.uaConfig.mainThreadOnly = True
    cfg.uaConfig.userAgent = "e2e-pjsua2-phone"
    cfg.logConfig.level = args.log_level
    cfg.logConfig.consoleLevel = 0
    cfg.logConfig.filename = args.log_file
    cfg.medConfig.sndAutoCloseTime = -1
    cfg.medConfig.clockRate = 8000
    cfg.medConfig.sndClockRate = 8000
    cfg.medConfig.channelCount = 1
    cfg.medConfig.ecTailLen = 0  # no echo canceller: it would bend the levels we measure
    cfg.medConfig.noVad = True
    ep.libInit(cfg)
    tcfg = pj.TransportConfig()
    tcfg.port = args.port
    tcfg.boundAddress = "127.0.0.1"
    tcfg.publicAddress = "127.0.0.1"
    tid = ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
    port = ep.transportGetInfo(tid).localName.split(":")[-1]
    tls_port = None
    if args.tls:
        tls = pj.TransportConfig()
        tls.port = 0
        tls.boundAddress = "127.0.0.1"
        tls.publicAddress = "127.0.0.1"
        tls.tlsConfig.method = pj.PJSIP_TLSV1_2_METHOD  # 1.2 and newer
        tls.tlsConfig.CaListFile = args.tls_ca or ""
        tls.tlsConfig.verifyServer = bool(args.tls_ca)
        tls.tlsConfig.certFile = args.tls_cert or ""
        tls.tlsConfig.privKeyFile = args.tls_key or ""
        tls_tid = ep.transportCreate(pj.PJSIP_TRANSPORT_TLS, tls)
        tls_port = int(ep.transportGetInfo(tls_tid).localName.split(":")[-1])
    ep.libStart()
    ep.audDevManager().setNullDev()
    # G.711 only, PCMU first: what the switch speaks (and telephone-event, always on).
    for c in ep.codecEnum2():
        prio = {"PCMU/8000/1": 255, "PCMA/8000/1": 254}.get(c.codecId, 0)
        ep.codecSetPriority(c.codecId, prio)

    player = None
    if args.play:
        player = pj.AudioMediaPlayer()
        player.createPlayer(args.play, 0)  # 0: loop

    commands: queue.Queue[dict[str, Any]] = queue.Queue()
    calls: dict[int, Any] = {}  # Python keeps every live Call alive (DESIGN §4)
    answer_at: dict[int, float] = {}
    recorders: dict[int, tuple[Any, Path]] = {}
    pending_hangup_cleanup: list[int] = []
    spent_recorders: list[Any] = []  # destroying a recorder mid-run is not worth the risk

    class PhoneCall(pj.Call):
        def __init__(self, acc: Any, call_id: int = pj.PJSUA_INVALID_ID) -> None:
            super().__init__(acc, call_id)
            self.connected_at: float | None = None

        def onCallState(self, prm: Any) -> None:
            ci = self.getInfo()
            state = ci.stateText
            emit("state", call_id=ci.id, state=state, code=ci.lastStatusCode, reason=ci.lastReason)
            if ci.state == pj.PJSIP_INV_STATE_CONFIRMED:
                self.connected_at = time.time()
                emit("confirmed", call_id=ci.id)
            elif ci.state == pj.PJSIP_INV_STATE_DISCONNECTED:
                dur = time.time() - self.connected_at if self.connected_at else 0.0
                emit("disconnected", call_id=ci.id, code=ci.lastStatusCode, reason=ci.lastReason,
                     duration=round(dur, 3))  # fmt: skip
                pending_hangup_cleanup.append(ci.id)

        def onCallMediaState(self, prm: Any) -> None:
            ci = self.getInfo()
            for i, mi in enumerate(ci.media):
                if mi.type != pj.PJMEDIA_TYPE_AUDIO or mi.status != pj.PJSUA_CALL_MEDIA_ACTIVE:
                    continue
                aud = self.getAudioMedia(i)
                if player is not None:
                    player.startTransmit(aud)
                if ci.id not in recorders:
                    path = Path(args.record_dir) / f"heard-{ci.id}-{int(time.time() * 1000)}.wav"
                    rec = pj.AudioMediaRecorder()
                    rec.createRecorder(str(path))
                    recorders[ci.id] = (rec, path)
                aud.startTransmit(recorders[ci.id][0])
                codec, remote = "", ""
                try:
                    si = self.getStreamInfo(i)
                    codec, remote = si.codecName, si.remoteRtpAddress
                except Exception:  # noqa: BLE001 (diagnostics only)
                    pass
                emit("media", call_id=ci.id, codec=codec, remote=remote, srtp=srtp_suite(self.dump(True, "")))

        def onDtmfDigit(self, prm: Any) -> None:
            emit("dtmf", call_id=self.getId(), digit=prm.digit, method=int(prm.method))

    class PhoneAccount(pj.Account):
        def onIncomingCall(self, prm: Any) -> None:
            call = PhoneCall(self, prm.callId)
            ci = call.getInfo()
            calls[ci.id] = call
            emit("incoming", call_id=ci.id, **{"from": ci.remoteUri})
            op = pj.CallOpParam()
            op.statusCode = 180
            call.answer(op)
            if args.auto_answer_ms is not None:
                answer_at[ci.id] = time.monotonic() + args.auto_answer_ms / 1000

    acfg = pj.AccountConfig()
    acfg.idUri = f"sip:phone@127.0.0.1:{port}"
    acfg.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
    acfg.mediaConfig.transportConfig.publicAddress = "127.0.0.1"
    acfg.mediaConfig.transportConfig.port = args.rtp_port
    acfg.mediaConfig.transportConfig.portRange = 200
    if args.srtp:
        # SDES only (RFC 4568), refusing plain RTP; srtpSecureSignaling 0: over plain UDP SIP
        # too (pjsua's default asks for TLS/sips first).
        acfg.mediaConfig.srtpUse = pj.PJMEDIA_SRTP_MANDATORY
        acfg.mediaConfig.srtpSecureSignaling = 0
        keyings = pj.IntVector()
        keyings.append(pj.PJMEDIA_SRTP_KEYING_SDES)
        acfg.mediaConfig.srtpOpt.keyings = keyings
    acc = PhoneAccount()
    acc.create(acfg)

    def read_stdin() -> None:
        for line in sys.stdin:
            try:
                commands.put(json.loads(line))
            except ValueError:
                emit("error", message=f"bad command {line!r}")
        commands.put({"cmd": "quit"})

    threading.Thread(target=read_stdin, daemon=True).start()
    emit("ready", port=int(port), tls_port=tls_port)

    def finish_call(cid: int) -> None:
        calls.pop(cid, None)
        answer_at.pop(cid, None)
        rec = recorders.pop(cid, None)
        if rec is not None:
            recorder, path = rec
            spent_recorders.append(recorder)  # kept until the process ends
            try:
                level, secs = wav_dbfs(path)
                emit("recorded", call_id=cid, dbfs=round(level, 2), seconds=round(secs, 2), path=str(path))
            except Exception as e:  # noqa: BLE001
                emit("error", message=f"recording {path}: {e}")

    running = True
    while running:
        ep.libHandleEvents(10)
        now = time.monotonic()
        for cid, at in list(answer_at.items()):
            if now >= at and cid in calls:
                del answer_at[cid]
                op = pj.CallOpParam()
                op.statusCode = args.answer_code
                try:
                    calls[cid].answer(op)
                except pj.Error as e:
                    emit("error", message=f"answer: {e.info()}")
        while pending_hangup_cleanup:
            finish_call(pending_hangup_cleanup.pop())
        try:
            cmd = commands.get_nowait()
        except queue.Empty:
            continue
        try:
            what = cmd.get("cmd")
            if what == "call":
                call = PhoneCall(acc)
                call.makeCall(cmd["uri"], pj.CallOpParam(True))
                calls[call.getId()] = call
            elif what == "hangup":
                for call in list(calls.values()):
                    op = pj.CallOpParam()
                    op.statusCode = 603 if cmd.get("decline") else 200
                    call.hangup(op)
            elif what == "dtmf":
                for call in list(calls.values()):
                    call.dialDtmf(cmd["digits"])
            elif what == "quit":
                running = False
        except pj.Error as e:
            emit("error", message=e.info())

    # Hang up what is left, let the BYEs go, then leave without interpreter teardown of
    # pjsua2 objects (libDestroy, then os._exit: the pattern that never crashes here).
    if calls:
        ep.hangupAllCalls()
        t_end = time.monotonic() + 1.0
        while time.monotonic() < t_end and calls:
            ep.libHandleEvents(10)
            while pending_hangup_cleanup:
                finish_call(pending_hangup_cleanup.pop())
    for cid in list(recorders):
        finish_call(cid)
    player = None
    sys.stdout.flush()
    try:
        ep.libDestroy()
    except Exception:  # noqa: BLE001
        pass
    sys.stdout.flush()
    os._exit(0)


def main() -> int:
    import argparse

    ap = argparse.ArgumentParser(description="pjsua2 test phone (JSON lines on stdin/stdout)")
    ap.add_argument("--port", type=int, default=0, help="SIP UDP port on 127.0.0.1 (0: any)")
    ap.add_argument("--rtp-port", type=int, default=0, help="first RTP port (0: any)")
    ap.add_argument("--play", help="WAV to play into every call (looped)")
    ap.add_argument("--auto-answer-ms", type=int, default=None,
                    help="answer incoming calls after this many ms of ringing (default: never)")
    ap.add_argument("--answer-code", type=int, default=200, help="final status to answer with")
    ap.add_argument("--record-dir", default=tempfile.gettempdir())
    ap.add_argument("--log-file", default="")
    ap.add_argument("--log-level", type=int, default=3)
    ap.add_argument("--srtp", action="store_true", help="offer and accept SDES-SRTP only (RTP/SAVP)")
    ap.add_argument("--tls", action="store_true", help="also a TLS transport (its port in the ready event)")
    ap.add_argument("--tls-ca", help="verify TLS peers against this CA file (PEM)")
    ap.add_argument("--tls-cert", help="certificate (PEM) the TLS transport presents")
    ap.add_argument("--tls-key", help="its private key (PEM)")
    args = ap.parse_args()
    return run_phone(args)


if __name__ == "__main__":
    raise SystemExit(main())
