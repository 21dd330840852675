"""``softswitch``: the command line.

    softswitch run [--listen HOST:PORT] [--rtp-ports LOW-HIGH] [--app DIR] ...
    softswitch installapp NAME git URL COMMIT | apps | removeapp NAME | calls | status
    softswitch route list | add PATTERN APP | remove INDEX

``run`` is the switch; the others talk to a running one over its control API
(switch/control/commands.py).

argparse (stdlib) is enough for a handful of subcommands and keeps the
dependency list short.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Coroutine
from typing import Any

from . import logs
from .config import DEFAULT_APP, Config, ConfigError, load
from .cdr.command import add_command as add_cdr_command
from .cdr.command import run as run_cdr_command
from .control.commands import add_commands as add_control_commands
from .control.commands import run as run_control_command
from .tasks.pool import WorkerStartError

RUN_HELP = """\
Run the switch in the foreground. Every inbound INVITE starts a JavaScript task
running Main() of an app: the installed app its route picks (softswitch installapp,
softswitch route), else the app installed as 'default', else the bundled greeting
(answers, plays a greeting, hangs up). With --app DIR that one app serves every call
(development: edit, restart, call). Settings come from built-in defaults, then
--config FILE (TOML, same names with '_' for '-'), then these flags.

SIGTERM or Ctrl-C drains: new calls get 503, running calls get BYE, exit 0.

examples:
  softswitch run                                  # 0.0.0.0:5060, installed apps
  softswitch installapp default git /srv/git/app 0a3124f   # from another shell
  softswitch run --listen 127.0.0.1:5070 --app ./myapp --log-level debug
  softswitch run --tls-listen 0.0.0.0:5061 --tls-cert cert.pem --tls-key key.pem
                                                  # also SIP over TLS; phones dial
                                                  # sip:1000@HOST:5061;transport=tls
  sipp -sn uac 127.0.0.1:5060 -m 1               # place a test call
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="softswitch",
        description="A JavaScript-programmable SIP softswitch: each call is a QuickJS task.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    run = sub.add_parser("run", help="run the switch", description=RUN_HELP,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--config", metavar="FILE", help="TOML config file (flags override it)")
    run.add_argument("--listen", metavar="HOST:PORT",
                     help="SIP over UDP and TCP: address and port to listen on (default 0.0.0.0:5060, "
                          "IPv4; [::]:5060 is IPv6 and IPv4, [::1]:5060 IPv6 only)")
    run.add_argument("--tls-listen", metavar="HOST:PORT",
                     help="also SIP over TLS (1.2+) on this address and port, e.g. 0.0.0.0:5061 or "
                          "[::]:5061; needs --tls-cert and --tls-key (default off)")
    run.add_argument("--tls-cert", metavar="FILE",
                     help="our TLS certificate (PEM, the chain after it) for --tls-listen, also offered "
                          "to trunks that ask for one")
    run.add_argument("--tls-key", metavar="FILE", help="the private key of --tls-cert (PEM, unencrypted)")
    run.add_argument("--tls-ca-file", metavar="FILE",
                     help="CA certificates (PEM) trusted for calls the switch places over TLS (sips: or "
                          ";transport=tls routes); default: the system's store")
    run.add_argument("--tls-verify", action=argparse.BooleanOptionalAction, default=None,
                     help="check the certificate and name of TLS peers we call (default on); "
                          "--no-tls-verify is UNSAFE: anyone in the path can pose as the trunk "
                          "(for lab trunks with self-signed certificates only)")
    run.add_argument("--rtp-ports", metavar="LOW-HIGH",
                     help="UDP port range for RTP, one even port per call leg (default 20000-29999)")
    run.add_argument("--media-keepalive", choices=("silence", "cn", "off"),
                     help="RTP sent while nothing plays (a silent call: waiting for digits), so phones "
                          "and SBCs that end calls after ~30 s without media keep them: 'silence' G.711 "
                          "frames every 20 ms, 'cn' RFC 3389 comfort noise where negotiated (else silence), "
                          "'off' (default silence)")
    run.add_argument("--rtcp", action=argparse.BooleanOptionalAction, default=None,
                     help="RTCP sender/receiver reports (RFC 3550) on each leg's RTP port + 1: the "
                          "peer's loss and jitter figures (default on; --no-rtcp disables)")
    run.add_argument("--srtp", choices=("off", "optional", "required"),
                     help="SRTP for callers (RFC 4568 SDES keys in the SDP, RTP/SAVP): 'optional' answers "
                          "an SRTP offer with SRTP and a plain one plain (default); 'required' refuses plain "
                          "offers with 488; 'off' refuses SRTP offers with 488. The keys travel in the SIP "
                          "message: without SIP over TLS anyone who sees it can decrypt the media. Calls to "
                          "gateways offer SRTP per gateway (gateway_srtp, [[outbound_routes]] srtp)")
    run.add_argument("--app", metavar="DIR",
                     help="directory of a JS app (its main.js defines Main) serving every call: "
                          "development mode, no installs (default: the installed apps, see installapp; "
                          f"the bundled {DEFAULT_APP.name} app until one is installed as 'default')")
    run.add_argument("--data-dir", metavar="DIR",
                     help="where the switch keeps state and caches (default ~/.local/state/softswitch, "
                          "or /var/lib/softswitch as root)")
    run.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                     help="log verbosity (default info); debug shows every SIP state change")
    run.add_argument("--log-format", choices=("text", "json"), help="log line format (default text)")
    run.add_argument("--advertise", metavar="IP",
                     help="address to put in Contact and SDP (default: the interface facing each caller); "
                          "used for peers of its family (IPv4 or IPv6)")
    run.add_argument("--max-calls", type=int, metavar="N",
                     help="live call limit; more INVITEs get 503 (default 5000)")
    run.add_argument("--task-memory-mb", type=int, metavar="MB",
                     help="memory limit of each call's JS task, counted in its worker's shared QuickJS heap (default 32)")
    run.add_argument("--control", metavar="HOST:PORT",
                     help="control API for installapp/apps/calls/route (default 127.0.0.1:5080; 'off' "
                          "disables; beyond loopback it needs control_token in the config)")
    run.add_argument("--gateway", metavar="URI",
                     help="default gateway for numbers the apps dial (StartBridgedCall), e.g. "
                          "sip:10.0.0.1:5060; per-prefix gateways go in the config ([[outbound_routes]])")
    run.add_argument("--js-workers", type=int, metavar="N",
                     help="JS worker processes that run the call tasks, apart from SIP and media: a "
                          "script's compute, runaway or crash only touches its worker (default: one per core)")
    run.add_argument("--task-cpu-seconds", type=float, metavar="SECONDS",
                     help="JS CPU time a task may use without calling a verb; past it the task is "
                          "interrupted, logged, and its call ended (500 or BYE) (default 5)")
    run.add_argument("--watchdog", type=float, metavar="SECONDS", dest="watchdog_s",
                     help="if the switch's own event loop is stuck this long (a bug of ours; scripts run "
                          "elsewhere), log and exit 70 so systemd/the container restarts the switch; a JS "
                          "worker silent this long (and twice the CPU budget) is killed and restarted "
                          "(default 10; 0 disables the loop watchdog)")
    run.add_argument("--sip-t1", type=float, metavar="SECONDS",
                     help="RFC 3261 timer T1 (default 0.5); an unanswered INVITE fails with 408 "
                          "after 64*T1")
    add_control_commands(sub)
    add_cdr_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return _run(args)
    if args.command == "cdr":
        return run_cdr_command(args)
    if hasattr(args, "func"):
        return run_control_command(args)
    return 2


