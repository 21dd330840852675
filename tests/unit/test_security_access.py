"""Who may call and who may dial out: the AccessPolicy on virtual time, and its config."""

from __future__ import annotations

from pathlib import Path

import pytest

from switch.calls.registrar import Registrar
from switch.config import Config, ConfigError, load
from switch.security.access import (AccessPolicy, Caller, CallerKind, DialTarget, Refusal, Trunk, UserAccount,
                                    parse_trunks, parse_users)
from switch.security.digest import digest_response, parse_digest
from switch.sip.message import SipRequest, parse_message

STRANGER = ("203.0.113.9", 5060)
PHONE = ("10.0.0.7", 5062)
CARRIER = ("192.0.2.5", 5060)
NOW = 1000.0


def invite(auth: str = "", uri: str = "sip:1000@pbx") -> SipRequest:
    lines = [f"INVITE {uri} SIP/2.0", "Via: SIP/2.0/UDP 10.0.0.7:5062;branch=z9hG4bK1",
             "From: <sip:alice@pbx>;tag=1", "To: <sip:1000@pbx>", "Call-ID: a1", "CSeq: 1 INVITE",
             "Content-Length: 0"]
    if auth:
        lines.append(f"Proxy-Authorization: {auth}")
    msg = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(msg, SipRequest)
    return msg


def answer(refusal: Caller | Refusal, user: str, password: str, nc: int = 1, realm: str = "pbx",
           method: str = "INVITE", uri: str = "sip:1000@pbx") -> str:
    """The Proxy-Authorization answering a 407's first challenge."""
    assert isinstance(refusal, Refusal) and refusal.status == 407, refusal
    values = refusal.headers["proxy-authenticate"]
    assert isinstance(values, list)
    ch = parse_digest(values[0])
    count = f"{nc:08x}"
    resp = digest_response(user, realm, password, method, uri, ch["nonce"], "auth", count, "c1", ch["algorithm"])
    return (f'Digest username="{user}", realm="{realm}", nonce="{ch["nonce"]}", uri="{uri}", '
            f'response="{resp}", qop=auth, nc={count}, cnonce="c1", algorithm={ch["algorithm"]}')


def policy(**kw: object) -> AccessPolicy:
    trunks = parse_trunks(kw.pop("trunks", [{"name": "carrier1", "addresses": ["192.0.2.0/28"], "max_calls": 2}]))
    users = parse_users(kw.pop("users", {"alice": "s3cret", "bob": {"password": "b0b", "dial_out": True}}))
    return AccessPolicy(trunks, users, realm="pbx", **kw)  # type: ignore[arg-type]


def call(p: AccessPolicy, source: tuple[str, int], user: str, password: str, now: float = NOW) -> Caller | Refusal:
    """A phone's INVITE: challenged, then answered."""
    return p.check_invite(invite(answer(p.check_invite(invite(), source, now), user, password)), source, now)


# ---------------------------------------------------------------------------- who may call
def test_a_stranger_is_refused_with_one_line(security_lines: list[str]) -> None:
    p = policy(users={})
    first = p.check_invite(invite(), STRANGER, NOW)
    assert isinstance(first, Refusal) and (first.status, first.reason, first.why) == (403, "Forbidden",
                                                                                       "not-a-trunk-or-user")
    p.check_invite(invite(), STRANGER, NOW + 1)  # folded into the next line, not one line per INVITE
    assert security_lines == ["SECURITY refused source=203.0.113.9 reason=not-a-trunk-or-user method=INVITE"]


def test_this_host_is_trusted_by_default_and_only_this_host() -> None:
    p = policy()
    local = p.check_invite(invite(), ("127.0.0.1", 5070), NOW)
    assert local == Caller(CallerKind.LOCAL, "", True, "127.0.0.1") and str(local) == "local"
    assert isinstance(p.check_invite(invite(), ("::1", 5070), NOW), Caller)
    other = p.check_invite(invite(), ("127.0.0.2", 5070), NOW)  # the rest of 127/8 is anyone
    assert isinstance(other, Refusal) and other.status == 407
    untrusted = policy(trust_loopback=False, users={}).check_invite(invite(), ("127.0.0.1", 5070), NOW)
    assert isinstance(untrusted, Refusal) and untrusted.status == 403


