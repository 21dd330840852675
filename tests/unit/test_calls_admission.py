"""Admission: which new INVITEs are refused with 503 (no loop needed: a fake monitor)."""

from types import SimpleNamespace

from switch.calls.admission import Admission, Shed


def admission(lag=0.0, sustained=0.0, ports=100, **kw):
    monitor = SimpleNamespace(lag=lag, sustained=sustained, loop=SimpleNamespace(time=lambda: 0.0))
    return Admission(monitor, max_calls=10, rtp_ports_free=lambda: ports, **kw)  # type: ignore[arg-type]


def test_admits_when_healthy():
    assert admission().refuse_reason(live_calls=3) is None


def test_refusals_and_their_reasons():
    assert admission().refuse_reason(10) == Shed("call-limit", "call limit 10 reached")
    assert admission(ports=1).refuse_reason(0) == Shed("no-rtp-ports", "RTP port range exhausted (widen --rtp-ports)")
    assert admission(lag=0.6).refuse_reason(0) == Shed("loop-lag", "overloaded (loop lag 600 ms)")
    assert admission(lag=0.15).refuse_reason(0) is None  # a stall shorter than T1: late, not overload
    sustained = admission(sustained=0.02).refuse_reason(0)  # saturation, not a GC blip
    assert sustained is not None and sustained.key == "loop-lag-sustained" and "for 2 s" in str(sustained)
    assert admission(lag=0.05, sustained=0.005).refuse_reason(0) is None
    draining = admission()
    draining.draining = True
    assert draining.refuse_reason(0) == Shed("draining", "shutting down")


def test_refusals_are_counted():
    a = admission()
    a.note_refusal(Shed("x", "x"))
    a.note_refusal(Shed("x", "x"))
    assert a.refused == 2


def test_the_sustained_lag_is_a_median_over_a_second_at_least():
    """A few late probes right after start (one stall) are not saturation; half of 20 are."""
    import asyncio

    from switch.calls.admission import LoopLagMonitor

    monitor = LoopLagMonitor(asyncio.new_event_loop())  # (never started: probes fed by hand)
    monitor.recent.extend([0.05] * 5)
    assert monitor.sustained == 0.0  # 5 probes, 0.25 s: too few to call it sustained
    monitor.recent.extend([0.05] * 5 + [0.001] * 10)
    assert monitor.sustained == 0.05  # 20 probes (1 s), half of them late: the median counts
    monitor.recent.extend([0.001] * 20)
    assert monitor.sustained == 0.001
    monitor.loop.close()
