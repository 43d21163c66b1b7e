"""Stored messages in their two forms (pure; no I/O): what the Store Encrypted filter stores
for one recipient (`stored_form`), and what a stored encrypted message is replaced by when
the user decrypts it (`decrypted_form`).

A plain message to a recipient who wants it (the policy's `store_encrypted`, or the user's
own switch on the Secure Mail page) and has a certificate is sealed to that certificate as
the IMAP front keeps a Sent copy (`smime.seal_stored_copy`: AES-256-GCM, the whole message
wrapped byte for byte, only the listing fields outside), so that it reads back through the
IMAP front exactly as it arrived. Mail that is already S/MIME or PGP/MIME (signed or
encrypted), and recipients without a certificate, are stored unchanged. No unlock is needed:
only the public key is used.

Decrypting keeps what the IMAP front would show whole: the message decrypted (its own
header fields first, a sealed copy unwrapped to exactly what was sealed), a signature kept
inside for the IMAP front to verify again. Content decrypted without authentication
(AES-CBC, 3DES) that is not validly signed is refused: stored in clear, an EFAIL gadget in
it would be shown as the user's mail (DESIGN decision 14).

May import: display, errors, mime, smime, smime_forms, crypto, cryptography, stdlib.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from smime_proxy.crypto.keyagent import KeyAgent
from smime_proxy.display import open_message
from smime_proxy.errors import InputError
from smime_proxy.mime.entity import is_pkcs7_mime, parse_entity
from smime_proxy.smime import seal_stored_copy
from smime_proxy.smime_forms import is_encrypted


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


class NotDecryptable(InputError):
    """The message is not one this operation may decrypt (the reason says why)."""


def decrypted_form(message: bytes, agent: KeyAgent, trust_roots: Sequence[x509.Certificate],
                   now: datetime) -> bytes:
    """The plaintext to store in place of an encrypted `message`. Raises NotDecryptable
    (not encrypted; unauthenticated and not validly signed), DecryptionFailed."""
    if not is_encrypted(message):
        raise NotDecryptable("not an encrypted message")
    opened = open_message(message, agent, trust_roots, now=now, signatures="keep")
    if "content=" in opened.status:
        raise NotDecryptable("decrypted without authentication and not validly signed: "
                             "kept encrypted")
    # the first line is the proxy's X-SMIME-Status: what is stored is the message itself
    return opened.content.split(b"\r\n", 1)[1]
