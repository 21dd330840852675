"""Issue 10 item 2, end to end: mutated SIP over UDP against the real switch (tests/e2e/sipfuzz.py).

Every request the switch took up ends with a final response (none left hanging after
100 Trying), no bug escapes into the log, the flood guard drops a non-trusted source's
flood instead of falling over, and afterwards the switch holds nothing: no call, leg,
task, RTP port or SIP transaction, with its memory where it was. The app rejects every
call (tests/e2e/apps/reject486), so every INVITE must get a final response.

CI runs FUZZ_DATAGRAMS (3000 by default, ~25 s); ``bench/fuzz_sip.py`` runs the 20,000
of the issue with the same generator and prints the figures.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from .harness import SwitchProcess, free_tcp_port, options_ping
from .sipfuzz import FLOOD_HOST, bug_lines, fuzz_switch

pytestmark = pytest.mark.e2e

DATAGRAMS = int(os.environ.get("FUZZ_DATAGRAMS", "3000"))
SEED = int(os.environ.get("FUZZ_SEED", "20261201"))
RATE = 500  # datagrams/s: half of what this 2-core box absorbed without a loss (1000/s)
FLOOD = 300  # from FLOOD_HOST, as fast as the socket sends them
RSS_GROWTH_KIB = 20 * 1024


def test_mutated_sip_always_ends_in_a_final_response_or_a_drop(switch: Callable[..., SwitchProcess]) -> None:
    # T1 = 50 ms: Timers H, J and L (64*T1) end the transactions in 3.2 s rather than 32 s,
    # so the table is seen empty within the test; Timer I is T4 (5 s) either way.
    sw = switch("reject486", ["--control", f"127.0.0.1:{free_tcp_port()}", "--sip-t1", "0.05"], log_level="info")
    run = fuzz_switch(sw, datagrams=DATAGRAMS, rate=RATE, seed=SEED, flood_datagrams=FLOOD)
    t, codes = run.tally, run.tally.responses
    summary = (f"seed {SEED}: sent {dict(t.sent)}, mutations {dict(t.mutations)}, responses {sorted(codes.items())}, "
               f"{len(t.transactions)} transactions ({len(t.hanging())} hanging), bad_sip_messages {run.bad_sip_messages}, "
               f"RSS {run.rss_before_kib} -> {run.rss_after_kib} KiB\n" + sw.log_tail(30))

    assert sw.running() and options_ping(sw.sip_addr) == 200, summary
    assert bug_lines(sw.log_text()) == [], summary
    # The run reached every layer: parser refusals, the engine's, the app's, CANCEL's.
    assert t.datagrams == DATAGRAMS and t.send_errors == 0, summary
    assert run.bad_sip_messages > DATAGRAMS // 4 and codes[400] > DATAGRAMS // 5, summary
    for code in (100, 200, 481, 501):
        assert codes[code] > 0, (code, summary)
    assert codes[486] + codes[404] > DATAGRAMS // 40, summary  # the app's RejectCall
    assert t.not_sip == 0, summary  # whatever the switch sends back is a SIP response
    # Every INVITE taken up got its final response; the app accepted none.
    assert t.hanging() == [], summary
    assert t.invites_answered() == [], summary
    # And then it holds nothing, transactions included (their timers ran out).
    assert run.drained_s is not None, (run.status_after, summary)
    assert run.rss_after_kib - run.rss_before_kib < RSS_GROWTH_KIB, summary

    # The flood guard blocked the non-trusted source after its first window's share
    # (flood_density 30 per 2 s by default) and logged it once; the rest were dropped.
    assert run.flood is not None and run.flood.datagrams == FLOOD
    assert len(run.flood.transactions) <= 30 and run.flood.hanging() == [], run.flood.transactions
    blocked = [line for line in sw.log_text().splitlines() if f"SECURITY blocked source={FLOOD_HOST} " in line]
    assert len(blocked) == 1 and "reason=flood" in blocked[0], summary
