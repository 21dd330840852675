"""The registrar's digest authentication and bindings, on a fake clock."""

import itertools

import pytest

from switch.calls.registrar import Registrar, digest_response, parse_digest
from switch.sip.message import parse_message
from switch.sip.uri import SipUri, same_uri
from test_rfc4475 import fixture

SOURCE = ("10.0.0.7", 5062)


def test_rfc2617_example_digest():
    # RFC 2617 §3.5 (qop=auth)
    assert digest_response("Mufasa", "testrealm@host.com", "Circle Of Life", "GET", "/dir/index.html",
                           "dcd98b7102dd2f0e8b11d0f600bfb0c093", "auth", "00000001",
                           "0a4f113b") == "6629fae49393a05397450978507c4ef1"


_CSEQ = itertools.count(1)


def register(user="alice", contact="<sip:alice@10.0.0.7:5062>", auth="", expires="", cseq=None):
    """A REGISTER of Call-ID r1; its CSeq goes up with each one made, as a phone's does
    (RFC 3261 §10.2: the registrar refuses one that does not, §10.3 step 7)."""
    cseq = next(_CSEQ) if cseq is None else cseq
    lines = ["REGISTER sip:pbx SIP/2.0", "Via: SIP/2.0/UDP 10.0.0.7:5062;branch=z9hG4bK1",
             f"From: <sip:{user}@pbx>;tag=1", f"To: <sip:{user}@pbx>", "Call-ID: r1", f"CSeq: {cseq} REGISTER",
             f"Contact: {contact}", "Content-Length: 0"]
    if auth:
        lines.append(f"Authorization: {auth}")
    if expires:
        lines.append(f"Expires: {expires}")
    return parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())


def answer(challenge_header: str, user: str, password: str, realm: str = "pbx", nc: int = 1,
           algorithm: str = "MD5", uri: str = "sip:pbx") -> str:
    ch = parse_digest(challenge_header)
    count = f"{nc:08x}"
    resp = digest_response(user, realm, password, "REGISTER", uri, ch["nonce"], "auth", count, "c1", algorithm)
    return (f'Digest username="{user}", realm="{realm}", nonce="{ch["nonce"]}", uri="{uri}", '
            f'response="{resp}", qop=auth, nc={count}, cnonce="c1", algorithm={algorithm}')


def challenge_of(response, algorithm: str = "MD5") -> str:
    """The WWW-Authenticate challenge for ``algorithm`` (the registrar offers SHA-256 and MD5)."""
    [ch] = [c for c in response.get_all("www-authenticate") if f"algorithm={algorithm}" in c]
    return ch


class Clock:
    now = 1000.0

    def __call__(self):
        return self.now


def test_challenge_then_register_then_lookup_and_expiry():
    clock = Clock()
    reg = Registrar({"alice": "s3cret"}, realm="pbx", clock=clock)
    first = reg.handle(register(), SOURCE)
    assert first.status == 401 and 'realm="pbx"' in first.get("www-authenticate")
    ok = reg.handle(register(auth=answer(challenge_of(first), "alice", "s3cret"), expires="60"), SOURCE)
    assert ok.status == 200 and ok.get("contact") == "<sip:alice@10.0.0.7:5062>;expires=60"
    (binding,) = reg.lookup("alice")
    uri, addr = binding.target()
    assert str(uri) == "sip:alice@10.0.0.7:5062" and addr == SOURCE
    clock.now += 61
    assert reg.lookup("alice") == []


def test_wrong_password_other_account_stale_nonce_and_unregister():
    clock = Clock()
    reg = Registrar({"alice": "s3cret", "bob": "b0b"}, realm="pbx", clock=clock)
    ch = challenge_of(reg.handle(register(), SOURCE))
    # a wrong password over a fresh nonce of ours: 403 at once, not another 401 to retry
    assert reg.handle(register(auth=answer(ch, "alice", "nope")), SOURCE).status == 403
    assert reg.handle(register(auth=answer(ch, "bob", "b0b")), SOURCE).status == 403  # bob registering alice
    clock.now += 61
    stale = reg.handle(register(auth=answer(ch, "alice", "s3cret")), SOURCE)
    assert stale.status == 401 and all("stale=true" in c for c in stale.get_all("www-authenticate"))
    ch = challenge_of(stale)
    assert reg.handle(register(auth=answer(ch, "alice", "s3cret")), SOURCE).status == 200
    gone = reg.handle(register(contact="*", expires="0", auth=answer(ch, "alice", "s3cret", nc=2)), SOURCE)
    assert gone.status == 200 and reg.lookup("alice") == []


