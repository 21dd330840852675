"""``softswitch cdr``: list and export call detail records from the switch's store.

It reads ``DATA_DIR/cdr.sqlite`` directly (read-only; works whether the switch runs or
not), so it takes the same ``--data-dir``/``--config`` as ``softswitch run``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import re
import sys
from pathlib import Path
from typing import Any

from .record import NAMES
from .store import FILENAME, CdrStore

HELP = """\
List or export call detail records: one per leg, linked by call_id (a bridged call has
two). Oldest first. Times are UTC.

TIME is an ISO date or time (2026-12-01, 2026-12-01T09:30, 2026-12-01T09:30:00Z) or an
age: 90s, 15m, 2h, 7d (that long ago).

examples:
  softswitch cdr --since 1h                       # the last hour, as a table
  softswitch cdr --since 2026-12-01 --until 2026-12-02 --format csv > dec01.csv
  softswitch cdr --app sales --number 4930 --format json
"""


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("cdr", help="list or export call detail records (CSV, JSON)", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", metavar="DIR", help="the switch's data dir (default: from --config, else the "
                                                     "default data dir)")
    p.add_argument("--config", metavar="FILE", help="the switch's config file (for its data_dir)")
    p.add_argument("--since", metavar="TIME", help="records of calls that started at or after TIME")
    p.add_argument("--until", metavar="TIME", help="...and before TIME")
    p.add_argument("--app", metavar="NAME", help="only calls served by this app")
    p.add_argument("--number", metavar="TEXT", help="only legs whose From, To or Request-URI contains TEXT")
    p.add_argument("--limit", type=int, metavar="N", help="at most N records")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table",
                   help="table (default), csv (every field, a header line), json (one array)")


def run(args: argparse.Namespace) -> int:
    try:
        since, until = parse_time(args.since), parse_time(args.until)
    except ValueError as exc:
        print(f"softswitch cdr: {exc}", file=sys.stderr)
        return 2
    path = _data_dir(args) / FILENAME
    try:
        store = CdrStore(path, readonly=True)
    except FileNotFoundError as exc:
        print(f"softswitch cdr: {exc}", file=sys.stderr)
        return 1
    try:
        rows = store.query(since, until, args.app, args.number, args.limit)
    finally:
        store.close()
    if args.format == "json":
        json.dump(rows, sys.stdout, indent=1)
        print()
    elif args.format == "csv":
        out = csv.DictWriter(sys.stdout, fieldnames=list(NAMES))
        out.writeheader()
        out.writerows(rows)
    else:
        _table(rows)
    return 0


def _data_dir(args: argparse.Namespace) -> Path:
    if args.data_dir:
        return Path(args.data_dir)
    from ..config import load

    return load(args.config, {}).data_path


_AGE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str | None, now: float | None = None) -> float | None:
    """TIME as UTC epoch seconds (see HELP); ValueError saying what is accepted."""
    if text is None:
        return None
    m = _AGE.match(text.strip())
    if m:
        base = now if now is not None else dt.datetime.now(dt.UTC).timestamp()
        return base - float(m.group(1)) * _UNIT[m.group(2)]
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not a time: give 2026-12-01, 2026-12-01T09:30[:00][Z] or an age "
                         "like 15m, 2h, 7d") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def _when(epoch: Any) -> str:
    if epoch is None:
        return "-"
    return dt.datetime.fromtimestamp(float(epoch), dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _table(rows: list[dict[str, Any]]) -> None:
    head = ("start (UTC)", "call", "dir", "from", "to", "disposition", "status", "billsec", "app")
    lines = [(_when(r["start"]), str(r["call_id"])[:8], "in" if r["direction"] == "inbound" else "out",
              str(r["from_uri"] or "-"), str(r["to_uri"] or "-"), str(r["disposition"]), str(r["status"]),
              f"{float(r['billsec'] or 0):.1f}", str(r["app"] or "-")) for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(head)]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip())
    for line in lines:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    print(f"{len(rows)} record(s)")
