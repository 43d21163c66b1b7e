"""A MIME tree of byte offsets over the original message bytes (never re-serialised).

`parse(data)` reads a message once and returns the root `Part`. Every part knows where its
header block, its body and its children lie in `data`; `raw_bytes`, `header_bytes` and
`body_bytes` are slices of the original bytes, so the S/MIME layer can cut the exact signed
entity of a multipart/signed and the IMAP views can answer sections byte for byte.

The splitting rules are those of Dovecot 2.3's `message-parser.c` (the oracle of the IMAP views):

- a header block ends at the first empty line (LF or CRLF), at EOF, or at a line that is a
  delimiter of an enclosing multipart (the newline before it then belongs to the delimiter);
- a part is MIME when it is a multipart child or has Mime-Version or Content-Type; only the
  first Content-Type counts; non-MIME parts are text/plain (message/rfc822 under
  multipart/digest);
- a delimiter line is `--` + a prefix match of any open boundary (the longest wins), so
  trailing garbage after the boundary is tolerated; `--boundary--` closes that multipart and
  every multipart nested in it; a missing close delimiter simply runs to EOF;
- the [CR]LF before a delimiter belongs to the delimiter, not to the part before it;
- nesting is capped (`MAX_NESTING`): deeper multiparts and message/rfc822 parts are leaves;
  the number of parts is capped too (`MAX_PARTS`).

Linear time: the body scan jumps from one `\\n--` to the next with `bytes.find`.

When the native core is built (`smime_proxy.native`), `parse` has it split the message
(native/src/tree.rs, the same rules: this module is its reference).

May import: errors, mime, native, stdlib.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from smime_proxy.errors import InputError
from smime_proxy.mime.rfc822 import parse_content_type, parse_token_value
from smime_proxy.native import native

MAX_NESTING = 100
MAX_PARTS = 10000
BOUNDARY_STRING_MAX_LEN = 80
BOUNDARY_END_MAX_LEN = BOUNDARY_STRING_MAX_LEN + 4
MAX_MESSAGE_SIZE = 1 << 31

_LF = 0x0A
_CR = 0x0D


class MimeError(InputError):
    """The bytes cannot be used as a message at all (not bytes, or over the size cap)."""


@dataclass(slots=True)
class Header:
    """One header field: offsets into the message bytes.

    `start`..`end` covers the whole field including its folded lines and final newline;
    `value_start` is just after the colon (== `end` when the line has no colon).
    """

    name: bytes
    start: int
    value_start: int
    end: int
    has_colon: bool
    cached: bytes | None = field(default=None, repr=False, compare=False)

    def raw(self, data: bytes) -> bytes:
        return data[self.start : self.end]

    def value(self, data: bytes) -> bytes:
        """The value as Dovecot hands it to its parsers: LWSP after the colon skipped (all of
        it, or one byte when the first line is only LWSP), folds kept as bare LF, CR dropped
        before each LF, final newline removed."""
        if self.cached is None:
            self.cached = self._value(data)
        return self.cached

    def _value(self, data: bytes) -> bytes:
        if not self.has_colon:
            return b""
        raw = data[self.value_start : self.end]
        if raw[-2:] == b"\r\n":
            raw = raw[:-2]
        elif raw[-1:] == b"\n":
            raw = raw[:-1]
        if b"\n" not in raw:
            stripped = raw.lstrip(b" \t")
            return stripped if stripped or not raw else raw[1:]
        if b"\r\n" in raw:
            raw = raw.replace(b"\r\n", b"\n")
        first_end = raw.find(b"\n")
        first = raw if first_end < 0 else raw[:first_end]
        stripped = first.lstrip(b" \t")
        skip = 1 if not stripped and first else len(first) - len(stripped)
        return raw[skip:]

    def unfolded(self, data: bytes) -> bytes:
        """The value with folding line breaks removed (RFC 5322 unfolding)."""
        return self.value(data).replace(b"\n", b"")


@dataclass(slots=True, eq=False, weakref_slot=True)
class Part:
    """One node of the tree. Offsets index `data` (the whole message). A part holds its
    parent weakly: a tree is no reference cycle, so the message bytes it indexes go with
    its root at once, not at the next garbage collection (a 25 MB message's tree kept one
    more copy of it alive through the opening)."""

    data: bytes = field(repr=False)
    start: int
    body_start: int = 0
    end: int = 0
    headers: list[Header] = field(default_factory=list, repr=False)
    children: list[Part] = field(default_factory=list)
    parent_ref: weakref.ref[Part] | None = field(default=None, repr=False)
    is_mime: bool = False
    is_multipart: bool = False
    is_digest: bool = False
    is_message_rfc822: bool = False
    is_text: bool = False
    boundary: bytes | None = None
    header_complete: bool = False
    depth: int = 0
    # a multipart or message/rfc822 part made a leaf by the nesting or part-count caps
    overflow: bool = False
    # the first Content-Type field parsed: (type, subtype or None, params, parser result)
    ct: tuple[bytes, bytes | None, list[tuple[bytes, bytes]], int] | None = field(
        default=None, repr=False
    )

    @property
    def parent(self) -> Part | None:
        return None if self.parent_ref is None else self.parent_ref()

    # --- byte views ------------------------------------------------------------------------

    @property
    def raw_bytes(self) -> bytes:
        """The whole part: header block and body, exactly as in the message."""
        return self.data[self.start : self.end]

    @property
    def header_bytes(self) -> bytes:
        """The header block including its terminating empty line (when it has one)."""
        return self.data[self.start : self.body_start]

    @property
    def body_bytes(self) -> bytes:
        return self.data[self.body_start : self.end]

    @property
    def byte_range(self) -> tuple[int, int]:
        return self.start, self.end

    @property
    def header_size(self) -> int:
        return self.body_start - self.start

    @property
    def body_size(self) -> int:
        return self.end - self.body_start

    def body_lines(self) -> int:
        return self.data.count(b"\n", self.body_start, self.end)

    # --- headers ---------------------------------------------------------------------------

    def header_values(self, name: str | bytes) -> list[bytes]:
        """Values of every field called `name` (case-insensitive), in order."""
        key = (name.encode("ascii") if isinstance(name, str) else name).lower()
        return [h.value(self.data) for h in self.headers if h.name.lower() == key]

    def headers_named(self, name: bytes) -> list[Header]:
        """Every field called `name` (lower-case), in order."""
        return [h for h in self.headers if h.name.lower() == name]

    def header(self, name: str | bytes) -> bytes | None:
        """The value of the first field called `name`, or None."""
        values = self.header_values(name)
        return values[0] if values else None

    def content_type(self) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]]:
        """(type, subtype, params) lower-cased type/subtype, with the MIME defaults applied."""
        if self.is_message_rfc822:
            return b"message", b"rfc822", self._ct_params()
        if self.is_multipart:
            _ctype, subtype, params = self._ct_raw()
            return b"multipart", (subtype or b"").lower(), params
        if not self.is_mime or (self.ct is None and self.header("Content-Type") is None):
            return b"text", b"plain", []
        ctype_b, sub, params = self._ct_raw()
        return ctype_b.lower(), (sub or b"").lower(), params

    def _ct_raw(self) -> tuple[bytes, bytes | None, list[tuple[bytes, bytes]]]:
        # the first Content-Type, as `_Parser.classify` read it (parsed once, not per call)
        if self.ct is not None:
            ctype, sub, params, _ret = self.ct
            return ctype, sub, list(params)
        value = self.header("Content-Type")
        if value is None:
            return b"", None, []
        ctype, sub, params, _ret = parse_content_type(value)
        return ctype, sub, params

    def _ct_params(self) -> list[tuple[bytes, bytes]]:
        return self._ct_raw()[2] if self.is_mime else []

    def param(self, name: str) -> bytes | None:
        """A Content-Type parameter (case-insensitive name), or None."""
        key = name.encode("ascii").lower()
        for k, v in self.content_type()[2]:
            if k.lower() == key:
                return v
        return None

    def disposition(self) -> tuple[bytes, list[tuple[bytes, bytes]]] | None:
        """(lower-cased disposition, params) of the first parsable Content-Disposition."""
        for value in self.header_values("Content-Disposition"):
            token, params = parse_token_value(value)
            if token:
                return token.lower(), params
        return None

    def walk(self) -> Iterator[Part]:
        """This part and all its descendants, depth first."""
        stack: list[Part] = [self]
        while stack:
            part = stack.pop()
            yield part
            stack.extend(reversed(part.children))


@dataclass(slots=True)
class _Boundary:
    part: Part
    value: bytes


class _Parser:
    __slots__ = ("boundaries", "data", "n", "total_parts")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.n = len(data)
        self.boundaries: list[_Boundary] = []
        self.total_parts = 1

    # --- delimiter lines -------------------------------------------------------------------

    def boundary_at(self, line: int) -> tuple[_Boundary, bool] | None:
        """The open boundary the line at `line` delimits (and whether it is a close one)."""
        data = self.data
        if not self.boundaries or not data.startswith(b"--", line):
            return None
        start = line + 2
        lf = data.find(b"\n", start)
        trailing_dash = False
        if lf >= 0:
            find_size = lf - start
            if find_size > 0 and data[start + find_size - 1] == _CR:
                find_size -= 1
            if find_size > 2 and data[start + find_size - 2 : start + find_size] == b"--":
                trailing_dash = True
        else:
            find_size = min(self.n - start, BOUNDARY_END_MAX_LEN)
        best: _Boundary | None = None
        for b in reversed(self.boundaries):
            blen = len(b.value)
            if (
                blen <= find_size
                and (best is None or len(best.value) < blen)
                and data.startswith(b.value, start)
            ):
                best = b
                if blen == find_size or (trailing_dash and blen == find_size - 2):
                    break
        if best is None:
            return None
        blen = len(best.value)
        closing = data.startswith(b"--", start + blen) and start + blen + 2 <= self.n
        return best, closing

    # --- main loop ---------------------------------------------------------------------------

    def run(self) -> Part:
        data = self.data
        n = self.n
        root = Part(data, 0)
        part = root
        pos = 0
        logical = 0
        nl_owner: Part | None = None
        while True:
            # ---- header block of `part`, starting at pos ----
            pos, cut = self.parse_header(part, pos, logical)
            if cut < pos and part.headers:
                # the header was cut by a delimiter line: like Dovecot, the newline before
                # that line is counted in the body of this part's parent
                nl_owner = part.parent
            self.classify(part)
            if part.header_complete and part.boundary is not None and part.is_multipart:
                if part.depth + 1 < MAX_NESTING:
                    self.boundaries.append(_Boundary(part, part.boundary))
                else:
                    part.is_multipart = part.is_digest = False
                    part.boundary = None
                    part.overflow = True
            elif part.is_multipart:
                part.boundary = None
            if part.header_complete and self.boundaries and cut == pos:
                found = self.boundary_at(pos)
                if found is not None and found[0].part is not part:
                    # Dovecot checks for a delimiter before it reports the end of the header:
                    # the empty line then belongs to the delimiter, as the CRLF before it.
                    blank = 2 if pos >= 2 and data[pos - 2] == _CR else 1
                    cut = part.body_start = pos - blank
                    nl_owner = part.parent
            if part.is_message_rfc822 and (
                part.depth + 1 >= MAX_NESTING or self.total_parts >= MAX_PARTS
            ):
                part.is_message_rfc822 = False
                part.overflow = True
            if part.is_message_rfc822:
                # when the parent's header was cut by a delimiter, the child is empty and
                # starts where the parent's header ended (`cut`), before the delimiter line
                child = Part(data, cut, parent_ref=weakref.ref(part), depth=part.depth + 1)
                self.total_parts += 1
                part.children.append(child)
                part = child
                logical = cut
                continue
            # ---- body of `part` up to a delimiter of an open multipart, or EOF ----
            first_line_cut = cut
            while True:
                found = None
                line = -1
                if self.boundaries:
                    found = self.boundary_at(pos)
                    if found is not None:
                        line = pos
                        delim_start = first_line_cut
                    else:
                        search = pos
                        while True:
                            hit = data.find(b"\n--", search)
                            if hit < 0:
                                break
                            found = self.boundary_at(hit + 1)
                            if found is not None:
                                line = hit + 1
                                delim_start = hit - 1 if hit > pos and data[hit - 1] == _CR else hit
                                break
                            search = hit + 1
                if found is None:
                    self.finish_all(part, n)
                    return root
                boundary, closing = found
                # close every part up to the multipart that owns the boundary
                below_nl = True  # parts that end before the newline of a cut header
                while part is not boundary.part:
                    if part is nl_owner:
                        below_nl = False
                    part.end = max(delim_start, part.body_start) if below_nl else line
                    assert part.parent is not None
                    part = part.parent
                nl_owner = None
                idx = next(i for i, b in enumerate(self.boundaries) if b is boundary)
                del self.boundaries[idx + (0 if closing else 1) :]
                # skip the rest of the delimiter line
                lf = data.find(b"\n", line)
                pos = n if lf < 0 else lf + 1
                first_line_cut = pos
                if closing or not self.boundaries or self.boundaries[-1].part is not part:
                    continue  # epilogue of `part`
                if self.total_parts >= MAX_PARTS:
                    continue
                child = Part(data, pos, parent_ref=weakref.ref(part), is_mime=True,
                             depth=part.depth + 1)
                self.total_parts += 1
                part.children.append(child)
                part = child
                logical = pos
                break

    @staticmethod
    def finish_all(part: Part, end: int) -> None:
        p: Part | None = part
        while p is not None:
            p.end = end
            p = p.parent

    def parse_header(self, part: Part, pos: int, logical: int) -> tuple[int, int]:
        """Read the header block at pos (`logical` is where the part starts, which is before
        pos only for an empty part in front of a delimiter line). Returns (next position,
        end of the header block)."""
        data = self.data
        n = self.n
        headers = part.headers
        prev_nl = 0
        while True:
            if pos >= n:
                part.body_start = n if headers else max(logical, min(pos, n))
                return n, part.body_start
            if self.boundaries and data.startswith(b"--", pos) and self.boundary_at(pos):
                cut = pos - prev_nl if headers else logical
                part.body_start = cut
                return pos, cut
            lf = data.find(b"\n", pos)
            if lf < 0:
                line_end = n
                next_pos = n
            else:
                line_end = lf
                next_pos = lf + 1
            if line_end == pos or (line_end == pos + 1 and data[pos] == _CR and lf >= 0):
                # empty line: end of header
                part.body_start = next_pos
                part.header_complete = True
                return next_pos, next_pos
            # a field: its first line, then continuation lines
            first_line_end = line_end
            while lf >= 0 and next_pos < n and data[next_pos] in (0x20, 0x09):
                lf = data.find(b"\n", next_pos)
                if lf < 0:
                    line_end = n
                    next_pos = n
                else:
                    line_end = lf
                    next_pos = lf + 1
            colon = data.find(b":", pos, first_line_end)
            if colon >= 0:
                name_end = colon
                while name_end > pos and data[name_end - 1] in (0x20, 0x09):
                    name_end -= 1
                name = data[pos:name_end]
                headers.append(Header(name, pos, colon + 1, next_pos, True))
            else:
                stop = first_line_end
                if first_line_end < n and stop > pos and data[stop - 1] == _CR:
                    stop -= 1
                headers.append(Header(data[pos:stop], pos, next_pos, next_pos, False))
            prev_nl = 0 if lf < 0 else 2 if lf > 0 and data[lf - 1] == _CR else 1
            pos = next_pos

    def classify(self, part: Part) -> None:
        """Flags from the header block (Dovecot's parse_content_type + end of headers)."""
        data = self.data
        seen_ct = False
        for h in part.headers:
            lname = h.name.lower()
            if lname == b"mime-version":
                part.is_mime = True
            elif lname == b"content-type":
                part.is_mime = True
                if seen_ct:
                    continue
                seen_ct = True
                part.ct = parse_content_type(h.value(data))
                ctype, subtype, params, ret = part.ct
                full = ctype + (b"/" + subtype if subtype is not None else b"")
                lfull = full.lower()
                if lfull == b"message/rfc822":
                    part.is_message_rfc822 = True
                elif lfull[:4] == b"text" and (len(lfull) == 4 or lfull[4:5] == b"/"):
                    part.is_text = True
                elif lfull[:10] == b"multipart/":
                    part.is_multipart = True
                    part.is_digest = lfull[10:] == b"digest"
                    if ret >= 0:
                        for key, value in params:
                            if key.lower() == b"boundary":
                                part.boundary = value[:BOUNDARY_STRING_MAX_LEN]
                                break
        if not part.is_mime:
            part.is_message_rfc822 = part.is_text = part.is_multipart = part.is_digest = False
            part.boundary = None
        if not seen_ct or not part.is_mime:
            parent = part.parent
            if parent is not None and parent.is_digest and parent.is_multipart:
                part.is_message_rfc822 = True
            else:
                part.is_text = True


def parse(data: bytes) -> Part:
    """Parse a message (any bytes) into its MIME tree. Never raises on content."""
    if not isinstance(data, bytes):
        raise MimeError("a message is bytes")
    if len(data) > MAX_MESSAGE_SIZE:
        raise MimeError("message too large")
    if native is not None:
        return _from_native(data, native.parse_tree(data))
    return _Parser(data).run()


def parse_top(data: bytes) -> tuple[Part, list[tuple[int, int]]]:
    """The root of `parse(data)` without its descendants, and its children's (start, end):
    for a caller that asks about the top of a message only (`smime._one_reading`), where
    making every part's objects cost more than parsing."""
    if native is None or not isinstance(data, bytes) or len(data) > MAX_MESSAGE_SIZE:
        root = parse(data)
        return root, [(child.start, child.end) for child in root.children]
    record, children = native.parse_top(data)
    return _part_of(data, record, None), children


def parse_python(data: bytes) -> Part:
    """`parse` by this module's code alone (the native parser's reference)."""
    return _Parser(data).run()


def _from_native(data: bytes, records: list[Any]) -> Part:
    """The tree from the native parser's records (native/src/lib.rs `parse_tree`)."""
    parts: list[Part] = []
    for record in records:
        parent = record[3]
        part = _part_of(data, record, None if parent < 0 else weakref.ref(parts[parent]))
        if parent >= 0:
            parts[parent].children.append(part)
        parts.append(part)
    return parts[0]


def _part_of(data: bytes, record: Any, parent: weakref.ref[Part] | None) -> Part:
    """One part from its native record (native/src/lib.rs `part_record`), no children yet."""
    start, body_start, end, _parent, flags, boundary, depth, ct, headers = record
    return Part(data, start, body_start, end, [Header(*h) for h in headers], [], parent,
                bool(flags & 1), bool(flags & 2), bool(flags & 4), bool(flags & 8),
                bool(flags & 16), boundary, bool(flags & 32), depth, bool(flags & 64), ct)


def part_at(root: Part, numbers: list[int]) -> Part | None:
    """The part an IMAP section part number (`[1, 2, 3]` for 1.2.3) names, or None.

    A multipart's n-th child is n; a non-multipart part has only part 1 (itself), and only a
    message/rfc822 part may be followed by more numbers, which then address the encapsulated
    message (RFC 9051 section 6.4.5; Dovecot's imap_msgpart_find)."""
    part: Part | None = root
    last = len(numbers) - 1
    for index, number in enumerate(numbers):
        if part is None or number < 1:
            return None
        if part.is_multipart:
            part = part.children[number - 1] if number <= len(part.children) else None
        elif number != 1 or (index < last and not part.is_message_rfc822):
            return None
        if part is not None and part.is_message_rfc822 and index < last:
            part = part.children[0] if part.children else None
    return part
