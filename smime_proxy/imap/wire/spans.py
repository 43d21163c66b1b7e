"""Where each item of a raw FETCH response lies, as byte offsets.

The proxy relays most FETCH responses as the upstream sent them. To remove an item it added
itself (the classification fields, a UID the client did not ask for) or read one value, it
cuts the raw bytes at these offsets instead of parsing and re-rendering the response: what is
relayed stays byte for byte the upstream's.

Grammar (RFC 9051 section 9): `"*" SP nz-number SP "FETCH" SP "(" msg-att-item *(SP
msg-att-item) ")" CRLF`, an item being a name (`BODY[...]<n>` keeps its brackets, spaces
included) SP a value: atom, number, NIL, quoted string, literal / literal8, or a
parenthesised list of those (nested, with literals inside, e.g. ENVELOPE).

May import: imap.wire, stdlib.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, NamedTuple

from .errors import ParseError

__all__ = ["FetchSpans", "ItemSpan", "UidHead", "fetch_spans", "item_value", "last_literal",
           "metadata_items", "uid_date_head", "uid_literal_head", "uid_size_head", "uid_value",
           "without_items"]

_PREFIX: Final = re.compile(rb"\* ([0-9]{1,10}) FETCH \(", re.IGNORECASE)
_LITERAL: Final = re.compile(rb"~?\{([0-9]{1,19})\+?\}\r\n")
_ATOM_END: Final = re.compile(rb"[ ()\r\n]")
_NAME_HEAD: Final = re.compile(rb"[^ ()\[\r\n]*")
_QUOTED: Final = rb'"(?:[^"\\\r\n]++|\\.)*+"'  # RFC 9051 section 9 quoted, escapes kept
_QUOTED_STRING: Final = re.compile(_QUOTED)
# Inside a list: what can hide a parenthesis (RFC 9051 section 9: atoms hold none of these)
_LIST_TOKEN: Final = re.compile(rb"[()]|" + _QUOTED + rb"|~?\{([0-9]{1,19})\+?\}\r\n")
_FAST_LIST_DEPTH: Final = 12


def _nested_list(depth: int) -> bytes:
    """A list of up to `depth` levels with no literal inside, matched in one pass of the
    regular expression engine: what `_LIST_TOKEN` finds one token at a time (a Python loop
    per parenthesis and string: most of the proxy's cost per message of a client's resync),
    with the same tokens. Possessive (Python 3.11): a list it does not match fails at once."""
    outside = rb'[^()"{\r\n]++|' + _QUOTED
    pattern = rb"\((?:" + outside + rb")*+\)"
    for _ in range(depth - 1):
        pattern = rb"\((?:" + outside + rb"|" + pattern + rb")*+\)"
    return pattern


_FAST_LIST: Final = re.compile(_nested_list(_FAST_LIST_DEPTH))


class ItemSpan(NamedTuple):
    """One item: `raw[start:value_start]` is its name and the SP, `raw[value_start:end]` its
    value. `name` is upper-cased. (A named tuple: made for every item of every response,
    it costs a fifth of a frozen dataclass.)"""

    name: bytes
    start: int
    value_start: int
    end: int


@dataclass(frozen=True, slots=True)
class FetchSpans:
    """The items of one FETCH response. `complete` is False when the bytes end inside the last
    item's value (the head of a streamed literal: its data is still to come)."""

    number: int
    items: tuple[ItemSpan, ...]
    complete: bool

    def find(self, name: bytes) -> ItemSpan | None:
        for span in self.items:
            if span.name == name:
                return span
        return None


class _Incomplete(Exception):
    """The bytes end before the value does."""


