"""Admission: which new INVITEs are refused with 503 (no loop needed: a fake monitor)."""

from types import SimpleNamespace

from switch.calls.admission import Admission


def admission(lag=0.0, sustained=0.0, ports=100, **kw):
    monitor = SimpleNamespace(lag=lag, sustained=sustained, loop=SimpleNamespace(time=lambda: 0.0))
    return Admission(monitor, max_calls=10, rtp_ports_free=lambda: ports, **kw)  # type: ignore[arg-type]


def test_admits_when_healthy():
    assert admission().refuse_reason(live_calls=3) is None


def test_refusals_and_their_reasons():
    assert "call limit 10" in admission().refuse_reason(10)
    assert "RTP port range exhausted" in admission(ports=1).refuse_reason(0)
    assert "loop lag 150 ms" in admission(lag=0.15).refuse_reason(0)
    assert "for 2 s" in admission(sustained=0.02).refuse_reason(0)  # saturation, not a GC blip
    assert admission(lag=0.05, sustained=0.005).refuse_reason(0) is None
    draining = admission()
    draining.draining = True
    assert draining.refuse_reason(0) == "shutting down"


def test_refusals_are_counted():
    a = admission()
    a.note_refusal("x")
    a.note_refusal("x")
    assert a.refused == 2
