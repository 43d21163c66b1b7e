"""A SignerInfo's questions (RFC 5652 5.3): which bundled certificate it names, its
algorithms, attributes and signature; asked by `crypto.signed`'s checks of either reading:
asn1crypto's (`Asn1Signer`, lazily, the reference) or the native reader's (`NativeSigner`,
offsets into the message's DER). Also the certificate helpers both readings and
`crypto.enveloped` use to match an issuer and serial number or a key identifier.

May import: errors, crypto.*, cryptography, asn1crypto (through crypto.asn1 only for parsing).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field
from typing import Any

from asn1crypto import algos, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning

from smime_proxy.crypto import asn1, attributes
from smime_proxy.crypto.per_certificate import per_certificate


@dataclass(frozen=True)
class Asn1Signer:
    """A SignerInfo read by asn1crypto, lazily: each question parses what it needs, in the
    order `crypto.signed` asks them, so a damaged field is reported where it is met."""

    si: Any

    def certificate(self, bundled: list[x509.Certificate]) -> x509.Certificate | None:
        return asn1.guarded("signer identifier",  # type: ignore[no-any-return]
                            lambda: find_certificate(self.si["sid"], bundled))

    def digest_oid(self) -> str:
        return asn1.guarded("digest algorithm",  # type: ignore[no-any-return]
                            lambda: asn1.oid_of(self.si["digest_algorithm"]))

    def unsigned_attributes(self) -> list[attributes.Attribute] | None:
        return attributes_of(self.si["unsigned_attrs"])

    def signed_contents(self) -> bytes | None:
        value = self.si["signed_attrs"]
        if isinstance(value, core.Void) or value is None:
            return None
        contents: bytes = value.contents
        return contents

    def signature(self) -> bytes:
        return asn1.guarded("signature", lambda: self.si["signature"].native)  # type: ignore[no-any-return]

    def signature_oid(self) -> str:
        algorithm = self.si["signature_algorithm"]
        return asn1.guarded("signature algorithm",  # type: ignore[no-any-return]
                            lambda: asn1.oid_of(algorithm))

    def signature_parameters(self) -> bytes | None:
        return asn1.raw_parameters(self.si["signature_algorithm"])


@dataclass(frozen=True)
class NativeIdentifier:
    """A SignerIdentifier or RecipientIdentifier (RFC 5652 5.3, 6.2.1) as the native reader
    found it: an IssuerAndSerialNumber, or a subjectKeyIdentifier."""

    issuer: bytes  # the Name's DER, b"" when named by key identifier
    serial: int
    key_id: bytes | None

    @classmethod
    def of(cls, der: bytes, kind: int, named: tuple[int, int],
           serial: tuple[int, int] | None) -> NativeIdentifier:
        """From native/src/lib.rs `identifier`: kind 0 with the Name's and the serial's
        offsets, kind 1 with the key identifier's."""
        name = der[named[0] : named[1]]
        if kind == 1 or serial is None:
            return cls(b"", 0, name)
        return cls(name, int.from_bytes(der[serial[0] : serial[1]], "big", signed=True), None)

    def names(self, certificate: x509.Certificate) -> bool:
        if self.key_id is not None:
            return subject_key_identifier(certificate) == self.key_id
        return named_by_parts(self.issuer, self.serial, certificate)