def fetch_spans(raw: bytes, until: frozenset[bytes] = frozenset()) -> FetchSpans:
    """The items of `* n FETCH (...)` CRLF, or of its head up to a streamed literal's marker.
    With `until`, the scan stops after the last item of those names (when all were found):
    the items after it are not read (`complete` is then False). Raises ParseError when the
    bytes are not a FETCH response."""
    missing = set(until)
    match = _PREFIX.match(raw)
    if match is None:
        raise ParseError("not a FETCH response", 0)
    pos = match.end()
    items: list[ItemSpan] = []
    while True:
        start = pos
        pos = _name_end(raw, pos)
        if raw[pos : pos + 1] != b" ":
            raise ParseError("expected SP after a FETCH item name", pos)
        value_start = pos + 1
        name = raw[start:pos].upper()
        try:
            pos = _value_end(raw, value_start)
        except _Incomplete:
            items.append(ItemSpan(name, start, value_start, len(raw)))
            return FetchSpans(int(match[1]), tuple(items), complete=False)
        items.append(ItemSpan(name, start, value_start, pos))
        if raw[pos : pos + 1] == b" ":
            if missing:
                missing.discard(name)
                if not missing:
                    return FetchSpans(int(match[1]), tuple(items), complete=False)
            pos += 1
            continue
        if raw[pos : pos + 3] == b")\r\n" and pos + 3 == len(raw):
            return FetchSpans(int(match[1]), tuple(items), complete=True)
        raise ParseError("expected SP or ) CRLF after a FETCH item", pos)


def _name_end(raw: bytes, pos: int) -> int:
    """The end of a msg-att name: an atom, with `[...]` and `<n>` kept whole."""
    start = pos
    head = _NAME_HEAD.match(raw, pos)  # matches "" at least
    pos = head.end() if head is not None else pos
    if raw[pos : pos + 1] == b"[":
        close = raw.find(b"]", pos)
        if close < 0:
            raise ParseError("unclosed section in a FETCH item name", pos)
        pos = close + 1
        if raw[pos : pos + 1] == b"<":
            close = raw.find(b">", pos)
            if close < 0:
                raise ParseError("unclosed origin in a FETCH item name", pos)
            pos = close + 1
    if pos == start:
        raise ParseError("empty FETCH item name", pos)
    return pos


def _list_end(raw: bytes, pos: int) -> int:
    """The end of the list that opens at `pos`, one token at a time: literals inside (their
    data may hold anything), any depth, and the head of a list still arriving."""
    end = len(raw)
    depth = 0
    while True:
        token = _LIST_TOKEN.search(raw, pos)
        if token is None:
            raise _Incomplete
        found = raw[token.start()]
        if found == 0x28:
            depth += 1
        elif found == 0x29:
            depth -= 1
            if depth == 0:
                return token.end()
        elif found != 0x22:  # a literal: skip its data
            data_end = token.end() + int(token[1])
            if data_end > end:
                raise _Incomplete
            pos = data_end
            continue
        pos = token.end()


def _value_end(raw: bytes, pos: int) -> int:
    end = len(raw)
    if pos >= end:
        raise _Incomplete
    first = raw[pos]
    if first == 0x28:  # "(": only parentheses, quoted strings and literals matter inside
        fast = _FAST_LIST.match(raw, pos)
        return fast.end() if fast is not None else _list_end(raw, pos)
    if first == 0x22:  # '"': quoted string, backslash escapes (RFC 9051 section 9 quoted)
        quoted = _QUOTED_STRING.match(raw, pos)
        if quoted is not None:
            return quoted.end()
        pos += 1
        while pos < end:
            char = raw[pos]
            if char == 0x5C:
                pos += 2
                continue
            if char == 0x22:
                return pos + 1
            if char in (0x0D, 0x0A):
                raise ParseError("line end in a quoted string", pos)
            pos += 1
        raise _Incomplete
    if first == 0x7B or raw.startswith(b"~{", pos):  # literal or literal8
        match = _LITERAL.match(raw, pos)
        if match is None:
            if b"\r\n" not in raw[pos : pos + 24]:
                raise _Incomplete
            raise ParseError("malformed literal", pos)
        data_end = match.end() + int(match[1])
        if data_end > end:
            raise _Incomplete
        return data_end
    match_end = _ATOM_END.search(raw, pos)
    if match_end is None:
        raise _Incomplete
    if match_end.start() == pos:
        raise ParseError("empty value", pos)
    return match_end.start()


# An answer to `FETCH set (UID INTERNALDATE FLAGS)` as Dovecot writes it: UID, INTERNALDATE,
# then FLAGS and MODSEQ (RFC 9051 7.5.2, RFC 7162 3.1.4.1); anything else: `fetch_spans`.
_METADATA: Final = re.compile(
    rb'\* ([0-9]{1,10}) FETCH \((UID ([0-9]{1,10})) (INTERNALDATE "[^"\\\r\n]*")'
    rb"((?: (?:FLAGS \([^()\r\n]*\)|MODSEQ \([0-9]{1,20}\)))*)\)\r\n\Z", re.IGNORECASE)
