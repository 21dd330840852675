"""Digest challenges and checks (RFC 2617, RFC 7616, RFC 8760), on virtual time."""

from __future__ import annotations

import pytest

from switch.security import digest
from switch.security.digest import DigestAuth, Outcome, digest_response, parse_digest
from switch.sip.message import SipRequest, parse_message

PHONE = "10.0.0.7"
NOW = 1000.0


def request(method: str = "INVITE", uri: str = "sip:1000@pbx", auth: str = "",
            header: str = "Proxy-Authorization") -> SipRequest:
    lines = [f"{method} {uri} SIP/2.0", "Via: SIP/2.0/UDP 10.0.0.7:5062;branch=z9hG4bK1",
             "From: <sip:alice@pbx>;tag=1", "To: <sip:1000@pbx>", "Call-ID: d1", f"CSeq: 1 {method}",
             "Content-Length: 0"]
    if auth:
        lines.append(f"{header}: {auth}")
    msg = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(msg, SipRequest)
    return msg


def answer(challenge: str, user: str = "alice", password: str = "s3cret", *, nc: int = 1, method: str = "INVITE",
           uri: str = "sip:1000@pbx", realm: str = "pbx", qop: bool = True) -> str:
    ch = parse_digest(challenge)
    algorithm = ch["algorithm"]
    count = f"{nc:08x}"
    if not qop:
        resp = digest_response(user, realm, password, method, uri, ch["nonce"], algorithm=algorithm)
        return (f'Digest username="{user}", realm="{realm}", nonce="{ch["nonce"]}", uri="{uri}", '
                f'response="{resp}", algorithm={algorithm}')
    resp = digest_response(user, realm, password, method, uri, ch["nonce"], "auth", count, "c1", algorithm)
    return (f'Digest username="{user}", realm="{realm}", nonce="{ch["nonce"]}", uri="{uri}", '
            f'response="{resp}", qop=auth, nc={count}, cnonce="c1", algorithm={algorithm}')


def check(auth: DigestAuth, credentials: str, *, now: float = NOW, client: str = PHONE,
          passwords: dict[str, str] | None = None, uri: str = "sip:1000@pbx") -> Outcome:
    req = request(uri=uri, auth=credentials)
    params = auth.credentials(req, "proxy-authorization")
    assert params is not None
    return auth.verify(req, params, passwords or {"alice": "s3cret"}, now, client).outcome


def test_rfc_examples() -> None:
    # RFC 2617 §3.5 (MD5, qop=auth) and RFC 7616 §3.9.1 (SHA-256 and MD5)
    assert digest_response("Mufasa", "testrealm@host.com", "Circle Of Life", "GET", "/dir/index.html",
                           "dcd98b7102dd2f0e8b11d0f600bfb0c093", "auth", "00000001",
                           "0a4f113b") == "6629fae49393a05397450978507c4ef1"
    args = ("Mufasa", "http-auth@example.org", "Circle of Life", "GET", "/dir/index.html",
            "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", "auth", "00000001",
            "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ")
    assert digest_response(*args, algorithm="MD5") == "8ca523f5e9506fed4657c9700eebdbec"
    assert digest_response(*args, algorithm="SHA-256") == (
        "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1")


def test_a_challenge_per_algorithm_sharing_one_nonce_for_www_or_proxy() -> None:
    auth = DigestAuth("pbx", ("SHA-256", "MD5"))
    headers = auth.challenge_headers(NOW, PHONE, proxy=True)
    [(name, values)] = headers.items()
    assert name == "proxy-authenticate" and isinstance(values, list)
    assert ["algorithm=SHA-256" in values[0], "algorithm=MD5" in values[1]] == [True, True]
    assert len({parse_digest(v)["nonce"] for v in values}) == 1
    assert all('realm="pbx"' in v and 'qop="auth"' in v and "stale" not in v for v in values)
    assert list(auth.challenge_headers(NOW, PHONE, stale=True)) == ["www-authenticate"]
    assert all("stale=true" in v for v in auth.challenges(NOW, PHONE, stale=True))
    with pytest.raises(ValueError, match="digest algorithms"):
        DigestAuth("pbx", ("SHA-512",))


def test_accepted_with_either_algorithm_then_the_count_must_go_up() -> None:
    auth = DigestAuth("pbx")
    md5, sha = auth.challenges(NOW, PHONE)
    assert check(auth, answer(md5)) is Outcome.ACCEPTED
    assert check(auth, answer(md5, nc=2)) is Outcome.ACCEPTED
    assert check(auth, answer(md5, nc=2)) is Outcome.REPLAYED  # RFC 7616 §3.4: a replay
    assert check(auth, answer(md5, nc=1)) is Outcome.REPLAYED
    assert check(auth, answer(sha)) is Outcome.REPLAYED  # the same nonce, whatever the algorithm
    fresh_sha = auth.challenges(NOW, PHONE)[1]
    assert check(auth, answer(fresh_sha)) is Outcome.ACCEPTED


def test_without_qop_a_nonce_serves_once() -> None:
    auth = DigestAuth("pbx")
    ch = auth.challenges(NOW, PHONE)[0]
    assert check(auth, answer(ch, qop=False)) is Outcome.ACCEPTED
    assert check(auth, answer(ch, qop=False)) is Outcome.REPLAYED


