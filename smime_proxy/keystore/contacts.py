"""`Contacts`: each user's address book of recipients' certificates.

Certificates are indexed by their lowercase e-mail addresses (rfc822Name SANs; the subject's
emailAddress only when there is no such SAN). Filled by `add` (a PEM or DER file: `contacts
add`) and by `take_certificate` (the signer certificate of a verified signed message).

`choose_certificate(user, address, now)` picks the certificate to encrypt to: valid at `now`,
EKU absent or allowing emailProtection (or anyExtendedKeyUsage), keyUsage absent or allowing
keyEncipherment (RSA) / keyAgreement (EC), an RSA (>= 2048 bits) or EC key, not a CA; among
those the newest notBefore (then the latest notAfter). Path validation is not done here: the
address book holds what the user chose to trust for encryption.

May import: errors, crypto.oids, keystore.ports, keystore.certs, keystore.service,
cryptography, stdlib.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from smime_proxy.crypto.oids import AES_GCM_OID
from smime_proxy.errors import (
    ImportRejected,
    InputError,
    KeyStoreError,
    NoRecipientCertificate,
)
from smime_proxy.keystore.certs import (
    CertificateSummary,
    certificate_addresses,
    fingerprint,
    load_certificates,
    normalize_address,
)
from smime_proxy.keystore.ports import AddressBook, ContactCertificate
from smime_proxy.keystore.service import check_user

_ANY_EKU = x509.ObjectIdentifier("2.5.29.37.0")


@dataclass(frozen=True)
class ContactEntry:
    """One certificate of an address book, with its addresses."""

    summary: CertificateSummary
    certificate: x509.Certificate


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return bool(
            certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        )
    except x509.ExtensionNotFound:
        return False


def usable_for_encryption(certificate: x509.Certificate, now: datetime) -> bool:
    """Whether mail may be encrypted to this certificate at `now` (see module docstring)."""
    try:
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            return False
        if _is_ca(certificate):
            return False
        extensions = certificate.extensions
        public_key = certificate.public_key()
    except Exception:
        return False
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < 2048:
            return False
        needed = "key_encipherment"
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        needed = "key_agreement"
    else:
        return False
    try:
        eku = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if ExtendedKeyUsageOID.EMAIL_PROTECTION not in eku and _ANY_EKU not in eku:
            return False
    except x509.ExtensionNotFound:
        pass
    try:
        usage = extensions.get_extension_for_class(x509.KeyUsage).value
        if not getattr(usage, needed):
            return False
    except x509.ExtensionNotFound:
        pass
    return True


class Contacts:
    """Address-book operations over the `AddressBook` port."""

    def __init__(self, book: AddressBook) -> None:
        self.book = book

    def __repr__(self) -> str:
        return f"Contacts(book={self.book!r})"

    def _store(self, user: str, certificate: x509.Certificate,
               reads_gcm: bool | None = None) -> bool:
        """Keep the certificate for each of its addresses; False when it has none or is a CA
        certificate."""
        addresses = certificate_addresses(certificate)
        if not addresses or _is_ca(certificate):
            return False
        wanted = fingerprint(certificate)
        if self._already_kept(user, wanted, addresses, reads_gcm):
            return True
        self.book.add(
            user,
            ContactCertificate(
                fingerprint=wanted,
                certificate=certificate.public_bytes(serialization.Encoding.DER),
                addresses=addresses,
                reads_gcm=reads_gcm,
            ),
        )
        return True

    def _already_kept(self, user: str, wanted: str, addresses: Sequence[str],
                      reads_gcm: bool | None) -> bool:
        """Whether the address book already holds the certificate for every one of its
        addresses with what its signature said: each signed message read would otherwise
        write (a commit per message, an fsync on PostgreSQL: issue 12's bench measured 46
        encrypted messages/s opened through a node)."""
        for address in addresses:
            kept = [c for c in self.book.find(user, address) if c.fingerprint == wanted]
            if not kept or (reads_gcm is not None and kept[0].reads_gcm != reads_gcm):
                return False
        return True

    def add(self, user: str, data: bytes) -> list[CertificateSummary]:
        """Add the certificates of a PEM or DER file (those with an e-mail address that are
        not CA certificates); `ImportRejected` if there is none."""
        check_user(user)
        added = [CertificateSummary.of(c) for c in load_certificates(data) if self._store(user, c)]
        if not added:
            raise ImportRejected("no end-entity certificate with an e-mail address in the file")
        return added

    def take_certificate(self, user: str, certificate: x509.Certificate,
                         capabilities: Sequence[str] = ()) -> bool:
        """Keep a verified signer's certificate ("Take Certificate") and what its signature
        said the signer reads (the smimeCapabilities OIDs, RFC 8551 2.5.2: AES-256-GCM or
        not; nothing said changes nothing); False if it has no address or is a CA
        certificate."""
        check_user(user)
        reads_gcm = (AES_GCM_OID[32] in capabilities) if capabilities else None
        return self._store(user, certificate, reads_gcm)

    def reads_gcm(self, user: str, address: str, certificate: x509.Certificate) -> bool:
        """Whether the holder of `certificate` announced AES-256-GCM in their latest verified
        signed mail (the address book's entry for that certificate and address)."""
        check_user(user)
        wanted = fingerprint(certificate)
        try:
            found = self.book.find(user, normalize_address(address))
        except InputError:
            return False
        return any(c.fingerprint == wanted and c.reads_gcm is True for c in found)

    def entries(self, user: str) -> list[ContactEntry]:
        """Every certificate, sorted by first address then newest notBefore."""
        check_user(user)
        result = []
        for contact in self.book.entries(user):
            certificate = x509.load_der_x509_certificate(contact.certificate)
            summary = CertificateSummary.of(certificate)
            result.append(ContactEntry(summary, certificate))
        result.sort(
            key=lambda e: (e.summary.addresses[:1], -e.summary.not_before.timestamp())
        )
        return result

    def remove(self, user: str, address: str) -> int:
        """Forget `address`; certificates left without an address go. `KeyStoreError` if the
        address book has no certificate for it."""
        check_user(user)
        count = self.book.remove(user, normalize_address(address))
        if count == 0:
            raise KeyStoreError("no certificate for that address in the address book")
        return count

    def certificates_for(self, user: str, address: str) -> list[x509.Certificate]:
        check_user(user)
        return [
            x509.load_der_x509_certificate(c.certificate)
            for c in self.book.find(user, normalize_address(address))
        ]

    def choose_certificate(self, user: str, address: str, now: datetime) -> x509.Certificate:
        """The best certificate to encrypt to `address` at `now`; `NoRecipientCertificate`."""
        try:
            clean = normalize_address(address)
        except InputError:  # never echo an unusable address (CR/LF...) into a message
            raise NoRecipientCertificate(["(invalid address)"]) from None
        candidates = self.certificates_for(user, clean)
        usable = [c for c in candidates if usable_for_encryption(c, now)]
        if not usable:
            raise NoRecipientCertificate([clean])
        usable.sort(
            key=lambda c: (c.not_valid_before_utc, c.not_valid_after_utc, fingerprint(c)),
            reverse=True,
        )
        return usable[0]
