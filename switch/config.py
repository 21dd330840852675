"""Configuration: embedded defaults, an optional TOML file, then command-line flags.

Precedence (lowest to highest): DEFAULTS below, the file given with --config,
the flags. Keys in the file are the flag names with '_' for '-':

    listen = "0.0.0.0:5060"
    rtp_ports = "20000-29999"
    app = "/srv/apps/greeting"
    data_dir = "/var/lib/softswitch"
    log_level = "info"
    advertise = "203.0.113.10"   # address put in Contact/SDP when behind NAT
    max_calls = 5000
    task_memory_mb = 32
    control = "127.0.0.1:5080"   # control API (softswitch installapp/apps/calls...); "off" disables
    control_token = "..."        # required as "Authorization: Bearer ..." when set
    gateway = "sip:10.0.0.1:5060"  # where StartBridgedCall sends numbers (default gateway)
    sip_t1 = 0.5                 # RFC 3261 T1; an unanswered INVITE fails with 408 after 64*T1
    js_workers = 2               # JS worker processes running the tasks (default: one per core)
    task_cpu_seconds = 5         # a task computing this long without calling a verb is stopped
    watchdog_s = 10              # the switch's own event loop stuck this long (a bug of ours):
                                 # log and exit 70 for the supervisor to restart; 0 = off

    server_version = false       # Server/User-Agent headers name the version too (scanners see it)
    digest_algorithms = ["MD5", "SHA-256"]  # REGISTER challenges, in this order (RFC 8760):
                                 # many phones answer only the first; SHA-256 first where all can
    [users]                      # SIP accounts that may REGISTER (digest auth, realm set by
    alice = "s3cret"             # the top-level key realm = "..."); without any, REGISTER gets
                                 # 405. Calls the apps place to "alice" then reach her phone.

    [[outbound_routes]]          # numbers starting with prefix go to that gateway instead
    prefix = "1800"
    gateway = "sip:10.0.0.2:5060"

    [[routes]]                   # which installed app serves an INVITE (after the API's rules)
    match = "1800*"              # Request-URI user glob, or "@domain" glob
    app = "tollfree"

Without ``app`` the switch serves installed apps (``softswitch installapp``) through the
route table; with it, that one directory serves every call (development mode).
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
BUNDLED_APPS = PACKAGE_ROOT / "js_apps"
DEFAULT_APP = BUNDLED_APPS / "greeting"
DEFAULT_CONTROL = "127.0.0.1:5080"


class ConfigError(ValueError):
    """A setting is wrong; the message says which and how to fix it."""


def default_data_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/softswitch")
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "softswitch"


@dataclass
class Config:
    listen: str = "0.0.0.0:5060"
    rtp_ports: str = "20000-29999"
    app: str = ""  # "": installed apps + routes (DEFAULT_APP serves 'default' until one is installed)
    data_dir: str = ""
    log_level: str = "info"
    log_format: str = "text"
    advertise: str = ""
    max_calls: int = 5000
    task_memory_mb: int = 32
    control: str = ""  # "": 127.0.0.1:5080, best effort (a busy port only logs); "off"; HOST:PORT
    control_token: str = ""
    routes: list = field(default_factory=list)  # [{"match": PATTERN, "app": NAME}, ...]
    gateway: str = ""  # default gateway for numbers dialled by StartBridgedCall: "sip:HOST:PORT"
    outbound_routes: list = field(default_factory=list)  # [{"prefix": "1800", "gateway": URI}, ...]
    sip_t1: float = 0.5  # RFC 3261 T1 (s): Timer B/F (no answer -> 408) = 64*T1
    users: dict = field(default_factory=dict)  # [users] name = "password": accounts that may REGISTER
    realm: str = "softswitch"  # digest realm of those accounts
    digest_algorithms: list = field(default_factory=lambda: ["MD5", "SHA-256"])  # challenge order (RFC 8760)
    server_version: bool = False  # Server/User-Agent say "softswitch/VERSION" instead of "softswitch"
    watchdog_s: float = 10.0  # the switch's loop stuck this long (our bug) ends the process; 0: off
    js_workers: int = 0  # JS worker processes; 0: one per core (switch/tasks/pool.py)
    task_cpu_seconds: float = 5.0  # JS CPU a task may use between two verbs before it is interrupted

    # ---- parsed views, validated once
    @property
    def listen_addr(self) -> tuple[str, int]:
        return parse_hostport(self.listen, "listen")

    @property
    def rtp_range(self) -> tuple[int, int]:
        low, sep, high = self.rtp_ports.partition("-")
        if not sep or not low.isdigit() or not high.isdigit():
            raise ConfigError(f"rtp_ports must look like LOW-HIGH (e.g. 20000-29999), not {self.rtp_ports!r}")
        lo, hi = int(low), int(high)
        if not 1024 <= lo < hi <= 65535 or hi - lo < 2:
            raise ConfigError(f"rtp_ports {self.rtp_ports!r}: need 1024 <= LOW < HIGH <= 65535")
        return lo, hi

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir) if self.data_dir else default_data_dir()

    def validate(self) -> None:
        self.listen_addr  # noqa: B018
        self.rtp_range  # noqa: B018
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"log_level must be debug, info, warning or error, not {self.log_level!r}")
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"log_format must be text or json, not {self.log_format!r}")
        if self.app and not (Path(self.app) / "main.js").is_file():
            raise ConfigError(f"app {self.app!r} has no main.js: point --app at a directory holding main.js")
        if self.max_calls < 1 or self.task_memory_mb < 1:
            raise ConfigError("max_calls and task_memory_mb must be positive")
        addr = self.control_addr
        if addr is not None and not _is_loopback(addr[0]) and not self.control_token:
            raise ConfigError(f"control {self.control!r} listens beyond this host: set control_token in the "
                              "config file, or bind it to 127.0.0.1")
        self.route_rules  # noqa: B018
        self.gateway_rules  # noqa: B018
        if not isinstance(self.users, dict) or not all(
                isinstance(k, str) and isinstance(v, str) and v for k, v in self.users.items()):
            raise ConfigError('users must be a [users] table of name = "password" (non-empty)')
        if not 0 <= self.js_workers <= 64:
            raise ConfigError(f"js_workers must be between 1 and 64 (0: one per core), not {self.js_workers}")
        if not 0.05 <= self.task_cpu_seconds <= 3600:
            raise ConfigError(f"task_cpu_seconds must be between 0.05 and 3600, not {self.task_cpu_seconds}")
        if (not isinstance(self.digest_algorithms, list) or not self.digest_algorithms
                or any(str(a).upper() not in ("MD5", "SHA-256") for a in self.digest_algorithms)):
            raise ConfigError(f'digest_algorithms must be a list of "MD5" and/or "SHA-256", not {self.digest_algorithms!r}')
        if not 0.01 <= self.sip_t1 <= 5:
            raise ConfigError(f"sip_t1 must be between 0.01 and 5 seconds, not {self.sip_t1}")

    @property
    def gateway_rules(self) -> list[tuple[str, str]]:
        """[[outbound_routes]] as (prefix, gateway URI), checked; plus --gateway as default."""
        from .sip.uri import SipUri, UriError

        rules = []
        try:
            if self.gateway:
                SipUri.parse(self.gateway)
            for r in self.outbound_routes:
                prefix, gw = str(r["prefix"]), str(r["gateway"])
                SipUri.parse(gw)
                rules.append((prefix, gw))
        except (KeyError, TypeError):
            raise ConfigError("outbound_routes: each [[outbound_routes]] needs prefix and gateway") from None
        except UriError as exc:
            raise ConfigError(f"gateway: {exc} (write it as sip:HOST:PORT)") from None
        return rules

    @property
    def control_addr(self) -> tuple[str, int] | None:
        """The control API's address; None when "off"."""
        if self.control.lower() == "off":
            return None
        return parse_hostport(self.control or DEFAULT_CONTROL, "control")

    @property
    def route_rules(self) -> list[Any]:
        from .apps.routing import Route, RouteError

        if not isinstance(self.routes, list):
            raise ConfigError("routes must be a list of [[routes]] tables with match and app")
        try:
            return [Route.parse(r) for r in self.routes]
        except (RouteError, ValueError) as exc:
            raise ConfigError(f"routes: {exc}") from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_hostport(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{what} must be HOST:PORT (e.g. 0.0.0.0:5060), not {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def load(path: str | None, overrides: dict[str, Any]) -> Config:
    """Defaults, then the TOML file, then the non-None overrides (the flags)."""
    values: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as fh:
                values.update(tomllib.load(fh))
        except FileNotFoundError:
            raise ConfigError(f"config file {path!r} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path!r}: {exc}") from None
    known = {f.name: f.type for f in fields(Config)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"config file {path!r}: unknown setting(s) {', '.join(unknown)}; "
                          f"known: {', '.join(known)}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    config = Config(**values)
    config.validate()
    return config
