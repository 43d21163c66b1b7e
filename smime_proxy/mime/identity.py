"""Who a message says it is from, read strictly, and which of the header fields a reader
sees a signature covers. From: the single From address, and a Sender that
names no one else (DESIGN decision 4). Python's strict header parser (email.policy.default)
is used, and any defect, or anything but exactly one well-formed mailbox, is refused: the
CVE-2023-27043 class of lenient-parser bugs.

May import: mime, stdlib.
"""

from __future__ import annotations

import email
import email.policy
import functools
import re
from typing import Any

from smime_proxy.mime.entity import Entity, parse_entity

DISPLAY_NAME_MISMATCH = ("the From field shows another address (in its display name or a "
                         "comment) than the one it is from")
_ADDRESS_LIKE = re.compile(r"[^\s<>()\[\]\"',;:@]+@[^\s<>()\[\]\"',;:@]+")


def single_from(outer: Entity) -> tuple[str | None, str | None]:
    """(the single From address, or None; a problem with From/Sender, or None)."""
    values = outer.get_all("from")
    if len(values) != 1:
        return None, "the message must have exactly one From field"
    address, problem = one_address(values[0])
    if problem:
        return address, problem
    sender = outer.get_all("sender")
    if sender:
        sender_address, sender_problem = one_address(sender[0])
        if sender_problem or len(sender) > 1 or sender_address != address:
            return address, "the Sender field names another address than From"
    return address, None


@functools.lru_cache(maxsize=1024)
def one_address(value: bytes) -> tuple[str | None, str | None]:
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return None, "the From field is not valid UTF-8"
    if "\r" in text or "\n" in text:
        return None, "the From field holds line breaks"
    # email.policy.default parses strictly and records defects (CVE-2023-27043 class bugs in
    # the legacy parser): any defect or anything but exactly one mailbox is refused.
    header = email.message_from_string(f"From: {text}\n\n", policy=email.policy.default)
    field = header["From"]
    addresses: tuple[Any, ...] = tuple(getattr(field, "addresses", ()))
    defects: tuple[Any, ...] = tuple(getattr(field, "defects", ()))
    if len(addresses) != 1 or defects:
        return None, "the From field must hold exactly one well-formed address"
    address = addresses[0]
    if not address.username or not address.domain:
        return None, "the From field must hold exactly one well-formed address"
    result = f"{address.username}@{address.domain}".lower()
    # a display name, encoded word or comment that itself looks like another address
    # ("alice@example.test" <carol@example.test>) would be read by a person as the sender
    shown = f"{text} {field}"
    others = {m.lower().rstrip(".") for m in _ADDRESS_LIKE.findall(shown)} - {result}
    if others:
        return result, DISPLAY_NAME_MISMATCH
    return result, None


USER_FACING_FIELDS = ("from", "sender", "reply-to", "to", "cc", "subject", "date")


def fields_protected(shown: bytes, signed_entity: Entity) -> bool:
    """Whether every user-facing header field the client is shown (From, To, Cc, Subject,
    Date, ...) is covered by the signature with the same value: present in the header of
    `signed_entity`, the signed entity itself (opaque content, RFC 9788 injected headers)
    or the message it wraps (RFC 8551 3.1): `mime.protection.Protected.content`. A plain
    multipart/signed signs the body only."""
    shown_fields = parse_entity(shown).fields
    for name in USER_FACING_FIELDS:
        values = [f.value() for f in shown_fields if f.name == name]
        if values and values != [f.value() for f in signed_entity.fields if f.name == name]:
            return False
    return True
