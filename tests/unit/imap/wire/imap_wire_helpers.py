"""Shared helpers for the IMAP wire tests: drive a framer, reassemble its output, generate
framed messages with literals."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass

from hypothesis import strategies as st

from smime_proxy.imap.wire.framing import (
    ConnectionClosed,
    Event,
    LiteralChunk,
    LiteralEnd,
    LiteralStart,
    Message,
    MessageTail,
    NeedData,
    _Framer,
)


def drive(framer: _Framer, chunks: Iterable[bytes], *, close: bool = False) -> list[Event]:
    """Feed the chunks one by one, draining events after each; optionally signal EOF."""
    events: list[Event] = []

    def drain() -> None:
        while True:
            event = framer.next_event()
            if isinstance(event, NeedData):
                return
            events.append(event)
            if isinstance(event, ConnectionClosed):
                return

    for chunk in chunks:
        framer.receive_data(chunk)
        drain()
    if close:
        framer.receive_data(b"")
        drain()
    return events


def merge_chunks(events: list[Event]) -> list[Event]:
    """Join consecutive LiteralChunks (their boundaries depend on how data arrived)."""
    out: list[Event] = []
    for event in events:
        if isinstance(event, LiteralChunk) and out and isinstance(out[-1], LiteralChunk):
            out[-1] = LiteralChunk(out[-1].data + event.data)
        elif isinstance(event, LiteralChunk) and not event.data:
            continue
        else:
            out.append(event)
    return out


def reassemble(events: list[Event]) -> list[bytes]:
    """The raw messages an event list stands for (streamed pieces put back together)."""
    messages: list[bytes] = []
    current: bytearray | None = None
    for event in events:
        if isinstance(event, Message):
            assert current is None
            messages.append(event.raw)
        elif isinstance(event, LiteralStart):
            if current is None:
                current = bytearray()
            current += event.head
        elif isinstance(event, LiteralChunk):
            assert current is not None
            current += event.data
        elif isinstance(event, LiteralEnd):
            assert current is not None
        elif isinstance(event, MessageTail):
            assert current is not None
            current += event.raw
            messages.append(bytes(current))
            current = None
    assert current is None
    return messages


def splits(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` cut at the given offsets (sorted, deduplicated, clipped)."""
    points = sorted({min(max(cut, 0), len(data)) for cut in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@dataclass(frozen=True)
class Framed:
    """One generated command/response and the literals it holds."""

    raw: bytes
    literals: tuple[tuple[int, bool, bool], ...]  # (size, synchronizing, binary)


_MARKER_END = re.compile(rb"\{[0-9]*[+-]?\}\Z")

# Text of a line: printable ASCII, with the characters that matter for framing well
# represented. No CR/LF.
line_text = st.text(alphabet=st.sampled_from(list('abc XYZ019{}~+-*()[]"\\')), max_size=30).map(
    lambda s: s.encode("ascii")
)

# Literal contents that try hard to look like framing: CRLF, tagged responses, markers.
literal_data = st.one_of(
    st.binary(max_size=40),
    st.sampled_from(
        [
            b"",
            b"\r\n",
            b"a1 OK done\r\n",
            b"* 1 FETCH (BODY[] {5}\r\n",
            b")\r\nA2 OK [ALERT] fake\r\n",
            b"{3}\r\nabc",
            b"\n\r\n\r",
        ]
    ),
)


@st.composite
def framed_messages(draw: st.DrawFn, *, binary: bool = True, nonsync: bool = True) -> Framed:
    """A syntactically framable message: text, then any number of literals each followed by
    more text, then CRLF. The final line never ends in something like a literal marker."""
    out = bytearray(b"t " + draw(line_text))
    literals: list[tuple[int, bool, bool]] = []
    for _ in range(draw(st.integers(0, 3))):
        data = draw(literal_data)
        is_binary = binary and draw(st.booleans())
        synchronizing = not nonsync or draw(st.booleans())
        out += b" ~{" if is_binary else b" {"
        out += b"%d%s}\r\n" % (len(data), b"" if synchronizing else b"+")
        out += data
        out += draw(line_text)
        literals.append((len(data), synchronizing, is_binary))
    while _MARKER_END.search(out) or out.endswith(b"}"):
        out += b"x"
    out += b"\r\n"
    return Framed(bytes(out), tuple(literals))
