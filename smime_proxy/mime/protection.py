"""Header protection as a reader meets it: which header fields a signed or encrypted entity
protects, and the one ordinary message a client is shown from it (issue 13).

Three forms are read:
- RFC 9788 Injected Headers: the entity's Content-Type has an `hp` parameter ("clear" or
  "cipher"); its own header holds the protected fields, HP-Outer fields (what the sender
  left outside) aside. A part marked `hp-legacy-display="1"` starts with a Legacy Display
  Element (RFC 9788 2.3), decoration for readers that do not know header protection: it
  is removed.
- RFC 8551 3.1 wrapping: the entity is a message/rfc822; the wrapped message's header holds
  the protected fields, its body is the content.
- None: the stored message's fields are shown (any the entity carries replacing them).

When there are protected fields, the outer user-facing fields are not shown at all, only
the protected ones (RFC 9788 4.2: an outer field the sender did not protect is not to be
believed); outer fields of the transport (Received, Return-Path, Delivered-To, ...) stay.

May import: mime, stdlib.
"""

from __future__ import annotations

import base64
import binascii
import quopri
import re
from dataclasses import dataclass
from typing import Final, Literal

from smime_proxy.mime.entity import Entity, HeaderField, parse_entity
from smime_proxy.mime.identity import USER_FACING_FIELDS
from smime_proxy.mime.tree import parse as parse_tree

Form = Literal["injected", "wrapped", "none"]
HP_OUTER: Final = "hp-outer"
_HP_PARAM = re.compile(rb';\s*hp\s*=\s*("(?:clear|cipher)"|clear|cipher)(?=\s*(?:;|$))',
                       re.IGNORECASE)