_METADATA_ITEM: Final = re.compile(rb" ((FLAGS|MODSEQ) \([^()\r\n]*\))", re.IGNORECASE)


def metadata_items(raw: bytes) -> tuple[int, int, dict[bytes, bytes]] | None:
    """(number, UID, item name to its text, name and value) of an answer to a FETCH of
    `UID INTERNALDATE` and flags in the usual shape, or None (then `fetch_spans` reads it)."""
    match = _METADATA.match(raw)
    if match is None:
        return None
    items = {b"UID": match[2], b"INTERNALDATE": match[4]}
    for item in _METADATA_ITEM.finditer(match[5]):
        items[item[2].upper()] = item[1]
    return int(match[1]), int(match[3]), items


# The head of a response to the proxy's own FETCH passes as Dovecot writes it: UID, then
# the item the pass added (INTERNALDATE, or fields as a literal), then more items (RFC 9051
# 7.5.2). Any other shape is read by `fetch_spans`.
_UID_HEAD: Final = re.compile(rb"\* ([0-9]{1,10}) FETCH \((UID ([0-9]{1,10}) )", re.IGNORECASE)
_DATE_ITEM: Final = re.compile(rb'INTERNALDATE ("[^"\\\r\n]*") (?=[A-Za-z])', re.IGNORECASE)
# the items with a short fixed form Dovecot writes before a literal (RFC 9051 7.5.2, RFC
# 7162 3.1.4.1): `* 1 FETCH (UID 1 FLAGS () RFC822.SIZE 9 BODY[HEADER.FIELDS (..)] {73}`
_SHORT_ITEMS: Final = re.compile(
    rb'(?:(?:FLAGS \([^()\r\n]*\)|RFC822\.SIZE [0-9]{1,20}|MODSEQ \([0-9]{1,20}\)'
    rb'|INTERNALDATE "[^"\\\r\n]*") )*', re.IGNORECASE)
# RFC822.SIZE next, or after the flags (Dovecot writes the client's FLAGS first)
_SIZE_ITEM: Final = re.compile(rb"(?:FLAGS \([^()\r\n]*\) )?RFC822\.SIZE [0-9]{1,20}[ )]",
                               re.IGNORECASE)


class UidHead(NamedTuple):
    """Where `UID n SP` and a second item (with its SP) are at the head of a FETCH response
    whose other items follow; between them only items that are kept."""

    number: int
    uid: int
    uid_start: int
    uid_end: int  # after `UID n SP`
    second_start: int
    value_start: int  # the second item's value (a literal's data)
    rest_start: int  # the first of the other items

    def without(self, raw: bytes, uid: bool, second: bool) -> bytes:
        """The response without the UID item (`uid`) and/or the second item (`second`):
        what `without_items` gives for those names (a server names an item once; one that
        repeated them later would keep the repetition here)."""
        if not (uid or second):
            return raw
        return b"".join((
            raw[: self.uid_start], b"" if uid else raw[self.uid_start : self.uid_end],
            raw[self.uid_end : self.second_start],
            b"" if second else raw[self.second_start : self.rest_start], raw[self.rest_start :]))


def uid_date_head(raw: bytes) -> UidHead | None:
    """The head of a FETCH response that starts with UID and INTERNALDATE and has more
    items, in two expressions; None for any other shape (then `fetch_spans` reads it)."""
    head = _UID_HEAD.match(raw)
    if head is None:
        return None
    date = _DATE_ITEM.match(raw, head.end())
    if date is None:
        return None
    return UidHead(int(head[1]), int(head[3]), head.start(2), head.end(), date.start(),
                   date.start(1), date.end())


def uid_size_head(raw: bytes) -> UidHead | None:
    """The head of a FETCH response that starts with UID, then RFC822.SIZE (maybe after
    FLAGS); None for any other shape. It cuts only UID: the second item is the client's
    own (`UidHead.without(raw, uid, False)`)."""
    head = _UID_HEAD.match(raw)
    if head is None or _SIZE_ITEM.match(raw, head.end()) is None:
        return None
    end = head.end()
    return UidHead(int(head[1]), int(head[3]), head.start(2), end, end, end, end)


