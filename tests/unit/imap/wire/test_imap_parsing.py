"""Parsing and rendering of client commands (the fetch-att grammar, sequence sets, UID
forms) and server responses (status, FETCH data with nested values and literals, streamed
FETCH heads and tails), the value lexer, and round trips parse(render(x)) == x."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smime_proxy.errors import LocalProtocolError, PeerProtocolError
from smime_proxy.imap.wire.commands import (
    Command,
    CopyCommand,
    FetchCommand,
    GenericCommand,
    LoginCommand,
    Modifier,
    SearchCommand,
    SelectCommand,
    StoreCommand,
    _fetch_tail_memo,
    parse_command,
)
from smime_proxy.imap.wire.errors import ParseError, RenderError
from smime_proxy.imap.wire.framing import ClientFramer, LiteralStart, MessageTail, NeedData
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
from smime_proxy.imap.wire.sections import MACROS, FetchItem, Section, read_fetch_att
from smime_proxy.imap.wire.sequence import SeqRange, SequenceSet
from smime_proxy.imap.wire.values import Atom, Binary, Literal, Value, render

# --- strategies ---

ATOM_CHARS = "abcXYZ019!#$&'+,-./:;<=>?@[^_`|}~"
TOKEN_CHARS = ATOM_CHARS + "]%*"

tags = st.text(alphabet="aZ0.-!]", min_size=1, max_size=6).map(lambda s: s.encode("ascii"))
nz32 = st.integers(1, 2**32 - 1)
num64 = st.integers(0, 2**63 - 1)


def _not_special(token: str) -> bool:
    return not token.isdigit() and token.upper() != "NIL"


atoms = st.builds(
    lambda flag, body: Atom(("\\" if flag else "") + body),
    st.booleans(),
    st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=8).filter(_not_special),
)
flags = st.builds(
    lambda flag, body: Atom(("\\" if flag else "") + body),
    st.booleans(),
    st.text(alphabet=ATOM_CHARS, min_size=1, max_size=8),
)
strings = st.one_of(
    st.binary(max_size=20),
    st.binary(max_size=10).map(Literal),
    st.sampled_from([b"", b"NIL", b'a"b\\c', b"\r\n", b"a1 OK x\r\n"]),
)
values: st.SearchStrategy[Value] = st.recursive(
    st.one_of(st.none(), num64, atoms, strings, st.binary(max_size=8).map(Binary)),
    lambda children: st.lists(children, max_size=4).map(tuple),
    max_leaves=12,
)

seq_numbers = st.one_of(st.none(), nz32)
sequence_sets = st.one_of(
    st.just(SequenceSet(saved=True)),
    st.lists(
        st.one_of(
            nz32.map(lambda n: SeqRange(n, n)),
            st.builds(SeqRange, seq_numbers, seq_numbers),
        ),
        min_size=1,
        max_size=4,
    ).map(lambda ranges: SequenceSet(tuple(ranges))),
)

header_names = st.one_of(
    st.text(alphabet="abcXYZ-_09", min_size=1, max_size=10).map(lambda s: s.encode("ascii")),
    st.sampled_from([b"", b"with space", b"NIL", b'q"uote', b"\xe9t\xe9"]),
)
parts = st.lists(nz32, max_size=3).map(tuple)


@st.composite
def sections(draw: st.DrawFn, *, binary: bool = False) -> Section:
    part = draw(parts)
    if binary:
        return Section(part)
    texts: list[str | None] = [None, "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT"]
    if part:
        texts.append("MIME")
    text = draw(st.sampled_from(texts))
    fields: tuple[bytes, ...] = ()
    if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        fields = tuple(draw(st.lists(header_names, min_size=1, max_size=3)))
    return Section(part, text, fields)


extension_names = st.sampled_from(
    ["X-GM-MSGID", "EMAILID", "THREADID", "SAVEDATE", "PREVIEW", "X.Y_Z-1"]
)


@st.composite
def request_items(draw: st.DrawFn) -> FetchItem:
    kind = draw(st.sampled_from(["simple", "extension", "BODY", "BINARY", "BINARY.SIZE"]))
    if kind == "simple":
        return FetchItem(
            draw(
                st.sampled_from(
                    [
                        "ENVELOPE",
                        "FLAGS",
                        "INTERNALDATE",
                        "RFC822",
                        "RFC822.HEADER",
                        "RFC822.SIZE",
                        "RFC822.TEXT",
                        "BODY",
                        "BODYSTRUCTURE",
                        "UID",
                        "MODSEQ",
                    ]
                )
            )
        )
    if kind == "extension":
        return FetchItem(draw(extension_names))
    section = draw(sections(binary=kind != "BODY"))
    if kind == "BINARY.SIZE":
        return FetchItem(kind, section)
    origin = length = None
    if draw(st.booleans()):
        origin, length = draw(num64), draw(st.integers(1, 2**63 - 1))
    return FetchItem(kind, section, draw(st.booleans()), origin, length)


@st.composite
def response_items(draw: st.DrawFn) -> FetchItem:
    item = draw(request_items()).response_item()
    if item.section is not None and item.name != "BINARY.SIZE" and draw(st.booleans()):
        return FetchItem(item.name, item.section, False, draw(num64), None)
    return FetchItem(item.name, item.section, False, None, None)


@st.composite
def fetch_commands(draw: st.DrawFn) -> FetchCommand:
    uid = draw(st.booleans())
    macro = draw(st.sampled_from([None, "ALL", "FAST", "FULL"]))
    items = (
        MACROS[macro] if macro else tuple(draw(st.lists(request_items(), min_size=1, max_size=5)))
    )
    modifiers: list[Modifier] = []
    if draw(st.booleans()):
        modifiers.append(Modifier("CHANGEDSINCE", (draw(num64),)))
        if uid and draw(st.booleans()):
            modifiers.append(Modifier("VANISHED"))
    if draw(st.booleans()):
        modifiers.append(Modifier("X-MOD", (draw(values),)))
    return FetchCommand(draw(tags), uid, draw(sequence_sets), items, macro, tuple(modifiers))


@st.composite
def store_commands(draw: st.DrawFn) -> StoreCommand:
    modifiers: tuple[Modifier, ...] = ()
    if draw(st.booleans()):
        modifiers = (Modifier("UNCHANGEDSINCE", (draw(num64),)),)
    return StoreCommand(
        draw(tags),
        draw(st.booleans()),
        draw(sequence_sets),
        draw(st.sampled_from(["FLAGS", "+FLAGS", "-FLAGS"])),
        draw(st.booleans()),
        tuple(draw(st.lists(flags, max_size=4))),
        modifiers,
    )


mailboxes = st.one_of(st.binary(max_size=12), st.sampled_from([b"INBOX", b"a b", b"&AOk-"]))
first_keys = values.filter(
    lambda v: not (isinstance(v, Atom) and v.upper() in ("CHARSET", "RETURN"))
)


@st.composite
def search_commands(draw: st.DrawFn) -> SearchCommand:
    criteria = (draw(first_keys), *draw(st.lists(values, max_size=3)))
    return_options = draw(st.one_of(st.none(), st.lists(values, max_size=3).map(tuple)))
    charset = draw(st.one_of(st.none(), st.sampled_from([b"UTF-8", b"US-ASCII", b"x y"])))
    return SearchCommand(draw(tags), draw(st.booleans()), criteria, charset, return_options)


generic_args = st.binary(max_size=20).filter(lambda b: b"\r" not in b and b"\n" not in b)

commands: st.SearchStrategy[Command] = st.one_of(
    fetch_commands(),
    store_commands(),
    st.builds(CopyCommand, tags, st.booleans(), sequence_sets, mailboxes, st.booleans()),
    search_commands(),
    st.builds(LoginCommand, tags, st.binary(max_size=10), st.binary(max_size=10)),
    st.builds(
        SelectCommand,
        tags,
        mailboxes,
        st.booleans(),
        st.one_of(st.none(), st.lists(values, max_size=3).map(tuple)),
    ),
    st.builds(
        GenericCommand,
        tags,
        st.sampled_from(["NOOP", "CAPABILITY", "APPEND", "ID", "X-FOO", "LIST"]),
        generic_args,
    ),
    st.builds(GenericCommand, tags, st.just("EXPUNGE"), generic_args, st.just(True)),
)

texts = st.binary(max_size=20).filter(lambda b: not (set(b) & {0, 10, 13}))
codes = st.builds(
    ResponseCode,
    st.text(alphabet="ABCXYZ-09.", min_size=1, max_size=10),
    st.one_of(st.none(), texts.filter(lambda b: b and b"]" not in b)),
)


def _plain_text(text: bytes) -> bytes:
    return text.lstrip(b"[")


responses: st.SearchStrategy[Response] = st.one_of(
    st.builds(
        TaggedResponse,
        tags,
        st.sampled_from(["OK", "NO", "BAD"]),
        st.none(),
        texts.map(_plain_text),
    ),
    st.builds(TaggedResponse, tags, st.sampled_from(["OK", "NO", "BAD"]), codes, texts),
    st.builds(
        UntaggedStatus,
        st.sampled_from(["OK", "NO", "BAD", "PREAUTH", "BYE"]),
        st.one_of(st.none(), codes),
        texts.map(_plain_text),
    ),
    st.builds(ContinuationResponse, texts),
    st.builds(
        CapabilityResponse,
        st.lists(st.text(alphabet=ATOM_CHARS + "=", min_size=1, max_size=8), max_size=5).map(tuple),
    ),
    st.builds(
        FetchResponse,
        nz32,
        st.lists(st.tuples(response_items(), values), min_size=1, max_size=5).map(tuple),
    ),
    st.builds(
        UntaggedResponse,
        st.sampled_from(["EXISTS", "EXPUNGE", "RECENT"]),
        st.integers(0, 2**32 - 1),
        st.just(b""),
    ),
    st.builds(
        UntaggedResponse,
        st.sampled_from(["LIST", "SEARCH", "FLAGS", "VANISHED", "ENABLED", "X-Y"]),
        st.none(),
        generic_args,
    ),
)


# === commands ===


def fetch(raw: bytes) -> FetchCommand:
    command = parse_command(raw)
    assert isinstance(command, FetchCommand)
    return command


def item(text: bytes) -> FetchItem:
    reader = Reader(text)
    result = read_fetch_att(reader)
    assert reader.pos == len(text)
    return result


# --- fetch-att ----------------------------------------------------------------------------

ITEMS = [
    # (request text, parsed item, canonical response name)
    (b"ENVELOPE", FetchItem("ENVELOPE"), b"ENVELOPE"),
    (b"flags", FetchItem("FLAGS"), b"FLAGS"),
    (b"INTERNALDATE", FetchItem("INTERNALDATE"), b"INTERNALDATE"),
    (b"RFC822", FetchItem("RFC822"), b"RFC822"),
    (b"RFC822.HEADER", FetchItem("RFC822.HEADER"), b"RFC822.HEADER"),
    (b"RFC822.SIZE", FetchItem("RFC822.SIZE"), b"RFC822.SIZE"),
    (b"RFC822.TEXT", FetchItem("RFC822.TEXT"), b"RFC822.TEXT"),
    (b"BODY", FetchItem("BODY"), b"BODY"),
    (b"BODYSTRUCTURE", FetchItem("BODYSTRUCTURE"), b"BODYSTRUCTURE"),
    (b"UID", FetchItem("UID"), b"UID"),
    (b"MODSEQ", FetchItem("MODSEQ"), b"MODSEQ"),
    (b"BODY[]", FetchItem("BODY", Section()), b"BODY[]"),
    (b"BODY.PEEK[]", FetchItem("BODY", Section(), peek=True), b"BODY[]"),
    (
        b"BODY.PEEK[1.2]<0.100>",
        FetchItem("BODY", Section((1, 2)), True, 0, 100),
        b"BODY[1.2]<0>",
    ),
    (b"body[text]<5.1>", FetchItem("BODY", Section((), "TEXT"), False, 5, 1), b"BODY[TEXT]<5>"),
    (b"BODY[HEADER]", FetchItem("BODY", Section((), "HEADER")), b"BODY[HEADER]"),
    (b"BODY[1.MIME]", FetchItem("BODY", Section((1,), "MIME")), b"BODY[1.MIME]"),
    (b"BODY[4.2.2.TEXT]", FetchItem("BODY", Section((4, 2, 2), "TEXT")), b"BODY[4.2.2.TEXT]"),
    (
        b'BODY.PEEK[HEADER.FIELDS (From "Subject" {2}\r\nTo)]',
        FetchItem("BODY", Section((), "HEADER.FIELDS", (b"From", b"Subject", b"To")), True),
        b"BODY[HEADER.FIELDS (From Subject To)]",
    ),
    (
        b"BODY[2.HEADER.FIELDS.NOT (X-A)]",
        FetchItem("BODY", Section((2,), "HEADER.FIELDS.NOT", (b"X-A",))),
        b"BODY[2.HEADER.FIELDS.NOT (X-A)]",
    ),
    (b"BINARY[]", FetchItem("BINARY", Section()), b"BINARY[]"),
    (b"BINARY.PEEK[1.3]", FetchItem("BINARY", Section((1, 3)), True), b"BINARY[1.3]"),
    (b"BINARY[2]<7.9>", FetchItem("BINARY", Section((2,)), False, 7, 9), b"BINARY[2]<7>"),
    (b"BINARY.SIZE[1]", FetchItem("BINARY.SIZE", Section((1,))), b"BINARY.SIZE[1]"),
    (b"X-GM-MSGID", FetchItem("X-GM-MSGID"), b"X-GM-MSGID"),
]


@pytest.mark.parametrize(("text", "expected", "response_name"), ITEMS)
def test_fetch_att(text: bytes, expected: FetchItem, response_name: bytes) -> None:
    parsed = item(text)
    assert parsed == expected
    assert parsed.response_name() == response_name
    assert item(parsed.render()) == parsed


def test_seen_and_known() -> None:
    assert item(b"BODY[]").sets_seen
    assert not item(b"BODY.PEEK[]").sets_seen
    assert item(b"RFC822").sets_seen and item(b"RFC822.TEXT").sets_seen
    assert not item(b"RFC822.HEADER").sets_seen and not item(b"BODY").sets_seen
    assert item(b"BINARY[1]").sets_seen and not item(b"BINARY.SIZE[1]").sets_seen
    assert item(b"BODY[1]").is_body_section and not item(b"BODY").is_body_section
    assert item(b"BODYSTRUCTURE").is_known and not item(b"X-GM-MSGID").is_known
    header = item(b"BODY[HEADER.FIELDS (from To)]")
    assert header.section is not None and header.section.field_names() == ("FROM", "TO")


@pytest.mark.parametrize(
    "text",
    [
        b"BODY[1.]",
        b"BODY[0]",
        b"BODY[01]",
        b"BODY[MIME]",
        b"BODY[1.2.FOO]",
        b"BODY[HEADER.FIELDS]",
        b"BODY[HEADER.FIELDS ()]",
        b"BODY[HEADER.FIELDS (A B]",
        b"BODY[]<0>",
        b"BODY[]<0.0>",
        b"BODY[]<1.",
        b"BODY[]<99999999999999999999.1>",
        b"BODY[99999999999]",
        b"BODY.PEEK",
        b"BINARY",
        b"BINARY[TEXT]",
        b"BINARY[1.MIME]",
        b"BINARY.PEEK",
        b"UID[1]",
        b"ALL",
        b"1",
    ],
)
def test_bad_fetch_att(text: bytes) -> None:
    with pytest.raises(ParseError):
        read_fetch_att(Reader(text + b")"))


def test_binary_size_takes_no_partial() -> None:
    # "BINARY.SIZE[1]" is complete before the "<": the command parser then fails on it.
    with pytest.raises(ParseError):
        parse_command(b"A FETCH 1 (BINARY.SIZE[1]<0.5>)\r\n")


# --- FETCH commands -----------------------------------------------------------------------


@pytest.mark.parametrize("macro", ["ALL", "FAST", "FULL"])
def test_macros_expand(macro: str) -> None:
    command = fetch(b"A1 FETCH 1:* " + macro.lower().encode() + b"\r\n")
    assert command.macro == macro
    assert command.items == MACROS[macro]
    assert command.render() == b"A1 FETCH 1:* " + macro.encode() + b"\r\n"


def test_full_fetch_command() -> None:
    command = fetch(
        b"a1 UID FETCH 1:*,3 (UID BODY.PEEK[1.2]<0.100> FLAGS) (CHANGEDSINCE 12345 VANISHED)\r\n"
    )
    assert command.tag == b"a1" and command.uid
    assert command.sequence_set == SequenceSet((SeqRange(1, None), SeqRange(3, 3)))
    assert [i.response_name() for i in command.items] == [b"UID", b"BODY[1.2]<0>", b"FLAGS"]
    assert command.changedsince == 12345 and command.vanished
    assert command.render() == (
        b"a1 UID FETCH 1:*,3 (UID BODY.PEEK[1.2]<0.100> FLAGS) (CHANGEDSINCE 12345 VANISHED)\r\n"
    )


def test_unknown_items_are_kept_as_extensions() -> None:
    # An extension item (RFC 8474 EMAILID, X-GM-*) or a typo: the proxy passes it on, and
    # a server that does not know it answers BAD.
    command = fetch(b"A2 FETCH 1 (EMAILID FASTER)\r\n")
    assert [i.name for i in command.items] == ["EMAILID", "FASTER"]
    assert not any(i.is_known for i in command.items)


def test_single_item_and_saved_set() -> None:
    command = fetch(b"A2 FETCH $ body[]\r\n")
    assert command.sequence_set.saved
    assert command.items == (FetchItem("BODY", Section()),)
    assert command.changedsince is None and not command.vanished


@pytest.mark.parametrize(
    "raw",
    [
        b"A FETCH 1 (CHANGEDSINCE 5)\r\n",  # not an item
        b"A FETCH 1 ()\r\n",
        b"A FETCH 1 (UID) (VANISHED)\r\n",  # VANISHED needs UID FETCH and CHANGEDSINCE
        b"A FETCH 1 (UID) (CHANGEDSINCE 1 VANISHED)\r\n",
        b"A UID FETCH 1 (UID) (CHANGEDSINCE x)\r\n",
        b"A FETCH 1 (UID FAST)\r\n",
        b"A FETCH 0 UID\r\n",
        b"A FETCH 1,,2 UID\r\n",
        b"A FETCH 1: UID\r\n",
        b"A FETCH 4294967296 UID\r\n",
        b"A FETCH 1 UID \r\n",
        b"A FETCH 1 UID",
        b"A  FETCH 1 UID\r\n",
        b"+A FETCH 1 UID\r\n",
    ],
)
def test_bad_fetch_commands(raw: bytes) -> None:
    with pytest.raises(ParseError):
        parse_command(raw)


# --- sequence sets ------------------------------------------------------------------------


def test_sequence_set_members() -> None:
    seq = SequenceSet.parse(b"3,5:7,9:*,2:1")
    assert seq.render() == b"3,5:7,9:*,2:1"
    assert list(seq.iter_numbers(10)) == [1, 2, 3, 5, 6, 7, 9, 10]
    assert seq.contains(6, 10) and not seq.contains(4, 10) and not seq.contains(8, 10)
    assert list(SequenceSet.parse(b"*:4").iter_numbers(2)) == [2, 3, 4]
    assert SequenceSet.of(1, 3).render() == b"1,3"
    with pytest.raises(LocalProtocolError):
        SequenceSet(saved=True).contains(1, 1)


@given(sequence_sets)
def test_sequence_set_round_trip(seq: SequenceSet) -> None:
    assert SequenceSet.parse(seq.render()) == seq


# --- other commands -----------------------------------------------------------------------


def test_store() -> None:
    command = parse_command(b"A3 UID STORE 1:2 (UNCHANGEDSINCE 7) -flags.silent \\Seen $Junk\r\n")
    assert command == StoreCommand(
        b"A3",
        True,
        SequenceSet((SeqRange(1, 2),)),
        "-FLAGS",
        True,
        (Atom("\\Seen"), Atom("$Junk")),
        (Modifier("UNCHANGEDSINCE", (7,)),),
    )
    assert command.unchangedsince == 7
    assert command.render() == (
        b"A3 UID STORE 1:2 (UNCHANGEDSINCE 7) -FLAGS.SILENT (\\Seen $Junk)\r\n"
    )
    assert parse_command(b"A4 STORE 1 FLAGS ()\r\n") == StoreCommand(
        b"A4", False, SequenceSet.of(1), "FLAGS", False, ()
    )
    for bad in (b"A STORE 1 FLAGS (\\*)\r\n", b"A STORE 1 +LABELS (x)\r\n", b"A STORE 1 FLAGS\r\n"):
        with pytest.raises(ParseError):
            parse_command(bad)


def test_copy_move_search_select_login() -> None:
    assert parse_command(b"A UID COPY 1:3 {5}\r\nTrash\r\n") == CopyCommand(
        b"A", True, SequenceSet((SeqRange(1, 3),)), b"Trash", False
    )
    assert parse_command(b'A MOVE $ "My Box"\r\n') == CopyCommand(
        b"A", False, SequenceSet(saved=True), b"My Box", True
    )
    search = parse_command(b'A UID SEARCH RETURN (SAVE) CHARSET UTF-8 1:* SUBJECT "x y"\r\n')
    assert search == SearchCommand(
        b"A", True, (Atom("1:*"), Atom("SUBJECT"), b"x y"), b"UTF-8", (Atom("SAVE"),)
    )
    assert parse_command(b"A SEARCH UNSEEN (OR FROM a LARGER 100)\r\n") == SearchCommand(
        b"A", False, (Atom("UNSEEN"), (Atom("OR"), Atom("FROM"), Atom("a"), Atom("LARGER"), 100))
    )
    assert parse_command(b"A EXAMINE inbox (QRESYNC (67890007 20050715194045000))\r\n") == (
        SelectCommand(b"A", b"inbox", True, (Atom("QRESYNC"), (67890007, 20050715194045000)))
    )
    login = parse_command(b'A LOGIN "joe" {6}\r\nsecret\r\n')
    assert login == LoginCommand(b"A", b"joe", b"secret")
    assert b"secret" not in repr(login).encode()
    assert login.render() == b"A LOGIN joe secret\r\n"


def test_generic_commands_keep_raw_arguments() -> None:
    command = parse_command(b"A5 APPEND INBOX (\\Seen) {3+}\r\nabc\r\n")
    assert command == GenericCommand(b"A5", "APPEND", b"INBOX (\\Seen) {3+}\r\nabc")
    assert command.render() == b"A5 APPEND INBOX (\\Seen) {3+}\r\nabc\r\n"
    assert parse_command(b"a6 uid expunge 1:3\r\n") == GenericCommand(
        b"a6", "EXPUNGE", b"1:3", uid=True
    )
    assert parse_command(b"a7 idle\r\n").name == "IDLE"
    for bad in (b"a8 NOOP \r\n", b"a9 UID UID 1\r\n", b"a1 \xff\r\n", b"\r\n", b"a1\r\n"):
        with pytest.raises(ParseError):
            parse_command(bad)


def test_renderer_refuses_invalid_objects() -> None:
    with pytest.raises(RenderError):
        GenericCommand(b"A", "UID")
    with pytest.raises(RenderError):
        GenericCommand(b"A B", "NOOP").render()
    with pytest.raises(RenderError):
        FetchItem("BINARY")
    with pytest.raises(RenderError):
        FetchItem("BODY", Section((), "TEXT"), origin=None, length=5)
    with pytest.raises(RenderError):
        Section((), "MIME")
    with pytest.raises(RenderError):
        FetchCommand(b"A", False, SequenceSet.of(1), ())
    with pytest.raises(RenderError):
        StoreCommand(b"A", False, SequenceSet.of(1), "FLAGS", False, (Atom("a b"),))
    assert issubclass(RenderError, LocalProtocolError)
    assert issubclass(ParseError, PeerProtocolError)


def test_literal_arguments_render_as_literals() -> None:
    command = CopyCommand(b"A", False, SequenceSet.of(1), b"caf\xc3\xa9")
    assert command.render() == b"A COPY 1 {5}\r\ncaf\xc3\xa9\r\n"
    assert parse_command(command.render()) == command
    assert Literal(b"x") == b"x"


# --- round trips --------------------------------------------------------------------------


@given(request_items())
def test_fetch_item_round_trip(fetch_item: FetchItem) -> None:
    assert item(fetch_item.render()) == fetch_item


@given(commands)
@settings(max_examples=500)
def test_command_round_trip(command: Command) -> None:
    assert parse_command(command.render()) == command


def test_reprs_hide_credentials_and_messages() -> None:
    auth = parse_command(b"A1 AUTHENTICATE PLAIN AGJvYgBodW50ZXIy\r\n")
    append = parse_command(b"A2 APPEND INBOX {7+}\r\nprivate\r\n")
    assert "AGJvYgBodW50ZXIy" not in repr(auth) and "private" not in repr(append)
    assert "1:5" in repr(parse_command(b"A3 UID EXPUNGE 1:5\r\n"))


# === responses ===

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
    framer = ClientFramer(stream_threshold=4)
    framer.receive_data(stream)
    events = []
    while not isinstance(event := framer.next_event(), NeedData):
        events.append(event)
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


def test_long_quoted_string_with_escapes() -> None:
    # A 64 KiB line of quoted text with escapes (the first pattern needed ~40 ms for this;
    # the unrolled one reads it in one pass: see bench, no timing asserted here).
    text = b'"' + b'a\\"' * 20000 + b'"'
    value = Reader(text).value()
    assert value == b'a"' * 20000


def test_capabilities_in_a_response_code() -> None:
    greeting = parse_response(b"* OK [CAPABILITY IMAP4rev1 LITERAL+ AUTH=PLAIN] ready\r\n")
    assert isinstance(greeting, UntaggedStatus) and greeting.code is not None
    assert greeting.code.words() == ("IMAP4rev1", "LITERAL+", "AUTH=PLAIN")
    assert ResponseCode("ALERT").words() == ()


def test_a_fetch_is_parsed_the_same_from_the_memo_of_its_items() -> None:
    """What follows a FETCH's sequence set is parsed once per text (`_fetch_tail_memo`):
    a second parse is served from it and gives the same command; an error keeps its
    position in the whole command (read again in place)."""
    commands = [
        b"a1 UID FETCH 4 BODY.PEEK[]\r\n",
        b"a2 FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (DATE)])\r\n",
        b"a3 UID FETCH 1:* (FLAGS) (CHANGEDSINCE 7 VANISHED)\r\n",
        b"a4 FETCH 2 ALL\r\n",
    ]
    _fetch_tail_memo.cache_clear()
    first = [parse_command(raw) for raw in commands]
    assert _fetch_tail_memo.cache_info().currsize == len(commands)
    again = [parse_command(raw.replace(b"a", b"b", 1)) for raw in commands]
    assert _fetch_tail_memo.cache_info().hits == len(commands)
    assert [replace(c, tag=b"a" + c.tag[1:]) for c in again if isinstance(c, FetchCommand)] == first
    # the same items, valid after UID FETCH only: the memo holds them, the error is exact
    with pytest.raises(ParseError) as warm:
        parse_command(b"c1 FETCH 1:* (FLAGS) (CHANGEDSINCE 7 VANISHED)\r\n")
    _fetch_tail_memo.cache_clear()
    with pytest.raises(ParseError) as cold:
        parse_command(b"c1 FETCH 1:* (FLAGS) (CHANGEDSINCE 7 VANISHED)\r\n")
    assert str(warm.value) == str(cold.value) and warm.value.position == 46
    _fetch_tail_memo.cache_clear()
    with pytest.raises(ParseError) as bad:
        parse_command(b"c2 FETCH 1 (FLAGS BODY[1.]\r\n")
    assert bad.value.position == 25  # in the command (13 in the items alone)
    assert _fetch_tail_memo.cache_info().currsize == 0  # nothing wrong is kept