_LDE_MARKER = re.compile(rb"hp-legacy-display", re.IGNORECASE)  # no lowered copy
_LDE_HTML = re.compile(rb'<div\s+class\s*=\s*"header-protection-legacy-display"[^>]*>.*?</div>',
                       re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class Protected:
    """What a signed or encrypted entity gives a reader."""

    form: Form
    fields: tuple[HeaderField, ...]  # the protected fields (empty when form is "none")
    content: Entity  # the entity to show: its Content-* fields and body


def protected_fields(entity: bytes) -> Protected:
    """The protection form, protected fields and content of a signed or decrypted entity."""
    parsed = parse_entity(entity)
    mime_type, params = parsed.content_type()
    if mime_type == "message/rfc822":
        inner = parse_entity(parsed.body)
        return Protected("wrapped", tuple(inner.other_fields()), inner)
    if params.get("hp", "").lower() in ("clear", "cipher"):
        fields = tuple(f for f in parsed.other_fields() if f.name != HP_OUTER)
        return Protected("injected", fields, parsed)
    return Protected("none", (), parsed)


STORED_COPY_TYPE: Final = b'Content-Type: message/rfc822; x-smime-proxy="stored-copy"\r\n'


def stored_copy(entity: bytes) -> bytes | None:
    """The message inside a decrypted entity that is one of the user's own stored copies
    (`smime.seal_stored_copy`: a Sent copy, a draft), exactly as the client wrote it; None
    for any other entity. Shown verbatim: it is what the client stored."""
    if not entity.startswith(STORED_COPY_TYPE + b"\r\n"):
        return None
    return entity[len(STORED_COPY_TYPE) + 2:]


Piece = bytes | memoryview


def shown_message(outer: bytes, entity: bytes) -> bytes:
    """The message a client is shown for a signed (or decrypted) `entity` of the stored
    message whose header fields `outer` starts with: the transport fields of `outer`, the
    protected fields (or, without protection, the outer user-facing fields), then the
    entity's content, with no wrapper, hp parameter or Legacy Display Element left."""
    fields, rest = shown_parts(outer, entity)
    return b"".join([fields, *rest])


def shown_parts(outer: bytes | Entity, entity: bytes, protection: Protected | None = None
                ) -> tuple[bytes, list[Piece]]:
    """`shown_message` in two: its header fields (MIME-Version last, no Content-* field),
    and the rest (Content-* fields, the empty line, the body), whose body shares the
    entity's memory: a large message is copied once, by whoever joins the pieces.
    `outer` parsed already, when the caller has it; `protection`: `protected_fields(entity)`,
    when the caller has it."""
    if protection is None:
        protection = protected_fields(entity)
    header = _header_fields(outer if isinstance(outer, Entity) else parse_entity(outer),
                            protection)
    fields = b"".join([*header, b"MIME-Version: 1.0\r\n"])
    content = protection.content
    content_fields = [f.line() for f in content.content_fields()
                      if f.name != "mime-version"]
    body = memoryview(content.data)[content.body_start:]
    if protection.form != "injected":
        return fields, [*content_fields, b"\r\n", body]
    content_fields = [_HP_PARAM.sub(b"", f) if f.lower().startswith(b"content-type") else f
                      for f in content_fields]
    if _LDE_MARKER.search(content.data) is None:
        return fields, [*content_fields, b"\r\n", body]
    return fields, [without_legacy_display(b"".join([*content_fields, b"\r\n", body]))]


def with_protected_fields(shown: bytes, entity: bytes, protection: Protected | None = None
                          ) -> bytes:
    """`shown` (a signed message kept whole for the client to verify) with its header fields
    replaced as in `shown_message`; the signed entity itself is not touched."""
    if protection is None:
        protection = protected_fields(entity)
    if protection.form == "none":
        return shown
    parsed = parse_entity(shown)
    header = _header_fields(parsed, protection)
    content = [f.line() for f in parsed.content_fields()]
    return b"".join([*header, *content]) + shown[parsed.header_end:]


def _header_fields(outer: Entity, protection: Protected) -> list[bytes]:
    if protection.form == "none":
        # no protection scheme: fields the entity carries anyway replace the outer ones
        inner = protection.content.other_fields()
        names = {f.name for f in inner}
        return [*(f.line() for f in outer.other_fields() if f.name not in names),
                *(f.line() for f in inner)]
    names = {f.name for f in protection.fields}
    kept = [f.line() for f in outer.other_fields()
            if f.name not in names and f.name not in USER_FACING_FIELDS]
    return [*kept, *(f.line() for f in protection.fields)]


def without_legacy_display(entity: bytes) -> bytes:
    """The entity with every Legacy Display Element removed (RFC 9788 2.3): in a text/plain
    part marked hp-legacy-display="1", the lines up to the first empty one; in such a
    text/html part, the element of class header-protection-legacy-display."""
    if _LDE_MARKER.search(entity) is None:
        return entity
    root = parse_tree(entity)
    edits: list[tuple[int, int, bytes]] = []
    for part in root.walk():
        if part.children or (part.param("hp-legacy-display") or b"").strip() != b"1":
            continue
        kind = part.content_type()[:2]
        if kind not in ((b"text", b"plain"), (b"text", b"html")):
            continue
        replaced = _body_without_display(part.body_bytes,
                                         (part.header(b"content-transfer-encoding") or b"7bit"),
                                         html=kind[1] == b"html")
        if replaced is not None:
            edits.append((part.body_start, part.end, replaced))
    for start, end, replaced in sorted(edits, reverse=True):
        entity = entity[:start] + replaced + entity[end:]
    return entity


def _body_without_display(body: bytes, encoding: bytes, *, html: bool) -> bytes | None:
    """The part body without its Legacy Display Element, in the part's own encoding; None
    when it cannot be decoded (then it is left as it is)."""
    cte = encoding.strip().lower()
    try:
        if cte == b"base64":
            text = base64.b64decode(body, validate=False)
        elif cte == b"quoted-printable":
            text = quopri.decodestring(body)
        else:
            text = body
    except (binascii.Error, ValueError):
        return None
    if html:
        text = _LDE_HTML.sub(b"", text, count=1)
    else:
        match = re.search(rb"\r?\n\r?\n", text)
        if match is None:
            return None
        text = text[match.end():]
    if cte == b"base64":
        encoded = base64.encodebytes(text).replace(b"\n", b"\r\n")
    elif cte == b"quoted-printable":
        encoded = quopri.encodestring(text).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    else:
        encoded = text
    return encoded
