"""IMAP FETCH views of one message, computed from its MIME tree (RFC 3501 / RFC 9051).

`MessageView(message_bytes)` answers every FETCH data item for that message exactly as a
correct IMAP server (the oracle is Dovecot 2.3) answers it after an APPEND of those bytes:

- the message is first put in canonical IMAP form: every bare LF becomes CRLF (RFC 9051
  section 2.3.1: the message text a server returns uses CRLF). `data` is that form; sizes,
  sections and partials refer to it;
- BODYSTRUCTURE / BODY, ENVELOPE and the other items are returned in the IMAP value model of
  `smime_proxy.imap.wire.values` (None = NIL, int, bytes, lists); `render()` makes wire bytes.

Where Dovecot's answer is a choice among several allowed by RFC 9051, the Dovecot 2.3.19
behaviour is followed so that the oracle can compare exactly (each rule was measured):

- defaults: a text part without charset gets `("charset" "us-ascii")`; a non-MIME part is
  text/plain; a multipart without parts shows one empty text/plain part; a part beyond the
  nesting limit is application/octet-stream; a plain us-ascii 7bit message is written in the
  canonical lower-case form whatever the case of its fields;
- the first of repeated Content-* fields wins (Content-Disposition: the first with parameters);
  repeated address fields of the ENVELOPE add up, repeated string fields: the last wins;
- a broken Content-Type (`text; x=y`, `text/`, `a/b/c`) is reported as `"" ""` without
  parameters (`text` alone stays "text"); parameter values stay RFC 2231-encoded;
- sections of a part that does not exist are empty strings; `n.1` of a leaf part is the part;
- BINARY undoes base64 / quoted-printable strictly (invalid data is an error, as Dovecot's NO)
  and takes the last Content-Transfer-Encoding field even in a non-MIME part. BINARY[] and
  BINARY of a multipart or message part serve the raw bytes (Dovecot converts the whole
  message; see the deviations listed in tests/integration/test_views_oracle.py).

May import: errors, imap.wire, mime, stdlib.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from smime_proxy.errors import InputError
from smime_proxy.imap.wire.values import Value
from smime_proxy.mime.address import Address, parse_address_list
from smime_proxy.mime.entity import has_bare_lf
from smime_proxy.mime.rfc822 import (
    parse_content_type,
    parse_language,
    parse_token_value,
    parse_transfer_encoding,
)
from smime_proxy.mime.transfer import c_string, transfer_decode
from smime_proxy.mime.tree import MAX_MESSAGE_SIZE, Part, parse, part_at

_BARE_LF = re.compile(rb"(?<!\r)\n")
_WSP_RUN = re.compile(rb"[ \t]+")


class SectionError(InputError):
    """A section specification that is not valid IMAP (the server answers BAD)."""


def to_crlf(data: bytes) -> bytes:
    """Bare LF -> CRLF (a no-op, without copying, when every LF already has its CR)."""
    if not has_bare_lf(data):
        return data
    return _BARE_LF.sub(b"\r\n", data)


# --- strings as Dovecot writes them ---------------------------------------------------------


def for_humans(src: bytes) -> bytes:
    """Dovecot's imap_append_string_for_humans: CR/LF dropped, runs of SP/TAB -> one SP,
    leading and trailing whitespace removed, NUL -> 0x80."""
    if b"\r" in src or b"\n" in src:
        src = src.replace(b"\r", b"").replace(b"\n", b"")
    if b"\0" in src:
        src = src.replace(b"\0", b"\x80")
    if b"\t" in src or b"  " in src:
        src = _WSP_RUN.sub(b" ", src)
    return src.strip(b" ")


def nolf(src: bytes | None) -> bytes | None:
    """Dovecot's imap_append_nstring_nolf: the value without its CR and LF bytes."""
    if src is None:
        return None
    if b"\r" in src or b"\n" in src:
        return src.replace(b"\r", b"").replace(b"\n", b"")
    return src


# --- per-part data (Dovecot message-part-data.c) --------------------------------------------


@dataclass(slots=True)
class PartData:
    content_type: bytes | None = None
    subtype: bytes | None = None
    params: list[tuple[bytes, bytes]] = field(default_factory=list)
    cte: bytes | None = None
    content_id: bytes | None = None
    description: bytes | None = None
    disposition: bytes | None = None
    disposition_params: list[tuple[bytes, bytes]] = field(default_factory=list)
    md5: bytes | None = None
    language: list[bytes] | None = None
    location: bytes | None = None


def part_data(part: Part, cache: dict[int, PartData] | None = None) -> PartData:
    """The Content-* data of a part (empty for a non-MIME part), memoised in `cache`."""
    if cache is not None:
        cached = cache.get(id(part))
        if cached is not None:
            return cached
        d = cache[id(part)] = _part_data(part)
        return d
    return _part_data(part)


