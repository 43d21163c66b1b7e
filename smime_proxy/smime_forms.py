"""Which whole-message S/MIME form a message has, read from its top-level entity.

Encrypted (application/pkcs7-mime holding EnvelopedData or AuthEnvelopedData), signed
(multipart/signed, or application/pkcs7-mime holding SignedData), and the CMS body of such
an entity. Only the whole message counts (DESIGN decision 3): an S/MIME part nested in a
larger message is not this message's form, and the reasons say so.

May import: errors, crypto/, mime/, native.
"""

from __future__ import annotations

import binascii

from smime_proxy.crypto import oids
from smime_proxy.crypto.enveloped import NATIVE_UP_TO, content_type_of
from smime_proxy.errors import MalformedMessage, NotEncrypted
from smime_proxy.mime.entity import Entity, is_pkcs7_mime, parse_entity
from smime_proxy.native import native


def as_entity(message: bytes | Entity) -> Entity:
    """The message's top-level entity: a caller asking several questions of one message
    parses it once and passes the entity."""
    return message if isinstance(message, Entity) else parse_entity(message)


def is_encrypted(message: bytes | Entity) -> bool:
    """Whether the message as a whole is S/MIME encrypted (EnvelopedData/AuthEnvelopedData).

    Only the head of the body is decoded: the content type is the first element of the
    ContentInfo (RFC 5652 3), and decoding the whole body for it cost as much as parsing
    the message (decryption decodes it anyway)."""
    outer = as_entity(message)
    mime_type, params = outer.content_type()
    if not is_pkcs7_mime(mime_type, params):
        return False
    try:
        return content_type_of(_body_head(outer)) in (oids.ENVELOPED_DATA,
                                                      oids.AUTH_ENVELOPED_DATA)
    except MalformedMessage:
        return False


_HEAD_CHARS = 128  # base64 characters: 96 bytes, a ContentInfo's tag, length and OID
_BASE64_SPACE = b" \t\r\n"


def _body_head(entity: Entity) -> bytes:
    """The first bytes of the decoded body (all of it when the head cannot be cut)."""
    encoding = (entity.get("content-transfer-encoding") or b"7bit").strip().lower()
    if encoding == b"base64":
        head = bytes(entity.body_view()[: _HEAD_CHARS * 2]).translate(None, _BASE64_SPACE)
        head = head[: min(len(head), _HEAD_CHARS) // 4 * 4]
        try:
            return binascii.a2b_base64(head, strict_mode=True)
        except binascii.Error:
            pass  # padding or other characters in the head: the whole body decides
    return decode_body(entity)


def is_signed(message: bytes | Entity) -> bool:
    """Whether the message as a whole is an S/MIME signature (multipart/signed or opaque)."""
    outer = as_entity(message)
    mime_type, _ = outer.content_type()
    if mime_type == "multipart/signed":
        return True
    cms_der = whole_message_cms(outer)
    if cms_der is None:
        return False
    try:
        return content_type_of(cms_der) == oids.SIGNED_DATA
    except MalformedMessage:
        return False


def enveloped_der(outer: Entity) -> bytes:
    """The EnvelopedData or AuthEnvelopedData DER of a whole-message encryption; raises
    NotEncrypted for anything else."""
    cms_der = whole_message_cms(outer)
    if cms_der is None:
        raise NotEncrypted(not_whole_reason(outer, "encrypted"))
    if content_type_of(cms_der) not in (oids.ENVELOPED_DATA, oids.AUTH_ENVELOPED_DATA):
        raise NotEncrypted("the message is S/MIME but not encrypted")
    return cms_der


def not_whole_reason(outer: Entity, what: str) -> str:
    """Why the message is not `what` ("encrypted", "signed") as a whole, in the user's words."""
    mime_type, _ = outer.content_type()
    if mime_type.startswith("multipart/") and (
        b"application/pkcs7" in outer.body.lower()
        or b"application/x-pkcs7" in outer.body.lower()
        or b"multipart/signed" in outer.body.lower()
    ):
        return (
            f"the message is not {what} as a whole: an S/MIME part is nested inside a larger "
            "message and is not trusted"
        )
    return f"the message is not {what}"


def whole_message_cms(outer: Entity) -> bytes | None:
    """The CMS DER of a whole-message application/pkcs7-mime body, else None."""
    mime_type, params = outer.content_type()
    if not is_pkcs7_mime(mime_type, params):
        return None
    return decode_body(outer)


def decode_body(entity: Entity) -> bytes:
    """The entity's body with its Content-Transfer-Encoding undone (base64 or none)."""
    encoding = (entity.get("content-transfer-encoding") or b"7bit").strip().lower()
    if encoding == b"base64":
        # binascii's twin, 7 times as fast (native/src/base64.rs); it decodes into a buffer
        # of its own, copied once more into the bytes: a large body is left to binascii,
        # which writes into the bytes directly (peak memory)
        if native is not None and len(entity.data) - entity.body_start <= NATIVE_UP_TO:
            decoded: bytes | None = native.decode_base64(entity.data, entity.body_start)
            if decoded is not None:
                return decoded
        try:
            # non-strict a2b_base64 skips line ends and other characters outside the alphabet
            return binascii.a2b_base64(entity.body_view())
        except binascii.Error:
            raise MalformedMessage("malformed base64 in the S/MIME part") from None
    if encoding in (b"7bit", b"8bit", b"binary"):
        return entity.body
    raise MalformedMessage(f"unsupported transfer encoding {encoding.decode('ascii', 'replace')}")
