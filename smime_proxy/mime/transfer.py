"""Content-Transfer-Encoding undone as Dovecot's BINARY does it (RFC 3516, RFC 2045 6.7/6.8):
strict base64 and quoted-printable, the last Content-Transfer-Encoding field wins.

May import: errors, mime, stdlib.
"""

from __future__ import annotations

import binascii
import re

from smime_proxy.errors import InputError
from smime_proxy.mime.rfc822 import parse_transfer_encoding
from smime_proxy.mime.tree import Part


class UnknownCte(InputError):
    """BINARY of a part whose Content-Transfer-Encoding cannot be decoded ([UNKNOWN-CTE])."""


def c_string(value: bytes) -> bytes:
    """C strings stop at NUL: Dovecot keeps a header value up to its first NUL."""
    nul = value.find(b"\0")
    return value if nul < 0 else value[:nul]


class BinaryDecodeError(UnknownCte):
    """The part's content is not valid in its transfer encoding (the server answers NO)."""


_QP_TRAILING_WSP = re.compile(rb"[ \t]+(?=\r?\n)")
_QP_SOFT_BREAK = re.compile(rb"=\r?\n")
_QP_BAD_ESCAPE = re.compile(rb"=(?![0-9A-Fa-f]{2})")
_ANY_NEWLINE = re.compile(rb"\r?\n")


def decode_qp(body: bytes) -> bytes:
    """Quoted-printable decoding (RFC 2045 6.7) with Dovecot's strictness: trailing SP/TAB of
    each line dropped, `=` at a line end is a soft break, hard breaks become CRLF; an `=` not
    followed by two hex digits, a soft break at the very end, or a CR that is not part of a
    CRLF is an error."""
    if body.count(b"\r") != body.count(b"\r\n"):
        raise BinaryDecodeError("invalid quoted-printable data (bare CR)")
    last_nl = body.rfind(b"\n")
    last_line = body[last_nl + 1 :].rstrip(b" \t")
    if last_line.endswith(b"="):
        raise BinaryDecodeError("quoted-printable data ends with a soft line break")
    text = body[: last_nl + 1] + last_line
    if b" \n" in text or b"\t\n" in text or b" \r\n" in text or b"\t\r\n" in text:
        text = _QP_TRAILING_WSP.sub(b"", text)
    if b"=" in text:
        text = _QP_SOFT_BREAK.sub(b"", text)
        if _QP_BAD_ESCAPE.search(text) is not None:
            raise BinaryDecodeError("invalid quoted-printable data")
    if text.count(b"\n") != text.count(b"\r\n"):
        text = _ANY_NEWLINE.sub(b"\r\n", text)
    if b"=" not in text:
        return text
    return binascii.a2b_qp(text)


def decode_base64(body: bytes) -> bytes:
    """Strict base64: whitespace ignored; anything else outside the alphabet, data after the
    padding or a truncated final group is an error (as in Dovecot)."""
    cleaned = body.translate(None, b" \t\r\n")
    try:
        return binascii.a2b_base64(cleaned, strict_mode=True)
    except (binascii.Error, ValueError):
        raise BinaryDecodeError("invalid base64 data") from None


def binary_cte(part: Part) -> bytes | None:
    """The transfer encoding BINARY undoes, as Dovecot's binary code reads it: the last
    Content-Transfer-Encoding field wins (MIME or not); a folded field, or a value that is not
    one token (comments aside), is unknown (None)."""
    cte: bytes | None = b"7bit"
    data = part.data
    for h in part.headers:
        if h.name.lower() != b"content-transfer-encoding":
            continue
        value = h.value(data)
        cte = None if b"\n" in value else parse_transfer_encoding(c_string(value))
        if cte is not None:
            cte = cte.lower()
    return cte


def transfer_decode(part: Part) -> bytes:
    """The body with its Content-Transfer-Encoding undone (BINARY, RFC 3516)."""
    cte = binary_cte(part)
    body = part.body_bytes
    if cte in (b"7bit", b"8bit", b"binary"):
        return body
    if cte == b"base64":
        return decode_base64(body)
    if cte == b"quoted-printable":
        return decode_qp(body)
    raise UnknownCte("unknown Content-Transfer-Encoding")
