"""SEARCH over the plaintext of opened messages (issue 10): the sans-I/O part.

The upstream can search only what it stores, the ciphertext of an S/MIME message. While the
key is unlocked the proxy also judges the content keys of a search program (BODY, TEXT,
SUBJECT, FROM, TO, CC, BCC, HEADER) on the messages it has opened, and asks the upstream for
every other key: the session merges the two results. Pure functions; no I/O, no crypto, never
awaits, and nothing decrypted outlives a call (no cache on the view or in this module).

- `parse_program(criteria, charset)` turns `SearchCommand.criteria` (RFC 9051 section 6.4.4,
  with RFC 5032 OLDER/YOUNGER, RFC 5182 `$`, RFC 7162 MODSEQ, RFC 8474 EMAILID/THREADID and
  RFC 8514 SAVED*) into a tree of `Leaf`, `Text`, `And`, `Or` and `Not`. A subtree without a
  content key is one `Leaf` whose `text` is that subtree as the client wrote it (key names in
  upper case, arguments rendered by the wire renderer; an implicit AND of several keys is
  parenthesised), so the session asks the upstream once per leaf, e.g.
  `UID SEARCH UID <candidates> <leaf.text>`. `ALL` inside an AND is dropped; an `ALL` leaf
  left alone is judged here (true) and is not among `leaves()`. A key this module does not
  know, a malformed argument, an unknown charset or a needle that is not valid in it raise
  `SearchUnsupported`: the session then relays the client's command unchanged and the
  upstream answers it (BAD, NO [BADCHARSET], or its ciphertext result).
- `evaluate(node, view, leaf_results)` judges one shown message; `matching` a set of them.

Text semantics follow Dovecot 2.3 (index-search.c, message-search.c) where it matters:

- needle and text are compared case-insensitively after compatibility normalisation (NFKD,
  `str.casefold`, NFKC), close to Dovecot's i;unicode-casemap (RFC 5051: titlecase plus
  compatibility decompositions): case differences, compatibility forms (`ﬁ` and `fi`) and,
  beyond Dovecot, canonically equivalent forms (`é` and `e` + U+0301) and full case folding
  (`ß` and `ss`) match; accents still count (`cafe` does not find `café`), as in Dovecot;
- SUBJECT, FROM, TO, CC, BCC and HEADER look at the message's own (top-level) header fields of
  that name: unfolded, RFC 2047 encoded-words decoded; SUBJECT with runs of whitespace made one
  space; FROM/TO/CC/BCC against the address list written out as `Name <box@domain>, ...`
  (groups as `group: ...;`), as Dovecot's normalised address; HEADER against the value as is.
  An empty needle matches when the field exists;
- BODY looks at the body of every text/* and message/* leaf part (a part without Content-Type
  is text/plain), with its Content-Transfer-Encoding undone leniently and its charset decoded;
  TEXT at every header block of the message (the top-level one, MIME headers and those of
  attached messages, as `Name: value` lines) and the BODY text, per part. BODY "" and
  TEXT "" match every message; a needle never matches across two parts.
- charsets: us-ascii, utf-8, no charset and an unknown charset are read as UTF-8, and as
  ISO-8859-1 when they are not valid UTF-8; any other charset Python knows is decoded with
  replacement characters for invalid bytes (a few codecs that are slow or no charsets at all,
  such as punycode and idna, count as unknown).

Bounds (work per message): the top-level header fields considered are those that start in the
first `MAX_HEADER_BYTES` (1 MiB) of the message, each value cut at that size; TEXT considers at
most `MAX_HEADER_BYTES` of header fields in all; BODY and TEXT consider the first
`MAX_TEXT_BYTES` (4 MiB) of decoded body text; folding produces at most `MAX_FOLDED_CHARS`
characters per message (measured: a hostile 4 MiB body, e.g. a run of combining marks, costs
about half a second; ordinary text a few milliseconds per MiB). A program may hold at most
`MAX_TEXT_KEYS` content keys, `MAX_LEAVES` distinct leaves and `MAX_DEPTH` levels of nesting.
Nothing here raises on a hostile message, and nothing is cached across calls (the search
strings neither).

A leaf may hold several keys (`(SEEN MODSEQ 5)`, `OR MODSEQ 5 SEEN`): a caller that looks for
a key among the leaves must look inside their text, not only at its start.

May import: imap.wire, imap.views, imap.search_text, stdlib.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

from smime_proxy.imap.search_text import (
    MAX_FOLDED_CHARS,
    MAX_HEADER_BYTES,
    MAX_TEXT_BYTES,
    MessageText,
    SearchUnsupported,
    fold_needle,
    needle_codec,
    search_codec,
)
from smime_proxy.imap.views import MessageView
from smime_proxy.imap.wire.errors import ParseError, RenderError
from smime_proxy.imap.wire.lexer import NUMBER64_MAX, NUMBER_MAX
from smime_proxy.imap.wire.sequence import SequenceSet
from smime_proxy.imap.wire.values import Binary, Value, render

__all__ = [
    "MAX_DEPTH",
    "MAX_FOLDED_CHARS",
    "MAX_HEADER_BYTES",
    "MAX_LEAVES",
    "MAX_TEXT_BYTES",
    "MAX_TEXT_KEYS",
    "And",
    "Leaf",
    "Node",
    "Not",
    "Or",
    "SearchUnsupported",
    "Text",
    "evaluate",
    "has_text",
    "leaves",
    "matching",
    "parse_program",
]

MAX_TEXT_KEYS: Final = 32
MAX_LEAVES: Final = 64
MAX_DEPTH: Final = 50


# --- the tree ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Leaf:
    """A key (or a subtree of keys) the upstream judges, as wire bytes, e.g. b"SEEN",
    b"SINCE 1-Feb-1994", b"UID 1:5", b"1:5", b"OR SEEN FLAGGED", b"(UNSEEN LARGER 100)"."""

    text: bytes


@dataclass(frozen=True, slots=True)
class Text:
    """A content key judged on the shown message: BODY, TEXT, SUBJECT, FROM, TO, CC, BCC or
    HEADER (`field` is HEADER's field name, else None); `needle` as the client sent it."""

    key: str
    field: bytes | None
    needle: bytes


@dataclass(frozen=True, slots=True)
class And:
    parts: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Not:
    part: Node


Node: TypeAlias = Leaf | Text | And | Or | Not

ALL: Final = Leaf(b"ALL")

# --- parsing -------------------------------------------------------------------------------

_TEXT_KEYS: Final = frozenset({"BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"})
_NO_ARG: Final = frozenset({
    "ALL", "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "NEW", "OLD", "RECENT", "SEEN",
    "UNANSWERED", "UNDELETED", "UNDRAFT", "UNFLAGGED", "UNSEEN",
    "SAVEDATESUPPORTED",  # RFC 8514
})
_DATE_KEYS: Final = frozenset({
    "BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE",
    "SAVEDBEFORE", "SAVEDON", "SAVEDSINCE",  # RFC 8514
})
_NUMBER_KEYS: Final = frozenset({"LARGER", "SMALLER"})
_NZ_NUMBER_KEYS: Final = frozenset({"OLDER", "YOUNGER"})  # RFC 5032 (interval in seconds)
_FLAG_KEYS: Final = frozenset({"KEYWORD", "UNKEYWORD"})
_OBJECTID_KEYS: Final = frozenset({"EMAILID", "THREADID"})  # RFC 8474

# date = date-text / DQUOTE date-text DQUOTE; date-text = date-day "-" date-month "-" date-year
_DATE = re.compile(
    rb"[0-9]{1,2}-(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)-[0-9]{4}", re.I
)
# flag-keyword = "$MDNSent" / "$Forwarded" / ... / atom (Dovecot also takes system flags)
_FLAG_KEYWORD = re.compile(rb'\\?[^(){ \x00-\x1f\x7f%*"\\\]\x80-\xff]+')
_OBJECTID = re.compile(rb"[A-Za-z0-9_-]{1,255}")
# entry-flag-name = DQUOTE "/flags/" attr-flag DQUOTE (RFC 7162 section 3.1.5)
_ENTRY_NAME = re.compile(rb'/flags/\\?[^(){ \x00-\x1f\x7f%*"\\\]\x80-\xff]+')
_ENTRY_TYPES: Final = frozenset({"PRIV", "SHARED", "ALL"})
_SEQUENCE_START = re.compile(r"[0-9*$]")


def parse_program(criteria: Sequence[Value], charset: str | bytes | None = None) -> Node:
    """`SearchCommand.criteria` (and its CHARSET, None for the default) as a tree.

    Raises `SearchUnsupported` (only) for what the proxy leaves to the upstream."""
    codec = search_codec(charset)
    parser = _Parser(codec)
    node = parser.program(criteria, 0)
    if len(leaves(node)) > MAX_LEAVES:
        raise SearchUnsupported("too many search keys")
    return node


class _Parser:
    __slots__ = ("codec", "texts")

    def __init__(self, codec: str) -> None:
        self.codec = codec
        self.texts = 0

    def program(self, items: Sequence[Value], depth: int) -> Node:
        """search-key *(SP search-key): an implicit AND."""
        if not items:
            raise SearchUnsupported("an empty search program")
        nodes: list[Node] = []
        pos = 0
        while pos < len(items):
            node, pos = self.key(items, pos, depth)
            nodes.append(node)
        return _and(nodes)

    def key(self, items: Sequence[Value], pos: int, depth: int) -> tuple[Node, int]:
        if depth > MAX_DEPTH:
            raise SearchUnsupported("search program nested too deep")
        value = items[pos]
        pos += 1
        if isinstance(value, (list, tuple)):
            return self.program(value, depth + 1), pos
        if isinstance(value, bool) or value is None or isinstance(value, bytes):
            raise SearchUnsupported("a string where a search key belongs")
        if isinstance(value, int):
            if not 0 < value <= NUMBER_MAX:
                raise SearchUnsupported("a message number out of range")
            return Leaf(b"%d" % value), pos
        if not isinstance(value, str):
            raise SearchUnsupported("not a search key")
        if _SEQUENCE_START.match(value):
            return Leaf(_sequence_set(value)), pos
        name = value.upper()
        if name in _TEXT_KEYS:
            needle, pos = self.astring(items, pos)
            return self.text(name, None, needle), pos
        if name == "HEADER":
            field, pos = self.astring(items, pos)
            needle, pos = self.astring(items, pos)
            if not field:
                raise SearchUnsupported("HEADER needs a field name")
            return self.text(name, field, needle), pos
        if name == "NOT":
            part, pos = self.key(_need(items, pos), pos, depth + 1)
            return _not(part), pos
        if name == "OR":
            left, pos = self.key(_need(items, pos), pos, depth + 1)
            right, pos = self.key(_need(items, pos), pos, depth + 1)
            return _or(left, right), pos
        return self.leaf(name, items, pos)

    def leaf(self, name: str, items: Sequence[Value], pos: int) -> tuple[Node, int]:
        args: list[Value] = []
        if name in _NO_ARG:
            pass
        elif name in _DATE_KEYS:
            args.append(_arg(items, pos, _is_date))
        elif name in _NUMBER_KEYS:
            args.append(_arg(items, pos, _is_number))
        elif name in _NZ_NUMBER_KEYS:
            args.append(_arg(items, pos, _is_nz_number))
        elif name in _FLAG_KEYS:
            args.append(_arg(items, pos, _is_flag))
        elif name in _OBJECTID_KEYS:
            args.append(_arg(items, pos, _is_objectid))
        elif name == "UID":
            value = _need(items, pos)[pos]
            if isinstance(value, int) and not isinstance(value, bool):
                if not 0 < value <= NUMBER_MAX:
                    raise SearchUnsupported("a UID out of range")
            elif not isinstance(value, str) or not _SEQUENCE_START.match(value):
                raise SearchUnsupported("UID needs a sequence set")
            else:
                _sequence_set(value)
            args.append(value)
        elif name == "MODSEQ":
            # MODSEQ [entry-name SP entry-type-req SP] mod-sequence-valzer   (RFC 7162)
            if isinstance(_need(items, pos)[pos], bytes):
                args.append(_arg(items, pos, _is_entry_name))
                args.append(_arg(items, pos + 1, _is_entry_type))
            args.append(_arg(items, pos + len(args), _is_number))
        else:
            raise SearchUnsupported(f"search key {name[:40]!r} is not judged by the proxy")
        pos += len(args)
        text = name.encode("ascii") + b"".join(b" " + _render_arg(arg) for arg in args)
        return Leaf(text), pos

    def astring(self, items: Sequence[Value], pos: int) -> tuple[bytes, int]:
        value = _need(items, pos)[pos]
        if isinstance(value, Binary):
            raise SearchUnsupported("literal8 is not an astring")
        if isinstance(value, bytes):
            return bytes(value), pos + 1
        if value is None:
            return b"NIL", pos + 1  # the atom NIL, read as nil by the lexer
        if isinstance(value, int) and not isinstance(value, bool):
            return b"%d" % value, pos + 1
        if isinstance(value, str):
            try:
                return value.encode("ascii"), pos + 1
            except UnicodeError:
                raise SearchUnsupported("not an astring") from None
        raise SearchUnsupported("not an astring")

    def text(self, key: str, field: bytes | None, needle: bytes) -> Text:
        self.texts += 1
        if self.texts > MAX_TEXT_KEYS:
            raise SearchUnsupported("too many content keys")
        try:
            needle.decode(self.codec)
        except (UnicodeError, LookupError):
            raise SearchUnsupported("a search string not valid in its charset") from None
        return Text(key, field, needle)


def _need(items: Sequence[Value], pos: int) -> Sequence[Value]:
    if pos >= len(items):
        raise SearchUnsupported("a search key is missing its argument")
    return items


def _arg(items: Sequence[Value], pos: int, check: Callable[[Value], bool]) -> Value:
    value = _need(items, pos)[pos]
    if isinstance(value, bool) or not check(value):
        raise SearchUnsupported("a malformed search key argument")
    return value


def _text_of(value: Value) -> bytes | None:
    """An atom or string as bytes (None for anything else)."""
    if isinstance(value, Binary):
        return None
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, str):
        try:
            return value.encode("ascii")
        except UnicodeError:
            return None
    return None


