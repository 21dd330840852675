"""Where StartBridgedCall(dest) goes: CallEngine.route (no sockets: a fake transport)."""

import asyncio

import pytest

from switch.calls.engine import CallEngine, OutboundRoutes
from switch.calls.outbound import Credentials
from switch.tasks.boundary import CallError


class FakeSip:
    local_addr = ("127.0.0.1", 5070)
    tls_addr = ("127.0.0.1", 5071)
    user = None


def engine(default="sip:10.0.0.1:5060", routes=(("1800", "sip:10.0.0.2:5080"),)):
    loop = asyncio.new_event_loop()
    try:
        return CallEngine(loop, FakeSip(), None, None, open_media=None, launch=None,  # type: ignore[arg-type]
                          gateways=OutboundRoutes(default, list(routes)))
    finally:
        loop.close()


@pytest.mark.parametrize("dest, expected", [
    ("1000", "sip:1000@10.0.0.1:5060"),                         # bare number: default gateway
    ("18005551234", "sip:18005551234@10.0.0.2:5080"),           # longest prefix wins
    ('"Bob" <sip:1000@127.0.0.1:5070>;tag=x', "sip:1000@10.0.0.1:5060"),  # To header naming us
    ("sip:1000@127.0.0.1", "sip:1000@10.0.0.1:5060"),           # no port (RFC 3261 §19.1.1): us
    ("sip:bob@192.0.2.7:5062", "sip:bob@192.0.2.7:5062"),       # elsewhere: called directly
    ("sip:1000@127.0.0.1:5999", "sip:1000@127.0.0.1:5999"),     # our host, another port: not us
    ("tel:+4930123", "sip:+4930123@10.0.0.1:5060"),
])
def test_route(dest, expected):
    route = engine().route(dest)
    uri, addr = route.uri, route.addr
    assert str(uri) == expected and addr == (uri.host, uri.port)


def test_no_gateway_is_a_clear_error():
    with pytest.raises(CallError, match="configure a gateway"):
        engine(default=None, routes=()).route("1000")
    with pytest.raises(CallError, match="not a SIP URI"):
        engine().route("sip:")


def test_a_gateways_credentials_travel_with_its_routes() -> None:
    loop = asyncio.new_event_loop()
    try:
        e = CallEngine(loop, FakeSip(), None, None, open_media=None, launch=None,  # type: ignore[arg-type]
                       gateways=OutboundRoutes("sip:10.0.0.1:5060", [("1800", "sip:10.0.0.2:5080")],
                                               {"sip:10.0.0.2:5080": Credentials("pbx1", "pw")}))
    finally:
        loop.close()
    assert e.route("18005551234").credentials == Credentials("pbx1", "pw")
    assert e.route("1000").credentials is None and e.route("sip:bob@192.0.2.7").credentials is None


def test_a_gateways_srtp_setting_travels_with_its_routes(tmp_path) -> None:
    from switch.config import load

    path = tmp_path / "srtp.toml"
    path.write_text('gateway = "sip:10.0.0.1:5060"\ngateway_srtp = false\n'
                    '[[outbound_routes]]\nprefix = "1800"\ngateway = "sip:10.0.0.2:5080"\nsrtp = true\n')
    config = load(str(path), {})
    assert config.srtp_gateways == {"sip:10.0.0.2:5080"} and config.srtp == "optional"
    loop = asyncio.new_event_loop()
    try:
        e = CallEngine(loop, FakeSip(), None, None, open_media=None, launch=None,  # type: ignore[arg-type]
                       gateways=OutboundRoutes(config.gateway, config.gateway_rules, srtp=config.srtp_gateways))
    finally:
        loop.close()
    assert e.route("18005551234").srtp and not e.route("1000").srtp and not e.route("sip:bob@192.0.2.7").srtp


@pytest.mark.parametrize("setting, message", [
    ('srtp = "mandatory"', 'srtp must be "off", "optional" or "required"'),
    ('gateway_srtp = "yes"', "gateway_srtp must be true or false"),
    ('[[outbound_routes]]\nprefix = "1"\ngateway = "sip:10.0.0.2"\nsrtp = 1', "srtp of gateway 'sip:10.0.0.2'"),
])
def test_bad_srtp_settings_say_what_is_wrong(tmp_path, setting: str, message: str) -> None:
    from switch.config import ConfigError, load

    path = tmp_path / "bad.toml"
    path.write_text(setting + "\n")
    with pytest.raises(ConfigError, match=message):
        load(str(path), {})


@pytest.mark.parametrize("dest, expected, addr", [
    ("sips:bob@pbx.example.com", "sips:bob@pbx.example.com", ("pbx.example.com", 5061)),  # RFC 3263 §4.2
    ("sip:bob@192.0.2.7;transport=TLS", "sip:bob@192.0.2.7;transport=TLS", ("192.0.2.7", 5061)),
    ("sips:bob@[2001:db8::7]:5071", "sips:bob@[2001:db8::7]:5071", ("2001:db8::7", 5071)),
    ("sip:1000@127.0.0.1:5071", "sip:1000@10.0.0.1:5060", ("10.0.0.1", 5060)),  # our TLS port is us too
])
def test_a_dialled_tls_uri_keeps_its_scheme_and_transport_and_defaults_to_5061(dest, expected, addr):
    route = engine().route(dest)
    assert str(route.uri) == expected and route.addr == addr
    assert route.tls == (addr[1] != 5060)


def test_a_tls_gateway_gets_the_number_in_its_own_scheme_and_transport():
    e = engine(default="sips:trunk.example.net", routes=(("1800", "sip:10.0.0.2;transport=tls;lr"),))
    one, two = e.route("1000"), e.route("18005551234")
    assert (str(one.uri), one.addr, one.tls, one.server_name) == (
        "sips:1000@trunk.example.net", ("trunk.example.net", 5061), True, "trunk.example.net")
    assert (str(two.uri), two.addr, two.tls) == ("sip:18005551234@10.0.0.2;transport=tls", ("10.0.0.2", 5061), True)
    assert not engine().route("1000").tls
    assert [str(g) for g in e.router.gateways.gateways()] == ["sip:10.0.0.2;transport=tls;lr", "sips:trunk.example.net"]
