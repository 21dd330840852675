"""Phones register accounts (digest auth) and calls the apps place to that user reach
the registered phone: SIPp registers alice with the contact of a SIPp callee, then a
caller dials alice through the seed's bridge app, with no gateway configured."""

import pytest

from .harness import LOCALHOST, free_tcp_port, start_uas, stop_clean

pytestmark = pytest.mark.e2e


@pytest.fixture
def accounts(tmp_path):
    config = tmp_path / "switch.toml"
    config.write_text('realm = "e2e"\n[users]\nalice = "s3cret"\n')
    return ["--config", str(config), "--control", f"{LOCALHOST}:{free_tcp_port()}"]


def register(sipp, sw, contactport, password="s3cret", expires=300):
    return sipp("uac_register", sw, keys={"user": "alice", "contactport": contactport, "expires": expires},
                extra_args=["-au", "alice", "-ap", password], timeout=10)


def test_a_call_to_a_registered_user_reaches_its_phone(switch, sipp, sipp_bg, bridge_app, accounts):
    uas = start_uas(sipp_bg, "uas_ring_answer", pause_ms=200)
    sw = switch(bridge_app(), accounts)
    reg = register(sipp, sw, uas.sip_port)
    assert reg.ok, reg.describe()
    ok = reg.received("REGISTER", 200)[0]
    assert f"127.0.0.1:{uas.sip_port}" in (ok.header("Contact") or "") and "expires=" in ok.header("Contact")
    call = sipp("uac_hangup", sw, service="alice", pause_ms=500, timeout=15)
    assert call.ok, call.describe()
    callee = uas.wait()
    invite = callee.received("INVITE")[0]
    assert invite.first_line.startswith(f"INVITE sip:alice@127.0.0.1:{uas.sip_port}"), invite.first_line
    stop_clean(sw)


def test_wrong_password_is_refused_and_unknown_users_get_404(switch, sipp, bridge_app, accounts):
    sw = switch(bridge_app(), accounts)
    reg = register(sipp, sw, 9, password="wrong")
    # the retry with the wrong password gets 403 (no 401 loop for guessing)
    assert not reg.ok and [m.status for m in reg.received("REGISTER")] == [401, 403], reg.describe()
    call = sipp("uac_expect_final", sw, service="alice", timeout=10)  # nobody registered
    assert call.final_status() == 404, call.describe()
    stop_clean(sw)


def test_without_accounts_register_is_not_allowed(switch, sipp, bridge_app):
    sw = switch(bridge_app())
    reg = register(sipp, sw, 9)
    assert [m.status for m in reg.received("REGISTER")] == [405], reg.describe()
