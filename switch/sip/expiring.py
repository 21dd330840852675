"""The bounded cache policy shared by name lookups (``resolver.py``) and DNS records
(``dns_records.py``): entries carry their own expiry; a full cache first drops what has
expired, then the oldest entries, so a flood of distinct names cannot grow it."""

from __future__ import annotations

from typing import Protocol, TypeVar


class Expiring(Protocol):
    @property
    def expires(self) -> float: ...


K = TypeVar("K")
E = TypeVar("E", bound=Expiring)


def remember(cache: dict[K, E], key: K, entry: E, limit: int, now: float) -> None:
    """Put ``entry`` under ``key`` as the newest (dicts keep insertion order)."""
    cache.pop(key, None)
    if len(cache) >= limit:
        for old in [k for k, e in cache.items() if e.expires <= now]:
            del cache[old]
        while len(cache) >= limit:
            del cache[next(iter(cache))]  # the oldest
    cache[key] = entry
