"""What the sans-I/O transaction layer tells the transaction user (RFC 3261 §17)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .message import SipRequest, SipResponse

if TYPE_CHECKING:
    from .transaction import ClientTransaction, InviteServerTransaction, ServerTransaction


@dataclass(slots=True)
class RequestReceived:
    """A new request (never a retransmission); answer it through ``transaction``."""

    transaction: ServerTransaction
    request: SipRequest


@dataclass(slots=True)
class AckReceived:
    """An ACK for a 2xx (its own transaction per RFC 3261 §17.1.1.3): belongs to a dialog."""

    request: SipRequest
    addr: tuple[str, int]


@dataclass(slots=True)
class ResponseReceived:
    """A response to a request we sent (provisional, final, or a retransmitted 2xx)."""

    transaction: ClientTransaction
    response: SipResponse


@dataclass(slots=True)
class TransactionTimedOut:
    """Timer B or F fired: the peer never answered (the TU treats it as a 408)."""

    transaction: ClientTransaction


@dataclass(slots=True)
class AckTimedOut:
    """RFC 3261 §13.3.1.4: our 2xx was never ACKed within 64*T1; the TU should send BYE."""

    transaction: InviteServerTransaction


SipEvent = RequestReceived | AckReceived | ResponseReceived | TransactionTimedOut | AckTimedOut
