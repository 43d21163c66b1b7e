"""S/MIME recipes: the safe API over the CMS hazmat layer.

Whole messages in, whole messages out (bytes). Every outcome that is not a success raises a
narrow exception from `smime_proxy.errors`; `now` is passed in wherever validity matters.

May import: keystore, smime_forms, errors, crypto/, mime/, cryptography.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from cryptography import x509

from smime_proxy.crypto import oids
from smime_proxy.crypto.certpath import validate_signer_chain
from smime_proxy.crypto.enveloped import (
    ContentKey,
    RecipientKey,
    build_enveloped_pieces,
    content_type_of,
    open_enveloped,
    recover_content_key,
)
from smime_proxy.crypto.keyagent import KeyAgent
from smime_proxy.crypto.signed import (
    ParsedSignedData,
    SignerCheck,
    build_signed_data,
    parse_signed_data,
)
from smime_proxy.crypto.signer_info import issuer_and_serial_of, subject_key_identifier
from smime_proxy.errors import (
    ChainUntrusted,
    DecryptionFailed,
    InputError,
    MalformedMessage,
    NoRecipientCertificate,
    NotSigned,
    SignatureInvalid,
    SignerMismatch,
    SmimeProxyError,
    VerificationError,
)
from smime_proxy.keystore.certs import certificate_addresses, subject_and_issuer
from smime_proxy.mime.building import (
    base64_line_blocks,
    base64_lines,
    entity_pieces,
    merge_outer_fields,
    new_boundary,
    outer_header,
    pkcs7_mime_header,
    seven_bit_pieces,
)
from smime_proxy.mime.entity import (
    Entity,
    canonical_crlf,
    parse_entity,
    split_multipart,
)
from smime_proxy.mime.identity import single_from
from smime_proxy.mime.protection import STORED_COPY_TYPE, Protected, protected_fields
from smime_proxy.mime.tree import parse_top
from smime_proxy.smime_forms import (
    as_entity,
    decode_body,
    enveloped_der,
    not_whole_reason,
    whole_message_cms,
)

Cipher = Literal["aes-256-gcm", "aes-256-cbc", "aes-128-cbc"]
KeyTransport = Literal["pkcs1", "oaep"]


@dataclass(frozen=True)
class Recipient:
    """One recipient certificate, and what we know it can read."""

    certificate: x509.Certificate
    supports_gcm: bool = False  # smimeCapabilities seen in their signed mail, or config
    key_transport: KeyTransport | None = None  # None: PKCS#1 v1.5 for CBC, OAEP for GCM


@dataclass(frozen=True)
class SignerReport:
    """What one SignerInfo says, and whether it holds."""

    email: tuple[str, ...]
    subject: str
    issuer: str
    not_before: datetime | None
    not_after: datetime | None
    signature_valid: bool
    chain_trusted: bool
    problem: str | None = None  # why signature_valid or chain_trusted is False
    certificate: x509.Certificate | None = field(default=None, repr=False, compare=False)
    capabilities: tuple[str, ...] = field(default=(), compare=False)  # smimeCapabilities OIDs
    # the certificate the signer prefers for encryption (RFC 8551 2.5.3), found among the
    # message's certificates and chaining to a trust root; None if not named or not found
    encryption_certificate: x509.Certificate | None = field(default=None, repr=False,
                                                            compare=False)
    # the validated path, signer first, root last (empty unless chain_trusted): what a
    # revocation check asks about
    chain: tuple[x509.Certificate, ...] = field(default=(), repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "email": list(self.email),
            "subject": self.subject,
            "issuer": self.issuer,
            "signature_valid": self.signature_valid,
            "chain_trusted": self.chain_trusted,
            "not_before": self.not_before.isoformat() if self.not_before else None,
            "not_after": self.not_after.isoformat() if self.not_after else None,
        }


@dataclass(frozen=True)
class SignatureReport:
    """The verification of a whole message. `valid` only under DESIGN decision 4."""

    valid: bool
    reason: str | None
    from_address: str | None
    signers: tuple[SignerReport, ...]
    opaque: bool = False
    content: bytes | None = field(default=None, repr=False)  # the signed entity (unwrapped)
    # `mime.protection.protected_fields(content)`, when the verification read it
    protection: Protected | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "reason": self.reason,
            "from": self.from_address,
            "signers": [signer.to_json() for signer in self.signers],
        }


@dataclass(frozen=True)
class DecryptedMessage:
    content: bytes = field(repr=False)
    cipher: str  # e.g. "aes-256-gcm", "aes-256-cbc", "3des-cbc"
    authenticated: bool  # AEAD (GCM): the content is integrity-protected
    entity_start: int = 0  # where the decrypted entity starts in `content` (outer fields before)


_MICALG = {
    "sha1": "sha-1",
    "sha224": "sha-224",
    "sha256": "sha-256",
    "sha384": "sha-384",
    "sha512": "sha-512",
}
_PKCS7_SIGNATURE = ("application/pkcs7-signature", "application/x-pkcs7-signature")


# --- building -------------------------------------------------------------------------------


def sign_message(
    message: bytes,
    agent: KeyAgent,
    *,
    opaque: bool = False,
    digest: str = "sha256",
    pss: bool = False,
    extra_certs: Sequence[x509.Certificate] = (),
    now: datetime | None = None,
    protected: bytes = b"",
) -> bytes:
    """Sign a whole RFC 5322 message; return the signed message (headers kept outside).

    The signed entity is the message's MIME entity (its Content-* fields and body), first
    canonicalised to CRLF and with 8-bit/binary parts re-encoded (quoted-printable or base64)
    so that no relay can change the signed bytes. `protected`: header fields (CRLF-ended)
    put first in the signed entity, RFC 9788's injected headers (the caller marks its
    Content-Type with `hp`).
    """
    if digest not in _MICALG:
        raise InputError(f"unsupported digest {digest}")
    outer = parse_entity(canonical_crlf(message))
    inner = seven_bit_pieces(outer)
    if protected:
        inner[0] = protected + inner[0]
    chain = list(extra_certs) or list(agent.chain)
    cms_der = build_signed_data(
        inner,
        agent,
        detached=not opaque,
        digest=digest,
        pss=pss,
        extra_certs=chain,
        signing_time=now,
    )
    headers = outer_header(outer)
    if opaque:
        lines = base64_line_blocks([cms_der])
        return b"".join([headers, pkcs7_mime_header("signed-data"), *lines])
    boundary = new_boundary()
    # one join: a chain of `+` held three extra copies of a large message at once
    return b"".join(
        [
            headers,
            b"MIME-Version: 1.0\r\n"
            b'Content-Type: multipart/signed; protocol="application/pkcs7-signature";\r\n',
            f' micalg={_MICALG[digest]}; boundary="{boundary}"\r\n'.encode("ascii"),
            b"\r\nThis is a cryptographically signed message in MIME format.\r\n\r\n",
            f"--{boundary}\r\n".encode("ascii"),
            *inner,
            f"\r\n--{boundary}\r\n".encode("ascii"),
            b'Content-Type: application/pkcs7-signature; name="smime.p7s"\r\n'
            b"Content-Transfer-Encoding: base64\r\n"
            b'Content-Disposition: attachment; filename="smime.p7s"\r\n'
            b"Content-Description: S/MIME Cryptographic Signature\r\n\r\n",
            base64_lines(cms_der),
            f"--{boundary}--\r\n".encode("ascii"),
        ]
    )


def encrypt_message(
    message: bytes,
    recipients: Sequence[Recipient],
    *,
    cipher: Cipher | None = None,
    protected: bytes = b"",
) -> bytes:
    """Encrypt a whole message to every recipient; return the application/pkcs7-mime message.

    With no explicit cipher: AES-256-GCM (AuthEnvelopedData) when every recipient is known
    to read it, else AES-256-CBC (EnvelopedData) (DESIGN decision 2). Key transport per
    recipient: as given, else OAEP for GCM and PKCS#1 v1.5 for CBC. `protected`: header
    fields put first in the encrypted entity (RFC 9788 injected headers, as for signing).
    """
    if not recipients:
        raise NoRecipientCertificate([])
    if cipher is None:
        cipher = "aes-256-gcm" if all(r.supports_gcm for r in recipients) else "aes-256-cbc"
    default_transport: KeyTransport = "oaep" if cipher.endswith("gcm") else "pkcs1"
    keys = [RecipientKey(r.certificate, r.key_transport or default_transport) for r in recipients]
    outer = parse_entity(canonical_crlf(message))
    headers = outer_header(outer)
    pieces = entity_pieces(outer)
    if protected:
        pieces[0] = protected + pieces[0]
    der_pieces = build_enveloped_pieces(pieces, keys, cipher)
    # Free the plaintext before base64 doubles the size: the canonical copy if one was made,
    # and the message itself when the caller handed over its only reference.
    del outer, message
    smime_type = "authEnveloped-data" if cipher.endswith("gcm") else "enveloped-data"
    lines = base64_line_blocks(der_pieces)
    del der_pieces
    return b"".join([headers, pkcs7_mime_header(smime_type), *lines])


_LISTING_FIELDS = ("from", "to", "cc", "date", "message-id", "subject", "in-reply-to",
                   "references")


def seal_stored_copy(message: bytes, certificate: x509.Certificate) -> bytes:
    """The user's own copy of a message (a Sent copy, a draft) as it is kept on the server:
    encrypted to the user's certificate with AES-256-GCM (authenticated, so it is shown
    whole), the whole message wrapped unchanged (`mime.protection.stored_copy` gives it back
    byte for byte), and outside only the fields a folder listing needs (no Bcc)."""
    entity = parse_entity(message)
    outer = [f.line() for f in entity.fields if f.name in _LISTING_FIELDS]
    wrapped = b"".join([*outer, b"MIME-Version: 1.0\r\n", STORED_COPY_TYPE, b"\r\n", message])
    return encrypt_message(wrapped, [Recipient(certificate, supports_gcm=True)],
                           cipher="aes-256-gcm")


# --- opening ------------------------------------------------------------------------------


def message_content_key(message: bytes, agent: KeyAgent) -> ContentKey:
    """The content-encryption key of a whole-message encryption, recovered with the agent's
    key: what `decrypt_message` needs where the private key is not (one message's worth)."""
    return recover_content_key(enveloped_der(parse_entity(message)), agent)


def decrypt_message(message: bytes | Entity,
                    agent: KeyAgent | ContentKey) -> DecryptedMessage:
    """Decrypt a whole-message encryption (never a nested one: DESIGN decision 3).

    The result is the message the client should see: the outer header fields (minus the
    S/MIME Content-* fields and any field the inner entity repeats) followed by the
    decrypted entity.
    """
    outer = as_entity(message)
    # the only reference is handed over: the DER goes when the decryption returns
    opened = open_enveloped(enveloped_der(outer), agent)
    if not opened.authenticated and not _plausible_text(opened.parts[0][:64]):
        # A wrong key (RFC 3218 random substitute) passes CBC padding 1 time in 256: the
        # garbage is caught here and reported exactly like every other failure. (GCM's tag
        # already proved the key: mail with raw 8-bit or control bytes up front, which a
        # sealed copy or a stored message may start with, must still open.)
        raise DecryptionFailed("cannot decrypt this message")
    merged = merge_outer_fields(outer, opened.parts)
    entity_start = len(merged) - sum(len(part) for part in opened.parts)
    return DecryptedMessage(merged, opened.cipher, opened.authenticated, entity_start)


def inspect_signature(
    message: bytes | Entity, trust_roots: Sequence[x509.Certificate], *, now: datetime
) -> SignatureReport:
    """Report on the message's signature without raising for a negative result.

    `valid` holds only under DESIGN decision 4: the whole message is signed, every
    signature verifies, every signer chains to a trust root at `now`, and the single From
    address is an address of a signer certificate.
    """
    outer = as_entity(message)
    from_address, from_problem = single_from(outer)
    try:
        content, parsed, opaque = _signed_parts(outer)
    except VerificationError as exc:
        return SignatureReport(False, str(exc), from_address, ())
    if opaque:
        # the client is shown the signed content with its own header fields first: the
        # identity that counts is the one in that header (security issue, item 1)
        from_address, from_problem = single_from(
            parse_entity(merge_outer_fields(outer, (content,))))
    signers: list[SignerReport] = []
    for check in parsed.signers:
        signers.append(_signer_report(check, parsed.certificates, trust_roots, now))
    reason = _first_problem(signers, from_address, from_problem)
    protection = None
    if reason is None:
        protection = protected_fields(content)
        reason = _wrapped_identity_problem(protection, signers)
    return SignatureReport(reason is None, reason, from_address, tuple(signers), opaque, content,
                           protection)


def _wrapped_identity_problem(protection: Protected,
                              signers: list[SignerReport]) -> str | None:
    """A signed entity that carries the header a reader is shown (RFC 8551 3.1 wrapping,
    RFC 9788 injected headers: `mime.protection`) must come from the signer too: its From
    is the one the client shows."""
    if protection.form == "none":
        return None
    where = ("the wrapped message" if protection.form == "wrapped"
             else "the protected header")
    inner_address, inner_problem = single_from(protection.content)
    if inner_problem or inner_address is None:
        return f"{where}: {inner_problem or 'no From address'}"
    if not any(inner_address in s.email for s in signers):
        return f"{where}'s From address is not an address of the signer certificate"
    return None


def verify_message(
    message: bytes, trust_roots: Sequence[x509.Certificate], *, now: datetime
) -> SignatureReport:
    """As inspect_signature, but raise the precise VerificationError unless valid."""
    report = inspect_signature(message, trust_roots, now=now)
    if report.valid:
        return report
    reason = report.reason or "not valid"
    if not report.signers:
        error: VerificationError = (
            NotSigned(reason) if reason.startswith(_NOT_SIGNED) else SignatureInvalid(reason)
        )
    elif not all(s.signature_valid for s in report.signers):
        error = SignatureInvalid(reason)
    elif not all(s.chain_trusted for s in report.signers):
        error = ChainUntrusted(reason)
    else:
        error = SignerMismatch(reason)
    error.report = report  # type: ignore[attr-defined]
    raise error


# --- helpers --------------------------------------------------------------------------------


_NOT_SIGNED = "the message is not signed"
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _plausible_text(head: bytes) -> bool:
    """Whether decrypted bytes start like mail text (a MIME entity always does).

    Random bytes pass with probability below 1e-20 for 64 bytes.
    """
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # a character cut at the end is fine
            return False
    return _CONTROL.search(head) is None


def _signed_parts(outer: Entity) -> tuple[bytes, ParsedSignedData, bool]:
    mime_type, params = outer.content_type()
    if mime_type == "multipart/signed":
        try:
            parts = split_multipart(outer.data, params.get("boundary", ""), outer.body_start)
        except MalformedMessage as exc:
            raise SignatureInvalid(f"malformed multipart/signed: {exc}") from None
        if len(parts) != 2:
            raise SignatureInvalid("multipart/signed must have exactly two parts")
        if not _one_reading(outer.data, parts):
            raise SignatureInvalid(AMBIGUOUS)
        signed_entity = canonical_crlf(parts[0])
        signature_part = parse_entity(parts[1])
        sig_type, _ = signature_part.content_type()
        if sig_type not in _PKCS7_SIGNATURE:
            raise SignatureInvalid(f"unsupported signature type {sig_type}")
        try:
            parsed = parse_signed_data(decode_body(signature_part), signed_entity)
        except MalformedMessage as exc:
            raise SignatureInvalid(str(exc)) from None
        return signed_entity, parsed, False
    opaque_der = whole_message_cms(outer)
    if opaque_der is not None:
        try:
            if content_type_of(opaque_der) == oids.SIGNED_DATA:
                parsed = parse_signed_data(opaque_der, None)
                if parsed.content is None:
                    raise SignatureInvalid("opaque signature without content")
                return parsed.content, parsed, True
        except MalformedMessage as exc:
            raise SignatureInvalid(str(exc)) from None
    raise NotSigned(not_whole_reason(outer, "signed"))


AMBIGUOUS = ("the message's MIME structure can be read in more than one way: what was signed "
             "may not be what is shown")


def _one_reading(message: bytes, parts: list[bytes]) -> bool:
    """Whether the tree that computes the client's views (Dovecot's rules: a boundary line
    that only starts with the delimiter, the first of two Content-Type fields, ...) splits
    the multipart/signed into exactly the two parts that were verified, with one boundary
    parameter (DESIGN decision 11: where two readings could differ, it is not valid)."""
    try:
        root, children = parse_top(message)  # the parts below the top are not asked about
    except SmimeProxyError:
        return False
    ctype, subtype, params = root.content_type()
    boundaries = [value for name, value in params if name.lower() == b"boundary"]
    if (ctype, subtype) != (b"multipart", b"signed") or len(boundaries) != 1:
        return False
    if len(root.headers_named(b"content-type")) != 1:
        return False
    # compared in place (a part can be tens of MB), by memcmp: a memoryview's == took
    # 43 µs for 20 KB
    return len(children) == len(parts) and all(
        end - start == len(part) and message.startswith(part, start)
        for (start, end), part in zip(children, parts, strict=True))


def _signer_report(
    check: SignerCheck,
    intermediates: list[x509.Certificate],
    trust_roots: Sequence[x509.Certificate],
    now: datetime,
) -> SignerReport:
    cert = check.certificate
    if cert is None:
        return SignerReport((), "", "", None, None, False, False, check.problem)
    chain_trusted = False
    problem = check.problem
    chain: list[x509.Certificate] = []
    try:
        chain = validate_signer_chain(cert, intermediates, trust_roots, now)
        chain_trusted = True
    except ChainUntrusted as exc:
        problem = problem or str(exc)
    return SignerReport(
        certificate_addresses(cert),
        *subject_and_issuer(cert),
        cert.not_valid_before_utc,
        cert.not_valid_after_utc,
        check.signature_valid,
        chain_trusted,
        problem,
        cert,
        tuple(check.capabilities),
        _preferred_certificate(check.key_preference, [cert, *intermediates], intermediates,
                               trust_roots, now) if chain_trusted else None,
        tuple(chain),
    )


def _preferred_certificate(
    preference: tuple[str, Any] | None,
    candidates: Sequence[x509.Certificate],
    intermediates: list[x509.Certificate],
    trust_roots: Sequence[x509.Certificate],
    now: datetime,
) -> x509.Certificate | None:
    """The certificate an SMIMEEncryptionKeyPreference names among `candidates` (the
    signer's own first, whose chain the caller has validated), if it chains to a trust root
    as a signer's would (whose addresses it may be kept under is the caller's check)."""
    if preference is None:
        return None
    kind, value = preference
    for candidate in candidates:
        if kind == "issuer-serial":
            named = issuer_and_serial_of(candidate) == (value[1], value[0])
        else:
            named = subject_key_identifier(candidate) == value
        if named:
            if candidate is candidates[0]:
                return candidate  # the signer's own: the caller validated its chain
            try:
                validate_signer_chain(candidate, intermediates, trust_roots, now)
            except ChainUntrusted:
                return None
            return candidate
    return None


def _first_problem(
    signers: list[SignerReport], from_address: str | None, from_problem: str | None
) -> str | None:
    for index, signer in enumerate(signers, 1):
        label = f"signer {index}" if len(signers) > 1 else "signer"
        if not signer.signature_valid:
            return f"{label}: {signer.problem or 'signature not valid'}"
    for index, signer in enumerate(signers, 1):
        label = f"signer {index}" if len(signers) > 1 else "signer"
        if not signer.chain_trusted:
            return f"{label}: {signer.problem or 'certificate not trusted'}"
    if from_problem:
        return from_problem
    if from_address is None or not any(from_address in s.email for s in signers):
        return "the From address is not an address of the signer certificate"
    return None