def test_a_phone_behind_nat_is_reached_at_the_register_source():
    reg = Registrar({"alice": "s3cret"}, realm="pbx", clock=Clock())
    ch = challenge_of(reg.handle(register(), ("203.0.113.5", 40000)))
    reg.handle(register(contact="<sip:alice@192.168.1.20:5060>", auth=answer(ch, "alice", "s3cret")),
               ("203.0.113.5", 40000))
    uri, addr = reg.lookup("alice")[0].target()
    assert str(uri) == "sip:alice@192.168.1.20:5060" and addr == ("203.0.113.5", 40000)


def test_a_replayed_authorization_binds_nothing():
    # A captured REGISTER (nc=00000001) replayed with the attacker's Contact: a fresh
    # challenge (stale=true, so the real phone just retries), and no binding moves.
    reg = Registrar({"alice": "s3cret"}, realm="pbx", clock=Clock())
    auth = answer(challenge_of(reg.handle(register(), SOURCE)), "alice", "s3cret")
    assert reg.handle(register(auth=auth), SOURCE).status == 200
    replay = reg.handle(register(contact="<sip:alice@198.51.100.9:5060>", auth=auth), ("198.51.100.9", 5060))
    assert replay.status == 401 and "stale=true" in replay.get("www-authenticate")
    assert [b.contact for b in reg.lookup("alice")] == ["sip:alice@10.0.0.7:5062"]


def test_the_nonce_count_must_go_up_and_a_nonce_without_qop_serves_once():
    reg = Registrar({"alice": "s3cret"}, realm="pbx", clock=Clock())
    ch = challenge_of(reg.handle(register(), SOURCE))
    assert reg.handle(register(auth=answer(ch, "alice", "s3cret", nc=1)), SOURCE).status == 200
    assert reg.handle(register(auth=answer(ch, "alice", "s3cret", nc=3)), SOURCE).status == 200
    assert reg.handle(register(auth=answer(ch, "alice", "s3cret", nc=2)), SOURCE).status == 401
    nonce = parse_digest(challenge_of(reg.handle(register(), SOURCE)))["nonce"]
    resp = digest_response("alice", "pbx", "s3cret", "REGISTER", "sip:pbx", nonce)  # RFC 2069 style
    plain = f'Digest username="alice", realm="pbx", nonce="{nonce}", uri="sip:pbx", response="{resp}"'
    assert reg.handle(register(auth=plain), SOURCE).status == 200
    assert reg.handle(register(auth=plain), SOURCE).status == 401


def test_sha256_digest_is_offered_and_accepted():
    assert [("algorithm=" + a) in c for a, c in zip(("MD5", "SHA-256"), Registrar(
        {"alice": "s3cret"}, realm="pbx", clock=Clock()).handle(register(), SOURCE).get_all("www-authenticate"))] == [
        True, True]  # the default order: MD5 first, for phones that read only the first challenge
    reg = Registrar({"alice": "s3cret"}, realm="pbx", clock=Clock(), algorithms=("SHA-256", "MD5"))
    first = reg.handle(register(), SOURCE)
    offered = first.get_all("www-authenticate")
    assert ["algorithm=SHA-256" in offered[0], "algorithm=MD5" in offered[1]] == [True, True]
    ok = reg.handle(register(auth=answer(challenge_of(first, "SHA-256"), "alice", "s3cret", algorithm="SHA-256")),
                    SOURCE)
    assert ok.status == 200
    wrong = reg.handle(register(auth=answer(challenge_of(first, "SHA-256"), "alice", "nope", nc=2,
                                             algorithm="SHA-256")), SOURCE)
    assert wrong.status == 403


