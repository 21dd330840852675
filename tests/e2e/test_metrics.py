"""GET /metrics of the real switch, parsed with prometheus_client's own parser, against
the calls SIPp placed: a bridged call scraped while it is up, a callee that answers 486,
and a stranger refused with 403 (issue 12 point 3).

The switch runs the seed's bridge app: numbers go to a SIPp callee that rings and answers,
numbers starting with 486 (an [[outbound_routes]] prefix) to one that answers 486 Busy.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .harness import ANSWER, LOCALHOST, RtpSink, SwitchProcess, free_tcp_port, media_dest, start_bridge_switch, start_uas, stop_clean

pytestmark = pytest.mark.e2e

STRANGER = "127.0.0.2"  # loopback trust covers 127.0.0.1 only: 403 before any call exists
FRAMES = 75  # 1.5 s of RTP from the caller's side

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(sw: SwitchProcess, token: str | None = None) -> Samples:
    args = sw.command()
    request = urllib.request.Request(f"http://{args[args.index('--control') + 1]}/metrics")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=2) as r:
        assert r.headers["Content-Type"].startswith("text/plain"), r.headers["Content-Type"]
        text = r.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def metric(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def series(samples: Samples, name: str, **fixed: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of ``name`` with the ``fixed`` labels, keyed by their other labels."""
    out = {}
    for (n, labels), v in samples.items():
        d = dict(labels)
        if n == name and all(d.get(k) == x for k, x in fixed.items()):
            out[tuple(sorted((k, x) for k, x in d.items() if k not in fixed))] = v
    return out


def wait_for(sw: SwitchProcess, check: Callable[[Samples], bool], timeout: float = 5.0) -> Samples:
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(sw)
        if check(samples) or time.monotonic() >= deadline:
            return samples
        time.sleep(0.05)


