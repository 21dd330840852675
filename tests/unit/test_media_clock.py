import asyncio
import logging
import time

import pytest

from media.clock import MediaClock
from media.dtmf import DIGITS, DtmfReceiver, TelephoneEvent, dtmf_packets
from media.ports import NoRtpPorts, RtpPortPool


class FakeHandle:
    def __init__(self, loop: "FakeLoop", when: float, cb) -> None:
        self.loop, self.when, self.cb, self.cancelled = loop, when, cb, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """Virtual time: the test decides when the armed timer fires."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.timers: list[FakeHandle] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, cb) -> FakeHandle:
        h = FakeHandle(self, when, cb)
        self.timers.append(h)
        return h

    def pending(self) -> list[FakeHandle]:
        return [t for t in self.timers if not t.cancelled]

    def fire(self, at: float | None = None) -> None:
        """Run the one armed timer, at its time or at ``at`` (late)."""
        (h,) = self.pending()
        self.timers.remove(h)
        self.now = h.when if at is None else at
        h.cb()


class Recorder:
    def __init__(self, stop_after: int | None = None) -> None:
        self.calls: list[int] = []
        self.stop_after = stop_after

    def tick(self, frames: int, now: float) -> bool:
        self.calls.append(frames)
        return self.stop_after is None or sum(self.calls) < self.stop_after


def test_clock_ticks_on_grid_and_stops_when_empty():
    loop = FakeLoop()
    clock = MediaClock(loop)  # type: ignore[arg-type]
    s = Recorder(stop_after=3)
    clock.add(s)
    assert clock.running
    whens = []
    for _ in range(3):
        whens.append(loop.pending()[0].when)
        loop.fire()
    assert s.calls == [1, 1, 1]
    assert whens == pytest.approx([1000.0, 1000.02, 1000.04])
    assert not clock.running and not loop.pending() and len(clock) == 0


def test_clock_grid_does_not_drift_with_slightly_late_ticks():
    loop = FakeLoop()
    clock = MediaClock(loop)  # type: ignore[arg-type]
    s = Recorder()
    clock.add(s)
    for i in range(100):
        h = loop.pending()[0]
        assert h.when == pytest.approx(1000.0 + i * 0.02)
        loop.fire(at=h.when + 0.004)  # every tick 4 ms late
    assert s.calls == [1] * 100


def test_clock_catches_up_after_late_tick():
    loop = FakeLoop()
    clock = MediaClock(loop)  # type: ignore[arg-type]
    s = Recorder()
    clock.add(s)
    loop.fire()  # t=0
    loop.fire(at=1000.0 + 0.065)  # due: grid points 1, 2, 3
    assert s.calls == [1, 3]
    assert clock.late_ticks == 1
    assert loop.pending()[0].when == pytest.approx(1000.08)
    loop.fire()
    assert s.calls == [1, 3, 1]


def test_clock_resyncs_beyond_cap_without_double_sending():
    loop = FakeLoop()
    clock = MediaClock(loop, max_catchup=5)  # type: ignore[arg-type]
    s = Recorder()
    clock.add(s)
    loop.fire()
    loop.fire(at=1000.0 + 0.5)  # 25 frames due
    assert s.calls == [1, 5]
    assert clock.resyncs == 1 and clock.frames_dropped == 20
    loop.fire()  # next grid point after the resync: exactly one frame
    assert s.calls == [1, 5, 1]
    assert loop.pending()[0].when == pytest.approx(1000.54)


def test_clock_early_wakeup_sends_nothing_and_rearms():
    loop = FakeLoop()
    clock = MediaClock(loop)  # type: ignore[arg-type]
    s = Recorder()
    clock.add(s)
    loop.fire()
    loop.fire(at=1000.015)  # 5 ms early
    assert s.calls == [1]
    assert loop.pending()[0].when == pytest.approx(1000.02)


def test_clock_exception_isolation(caplog):
    loop = FakeLoop()
    clock = MediaClock(loop, slots=1)  # type: ignore[arg-type]  # all streams in one tick

    class Boom:
        n = 0

        def tick(self, frames, now):
            self.n += 1
            raise RuntimeError("boom")

    good1, bad, good2 = Recorder(), Boom(), Recorder()
    for s in (good1, bad, good2):
        clock.add(s)
    with caplog.at_level(logging.ERROR, logger="media.clock"):
        for _ in range(5):
            loop.fire()
    assert bad.n == 1
    assert good1.calls == good2.calls == [1] * 5
    assert len([r for r in caplog.records if "failed in tick" in r.getMessage()]) == 1
    assert clock.running and len(clock) == 2


def test_clock_discard_during_tick_and_readd():
    loop = FakeLoop()
    clock = MediaClock(loop, slots=1)  # type: ignore[arg-type]  # all streams in one tick
    victim = Recorder()

    class Killer:
        def tick(self, frames, now):
            clock.discard(victim)
            return False

    clock.add(Killer())
    clock.add(victim)
    loop.fire()
    assert victim.calls == []
    assert not clock.running
    clock.add(victim)  # restarts the timer on a fresh grid
    loop.now = 2000.0
    assert clock.running
    loop.fire(at=loop.pending()[0].when)
    assert victim.calls == [1]


def test_streams_are_spread_over_phases_one_frame_per_ptime_each():
    loop = FakeLoop()
    clock = MediaClock(loop, slots=4, streams_per_phase=2)  # type: ignore[arg-type]
    streams = [Recorder() for _ in range(8)]
    for s in streams:
        clock.add(s)
    whens, served = [], []
    for _ in range(8):  # two frame periods: 8 steps of 5 ms
        h = loop.pending()[0]
        whens.append(round(h.when - 1000.0, 4))
        before = [len(s.calls) for s in streams]
        loop.fire()
        served.append(sum(len(s.calls) - b for s, b in zip(streams, before)))
    assert whens == pytest.approx([0, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.035])
    assert served == [2] * 8  # a quarter of the streams per wake-up
    assert all(s.calls == [1, 1] for s in streams)


def test_a_phase_opens_only_when_those_in_use_are_full():
    """Few streams share one wake-up per ptime; a second phase opens at streams_per_phase
    streams; a stream keeps its phase when others leave, and new ones fill the first."""
    loop = FakeLoop()
    clock = MediaClock(loop, slots=4, streams_per_phase=3)  # type: ignore[arg-type]
    first = [Recorder() for _ in range(3)]
    for s in first:
        clock.add(s)
    whens = []
    for _ in range(3):
        whens.append(round(loop.pending()[0].when - 1000.0, 4))
        loop.fire()
    assert whens == pytest.approx([0, 0.02, 0.04])  # one phase: one wake-up per 20 ms
    assert all(s.calls == [1, 1, 1] for s in first)
    late = Recorder()
    clock.add(late)  # 3 in use and full: the second phase opens, 5 ms after the first
    assert round(loop.pending()[0].when - 1000.0, 4) == pytest.approx(0.045)
    loop.fire()
    assert late.calls == [1]
    for s in first:
        clock.discard(s)
    again = Recorder()
    clock.add(again)  # 1 stream: only phase 0 is in use for new streams
    whens = []
    for _ in range(4):
        whens.append(round(loop.pending()[0].when - 1000.0, 4))
        loop.fire()
    assert whens == pytest.approx([0.06, 0.065, 0.08, 0.085])  # phase 0 and the kept phase 1
    assert late.calls == [1, 1, 1] and again.calls == [1, 1]


def test_clock_add_from_inside_a_tick_arms_one_timer():
    loop = FakeLoop()
    clock = MediaClock(loop)  # type: ignore[arg-type]
    later = Recorder()

    class Spawner:
        def tick(self, frames, now):
            clock.add(later)  # e.g. a finished playback starting the next one
            return False

    clock.add(Spawner())
    loop.fire()
    assert len(loop.pending()) == 1  # loop.fire() would fail on two armed timers
    loop.fire()
    assert later.calls == [1]


def test_clock_on_real_loop():
    async def main():
        clock = MediaClock(asyncio.get_running_loop())
        s = Recorder(stop_after=5)
        done = asyncio.get_running_loop().create_future()
        s_tick = s.tick

        def tick(frames, now):
            keep = s_tick(frames, now)
            if not keep:
                done.set_result(None)
            return keep

        s.tick = tick  # type: ignore[method-assign]
        clock.add(s)
        await asyncio.wait_for(done, 1)
        await asyncio.sleep(0.03)
        assert not clock.running
        assert sum(s.calls) >= 5

    asyncio.run(main())


# --- ports ---------------------------------------------------------------------------


def test_port_pool_even_round_robin_and_exhaustion():
    pool = RtpPortPool(10001, 10008)  # even ports with an odd neighbour: 10002, 10004, 10006
    got = [pool.allocate() for _ in range(3)]
    assert got == [10002, 10004, 10006]
    with pytest.raises(NoRtpPorts, match="widen --rtp-ports"):
        pool.allocate()
    pool.release(10002)
    pool.release(10004)
    assert pool.allocate() == 10002
    pool.release(10006)
    assert pool.allocate() == 10004  # not the just-released 10006
    pool.release(12345)  # unknown: ignored
    assert pool.in_use == 2 and pool.capacity == 3


def test_port_pool_bad_range():
    with pytest.raises(ValueError):
        RtpPortPool(20000, 10000)
    with pytest.raises(ValueError, match="no even/odd port pair"):
        RtpPortPool(20000, 20000)


# --- DTMF ----------------------------------------------------------------------------


def _feed_all(rx: DtmfReceiver, packets: list[tuple[int, bytes]]) -> list[str]:
    out: list[str] = []
    for ts, payload in packets:
        out += rx.feed(ts, payload)
    return out


def test_telephone_event_round_trip():
    data = bytes.fromhex("0b8a0320")
    ev = TelephoneEvent.parse(data)
    assert (ev.event, ev.end, ev.volume, ev.duration, ev.digit) == (11, True, 10, 800, "#")
    assert bytes(ev) == data
    with pytest.raises(ValueError, match="too short"):
        TelephoneEvent.parse(b"\x01")
    assert TelephoneEvent(16, False, 0, 0).digit is None


def test_dtmf_packets_and_receiver_once_per_event():
    pkts = list(dtmf_packets("5", duration_ms=100))
    evs = [TelephoneEvent.parse(p) for p in pkts]
    assert [e.duration for e in evs] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in evs] == [False] * 4 + [True] * 3
    rx = DtmfReceiver()
    stream = [(1000, p) for p in pkts] + [(5000, p) for p in dtmf_packets("#")]
    assert _feed_all(rx, stream) == ["5", "#"]
    assert rx.flush() == []


def test_dtmf_receiver_all_digits_and_repeats():
    rx = DtmfReceiver()
    stream = []
    for i, d in enumerate(DIGITS + "11"):
        stream += [(i * 2000, p) for p in dtmf_packets(d)]
    assert "".join(_feed_all(rx, stream)) == DIGITS + "11"


def test_dtmf_receiver_lost_end_and_lost_start():
    rx = DtmfReceiver()
    starts_only = [p for p in dtmf_packets("7") if not TelephoneEvent.parse(p).end]
    assert _feed_all(rx, [(100, p) for p in starts_only]) == []
    # The next event (timestamp 900) arrives: the unfinished '7' is reported, once.
    ends_only = [p for p in dtmf_packets("8") if TelephoneEvent.parse(p).end]
    assert _feed_all(rx, [(900, p) for p in ends_only]) == ["7", "8"]
    # A late packet of an already-reported event is ignored.
    assert rx.feed(100, starts_only[0]) == []
    assert rx.feed(1700, starts_only[0]) == []
    assert rx.flush() == ["7"]
    assert rx.flush() == []


def test_dtmf_packets_bad_digit():
    with pytest.raises(ValueError, match="DTMF digit"):
        list(dtmf_packets("x"))


def test_lateness_is_recorded_per_tick_and_summarised():
    async def main():
        loop = asyncio.get_running_loop()
        clock = MediaClock(loop, ptime=0.01)

        class Busy:
            def tick(self, frames, now):
                time.sleep(0.002)  # work inside the tick counts as lateness
                return True

        clock.add(Busy())
        await asyncio.sleep(0.2)
        clock.stop()
        stats = clock.lateness_ms()
        assert stats["ticks"] >= 10
        assert 2.0 <= stats["p50"] <= stats["p99"] <= stats["max"]

    asyncio.run(main())


# --- send errors: MediaSession on the virtual clock ----------------------------------


class FlakyTransport:
    """sendto() as uvloop's on an IPv4 socket: an IPv6 destination raises ValueError."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        if ":" in addr[0]:
            raise ValueError(f"{addr!r}: socket family mismatch or a DNS lookup is required")
        self.sent.append((data, addr))

    def close(self) -> None:
        pass


