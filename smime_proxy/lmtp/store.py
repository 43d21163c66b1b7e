"""Store Encrypted: what the LMTP filter stores for one recipient (pure; no I/O).

A plain message to a recipient who wants it (the policy's `store_encrypted`, or the user's
own switch on the Secure Mail page) and has a certificate is sealed to that certificate as
the IMAP front keeps a Sent copy (`smime.seal_stored_copy`: AES-256-GCM, the whole message
wrapped byte for byte, only the listing fields outside), so that it reads back through the
IMAP front exactly as it arrived. Mail that is already S/MIME or PGP/MIME (signed or
encrypted), and recipients without a certificate, are stored unchanged. No unlock is needed:
only the public key is used.

May import: errors, mime, smime, cryptography, stdlib.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from smime_proxy.errors import InputError
from smime_proxy.mime.entity import is_pkcs7_mime, parse_entity
from smime_proxy.smime import seal_stored_copy


@dataclass(frozen=True)
class StoredForm:
    message: bytes
    encrypted: bool
    reason: str  # fixed words, for the log


def stored_form(message: bytes, certificate: x509.Certificate | None, *,
                wanted: bool) -> StoredForm:
    """What to deliver to the store for one recipient."""
    if not wanted:
        return StoredForm(message, False, "store_encrypted is off")
    if certificate is None:
        return StoredForm(message, False, "the recipient has no certificate")
    try:
        mime_type, params = parse_entity(message).content_type()
    except InputError:
        # a message the parser refuses is kept as it came: refusing it would bounce mail
        # the store itself accepts (the log says so)
        return StoredForm(message, False, "not a readable message")
    if mime_type in ("multipart/signed", "multipart/encrypted") or is_pkcs7_mime(mime_type,
                                                                                 params):
        return StoredForm(message, False, "already signed or encrypted")
    try:
        return StoredForm(seal_stored_copy(message, certificate), True, "stored encrypted")
    except InputError:
        return StoredForm(message, False, "not a readable message")
