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
