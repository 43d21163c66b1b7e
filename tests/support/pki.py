"""A throw-away PKI for tests: a root CA, an intermediate, and S/MIME user certificates.

Every certificate is made fresh with `cryptography`; `NOW` is a fixed moment so validity tests
do not depend on the wall clock. Keys are small-but-real (RSA-2048, P-256/P-384).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
KeyKind = Literal["rsa", "rsa3072", "p256", "p384"]


def new_key(kind: KeyKind = "rsa") -> PrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "rsa3072":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    return ec.generate_private_key(ec.SECP384R1())


def _name(common_name: str, email: str | None = None) -> x509.Name:
    attrs = [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "smime-proxy tests"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ]
    if email:
        attrs.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, email))
    return x509.Name(attrs)


@dataclass
class Identity:
    """A certificate with its private key and the chain above it (issuer first, root last)."""

    key: PrivateKey = field(repr=False)
    cert: x509.Certificate
    chain: list[x509.Certificate] = field(default_factory=list)

    @property
    def email(self) -> str:
        san = self.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        return san.value.get_values_for_type(x509.RFC822Name)[0]

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def write_pem_bundle(self, path: Path) -> Path:
        """Key + certificate (+ chain) in one PEM file, as `--p12` also accepts."""
        chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.chain)
        path.write_bytes(self.key_pem() + self.cert_pem() + chain)
        return path

    def write_p12(self, path: Path, password: bytes) -> Path:
        from cryptography.hazmat.primitives.serialization import pkcs12

        blob = pkcs12.serialize_key_and_certificates(
            b"test",
            self.key,
            self.cert,
            self.chain or None,
            serialization.BestAvailableEncryption(password),
        )
        path.write_bytes(blob)
        return path


def make_ca(
    common_name: str = "Test Root CA",
    *,
    issuer: Identity | None = None,
    kind: KeyKind = "rsa",
    not_before: dt.datetime = NOW - dt.timedelta(days=365),
    not_after: dt.datetime = NOW + dt.timedelta(days=3650),
) -> Identity:
    key = new_key(kind)
    subject = _name(common_name)
    signer_key = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    cert = builder.sign(signer_key, hashes.SHA256())
    chain = ([issuer.cert, *issuer.chain]) if issuer else []
    return Identity(key=key, cert=cert, chain=chain)


def make_user(
    email: str,
    issuer: Identity,
    *,
    kind: KeyKind = "rsa",
    common_name: str | None = None,
    eku: list[x509.ObjectIdentifier] | None = None,
    not_before: dt.datetime = NOW - dt.timedelta(days=30),
    not_after: dt.datetime = NOW + dt.timedelta(days=700),
    extra_emails: tuple[str, ...] = (),
) -> Identity:
    key = new_key(kind)
    is_rsa = isinstance(key, rsa.RSAPrivateKey)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name or email.split("@", maxsplit=1)[0].title(), email))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=is_rsa,
                data_encipherment=False,
                key_agreement=not is_rsa,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                eku if eku is not None else [ExtendedKeyUsageOID.EMAIL_PROTECTION]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name(a) for a in (email, *extra_emails)]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    )
    cert = builder.sign(issuer.key, hashes.SHA256())
    return Identity(key=key, cert=cert, chain=[issuer.cert, *issuer.chain])


def simple_message(
    sender: str = "alice@example.test",
    to: str = "bob@example.test",
    subject: str = "Hello",
    body: bytes = b"Hello Bob,\r\nthis is a test.\r\n",
) -> bytes:
    return (
        f"From: Alice <{sender}>\r\nTo: Bob <{to}>\r\nSubject: {subject}\r\n"
        "Date: Mon, 01 Jun 2026 12:00:00 +0000\r\nMessage-ID: <t1@example.test>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    ).encode() + body