def test_unknown_and_known_users_get_the_same_answers():
    reg = Registrar({"alice": "s3cret"}, realm="pbx", clock=Clock())
    ch = challenge_of(reg.handle(register(user="mallory"), SOURCE))
    unknown = reg.handle(register(user="mallory", auth=answer(ch, "mallory", "guess")), SOURCE)
    known = reg.handle(register(auth=answer(ch, "alice", "guess", nc=2)), SOURCE)
    assert (unknown.status, unknown.reason) == (known.status, known.reason) == (403, "Forbidden")


def test_a_forged_nonce_gets_a_plain_challenge_and_the_digest_uri_must_match():
    reg = Registrar({"alice": "s3cret"}, realm="pbx", clock=Clock())
    forged = answer('Digest realm="pbx", nonce="1000.00aa11bb22cc.0123456789abcdef01234567"', "alice", "s3cret")
    again = reg.handle(register(auth=forged), SOURCE)
    assert again.status == 401 and "stale" not in again.get("www-authenticate")
    ch = challenge_of(reg.handle(register(), SOURCE))
    other = reg.handle(register(auth=answer(ch, "alice", "s3cret", uri="sip:elsewhere")), SOURCE)
    assert other.status == 400


def test_a_phone_registered_over_tcp_is_called_over_its_connection():
    # RFC 5626-style flow reuse: the REGISTER's connection, not a new UDP flow to the Contact
    reg = Registrar({"alice": "s3cret"}, realm="pbx", clock=Clock())
    conn = ("127.0.0.1", 40123)
    ch = challenge_of(reg.handle(register(), conn, over_tcp=True))
    reg.handle(register(contact="<sip:alice@127.0.0.1:5070;transport=tcp>", auth=answer(ch, "alice", "s3cret")),
               conn, over_tcp=True)
    uri, addr = reg.lookup("alice")[0].target()
    assert str(uri) == "sip:alice@127.0.0.1:5070;transport=tcp" and addr == conn


# --------------------------------------------------------------------- RFC 4475's REGISTERs, §10.3
# Each fixture sent as is, then again with our challenge answered (its Request-URI,
# sip:example.com, is the digest uri), as a phone would.
TORTURE_SOURCE = ("192.0.2.21", 5060)


def torture_registrar(user: str) -> Registrar:
    return Registrar({user: "pw"}, realm="pbx", clock=Clock())


def with_authorization(data: bytes, auth: str) -> bytes:
    head, sep, rest = data.partition(b"\r\n\r\n")
    return head + b"\r\nAuthorization: " + auth.encode() + sep + rest


def registered(name: str, user: str, reg: Registrar | None = None):
    """The registrar's answer to fixture ``name`` from account ``user`` once challenged."""
    reg = reg or torture_registrar(user)
    data = fixture(name)
    challenge = reg.handle(parse_message(data), TORTURE_SOURCE)
    assert challenge.status == 401, challenge
    auth = answer(challenge_of(challenge), user, "pw", uri="sip:example.com")
    return reg.handle(parse_message(with_authorization(data, auth)), TORTURE_SOURCE), reg


def test_cparam01_unknownparam_is_a_contact_parameter_and_is_kept():
    # RFC 4475 §3.3.12: in an addr-spec Contact the parameter is the header's, not the URI's.
    ok, reg = registered("cparam01", "watson")
    assert ok.status == 200 and ok.get("contact") == "<sip:+19725552222@gw1.example.net>;unknownparam;expires=3600"
    (binding,) = reg.lookup("watson")
    assert binding.contact == "sip:+19725552222@gw1.example.net" and binding.uri.params == {}


def test_cparam02_unknownparam_is_a_uri_parameter_and_stays_in_the_uri():
    # RFC 4475 §3.3.13: inside <> it is the URI's; the binding's URI keeps it.
    ok, reg = registered("cparam02", "watson")
    assert ok.status == 200 and ok.get("contact") == "<sip:+19725552222@gw1.example.net;unknownparam>;expires=3600"
    (binding,) = reg.lookup("watson")
    assert binding.uri.params == {"unknownparam": None}
    assert str(binding.target()[0]) == "sip:+19725552222@gw1.example.net;unknownparam"