def _is_date(value: Value) -> bool:
    text = _text_of(value)
    return text is not None and _DATE.fullmatch(text) is not None


def _is_number(value: Value) -> bool:
    return isinstance(value, int) and 0 <= value <= NUMBER64_MAX


def _is_nz_number(value: Value) -> bool:
    return isinstance(value, int) and 0 < value <= NUMBER_MAX


def _is_flag(value: Value) -> bool:
    if isinstance(value, int):
        return value >= 0
    return isinstance(value, str) and _FLAG_KEYWORD.fullmatch(_text_of(value) or b"") is not None


def _is_objectid(value: Value) -> bool:
    if isinstance(value, int):
        return value >= 0
    return isinstance(value, str) and _OBJECTID.fullmatch(_text_of(value) or b"") is not None


def _is_entry_name(value: Value) -> bool:
    text = _text_of(value) if isinstance(value, bytes) else None
    return text is not None and _ENTRY_NAME.fullmatch(text) is not None


def _is_entry_type(value: Value) -> bool:
    return isinstance(value, str) and value.upper() in _ENTRY_TYPES


def _sequence_set(value: str) -> bytes:
    try:
        text = value.encode("ascii")
        SequenceSet.parse(text)
    except (UnicodeError, ParseError, RenderError):
        raise SearchUnsupported("a malformed sequence set") from None
    return text