def uid_literal_head(raw: bytes, name: bytes) -> UidHead | None:
    """The head of a FETCH response that starts with UID and the item `name` (upper case)
    whose value is a literal, maybe with FLAGS, RFC822.SIZE, MODSEQ or INTERNALDATE between
    them (Dovecot's order), and has more items; None for any other shape."""
    head = _UID_HEAD.match(raw)
    if head is None:
        return None
    short = _SHORT_ITEMS.match(raw, head.end())  # (it matches nothing too)
    start = head.end() if short is None else short.end()
    found = _literal_item(raw, start, name)
    if found is None:
        return None
    value_start, end = found
    if raw[end : end + 1] != b" " or not raw[end + 1 : end + 2].isalpha():
        return None
    return UidHead(int(head[1]), int(head[3]), head.start(2), head.end(), start, value_start,
                   end + 1)


def last_literal(raw: bytes, start: int, name: bytes) -> tuple[int, int] | None:
    """Where the data of the item `name` (upper case) lies, when it starts at `start`, its
    value is a literal and it ends the response; None for any other shape."""
    found = _literal_item(raw, start, name)
    if found is None or raw[found[1] :] != b")\r\n":
        return None
    return found


def _literal_item(raw: bytes, start: int, name: bytes) -> tuple[int, int] | None:
    """(start, end) of the data of the item `name` (upper case) starting at `start`, when
    its value is a literal (the end as its length says: the caller checks what follows);
    None for any other shape."""
    after = start + len(name)
    if raw[start:after].upper() != name or raw[after : after + 1] != b" ":
        return None
    literal = _LITERAL.match(raw, after + 1)  # as `fetch_spans` reads a literal
    if literal is None:
        return None
    return literal.end(), literal.end() + int(literal[1])


def item_value(raw: bytes, span: ItemSpan) -> bytes | None:
    """The string value of an item: a literal's data, a quoted string unescaped, None for NIL.
    Raises ParseError for any other value (a list, an atom)."""
    match = _LITERAL.match(raw, span.value_start)
    if match is not None and match.end() + int(match[1]) == span.end:
        return raw[match.end() : span.end]  # one copy: a literal may be a large message
    value = raw[span.value_start : span.end]
    if value.upper() == b"NIL":
        return None
    if value.startswith(b'"') and value.endswith(b'"') and len(value) >= 2:
        return re.sub(rb"\\(.)", rb"\1", value[1:-1])
    raise ParseError("not a string value", span.value_start)


def uid_value(raw: bytes, spans: FetchSpans) -> int | None:
    """The response's UID, None when it has none. Raises ParseError for a UID that is not
    a number."""
    span = spans.find(b"UID")
    if span is None:
        return None
    value = raw[span.value_start : span.end]
    if not value.isdigit() or len(value) > 10:
        raise ParseError("UID is not a number", span.value_start)
    return int(value)


def without_items(raw: bytes, spans: FetchSpans, names: frozenset[bytes]) -> bytes:
    """The response without the items called `names`, each with one SP next to it. An
    open last item (the head of a streamed literal) is kept. The response keeps at least
    one item: when every item would go, the bytes come back unchanged."""
    cuts: list[tuple[int, int]] = []
    kept_end = -1  # the end of the last item kept so far
    for span in spans.items:
        if span.name not in names or (span.end == len(raw) and not spans.complete):
            kept_end = span.end
            continue
        if raw[span.end : span.end + 1] == b" ":
            cuts.append((span.start, span.end + 1))  # "name value " (more follow)
        elif kept_end >= 0:
            cuts.append((kept_end, span.end))  # " name value" (the last, and those before)
        else:
            return raw  # every item would go
    if not cuts:
        return raw
    out: list[bytes] = []
    pos = 0
    for start, end in sorted(cuts):  # a last item's cut reaches back over those before it
        if start < pos:
            pos = max(pos, end)
            continue
        out.append(raw[pos:start])
        pos = end
    out.append(raw[pos:])
    return b"".join(out)