def test_regescrt_the_escaped_header_is_stored_and_returned_but_never_called():
    # RFC 4475 §3.3.14: the registrar accepts it and returns the escaped Route header in the
    # binding; a call to it must not carry headers in its Request-URI (RFC 3261 §19.1.1).
    ok, reg = registered("regescrt", "user")
    assert ok.status == 200 and ok.get("contact") == "<sip:user@example.com?Route=%3Csip:sip.example.com%3E>;expires=3600"
    (binding,) = reg.lookup("user")
    assert binding.uri.headers == "Route=%3Csip:sip.example.com%3E"
    assert str(binding.target()[0]) == "sip:user@example.com"


def test_unksm2_a_to_that_is_not_sip_is_refused_400_before_any_challenge():
    # RFC 4475 §3.3.4: "a registrar would reject this request with a 400 Bad Request
    # response, since the To: header field is required to contain a SIP or SIPS URI".
    reg = torture_registrar("2983792873")
    refused = reg.handle(parse_message(fixture("unksm2")), TORTURE_SOURCE)
    assert refused.status == 400 and "address-of-record" in refused.reason
    assert refused.get("www-authenticate") is None and reg.bindings == {}


def test_regaut01_an_unknown_authorization_scheme_gets_our_digest_challenge():
    # RFC 4475 §3.3.7: credentials in a scheme we do not know are no credentials.
    reg = torture_registrar("j.user")
    challenged = reg.handle(parse_message(fixture("regaut01")), TORTURE_SOURCE)
    assert challenged.status == 401 and challenged.get_all("www-authenticate")
    assert all(c.startswith("Digest ") for c in challenged.get_all("www-authenticate"))
    assert reg.bindings == {}


def test_dblreq_the_register_before_the_stray_invite_binds():
    ok, reg = registered("dblreq", "j.user")
    assert ok.status == 200 and [b.contact for b in reg.lookup("j.user")] == ["sip:j.user@host.example.com"]


def test_escnull_two_contacts_that_differ_after_a_nul_are_two_bindings():
    # RFC 4475 §3.1.1.12: unescaping must not shorten at the NUL: two distinct contacts.
    msg = parse_message(fixture("escnull"))
    reg = torture_registrar("null-\x00-null")
    response = reg._update(msg, "null-\x00-null", TORTURE_SOURCE)  # (the digest of a NUL name aside)
    assert response.status == 200 and [b.contact for b in reg.lookup("null-\x00-null")] == [
        "sip:%00@host5.example.com", "sip:%00%00@host5.example.com"]
    assert response.get_all("contact") == ["<sip:%00@host5.example.com>;expires=3600",
                                           "<sip:%00%00@host5.example.com>;expires=3600"]


def test_a_contact_equivalent_to_a_binding_updates_it_and_params_follow_the_latest():
    reg = Registrar({"alice": "s3cret"}, realm="pbx", clock=Clock())
    ch = challenge_of(reg.handle(register(), SOURCE))
    assert reg.handle(register(contact="<sip:alice@10.0.0.7:5062>;q=0.5",
                               auth=answer(ch, "alice", "s3cret", nc=1)), SOURCE).status == 200
    # §19.1.4: %61 is "a" and host case does not matter: the same binding, refreshed.
    ok = reg.handle(register(contact="<sip:%61lice@10.0.0.7:5062>;expires=60;+sip.instance=\"<urn:x>\"",
                             auth=answer(ch, "alice", "s3cret", nc=2)), SOURCE)
    assert ok.status == 200 and ok.get_all("contact") == ['<sip:%61lice@10.0.0.7:5062>;+sip.instance="<urn:x>";expires=60']
    # sip:alice@10.0.0.7 (no port) is another URI than ...:5062: a second binding.
    two = reg.handle(register(contact="<sip:alice@10.0.0.7>", auth=answer(ch, "alice", "s3cret", nc=3)), SOURCE)
    assert len(two.get_all("contact")) == 2 and len(reg.lookup("alice")) == 2


