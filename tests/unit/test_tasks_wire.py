"""The switch <-> JS worker message schema and its line framing."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from switch.tasks.wire import SCHEMA, MessageLink, decode, encode


def test_every_kind_round_trips() -> None:
    for kind, arity in SCHEMA.items():
        message = [kind, *[{"n": i, "s": "a\nb"} for i in range(arity)]]
        line = encode(message)
        assert line.endswith(b"\n") and line.count(b"\n") == 1  # a newline in a string stays escaped
        assert decode(line[:-1]) == message


@pytest.mark.parametrize("line, why", [
    (b"{", "not JSON"),
    (b'{"kind": "event"}', "a JSON array starting with its kind"),
    (b"[]", "a JSON array starting with its kind"),
    (b'["launch", 1]', "unknown message kind 'launch'"),
    (b'["event", 1]', "'event' takes 2 field(s), got 1"),
])
def test_bad_lines_say_what_is_wrong(line: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)):
        decode(line)


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True


def make_link() -> tuple[MessageLink, list[Any], list[str], FakeTransport]:
    got: list[Any] = []
    lost: list[str] = []
    link = MessageLink("peer", got.append, lost.append)
    transport = FakeTransport()
    link.connection_made(transport)  # type: ignore[arg-type]
    return link, got, lost, transport


def test_messages_split_across_reads_arrive_whole_and_in_order() -> None:
    link, got, lost, _ = make_link()
    data = encode(["event", 7, {"type": "Dtmf", "digit": "5"}]) + encode(["ping", 1]) + encode(["shutdown"])
    for i in range(0, len(data), 5):
        link.data_received(data[i:i + 5])
    assert got == [["event", 7, {"type": "Dtmf", "digit": "5"}], ["ping", 1], ["shutdown"]]
    assert lost == []


def test_a_bad_message_closes_the_link_once_and_nothing_after_it_is_delivered() -> None:
    link, got, lost, transport = make_link()
    link.data_received(encode(["ping", 1]) + b'["nope"]\n' + encode(["ping", 2]))
    assert got == [["ping", 1]]
    assert transport.closed and len(lost) == 1 and "unknown message kind 'nope'" in lost[0]
    link.connection_lost(None)
    link.send(["pong", 1])
    assert len(lost) == 1 and transport.written == []


def test_a_coalescing_link_writes_one_iterations_messages_at_once_in_order() -> None:
    async def scenario() -> tuple[list[bytes], list[bytes]]:
        link = MessageLink("worker", lambda m: None, lambda r: None, coalesce=True)
        transport = FakeTransport()
        link.connection_made(transport)  # type: ignore[arg-type]
        link.send(["ping", 1])
        link.send(["event", 2, {"type": "Dtmf", "digit": "1"}])
        before = list(transport.written)  # nothing written yet: the write waits for the iteration's end
        await asyncio.sleep(0)
        link.send(["ping", 3])
        link.close()  # a close writes what was sent before it
        return before, transport.written

    before, written = asyncio.run(scenario())
    assert before == []
    assert written == [encode(["ping", 1]) + encode(["event", 2, {"type": "Dtmf", "digit": "1"}]), encode(["ping", 3])]
