"""A script that loops without ever calling a verb holds the one event loop; the
watchdog names it and ends the process (exit 70) so a supervisor restarts the switch
instead of leaving a switch that answers nothing."""

import time

import pytest

from .harness import options_ping

pytestmark = pytest.mark.e2e


def test_runaway_script_is_named_and_the_switch_exits_70(switch, sipp_bg):
    sw = switch("runaway", extra_args=["--watchdog", "2"])
    call = sipp_bg("uac_hangup", sw, pause_ms=500, timeout=10)
    t0 = time.monotonic()
    rc = sw.wait(10)
    took = time.monotonic() - t0
    call.stop()
    assert rc == 70, f"exit code {rc}\n" + sw.log_tail(20)
    assert 1.5 <= took <= 6, f"the watchdog took {took:.1f}s for a 2 s limit"
    log = sw.log_text()
    assert "event loop stuck" in log and "app default" in log and "Main()" in log, sw.log_tail(20)
    assert options_ping(sw.sip_addr, timeout=0.3) is None  # really gone
