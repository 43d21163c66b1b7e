"""Hypothesis strategies for IMAP wire objects (values, items, commands, responses)."""

from __future__ import annotations

from hypothesis import strategies as st

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
)
from smime_proxy.imap.wire.responses import (
    CapabilityResponse,
    ContinuationResponse,
    FetchResponse,
    Response,
    ResponseCode,
    TaggedResponse,
    UntaggedResponse,
    UntaggedStatus,
)
from smime_proxy.imap.wire.sections import MACROS, FetchItem, Section
from smime_proxy.imap.wire.sequence import SeqRange, SequenceSet
from smime_proxy.imap.wire.values import Atom, Binary, Literal, Value

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