def test_an_old_register_delivered_late_changes_nothing():
    # §10.3 step 7: same Call-ID, CSeq not higher: "the update MUST be aborted".
    reg = Registrar({"alice": "s3cret"}, realm="pbx", clock=Clock())
    ch = challenge_of(reg.handle(register(), SOURCE))
    assert reg.handle(register(cseq=10, auth=answer(ch, "alice", "s3cret", nc=1)), SOURCE).status == 200
    late = reg.handle(register(cseq=9, expires="0", auth=answer(ch, "alice", "s3cret", nc=2)), SOURCE)
    assert late.status == 400 and "CSeq" in late.reason and len(reg.lookup("alice")) == 1
    late_star = reg.handle(register(cseq=10, contact="*", expires="0", auth=answer(ch, "alice", "s3cret", nc=3)),
                           SOURCE)
    assert late_star.status == 400 and len(reg.lookup("alice")) == 1
    assert reg.handle(register(cseq=11, expires="0", auth=answer(ch, "alice", "s3cret", nc=4)), SOURCE).status == 200
    assert reg.lookup("alice") == []  # the newer one removes it (Expires: 0)


def test_contact_star_only_alone_and_with_expires_zero():
    # §10.3 step 6.
    reg = Registrar({"alice": "s3cret"}, realm="pbx", clock=Clock())
    ch = challenge_of(reg.handle(register(), SOURCE))
    mixed = reg.handle(register(contact="*, <sip:alice@10.0.0.7>", expires="0",
                                auth=answer(ch, "alice", "s3cret", nc=1)), SOURCE)
    assert mixed.status == 400 and "alone" in mixed.reason
    forever = reg.handle(register(contact="*", expires="3600", auth=answer(ch, "alice", "s3cret", nc=2)), SOURCE)
    assert forever.status == 400


def test_a_contact_the_switch_cannot_call_is_refused_with_the_reason():
    reg = Registrar({"alice": "s3cret"}, realm="pbx", clock=Clock())
    ch = challenge_of(reg.handle(register(), SOURCE))
    refused = reg.handle(register(contact="<mailto:alice@example.com>", auth=answer(ch, "alice", "s3cret")), SOURCE)
    assert refused.status == 400 and "sip: and sips:" in refused.reason and reg.lookup("alice") == []


# RFC 3261 §19.1.4's own examples.
@pytest.mark.parametrize("a, b", [
    ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
    ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;newparam=5"),
    ("sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
     "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com"),
    ("sip:alice@atlanta.com?subject=project%20x&priority=urgent",
     "sip:alice@atlanta.com?priority=urgent&subject=project%20x"),
])
def test_equivalent_uris(a: str, b: str) -> None:
    assert same_uri(SipUri.parse(a), SipUri.parse(b)) and same_uri(SipUri.parse(b), SipUri.parse(a))


@pytest.mark.parametrize("a, b", [
    ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),  # the user differs
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),  # a port vs none
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),  # transport must match if either has it
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),  # headers must match
    ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),  # a name is not its address
    ("sip:%00@host5.example.com", "sip:%00%00@host5.example.com"),  # RFC 4475 §3.1.1.12
])
def test_uris_that_differ(a: str, b: str) -> None:
    assert not same_uri(SipUri.parse(a), SipUri.parse(b)) and not same_uri(SipUri.parse(b), SipUri.parse(a))
def test_a_new_binding_is_listed_with_exactly_the_expiry_granted():
    # (now + 3600) - now is 3599.99... for many float values of now; the 200 must still
    # say 3600 (it was a flaky e2e failure: "expires=3599").
    from switch.calls.registrar import Binding

    for i in range(2000):
        now = 1000 + i * 0.0137
        b = Binding("sip:a@127.0.0.1", ("127.0.0.1", 5060), now + 3600)
        assert b.header(now).endswith(";expires=3600"), (now, b.header(now))
