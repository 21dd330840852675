"""What a script decides is what the caller sees: rejections, errors, modules, tasks."""

from __future__ import annotations

import pytest

from .harness import options_ping

pytestmark = pytest.mark.e2e


def expect_final(sipp, sw, code: int, *, service: str = "service", calls: int = 1, rtpport: int = 9):
    res = sipp("uac_expect_final", sw, service=service, calls=calls, timeout=10,
               keys={"rtpport": rtpport})  # fmt: skip
    assert res.ok, res.describe()
    finals = [m.status for m in res.received("INVITE") if m.status and m.status >= 200]
    assert finals and set(finals) == {code}, f"expected {code}, got {finals}\n" + res.describe()
    return res


def test_reject_486_when_the_script_sees_busy_in_to(switch, sipp):
    sw = switch("reject486")
    res = expect_final(sipp, sw, 486, service="busy")
    assert res.received("INVITE", 486)[0].to_tag, "a final response carries a To tag"


def test_reject_404_when_to_is_not_busy(switch, sipp):
    sw = switch("reject486")
    expect_final(sipp, sw, 404, service="alice")


def test_cancel_while_ringing(switch, sipp):
    sw = switch("provision_then_wait")
    res = sipp("uac_cancel", sw, pause_ms=500, timeout=10)
    assert res.ok, res.describe()
    assert 180 in res.statuses("INVITE"), res.describe()
    assert res.final_status("CANCEL") == 200
    assert res.final_status("INVITE") == 487


def test_throw_before_answer_gets_500(switch, sipp):
    sw = switch("throw_before_answer")
    expect_final(sipp, sw, 500)
    assert "main.js:4" in sw.log_text(), "the error log must name main.js:4\n" + sw.log_tail(30)


def test_syntax_error_gets_500_for_every_call_and_the_log_names_the_line(switch, sipp):
    sw = switch("syntax_error")
    expect_final(sipp, sw, 500, calls=2)
    log = sw.log_text()
    assert "main.js" in log and "main.js:5" in log, "expected main.js:5 in the log\n" + sw.log_tail(30)
    assert options_ping(sw.sip_addr, 1.0) == 200, "the switch must keep running"


def test_require_of_a_lib_module(switch, sipp):
    sw = switch("uses_require")
    expect_final(sipp, sw, 603)


def test_main_returning_without_answer_gets_480(switch, sipp):
    sw = switch("return_unanswered")
    expect_final(sipp, sw, 480)


def test_readinput_timeout_returns_null(switch, sipp):
    sw = switch("readinput_timeout")
    res = expect_final(sipp, sw, 408)
    ok_t = res.received("INVITE", 408)[0].time - res.sent("INVITE")[0].time
    assert 0.25 <= ok_t < 2.0, f"408 came {ok_t:.2f}s after the INVITE"


def test_spawn_and_sendevent_between_tasks(switch, sipp):
    sw = switch("spawn_sendevent")
    expect_final(sipp, sw, 441)