def test_session_send_errors_keep_the_stream_and_are_logged_rate_limited(caplog):
    from media.playback import DecodedAudio
    from media.rtp import RtpSender
    from media.sdp import MediaParams
    from media.session import SEND_ERROR_LOG_INTERVAL, MediaSession

    loop = FakeLoop()
    clock = MediaClock(loop, slots=1)  # type: ignore[arg-type]
    transport = FlakyTransport()
    session = MediaSession(loop, transport, 20000, RtpPortPool(20000, 20009), clock, "[t]")  # type: ignore[arg-type]
    session.configure(MediaParams("PCMU", 0, 101, ("::1", 4000), "sendrecv"))
    session.play(DecodedAudio.from_pcm(bytes(2 * 1600)), loop=True)  # 10 frames, looped

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if "RTP send to" in r.getMessage()]

    with caplog.at_level(logging.WARNING):
        for _ in range(50):  # 1 s of failing sends
            loop.fire()
        assert session.send_errors == 50 and session.packets_sent == 0
        assert session.playing and len(clock) == 1  # still on the clock
        assert len(warnings()) == 1 and "socket family mismatch" in warnings()[0]
        session.send_relayed(b"\xff" * 160, 1234, 0, False)  # the relay path survives too
        assert session.send_errors == 51
        steps = round(SEND_ERROR_LOG_INTERVAL / clock.ptime)
        for _ in range(steps):  # past the interval: one summary line, not one per packet
            loop.fire()
        # 49 + 1 relayed + 450 ticks unlogged before the tick 10 s after the first report
        assert len(warnings()) == 2 and "(500 more since the last report)" in warnings()[1]
        # Symmetric RTP (RFC 4961): the phone's first packet gives a reachable address.
        session._datagram_received(RtpSender().packet(b"\xff" * 160, 160, 0), ("127.0.0.1", 5000))
        for _ in range(5):
            loop.fire()
    assert [addr for _, addr in transport.sent] == [("127.0.0.1", 5000)] * 5
    assert session.packets_sent == 5 and len(warnings()) == 2
    assert not [r for r in caplog.records if "failed in tick" in r.getMessage()]
    session.close()
