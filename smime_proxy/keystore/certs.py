"""Certificate helpers of the key store: addresses, fingerprints, key descriptions, loading.

May import: errors, crypto.per_certificate, cryptography, stdlib.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x448, x25519
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import NameOID

from smime_proxy.crypto.per_certificate import per_certificate
from smime_proxy.errors import ImportRejected, InputError

MAX_CERTIFICATE_FILE_SIZE = 1 << 20

# A plain addr-spec as it appears in certificates: no whitespace, no controls, no brackets,
# no quotes or commas (nothing that could break a header we write), one "@".
_ADDRESS = re.compile(r"[^\s@<>()\[\]\\,;:\"\x00-\x1f\x7f]+@[A-Za-z0-9.\-_]+")


def normalize_address(address: str) -> str:
    """Lowercase addr-spec; `InputError` if it is not a plain e-mail address."""
    candidate = address.strip().lower()
    if not _ADDRESS.fullmatch(candidate) or ".." in candidate.split("@", 1)[1]:
        raise InputError("not an e-mail address")
    return candidate


def _clean(address: str) -> str | None:
    try:
        return normalize_address(address)
    except InputError:
        return None


@per_certificate
def certificate_addresses(certificate: x509.Certificate) -> tuple[str, ...]:
    """Lowercase rfc822Name SANs; the subject's emailAddress only when there is no such SAN.

    Addresses that are not plain addr-specs (CR/LF, spaces, brackets...) are ignored. Kept
    per certificate (immutable): a correspondent's comes with every message they sign.
    """
    found: list[str] = []
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = san.value.get_values_for_type(x509.RFC822Name)
        found = [a for a in (_clean(n) for n in names) if a]
    except x509.ExtensionNotFound:
        pass
    except ValueError:  # a malformed extension
        found = []
    if not found:
        for attribute in certificate.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS):
            value = attribute.value
            if isinstance(value, str) and (clean := _clean(value)):
                found.append(clean)
    return tuple(dict.fromkeys(found))


@per_certificate
def subject_and_issuer(certificate: x509.Certificate) -> tuple[str, str]:
    """The subject and issuer names as RFC 4514 strings. Kept per certificate (immutable):
    cryptography builds them anew at each call, a tenth of a signer's report."""
    return certificate.subject.rfc4514_string(), certificate.issuer.rfc4514_string()


@per_certificate
def fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, lowercase hex."""
    return certificate.fingerprint(hashes.SHA256()).hex()


def key_description(certificate: x509.Certificate) -> tuple[str, int]:
    """(key type, size in bits) of the certificate's public key, e.g. ("RSA", 2048)."""
    try:
        key = certificate.public_key()
    except Exception:
        return ("unknown", 0)
    if isinstance(key, rsa.RSAPublicKey):
        return ("RSA", key.key_size)
    if isinstance(key, ec.EllipticCurvePublicKey):
        return (f"EC {key.curve.name}", key.curve.key_size)
    if isinstance(key, ed25519.Ed25519PublicKey):
        return ("Ed25519", 256)
    if isinstance(key, ed448.Ed448PublicKey):
        return ("Ed448", 456)
    if isinstance(key, x25519.X25519PublicKey):
        return ("X25519", 256)
    if isinstance(key, x448.X448PublicKey):
        return ("X448", 448)
    if isinstance(key, dsa.DSAPublicKey):
        return ("DSA", key.key_size)
    return ("unknown", 0)


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """Certificates from PEM (one or more) or DER; `ImportRejected` on anything else."""
    if len(data) > MAX_CERTIFICATE_FILE_SIZE:
        raise ImportRejected("the certificate file is too large")
    try:
        with warnings.catch_warnings():
            # what cryptography only warns of today (a serial number that is not positive,
            # RFC 5280 4.1.2.2) it will refuse tomorrow: refused here now
            warnings.simplefilter("error", CryptographyDeprecationWarning)
            if b"-----BEGIN CERTIFICATE-----" in data:
                certificates = x509.load_pem_x509_certificates(data)
            else:
                certificates = [x509.load_der_x509_certificate(data)]
            for certificate in certificates:  # force parsing of the parts we use
                certificate.subject.rfc4514_string()
                certificate.issuer.rfc4514_string()
                _ = certificate.extensions
    except Exception:
        raise ImportRejected("not a certificate (PEM or DER), or a damaged one") from None
    if not certificates:
        raise ImportRejected("no certificate in the file")
    return certificates


@dataclass(frozen=True)
class CertificateSummary:
    """What `keys show`, `ca show` and `contacts list` print: never key material."""

    subject: str
    issuer: str
    addresses: tuple[str, ...]
    serial: str
    not_before: datetime
    not_after: datetime
    key_type: str
    key_size: int
    fingerprint: str

    @classmethod
    def of(cls, certificate: x509.Certificate) -> CertificateSummary:
        key_type, key_size = key_description(certificate)
        return cls(
            subject=certificate.subject.rfc4514_string(),
            issuer=certificate.issuer.rfc4514_string(),
            addresses=certificate_addresses(certificate),
            serial=format(certificate.serial_number, "x"),
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            key_type=key_type,
            key_size=key_size,
            fingerprint=fingerprint(certificate),
        )
