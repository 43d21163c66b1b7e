"""Independent checks of what the SMTP proxy produced: `openssl cms` decrypts and verifies,
asn1crypto lists the RecipientInfos (who could decrypt a copy)."""

from __future__ import annotations

import base64
import email
import email.policy
from pathlib import Path

from asn1crypto import cms as asn1_cms

from support import pki
from support.cmsutil import openssl, run_tool


def identity_files(directory: Path, name: str, ident: pki.Identity) -> tuple[Path, Path]:
    cert = directory / f"{name}-cert.pem"
    key = directory / f"{name}-key.pem"
    if not cert.exists():
        cert.write_bytes(ident.cert_pem())
        key.write_bytes(ident.key_pem())
    return cert, key


def decrypt(message: bytes, ident: pki.Identity, directory: Path) -> bytes:
    """`openssl cms -decrypt` as `ident`; AssertionError if it cannot."""
    cert, key = identity_files(directory, ident.email.split("@")[0], ident)
    return openssl("cms", "-decrypt", "-recip", str(cert), "-inkey", str(key),
                   stdin=message)


def cannot_decrypt(message: bytes, ident: pki.Identity, directory: Path) -> bool:
    cert, key = identity_files(directory, ident.email.split("@")[0], ident)
    res = run_tool(["openssl", "cms", "-decrypt", "-recip", str(cert), "-inkey", str(key)],
                   message)
    return res.returncode != 0


def verify(message: bytes, ca: pki.Identity, directory: Path) -> bytes:
    """`openssl cms -verify` against `ca`; returns the signed content."""
    ca_file = directory / "smtp-ca.pem"
    if not ca_file.exists():
        ca_file.write_bytes(ca.cert_pem())
    return openssl("cms", "-verify", "-CAfile", str(ca_file), stdin=message)


def cms_der(message: bytes) -> bytes:
    parsed = email.message_from_bytes(message, policy=email.policy.compat32)
    payload = parsed.get_payload()
    assert isinstance(payload, str), "not a single-part S/MIME message"
    return base64.b64decode(payload)


def recipient_serial_list(message: bytes) -> list[int]:
    """Serial numbers of the key-transport RecipientInfos of an enveloped message, in order."""
    info = asn1_cms.ContentInfo.load(cms_der(message))
    return [int(ri.chosen["rid"].chosen["serial_number"].native)
            for ri in info["content"]["recipient_infos"]]


def recipient_serials(message: bytes) -> set[int]:
    return set(recipient_serial_list(message))


def smime_type(message: bytes) -> str | None:
    parsed = email.message_from_bytes(message, policy=email.policy.compat32)
    value = parsed.get_param("smime-type")
    return value if isinstance(value, str) else None
