"""Media relay between two bridged legs (a B2BUA's media plane).

Each direction is a ``RelayDirection``: packets arriving on one MediaSession are sent
at once (no buffering: on loopback the relay adds no jitter) on the other with that
session's own SSRC and sequence, and a timestamp that continues ours: the offset
between the incoming and outgoing timestamp is fixed at the first packet of each
incoming stream (and again when its SSRC changes), so the callee sees one continuous
stream across ringback, prompts and the bridged call.

Same codec both sides: payload passes through untouched. PCMU <-> PCMA: transcoded
with a 256-byte table (one ``bytes.translate``). RFC 4733 telephone-events are
re-labelled with the payload type the other side negotiated (dropped if it has none).
Other payload types (comfort noise, stray codecs) are dropped and counted.
"""

from __future__ import annotations

import logging

from media.g711 import ALAW_TO_ULAW, ULAW_TO_ALAW
from media.rtp import RtpPacket
from media.session import MediaSession

logger = logging.getLogger(__name__)

_TRANSCODE = {("PCMU", "PCMA"): ULAW_TO_ALAW, ("PCMA", "PCMU"): ALAW_TO_ULAW}


class RelayDirection:
    __slots__ = ("source", "sink", "_in_ssrc", "_offset", "relayed", "dropped")

    def __init__(self, source: MediaSession, sink: MediaSession) -> None:
        self.source = source
        self.sink = sink
        self._in_ssrc: int | None = None
        self._offset = 0
        self.relayed = 0
        self.dropped = 0

    def __call__(self, pkt: RtpPacket) -> None:
        src, dst = self.source.params, self.sink.params
        if src is None or dst is None:
            self.dropped += 1
            return
        pt = pkt.payload_type
        payload = pkt.payload
        marker = pkt.marker
        if pt == src.pt:
            out_pt = dst.pt
            if src.codec != dst.codec:
                table = _TRANSCODE.get((src.codec, dst.codec))
                if table is None:
                    self.dropped += 1
                    return
                payload = payload.translate(table)
        elif pt == src.dtmf_pt and dst.dtmf_pt is not None:
            out_pt = dst.dtmf_pt
        else:
            self.dropped += 1
            return
        if pkt.ssrc != self._in_ssrc:
            # A new incoming stream: continue from where our outgoing timestamp stands.
            self._in_ssrc = pkt.ssrc
            self._offset = (self.sink.next_timestamp - pkt.timestamp) & 0xFFFFFFFF
            marker = True
        self.sink.send_relayed(payload, (pkt.timestamp + self._offset) & 0xFFFFFFFF, out_pt, marker)
        self.relayed += 1


class MediaRelay:
    """Joins two sessions both ways until ``stop()``; playback on either is stopped."""

    def __init__(self, a: MediaSession, b: MediaSession) -> None:
        self.a_to_b = RelayDirection(a, b)
        self.b_to_a = RelayDirection(b, a)
        a.stop_play()
        b.stop_play()
        a.on_rtp = self.a_to_b
        b.on_rtp = self.b_to_a

    def stop(self) -> None:
        for direction in (self.a_to_b, self.b_to_a):
            if direction.source.on_rtp is direction:
                direction.source.on_rtp = None

    def stats(self) -> dict[str, int]:
        return {"a_to_b": self.a_to_b.relayed, "b_to_a": self.b_to_a.relayed,
                "dropped": self.a_to_b.dropped + self.b_to_a.dropped}
