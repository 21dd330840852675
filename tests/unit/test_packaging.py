"""The files an operator installs from packaging/: the example config names every setting
the switch knows and loads as it is (and with every setting uncommented); the systemd
unit restarts on the watchdog's exit and runs as its own user."""

from __future__ import annotations

import re
import tomllib
from dataclasses import fields
from pathlib import Path

from switch.config import Config, load

PACKAGING = Path(__file__).resolve().parents[2] / "packaging"


def uncommented() -> str:
    """The example with every commented setting turned on."""
    lines = []
    for line in (PACKAGING / "softswitch.toml").read_text().splitlines():
        m = re.match(r"^# ((?:\[\[?\w+\]\]?)|(?:\w+ = .*))$", line)
        lines.append(m.group(1) if m else line)
    return "\n".join(lines) + "\n"


def test_the_example_config_names_every_setting(tmp_path: Path) -> None:
    text = uncommented()
    named = set(re.findall(r"^(\w+) = ", text, re.M)) | set(re.findall(r"^\[\[?(\w+)\]\]?", text, re.M))
    missing = {f.name for f in fields(Config)} - named
    assert not missing, f"packaging/softswitch.toml does not mention {sorted(missing)}"


def test_the_example_config_loads_as_shipped_and_uncommented(tmp_path: Path) -> None:
    shipped = load(str(PACKAGING / "softswitch.toml"), {})
    assert shipped == Config()  # all commented out: the defaults
    on = tmp_path / "on.toml"
    on.write_text(uncommented())
    tomllib.loads(on.read_text())
    config = load(str(on), {"app": ""})
    assert config.users == {"alice": "a-long-secret"} and config.gateway_rules


def test_the_unit_restarts_and_runs_unprivileged() -> None:
    unit = (PACKAGING / "softswitch.service").read_text()
    assert re.search(r"^Restart=always$", unit, re.M)
    assert re.search(r"^User=softswitch$", unit, re.M)
    assert re.search(r"^StateDirectory=softswitch$", unit, re.M)
    assert "--config /etc/softswitch/softswitch.toml" in unit
