"""Issue 10's fuzz run: 20,000 mutated SIP datagrams (made from valid INVITE with SDP, BYE,
REGISTER, OPTIONS, CANCEL and ACK) over UDP against the real switch, with the generator
and client of tests/e2e/sipfuzz.py (the e2e test sends a few thousand of the same).

The switch runs tests/e2e/apps/reject486 (every call rejected: every INVITE must get a
final response; ``--app greeting`` answers them instead) with its control API on and T1 = 50 ms, so its transactions time out in
3.2 s (64*T1) and the table can be seen empty. First FLOOD datagrams from 127.0.0.2 (not
trusted: the flood guard must block it), then DATAGRAMS from 127.0.0.1 (trusted, never
flood-counted) at RATE/s. Prints the responses by status, what got none, the hanging
transactions (a 1xx and no final), bug lines in the log, the time /status took to hold
nothing again, and RSS before and after. Exit status 1 when a criterion of issue 10 fails
(hanging transactions, bugs in the log, not drained, RSS growth >= 20 MB).

    .venv/bin/python bench/fuzz_sip.py [--datagrams 20000] [--rate 500] [--seed 1] [--flood 300]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from common import rss_kib

from tests.e2e.harness import SwitchProcess, free_tcp_port, prepare_app
from tests.e2e.sipfuzz import FLOOD_HOST, bug_lines, fuzz_switch

RSS_GROWTH_LIMIT_KIB = 20 * 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datagrams", type=int, default=20000)
    ap.add_argument("--rate", type=float, default=500, help="datagrams/s from 127.0.0.1")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--flood", type=int, default=300, help=f"datagrams from {FLOOD_HOST} first (0: none)")
    ap.add_argument("--app", default="reject486",
                    help="the app serving every call (tests/e2e/apps or js_apps); greeting answers them: "
                         "the client then ACKs each 200 and answers the switch's BYE")
    ap.add_argument("--log-level", default="info")
    args = ap.parse_args()

    app = prepare_app(args.app, Path(tempfile.mkdtemp(prefix="bench-fuzz-")))
    sw = SwitchProcess(app, ["--control", f"127.0.0.1:{free_tcp_port()}", "--sip-t1", "0.05"],
                       log_level=args.log_level).start()
    try:
        assert sw.proc is not None
        tree_before = rss_kib(sw.proc.pid)
        started = time.monotonic()
        run = fuzz_switch(sw, datagrams=args.datagrams, rate=args.rate, seed=args.seed,
                          flood_datagrams=args.flood, settle_s=20.0, drain_s=20.0)
        total = time.monotonic() - started
        tree_after = rss_kib(sw.proc.pid)
        alive = sw.running()
    finally:
        sw.stop(expect_rc=None)
    bugs = bug_lines(sw.log_text())
    t = run.tally
    finals = sum(1 for statuses in t.transactions.values() if any(c >= 200 for c in statuses))
    growth = run.rss_after_kib - run.rss_before_kib
    print(f"`python bench/fuzz_sip.py --datagrams {args.datagrams} --rate {args.rate:g} --seed {args.seed} "
          f"--flood {args.flood} --app {args.app}`\n")
    print(f"- sent {t.datagrams} from 127.0.0.1 in {run.seconds:.1f} s ({t.datagrams / run.seconds:.0f}/s), "
          f"{total:.1f} s in all; by seed: {', '.join(f'{k} {v}' for k, v in sorted(t.sent.items()))}")
    print(f"- mutations: {', '.join(f'{k} {v}' for k, v in t.mutations.most_common())} "
          f"(plus ~15% sent unmutated)")
    print(f"- responses by status: {', '.join(f'{k}: {v}' for k, v in sorted(t.responses.items()))}")
    print(f"- transactions answered: {len(t.transactions)}, with a final response {finals}; "
          f"datagrams without any response: {t.datagrams - len(t.transactions)} (ACKs, unroutable or "
          f"unreadable requests: the switch counted {run.bad_sip_messages} datagrams as not SIP)")
    print(f"- hanging (1xx, no final): {len(t.hanging())}; INVITEs answered 2xx: {len(t.invites_answered())}; "
          f"our ACKs: {t.acks}; BYEs from the switch: {t.byes}; send errors: {t.send_errors}")
    if run.flood is not None:
        print(f"- flood slice from {FLOOD_HOST}: {run.flood.datagrams} sent, {len(run.flood.transactions)} answered "
              "(the rest dropped by the flood guard)")
    drained = "never" if run.drained_s is None else f"{run.drained_s:.1f} s after the last datagram"
    print(f"- /status held nothing (calls, legs, tasks, RTP ports, SIP transactions): {drained}; "
          f"then {run.held()}")
    print(f"- switch process RSS {run.rss_before_kib / 1024:.1f} -> {run.rss_after_kib / 1024:.1f} MiB "
          f"({growth / 1024:+.1f}); with its JS workers {tree_before / 1024:.1f} -> {tree_after / 1024:.1f} MiB")
    print(f"- alive: {alive}; bug lines in the log: {len(bugs)}")
    for line in bugs[:20]:
        print("    " + line)
    ok = alive and not bugs and not t.hanging() and run.drained_s is not None and growth < RSS_GROWTH_LIMIT_KIB
    if not ok:
        print(f"FAILED (log: {sw.log_path})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
