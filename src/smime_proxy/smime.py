"""S/MIME recipes: the safe API over the CMS hazmat layer.

Whole messages in, whole messages out (bytes). Every outcome that is not a success raises a
narrow exception from `smime_proxy.errors`; `now` is passed in wherever validity matters.

May import: errors, crypto/, mime/, cryptography.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from cryptography import x509

from smime_proxy.crypto.keyagent import KeyAgent

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


def sign_message(
    message: bytes,
    agent: KeyAgent,
    *,
    opaque: bool = False,
    digest: str = "sha256",
    pss: bool = False,
    extra_certs: Sequence[x509.Certificate] = (),
    now: datetime | None = None,
) -> bytes:
    """Sign a whole RFC 5322 message; return the signed message (headers kept outside)."""
    raise NotImplementedError


def encrypt_message(
    message: bytes,
    recipients: Sequence[Recipient],
    *,
    cipher: Cipher | None = None,
) -> bytes:
    """Encrypt a whole message to every recipient; return the application/pkcs7-mime message."""
    raise NotImplementedError


def decrypt_message(message: bytes, agent: KeyAgent) -> DecryptedMessage:
    """Decrypt a whole-message encryption (never a nested one: DESIGN decision 3)."""
    raise NotImplementedError


def inspect_signature(
    message: bytes, trust_roots: Sequence[x509.Certificate], *, now: datetime
) -> SignatureReport:
    """Report on the message's signature without raising for a negative result."""
    raise NotImplementedError


def verify_message(
    message: bytes, trust_roots: Sequence[x509.Certificate], *, now: datetime
) -> SignatureReport:
    """As inspect_signature, but raise the precise VerificationError unless valid."""
    raise NotImplementedError
