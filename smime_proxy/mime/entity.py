"""Byte-exact helpers for whole RFC 5322 / MIME entities as the S/MIME recipes need them.

Split a message into its header block and body, list header fields without re-serialising
them, read one unfolded field value, read Content-Type parameters, split a multipart body at
its delimiters (RFC 2046 section 5.1.1), and canonicalise line ends to CRLF (RFC 8551 3.1.1).
The IMAP views use the fuller byte-offset tree of this package; these helpers stay small
because signatures must be computed over exactly the bytes that are sent.

May import: errors, native, stdlib.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from email.message import Message
from typing import NamedTuple

from smime_proxy.errors import MalformedMessage
from smime_proxy.native import native

MAX_HEADER_BYTES = 1024 * 1024
STATUS_HEADER = "X-SMIME-Status"  # the result field only the proxy writes (DESIGN 5)
PKCS7_MIME_TYPES = ("application/pkcs7-mime", "application/x-pkcs7-mime")


_FOLD = re.compile(rb"\r?\n(?=[ \t])")


class HeaderField(NamedTuple):
    """One header field (a named tuple: made for every field of every entity parsed, where
    a frozen dataclass cost three times as much)."""

    name: str  # lower-case field name
    raw: bytes  # the whole field, continuation lines and line end included

    def value(self) -> bytes:
        """The unfolded value (RFC 5322 2.2.3), without leading/trailing white space."""
        value = self.raw.partition(b":")[2].strip()
        # a fold is a line break before white space: only a value with a line break left
        # inside it after the strip can hold one
        return _FOLD.sub(b"", value) if b"\n" in value else value

    def line(self) -> bytes:
        """The field as a header line to copy: `raw`, ending in a line break (the last field
        of a header without its empty line may have none)."""
        return self.raw if self.raw.endswith(b"\n") else self.raw + b"\r\n"


@dataclass(frozen=True)
class Entity:
    """A parsed entity over the original bytes: nothing is copied until asked for."""

    data: bytes = dataclass_field(repr=False)
    header_end: int  # header block: the fields with their line ends, no blank line
    body_start: int
    fields: tuple[HeaderField, ...]
    # `content_type()` once read: one message's entity is asked several times (is it
    # encrypted? signed? where is its CMS object?)
    _content_type: tuple[str, dict[str, str]] | None = dataclass_field(
        default=None, init=False, repr=False, compare=False)

    @property
    def header(self) -> bytes:
        return self.data[: self.header_end]

    @property
    def body(self) -> bytes:
        return self.data[self.body_start :]

    def body_view(self) -> memoryview:
        """The body without a copy (large messages)."""
        return memoryview(self.data)[self.body_start :]

    def get(self, name: str) -> bytes | None:
        name = name.lower()
        for field in self.fields:
            if field.name == name:
                return field.value()
        return None

    def get_all(self, name: str) -> list[bytes]:
        name = name.lower()
        return [field.value() for field in self.fields if field.name == name]

    def content_type(self) -> tuple[str, dict[str, str]]:
        known = self._content_type
        if known is None:
            known = parse_content_type(self.get("content-type"))
            object.__setattr__(self, "_content_type", known)  # frozen: set once, here
        return known[0], dict(known[1])  # the caller's own, as `parse_content_type` gives

    def content_fields(self) -> list[HeaderField]:
        """Content-* and MIME-Version fields: what belongs to the MIME entity itself."""
        return [f for f in self.fields if is_content_field(f.name)]

    def other_fields(self) -> list[HeaderField]:
        return [f for f in self.fields if not is_content_field(f.name)]


def is_content_field(name: str) -> bool:
    return name.startswith("content-") or name == "mime-version"


def parse_entity(data: bytes) -> Entity:
    """Split header block and body (the body starts after the first empty line)."""
    if data.startswith((b"\r\n", b"\n")):
        return Entity(data, 0, 2 if data.startswith(b"\r\n") else 1, ())
    found = header_end_of(data, MAX_HEADER_BYTES + 4)
    if found is None:
        if len(data) > MAX_HEADER_BYTES:
            raise MalformedMessage("message header is too large")
        header_end = body_start = len(data)
    else:
        start, body_start = found
        header_end = start + (2 if data[start] == 0x0D else 1)
    header = data[:header_end]
    fields = (native.header_fields(header, HeaderField) if native is not None
              else tuple(_fields(header)))
    return Entity(data, header_end, body_start, fields)


def header_end_of(data: bytes, limit: int) -> tuple[int, int] | None:
    """(start, end) of the first line break followed by an empty line within data[:limit],
    CR included where there is one: what `re.search(rb"\r?\n\r?\n", data[:limit])` finds,
    by two finds at C speed (the expression took 11 µs to reach the end of a 700-byte
    header)."""
    lf_crlf = data.find(b"\n\r\n", 0, limit)
    # an LF LF counts only before it (a CRLF message has none: not read to its end)
    lf_lf = data.find(b"\n\n", 0, limit if lf_crlf < 0 else lf_crlf + 2)
    if lf_crlf < 0 or 0 <= lf_lf < lf_crlf:
        if lf_lf < 0:
            return None
        at, end = lf_lf, lf_lf + 2
    else:
        at, end = lf_crlf, lf_crlf + 3
    return (at - 1 if at and data[at - 1] == 0x0D else at), end


def _fields(header: bytes) -> list[HeaderField]:
    """The header's fields (its empty line left out); native/src/fields.rs is the twin
    `parse_entity` uses when built."""
    lines = header.splitlines(keepends=True)
    if any(fold in header for fold in _FOLDS):  # continuation lines joined to their field
        raws: list[bytes] = []
        for line in lines:
            if line[0] in _WHITE and raws:
                raws[-1] += line
            else:
                raws.append(line)
        lines = raws
    return [f for f in map(_field, lines) if f.name]


# how a continuation line starts (bytes.splitlines breaks at CR, LF and CRLF); a first line
# that starts with white space starts a field either way
_FOLDS = (b"\n ", b"\n\t", b"\r ", b"\r\t")
_WHITE = (0x20, 0x09)


# field names as written -> as looked up: a few dozen names make nearly every header (From,
# Received, ...); bounded, as a header can name anything
_NAMES: dict[bytes, str] = {}


def _field(raw: bytes) -> HeaderField:
    name, colon, _ = raw.partition(b":")
    if not colon:
        return HeaderField("", raw)  # not a header field: dropped from lookups, kept in bytes
    lowered = _NAMES.get(name)
    if lowered is None:
        lowered = name.strip().decode("ascii", "replace").lower()
        if len(_NAMES) < 2048:
            _NAMES[name] = lowered
    return HeaderField(lowered, raw)


_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"  # RFC 2045 5.1 token
_NAME = rb"[!#$%&'+\-.^_`|~0-9A-Za-z]+"  # a parameter name without RFC 2231's "*"
_GAP = rb"(?:[ \t]|\r?\n[ \t])*"  # white space, folding included (RFC 5322 3.2.2)
_PARAMETER = rb";" + _GAP + _NAME + rb"=(?:" + _TOKEN + rb'|"[^"\\\r\n]*")' + _GAP
_SIMPLE_TYPE = re.compile(_GAP + rb"(" + _TOKEN + rb"/" + _TOKEN + rb")" + _GAP
                          + rb"((?:" + _PARAMETER + rb")*)" + _GAP + rb"\Z")
_ONE_PARAMETER = re.compile(rb";" + _GAP + rb"(" + _NAME + rb')=(?:(' + _TOKEN
                            + rb')|"([^"\\\r\n]*)")')


def parse_content_type(value: bytes | None) -> tuple[str, dict[str, str]]:
    """(type/subtype in lower case, parameters with lower-case names); RFC 2045 defaults.

    The common form (tokens and simple quoted strings) is read by one expression; anything
    else (comments, escapes, RFC 2231 parameters, 8-bit) by the email package, which took
    a tenth of the time of opening a message for this alone."""
    if value is None:
        return "text/plain", {}
    mime_type, params = _read_content_type(value)
    return mime_type, dict(params)  # the caller's own: the reading is kept


@functools.lru_cache(maxsize=1024)
def _read_content_type(value: bytes) -> tuple[str, dict[str, str]]:
    """`parse_content_type`, kept by value: one message asks of its entities several times
    (is it encrypted? signed? protected?), and most values repeat from message to message."""
    simple = _SIMPLE_TYPE.match(value)
    if simple is not None:
        params = {m[1].decode("ascii").lower(): (m[2] if m[2] is not None else m[3]).decode(
            "ascii") for m in _ONE_PARAMETER.finditer(simple[2])}
        return simple[1].decode("ascii").lower(), params
    return content_type_by_email_package(value)


def content_type_by_email_package(value: bytes) -> tuple[str, dict[str, str]]:
    """`parse_content_type` for any form, by the email package."""
    message = Message()
    message["Content-Type"] = value.decode("utf-8", "replace")
    params: dict[str, str] = {}
    for key, param in message.get_params(failobj=[])[1:]:
        text = param if isinstance(param, str) else str(param[2])
        params[key.lower()] = text
    return message.get_content_type(), params


def has_bare_lf(data: bytes) -> bool:
    """Whether some LF in `data` has no CR before it (native/src/lib.rs is the twin, one
    pass where this counts twice). Each CRLF holds one LF, so the counts differ exactly
    when one LF is bare."""
    if native is not None and type(data) is bytes:  # the native call takes bytes only
        return bool(native.has_bare_lf(data))
    return _has_bare_lf(data)


def _has_bare_lf(data: bytes) -> bool:
    return data.count(b"\n") != data.count(b"\r\n")


def canonical_crlf(data: bytes) -> bytes:
    """Every bare LF becomes CRLF (the canonical form signatures are computed over).

    Replacing runs at C speed; a look-behind regex took 0.4 s on 25 MB.
    """
    if not has_bare_lf(data):
        return data
    if b"\r\n" not in data:  # LF-only: one pass, one copy
        return data.replace(b"\n", b"\r\n")
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def split_multipart(body: bytes, boundary: str, offset: int = 0) -> list[bytes]:
    """The exact bytes of each body part (RFC 2046 5.1.1); raises on no delimiter at all.
    With `offset`, the body is `body[offset:]` (a whole message, not copied for this).

    The line end before a delimiter belongs to the delimiter. A missing close delimiter is
    tolerated (the last part then runs to the end).
    """
    if not boundary or len(boundary) > 200:
        raise MalformedMessage("multipart boundary is missing or too long")
    delimiter = b"--" + boundary.encode("ascii", "replace")
    positions: list[tuple[int, int, bool]] = []  # (start of delimiter line, end of line, close)
    start = offset
    while True:
        index = body.find(delimiter, start)
        if index < 0:
            break
        at_line_start = index == offset or body[index - 1] == 0x0A
        line_end = body.find(b"\n", index)
        line_end = len(body) if line_end < 0 else line_end + 1
        if at_line_start:
            rest = body[index + len(delimiter) : line_end]
            closing = rest.startswith(b"--")
            if closing or not rest.strip(b" \t\r\n"):
                positions.append((index, line_end, closing))
                if closing:
                    break
        start = index + len(delimiter)
    if not positions:
        raise MalformedMessage("multipart body has no boundary delimiter")
    parts: list[bytes] = []
    for (_, line_end, closing), following in zip(positions, [*positions[1:], None], strict=True):
        if closing:
            break
        if following is None:
            parts.append(body[line_end:])
            break
        end = following[0]
        # strip the line end that belongs to the next delimiter
        if end >= 2 and body[end - 2 : end] == b"\r\n":
            end -= 2
        elif end >= 1 and body[end - 1] == 0x0A:
            end -= 1
        parts.append(body[line_end:end])
    return parts


def without_field(message: bytes, name: str) -> bytes:
    """The message without any top-level header field called `name` (case-insensitive),
    continuation lines included; the bytes unchanged when there is none.

    A plain scan of the header lines with no size limit of its own: it must also work on the
    messages `parse_entity` refuses (a header of megabytes, say), which are shown as stored."""
    found = header_end_of(message, len(message))
    # the header ends after the line break that ends its last field (CRLF or LF)
    header_end = message.index(b"\n", found[0]) + 1 if found is not None else len(message)
    header = message[:header_end]
    wanted = name.lower().encode("ascii")
    if wanted not in header.lower():
        return message
    pattern = re.compile(re.escape(wanted) + rb"[ \t]*:", re.IGNORECASE)
    kept: list[bytes] = []
    dropping = False
    for line in header.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):  # a folded continuation belongs to the field above
            if not dropping:
                kept.append(line)
            continue
        dropping = pattern.match(line) is not None
        if not dropping:
            kept.append(line)
    return b"".join(kept) + message[header_end:]


def is_pkcs7_mime(mime_type: str, params: dict[str, str]) -> bool:
    """Whether a Content-Type names a whole-entity CMS object: application/pkcs7-mime (or the
    x- form), or application/octet-stream named *.p7m (RFC 8551 3.2.1's fallback)."""
    name = (params.get("name") or "").lower()
    return mime_type in PKCS7_MIME_TYPES or (
        mime_type == "application/octet-stream" and name.endswith(".p7m"))


def needs_opening(header: bytes) -> bool:
    """Whether a message whose top-level header is (or holds the fields of) `header` must be
    opened before a client sees it: S/MIME (multipart/signed, pkcs7-mime) or carrying an
    incoming X-SMIME-Status field (which only the proxy writes, DESIGN 5). Anything else is
    shown exactly as stored, so the IMAP front can relay it unopened.

    `header` is typically Dovecot's answer to `HEADER.FIELDS (CONTENT-TYPE X-SMIME-STATUS)`.
    In doubt (a header these parsers refuse, any mention of the status field) the answer is
    yes: opening is always correct, only slower."""
    lower = header.lower()
    if STATUS_HEADER.lower().encode("ascii") in lower:
        return True
    if b"pkcs7" not in lower and b"signed" not in lower and b"p7m" not in lower:
        # the fast answer for nearly all mail: none of the types below can be named
        # without one of these words (a parameter hidden in RFC 2231 encoding is not
        # opened, and then shown as stored, which is what the upstream shows)
        return False
    return _names_smime_type(header)


@functools.lru_cache(maxsize=512)
def _names_smime_type(header: bytes) -> bool:
    """The Content-Type rule of `needs_opening` (remembered: the S/MIME mail of one sender
    carries the same few Content-Type fields, and the email parser costs ~0.2 ms)."""
    try:
        mime_type, params = _header_content_type(header)
    except Exception:  # in doubt, open it
        return True
    return mime_type == "multipart/signed" or is_pkcs7_mime(mime_type, params)


def _header_content_type(header: bytes) -> tuple[str, dict[str, str]]:
    """The Content-Type of a header block (with or without its closing empty line)."""
    ended = header.endswith(b"\n\r\n") or header.endswith(b"\n\n")
    return parse_entity(header if ended else header + b"\r\n").content_type()


@functools.lru_cache(maxsize=512)
def may_be_encrypted(header: bytes) -> bool:
    """Whether a message whose top-level header is `header` may need the user's key to be
    opened: a whole-entity CMS object that does not say it is only signed (RFC 8551 3.2.2's
    smime-type; without it, or for a .p7m attachment, it may be encrypted)."""
    try:
        mime_type, params = _header_content_type(header)
    except Exception:  # in doubt, it may be
        return True
    if not is_pkcs7_mime(mime_type, params):
        return False
    return (params.get("smime-type") or "").lower() not in ("signed-data", "certs-only")
