"""Configuration: embedded defaults, an optional TOML file, then command-line flags.

Precedence (lowest to highest): DEFAULTS below, the file given with --config,
the flags. Keys in the file are the flag names with '_' for '-':

    listen = "0.0.0.0:5060"
    tls_listen = "0.0.0.0:5061"  # SIP over TLS too (default off), with:
    tls_cert = "/etc/softswitch/tls/cert.pem"  # our certificate chain (PEM)
    tls_key = "/etc/softswitch/tls/key.pem"    # and its private key (PEM, not encrypted)
    tls_ca_file = ""             # CAs trusted for calls we place over TLS ("": the system store)
    tls_verify = true            # false: do not check TLS peers' certificates (UNSAFE, lab trunks)
    rtp_ports = "20000-29999"
    media_keepalive = "silence"  # RTP while nothing plays: "silence" frames every 20 ms, "cn"
                                 # (RFC 3389 comfort noise where negotiated, else silence), "off"
    rtcp = true                  # RTCP SR/RR on each leg's RTP port + 1 (RFC 3550)
    app = "/srv/apps/greeting"
    data_dir = "/var/lib/softswitch"
    log_level = "info"
    advertise = "203.0.113.10"   # address put in Contact/SDP when behind NAT
    max_calls = 5000
    task_memory_mb = 32
    control = "127.0.0.1:5080"   # control API (softswitch installapp/apps/calls...); "off" disables
    control_token = "..."        # required as "Authorization: Bearer ..." when set
    gateway = "sip:10.0.0.1:5060"  # where StartBridgedCall sends numbers (default gateway)
    gateway_username = "pbx1"    # what the default gateway may challenge our INVITEs for
    gateway_password = "..."     # (401/407: the INVITE is sent again, once, with digest auth)
    gateway_srtp = false         # calls to the default gateway offer SRTP (RTP/SAVP, SDES keys)
    srtp = "optional"            # SRTP (RFC 4568 SDES) for callers: "optional" answers RTP/SAVP
                                 # offers with SRTP, plain ones plain; "required": 488 for a plain
                                 # offer; "off": 488 for RTP/SAVP. Keys travel in the SDP: use TLS
    sip_t1 = 0.5                 # RFC 3261 T1; an unanswered INVITE fails with 408 after 64*T1
    dns_servers = ["127.0.0.1:5353"]  # DNS servers for gateway/URI names (NAPTR, SRV, A/AAAA,
                                 # RFC 3263); [] (default): the system's, /etc/resolv.conf
    failover_timeout = 4         # an outbound INVITE with no response at all from one of a
                                 # name's servers within this many seconds tries the next
    js_workers = 2               # JS worker processes running the tasks (default: one per core)
    js_worker_nice = 5           # the workers' CPU priority below the switch's (nice +N; 0: same):
                                 # on a busy host SIP and RTP get the CPU before the JS does
    task_cpu_seconds = 5         # a task computing this long without calling a verb is stopped
    watchdog_s = 10              # the switch's own event loop stuck this long (a bug of ours):
                                 # log and exit 70 for the supervisor to restart; 0 = off

    server_version = false       # Server/User-Agent headers name the version too (scanners see it)
    cdr = true                   # call detail records, one per leg, in DATA_DIR/cdr.sqlite
    cdr_url = "postgresql://cdr:...@db/pbx"  # also ship them to PostgreSQL (the SQLite file spools)
    digest_algorithms = ["MD5", "SHA-256"]  # REGISTER/INVITE challenges, in this order (RFC 8760):
                                 # many phones answer only the first; SHA-256 first where all can

    # who may call and dial out, abuse throttling (switch/security/)
    trust_loopback = true        # INVITEs from 127.0.0.1 / ::1 are served as "local" (may dial
                                 # out, not flood-counted); other callers: [[trunks]] or [users]
    flood_window = 2             # pike-like flood guard: more than flood_density requests from
    flood_density = 30           # one source address in flood_window seconds drop its requests
    flood_block_seconds = 60     # for this long (renewed while it floods); density 0: off
    auth_fail_limit = 5          # wrong passwords (REGISTER or INVITE) from one source, or for
    auth_block_seconds = 600     # one user name, within this many seconds: 403 for this long

    [users]                      # SIP accounts that may REGISTER and call (digest auth, realm set
    alice = "s3cret"             # by the top-level key realm = "..."); without any, REGISTER gets
                                 # 405. Calls the apps place to "alice" then reach her phone.
    bob = { password = "b0b-secret", dial_out = true, max_calls = 2 }  # dial_out: may reach gateways

    [[trunks]]                   # a peer known by source address (carrier, PBX, load balancer)
    name = "carrier1"
    addresses = ["192.0.2.0/28", "198.51.100.7"]
    username = ""                # with password: its INVITEs must also answer a 407 challenge
    password = ""
    max_calls = 0                # concurrent calls from it; 0: no limit of its own
    max_cps = 0                  # new calls per second; 0: no limit
    dial_out = false             # may its calls reach gateways (StartBridgedCall to a number)
    flood_exempt = true          # not counted by the flood guard

    [[outbound_routes]]          # numbers starting with prefix go to that gateway instead
    prefix = "1800"
    gateway = "sip:10.0.0.2:5060"
    username = "pbx1"            # optional: credentials that gateway may challenge for
    password = "..."
    srtp = false                 # calls to that gateway offer SRTP

    [[routes]]                   # which installed app serves an INVITE (after the API's rules)
    match = "1800*"              # Request-URI user glob, or "@domain" glob
    app = "tollfree"

Without ``app`` the switch serves installed apps (``softswitch installapp``) through the
route table; with it, that one directory serves every call (development mode).
"""

