"""The searchable text of one shown message, for `imap.search` (split from it to keep both
readable): header fields unfolded and RFC 2047-decoded, text parts transfer- and
charset-decoded, addresses written as Dovecot normalises them, and the case folding both
the needle and the text go through. Bounded per message (`MAX_HEADER_BYTES`,
`MAX_TEXT_BYTES`, `MAX_FOLDED_CHARS`; see `imap.search`); never raises on a hostile message.

May import: imap.views, mime, stdlib.
"""

from __future__ import annotations

import binascii
import codecs
import functools
import re
import unicodedata
from typing import Final

from smime_proxy.imap.views import MessageView
from smime_proxy.mime.address import Address, parse_address_list
from smime_proxy.mime.transfer import binary_cte
from smime_proxy.mime.tree import Part

MAX_HEADER_BYTES: Final = 1 << 20
MAX_TEXT_BYTES: Final = 4 << 20
MAX_FOLDED_CHARS: Final = 2 * (MAX_HEADER_BYTES + MAX_TEXT_BYTES)

_UTF8_NAMES: Final = frozenset({"utf-8", "ascii"})


class SearchUnsupported(Exception):
    """The program has a key, argument or charset the proxy does not judge: relay it as is."""


class MessageText:
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


def search_codec(charset: str | bytes | None) -> str:
    """The codec of SEARCH's CHARSET argument; an unknown one is the upstream's to refuse."""
    name = _charset_name(charset)
    if name is None:
        return "utf-8"
    codec = _codec(name)
    if codec is None:
        raise SearchUnsupported("unknown charset")
    return "utf-8" if codec in _UTF8_NAMES else codec


def needle_codec(charset: str | bytes | None) -> str:
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


def fold_needle(needle: bytes, codec: str) -> str:
    try:
        text = needle.decode(codec, "replace")
    except LookupError:  # pragma: no cover - codecs come from needle_codec
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
