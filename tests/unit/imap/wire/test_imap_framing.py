"""Framing: lines and literals in both directions, caps, streaming, continuation requests,
rejected literals; every stream fed whole, byte at a time and at random splits."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smime_proxy.errors import LocalProtocolError, PeerProtocolError
from smime_proxy.imap.wire.errors import (
    FramingError,
    LineTooLong,
    LiteralTooLarge,
    TruncatedMessage,
)
from smime_proxy.imap.wire.framing import (
    NEED_DATA,
    ClientFramer,
    ConnectionClosed,
    ContinuationRequest,
    Event,
    LiteralChunk,
    LiteralEnd,
    LiteralRejected,
    LiteralStart,
    Message,
    MessageTail,
    NeedData,
    ServerFramer,
    _Framer,
    split_at_sync_literals,
    use_nonsync_literals,
)

# --- helpers ---


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


FETCH_STREAM = (
    b"* 1 FETCH (UID 7 BODY[] {24}\r\n"
    b"a1 OK fake tagged line\r\n"  # 24 octets of literal that look like a tagged response
    b" FLAGS (\\Seen))\r\n"
    b"* 2 FETCH (BINARY[1] ~{3}\r\n\x00\r\n)\r\n"
    b"a1 OK FETCH completed\r\n"
)


def byte_at_a_time(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


# --- client side (responses) --------------------------------------------------------------


def test_client_whole_stream_gives_messages() -> None:
    events = drive(ClientFramer(), [FETCH_STREAM])
    assert events == [
        Message(b"* 1 FETCH (UID 7 BODY[] {24}\r\na1 OK fake tagged line\r\n FLAGS (\\Seen))\r\n"),
        Message(b"* 2 FETCH (BINARY[1] ~{3}\r\n\x00\r\n)\r\n"),
        Message(b"a1 OK FETCH completed\r\n"),
    ]


@pytest.mark.parametrize("threshold", [None, 0, 3, 24, 25])
def test_byte_at_a_time_equals_whole(threshold: int | None) -> None:
    whole = merge_chunks(drive(ClientFramer(stream_threshold=threshold), [FETCH_STREAM]))
    single = merge_chunks(
        drive(ClientFramer(stream_threshold=threshold), byte_at_a_time(FETCH_STREAM))
    )
    assert single == whole
    second, third = FETCH_STREAM.index(b"* 2 FETCH"), FETCH_STREAM.index(b"a1 OK FETCH")
    assert reassemble(whole) == [
        FETCH_STREAM[:second],
        FETCH_STREAM[second:third],
        FETCH_STREAM[third:],
    ]


def test_streaming_events() -> None:
    events = merge_chunks(drive(ClientFramer(stream_threshold=10), byte_at_a_time(FETCH_STREAM)))
    assert events == [
        LiteralStart(b"* 1 FETCH (UID 7 BODY[] {24}\r\n", 24, binary=False, synchronizing=True),
        LiteralChunk(b"a1 OK fake tagged line\r\n"),
        LiteralEnd(),
        MessageTail(b" FLAGS (\\Seen))\r\n"),
        Message(b"* 2 FETCH (BINARY[1] ~{3}\r\n\x00\r\n)\r\n"),  # 3 < threshold: buffered
        Message(b"a1 OK FETCH completed\r\n"),
    ]


def test_streamed_literal_is_not_buffered() -> None:
    framer = ClientFramer(stream_threshold=0, max_message_size=100)
    framer.receive_data(b"* 1 FETCH (BODY[] {10000000}\r\n")
    assert isinstance(framer.next_event(), LiteralStart)
    payload = b"x" * 65536
    total = 0
    while total < 10_000_000:
        piece = payload[: 10_000_000 - total]
        framer.receive_data(piece)
        event = framer.next_event()
        assert isinstance(event, LiteralChunk)
        assert event.data is piece  # handed on without a copy
        total += len(event.data)
        assert framer.buffered == 0
        if total < 10_000_000:
            assert framer.next_event() is NEED_DATA
    assert framer.next_event() == LiteralEnd()
    framer.receive_data(b")\r\n")
    assert framer.next_event() == MessageTail(b")\r\n")


def test_streamed_chunk_and_following_data_in_one_receive() -> None:
    framer = ClientFramer(stream_threshold=0)
    framer.receive_data(b"* 1 FETCH (BODY[] {4}\r\nab")
    assert isinstance(framer.next_event(), LiteralStart)
    assert framer.next_event() == LiteralChunk(b"ab")
    assert framer.next_event() is NEED_DATA
    assert drive(framer, [b"cd)\r\n* 2 EXISTS\r\n"]) == [
        LiteralChunk(b"cd"),
        LiteralEnd(),
        MessageTail(b")\r\n"),
        Message(b"* 2 EXISTS\r\n"),
    ]


def test_literal_that_looks_tagged_never_desynchronises() -> None:
    evil = b"x\r\na1 OK LOGIN done\r\n* 3 EXISTS\r\n"
    stream = b"* 1 FETCH (BODY[] {%d}\r\n%s)\r\na1 OK real\r\n" % (len(evil), evil)
    for chunks in ([stream], byte_at_a_time(stream)):
        messages = reassemble(drive(ClientFramer(), chunks))
        assert messages == [stream[: -len(b"a1 OK real\r\n")], b"a1 OK real\r\n"]


@given(st.lists(framed_messages(), min_size=1, max_size=5), st.data())
@settings(max_examples=300)
def test_random_splits_reassemble_exactly(messages: list[Framed], data: st.DataObject) -> None:
    stream = b"".join(m.raw for m in messages)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20))
    threshold = data.draw(st.sampled_from([None, 0, 1, 5, 40]))
    whole = merge_chunks(drive(ClientFramer(stream_threshold=threshold), [stream], close=True))
    pieces = merge_chunks(
        drive(ClientFramer(stream_threshold=threshold), splits(stream, cuts), close=True)
    )
    assert pieces == whole
    assert whole[-1] == ConnectionClosed()
    assert reassemble(whole[:-1]) == [m.raw for m in messages]


@given(st.lists(framed_messages(), min_size=1, max_size=4), st.data())
@settings(max_examples=200)
def test_server_side_asks_for_each_sync_literal(
    messages: list[Framed], data: st.DataObject
) -> None:
    stream = b"".join(m.raw for m in messages)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    threshold = data.draw(st.sampled_from([None, 0, 8]))
    events = drive(ServerFramer(stream_threshold=threshold), splits(stream, cuts))
    requests = [e.size for e in events if isinstance(e, ContinuationRequest)]
    assert requests == [size for m in messages for size, sync, _ in m.literals if sync]
    assert reassemble([e for e in events if not isinstance(e, ContinuationRequest)]) == [
        m.raw for m in messages
    ]


def test_continuation_request_comes_before_the_literal_is_needed() -> None:
    framer = ServerFramer()
    framer.receive_data(b"A1 LOGIN {3}\r\n")
    assert framer.next_event() == ContinuationRequest(3)
    assert framer.next_event() is NEED_DATA
    framer.receive_data(b"bob {6+}\r\nsecret\r\n")
    assert framer.next_event() == Message(b"A1 LOGIN {3}\r\nbob {6+}\r\nsecret\r\n")


def test_server_streaming_sync_literal_asks_first() -> None:
    framer = ServerFramer(stream_threshold=0)
    framer.receive_data(b"A1 APPEND INBOX ~{2}\r\n")
    assert framer.next_event() == ContinuationRequest(2)
    assert framer.next_event() == LiteralStart(b"A1 APPEND INBOX ~{2}\r\n", 2, True, True)


def test_shell_refuses_a_continuation() -> None:
    for threshold in (None, 0):
        framer = ServerFramer(stream_threshold=threshold)
        framer.receive_data(b"A1 APPEND Sent {300}\r\n")
        assert framer.next_event() == ContinuationRequest(300)
        framer.reject_continuation()  # the shell sent "A1 NO [TRYCREATE] ..." instead of "+"
        framer.receive_data(b"A2 NOOP\r\n")
        assert drive(framer, []) == [] and framer.next_event() == Message(b"A2 NOOP\r\n")
        with pytest.raises(LocalProtocolError):
            framer.reject_continuation()


def test_reject_continuation_only_right_after_the_request() -> None:
    framer = ServerFramer()
    framer.receive_data(b"A1 LOGIN {3}\r\n")
    assert framer.next_event() == ContinuationRequest(3)
    assert framer.next_event() is NEED_DATA
    with pytest.raises(LocalProtocolError):
        framer.reject_continuation()


def test_rejection_after_a_streamed_literal_names_the_command_tag() -> None:
    framer = ServerFramer(stream_threshold=2, max_literal_size=10)
    events = drive(framer, [b"T9 APPEND X {2+}\r\nab {11+}\r\n", b"x" * 11 + b"\r\nT10 NOOP\r\n"])
    assert events == [
        LiteralStart(b"T9 APPEND X {2+}\r\n", 2, binary=False, synchronizing=False),
        LiteralChunk(b"ab"),
        LiteralEnd(),
        LiteralRejected(b"T9", 11, synchronizing=False),
        Message(b"T10 NOOP\r\n"),
    ]


# --- caps ---------------------------------------------------------------------------------


def test_line_cap_without_crlf() -> None:
    framer = ClientFramer(max_line_length=10)
    framer.receive_data(b"* 01234567\r")  # 10 octets and a CR: the LF may follow
    assert framer.next_event() is NEED_DATA
    framer.receive_data(b"x")
    with pytest.raises(LineTooLong):
        framer.next_event()
    with pytest.raises(FramingError):  # stays broken
        framer.next_event()


def test_line_cap_exact() -> None:
    assert drive(ClientFramer(max_line_length=10), [b"* 01234567\r\n"]) == [
        Message(b"* 01234567\r\n")
    ]
    with pytest.raises(LineTooLong):
        drive(ClientFramer(max_line_length=10), [b"* 012345678\r\n"])


def test_line_cap_applies_to_each_line_of_a_message() -> None:
    framer = ServerFramer(max_line_length=12)
    assert drive(framer, [b"A LOGIN {1}\r\nx {1}\r\ny\r\n"])[-1] == Message(
        b"A LOGIN {1}\r\nx {1}\r\ny\r\n"
    )
    with pytest.raises(LineTooLong):
        drive(ServerFramer(max_line_length=12), [b"A LOGIN {1}\r\nx 0123456789abc\r\n"])


def test_client_literal_over_cap_raises() -> None:
    with pytest.raises(LiteralTooLarge):
        drive(ClientFramer(max_literal_size=5), [b"* 1 FETCH (BODY[] {6}\r\n"])


def test_buffered_message_cap() -> None:
    with pytest.raises(LiteralTooLarge):
        drive(ClientFramer(max_message_size=30), [b"* 1 FETCH (BODY[] {10}\r\n"])
    # the same literal streamed does not count against the buffer cap
    events = drive(
        ClientFramer(max_message_size=30, stream_threshold=10), [b"* 1 FETCH (BODY[] {10}\r\n"]
    )
    assert isinstance(events[0], LiteralStart)


def test_rejected_sync_literal_drops_the_command() -> None:
    framer = ServerFramer(max_literal_size=100)
    events = drive(framer, [b"A7 APPEND INBOX {101}\r\n", b"A8 NOOP\r\n"])
    assert events == [LiteralRejected(b"A7", 101, synchronizing=True), Message(b"A8 NOOP\r\n")]


def test_rejected_nonsync_literal_is_discarded_unbuffered() -> None:
    framer = ServerFramer(max_nonsync_literal_size=4096)  # LITERAL-
    framer.receive_data(b"A7 APPEND INBOX (\\Seen) {5000+}\r\n")
    assert framer.next_event() == LiteralRejected(b"A7", 5000, synchronizing=False)
    framer.receive_data(b"a1 OK looks tagged\r\n" * 250)  # exactly 5000 octets of literal
    assert framer.next_event() is NEED_DATA
    assert framer.buffered == 0
    # The rest of the command, with another non-synchronising literal, is dropped too.
    framer.receive_data(b" {3+}\r\nabc\r\nA8 NOOP\r\n")
    assert framer.next_event() == Message(b"A8 NOOP\r\n")


def test_rejected_nonsync_then_sync_literal_ends_the_command() -> None:
    framer = ServerFramer(max_nonsync_literal_size=2)
    events = drive(framer, [b"A1 X {3+}\r\nabc {4}\r\nA2 NOOP\r\n"])
    assert events == [LiteralRejected(b"A1", 3, False), Message(b"A2 NOOP\r\n")]


def test_nonsync_within_literal_minus_is_accepted() -> None:
    events = drive(ServerFramer(max_nonsync_literal_size=4), [b"A1 X {4+}\r\nabcd\r\n"])
    assert events == [Message(b"A1 X {4+}\r\nabcd\r\n")]


# --- malformed input ----------------------------------------------------------------------


@pytest.mark.parametrize("line", [b"A1 LOGIN {5-}\r\n", b"A1 LOGIN {}\r\n", b"A1 LOGIN {+}\r\n"])
def test_server_refuses_malformed_literal_markers(line: bytes) -> None:
    # Passing such a line on as text could let a server that reads it as a literal
    # see different commands than we do (CRLF injection).
    with pytest.raises(FramingError):
        drive(ServerFramer(), [line])


def test_client_reads_marker_like_text_as_text() -> None:
    assert drive(ClientFramer(), [b"* OK odd {5-}\r\n"]) == [Message(b"* OK odd {5-}\r\n")]


def test_literal_size_out_of_range() -> None:
    with pytest.raises(FramingError):
        drive(ClientFramer(), [b"* 1 FETCH (BODY[] {99999999999999999999}\r\n"])


@pytest.mark.parametrize("data", [b"* OK a\nb\r\n", b"\n", b"* OK\r\r\n* OK\n"])
def test_bare_lf_is_an_error(data: bytes) -> None:
    with pytest.raises(FramingError):
        drive(ClientFramer(), [data])


def test_eof_between_messages_and_inside_them() -> None:
    assert drive(ClientFramer(), [b"* OK x\r\n"], close=True) == [
        Message(b"* OK x\r\n"),
        ConnectionClosed(),
    ]
    for partial in (b"* OK x", b"* 1 FETCH (BODY[] {5}\r\nab", b"* 1 FETCH (BODY[] {1}\r\nx"):
        for threshold in (None, 0):
            with pytest.raises(TruncatedMessage):
                drive(ClientFramer(stream_threshold=threshold), [partial], close=True)


def test_errors_are_peer_errors_and_misuse_is_local() -> None:
    assert issubclass(FramingError, PeerProtocolError)
    framer = ClientFramer()
    framer.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        framer.receive_data(b"x")


# --- sending ------------------------------------------------------------------------------


def test_split_at_sync_literals() -> None:
    raw = b"A1 LOGIN {3}\r\nbob {6+}\r\nsecret\r\n"
    assert split_at_sync_literals(raw) == [b"A1 LOGIN {3}\r\n", b"bob {6+}\r\nsecret\r\n"]
    assert split_at_sync_literals(b"A2 NOOP\r\n") == [b"A2 NOOP\r\n"]
    for bad in (b"A2 NOOP", b"A1 LOGIN {9}\r\nbob\r\n", b"A2 NOOP\r\nA3 NOOP\r\n"):
        with pytest.raises(LocalProtocolError):
            split_at_sync_literals(bad)


@given(framed_messages())
def test_split_pieces_join_back(message: Framed) -> None:
    pieces = split_at_sync_literals(message.raw)
    assert b"".join(pieces) == message.raw
    assert len(pieces) == 1 + sum(1 for _, sync, _ in message.literals if sync)


def test_event_reprs_never_show_content() -> None:
    events = drive(
        ServerFramer(stream_threshold=5),
        [b"A1 LOGIN bob hunter2\r\nA2 APPEND X {6+}\r\nsecret tail-secret\r\n"],
    )
    text = repr(events)
    assert "hunter2" not in text and "secret" not in text
    assert "A1" in text and "octets" in text


def test_use_nonsync_literals() -> None:
    raw = b"A1 LOGIN {3}\r\nbob {5000}\r\n" + b"p" * 5000 + b" ~{2}\r\n\x00\x00\r\n"
    minus = use_nonsync_literals(raw)  # LITERAL-: up to 4096 octets
    assert minus == b"A1 LOGIN {3+}\r\nbob {5000}\r\n" + b"p" * 5000 + b" ~{2+}\r\n\x00\x00\r\n"
    plus = use_nonsync_literals(raw, limit=None)
    assert plus.count(b"+}") == 3
    assert split_at_sync_literals(plus) == [plus]
    assert len(split_at_sync_literals(minus)) == 2
    assert use_nonsync_literals(b"A2 NOOP\r\n") == b"A2 NOOP\r\n"


def test_literal_missing_counts_what_is_still_to_come_of_a_literal() -> None:
    framer = ClientFramer()
    framer.receive_data(b"* 1 FETCH (BODY[] {10}\r\n12345")
    assert framer.literal_missing == 0  # the line is not read yet
    assert framer.next_event() is NEED_DATA
    assert framer.literal_missing == 5
    framer.receive_data(b"6789")
    assert framer.literal_missing == 1
    framer.receive_data(b"0)\r\n")
    assert framer.literal_missing == 0  # complete: a message to hand out
    assert isinstance(framer.next_event(), Message)
    framer.receive_data(b"* 2 FETCH (BODY[] {3}\r\nab")
    assert framer.next_event() is NEED_DATA
    assert framer.literal_missing == 1
    framer.receive_data(b"")
    assert framer.literal_missing == 0  # closed: next_event says so