from __future__ import annotations

import ipaddress
import os
import ssl
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .security.access import Trunk, UserAccount

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
    # ---- SIP over TLS (switch/sip/tls.py)
    tls_listen: str = ""  # "": no TLS listener; HOST:PORT (5061 by convention)
    tls_cert: str = ""  # PEM certificate chain we present (listener; and to trunks that ask)
    tls_key: str = ""  # its PEM private key, unencrypted
    tls_ca_file: str = ""  # PEM CAs that sign the certificates of peers we call; "": the system store
    tls_verify: bool = True  # check the certificate and host name of peers we call over TLS
    rtp_ports: str = "20000-29999"
    media_keepalive: str = "silence"  # RTP while nothing plays (media/session.py): silence, cn, off
    rtcp: bool = True  # RTCP on each leg's odd port (media/rtcp.py)
    app: str = ""  # "": installed apps + routes (DEFAULT_APP serves 'default' until one is installed)
    data_dir: str = ""
    log_level: str = "info"
    log_format: str = "text"
    advertise: str = ""
    max_calls: int = 5000
    task_memory_mb: int = 32
    control: str = ""  # "": 127.0.0.1:5080, best effort (a busy port only logs); "off"; HOST:PORT
    control_token: str = ""
    routes: list[dict[str, Any]] = field(default_factory=list)  # [{"match": PATTERN, "app": NAME}, ...]
    gateway: str = ""  # default gateway for numbers dialled by StartBridgedCall: "sip:HOST:PORT"
    gateway_username: str = ""  # digest credentials the default gateway may challenge for
    gateway_password: str = ""
    gateway_srtp: bool = False  # calls to the default gateway offer RTP/SAVP (SDES-SRTP)
    outbound_routes: list[dict[str, Any]] = field(default_factory=list)  # [{"prefix": "1800", "gateway": URI}, ...]
    srtp: str = "optional"  # SRTP policy for inbound offers (switch/calls/offer_answer.py): off, optional, required
    sip_t1: float = 0.5  # RFC 3261 T1 (s): Timer B/F (no answer -> 408) = 64*T1
    dns_servers: list[str] = field(default_factory=list)  # "IP" or "IP:PORT"; []: /etc/resolv.conf
    failover_timeout: float = 4.0  # s without any response before the INVITE tries the next server (RFC 3263 §4.3)
    users: dict[str, Any] = field(default_factory=dict)  # [users] name = "password" or {password, dial_out, max_calls}
    realm: str = "softswitch"  # digest realm of those accounts
    digest_algorithms: list[str] = field(default_factory=lambda: ["MD5", "SHA-256"])  # challenge order (RFC 8760)
    # ---- who may call, who may dial out, abuse throttling (switch/security/)
    trunks: list[dict[str, Any]] = field(default_factory=list)  # [[trunks]]: name, addresses, ... (security.access.Trunk)
    trust_loopback: bool = True  # 127.0.0.1 and ::1 call as "local": may dial out, not flood-counted
    flood_window: float = 2.0  # pike's sampling_time_unit (s)
    flood_density: int = 30  # requests per window from one source before it is blocked; 0: off
    flood_block_seconds: float = 60.0  # a flooding source's requests are dropped this long
    auth_fail_limit: int = 5  # wrong passwords per source (and per user name) before a block; 0: off
    auth_block_seconds: float = 600.0  # the counting window and the block time of auth failures
    server_version: bool = False  # Server/User-Agent say "softswitch/VERSION" instead of "softswitch"
    cdr: bool = True  # call detail records in DATA_DIR/cdr.sqlite (switch/cdr/)
    cdr_url: str = ""  # "postgresql://user:password@host/db": records are shipped there too
    watchdog_s: float = 10.0  # the switch's loop stuck this long (our bug) ends the process; 0: off
    js_workers: int = 0  # JS worker processes; 0: one per core (switch/tasks/pool.py)
    js_worker_nice: int = 5  # workers run this much nicer than the switch (switch/tasks/pool.py)
    task_cpu_seconds: float = 5.0  # JS CPU a task may use between two verbs before it is interrupted

    # ---- parsed views, validated once
    @property
    def listen_addr(self) -> tuple[str, int]:
        return parse_hostport(self.listen, "listen")

    @property
    def tls_listen_addr(self) -> tuple[str, int] | None:
        return parse_hostport(self.tls_listen, "tls_listen") if self.tls_listen else None

    def tls_contexts(self) -> tuple[ssl.SSLContext | None, ssl.SSLContext]:
        """(the listener's context or None, the context of TLS connections we open),
        built from the files now: ConfigError says which file is wrong and what to do."""
        from .sip.tls import TlsConfigError, client_context, server_context

        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("tls_cert and tls_key go together: give both (the certificate and its key) "
                              "or neither")
        if not isinstance(self.tls_verify, bool):
            raise ConfigError(f"tls_verify must be true or false, not {self.tls_verify!r}")
        try:
            server = None
            if self.tls_listen:
                if not self.tls_cert:
                    raise ConfigError(f"tls_listen {self.tls_listen!r} needs tls_cert and tls_key (PEM files). "
                                      "For a test certificate: openssl req -x509 -newkey rsa:2048 -nodes "
                                      "-keyout key.pem -out cert.pem -days 365 -subj /CN=HOSTNAME")
                server = server_context(self.tls_cert, self.tls_key)
            return server, client_context(self.tls_ca_file, self.tls_verify, self.tls_cert, self.tls_key)
        except TlsConfigError as exc:
            raise ConfigError(str(exc)) from None

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
        tls = self.tls_listen_addr
        if tls is not None and tls == self.listen_addr:
            raise ConfigError(f"tls_listen {self.tls_listen!r} is the SIP port (listen) already, where TCP "
                              "speaks plain SIP: give TLS its own port, 5061 by convention")
        self.tls_contexts()
        self.rtp_range  # noqa: B018
        if self.media_keepalive not in ("silence", "cn", "off"):
            raise ConfigError(f'media_keepalive must be "silence", "cn" or "off", not {self.media_keepalive!r}')
        if not isinstance(self.rtcp, bool):
            raise ConfigError(f"rtcp must be true or false, not {self.rtcp!r}")
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
        self.gateway_credentials  # noqa: B018
        if self.srtp not in ("off", "optional", "required"):
            raise ConfigError(f'srtp must be "off", "optional" or "required", not {self.srtp!r}')
        self.srtp_gateways  # noqa: B018
        if not isinstance(self.cdr, bool):
            raise ConfigError(f"cdr must be true or false, not {self.cdr!r}")
        if self.cdr_url and not self.cdr_url.startswith(("postgresql://", "postgres://")):
            raise ConfigError(f"cdr_url must be a postgresql://user:password@host[:port]/database URL, "
                              f"not {self.cdr_url.split('@')[-1]!r}")
        if self.cdr_url and not self.cdr:
            raise ConfigError("cdr_url needs cdr = true (the records are spooled in DATA_DIR/cdr.sqlite)")
        if self.cdr_url:
            from .cdr.postgres import driver_missing

            missing = driver_missing()
            if missing:
                raise ConfigError(missing)
        self.accounts  # noqa: B018
        self.trunk_list  # noqa: B018
        if not isinstance(self.trust_loopback, bool):
            raise ConfigError(f"trust_loopback must be true or false, not {self.trust_loopback!r}")
        _check_range("flood_window", self.flood_window, 0.1, 3600, "seconds")
        _check_range("flood_density", self.flood_density, 0, 1_000_000, "requests per window (0: off)", whole=True)
        _check_range("flood_block_seconds", self.flood_block_seconds, 0, 86400, "seconds")
        _check_range("auth_fail_limit", self.auth_fail_limit, 0, 1000, "failures (0: off)", whole=True)
        _check_range("auth_block_seconds", self.auth_block_seconds, 1, 86400, "seconds")
        if not 0 <= self.js_workers <= 64:
            raise ConfigError(f"js_workers must be between 1 and 64 (0: one per core), not {self.js_workers}")
        if not 0 <= self.js_worker_nice <= 19:
            raise ConfigError(f"js_worker_nice must be between 0 (the switch's priority) and 19, not "
                              f"{self.js_worker_nice}")
        if not 0.05 <= self.task_cpu_seconds <= 3600:
            raise ConfigError(f"task_cpu_seconds must be between 0.05 and 3600, not {self.task_cpu_seconds}")
        if (not isinstance(self.digest_algorithms, list) or not self.digest_algorithms
                or any(str(a).upper() not in ("MD5", "SHA-256") for a in self.digest_algorithms)):
            raise ConfigError(f'digest_algorithms must be a list of "MD5" and/or "SHA-256", not {self.digest_algorithms!r}')
        if not 0.01 <= self.sip_t1 <= 5:
            raise ConfigError(f"sip_t1 must be between 0.01 and 5 seconds, not {self.sip_t1}")
        if not isinstance(self.dns_servers, list) or not all(isinstance(s, str) for s in self.dns_servers):
            raise ConfigError(f'dns_servers must be a list of "IP" or "IP:PORT" strings, not {self.dns_servers!r}')
        from .sip.dns_records import parse_dns_server

        for server in self.dns_servers:
            try:
                parse_dns_server(server)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        # (At or above Timer B, 64*sip_t1, it never fires first: Timer B fails over then.)
        _check_range("failover_timeout", self.failover_timeout, 0.1, 320, "seconds")

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
    def gateway_credentials(self) -> dict[str, tuple[str, str]]:
        """Gateway URI (as configured) -> (username, password) it may challenge for."""
        out: dict[str, tuple[str, str]] = {}
        entries = [{"gateway": self.gateway, "username": self.gateway_username, "password": self.gateway_password},
                   *self.outbound_routes]
        for entry in entries:
            user, password = entry.get("username") or "", entry.get("password") or ""
            if not isinstance(user, str) or not isinstance(password, str) or bool(user) != bool(password):
                raise ConfigError(f"gateway {entry.get('gateway')!r}: give both username and password (strings) "
                                  "or neither")
            if user and entry.get("gateway"):
                out[str(entry["gateway"])] = (user, password)
        return out

    @property
    def srtp_gateways(self) -> set[str]:
        """Gateway URIs (as configured) whose calls offer SRTP: gateway_srtp for the
        default gateway, srtp = true in an [[outbound_routes]] entry for its gateway."""
        if not isinstance(self.gateway_srtp, bool):
            raise ConfigError(f"gateway_srtp must be true or false, not {self.gateway_srtp!r}")
        out = {self.gateway} if self.gateway_srtp and self.gateway else set()
        for entry in self.outbound_routes:
            flag = entry.get("srtp", False)
            if not isinstance(flag, bool):
                raise ConfigError(f"outbound_routes: srtp of gateway {entry.get('gateway')!r} must be true or "
                                  f"false, not {flag!r}")
            if flag:
                out.add(str(entry["gateway"]))
        return out

    @property
    def accounts(self) -> dict[str, UserAccount]:
        """[users] as {name: security.access.UserAccount}, checked."""
        from .security.access import parse_users

        try:
            return parse_users(self.users)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    @property
    def trunk_list(self) -> list[Trunk]:
        """[[trunks]] as security.access.Trunk objects, checked."""
        from .security.access import parse_trunks

        try:
            return parse_trunks(self.trunks)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

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


def _check_range(name: str, value: object, low: float, high: float, unit: str, whole: bool = False) -> None:
    kinds = (int,) if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        kind = "a whole number" if whole else "a number"
        raise ConfigError(f"{name} must be {kind} from {low:g} to {high:g} {unit}, not {value!r}")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_hostport(text: str, what: str) -> tuple[str, int]:
    """``HOST:PORT``; an IPv6 address goes in brackets (``[::]:5060``: every IPv6 and IPv4
    address, ``[::1]:5070``), as in a URI (RFC 3986 §3.2.2), so ``::1:5060`` is refused
    rather than guessed at. Returns the host without brackets."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{what} must be HOST:PORT (e.g. 0.0.0.0:5060 or [::]:5060), not {text!r}")
    if host.startswith("[") or host.endswith("]") or ":" in host:
        bare = host[1:-1] if host.startswith("[") and host.endswith("]") else ""
        try:
            ipaddress.IPv6Address(bare)
        except ValueError:
            raise ConfigError(f"{what} {text!r}: an IPv6 address goes in brackets, e.g. [::]:5060 "
                              "or [2001:db8::1]:5060") from None
        return bare, int(port)
    return host or "0.0.0.0", int(port)


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