def _render_arg(value: Value) -> bytes:
    """One checked argument as the client wrote it; a string (a date or a MODSEQ entry name,
    which the checks keep quotable) comes back quoted even when it came as a literal."""
    return render(bytes(value) if isinstance(value, bytes) else value)


def _and(nodes: list[Node]) -> Node:
    """An implicit AND: plain keys (after ALL is dropped) become one parenthesised leaf."""
    kept = [node for node in nodes if node != ALL] or [ALL]
    plain = [node for node in kept if isinstance(node, Leaf)]
    content = [node for node in kept if not isinstance(node, Leaf)]
    parts: list[Node] = []
    if len(plain) == 1:
        parts.append(plain[0])
    elif plain:
        parts.append(Leaf(b"(" + b" ".join(leaf.text for leaf in plain) + b")"))
    parts.extend(content)
    return parts[0] if len(parts) == 1 else And(tuple(parts))


def _or(left: Node, right: Node) -> Node:
    if isinstance(left, Leaf) and isinstance(right, Leaf):
        return Leaf(b"OR " + left.text + b" " + right.text)
    return Or(left, right)


def _not(part: Node) -> Node:
    if isinstance(part, Leaf):
        return Leaf(b"NOT " + part.text)
    return Not(part)


# --- questions about a tree ----------------------------------------------------------------


