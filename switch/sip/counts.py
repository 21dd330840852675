"""What the transaction layer received and sent: SIP messages by method and status, and
retransmissions, as plain counters (``switch/metrics.py`` exports them at scrape time).

Why plain dicts and not prometheus_client counters: this runs for every SIP message. One
count here costs 0.1-0.2 µs, prometheus_client's ``Counter.labels(...).inc()`` ~1.5 µs (it
looks the label values up and takes a lock; measured with timeit on the 2-core dev box,
Python 3.11), and the registry reads these dicts only when scraped.

Methods are labels, and a method is any token a peer cares to send (RFC 3261 §25.1): one
outside ``METHODS`` counts as ``other``, so a scanner cannot grow the tables without bound.
Status codes are bounded already (the parser takes 100-699 only).
"""

from __future__ import annotations

# RFC 3261's methods and the extensions phones send (RFC 3262, 3265, 3311, 3428, 3515,
# 3903, 6086).
METHODS = frozenset(("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "INFO", "UPDATE", "PRACK",
                     "SUBSCRIBE", "NOTIFY", "PUBLISH", "MESSAGE", "REFER"))
OTHER = "other"


class SipCounts:
    """Counters of one ``TransactionLayer``. "Sent" counts each message once, when it is
    first built for the wire; copies sent again (Timers A/E/G, a final replayed for a
    retransmitted request, an ACK repeated for a repeated failure) count as
    ``retransmissions_sent``. "Received" counts every parsed message that reached the
    layer (flood-dropped and unparsable ones never do); those matching a transaction
    that had already seen them also count as ``retransmissions_received``."""

    __slots__ = ("requests_received", "requests_sent", "responses_received", "responses_sent",
                 "retransmissions_received", "retransmissions_sent")

    def __init__(self) -> None:
        self.requests_received: dict[str, int] = {}  # method -> count
        self.requests_sent: dict[str, int] = {}
        self.responses_received: dict[tuple[str, int], int] = {}  # (CSeq method, status) -> count
        self.responses_sent: dict[tuple[str, int], int] = {}
        self.retransmissions_received = 0
        self.retransmissions_sent = 0

    def request(self, sent: bool, method: str) -> None:
        table = self.requests_sent if sent else self.requests_received
        key = method if method in METHODS else OTHER
        table[key] = table.get(key, 0) + 1

    def response(self, sent: bool, method: str, status: int) -> None:
        table = self.responses_sent if sent else self.responses_received
        key = (method if method in METHODS else OTHER, status)
        table[key] = table.get(key, 0) + 1


def cseq_method(headers: dict[str, list[str]]) -> str:
    """The method of a message's CSeq without parsing it (a response built from a bad
    request may lack a valid one)."""
    values = headers.get("cseq")
    return values[0].rpartition(" ")[2] if values else OTHER
