"""Server response parsing and rendering: status responses, FETCH data with nested values and
literals, streamed FETCH heads and tails, and the generic value lexer."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from imap_wire_helpers import drive
from imap_wire_strategies import responses, values

from smime_proxy.imap.wire.errors import ParseError, RenderError
from smime_proxy.imap.wire.framing import ClientFramer, LiteralStart, MessageTail
from smime_proxy.imap.wire.lexer import Reader
from smime_proxy.imap.wire.responses import (
    CapabilityResponse,
    ContinuationResponse,
    FetchResponse,
    Response,
    ResponseCode,
    TaggedResponse,
    UntaggedResponse,
    UntaggedStatus,
    parse_fetch_head,
    parse_fetch_tail,
    parse_response,
)
from smime_proxy.imap.wire.sections import FetchItem, Section
from smime_proxy.imap.wire.values import Atom, Binary, Literal, Value, render

ENVELOPE = (
    b'("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" "IMAP4rev2 WG mtg summary and minutes" '
    b'(("Terry Gray" NIL "gray" "cac.washington.edu")) NIL NIL '
    b'((NIL NIL "imap" "cac.washington.edu")) NIL NIL NIL "<B27397-0100000@cac.washington.edu>")'
)


def test_fetch_response_with_nested_values_and_literals() -> None:
    raw = (
        b"* 12 FETCH (FLAGS (\\Seen $Forwarded) UID 4827313 RFC822.SIZE 44827 "
        b'INTERNALDATE "17-Jul-1996 02:44:25 -0700" ENVELOPE ' + ENVELOPE + b" "
        b"BODY[HEADER.FIELDS (FROM)] {23}\r\nFrom: a@example.org\r\n\r\n "
        b"BODY[1]<0> NIL BINARY[2] ~{3}\r\n\x00\x01\x02 BINARY.SIZE[2] 3 MODSEQ (624140003) "
        b'BODYSTRUCTURE ("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 3028 92))\r\n'
    )
    response = parse_response(raw)
    assert isinstance(response, FetchResponse)
    assert response.number == 12
    assert response.get("FLAGS") == (Atom("\\Seen"), Atom("$Forwarded"))
    assert response.get("UID") == 4827313
    assert response.get("INTERNALDATE") == b"17-Jul-1996 02:44:25 -0700"
    envelope = response.get("ENVELOPE")
    assert isinstance(envelope, tuple) and envelope[2] == (
        (b"Terry Gray", None, b"gray", b"cac.washington.edu"),
    )
    header = response.get("BODY[HEADER.FIELDS (FROM)]")
    assert header == b"From: a@example.org\r\n\r\n" and isinstance(header, Literal)
    assert response.get("BODY[1]<0>") is None
    binary = response.get("BINARY[2]")
    assert binary == b"\x00\x01\x02" and isinstance(binary, Binary)
    assert response.get("BINARY.SIZE[2]") == 3
    assert response.get("MODSEQ") == (624140003,)
    assert response.items[-1][0] == FetchItem("BODYSTRUCTURE")
    with pytest.raises(KeyError):
        response.get("RFC822")
    assert parse_response(response.render()) == response


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"a1 OK FETCH completed\r\n", TaggedResponse(b"a1", "OK", None, b"FETCH completed")),
        (b"a1 ok\r\n", TaggedResponse(b"a1", "OK")),
        (
            b"A2 NO [TOOBIG] literal too big\r\n",
            TaggedResponse(b"A2", "NO", ResponseCode("TOOBIG"), b"literal too big"),
        ),
        (
            b"* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited\r\n",
            UntaggedStatus(
                "OK", ResponseCode("PERMANENTFLAGS", b"(\\Deleted \\Seen \\*)"), b"Limited"
            ),
        ),
        (b"* BYE [TOOBIG]\r\n", UntaggedStatus("BYE", ResponseCode("TOOBIG"))),
        (b"* PREAUTH ready\r\n", UntaggedStatus("PREAUTH", None, b"ready")),
        (b"+ Ready for literal data\r\n", ContinuationResponse(b"Ready for literal data")),
        (b"+\r\n", ContinuationResponse()),
        (b"+ \r\n", ContinuationResponse()),
        (
            b"* CAPABILITY IMAP4rev1 IMAP4rev2 LITERAL+ AUTH=PLAIN\r\n",
            CapabilityResponse(("IMAP4rev1", "IMAP4rev2", "LITERAL+", "AUTH=PLAIN")),
        ),
        (b"* 23 EXISTS\r\n", UntaggedResponse("EXISTS", 23)),
        (b"* 0 RECENT\r\n", UntaggedResponse("RECENT", 0)),
        (b"* 44 expunge\r\n", UntaggedResponse("EXPUNGE", 44)),
        (b"* SEARCH\r\n", UntaggedResponse("SEARCH")),
        (b"* SEARCH 2 3 6\r\n", UntaggedResponse("SEARCH", None, b"2 3 6")),
        (
            b'* LIST () "/" {3}\r\na"b\r\n',
            UntaggedResponse("LIST", None, b'() "/" {3}\r\na"b'),
        ),
        (
            b"* VANISHED (EARLIER) 41,43:116\r\n",
            UntaggedResponse("VANISHED", None, b"(EARLIER) 41,43:116"),
        ),
    ],
)
def test_parse_response(raw: bytes, expected: Response) -> None:
    assert parse_response(raw) == expected
    assert parse_response(expected.render()) == expected


def test_capability_lookup() -> None:
    capability = parse_response(b"* CAPABILITY IMAP4rev1 literal+\r\n")
    assert isinstance(capability, CapabilityResponse)
    assert capability.has("LITERAL+") and not capability.has("BINARY")


@pytest.mark.parametrize(
    "raw",
    [
        b"a1 MAYBE done\r\n",
        b"* 0 FETCH (UID 1)\r\n",
        b"* 1 FETCH ()\r\n",
        b"* 1 FETCH (UID 1\r\n",
        b"* 1 FETCH (UID 1))\r\n",
        b"* 1 FETCH (UID)\r\n",
        b"* 1 FETCH (BODY[ {3}\r\nabc)\r\n",
        b"* 1 FETCH (BODY[] {9}\r\nabc)\r\n",
        b"* 1 FETCH (BODY.PEEK[] NIL)\r\n",
        b"* 1 FETCH (BINARY NIL)\r\n",
        b"* 1 FETCH (FLAGS (\\Seen)\r\n",
        b"* 1 FETCH (X \xff)\r\n",
        b"* OK [ALERT\r\n",
        b"* OK [] x\r\n",
        b"* FOO \r\n",
        b"* 3\r\n",
        b"+x\r\n",
        b"a1 OK done",
        b"",
    ],
)
def test_bad_responses(raw: bytes) -> None:
    with pytest.raises(ParseError):
        parse_response(raw)


def test_renderer_refuses_what_would_read_differently() -> None:
    with pytest.raises(RenderError):
        TaggedResponse(b"a1", "OK", None, b"[ALERT] x").render()
    with pytest.raises(RenderError):
        UntaggedStatus("OK", None, b"a\r\nb")
    with pytest.raises(RenderError):
        UntaggedResponse("OK")
    with pytest.raises(RenderError):
        UntaggedResponse("FETCH", 1, b"(UID 1)")
    with pytest.raises(RenderError):
        TaggedResponse(b"+", "OK")


def test_streamed_fetch_head_and_tail() -> None:
    stream = (
        b"* 7 FETCH (UID 9 FLAGS () BODY[] {12}\r\nhello world!"
        b" BINARY[2] ~{4}\r\n\x00\x00\x00\x00 RFC822.SIZE 12)\r\n"
    )
    events = drive(ClientFramer(stream_threshold=4), [stream])
    heads = [e.head for e in events if isinstance(e, LiteralStart)]
    tails = [e.raw for e in events if isinstance(e, MessageTail)]
    first = parse_fetch_head(heads[0])
    assert first.number == 7
    assert first.items == ((FetchItem("UID"), 9), (FetchItem("FLAGS"), ()))
    assert first.pending == FetchItem("BODY", Section())
    second = parse_fetch_head(heads[1])
    assert second.number is None and second.items == ()
    assert second.pending == FetchItem("BINARY", Section((2,)))
    assert parse_fetch_tail(tails[0]) == ((FetchItem("RFC822.SIZE"), 12),)
    assert parse_fetch_tail(b")\r\n") == ()
    with pytest.raises(ParseError):
        parse_fetch_head(b"* 7 FETCH (ENVELOPE ({5}\r\n")  # literal nested in a value
    with pytest.raises(ParseError):
        parse_fetch_head(b"* 7 EXISTS\r\n")


# --- the value lexer ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"NIL", None),
        (b"nil", None),
        (b"0", 0),
        (b"9223372036854775807", 2**63 - 1),
        (b'"a\\"b\\\\c"', b'a"b\\c'),
        (b'""', b""),
        (b"{0}\r\n", b""),
        (b"~{2}\r\n\x00\xff", b"\x00\xff"),
        (b"\\Seen", Atom("\\Seen")),
        (b"\\*", Atom("\\*")),
        (b"1:*", Atom("1:*")),
        (b"~x", Atom("~x")),
        (b"NILS", Atom("NILS")),
        (b"(a (b NIL) () 3)", (Atom("a"), (Atom("b"), None), (), 3)),
    ],
)
def test_values(text: bytes, expected: Value) -> None:
    reader = Reader(text)
    assert reader.value() == expected
    assert reader.pos == len(text)


@pytest.mark.parametrize(
    "text",
    [
        b"9223372036854775808",
        b'"a',
        b'"a\rb"',
        b"{5}\r\nab",
        b"(a",
        b"(a  b)",
        b"\xff",
        b"",
        b"(" * 101,
    ],
)
def test_bad_values(text: bytes) -> None:
    with pytest.raises(ParseError):
        Reader(text).value()


@given(values)
def test_value_round_trip(value: Value) -> None:
    reader = Reader(render(value))
    assert reader.value() == value
    assert reader.pos == len(reader.data)


@given(responses)
@settings(max_examples=500)
def test_response_round_trip(response: Response) -> None:
    assert parse_response(response.render()) == response


def test_fetch_response_repr_hides_message_content() -> None:
    response = parse_response(b"* 3 FETCH (UID 8 BODY[] {9}\r\nconfident)\r\n")
    assert repr(response) == "FetchResponse(3, (UID BODY[]))"