def test_trunks_are_matched_by_address_most_specific_first() -> None:
    p = policy(users={}, trunks=[{"name": "wide", "addresses": ["192.0.2.0/24"]},
                                 {"name": "narrow", "addresses": ["192.0.2.0/28", "198.51.100.7"]}])
    def who(ip: str) -> str:
        return str(p.check_invite(invite(), (ip, 5060), NOW))
    assert who("192.0.2.5") == "trunk:narrow" and who("192.0.2.200") == "trunk:wide"
    assert who("198.51.100.7") == "trunk:narrow" and who("::ffff:192.0.2.200") == "trunk:wide"
    assert isinstance(p.check_invite(invite(), ("198.51.100.8", 5060), NOW), Refusal)
    caller = p.check_invite(invite(), CARRIER, NOW)
    assert isinstance(caller, Caller) and not caller.may_dial_out and caller.source == "192.0.2.5"
    assert caller.as_dict() == {"caller": "trunk:narrow", "kind": "trunk", "name": "narrow", "dial_out": False,
                                "source": "192.0.2.5"}


def test_a_trunk_with_credentials_is_challenged_for_them() -> None:
    p = policy(users={}, trunks=[{"name": "carrier1", "addresses": ["192.0.2.0/28"], "username": "c1",
                                  "password": "trunkpw"}])
    first = p.check_invite(invite(), CARRIER, NOW)
    assert isinstance(first, Refusal) and first.status == 407
    assert str(p.check_invite(invite(answer(first, "c1", "trunkpw")), CARRIER, NOW)) == "trunk:carrier1"
    wrong = p.check_invite(invite(answer(first, "c1", "nope", nc=2)), CARRIER, NOW)
    assert isinstance(wrong, Refusal) and wrong.status == 403
    # the trunk's credentials are not a user account, nor the other way round
    assert isinstance(call(p, CARRIER, "alice", "s3cret"), Refusal)


def test_users_are_challenged_per_invite_and_admitted() -> None:
    p = policy()
    first = p.check_invite(invite(), PHONE, NOW)
    assert isinstance(first, Refusal) and (first.status, first.reason) == (407, "Proxy Authentication Required")
    values = first.headers["proxy-authenticate"]
    assert isinstance(values, list) and all('realm="pbx"' in v for v in values)
    alice = p.check_invite(invite(answer(first, "alice", "s3cret")), PHONE, NOW)
    assert alice == Caller(CallerKind.USER, "alice", False, PHONE[0])
    bob = call(p, PHONE, "bob", "b0b")
    assert isinstance(bob, Caller) and str(bob) == "user:bob" and bob.may_dial_out
    # the next call may reuse the nonce with a higher count (RFC 7616 §3.4); a replay may not
    again = p.check_invite(invite(answer(first, "alice", "s3cret", nc=2)), PHONE, NOW + 5)
    assert str(again) == "user:alice"
    replay = p.check_invite(invite(answer(first, "alice", "s3cret", nc=2)), PHONE, NOW + 6)
    assert isinstance(replay, Refusal) and replay.status == 407
    assert all("stale=true" in v for v in replay.headers["proxy-authenticate"])


def test_wrong_password_and_unknown_user_get_the_same_403(security_lines: list[str]) -> None:
    p = policy()
    ch = p.check_invite(invite(), PHONE, NOW)
    wrong = p.check_invite(invite(answer(ch, "alice", "guess")), PHONE, NOW)
    unknown = p.check_invite(invite(answer(ch, "mallory", "guess", nc=2)), PHONE, NOW)
    assert isinstance(wrong, Refusal) and isinstance(unknown, Refusal)
    assert (wrong.status, wrong.reason, wrong.headers) == (unknown.status, unknown.reason, unknown.headers) == (
        403, "Forbidden", {})
    assert security_lines == ["SECURITY auth-failed source=10.0.0.7 user=alice method=INVITE",
                              "SECURITY auth-failed source=10.0.0.7 user=mallory method=INVITE"]
    stale = p.check_invite(invite(answer(ch, "alice", "s3cret", uri="sip:other@pbx")), PHONE, NOW)
    assert isinstance(stale, Refusal) and stale.status == 400


def test_guessing_is_blocked_with_403_even_for_the_right_password() -> None:
    p = policy()
    for i in range(5):
        assert isinstance(call(p, STRANGER, "alice", f"guess{i}", NOW + i), Refusal)
    blocked = call(p, STRANGER, "alice", "s3cret", NOW + 10)
    assert isinstance(blocked, Refusal) and (blocked.status, blocked.reason, blocked.why) == (
        403, "Forbidden", "auth-blocked")
    assert isinstance(call(p, PHONE, "bob", "b0b", NOW + 10), Caller)  # another source is not blocked
    assert isinstance(call(p, STRANGER, "alice", "s3cret", NOW + 611), Caller)  # the window is over


