"""RTP port allocation."""

from __future__ import annotations

import logging
from collections import deque

logger = logging.getLogger(__name__)


class NoRtpPorts(Exception):
    """Every RTP port in the configured range is in use."""


class RtpPortPool:
    """Even RTP ports in [low, high]; the odd neighbour (port + 1) is left for RTCP
    (RFC 3550 §11). Round-robin: a released port goes to the back of the queue, so stale
    packets still in flight from the last call do not land in the next one."""

    def __init__(self, low: int, high: int) -> None:
        if not 1024 <= low <= high <= 65535:
            raise ValueError(f"RTP port range {low}-{high} must lie within 1024-65535")
        first = low + (low & 1)
        ports = range(first, high, 2)  # port + 1 must also be <= high
        if not ports:
            raise ValueError(f"RTP port range {low}-{high} holds no even/odd port pair")
        self.low, self.high = low, high
        self._free: deque[int] = deque(ports)
        self._used: set[int] = set()

    @property
    def capacity(self) -> int:
        return len(self._free) + len(self._used)

    @property
    def in_use(self) -> int:
        return len(self._used)

    def allocate(self) -> int:
        if not self._free:
            raise NoRtpPorts(
                f"all {self.capacity} RTP ports in {self.low}-{self.high} are in use; "
                f"widen --rtp-ports (each call leg needs 2 ports)"
            )
        port = self._free.popleft()
        self._used.add(port)
        return port

    def release(self, port: int) -> None:
        if port not in self._used:
            logger.warning("RTP port %d released but not allocated; ignored", port)
            return
        self._used.remove(port)
        self._free.append(port)
