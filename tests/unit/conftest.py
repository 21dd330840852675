"""Fixtures the unit tests share."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A fresh event loop the test drives itself (run_until_complete), closed after."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
def security_lines() -> Iterator[list[str]]:
    """The SECURITY lines logged during the test."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.name == "switch.security":  # not its children (switch.security.access)
                lines.append(record.getMessage())

    log = logging.getLogger("switch.security")
    handler, level = Collect(), log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    yield lines
    log.removeHandler(handler)
    log.setLevel(level)