def _part_data(part: Part) -> PartData:
    d = PartData()
    if not part.is_mime:
        return d
    data = part.data
    for h in part.headers:
        name = h.name
        if len(name) < 8 or name[:8].lower() != b"content-":
            continue
        key = name[8:].lower()
        if key == b"type":
            if d.content_type is None:
                value = h.value(data)
                if part.ct is not None and b"\0" not in value:
                    ctype, subtype, params, _ret = part.ct
                else:
                    ctype, subtype, params, _ret = parse_content_type(c_string(value))
                d.content_type = c_string(ctype)
                d.subtype = c_string(subtype) if subtype is not None else b""
                d.params = params
            continue
        value = c_string(h.value(data))
        if key == b"transfer-encoding":
            if d.cte is None:
                d.cte = parse_transfer_encoding(value)
        elif key == b"id":
            if d.content_id is None:
                d.content_id = value
        elif key == b"md5":
            if d.md5 is None:
                d.md5 = value
        elif key == b"description":
            if d.description is None:
                d.description = value
        elif key == b"disposition":
            if not d.disposition_params:
                token, params = parse_token_value(value)
                if token is not None:
                    d.disposition = token
                    d.disposition_params = params
        elif key == b"language":
            if d.language is None:
                langs = parse_language(value)
                if langs:
                    d.language = langs
        elif key == b"location" and d.location is None:
            d.location = value
    if part.overflow:
        # Dovecot shows a multipart or message part beyond its nesting limit as an opaque leaf
        d.content_type, d.subtype = b"application", b"octet-stream"
    return d


def _params(params: list[tuple[bytes, bytes]], default_charset: bool) -> Value:
    if not default_charset and not params:
        return None
    out: list[Value] = []
    seen_charset = False
    for name, value in params:
        if default_charset and name.lower() == b"charset":
            seen_charset = True
        out.append(name)
        out.append(value)
    if default_charset and not seen_charset:
        out.append(b"charset")
        out.append(b"us-ascii")
    return out


_EMPTY_BODY: list[Value] = [
    b"text", b"plain", [b"charset", b"us-ascii"], None, None, b"7bit", 0, 0,
]
_EMPTY_BODYSTRUCTURE: list[Value] = [*_EMPTY_BODY, None, None, None, None]


def _common_ext(d: PartData) -> list[Value]:
    disp: Value = None
    if d.disposition is not None:
        disp = [d.disposition, _params(d.disposition_params, False)]
    lang: Value = None
    if d.language is not None:
        lang = list(d.language)
    return [disp, lang, nolf(d.location)]


def bodystructure(
    part: Part, extended: bool = True, cache: dict[int, PartData] | None = None
) -> list[Value]:
    """BODYSTRUCTURE (extended) or BODY (not extended) of a part, as a value list."""
    d = part_data(part, cache)
    if part.is_multipart:
        out: list[Value] = []
        if part.children:
            for child in part.children:
                out.append(bodystructure(child, extended, cache))
        else:
            out.append(list(_EMPTY_BODYSTRUCTURE if extended else _EMPTY_BODY))
        out.append(d.subtype if d.subtype is not None else b"x-unknown")
        if extended:
            out.append(_params(d.params, False))
            out.extend(_common_ext(d))
        return out
    if part.is_message_rfc822:
        out = [b"message", b"rfc822"]
        text = False
    elif d.content_type is None:
        out = [b"text", b"plain"]
        text = True
    else:
        text = d.content_type.lower() == b"text"
        out = [d.content_type, d.subtype if d.subtype is not None else b""]
    out.append(_params(d.params, text))
    out.append(nolf(d.content_id))
    out.append(nolf(d.description))
    out.append(d.cte if d.cte is not None else b"7bit")
    out.append(part.body_size)
    if text:
        out.append(part.body_lines())
    elif part.is_message_rfc822:
        child = part.children[0]
        out.append(envelope(child))
        out.append(bodystructure(child, extended, cache))
        out.append(part.body_lines())
    if extended:
        out.append(nolf(d.md5))
        out.extend(_common_ext(d))
    return out


def _is_plain_7bit(part: Part, d: PartData) -> bool:
    """Dovecot's message_part_data_is_plain_7bit(): a text/plain us-ascii 7bit message with no
    other Content-* data (any case), whose structure Dovecot writes in the canonical form."""
    if not part.is_text or part.is_multipart or part.is_message_rfc822:
        return False
    if d.subtype is not None and d.subtype.lower() != b"plain":
        return False
    if d.params and (
        len(d.params) > 1
        or d.params[0][0].lower() != b"charset"
        or d.params[0][1].lower() != b"us-ascii"
    ):
        return False
    if d.content_id is not None or d.description is not None:
        return False
    if d.cte is not None and d.cte.lower() != b"7bit":
        return False
    return (
        d.md5 is None and d.disposition is None and d.language is None and d.location is None
    )


