"""Fuzzing the sans-I/O IMAP wire core: framing, lexer and parsers.

The only acceptable outcomes for peer input are a result or our own `PeerProtocolError`
subclass; never another exception. A parsed command/response must render to bytes that
parse back to the same object. Inputs are random bytes and mutations of valid samples.
(No run so far, 20,000 examples each included, found a bug; a seed that does goes into an
explicit test here.)
"""

from __future__ import annotations

import contextlib
import itertools
import os
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smime_proxy.errors import PeerProtocolError
from smime_proxy.imap.wire import commands
from smime_proxy.imap.wire.commands import parse_command
from smime_proxy.imap.wire.framing import (
    NEED_DATA,
    ClientFramer,
    ConnectionClosed,
    ContinuationRequest,
    ServerFramer,
)
from smime_proxy.imap.wire.lexer import Reader
from smime_proxy.imap.wire.responses import parse_fetch_head, parse_fetch_tail, parse_response
from smime_proxy.imap.wire.sequence import SequenceSet

# IMAP_WIRE_FUZZ_EXAMPLES=50000 for a deep run.
FUZZ = settings(
    max_examples=int(os.environ.get("IMAP_WIRE_FUZZ_EXAMPLES", "1500")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

COMMANDS = [
    b"a1 UID FETCH 1:*,3 (UID BODY.PEEK[1.2.HEADER.FIELDS (From To)]<0.100> BINARY.PEEK[1]<5.10>"
    b" BINARY.SIZE[2] FLAGS) (CHANGEDSINCE 12 VANISHED)\r\n",
    b"a2 FETCH $ FULL\r\n",
    b"a3 STORE 1 (UNCHANGEDSINCE 5) +FLAGS.SILENT (\\Seen foo)\r\n",
    b"a4 UID MOVE 1:3 {5}\r\nINBOX\r\n",
    b'a5 UID SEARCH RETURN (MIN) CHARSET UTF-8 SUBJECT "x" 1:* NOT (FROM bob)\r\n',
    b"a6 LOGIN bob {3}\r\npwd\r\n",
    b"a7 SELECT INBOX (QRESYNC (1 2 1:5))\r\n",
    b"a8 APPEND INBOX (\\Seen) ~{3+}\r\n\x00\x01\x02\r\n",
    b"a9 FETCH 1 BODY[TEXT]<0.1>\r\n",
]
RESPONSES = [
    b"* 12 FETCH (UID 5 FLAGS (\\Seen \\Recent) BODY[HEADER.FIELDS (FROM)] {5}\r\nabcde "
    b'BODY[1]<0> NIL ENVELOPE ("d" "s" ((NIL NIL "a" "b")) NIL NIL NIL NIL NIL NIL "<id>") '
    b"BINARY[1] ~{3}\r\n\x00\x01\x02 MODSEQ (123))\r\n",
    b"* OK [UIDVALIDITY 3] ok\r\n",
    b"a1 OK [READ-WRITE] done\r\n",
    b"+ go\r\n",
    b"* CAPABILITY IMAP4rev1 LITERAL+ AUTH=PLAIN\r\n",
    b"* 3 EXISTS\r\n",
    b'* LIST (\\Noselect) "/" foo\r\n',
    b"* BYE [ALERT]\r\n",
]
WIRE_ALPHABET = b' ()[]<>{}~+-.*:,$\\"\r\n0123456789ANILOKBODYHEADERFIELDSTEXTMIMEUID\x00\xff'


@st.composite
def mutated(draw: st.DrawFn, samples: list[bytes]) -> bytes:
    """A valid sample with a few bytes inserted, deleted or replaced."""
    data = bytearray(draw(st.sampled_from(samples)))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        byte = draw(st.sampled_from(list(WIRE_ALPHABET)))
        if action == "insert":
            data.insert(position, byte)
        elif position < len(data):
            if action == "delete":
                del data[position]
            else:
                data[position] = byte
    return bytes(data)


noise = st.one_of(
    st.binary(max_size=200),
    st.lists(st.sampled_from(list(WIRE_ALPHABET)), max_size=200).map(bytes),
)


def peer_input(samples: list[bytes]) -> st.SearchStrategy[bytes]:
    return st.one_of(noise, mutated(samples))


def run_framer(
    framer: ClientFramer | ServerFramer, chunks: list[bytes], *, refuse: bool = False
) -> None:
    """Feed everything; whenever the framer waits for data, what it holds is bounded by its
    caps (one line plus one buffered message), whatever the input."""
    bound = framer.max_message_size + framer.max_line_length + 2
    try:
        for chunk in [*chunks, b""]:
            framer.receive_data(chunk)
            while True:
                event = framer.next_event()
                if event is NEED_DATA:
                    assert framer.buffered <= bound
                    break
                if isinstance(event, ConnectionClosed):
                    break
                if refuse and isinstance(event, ContinuationRequest):
                    assert isinstance(framer, ServerFramer)
                    framer.reject_continuation()
    except PeerProtocolError:
        pass


@st.composite
def framers(draw: st.DrawFn) -> ClientFramer | ServerFramer:
    line = draw(st.sampled_from([8, 64, 65536]))
    literal = draw(st.sampled_from([0, 4, 1000]))
    message = draw(st.sampled_from([16, 200, 10**6]))
    threshold = draw(st.sampled_from([None, 0, 3]))
    if draw(st.booleans()):
        return ServerFramer(
            max_line_length=line,
            max_literal_size=literal,
            max_message_size=message,
            stream_threshold=threshold,
            max_nonsync_literal_size=draw(st.sampled_from([None, 2])),
        )
    return ClientFramer(
        max_line_length=line,
        max_literal_size=literal,
        max_message_size=message,
        stream_threshold=threshold,
    )


@given(
    framers(),
    peer_input(COMMANDS + RESPONSES),
    st.lists(st.integers(0, 300), max_size=8),
    st.booleans(),
)
@FUZZ
def test_framing_fuzz(
    framer: ClientFramer | ServerFramer, data: bytes, cuts: list[int], refuse: bool
) -> None:
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    run_framer(framer, [data[a:b] for a, b in itertools.pairwise(points)], refuse=refuse)


@given(peer_input(COMMANDS))
@FUZZ
def test_command_parser_fuzz(raw: bytes) -> None:
    try:
        command = parse_command(raw)
    except PeerProtocolError:
        return
    assert parse_command(command.render()) == command


@given(peer_input(COMMANDS))
@FUZZ
def test_command_parser_memo_fuzz(raw: bytes) -> None:
    """A FETCH parsed through the memo of its items (first and second time) is the command
    read in place, errors and their positions included."""
    def outcome() -> object:
        try:
            return parse_command(raw)
        except PeerProtocolError as exc:
            return type(exc), str(exc)

    with mock.patch.object(commands, "_TAIL_MEMO_MAX", -1):
        in_place = outcome()
    commands._fetch_tail_memo.cache_clear()
    assert outcome() == in_place
    assert outcome() == in_place


@given(peer_input(RESPONSES))
@FUZZ
def test_response_parser_fuzz(raw: bytes) -> None:
    try:
        response = parse_response(raw)
    except PeerProtocolError:
        return
    assert parse_response(response.render()) == response


@given(peer_input([b"* 7 FETCH (UID 9 BODY[] {12}\r\n", b" BINARY[2] ~{4}\r\n", b" UID 5)\r\n"]))
@FUZZ
def test_fetch_head_tail_fuzz(raw: bytes) -> None:
    for parse in (parse_fetch_head, parse_fetch_tail):
        with contextlib.suppress(PeerProtocolError):
            parse(raw)


@given(peer_input([b'(a (b NIL) "x" {2}\r\nab ~{1}\r\n\x00 \\Seen 1:* 12)', b"1:3,5,*:7"]))
@FUZZ
def test_lexer_fuzz(raw: bytes) -> None:
    reader = Reader(raw)
    with contextlib.suppress(PeerProtocolError):
        reader.value()
    with contextlib.suppress(PeerProtocolError):
        SequenceSet.parse(raw)