def test_register_and_invite_share_the_auth_failures() -> None:
    p = policy()
    registrar = Registrar({"alice": "s3cret"}, realm="pbx", clock=lambda: NOW, failures=p.failures)
    for _ in range(5):
        p.failures.failed(STRANGER[0], "alice", "REGISTER", NOW)
    blocked = call(p, STRANGER, "alice", "s3cret")
    assert isinstance(blocked, Refusal) and blocked.why == "auth-blocked"
    assert registrar.failures is p.failures


def test_trunk_call_limit_and_cps_limit_get_503_and_no_security_line(security_lines: list[str]) -> None:
    p = policy(users={})
    first = p.check_invite(invite(), CARRIER, NOW)
    assert isinstance(first, Caller)
    tokens = [p.call_started(first), p.call_started(first)]
    full = p.check_invite(invite(), CARRIER, NOW)
    assert isinstance(full, Refusal) and (full.status, full.why) == (503, "trunk-call-limit")
    assert full.headers == {"retry-after": "1"}
    assert p.live_calls() == {"trunk:carrier1": 2}
    tokens[0].release()
    tokens[0].release()  # idempotent: every teardown path may release
    assert p.live_calls()["trunk:carrier1"] == 1
    assert isinstance(p.check_invite(invite(), CARRIER, NOW), Caller)
    assert not security_lines  # a busy carrier is no attacker: fail2ban must not see it

    cps = policy(users={}, trunks=[{"name": "c", "addresses": ["192.0.2.5"], "max_cps": 10}])
    admitted = [isinstance(cps.check_invite(invite(), CARRIER, NOW), Caller) for _ in range(20)]
    assert admitted.count(True) == 10  # a full bucket: one second's worth at once...
    results = [cps.check_invite(invite(), CARRIER, NOW + 1 + i * 0.05) for i in range(40)]  # 20/s for 2 s
    assert 29 <= sum(isinstance(r, Caller) for r in results) <= 31  # ...then 10 per second
    assert {r.why for r in results if isinstance(r, Refusal)} == {"trunk-cps-limit"}


def test_a_user_call_limit() -> None:
    p = policy(users={"alice": {"password": "s3cret", "max_calls": 1}})
    alice = call(p, PHONE, "alice", "s3cret")
    assert isinstance(alice, Caller)
    token = p.call_started(alice)
    busy = call(p, PHONE, "alice", "s3cret")
    assert isinstance(busy, Refusal) and busy.why == "user-call-limit"
    token.release()
    assert isinstance(call(p, PHONE, "alice", "s3cret"), Caller)
    p.call_started(p.check_invite(invite(), ("127.0.0.1", 1), NOW)).release()  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- who may dial out
def test_dial_out_needs_the_permission(security_lines: list[str]) -> None:
    p = policy()
    alice = Caller(CallerKind.USER, "alice", False, "10.0.0.7")
    bob = Caller(CallerKind.USER, "bob", True, "10.0.0.8")
    carrier = Caller(CallerKind.TRUNK, "carrier1", False, "192.0.2.5")
    local = Caller(CallerKind.LOCAL, "", True, "127.0.0.1")
    for caller in (alice, carrier, local, None):  # registered phones: anyone
        assert p.check_dial(caller, DialTarget.REGISTERED_USER, "alice", NOW) is None
    assert p.check_dial(bob, DialTarget.GATEWAY, "18005551234", NOW) is None
    assert p.check_dial(local, DialTarget.URI, "sip:x@198.51.100.1", NOW) is None
    for caller in (alice, carrier, None):
        for target in (DialTarget.GATEWAY, DialTarget.URI):
            refusal = p.check_dial(caller, target, "0049 30 1234", NOW)
            assert refusal is not None and refusal.status == 403 and refusal.why == "no-dial-out"
    assert security_lines[0] == ("SECURITY dial-refused source=10.0.0.7 reason=no-dial-out caller=user:alice "
                                 "target=gateway dest=0049?30?1234")