def _without_extensions(structure: list[Value], part: Part) -> list[Value]:
    """BODY from BODYSTRUCTURE (same values, extension data dropped)."""
    if part.is_multipart:
        if not part.children:
            return [list(_EMPTY_BODY), structure[1]]
        n = len(part.children)
        out: list[Value] = []
        for child_structure, child in zip(structure[:n], part.children, strict=True):
            assert isinstance(child_structure, list)
            out.append(_without_extensions(child_structure, child))
        out.append(structure[n])
        return out
    if part.is_message_rfc822:
        inner = structure[8]
        assert isinstance(inner, list)
        return [*structure[:8], _without_extensions(inner, part.children[0]), structure[9]]
    d0 = structure[0]
    text = isinstance(d0, bytes) and d0.lower() == b"text"
    return structure[: 8 if text else 7]


# --- ENVELOPE ------------------------------------------------------------------------------

_ENV_STR = {b"date": 0, b"subject": 1, b"in-reply-to": 8, b"message-id": 9}
_ENV_ADDR = {b"from": 2, b"sender": 3, b"reply-to": 4, b"to": 5, b"cc": 6, b"bcc": 7}


def _addresses(addrs: list[Address] | None) -> Value:
    if not addrs:
        return None
    return [
        [
            None if a.name is None else for_humans(a.name),
            a.route,
            a.mailbox,
            a.domain,
        ]
        for a in addrs
    ]


def envelope(part: Part) -> list[Value]:
    """ENVELOPE of the message whose header block is `part`'s (the last of repeated fields
    wins, as in Dovecot)."""
    strs: list[bytes | None] = [None] * 10
    addrs: list[list[Address] | None] = [None] * 10
    data = part.data
    for h in part.headers:
        lname = h.name.lower()
        si = _ENV_STR.get(lname)
        if si is not None:
            strs[si] = c_string(h.value(data))
            continue
        ai = _ENV_ADDR.get(lname)
        if ai is not None:
            found = parse_address_list(c_string(h.value(data)))
            have = addrs[ai]
            if have is None:
                addrs[ai] = found
            else:
                have.extend(found)
    subject = strs[1]
    from_ = addrs[2]
    return [
        nolf(strs[0]),
        None if subject is None else for_humans(subject),
        _addresses(from_),
        _addresses(addrs[3] or from_),
        _addresses(addrs[4] or from_),
        _addresses(addrs[5]),
        _addresses(addrs[6]),
        _addresses(addrs[7]),
        nolf(strs[8]),
        nolf(strs[9]),
    ]


# --- sections ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ViewSection:
    """A parsed section-spec: part numbers, then "" / HEADER / HEADER.FIELDS /
    HEADER.FIELDS.NOT / TEXT / MIME, with the field names for the two HEADER.FIELDS forms."""

    parts: tuple[int, ...] = ()
    text: str = ""
    fields: tuple[bytes, ...] = ()


_SECTION_RE = re.compile(
    r"^(?P<parts>[1-9][0-9]*(?:\.[1-9][0-9]*)*)?"
    r"(?:(?(parts)\.)(?P<text>HEADER\.FIELDS\.NOT|HEADER\.FIELDS|HEADER|TEXT|MIME))?"
    r"(?:\s*\((?P<fields>[^()]*)\))?$",
    re.IGNORECASE,
)


def parse_section(spec: str) -> ViewSection:
    """`1.2.HEADER.FIELDS (From To)` -> ViewSection; raises SectionError when invalid."""
    m = _SECTION_RE.match(spec.strip())
    if m is None:
        raise SectionError(f"bad section: {spec[:80]!r}")
    parts = tuple(int(p) for p in m.group("parts").split(".")) if m.group("parts") else ()
    text = (m.group("text") or "").upper()
    fields_text = m.group("fields")
    if text.startswith("HEADER.FIELDS"):
        if fields_text is None or not fields_text.split():
            raise SectionError("HEADER.FIELDS needs a list of field names")
        fields = tuple(_unquote(f).encode("utf-8") for f in _split_fields(fields_text))
    elif fields_text is not None:
        raise SectionError("only HEADER.FIELDS takes a list")
    else:
        fields = ()
    if text == "MIME" and not parts:
        raise SectionError("MIME needs a part number")
    return ViewSection(parts, text, fields)


def _split_fields(text: str) -> list[str]:
    return re.findall(r'"(?:[^"\\]|\\.)*"|[^\s"]+', text)


def _unquote(token: str) -> str:
    if len(token) >= 2 and token[0] == token[-1] == '"':
        return re.sub(r"\\(.)", r"\1", token[1:-1])
    return token


