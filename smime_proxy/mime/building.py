"""Writing the MIME entities of S/MIME messages (RFC 8551): the entity to sign (8-bit parts
re-encoded so relays cannot alter them), the outer fields kept around it, the
application/pkcs7-mime header, base64 in 76-character CRLF lines (built in blocks, without
joining large messages first) and fresh boundaries.

May import: mime, stdlib.
"""

from __future__ import annotations

import base64
import email
import email.policy
import io
import quopri
import secrets
from collections.abc import Sequence
from email.generator import BytesGenerator

from smime_proxy.mime.entity import MAX_HEADER_BYTES, Entity, canonical_crlf, parse_entity


def merge_outer_fields(outer: Entity, inner_parts: tuple[bytes, ...]) -> bytes:
    """Outer header fields the inner entity does not repeat, then the inner entity."""
    head = inner_parts[0]
    if len(head) < MAX_HEADER_BYTES and len(inner_parts) > 1:
        head = b"".join(inner_parts)  # small message: the header may straddle the pieces
    inner_names = {f.name for f in parse_entity(head).fields}
    kept = [f.raw for f in outer.other_fields() if f.name not in inner_names]
    if kept and not kept[-1].endswith(b"\n"):
        kept[-1] += b"\r\n"
    if "mime-version" not in inner_names:
        kept.append(b"MIME-Version: 1.0\r\n")
    return b"".join([*kept, *inner_parts])


def outer_header(outer: Entity) -> bytes:
    fields = [f.raw for f in outer.other_fields() if f.name != "bcc"]
    if fields and not fields[-1].endswith(b"\n"):
        fields[-1] += b"\r\n"
    return b"".join(fields)


def entity_pieces(outer: Entity) -> list[bytes | memoryview]:
    """The MIME entity of a message: its Content-* fields and body (RFC 8551 3.1), in
    pieces that share the message's memory."""
    content = [f.raw for f in outer.content_fields() if f.name != "mime-version"]
    if not content:
        content = [b"Content-Type: text/plain; charset=us-ascii\r\n"]
    if not content[-1].endswith(b"\n"):
        content[-1] += b"\r\n"
    return [b"".join(content) + b"\r\n", outer.body_view()]


def entity_bytes(outer: Entity) -> bytes:
    return b"".join(entity_pieces(outer))


def seven_bit_pieces(outer: Entity) -> list[bytes | memoryview]:
    """The entity to sign, in pieces sharing the message's memory when it is all 7-bit."""
    if outer.data.isascii() and b"\x00" not in outer.data:
        return entity_pieces(outer)
    return [seven_bit_entity(outer)]


def seven_bit_entity(outer: Entity) -> bytes:
    """The entity to sign: 8-bit or binary parts re-encoded so relays cannot alter them."""
    entity = entity_bytes(outer)
    if entity.isascii() and b"\x00" not in entity:
        return entity
    parsed = email.message_from_bytes(entity, policy=email.policy.compat32)
    for part in parsed.walk():
        if part.is_multipart():
            if part.get("Content-Transfer-Encoding", "").lower() in ("8bit", "binary"):
                del part["Content-Transfer-Encoding"]
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        if payload.isascii() and part.get("Content-Transfer-Encoding", "7bit").lower() not in (
            "8bit",
            "binary",
        ):
            continue
        del part["Content-Transfer-Encoding"]
        if part.get_content_maintype() == "text":
            part.set_payload(quopri.encodestring(canonical_crlf(payload)).decode("ascii"))
            part["Content-Transfer-Encoding"] = "quoted-printable"
        else:
            part.set_payload(base64.encodebytes(payload).decode("ascii"))
            part["Content-Transfer-Encoding"] = "base64"
    out = io.BytesIO()
    generator = BytesGenerator(out, mangle_from_=False, policy=email.policy.SMTP)
    generator.flatten(parsed)  # type: ignore[arg-type]
    return canonical_crlf(out.getvalue())


def pkcs7_mime_header(smime_type: str) -> bytes:
    return (
        b"MIME-Version: 1.0\r\n"
        + b"Content-Type: application/pkcs7-mime; smime-type="
        + smime_type.encode("ascii")
        + b'; name="smime.p7m"\r\n'
        + b"Content-Transfer-Encoding: base64\r\n"
        + b'Content-Disposition: attachment; filename="smime.p7m"\r\n'
        + b"Content-Description: S/MIME Cryptographic Message\r\n\r\n"
    )


def base64_lines(data: bytes | memoryview) -> bytes:
    """Base64 in 76-character CRLF lines (RFC 2045 6.8).

    One C-level encode, then one join of slices: encodebytes() loops in Python per line.
    """
    encoded = base64.b64encode(data)
    lines = [encoded[i : i + 76] for i in range(0, len(encoded), 76)]
    return b"\r\n".join(lines) + b"\r\n" if lines else b""


_B64_BLOCK = 57 * 4096  # 4096 lines: blocks above the mmap threshold (memory.py), no heap holes


def base64_line_blocks(pieces: Sequence[bytes | memoryview]) -> list[bytes]:
    """Base64 CRLF lines of the concatenated pieces, as blocks of up to 1024 lines, without
    joining the pieces first (a large piece is encoded through memoryview slices)."""
    blocks: list[bytes] = []
    carry = b""
    for piece in pieces:
        view = memoryview(piece)
        if carry:
            need = (-len(carry)) % 57 or 57
            carry += bytes(view[:need])
            view = view[need:]
            if len(carry) % 57 == 0:
                blocks.append(base64_lines(carry))
                carry = b""
            if not view:
                continue
        whole = len(view) - len(view) % 57
        for start in range(0, whole, _B64_BLOCK):
            blocks.append(base64_lines(view[start : min(start + _B64_BLOCK, whole)]))
        carry = bytes(view[whole:])
    if carry:
        blocks.append(base64_lines(carry))
    return blocks


def new_boundary() -> str:
    return "----=_smime_" + secrets.token_hex(12)
