"""IMAP data values as Python objects, and their rendering to wire bytes.

The value model (RFC 9051 section 4): `None` is NIL, `int` a number, `Atom` an atom (rendered
verbatim), `bytes` a string (rendered quoted when it can be, else as a literal), and a `list` or
`tuple` a parenthesised list. `Literal` forces literal form, `Binary` the `~{n}` form of
RFC 3516. Imports: stdlib and `smime_proxy.errors` only.

`render_astring` (astring: atom form when the bytes allow it) was added for the parsers and
renderers of commands, which also live in this package.

`render_structure` is rendered by the native core when it is built (native/src/render.rs; the
code here is its reference and renders what it does not know).

May import: errors, native, stdlib.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TypeAlias

from smime_proxy.errors import LocalProtocolError
from smime_proxy.native import native


class Atom(str):
    """An atom or other verbatim token (flags, NIL-less keywords): rendered as is."""

    __slots__ = ()


class Literal(bytes):
    """A string that must be sent as a synchronising-form literal `{n}CRLF...`."""

    __slots__ = ()


class Binary(bytes):
    """A literal8 `~{n}CRLF...` (RFC 3516 / RFC 9051 BINARY)."""

    __slots__ = ()


Value: TypeAlias = int | Atom | bytes | Sequence["Value"] | None

# ASTRING-CHAR = ATOM-CHAR / resp-specials (RFC 9051 section 9): any CHAR except "(" ")" "{"
# SP CTL "%" "*" DQUOTE "\\".
_ASTRING_CHARS = frozenset(range(0x21, 0x7F)) - set(b'(){%*"\\')

# RFC 9051 quoted = DQUOTE *QUOTED-CHAR DQUOTE; QUOTED-CHAR excludes CR, LF, NUL and 8-bit.
_NOT_QUOTABLE = re.compile(rb"[\x00\x0a\x0d\x80-\xff]")


def render(value: Value) -> bytes:
    """Wire bytes for one value."""
    out: list[bytes] = []
    _render_into(value, out)
    return b"".join(out)


def _render_into(value: Value, out: list[bytes]) -> None:
    kind = type(value)  # the common exact types first: structures are rendered a lot
    if kind is bytes:
        out.append(render_string(value))  # type: ignore[arg-type]
        return
    if kind is tuple or kind is list:
        out.append(b"(")
        for index, item in enumerate(value):  # type: ignore[arg-type]
            if index:
                out.append(b" ")
            _render_into(item, out)
        out.append(b")")
        return
    if value is None:
        out.append(b"NIL")
    elif isinstance(value, bool):
        raise LocalProtocolError("a bool is not an IMAP value")
    elif isinstance(value, int):
        if value < 0:
            raise LocalProtocolError("IMAP numbers are non-negative")
        out.append(str(value).encode("ascii"))
    elif isinstance(value, Atom):
        out.append(value.encode("ascii"))
    elif isinstance(value, Binary):
        out.append(b"~{%d}\r\n" % len(value))
        out.append(bytes(value))
    elif isinstance(value, Literal):
        out.append(b"{%d}\r\n" % len(value))
        out.append(bytes(value))
    elif isinstance(value, bytes):
        out.append(render_string(value))
    elif isinstance(value, (list, tuple)):
        out.append(b"(")
        for index, item in enumerate(value):
            if index:
                out.append(b" ")
            _render_into(item, out)
        out.append(b")")
    else:
        raise LocalProtocolError(f"not an IMAP value: {type(value).__name__}")


def render_string(data: bytes) -> bytes:
    """A string as a quoted string when every byte allows it (and it is short), else a literal."""
    if len(data) <= 1024 and _NOT_QUOTABLE.search(data) is None:
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(data) + data


def render_structure(value: Value) -> bytes:
    """Wire bytes of BODYSTRUCTURE / BODY / ENVELOPE values: like `render`, except that the
    leading list elements of a list follow each other without a space, as the grammar has it
    for the parts of a multipart (`1*body SP media-subtype`) and for address lists
    (`"(" 1*address ")"`), RFC 9051 section 9; Dovecot writes them so."""
    if native is not None:
        rendered: bytes | None = native.render_structure(value)
        if rendered is not None:
            return rendered
    return render_structure_python(value)


def render_structure_python(value: Value) -> bytes:
    """`render_structure` by this module's code alone (the native renderer's reference)."""
    out: list[bytes] = []
    _structure_into(value, out)
    return b"".join(out)


def _structure_into(value: Value, out: list[bytes]) -> None:
    kind = type(value)
    if kind is not list and kind is not tuple:
        if kind is bytes:
            out.append(render_string(value))  # type: ignore[arg-type]
        elif value is None:
            out.append(b"NIL")
        else:
            _render_into(value, out)
        return
    out.append(b"(")
    leading = True  # leading lists follow each other without a space
    for index, item in enumerate(value):  # type: ignore[arg-type]
        nested = type(item) is list or type(item) is tuple
        if index and not (leading and nested):
            out.append(b" ")
        if not nested:
            leading = False
        _structure_into(item, out)
    out.append(b")")


def render_nstring(data: bytes | None) -> bytes:
    return b"NIL" if data is None else render_string(data)


def render_astring(data: bytes) -> bytes:
    """An astring: the bytes themselves when they form an atom (1*ASTRING-CHAR), else a string.

    The atom `NIL` is sent quoted, so that it can never be read back as nil.
    """
    if data and data.upper() != b"NIL" and all(byte in _ASTRING_CHARS for byte in data):
        return data
    return render_string(data)
