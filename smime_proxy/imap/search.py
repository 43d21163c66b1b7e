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

May import: imap.wire, imap.views, mime, stdlib.
"""

from __future__ import annotations

import binascii
import codecs
import functools
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

from smime_proxy.imap.views import MessageView
from smime_proxy.imap.wire.errors import ParseError, RenderError
from smime_proxy.imap.wire.lexer import NUMBER64_MAX, NUMBER_MAX
from smime_proxy.imap.wire.sequence import SequenceSet
from smime_proxy.imap.wire.values import Binary, Value, render
from smime_proxy.mime.address import Address, parse_address_list
from smime_proxy.mime.transfer import binary_cte
from smime_proxy.mime.tree import Part

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

MAX_HEADER_BYTES: Final = 1 << 20
MAX_TEXT_BYTES: Final = 4 << 20
MAX_FOLDED_CHARS: Final = 2 * (MAX_HEADER_BYTES + MAX_TEXT_BYTES)
MAX_TEXT_KEYS: Final = 32
MAX_LEAVES: Final = 64
MAX_DEPTH: Final = 50


class SearchUnsupported(Exception):
    """The program has a key, argument or charset the proxy does not judge: relay it as is."""


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
_UTF8_NAMES: Final = frozenset({"utf-8", "ascii"})


def parse_program(criteria: Sequence[Value], charset: str | bytes | None = None) -> Node:
    """`SearchCommand.criteria` (and its CHARSET, None for the default) as a tree.

    Raises `SearchUnsupported` (only) for what the proxy leaves to the upstream."""
    codec = _search_codec(charset)
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
    return _Evaluator(_Message(view), leaf_results, _needle_codec(charset), {}).run(node)


def matching(
    node: Node,
    views: Mapping[int, MessageView],
    leaf_uids: Mapping[Leaf, set[int]],
    charset: str | bytes | None = None,
) -> set[int]:
    """The UIDs among `views` whose messages match; `leaf_uids[leaf]` holds the UIDs the
    upstream found for that leaf."""
    needed = leaves(node)
    codec = _needle_codec(charset)
    needles: dict[bytes, str] = {}  # folded once for all the messages of this call
    found: set[int] = set()
    for uid, view in views.items():
        results = {leaf: uid in leaf_uids[leaf] for leaf in needed}
        if _Evaluator(_Message(view), results, codec, needles).run(node):
            found.add(uid)
    return found


class _Evaluator:
    __slots__ = ("codec", "message", "needles", "results")

    def __init__(
        self, message: _Message, results: Mapping[Leaf, bool], codec: str,
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
            needle = self.needles[node.needle] = _fold_needle(node.needle, self.codec)
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


# --- the text of one message ---------------------------------------------------------------


class _Message:
    """The searchable text of one shown message, computed on demand for one evaluation."""

    __slots__ = ("_bodies", "_fields", "_folded_left", "_texts", "data", "root")

    def __init__(self, view: MessageView) -> None:
        self.root = view.root
        self.data = view.root.data
        self._fields: dict[tuple[bytes, str], list[str] | None] = {}
        self._bodies: list[str] | None = None
        self._texts: list[str] | None = None
        self._folded_left = MAX_FOLDED_CHARS

    def fold(self, text: str) -> str:
        folded = _fold(text, self._folded_left)
        self._folded_left = max(0, self._folded_left - len(folded))
        return folded

    def fields(self, name: bytes, kind: str) -> list[str] | None:
        """The folded values of the top-level fields called `name` (None: no such field)."""
        key = (name, kind)
        if key not in self._fields:
            self._fields[key] = self._read_fields(name, kind)
        return self._fields[key]

    def _read_fields(self, name: bytes, kind: str) -> list[str] | None:
        root, data = self.root, self.data
        limit = root.start + MAX_HEADER_BYTES
        raws = [
            _raw_value(data, h.value_start, min(h.end, h.value_start + MAX_HEADER_BYTES))
            for h in root.headers
            if h.start < limit and h.has_colon and h.name.lower() == name
        ]
        if not raws:
            return None
        if kind == "address":
            texts = [_write_addresses(parse_address_list(_c_string(raw))) for raw in raws]
        elif kind == "subject":
            texts = [_WSP_RUN.sub(" ", _decode_header(raw)) for raw in raws]
        else:
            texts = [_decode_header(raw) for raw in raws]
        return [self.fold(text) for text in texts]

    def bodies(self) -> list[str]:
        if self._bodies is None:
            self._read_parts()
        assert self._bodies is not None
        return self._bodies

    def texts(self) -> list[str]:
        if self._texts is None:
            self._read_parts()
        assert self._texts is not None
        return self._texts

    def _read_parts(self) -> None:
        """Per part: its header block as `Name: value` lines, and its body text."""
        data = self.data
        header_left, body_left = MAX_HEADER_BYTES, MAX_TEXT_BYTES
        bodies: list[str] = []
        texts: list[str] = []
        for part in self.root.walk():
            lines: list[str] = []
            for h in part.headers:
                if header_left <= 0:
                    break
                end = min(h.end, h.value_start + header_left)
                raw = _raw_value(data, h.value_start, end) if h.has_colon else b""
                header_left -= len(h.name) + len(raw) + 2
                lines.append(_text(h.name) + ": " + _decode_header(raw) + "\r\n")
            header = self.fold("".join(lines)) if lines else ""
            body = ""
            if body_left > 0 and _searchable(part):
                raw_body = _decoded_body(part, body_left)
                body_left -= len(raw_body)
                body = self.fold(_text(raw_body, _charset(part)))
                bodies.append(body)
            if header or body:
                texts.append(header + body)
        self._bodies, self._texts = bodies, texts


def _raw_value(data: bytes, start: int, end: int) -> bytes:
    """A field value unfolded (CR and LF dropped), without the whitespace after the colon."""
    raw = data[start:end]
    if b"\n" in raw or b"\r" in raw:
        raw = raw.replace(b"\r", b"").replace(b"\n", b"")
    return raw.lstrip(b" \t")


def _c_string(value: bytes) -> bytes:
    nul = value.find(b"\0")
    return value if nul < 0 else value[:nul]


def _searchable(part: Part) -> bool:
    """A leaf part whose body is text: text/*, message/* (not an attached message, whose parts
    are searched themselves) or no Content-Type at all; as Dovecot's content_type_text."""
    if part.children or part.is_multipart or part.overflow:
        return False
    if part.ct is None or not part.is_mime:
        return True
    ctype = part.ct[0].lower()
    return ctype in (b"text", b"message")


def _charset(part: Part) -> bytes | None:
    if part.ct is None or not part.is_mime:
        return None
    for name, value in part.ct[2]:
        if name.lower() == b"charset":
            return value
    return None


def _decoded_body(part: Part, limit: int) -> bytes:
    """The first `limit` bytes of the body with its transfer encoding undone, leniently (the
    valid bits of broken base64 or quoted-printable are kept)."""
    cte = binary_cte(part)
    encoded = cte in (b"base64", b"quoted-printable")
    end = min(part.end, part.body_start + (3 * limit + 4096 if encoded else limit))
    body = part.data[part.body_start : end]
    if cte == b"base64":
        body = _unbase64(body)
    elif cte == b"quoted-printable":
        body = binascii.a2b_qp(body)
    return body[:limit]


_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]+")


def _unbase64(data: bytes) -> bytes:
    clean = _NOT_BASE64.sub(b"", data)
    extra = len(clean) % 4
    if extra == 1:
        clean = clean[:-1]
    elif extra:
        clean += b"=" * (4 - extra)
    try:
        return binascii.a2b_base64(clean)
    except (binascii.Error, ValueError):  # pragma: no cover - the input was cleaned
        return b""


# --- header decoding (RFC 2047) ------------------------------------------------------------

_ENCODED_WORD = re.compile(rb"=\?([^?\s*]{1,64})(?:\*[^?\s]*)?\?([QqBb])\?([^?\s]*)\?=")
_QP_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")
_WSP_RUN = re.compile(r"[ \t\r\n]+")


def _decode_header(raw: bytes) -> str:
    """A header value with its RFC 2047 encoded-words decoded (whitespace between two of them
    dropped; adjacent words of one charset joined before decoding, so a character split
    across them survives); the rest is read as UTF-8, or ISO-8859-1 when it is not UTF-8."""
    if b"=?" not in raw:
        return _text(raw)
    out: list[str] = []
    pending_charset: bytes | None = None
    pending = bytearray()
    pos = 0
    for match in _ENCODED_WORD.finditer(raw):
        between = raw[pos : match.start()]
        if pending_charset is not None and between.strip(b" \t") == b"":
            between = b""
        charset = match[1].lower()
        if between or charset != pending_charset:
            if pending_charset is not None:
                out.append(_text(bytes(pending), pending_charset))
                pending.clear()
            out.append(_text(between))
            pending_charset = charset
        word = match[3]
        if match[2] in b"Bb":
            pending += _unbase64(word)
        else:
            pending += _QP_ESCAPE.sub(_qp_byte, word.replace(b"_", b" "))
        pos = match.end()
    if pending_charset is not None:
        out.append(_text(bytes(pending), pending_charset))
    out.append(_text(raw[pos:]))
    return "".join(out)


def _qp_byte(match: re.Match[bytes]) -> bytes:
    return bytes((int(match[1], 16),))


# --- charsets and folding ------------------------------------------------------------------

# Codecs that are no charsets of mail, or slow on hostile input (punycode is quadratic).
_REFUSED_CODECS: Final = frozenset({
    "punycode", "idna", "unicode-escape", "raw-unicode-escape", "undefined", "mbcs", "oem",
})
_CHARSET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,63}")


@functools.lru_cache(maxsize=256)
def _codec(charset: str) -> str | None:
    """The Python codec of a MIME charset name, or None when unknown or refused."""
    if not _CHARSET_NAME.fullmatch(charset):
        return None
    try:
        info = codecs.lookup(charset)
    except (LookupError, ValueError):
        return None
    if info.name in _REFUSED_CODECS or not getattr(info, "_is_text_encoding", True):
        return None
    return info.name


def _charset_name(charset: str | bytes | None) -> str | None:
    if isinstance(charset, bytes):
        return charset.decode("ascii", "replace")
    return charset


def _search_codec(charset: str | bytes | None) -> str:
    """The codec of SEARCH's CHARSET argument; an unknown one is the upstream's to refuse."""
    name = _charset_name(charset)
    if name is None:
        return "utf-8"
    codec = _codec(name)
    if codec is None:
        raise SearchUnsupported("unknown charset")
    return "utf-8" if codec in _UTF8_NAMES else codec


def _needle_codec(charset: str | bytes | None) -> str:
    name = _charset_name(charset)
    codec = _codec(name) if name is not None else None
    return "utf-8" if codec is None or codec in _UTF8_NAMES else codec


def _text(data: bytes, charset: bytes | None = None) -> str:
    """Bytes of a message as text: in their charset (invalid bytes replaced), or, for UTF-8,
    US-ASCII, none or an unknown charset, as UTF-8 and failing that ISO-8859-1."""
    codec = None
    if charset is not None:
        codec = _codec(charset.decode("latin-1"))
    if codec is not None and codec not in _UTF8_NAMES:
        try:
            return data.decode(codec, "replace")
        except (LookupError, ValueError):  # pragma: no cover - the codec is known
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _fold_needle(needle: bytes, codec: str) -> str:
    try:
        text = needle.decode(codec, "replace")
    except LookupError:  # pragma: no cover - codecs come from _needle_codec
        text = _text(needle)
    return _fold(text, MAX_FOLDED_CHARS)


_FOLD_CHUNK = 64  # characters: NFKD orders runs of combining marks in quadratic time


def _fold(text: str, limit: int) -> str:
    """Case folded and compatibility normalised (NFKD, casefold, NFKC), at most `limit`
    characters. Non-ASCII text goes through in small chunks cut
    before a starter when one is near, so a hostile run of combining marks costs linear time."""
    if text.isascii():
        return text[:limit].lower()
    out: list[str] = []
    size = 0
    start, n = 0, len(text)
    combining = unicodedata.combining
    while start < n and size < limit:
        end = min(n, start + _FOLD_CHUNK)
        stop = min(n, end + 16)
        while end < stop and combining(text[end]):
            end += 1
        chunk = unicodedata.normalize("NFKD", text[start:end]).casefold()
        chunk = unicodedata.normalize("NFKC", chunk)
        out.append(chunk)
        size += len(chunk)
        start = end
    return "".join(out)[:limit]


def _write_addresses(addresses: list[Address]) -> str:
    """An address list as Dovecot's message_address_write: `a@b`, `Name <a@b>`,
    `Name <@route:a@b>`, `group: a@b, c@d;`, joined with ", "; names RFC 2047-decoded."""
    out: list[str] = []
    first = True
    in_group = False
    for address in addresses:
        if not first:
            out.append(", ")
        first = False
        if address.domain is None:
            if not in_group:
                out.append(_decode_header(address.mailbox or b"") + ": ")
                first = True
            else:
                if out and out[-1] == ", ":
                    out.pop()
                out.append(";")
            in_group = not in_group
            continue
        box = _decode_header(address.mailbox or b"") + "@" + _decode_header(address.domain)
        if not address.name and address.route is None:
            out.append(box)
            continue
        name = _decode_header(address.name) if address.name else ""
        route = _decode_header(address.route) + ":" if address.route is not None else ""
        out.append(f"{name} <{route}{box}>" if name else f"<{route}{box}>")
    return "".join(out)
