"""The registrar's digest authentication and bindings, on a fake clock."""

from switch.calls.registrar import Registrar, digest_response, parse_digest
from switch.sip.message import parse_message

SOURCE = ("10.0.0.7", 5062)


def test_rfc2617_example_digest():
    # RFC 2617 §3.5 (qop=auth)
    assert digest_response("Mufasa", "testrealm@host.com", "Circle Of Life", "GET", "/dir/index.html",
                           "dcd98b7102dd2f0e8b11d0f600bfb0c093", "auth", "00000001",
                           "0a4f113b") == "6629fae49393a05397450978507c4ef1"


def register(user="alice", contact="<sip:alice@10.0.0.7:5062>", auth="", expires="", cseq=1):
    lines = ["REGISTER sip:pbx SIP/2.0", "Via: SIP/2.0/UDP 10.0.0.7:5062;branch=z9hG4bK1",
             f"From: <sip:{user}@pbx>;tag=1", f"To: <sip:{user}@pbx>", "Call-ID: r1", f"CSeq: {cseq} REGISTER",
             f"Contact: {contact}", "Content-Length: 0"]
    if auth:
        lines.append(f"Authorization: {auth}")
    if expires:
        lines.append(f"Expires: {expires}")
    return parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())


def answer(challenge_header: str, user: str, password: str, realm: str = "pbx") -> str:
    ch = parse_digest(challenge_header)
    resp = digest_response(user, realm, password, "REGISTER", "sip:pbx", ch["nonce"], "auth", "00000001", "c1")
    return (f'Digest username="{user}", realm="{realm}", nonce="{ch["nonce"]}", uri="sip:pbx", '
            f'response="{resp}", qop=auth, nc=00000001, cnonce="c1", algorithm=MD5')


class Clock:
    now = 1000.0

    def __call__(self):
        return self.now


def test_challenge_then_register_then_lookup_and_expiry():
    clock = Clock()
    reg = Registrar({"alice": "s3cret"}, realm="pbx", clock=clock)
    first = reg.handle(register(), SOURCE)
    assert first.status == 401 and 'realm="pbx"' in first.get("www-authenticate")
    ok = reg.handle(register(auth=answer(first.get("www-authenticate"), "alice", "s3cret"), expires="60"), SOURCE)
    assert ok.status == 200 and ok.get("contact") == "<sip:alice@10.0.0.7:5062>;expires=60"
    (binding,) = reg.lookup("alice")
    uri, addr = binding.target()
    assert str(uri) == "sip:alice@10.0.0.7:5062" and addr == SOURCE
    clock.now += 61
    assert reg.lookup("alice") == []


def test_wrong_password_other_account_stale_nonce_and_unregister():
    clock = Clock()
    reg = Registrar({"alice": "s3cret", "bob": "b0b"}, realm="pbx", clock=clock)
    ch = reg.handle(register(), SOURCE).get("www-authenticate")
    assert reg.handle(register(auth=answer(ch, "alice", "nope")), SOURCE).status == 401
    assert reg.handle(register(auth=answer(ch, "bob", "b0b")), SOURCE).status == 403  # bob registering alice
    clock.now += 301
    stale = reg.handle(register(auth=answer(ch, "alice", "s3cret")), SOURCE)
    assert stale.status == 401 and "stale=true" in stale.get("www-authenticate")
    ch = stale.get("www-authenticate")
    assert reg.handle(register(auth=answer(ch, "alice", "s3cret")), SOURCE).status == 200
    gone = reg.handle(register(contact="*", expires="0", auth=answer(ch, "alice", "s3cret")), SOURCE)
    assert gone.status == 200 and reg.lookup("alice") == []


def test_a_phone_behind_nat_is_reached_at_the_register_source():
    reg = Registrar({"alice": "s3cret"}, realm="pbx", clock=Clock())
    ch = reg.handle(register(), ("203.0.113.5", 40000)).get("www-authenticate")
    reg.handle(register(contact="<sip:alice@192.168.1.20:5060>", auth=answer(ch, "alice", "s3cret")),
               ("203.0.113.5", 40000))
    uri, addr = reg.lookup("alice")[0].target()
    assert str(uri) == "sip:alice@192.168.1.20:5060" and addr == ("203.0.113.5", 40000)
