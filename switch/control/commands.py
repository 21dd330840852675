"""The ``softswitch`` commands that act on a running switch through its control API.

Client side only: stdlib ``urllib`` (no dependency for a CLI that sends a few requests).
Each command prints a readable result, or the server's error message on stderr and exits
non-zero (1: refused by the switch, 2: usage, 3: no switch answering).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any
from collections.abc import Sequence

CONTROL_ENV = "SOFTSWITCH_CONTROL"
TOKEN_ENV = "SOFTSWITCH_TOKEN"
DEFAULT_CONTROL = "127.0.0.1:5080"
INSTALL_TIMEOUT = 180.0  # the switch gives git 60 s per fetch; leave room for check and disk


class ControlError(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def call(addr: str, token: str | None, method: str, path: str, body: Any = None,
         timeout: float = 15.0) -> Any:
    """One request to the control API; the decoded JSON, or ControlError with its message."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{addr}{path}", data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            message = json.loads(raw)["error"]
        except (ValueError, KeyError, TypeError):
            message = raw.decode(errors="replace").strip() or exc.reason
        raise ControlError(str(message), exc.code) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ControlError(f"no switch answers on {addr} ({reason}); is it running with --control {addr}? "
                           f"(set --control or {CONTROL_ENV} to reach another one)") from None


# --------------------------------------------------------------------------- parsers

COMMON_EPILOG = f"""\
These commands talk to a running switch over its control API (HTTP/JSON, default
{DEFAULT_CONTROL}; --control or ${CONTROL_ENV} to change, --token or ${TOKEN_ENV} when
the switch has control_token set)."""

INSTALL_HELP = f"""\
Fetch COMMIT of the git repository URL, check it (main.js exists, every .js file
parses) and make it live for new calls as app NAME. Calls already running keep the
code they started with until they end. Reinstalling NAME at another commit upgrades
or rolls back. A fetch error or a syntax error changes nothing (the message names the
file and line). Installed apps and routes survive a restart of the switch.

URL is anything git understands (git@host:org/app, https://..., /srv/git/app, file://...);
COMMIT is a SHA (short is fine), a tag or a branch (resolved once, at install).

examples:
  softswitch installapp default git git@git.site:app/app 0a3124f
  softswitch installapp tollfree git /srv/git/tollfree v1.4
  softswitch route add '1800*' tollfree          # calls to 1800... go to it

{COMMON_EPILOG}"""

