"""FETCH rewriting for the IMAP proxy (DESIGN decision 8): pure functions, no I/O, no crypto.

A client FETCH that asks for any *content* item (anything computed from the message bytes:
BODY[...], BODY.PEEK[...], BINARY[...], BINARY.SIZE[...], RFC822, RFC822.HEADER, RFC822.TEXT,
RFC822.SIZE, BODY, BODYSTRUCTURE, ENVELOPE) goes through `imap.fetch_answers`: a message
that must be opened has every content item answered here from a `MessageView` of the bytes
the client is shown, and the other items (FLAGS, INTERNALDATE, MODSEQ, extension items)
copied from the upstream's answer.

- `needs_rewrite(command)`: whether the command asks for content.
- `answer(...)`: the client's FETCH response for one opened message.

May import: imap.views, imap.wire, mime, native, stdlib.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from smime_proxy.imap.views import MessageView, ViewSection
from smime_proxy.imap.wire import (
    Atom,
    FetchCommand,
    FetchItem,
    FetchResponse,
    ParseError,
    Section,
    Value,
    parse_response,
    render,
)
from smime_proxy.imap.wire.spans import FetchSpans, without_items
from smime_proxy.imap.wire.values import Binary, Literal, render_structure
from smime_proxy.mime.entity import STATUS_HEADER, without_field
from smime_proxy.native import native

__all__ = [
    "CONTENT_ITEMS",
    "WHOLE",
    "answer",
    "answer_copying",
    "as_stored_for_listing",
    "content_value",
    "copy_plan",
    "copying_or_none",
    "is_content",
    "is_content_name",
    "is_listing",
    "lists_only",
    "needs_rewrite",
    "prerender",
    "render_item_value",
    "sets_seen",
]

CONTENT_ITEMS: Final = frozenset(
    {
        "BODY",
        "BODYSTRUCTURE",
        "ENVELOPE",
        "RFC822",
        "RFC822.HEADER",
        "RFC822.TEXT",
        "RFC822.SIZE",
        "BINARY",
        "BINARY.SIZE",
    }
)
# How the whole message is asked for upstream, and how the upstream names it in its answer.
WHOLE: Final = FetchItem("BODY", Section(), peek=True)
WHOLE_NAME: Final = WHOLE.response_name()  # b"BODY[]"
UID: Final = FetchItem("UID")
FLAGS: Final = FetchItem("FLAGS")
MODSEQ: Final = FetchItem("MODSEQ")
SEEN: Final = Atom("\\Seen")
_NOT_7BIT: Final = re.compile(rb"[\x00\x80-\xff]")


def is_content(item: FetchItem) -> bool:
    """Whether the item is computed from the message bytes (so from the shown message)."""
    return item.name in CONTENT_ITEMS


_LISTING_CONTENT: Final = frozenset({"ENVELOPE", "RFC822.SIZE", "RFC822.HEADER"})
_HEADER_TEXTS: Final = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"})


def is_listing(item: FetchItem) -> bool:
    """Whether a client may be given the item of an encrypted message while the key is
    locked, as the upstream stores it: what a client lists and syncs a folder with (flags,
    dates, sizes, the envelope, top-level header fields). Never the structure or a body
    part: a client decides from those how to fetch and show the content, and would keep
    them (RFC 9051 2.3.1.1: a UID's content never changes)."""
    if not is_content(item) or item.name in _LISTING_CONTENT:
        return True
    section = item.section
    return (item.name == "BODY" and section is not None and not section.part
            and section.text in _HEADER_TEXTS and item.origin is None)


def lists_only(command: FetchCommand) -> bool:
    """Whether every item of the FETCH is a listing item (`is_listing`)."""
    return all(is_listing(item) for item in command.items)


def needs_rewrite(command: FetchCommand) -> bool:
    return any(is_content(item) for item in command.items)


def sets_seen(command: FetchCommand) -> bool:
    """Whether fetching these items sets \\Seen (RFC 9051 section 6.4.5)."""
    return any(item.sets_seen for item in command.items)


def content_value(view: MessageView, item: FetchItem) -> Value:
    """The value of one content item for the shown message. Raises
    `smime_proxy.mime.transfer.UnknownCte` for BINARY of an undecodable part."""
    name = item.name
    if name == "BODYSTRUCTURE":
        return view.bodystructure()
    if name == "BODY" and item.section is None:
        return view.body()
    if name == "ENVELOPE":
        return view.envelope()
    if name == "RFC822.SIZE":
        return view.size
    if name == "BINARY.SIZE":
        assert item.section is not None
        return view.binary_size(item.section.part)
    data = _string_data(view, item)
    assert data is not None
    return Binary(data) if _is_literal8(item, data) else Literal(data)


def _string_data(view: MessageView, item: FetchItem) -> bytes | None:
    """The bytes of a string-valued content item (RFC822*, BODY[...], BINARY[...]), not
    copied; None for the others."""
    name = item.name
    if name == "RFC822":
        return view.data
    if name == "RFC822.HEADER":
        return view.rfc822_header()
    if name == "RFC822.TEXT":
        return view.rfc822_text()
    section = item.section
    if section is None or name not in ("BODY", "BINARY"):
        return None
    partial = None if item.origin is None else (
        item.origin, item.length if item.length is not None else 2**63)
    if name == "BODY":
        return view.section(ViewSection(section.part, section.text or "", section.fields),
                            partial)
    return view.binary(section.part, partial)


def _is_literal8(item: FetchItem, data: bytes) -> bool:
    """Dovecot sends BINARY content that is not 7-bit (NUL or 8-bit octets) as literal8."""
    return item.name == "BINARY" and _NOT_7BIT.search(data) is not None


def _response_item(item: FetchItem) -> FetchItem:
    """How the answer is named: `FetchItem.response_item()`, with the header field names of
    HEADER.FIELDS[.NOT] upper-cased (what Dovecot sends)."""
    named = item.response_item()
    section = named.section
    if section is None or not section.fields:
        return named
    fields = tuple(name.upper() for name in section.fields)
    return FetchItem(named.name, Section(section.part, section.text, fields), False,
                     named.origin, None)


_STRUCTURES: Final = frozenset({"BODYSTRUCTURE", "ENVELOPE"})


def _is_structure(item: FetchItem) -> bool:
    """BODYSTRUCTURE, ENVELOPE or BODY without a section: a value rendered as a structure,
    the same for every request of it (kept rendered in the view)."""
    return item.name in _STRUCTURES or (item.name == "BODY" and item.section is None)


def render_item_value(item: FetchItem, value: Value) -> bytes:
    """The wire bytes that follow the item's name, structures by `render_structure`."""
    return render_structure(value) if _is_structure(item) else render(value)


class Rendered:
    """A value already in wire form, as pieces: a large literal's data is one piece, never
    copied into a bigger bytes until the whole response is joined once."""

    __slots__ = ("pieces",)

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces


def render_fetch(number: int, items: list[tuple[FetchItem, Value | Rendered]]) -> list[bytes]:
    """`* number FETCH (...)` CRLF as pieces (a large literal's data one of them, not
    copied: the caller joins them, or sends a large answer piece by piece)."""
    out: list[bytes] = [b"* %d FETCH (" % number]
    for index, (item, value) in enumerate(items):
        if index:
            out.append(b" ")
        out.append(item.render() + b" ")
        if isinstance(value, Rendered):
            out.extend(value.pieces)
        else:
            out.append(render_item_value(item, value))
    out.append(b")\r\n")
    return out


def _rendered(view: MessageView, item: FetchItem) -> Rendered:
    """A content item's wire form. The structures (BODYSTRUCTURE, BODY, ENVELOPE: what a
    client's resync asks for again and again) are rendered once per view; a literal's data
    stays one piece (a message can be tens of MB)."""
    name = item.name
    if _is_structure(item):
        done = view.rendered.get(name)  # a structure has no section: its name says it all
        if done is None:
            done = view.rendered[name] = render_item_value(item, content_value(view, item))
        return Rendered([done])
    data = _string_data(view, item)
    if data is not None:
        marker = b"~{%d}\r\n" if _is_literal8(item, data) else b"{%d}\r\n"
        return Rendered([marker % len(data), data])
    return Rendered([render_item_value(item, content_value(view, item))])


_PRERENDERED: Final = (FetchItem("BODYSTRUCTURE"), FetchItem("ENVELOPE"))


def prerender(view: MessageView) -> None:
    """Render the structures a client's resync asks for, into the view (`_rendered`): by
    the native core where it takes the message (native/src/structure.rs, the twin of
    `MessageView.bodystructure` and `envelope`), else by the views."""
    if native is not None and not view.rendered:
        structure, envelope = native.render_views(view.data)
        if structure is not None:
            view.rendered["BODYSTRUCTURE"] = structure
        if envelope is not None:
            view.rendered["ENVELOPE"] = envelope
    for item in _PRERENDERED:
        _rendered(view, item)


def _has_seen(flags: Value) -> bool:
    if not isinstance(flags, (list, tuple)):
        return False
    return any(isinstance(f, str) and f.upper() == "\\SEEN" for f in flags)


def newly_seen(command: FetchCommand, upstream_items: Mapping[bytes, Value]) -> bool:
    """Whether the client's FETCH sets \\Seen on a message that does not have it yet."""
    return sets_seen(command) and not _has_seen(upstream_items.get(b"FLAGS"))


def answer(
    number: int,
    command: FetchCommand,
    view: MessageView | None,
    upstream_items: Mapping[bytes, Value],
    *,
    mark_seen: bool,
) -> list[bytes]:
    """The client's `* number FETCH (...)` line for one message, as pieces (`render_fetch`):
    UID first (UID FETCH or asked),
    then the items in the order asked (each once), then FLAGS when `mark_seen` made \\Seen
    new and the client did not ask for FLAGS (what Dovecot does). `view` None: the message
    is gone (expunged), every content item is NIL."""
    out: list[tuple[FetchItem, Value | Rendered]] = []
    seen_names: set[bytes] = set()

    def add(item: FetchItem, value: Value | Rendered) -> None:
        name = item.render()
        if name not in seen_names:
            seen_names.add(name)
            out.append((item, value))

    def flags_value() -> Value:
        flags = upstream_items.get(b"FLAGS")
        listed = list(flags) if isinstance(flags, (list, tuple)) else []
        if mark_seen and not _has_seen(listed):
            listed.append(SEEN)
        return listed

    if command.uid or UID in command.items:
        add(UID, upstream_items.get(b"UID"))
    for item in command.items:
        if is_content(item):
            add(_response_item(item), None if view is None else _rendered(view, item))
        elif item == FLAGS:
            add(FLAGS, flags_value())
        else:
            name = item.response_name()
            if name in upstream_items:
                add(item.response_item(), upstream_items[name])
    if mark_seen and b"FLAGS" not in seen_names:
        add(FLAGS, flags_value())
    if b"MODSEQ" in upstream_items and b"MODSEQ" not in seen_names:
        # RFC 7162 3.1.4.1: after CHANGEDSINCE (or with CONDSTORE enabled) every FETCH
        # response carries MODSEQ, asked for or not
        add(MODSEQ, upstream_items[b"MODSEQ"])
    return render_fetch(number, out)


CopyPlan = tuple[tuple[bytes, FetchItem | None], ...]
"""How `answer_copying` builds a response: for each item in order, its response name and
None (copied from the upstream's answer) or the content item computed from the view."""


def copy_plan(command: FetchCommand) -> CopyPlan:
    """The plan of `answer_copying` for a FETCH (made once per command, not per message):
    UID first (UID FETCH or asked), the items in the order asked (each once), then MODSEQ
    (RFC 7162 3.1.4.1, as in `answer`)."""
    plan: list[tuple[bytes, FetchItem | None]] = []
    names: set[bytes] = set()

    def add(name: bytes, item: FetchItem | None) -> None:
        if name not in names:
            names.add(name)
            plan.append((name, item))

    if command.uid or UID in command.items:
        add(b"UID", None)
    for item in command.items:
        if is_content(item):
            add(_response_item(item).render(), item)
        else:
            add(item.response_name(), None)
    add(b"MODSEQ", None)
    return tuple(plan)


def answer_copying(number: int, plan: CopyPlan, view: MessageView,
                   items: Mapping[bytes, bytes]) -> bytes:
    """`answer` for a FETCH that sets no \\Seen, with the upstream's items (`items`: name
    to its text in the upstream's response, name and value) copied as the upstream wrote
    them instead of parsed and rendered again: what a client's resync of opened messages
    costs (issue 10's encrypted_sync_cached). An item the upstream did not send is left
    out, as in `answer`, which differs only for a missing UID or FLAGS (NIL, ()): the
    passes that copy always ask for both (tests/unit/imap/test_answer_copying.py)."""
    out: list[bytes] = [b"* %d FETCH (" % number]
    rendered = view.rendered
    for name, item in plan:
        if item is None:
            text = items.get(name)
            if text is not None:
                out.append(text)
                out.append(b" ")
            continue
        out.append(name)
        out.append(b" ")
        # the items of a resync, read here without a call each (`_rendered` makes them)
        kind = item.name
        if kind == "RFC822.SIZE":
            out.append(b"%d" % len(view.data))
        elif _is_structure(item) and (done := rendered.get(kind)) is not None:
            out.append(done)
        else:
            out.extend(_rendered(view, item).pieces)
        out.append(b" ")
    if len(out) == 1:  # no item at all (the upstream sent none of those asked)
        out.append(b" ")
    out[-1] = b")\r\n"
    return b"".join(out)


def copying_or_none(number: int, plan: CopyPlan, view: MessageView,
                    items: Mapping[bytes, bytes]) -> bytes | None:
    """`answer_copying`, or None when the views fail (the message is then answered the long
    way, `answer`, which tells the client why: UnknownCte, or a bug in the views)."""
    try:
        return answer_copying(number, plan, view, items)
    except Exception:
        return None


def without_content(raw: bytes) -> bytes:
    """An unsolicited FETCH response with its content items removed (the proxy alone
    answers content, from the shown message)."""
    try:
        response = parse_response(raw)
    except ParseError:
        return b""
    if not isinstance(response, FetchResponse):
        return raw
    kept = tuple((i, v) for i, v in response.items if not is_content(i))
    if len(kept) == len(response.items):
        return raw
    return FetchResponse(response.number, kept).render() if kept else b""


def only_known_plain(command: FetchCommand, known_plain: set[int]) -> bool:
    """Whether a UID FETCH names only a few UIDs, all known to need no opening (the
    session relays it as it is)."""
    if not command.uid or command.sequence_set.saved or not known_plain:
        return False
    uids: list[int] = []
    for span in command.sequence_set.ranges:
        if span.first is None or span.last is None:  # "*"
            return False
        low, high = sorted((span.first, span.last))
        if high - low >= 1000 or len(uids) > 1000:
            return False
        uids.extend(range(low, high + 1))
    return all(uid in known_plain for uid in uids)


def as_stored_for_listing(raw: bytes, spans: FetchSpans, strip: frozenset[bytes]) -> bytes:
    """A sort-pass response answered as the upstream stores the message (`is_listing` items
    only), minus the items the proxy added and any incoming X-SMIME-Status field in the
    header items: only the proxy writes that field (DESIGN 5). Raises ParseError."""
    response = parse_response(without_items(raw, spans, strip))
    assert isinstance(response, FetchResponse)
    items = tuple(
        (item, without_field(value, STATUS_HEADER)
         if isinstance(value, bytes) and item.name in ("BODY", "RFC822.HEADER") else value)
        for item, value in response.items)
    return FetchResponse(response.number, items).render()


_CONTENT_PREFIXES: Final = (b"BODY", b"BINARY", b"RFC822", b"ENVELOPE")


def is_content_name(name: bytes) -> bool:
    """Whether a response item name is a content item (`fetch_rewrite.CONTENT_ITEMS`, any
    section): BODY, BODY[...], BODYSTRUCTURE, BINARY[...], RFC822*, ENVELOPE."""
    return name.startswith(_CONTENT_PREFIXES)