@dataclass(frozen=True)
class NativeSigner:
    """A SignerInfo the native reader read: the same questions as `Asn1Signer`."""

    sid: NativeIdentifier
    digest: str
    signed: bytes | None
    algorithm: str
    algorithm_der: bytes  # the whole AlgorithmIdentifier, for RSA-PSS parameters
    value: bytes = field(repr=False)
    unsigned: bytes | None

    @classmethod
    def of(cls, der: bytes, record: Any) -> NativeSigner:
        kind, named, serial, digest, signed, algorithm, algorithm_at, value, unsigned = record

        def cut(at: tuple[int, int] | None) -> bytes | None:
            return None if at is None else der[at[0] : at[1]]

        return cls(NativeIdentifier.of(der, kind, named, serial),
                   asn1.dotted_of(der[digest[0] : digest[1]]), cut(signed),
                   asn1.dotted_of(der[algorithm[0] : algorithm[1]]),
                   der[algorithm_at[0] : algorithm_at[1]], der[value[0] : value[1]],
                   cut(unsigned))

    def certificate(self, bundled: list[x509.Certificate]) -> x509.Certificate | None:
        # guarded as the asn1crypto reading's lookup is, whichever way the signer is named
        return asn1.guarded("signer identifier",  # type: ignore[no-any-return]
                            lambda: next((c for c in bundled if self.sid.names(c)), None))

    def digest_oid(self) -> str:
        return self.digest

    def unsigned_attributes(self) -> list[attributes.Attribute] | None:
        return None if self.unsigned is None else attributes.read_attributes(self.unsigned)

    def signed_contents(self) -> bytes | None:
        return self.signed

    def signature(self) -> bytes:
        return self.value

    def signature_oid(self) -> str:
        return self.algorithm

    def signature_parameters(self) -> bytes | None:
        # as asn1crypto reads them on the reference path: typed by the algorithm (RSA-PSS)
        return asn1.raw_parameters(algos.SignedDigestAlgorithm.load(self.algorithm_der))


@functools.lru_cache(maxsize=256)
def load_certificate(der_bytes: bytes) -> x509.Certificate | None:
    """A certificate from DER, fully parsed now (cryptography parses lazily), or None.

    An odd bundled certificate (negative serial, DSA with inherited parameters) must not
    break verification of the others (notes/crypto.md rule 4). Kept by its exact bytes
    (a correspondent's certificates come with every message they sign; a certificate
    object is immutable): parsed once, not once a message.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            certificate = x509.load_der_x509_certificate(der_bytes)
            certificate.subject.rfc4514_string()
            certificate.issuer.rfc4514_string()
            _ = certificate.extensions
            _ = certificate.not_valid_after_utc
    except asn1.PARSER_ERRORS:
        return None
    return certificate


def find_certificate(sid: Any, bundled: list[x509.Certificate]) -> x509.Certificate | None:
    """The bundled certificate the SignerIdentifier names (RFC 5652 5.3), compared on the
    certificates already loaded: the signer's identifier is the only part parsed here."""
    if sid.name == "issuer_and_serial_number":
        return next((c for c in bundled if named_by(sid.chosen, c)), None)
    if sid.name == "subject_key_identifier":
        wanted = sid.chosen.native
        return next((c for c in bundled if subject_key_identifier(c) == wanted), None)
    return None


def named_by(ias: Any, certificate: x509.Certificate) -> bool:
    """Whether an IssuerAndSerialNumber (asn1crypto's, RFC 5652 10.2.4) names `certificate`:
    the serial first, then the issuer byte for byte, and only when the bytes differ RFC 5280
    7.1 name matching (asn1crypto's, ~2 ms a name)."""
    serial, issuer = issuer_and_serial_of(certificate)
    if ias["serial_number"].native != serial:
        return False
    named = ias["issuer"]
    return bool(named.dump() == issuer or named == asn1_x509.Name.load(issuer))


def named_by_parts(issuer: bytes, serial: int, certificate: x509.Certificate) -> bool:
    """`named_by` for an IssuerAndSerialNumber read apart: the issuer Name's DER and the
    serial number (crypto.enveloped's native reading)."""
    ours_serial, ours = issuer_and_serial_of(certificate)
    if serial != ours_serial:
        return False
    return bool(issuer == ours or asn1_x509.Name.load(issuer) == asn1_x509.Name.load(ours))


@per_certificate
def issuer_and_serial_of(certificate: x509.Certificate) -> tuple[int, bytes]:
    """The certificate's serial number and its issuer Name's DER. Each signed message asks
    them of each bundled certificate, and cryptography makes them anew at each call."""
    return certificate.serial_number, certificate.issuer.public_bytes()


@per_certificate
def subject_key_identifier(certificate: x509.Certificate) -> bytes | None:
    """The certificate's subjectKeyIdentifier (RFC 5280 4.2.1.2), None when it has none."""
    try:
        return certificate.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return None


def attributes_of(value: Any) -> list[attributes.Attribute] | None:
    """A SignerInfo's [0] signedAttrs or [1] unsignedAttrs, read by OID; None when absent."""
    if isinstance(value, core.Void) or value is None:
        return None
    return attributes.read_attributes(value.contents)
