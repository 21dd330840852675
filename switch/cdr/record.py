"""What one call's legs become as call detail records (pure: no I/O, no clock of its own).

One record per leg, linked by ``call_id`` (shared by the legs of a bridged call, like
Asterisk's linkedid), built from a finished ``switch.calls.call.Call`` when the engine
tells its observers. Times are wall-clock seconds (UTC epoch): the legs keep loop time,
and ``wall_offset`` (``time.time() - loop.time()``, taken once per call) converts.

Disposition, as billing systems know it (Asterisk's names):

* ``ANSWERED``: the leg was answered (billsec counts from the answer);
* ``BUSY``: 486 Busy Here / 600 Busy Everywhere;
* ``NO ANSWER``: 408 (no response, or timeout) / 480 (temporarily unavailable) / 487 when
  *we* gave up on an outbound leg (the app's timeout, the caller hung up first);
* ``CANCELLED``: the caller cancelled before the answer (CANCEL -> 487);
* ``FAILED``: every other final status.

``status`` is the final SIP status of the leg's INVITE transaction: 200 when answered,
else the error response we sent (inbound) or got (outbound).
"""

from __future__ import annotations

import json
from typing import Any

from ..calls.call import Call
from ..calls.inbound import InboundLeg
from ..calls.leg import Leg
from ..calls.outbound import OutboundLeg

# Column order of the store and of CSV exports (one place: store.py builds its schema from it).
FIELDS: tuple[tuple[str, str], ...] = (
    ("leg_id", "TEXT PRIMARY KEY"),  # call_id + "-" + leg number (1: the caller's leg)
    ("call_id", "TEXT"),  # shared by every leg of one call
    ("sip_call_id", "TEXT"),
    ("direction", "TEXT"),  # inbound (the caller's leg) | outbound (placed by StartBridgedCall)
    ("app", "TEXT"),
    ("commit_id", "TEXT"),  # the app's version (git commit) that served the call
    ("caller", "TEXT"),  # who the switch admitted it from: trunk:NAME, user:NAME, local
    ("from_uri", "TEXT"),
    ("to_uri", "TEXT"),
    ("request_uri", "TEXT"),
    ("start", "REAL"),  # UTC epoch seconds: INVITE received / sent
    ("answer", "REAL"),  # null if never answered
    ("end", "REAL"),
    ("duration", "REAL"),  # end - start
    ("billsec", "REAL"),  # end - answer, 0 if never answered
    ("disposition", "TEXT"),
    ("status", "INTEGER"),
    ("reason", "TEXT"),  # why it ended: "remote hung up", "rejected 486", "failed 503 ..."
    ("hangup_by", "TEXT"),  # caller | callee | switch (the app, a limit, shutdown)
    ("codec", "TEXT"),
    ("rtp_packets_sent", "INTEGER"),
    ("rtp_packets_received", "INTEGER"),
    ("rtp_bytes_sent", "INTEGER"),
    ("rtp_bytes_received", "INTEGER"),
    ("rtp_lost", "INTEGER"),  # as the peer's RTCP reported it (null without RTCP)
    ("task_error", "TEXT"),  # the owner task's error, file:line first
    ("fields", "TEXT"),  # the app's own fields (SetCdrField), a JSON object
)
NAMES = tuple(name for name, _ in FIELDS)


def disposition(status: int, answered: bool, outbound: bool, cancelled_by_us: bool) -> str:
    if answered:
        return "ANSWERED"
    if status in (486, 600):
        return "BUSY"
    if outbound and cancelled_by_us:
        return "NO ANSWER"  # we gave up on it (the app's timeout, the caller left)
    if status == 487:
        return "CANCELLED"
    if status in (408, 480):
        return "NO ANSWER"
    return "FAILED"


def records(call: Call, wall_offset: float) -> list[dict[str, Any]]:
    """One record per leg the call ever owned, the caller's leg first."""
    return [_record(call, leg, n, wall_offset) for n, leg in enumerate(call.history, 1)]


def _wall(t: float | None, offset: float) -> float | None:
    return None if t is None else round(t + offset, 3)


def _record(call: Call, leg: Leg, n: int, offset: float) -> dict[str, Any]:
    outbound = isinstance(leg, OutboundLeg)
    answered = leg.answered_at is not None
    final = leg.final_status if isinstance(leg, OutboundLeg) else None
    status = 200 if answered else (final or leg.end_status or 0)
    end = leg.ended_at if leg.ended_at is not None else leg.created
    if isinstance(leg, InboundLeg):
        from_uri, to_uri, ruri = _header(leg.invite, "from"), _header(leg.invite, "to"), leg.invite.uri
    else:
        assert isinstance(leg, OutboundLeg)
        sent = leg.invite  # None: the leg never got to send its INVITE (no RTP port)
        from_uri = _header(sent, "from") if sent is not None else None
        to_uri = _header(sent, "to") if sent is not None else str(leg.target)
        ruri = str(leg.target)
    if leg.ended_by_peer:
        hangup_by = "callee" if outbound else "caller"
    else:
        hangup_by = "switch"
    rtp = call.rtp_stats.get(leg, {})
    params = leg.sdp.params
    app = call.app
    custom = call.cdr_fields.get(leg)
    return {
        "leg_id": f"{call.uid}-{n}",
        "call_id": call.uid,
        "sip_call_id": leg.call_id,
        "direction": "outbound" if outbound else "inbound",
        "app": app.name if app else None,
        "commit_id": app.version if app else None,
        "caller": str(call.caller) if call.caller is not None else None,
        "from_uri": from_uri,
        "to_uri": to_uri,
        "request_uri": ruri,
        "start": _wall(leg.created, offset),
        "answer": _wall(leg.answered_at, offset),
        "end": _wall(end, offset),
        "duration": round(end - leg.created, 3),
        "billsec": round(end - leg.answered_at, 3) if leg.answered_at is not None else 0.0,
        "disposition": disposition(status, answered, outbound, isinstance(leg, OutboundLeg) and leg.cancelled_by_us),
        "status": status,
        "reason": leg.end_reason,
        "hangup_by": hangup_by,
        "codec": params.codec if params is not None else None,
        "rtp_packets_sent": rtp.get("packets_sent"),
        "rtp_packets_received": rtp.get("packets_received"),
        "rtp_bytes_sent": rtp.get("bytes_sent"),
        "rtp_bytes_received": rtp.get("bytes_received"),
        "rtp_lost": rtp.get("peer_cumulative_lost"),
        "task_error": call.task_errors.get(leg),
        "fields": json.dumps(custom, separators=(",", ":")) if custom else None,
    }


def _header(invite: Any, name: str) -> str | None:
    try:
        return str((invite.from_ if name == "from" else invite.to).uri)
    except Exception:  # a header we could route on but not parse: keep it raw
        value = invite.get(name)
        return str(value) if value is not None else None