def test_wrong_password_and_unknown_user_are_the_same_wrong_after_the_same_work(
        monkeypatch: pytest.MonkeyPatch) -> None:
    auth = DigestAuth("pbx")
    calls: list[str] = []
    real = digest._hash

    def counted(algorithm: str, text: str) -> str:
        calls.append(algorithm)
        return real(algorithm, text)

    monkeypatch.setattr(digest, "_hash", counted)
    ch = auth.challenges(NOW, PHONE)[0]
    wrong, unknown = answer(ch, password="guess"), answer(ch, user="mallory", password="guess")
    calls.clear()
    assert check(auth, wrong) is Outcome.WRONG
    known = len(calls)
    calls.clear()
    assert check(auth, unknown) is Outcome.WRONG
    assert len(calls) == known == 3  # HA1, HA2, response: no shortcut for an unknown name


def test_nonces_expire_are_ours_only_and_bound_to_the_client() -> None:
    auth = DigestAuth("pbx", nonce_ttl=60)
    ch = auth.challenges(NOW, PHONE)[0]
    assert check(auth, answer(ch), now=NOW + 61) is Outcome.STALE
    assert check(auth, answer(ch), client="198.51.100.9") is Outcome.STALE  # fetched from elsewhere
    assert check(auth, answer(ch), now=NOW + 30) is Outcome.ACCEPTED
    other = DigestAuth("pbx").challenges(NOW, PHONE)[0]  # another secret: a restart, or forged
    assert check(auth, answer(other)) is Outcome.UNKNOWN_NONCE
    forged = 'Digest realm="pbx", nonce="1000.00aa11bb22cc.0123456789abcdef", algorithm=MD5'
    assert check(auth, answer(forged)) is Outcome.UNKNOWN_NONCE
    assert check(auth, answer('Digest realm="pbx", nonce="é.x.y.z", algorithm=MD5')) is Outcome.UNKNOWN_NONCE


def test_algorithm_not_offered_and_digest_uri_for_another_request() -> None:
    auth = DigestAuth("pbx", ("SHA-256",))
    ch = auth.challenges(NOW, PHONE)[0]
    md5 = answer(ch).replace("algorithm=SHA-256", "algorithm=MD5")
    assert check(auth, md5) is Outcome.BAD_ALGORITHM
    assert check(auth, answer(ch, uri="sip:elsewhere@pbx")) is Outcome.URI_MISMATCH


def test_credentials_for_our_realm_are_picked_and_others_ignored() -> None:
    auth = DigestAuth("pbx")
    ch = auth.challenges(NOW, PHONE)[0]
    theirs = 'Digest username="x", realm="upstream", nonce="n", uri="sip:1000@pbx", response="00"'
    msg = request(auth=theirs)
    assert auth.credentials(msg, "proxy-authorization") is None
    msg.add("proxy-authorization", answer(ch))
    params = auth.credentials(msg, "proxy-authorization")
    assert params is not None and params["username"] == "alice"
    assert auth.credentials(request(auth="Basic YWxpY2U6cw=="), "proxy-authorization") is None
    assert auth.credentials(request(auth=answer(ch), header="Authorization"), "proxy-authorization") is None


def test_a_garbage_response_is_wrong_not_an_exception() -> None:
    auth = DigestAuth("pbx")
    ch = auth.challenges(NOW, PHONE)[0]
    nonce = parse_digest(ch)["nonce"]
    garbage = f'Digest username="alice", realm="pbx", nonce="{nonce}", uri="sip:1000@pbx", response="ünï"'
    assert check(auth, garbage) is Outcome.WRONG


def test_the_nonce_table_is_bounded_and_a_forgotten_nonce_is_never_replayable() -> None:
    auth = DigestAuth("pbx", max_nonces=2)
    first = auth.challenges(NOW, PHONE)[0]
    assert check(auth, answer(first)) is Outcome.ACCEPTED
    for _ in range(2):
        assert check(auth, answer(auth.challenges(NOW + 1, PHONE)[0])) is Outcome.ACCEPTED
    assert len(auth._used) == 2
    assert check(auth, answer(first, nc=2)) is Outcome.STALE  # forgotten: refused as if expired
    # expired records are dropped as new ones arrive
    assert check(auth, answer(auth.challenges(NOW + 100, PHONE)[0]), now=NOW + 100) is Outcome.ACCEPTED
    assert len(auth._used) == 1


def test_parse_digest_fast_and_careful_paths() -> None:
    plain = parse_digest('Digest username="alice", realm="pbx", qop=auth, nc=00000001, opaque=""')
    assert plain == {"username": "alice", "realm": "pbx", "qop": "auth", "nc": "00000001", "opaque": ""}
    # a comma or a quoted-pair inside a quoted value: walked character by character
    tricky = parse_digest('digest username="al\\"ice", uri="sip:a@b;x=1,2", realm=pbx')
    assert tricky == {"username": 'al"ice', "uri": "sip:a@b;x=1,2", "realm": "pbx"}
    assert parse_digest("Basic YWxpY2U6cw==") == {}