def _children(node: Node) -> tuple[Node, ...]:
    if isinstance(node, And):
        return node.parts
    if isinstance(node, Or):
        return (node.left, node.right)
    if isinstance(node, Not):
        return (node.part,)
    return ()


def has_text(node: Node) -> bool:
    """Whether the tree holds a content key (else the upstream's answer is the whole answer)."""
    if isinstance(node, Text):
        return True
    return any(has_text(child) for child in _children(node))


def leaves(node: Node) -> list[Leaf]:
    """The distinct leaves the upstream must judge, in order (a bare ALL is judged here)."""
    found: dict[Leaf, None] = {}
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, Leaf):
            if current != ALL:
                found.setdefault(current)
        else:
            stack.extend(reversed(_children(current)))
    return list(found)


# --- evaluation ----------------------------------------------------------------------------


def evaluate(
    node: Node,
    view: MessageView,
    leaf_results: Mapping[Leaf, bool],
    charset: str | bytes | None = None,
) -> bool:
    """Whether the shown message `view` matches; each leaf's result comes from
    `leaf_results` (a leaf missing there is a KeyError: the caller's mistake)."""
    return _Evaluator(MessageText(view), leaf_results, needle_codec(charset), {}).run(node)


def matching(
    node: Node,
    views: Mapping[int, MessageView],
    leaf_uids: Mapping[Leaf, set[int]],
    charset: str | bytes | None = None,
) -> set[int]:
    """The UIDs among `views` whose messages match; `leaf_uids[leaf]` holds the UIDs the
    upstream found for that leaf."""
    needed = leaves(node)
    codec = needle_codec(charset)
    needles: dict[bytes, str] = {}  # folded once for all the messages of this call
    found: set[int] = set()
    for uid, view in views.items():
        results = {leaf: uid in leaf_uids[leaf] for leaf in needed}
        if _Evaluator(MessageText(view), results, codec, needles).run(node):
            found.add(uid)
    return found