def _run(args: argparse.Namespace) -> int:
    overrides = {k: getattr(args, k) for k in (
        "listen", "tls_listen", "tls_cert", "tls_key", "tls_ca_file", "tls_verify", "rtp_ports", "media_keepalive",
        "rtcp", "app", "data_dir", "log_level", "log_format", "advertise", "max_calls",
        "task_memory_mb", "control", "gateway", "sip_t1", "watchdog_s", "js_workers", "task_cpu_seconds",
        "srtp")}
    try:
        config = load(args.config, overrides)
    except ConfigError as exc:
        print(f"softswitch: {exc}", file=sys.stderr)
        return 2
    logs.setup(config.log_level, config.log_format)
    try:
        code = _run_loop(_serve(config))
    except OSError as exc:
        on = config.listen + (f" or {config.tls_listen}" if config.tls_listen else "")
        logging.getLogger("switch").error("cannot start: %s (is another switch on %s?)", exc, on)
        code = 1
    except ConfigError as exc:  # a TLS file that changed between loading the config and using it
        logging.getLogger("switch").error("cannot start: %s", exc)
        code = 2
    except WorkerStartError as exc:
        logging.getLogger("switch").error("cannot start: %s (its log lines above say why)", exc)
        code = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # Tasks may still hold greenlets suspended inside QuickJS frames; letting the
    # interpreter tear them down crashes (DESIGN.md §4), so leave directly.
    os._exit(code)


def _run_loop(main: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop  # measured faster for UDP-heavy loops (DESIGN.md §4)
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(main)
    return uvloop.run(main)


async def _serve(config: Config) -> int:
    from .server import Switch

    switch = Switch(config)
    await switch.start()
    await switch.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