# ---------------------------------------------------------------------------- config
def test_trunk_and_user_config_is_checked_with_clear_messages() -> None:
    [trunk] = parse_trunks([{"name": "c1", "addresses": "192.0.2.7", "max_cps": 5, "dial_out": True}])
    assert trunk == Trunk("c1", trunk.networks, max_cps=5.0, dial_out=True) and str(trunk.networks[0]) == "192.0.2.7/32"
    bad = [
        ([{"addresses": ["192.0.2.7"]}], "name must be"),
        ([{"name": "c1"}], "addresses must list"),
        ([{"name": "c1", "addresses": ["not-an-ip"]}], "'not-an-ip' is not an IP address"),
        ([{"name": "c1", "addresses": ["0.0.0.0/0"]}], "whole Internet"),
        ([{"name": "c1", "addresses": ["192.0.2.7"], "username": "u"}], "username and password go together"),
        ([{"name": "c1", "addresses": ["192.0.2.7"], "max_calls": -1}], "max_calls must be a whole number"),
        ([{"name": "c1", "addresses": ["192.0.2.7"], "dial_out": "yes"}], "dial_out must be true or false"),
        ([{"name": "c1", "addresses": ["192.0.2.7"], "max_cps": "5"}], "max_cps must be a number"),
        ([{"name": "c1", "addresses": ["192.0.2.7"], "adresses": []}], "unknown setting.*adresses"),
        ([{"name": "c1", "addresses": ["192.0.2.7"]}, {"name": "c1", "addresses": ["192.0.2.8"]}], "two trunks"),
        ([{"name": "a", "addresses": ["192.0.2.0/24"]}, {"name": "b", "addresses": ["192.0.2.0/24"]}], "both"),
        ({"name": "c1"}, "list of"),
    ]
    for raw, message in bad:
        with pytest.raises(ValueError, match=message):
            parse_trunks(raw)
    assert parse_trunks([{"name": "c1", "addresses": ["0.0.0.0/0"], "username": "u", "password": "p"}])
    assert parse_users({"alice": "s3cret", "bob": {"password": "b", "dial_out": True, "max_calls": 2}}) == {
        "alice": UserAccount("alice", "s3cret"), "bob": UserAccount("bob", "b", True, 2)}
    for users, message in [({"alice": ""}, "non-empty password"), ({"alice": {"dial_out": True}}, "password"),
                           ({"alice": 5}, "must be"), ({"alice": {"password": "x", "admin": True}}, "unknown")]:
        with pytest.raises(ValueError, match=message):
            parse_users(users)


def test_config_loads_trunks_users_and_throttle_settings(tmp_path: Path) -> None:
    path = tmp_path / "switch.toml"
    path.write_text('trust_loopback = false\nflood_density = 100\nauth_fail_limit = 3\ngateway = "sip:10.9.9.9:5060"\n'
                    '[users]\nalice = "s3cret"\nbob = { password = "b0b", dial_out = true }\n'
                    '[[trunks]]\nname = "carrier1"\naddresses = ["192.0.2.0/28"]\nmax_calls = 20\n')
    cfg = load(str(path), {})
    assert [t.name for t in cfg.trunk_list] == ["carrier1"] and cfg.accounts["bob"].dial_out
    p = AccessPolicy.from_config(cfg)
    assert not p.trust_loopback and p.flood.density == 100 and p.failures.limit == 3
    assert all(p.flood.allow("10.9.9.9", NOW) for _ in range(500))  # the gateway's BYEs are not a flood
    assert all(p.flood.allow("192.0.2.3", NOW) for _ in range(500))  # nor the trunk's traffic
    assert Registrar(cfg.users).users == {"alice": "s3cret", "bob": "b0b"}  # the table form registers too
    defaults = AccessPolicy.from_config(Config())
    assert defaults.trust_loopback and all(defaults.flood.allow("127.0.0.1", NOW) for _ in range(500))


@pytest.mark.parametrize("setting, message", [
    ("flood_window = 0", "flood_window must be a number from 0.1"),
    ("flood_density = 1.5", "flood_density must be a whole number"),
    ("flood_block_seconds = -1", "flood_block_seconds"),
    ("auth_fail_limit = true", "auth_fail_limit must be a whole number"),
    ("auth_block_seconds = 0", "auth_block_seconds"),
    ('trust_loopback = "yes"', "trust_loopback must be true or false"),
    ('[users]\nalice = { pass = "x" }', "users.alice: unknown setting"),
    ('[[trunks]]\nname = "c"\naddresses = ["300.1.1.1"]', "trunk 'c': addresses: '300.1.1.1'"),
])
def test_bad_settings_say_what_is_wrong(tmp_path: Path, setting: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(setting + "\n")
    with pytest.raises(ConfigError, match=message):
        load(str(path), {})