ROUTE_HELP = f"""\
The route table picks the app for an inbound INVITE: rules in order, first match wins,
else the app named 'default' (the bundled greeting until one is installed as default).

A PATTERN is a glob over the Request-URI user (the called number): 18005551234, 1800*,
sales-?; or '@' and a glob over the Request-URI host: @pbx.example.com, @*.example.com.
Rules added here are stored and survive restarts; rules from the config file
([[routes]]) come after them and can only be changed in the file.

examples:
  softswitch route list
  softswitch route add '1800*' tollfree
  softswitch route add @support.example.com helpdesk --index 0
  softswitch route remove 1

{COMMON_EPILOG}"""


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the control commands to the ``softswitch`` subparsers."""

    def command(name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=description or f"{help[0].upper()}{help[1:]}.\n\n"
                           + COMMON_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--control", metavar="HOST:PORT", default=os.environ.get(CONTROL_ENV, DEFAULT_CONTROL),
                       help=f"the switch's control API (default ${CONTROL_ENV} or {DEFAULT_CONTROL})")
        p.add_argument("--token", default=os.environ.get(TOKEN_ENV),
                       help=f"bearer token, when the switch sets control_token (default ${TOKEN_ENV})")
        p.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
        return p

    p = command("installapp", "install or upgrade an app from git, live for new calls", INSTALL_HELP)
    p.add_argument("name", metavar="NAME", help="app name; 'default' serves calls no route matches")
    p.add_argument("source", metavar="SOURCE", choices=["git"], help="where the code comes from: git")
    p.add_argument("url", metavar="URL", help="repository URL or path")
    p.add_argument("commit", metavar="COMMIT", help="commit SHA (short ok), tag or branch")
    p.set_defaults(func=_installapp)

    p = command("apps", "list installed apps: source, commit, install time, live calls")
    p.set_defaults(func=_apps)

    p = command("removeapp", "stop serving new calls with an app (running calls finish on it)")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=_removeapp)

    p = command("calls", "list live calls: id, app, from, to, state, age")
    p.set_defaults(func=_calls)

    p = command("status", "live calls, tasks, uptime and version of the running switch")
    p.set_defaults(func=_status)

    p = command("route", "show or change which app serves which called number or domain", ROUTE_HELP)
    p.set_defaults(func=_route_list)
    rsub = p.add_subparsers(dest="route_command", metavar="list|add|remove")
    rsub.add_parser("list", help="show the rules in match order").set_defaults(func=_route_list)
    add = rsub.add_parser("add", help="add a rule (at the end of the stored rules, or at --index)")
    add.add_argument("pattern", metavar="PATTERN", help="number/user glob (1800*) or @domain glob")
    add.add_argument("app", metavar="APP", help="app name")
    add.add_argument("--index", type=int, help="insert at this position (0 = first)")
    add.set_defaults(func=_route_add)
    rm = rsub.add_parser("remove", help="remove the rule at INDEX (as shown by route list)")
    rm.add_argument("index", metavar="INDEX", type=int)
    rm.set_defaults(func=_route_remove)
    for sp in (rsub.choices["list"], add, rm):  # the flags work after the subcommand too
        sp.add_argument("--control", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        sp.add_argument("--token", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        sp.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    try:
        args.func(args)
    except ControlError as exc:
        print(f"softswitch {args.command}: {exc}", file=sys.stderr)
        return 3 if exc.status is None else 1
    return 0


# --------------------------------------------------------------------------- commands


def _api(args: argparse.Namespace, method: str, path: str, body: Any = None, timeout: float = 15.0) -> Any:
    return call(args.control, args.token, method, path, body, timeout)


def _installapp(args: argparse.Namespace) -> None:
    if not args.json:
        print(f"fetching {args.url} at {args.commit} ...", flush=True)
    started = time.monotonic()
    rec = _api(args, "PUT", f"/apps/{args.name}", {"source": args.source, "url": args.url, "commit": args.commit},
               timeout=INSTALL_TIMEOUT)
    if args.json:
        print(json.dumps(rec, indent=2))
        return
    t = rec.get("timings_ms", {})
    print(f"  fetched commit {rec['commit']} in {t.get('fetch', 0):.0f} ms")
    print(f"checking ... {rec.get('files', '?')} file(s) parse, in {t.get('check', 0):.0f} ms")
    prev = rec.get("previous")
    was = ", replacing " + prev[:10] if prev and prev != rec["commit"] else (" (it was live already)" if prev else "")
    print(f"live: new calls to app {rec['name']!r} run {rec['commit'][:10]}{was} "
          f"({(time.monotonic() - started) * 1000:.0f} ms in all); calls already running keep their code")


def _apps(args: argparse.Namespace) -> None:
    apps = _api(args, "GET", "/apps")["apps"]
    if args.json:
        print(json.dumps(apps, indent=2))
        return
    rows = [(a["name"], a.get("source", ""), a.get("url", ""), (a.get("commit") or "")[:10],
             _when(a.get("installed_at")), str(a.get("live_calls", 0))) for a in apps]
    _table(("NAME", "SOURCE", "URL", "COMMIT", "INSTALLED", "CALLS"), rows, empty="no apps installed")


def _removeapp(args: argparse.Namespace) -> None:
    rec = _api(args, "DELETE", f"/apps/{args.name}")
    if args.json:
        print(json.dumps(rec, indent=2))
        return
    print(f"removed app {rec['name']!r} ({rec['commit'][:10]}); calls already running finish on it")


def _calls(args: argparse.Namespace) -> None:
    calls = _api(args, "GET", "/calls")["calls"]
    if args.json:
        print(json.dumps(calls, indent=2))
        return
    rows = [(c["id"], f"{c['app'] or '-'}@{(c.get('commit') or '-')[:10]}", c["from"], c["to"], c["state"],
             f"{c['age_s']:.0f}s") for c in calls]
    _table(("CALL-ID", "APP", "FROM", "TO", "STATE", "AGE"), rows, empty="no live calls")


def _status(args: argparse.Namespace) -> None:
    s = _api(args, "GET", "/status")
    if args.json:
        print(json.dumps(s, indent=2))
        return
    mode = f"single app {s['app_dir']}" if s["mode"] == "single-app" else f"{s['apps']} installed app(s)"
    print(f"softswitch {s['version']}, up {_duration(s['uptime_s'])}: {s['live_calls']} live call(s), "
          f"{s['live_tasks']} task(s), {mode}, data {s['data_dir']}")
    workers = s.get("js_workers", [])
    rows = [(str(w["index"]), str(w["pid"]), "up" if w["alive"] else "restarting", str(w["tasks"]),
             str(w["restarts"])) for w in workers]
    _table(("JS WORKER", "PID", "STATE", "TASKS", "RESTARTS"), rows, empty="no JS workers")


def _route_list(args: argparse.Namespace, routes: list[dict[str, Any]] | None = None) -> None:
    if routes is None:
        routes = _api(args, "GET", "/routes")["routes"]
    if args.json:
        print(json.dumps(routes, indent=2))
        return
    rows = [(str(r["index"]), r["match"], r["app"], r["origin"]) for r in routes]
    _table(("INDEX", "MATCH", "APP", "FROM"), rows, empty="no routes")
    print("anything else -> default")


def _route_add(args: argparse.Namespace) -> None:
    body: dict[str, Any] = {"match": args.pattern, "app": args.app}
    if args.index is not None:
        body["index"] = args.index
    _route_list(args, _api(args, "POST", "/routes", body)["routes"])


def _route_remove(args: argparse.Namespace) -> None:
    _route_list(args, _api(args, "DELETE", f"/routes/{args.index}")["routes"])


# --------------------------------------------------------------------------- output


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], empty: str) -> None:
    if not rows:
        print(f"({empty})")
        return
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    for row in (head, *rows):
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())


def _when(epoch: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch)) if epoch else "-"


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
