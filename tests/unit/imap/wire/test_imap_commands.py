"""Client command parsing (the fetch-att grammar, sequence sets, UID forms) and rendering."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from imap_wire_strategies import commands, request_items, sequence_sets

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
    parse_command,
)
from smime_proxy.imap.wire.errors import ParseError, RenderError
from smime_proxy.imap.wire.lexer import Reader
from smime_proxy.imap.wire.sections import MACROS, FetchItem, Section, read_fetch_att
from smime_proxy.imap.wire.sequence import SeqRange, SequenceSet
from smime_proxy.imap.wire.values import Atom, Literal


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
