"""What a client is shown for one stored S/MIME message, and the X-SMIME-Status value that
says what it is (DESIGN decisions 3-5, 14).

`open_message` decrypts (whole-message encryption only), verifies, unwraps an opaque
signature, applies the CBC rule and writes the one status field only the proxy writes.

May import: smime, smime_forms, errors, crypto, mime, cryptography, stdlib.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

from cryptography import x509

from smime_proxy.crypto.enveloped import ContentKey
from smime_proxy.crypto.keyagent import KeyAgent
from smime_proxy.errors import KeyLocked
from smime_proxy.mime.building import base64_lines, merge_outer_fields
from smime_proxy.mime.entity import STATUS_HEADER, Entity, parse_entity, without_field
from smime_proxy.mime.identity import fields_protected
from smime_proxy.mime.protection import (
    Piece,
    protected_fields,
    shown_message,
    shown_parts,
    stored_copy,
    with_protected_fields,
)
from smime_proxy.mime.transfer import transfer_decode
from smime_proxy.mime.tree import parse as parse_tree
from smime_proxy.smime import SignatureReport, SignerReport, decrypt_message, inspect_signature
from smime_proxy.smime_forms import as_entity, is_encrypted, is_signed

Unauthenticated = Literal["withhold", "text"]
Signatures = Literal["keep", "strip"]
_TEXT_FIELDS = ("from", "sender", "reply-to", "to", "cc", "subject", "date", "message-id")


@dataclass(frozen=True)
class OpenedMessage:
    """What a client is shown for one stored message (DESIGN decisions 3-5)."""

    content: bytes = field(repr=False)  # X-SMIME-Status first; incoming copies removed
    status: str  # the X-SMIME-Status value
    encrypted: bool
    cipher: str | None
    signature: SignatureReport | None


def open_message(
    message: bytes | Entity,
    agent: KeyAgent | ContentKey | None,
    trust_roots: Sequence[x509.Certificate],
    *,
    now: datetime,
    unauthenticated: Unauthenticated = "withhold",
    signatures: Signatures = "strip",
    revocation: Callable[[SignerReport], str] | None = None,
    revocation_hard_fail: bool = False,
    encrypted: bool | None = None,
) -> OpenedMessage:
    """Decrypt (whole-message encryption only) and verify, for display to a client.

    Raises KeyLocked when the message is encrypted and no agent is given, DecryptionFailed
    (or a subclass) when it cannot be decrypted. An opaque signature is unwrapped so that any
    client can read it. A valid multipart/signed layer is removed after verification
    (`signatures="strip"`: the client is shown an ordinary message and the proxy's status)
    or kept for the client to verify too (`"keep"`); any other signature is shown as it is.
    Header protection (`mime.protection`: RFC 9788 injected headers, RFC 8551 wrapping) is
    resolved into one ordinary message whose header fields are the protected ones. Every
    incoming X-SMIME-Status field is removed and exactly one, written here, is put first.

    No CBC gadgets (DESIGN decision 14): content decrypted without authentication (AES-CBC,
    3DES) is released only under a valid signature, which a gadget breaks. Otherwise
    `unauthenticated` decides: "withhold" shows the stored S/MIME message as it is
    (`content=withheld`), "text" shows only the text/plain parts as one plain text message,
    with nothing a client would load or run (`content=text-only`).

    `revocation` (given when the admin turned revocation checking on) says of a signer of
    an otherwise valid signature "good", "revoked" or "unknown": a revoked signer makes the
    signature not valid (`signature=revoked`), so does an unknown one under
    `revocation_hard_fail` (`signature=revocation-unknown`); otherwise the status adds
    `revocation=good|unknown`.

    `encrypted`: what `smime_forms.is_encrypted` said of this message, when the caller asked
    already (it is asked here otherwise).
    """
    cipher: str | None = None
    outer = as_entity(message)  # each question below is asked of the one parsed entity
    message = outer.data
    content = message
    authenticated = True
    entity_start: int | None = None  # of the decrypted entity in `content`
    if is_encrypted(outer) if encrypted is None else encrypted:
        if agent is None:
            raise KeyLocked("the message is encrypted and the Secure Mail key is locked")
        decrypted = decrypt_message(outer, agent)
        content, cipher = decrypted.content, decrypted.cipher
        authenticated = decrypted.authenticated
        entity_start = decrypted.entity_start
        del decrypted  # `content` is the one reference (a 25 MB message: see below)
    del outer
    report: SignatureReport | None = None
    signed = as_entity(content)
    if is_signed(signed):
        report = inspect_signature(signed, trust_roots, now=now)
        if report.opaque and report.content is not None and report.signers:
            content = merge_outer_fields(signed, (report.content,))
    # the parsed `content`, for the shown message's header below; nor does this keep a
    # replaced `content`
    parsed: Entity | None = signed if signed.data is content else None
    del signed
    revoked: str | None = None
    if report is not None and report.valid and revocation is not None:
        words = {revocation(signer) for signer in report.signers}
        revoked = next((w for w in ("revoked", "unknown") if w in words), "good")
        if revoked == "revoked" or (revoked == "unknown" and revocation_hard_fail):
            report = replace(report, valid=False, reason=(
                "signer certificate revoked" if revoked == "revoked"
                else "signer certificate's revocation status unknown"))
    shown = without_field(content, STATUS_HEADER)
    if shown is not content:
        parsed = None
    valid = report is not None and report.valid
    protected = None
    stripped: list[Piece] | None = None  # the shown message in pieces, joined once below
    if report is not None and valid and report.content is not None:
        protection = (report.protection if report.protection is not None  # read once
                      else protected_fields(report.content))
        if signatures == "strip" or report.opaque:
            fields, rest = shown_parts(shown if parsed is None else parsed, report.content,
                                       protection)
            protected = fields_protected(fields + b"\r\n", protection.content)
            stripped = [fields, *rest]
        else:
            shown = with_protected_fields(shown, report.content, protection)
            protected = fields_protected(shown, protection.content)
    elif report is None and entity_start is not None and authenticated:
        # encrypted, not signed: the fields it carries inside are shown (authenticated by
        # no one, as the status says: signature=none); the user's own stored copy exactly
        entity = content[entity_start:]
        copy = stored_copy(entity)
        shown = (without_field(copy, STATUS_HEADER) if copy is not None
                 else shown_message(without_field(message, STATUS_HEADER), entity))
    withheld: Unauthenticated | None = None
    if not authenticated and valid and stripped is None:
        shown = only_signed_parts(shown)  # a gadget in the preamble or epilogue is dropped
    elif not authenticated and not valid:
        # CBC without a valid signature: an EFAIL gadget could have rewritten it
        withheld = unauthenticated
        shown = (without_field(message, STATUS_HEADER) if withheld == "withhold"
                 else text_only(shown))
    status = _status_value(cipher, report, protected, withheld, revoked)
    status_line = f"{STATUS_HEADER}: {status}\r\n".encode("ascii")
    if stripped is not None:
        # the decrypted message is not what is shown (its signed part is): let it go
        # before the one copy that is made of what is shown
        del content
        shown = b""
        parsed = None
    return OpenedMessage(
        b"".join([status_line, *(stripped if stripped is not None else [shown])]),
        status,
        cipher is not None,
        cipher,
        report,
    )


def only_signed_parts(message: bytes) -> bytes:
    """A verified multipart/signed message as nothing but what was verified: the signed
    part, and a signature part written here around the signature's bytes as they were read
    for verification. Preamble, epilogue and anything else in the signature part are dropped:
    after a CBC decryption a gadget could sit there, covered by no signature."""
    root = parse_tree(message)
    boundary = root.boundary
    if boundary is None or len(root.children) != 2:
        return message
    signed, signature = root.children
    try:
        der = binascii.a2b_base64(signature.body_bytes)  # as the verification read it
    except binascii.Error:
        return message  # not reached: the signature verified from these bytes
    delimiter = b"--" + boundary
    return b"".join([message[: root.body_start], delimiter, b"\r\n", signed.raw_bytes,
                     b"\r\n", delimiter, b"\r\n", _SIGNATURE_PART_HEADER, base64_lines(der),
                     delimiter, b"--\r\n"])


_SIGNATURE_PART_HEADER = (b'Content-Type: application/pkcs7-signature; name="smime.p7s"\r\n'
                          b"Content-Transfer-Encoding: base64\r\n"
                          b'Content-Disposition: attachment; filename="smime.p7s"\r\n\r\n')


def text_only(message: bytes) -> bytes:
    """The message as one text/plain entity: its user-facing header fields, then the decoded
    text of its text/plain parts (no HTML, no attachments, no other active content)."""
    root = parse_tree(message)
    texts: list[str] = []
    for part in root.walk():
        if part.children or part.content_type()[:2] != (b"text", b"plain"):
            continue
        try:
            body = transfer_decode(part)
        except Exception:  # noqa: S112 - an undecodable part is left out
            continue
        charset = (part.param("charset") or b"utf-8").decode("ascii", "replace")
        try:
            texts.append(body.decode(charset, "replace"))
        except LookupError:
            texts.append(body.decode("utf-8", "replace"))
    kept = [f.raw for f in parse_entity(message).fields if f.name in _TEXT_FIELDS]
    if kept and not kept[-1].endswith(b"\n"):
        kept[-1] += b"\r\n"
    text = "\r\n\r\n".join(texts) or "(this message has no plain text part)\r\n"
    return b"".join([*kept, b"MIME-Version: 1.0\r\n",
                     b"Content-Type: text/plain; charset=utf-8\r\n",
                     b"Content-Transfer-Encoding: base64\r\n\r\n",
                     base64_lines(text.encode("utf-8"))])


def _status_value(cipher: str | None, report: SignatureReport | None,
                  protected: bool | None = None,
                  withheld: Unauthenticated | None = None,
                  revoked: str | None = None) -> str:
    """`encrypted=yes|no; cipher=<alg>; signature=valid|invalid|untrusted|mismatch|revoked|
    revocation-unknown|none; signer=<addr>; revocation=good|unknown;
    headers=protected|unprotected; content=withheld|text-only` (DESIGN decision 5; `headers`
    only with a valid signature, `revocation` only when checked and the signature still
    valid, `content` only for unauthenticated decryption that is not shown whole). Values
    come from fixed words and addresses that certificate_addresses() reduced to plain
    addr-specs: no CR/LF can get in."""
    parts = [f"encrypted={'yes' if cipher else 'no'}"]
    if cipher:
        parts.append(f"cipher={cipher}")
    if withheld is not None:
        content = "withheld" if withheld == "withhold" else "text-only"
    if report is None or not report.signers:
        parts.append("signature=none" if report is None else "signature=invalid")
        if withheld is not None:
            parts.append(f"content={content}")
        return "; ".join(parts)
    if report.valid:
        verdict = "valid"
    elif revoked in ("revoked", "unknown"):
        verdict = "revoked" if revoked == "revoked" else "revocation-unknown"
    elif not all(s.signature_valid for s in report.signers):
        verdict = "invalid"
    elif not all(s.chain_trusted for s in report.signers):
        verdict = "untrusted"
    else:
        verdict = "mismatch"
    parts.append(f"signature={verdict}")
    signer = (
        report.from_address
        if report.valid
        else next((s.email[0] for s in report.signers if s.email), None)
    )
    if signer and _SAFE_ADDRESS.fullmatch(signer):
        parts.append(f"signer={signer}")
    if report.valid and revoked is not None:
        parts.append(f"revocation={revoked}")
    if protected is not None:
        parts.append(f"headers={'protected' if protected else 'unprotected'}")
    if withheld is not None:
        parts.append(f"content={content}")
    return "; ".join(parts)


_SAFE_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~@-]{3,254}")
