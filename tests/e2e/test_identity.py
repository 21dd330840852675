"""What the switch calls itself on the wire (RFC 3261 §20.35 Server, §20.41 User-Agent):
the product name, and its version only when the operator asks (`server_version`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .harness import SipSocket, sip_request

pytestmark = pytest.mark.e2e


def server_header(sw) -> str | None:  # type: ignore[no-untyped-def]
    with SipSocket() as s:
        s.send(sip_request("OPTIONS", sw.sip_addr, s.addr), sw.sip_addr)
        [answer] = s.recv_all(2.0)
    m = re.search(rb"^Server:[ \t]*(.*?)\r$", answer, re.M | re.I)
    return m.group(1).decode() if m else None


def test_responses_name_the_product_without_its_version(switch):
    assert server_header(switch("greeting")) == "softswitch"


def test_server_version_adds_the_version(switch, tmp_path: Path):
    config = tmp_path / "switch.toml"
    config.write_text("server_version = true\n")
    value = server_header(switch("greeting", ["--config", str(config)]))
    assert value is not None and value.startswith("softswitch/") and len(value) > len("softswitch/")
