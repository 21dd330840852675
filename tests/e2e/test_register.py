"""Phones register accounts (digest auth) and calls the apps place to that user reach
the registered phone: SIPp registers alice with the contact of a SIPp callee, then a
caller dials alice through the seed's bridge app, with no gateway configured."""

import hashlib
import re
import uuid
from pathlib import Path

import pytest

from .harness import LOCALHOST, SipSocket, free_tcp_port, response_to, start_uas, status_of, stop_clean

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


# --------------------------------------------------------------------- RFC 4475's REGISTERs
FIXTURES = Path(__file__).parents[1] / "unit" / "fixtures" / "rfc4475"


def torture_register(name: str, phone: SipSocket, auth: str = "") -> bytes:
    """Fixture `name` as this phone sends it: its Via names the phone's socket (responses
    must come back to it, RFC 3261 §18.2.2), a new branch each time; the rest as the RFC
    wrote it."""
    data = (FIXTURES / f"{name}.dat").read_bytes()
    via = f"Via: SIP/2.0/UDP {phone.addr[0]}:{phone.addr[1]};branch=z9hG4bK-{uuid.uuid4().hex[:12]};rport"
    data = re.sub(rb"(?m)^Via: [^\r\n]*", via.encode(), data, count=1)
    if auth:
        head, sep, rest = data.partition(b"\r\n\r\n")
        data = head + b"\r\nAuthorization: " + auth.encode() + sep + rest
    return data


def md5_digest(challenge: str, user: str, password: str, uri: str) -> str:
    """RFC 2617 §3.2.2 (qop=auth) for a REGISTER, computed here, not by the switch's code."""
    realm = re.search(r'realm="([^"]*)"', challenge).group(1)  # type: ignore[union-attr]
    nonce = re.search(r'nonce="([^"]*)"', challenge).group(1)  # type: ignore[union-attr]

    def h(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    response = h(f"{h(f'{user}:{realm}:{password}')}:{nonce}:00000001:e2e:auth:{h(f'REGISTER:{uri}')}")
    return (f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", response="{response}", '
            f"algorithm=MD5, qop=auth, nc=00000001, cnonce=\"e2e\"")


def test_rfc4475_registers_keep_their_contacts_as_written_and_a_call_leaves_uri_headers_out(
        switch, sipp_bg, bridge_app, tmp_path):
    """RFC 4475 §3.3.12-14 and §3.3.4 over UDP to the real switch: each REGISTER is
    challenged, then bound with its Contact exactly as sent (a header parameter stays the
    header's, a URI parameter and an escaped header stay in the URI), and a To that is no
    SIP URI gets 400. A call to the account reaches the phone with the escaped Route
    header left out of the Request-URI (RFC 3261 §19.1.1)."""
    config = tmp_path / "switch.toml"
    config.write_text('realm = "e2e"\n[users]\nwatson = "pw"\nuser = "pw"\n')
    sw = switch(bridge_app(), ["--config", str(config), "--control", f"{LOCALHOST}:{free_tcp_port()}"])
    cases = [("cparam01", "watson", "<sip:+19725552222@gw1.example.net>;unknownparam;expires=3600"),
             ("cparam02", "watson", "<sip:+19725552222@gw1.example.net;unknownparam>;expires=3600"),
             ("regescrt", "user", "<sip:user@example.com?Route=%3Csip:sip.example.com%3E>;expires=3600")]
    with SipSocket() as phone:
        for name, user, contact in cases:
            phone.send(torture_register(name, phone), sw.sip_addr)
            (challenge,) = phone.recv_all(2.0)
            assert status_of(challenge) == 401, (name, challenge[:200])
            www = next(line for line in challenge.decode().split("\r\n")
                       if line.lower().startswith("www-authenticate:") and "MD5" in line)
            phone.send(torture_register(name, phone, md5_digest(www, user, "pw", "sip:example.com")), sw.sip_addr)
            (ok,) = phone.recv_all(2.0)
            assert status_of(ok) == 200, (name, ok[:200])
            assert f"\r\nContact: {contact}\r\n".encode() in ok, (name, ok.decode())
        phone.send(torture_register("unksm2", phone), sw.sip_addr)
        (refused,) = phone.recv_all(2.0)
        assert status_of(refused) == 400 and b"address-of-record" in refused.split(b"\r\n")[0], refused[:200]

        caller = sipp_bg("uac_expect_final", sw, service="user", timeout=10)
        invite = next((d for d in phone.recv_all(5.0, until_final=False) if d.startswith(b"INVITE ")), None)
        assert invite is not None, sw.log_tail()
        assert invite.startswith(b"INVITE sip:user@example.com SIP/2.0\r\n"), invite[:120]
        phone.send(response_to(invite, 486, "Busy Here"), sw.sip_addr)
        result = caller.wait()
        assert result.final_status() == 486, result.describe()
        assert any(d.startswith(b"ACK ") for d in phone.recv_all(1.0, until_final=False)), "the 486 was not ACKed"
    stop_clean(sw)