class _Evaluator:
    __slots__ = ("codec", "message", "needles", "results")

    def __init__(
        self, message: MessageText, results: Mapping[Leaf, bool], codec: str,
        needles: dict[bytes, str],
    ) -> None:
        self.message = message
        self.results = results
        self.codec = codec
        self.needles = needles

    def run(self, node: Node) -> bool:
        if isinstance(node, Leaf):
            return True if node == ALL else bool(self.results[node])
        if isinstance(node, Text):
            return self.text(node)
        if isinstance(node, Not):
            return not self.run(node.part)
        if isinstance(node, Or):
            first, second = _cheap_first((node.left, node.right))
            return self.run(first) or self.run(second)
        return all(self.run(part) for part in _cheap_first(node.parts))

    def text(self, node: Text) -> bool:
        needle = self.needles.get(node.needle)
        if needle is None:
            needle = self.needles[node.needle] = fold_needle(node.needle, self.codec)
        message = self.message
        if node.key in ("BODY", "TEXT"):
            if not needle:
                return True
            texts = message.bodies() if node.key == "BODY" else message.texts()
            return any(needle in text for text in texts)
        if node.key == "HEADER":
            name, kind = (node.field or b"").lower(), "plain"
        else:
            name = node.key.lower().encode("ascii")
            kind = "subject" if node.key == "SUBJECT" else "address"
        values = message.fields(name, kind)
        if values is None:
            return False
        return not needle or any(needle in value for value in values)


def _cheap_first(nodes: Iterable[Node]) -> list[Node]:
    """Leaves before content keys (the result does not depend on the order)."""
    return sorted(nodes, key=has_text)