def _filter_headers(part: Part, fields: tuple[bytes, ...], exclude: bool) -> bytes:
    wanted = {f.lower() for f in fields}
    data = part.data
    out = [
        data[h.start : h.end]
        for h in part.headers
        if (h.name.lower() in wanted) != exclude
    ]
    if _has_eoh(part) or (not exclude and part.parent is None):
        # Dovecot: the empty line is added for HEADER.FIELDS of the message itself; for
        # HEADER.FIELDS.NOT and for encapsulated messages only when the header had one
        out.append(b"\r\n")
    return b"".join(out)


def _has_eoh(part: Part) -> bool:
    header = part.header_bytes
    return header in (b"\r\n", b"\n") or header.endswith((b"\n\r\n", b"\n\n"))


# --- the message view --------------------------------------------------------------------


class MessageView:
    """All FETCH views of one message. Parses once; each view is computed on demand."""

    __slots__ = ("_body", "_bodystructure", "_cache", "_envelope", "_root", "data", "rendered")

    def __init__(self, message: bytes) -> None:
        self.data = to_crlf(message)
        if not isinstance(self.data, bytes) or len(self.data) > MAX_MESSAGE_SIZE:
            parse(self.data)  # raises what the tree says of it, when the view is made
        self._root: Part | None = None
        self._cache: dict[int, PartData] = {}
        self._bodystructure: list[Value] | None = None
        self._body: list[Value] | None = None
        self._envelope: list[Value] | None = None
        self.rendered: dict[str, bytes] = {}  # wire forms of structures (imap.fetch_rewrite)

    @property
    def root(self) -> Part:
        """The MIME tree, parsed when first asked: a worker prerenders the structures a
        client asks for natively, and the whole message (BODY[]) needs no tree."""
        if self._root is None:
            self._root = parse(self.data)
        return self._root

    @property
    def size(self) -> int:
        """RFC822.SIZE."""
        return len(self.data)

    def bodystructure(self) -> list[Value]:
        if self._bodystructure is None:
            root = self.root
            if _is_plain_7bit(root, part_data(root, self._cache)):
                # Dovecot stores no BODYSTRUCTURE for such a message and writes the default
                self._bodystructure = [
                    *_EMPTY_BODY[:6], root.body_size, root.body_lines(), None, None, None, None,
                ]
            else:
                self._bodystructure = bodystructure(root, True, self._cache)
        return self._bodystructure

    def body(self) -> list[Value]:
        """BODY: BODYSTRUCTURE without its extension data."""
        if self._body is None:
            self._body = _without_extensions(self.bodystructure(), self.root)
        return self._body

    def envelope(self) -> list[Value]:
        if self._envelope is None:
            self._envelope = envelope(self.root)
        return self._envelope

    def rfc822_header(self) -> bytes:
        return self.root.header_bytes

    def rfc822_text(self) -> bytes:
        return self.root.body_bytes

    def section(self, section: ViewSection | str, partial: tuple[int, int] | None = None) -> bytes:
        """BODY[section]<partial> content (an empty string for a part that does not exist)."""
        if isinstance(section, str):
            section = parse_section(section)
        content = self._section_bytes(section)
        return _cut(content, partial)

    def _section_bytes(self, section: ViewSection) -> bytes:
        if not section.parts and section.text == "":
            return self.data  # the whole message
        root = self.root
        if not section.parts:
            message: Part | None = root
        else:
            part = part_at(root, list(section.parts))
            if part is None:
                return b""
            if section.text == "":
                return part.body_bytes
            if section.text == "MIME":
                return part.header_bytes
            message = part.children[0] if part.is_message_rfc822 and part.children else None
            if message is None:
                return b""
        assert message is not None
        if section.text == "":
            return message.raw_bytes if message is not root else self.data
        if section.text == "HEADER":
            return message.header_bytes
        if section.text == "TEXT":
            return message.body_bytes
        exclude = section.text == "HEADER.FIELDS.NOT"
        return _filter_headers(message, section.fields, exclude)

    def _binary_part(self, parts: tuple[int, ...]) -> Part | None:
        if not parts:
            return None
        return part_at(self.root, list(parts))

    def binary(self, parts: tuple[int, ...], partial: tuple[int, int] | None = None) -> bytes:
        """BINARY[parts]<partial>: the part's body with its transfer encoding undone."""
        if not parts:
            return _cut(self.data, partial)
        part = self._binary_part(parts)
        if part is None:
            return b""
        if part.is_multipart or part.is_message_rfc822:
            return _cut(part.body_bytes, partial)
        return _cut(transfer_decode(part), partial)

    def binary_size(self, parts: tuple[int, ...]) -> int:
        return len(self.binary(parts))


def _cut(content: bytes, partial: tuple[int, int] | None) -> bytes:
    if partial is None:
        return content
    origin, length = partial
    return content[origin : origin + length]