def test_metrics_match_the_calls_placed(switch, bridge_app, sipp_bg, sipp, tmp_path: Path,
                                        rtp_sink: RtpSink, callee_sink: RtpSink) -> None:
    answers = start_uas(sipp_bg, "uas_ring_answer", rtpport=callee_sink.port, pause_ms=200)
    busy = start_uas(sipp_bg, "uas_reject_486")
    config = tmp_path / "routes.toml"
    config.write_text(f'[[outbound_routes]]\nprefix = "486"\ngateway = "sip:{LOCALHOST}:{busy.sip_port}"\n')
    sw = start_bridge_switch(switch, bridge_app(), answers.sip_port, "--config", str(config))

    before = scrape(sw)
    assert metric(before, "softswitch_calls_active", app="default") == 0
    assert metric(before, "softswitch_calls_started_total") == 0
    assert metric(before, "softswitch_sip_requests_total", direction="received", method="INVITE") is None
    assert metric(before, "softswitch_js_workers_up") == metric(before, "softswitch_js_workers") >= 1

    # 1. Answered and bridged, scraped while it is up (the caller hangs up 3 s after its ACK).
    caller = sipp_bg("uac_hangup", sw, keys={"rtpport": rtp_sink.port}, pause_ms=3000, timeout=15)
    to_caller, _ = media_dest(caller, ANSWER)
    rtp_sink.send_frames(to_caller, [bytes([0xFF]) * 160] * FRAMES, 0)
    during = wait_for(sw, lambda s: metric(s, "softswitch_rtp_packets_total", direction="received") == FRAMES)
    assert metric(during, "softswitch_calls_active", app="default") == 1
    assert metric(during, "softswitch_legs_active", app="default") == 2  # caller and callee
    assert metric(during, "softswitch_tasks_active", app="default") == 2  # ingress and egress tasks
    assert metric(during, "softswitch_rtp_packets_total", direction="received") == FRAMES
    assert metric(during, "softswitch_rtp_packets_total", direction="sent") >= FRAMES  # relayed to the callee
    assert metric(during, "softswitch_rtp_ports_in_use") == 2
    assert metric(during, "softswitch_calls_total", app="default", status="200") is None  # not over yet
    rc = caller.wait()
    assert rc.ok and rc.final_status() == 200, rc.describe()

    # 2. The callee is busy: 486 passed on.  3. A stranger: 403, no call.
    rb = sipp("uac_expect_final", sw, service="4861000", keys={"rtpport": rtp_sink.port}, timeout=10)
    assert rb.final_status() == 486, rb.describe()
    rs = sipp("uac_expect_final", sw, keys={"rtpport": rtp_sink.port}, timeout=10,
              extra_args=["-i", STRANGER, "-mi", STRANGER])
    assert rs.final_status() == 403, rs.describe()
    assert answers.wait().ok and busy.wait().ok

    after = wait_for(sw, lambda s: metric(s, "softswitch_legs_active", app="default") == 0
                     and metric(s, "softswitch_tasks_active", app="default") == 0)
    assert metric(after, "softswitch_calls_active", app="default") == 0
    assert metric(after, "softswitch_legs_active", app="default") == 0
    assert metric(after, "softswitch_tasks_active", app="default") == 0
    assert metric(after, "softswitch_rtp_ports_in_use") == 0
    assert metric(after, "softswitch_calls_started_total") == 2
    assert series(after, "softswitch_calls_total", app="default") == {(("status", "200"),): 1, (("status", "486"),): 1}
    assert series(after, "softswitch_calls_refused_total") == {(("reason", "not-a-trunk-or-user"),): 1}
    assert metric(after, "softswitch_security_events_total", event="refused", reason="not-a-trunk-or-user") == 1
    assert metric(after, "softswitch_tasks_started_total", app="default") == 4
    assert sum(series(after, "softswitch_tasks_ended_total", app="default").values()) == 4
    assert metric(after, "softswitch_tasks_ended_total", app="default", outcome="error") is None

    # SIP, first copies: 3 INVITEs in (ours to the callees are out), the callers' ACKs for the
    # 200, 486 and 403, the first caller's BYE; we sent 2 INVITEs, ACKed the callee's 200 and 486,
    # and BYEd the answering callee.
    requests = series(after, "softswitch_sip_requests_total")
    assert {k: v for k, v in requests.items() if ("method", "OPTIONS") not in k} == {
        (("direction", "received"), ("method", "INVITE")): 3, (("direction", "received"), ("method", "ACK")): 3,
        (("direction", "received"), ("method", "BYE")): 1,
        (("direction", "sent"), ("method", "INVITE")): 2, (("direction", "sent"), ("method", "ACK")): 2,
        (("direction", "sent"), ("method", "BYE")): 1,
    }, requests
    sent = series(after, "softswitch_sip_responses_total", direction="sent", method="INVITE")
    assert sent == {(("code", "100"),): 3, (("code", "180"),): 2,  # the bridge app rings both callers
                    (("code", "200"),): 1, (("code", "486"),): 1, (("code", "403"),): 1}, sent
    received = series(after, "softswitch_sip_responses_total", direction="received", method="INVITE")
    assert received[(("code", "180"),)] == 1 and received[(("code", "486"),)] == 1 and received[(("code", "200"),)] >= 1
    assert metric(after, "softswitch_sip_responses_total", direction="received", method="BYE", code="200") == 1
    assert metric(after, "softswitch_sip_parse_errors_total") == 0

    assert metric(after, "softswitch_post_dial_delay_seconds_count") == 2  # 180 and 486 from local callees
    assert metric(after, "softswitch_post_dial_delay_seconds_bucket", le="1.0") == 2
    assert metric(after, "softswitch_call_duration_seconds_count") == 1
    assert 2.5 <= metric(after, "softswitch_call_duration_seconds_sum") <= 6  # type: ignore[operator]
    assert metric(after, "softswitch_rtp_packets_total", direction="received") == FRAMES  # no dip at the end
    assert metric(after, "softswitch_rtp_send_lateness_seconds_count") > 0  # type: ignore[operator]
    stop_clean(sw)


def test_metrics_need_the_token_when_one_is_set(switch, tmp_path: Path) -> None:
    config = tmp_path / "token.toml"
    config.write_text('control_token = "m3trics-token"\n')
    sw = switch("greeting", ["--config", str(config), "--control", f"{LOCALHOST}:{free_tcp_port()}"])
    with pytest.raises(urllib.error.HTTPError) as refused:
        scrape(sw)
    assert refused.value.code == 401
    samples = scrape(sw, token="m3trics-token")
    assert metric(samples, "softswitch_calls_active", app="default") == 0
    assert metric(samples, "softswitch_build_info", version=next(
        dict(labels)["version"] for name, labels in samples if name == "softswitch_build_info")) == 1
    assert metric(samples, "process_resident_memory_bytes") > 0  # type: ignore[operator]
