"""The server CA: issues S/MIME certificates for users' server-generated keys.

Storage: `<data dir>/ca/ca-cert.pem` and `<data dir>/ca/ca-key.pem`. **The CA private key is
stored unencrypted (PKCS#8 PEM) in a file created with mode 0600 inside a 0700 directory**:
the daemon must issue certificates unattended, so the protection is the file system's (as for
a TLS server key). Keep the data directory on an encrypted, backed-up volume, or move the CA
key offline after issuing and use `ca init` only on a trusted host.

Issued user certificates: EKU emailProtection, rfc822Name SAN, keyUsage digitalSignature +
keyEncipherment (RSA) or digitalSignature + keyAgreement (EC), SKI/AKI, basicConstraints
CA:FALSE, validity `validity_days` (default 730, two years) from `now` (a minute back-dated for
clock skew), signed SHA-256.

May import: errors, keystore.certs, cryptography.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from smime_proxy.errors import ImportRejected, InputError, KeyExists, KeyStoreError
from smime_proxy.keystore.certs import normalize_address

CA_DIRNAME = "ca"
CA_CERT_FILENAME = "ca-cert.pem"
CA_KEY_FILENAME = "ca-key.pem"
DEFAULT_CA_NAME = "smime-proxy Server CA"
CA_VALIDITY_DAYS = 3650
USER_VALIDITY_DAYS = 730

CaPrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
UserPublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

_SKEW = timedelta(minutes=1)


def new_private_key(key_type: str) -> CaPrivateKey:
    """A fresh key: rsa2048, rsa3072, rsa4096, ec-p256 or ec-p384."""
    if key_type.startswith("rsa") and key_type[3:] in ("2048", "3072", "4096"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[3:]))
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    raise InputError(f"unknown key type {key_type!r} (rsa2048, rsa3072, rsa4096, ec-p256, ec-p384)")


class ServerCA:
    """A CA key and its self-signed certificate."""

    def __init__(self, private_key: CaPrivateKey, certificate: x509.Certificate) -> None:
        self._private_key = private_key
        self.certificate = certificate

    def __repr__(self) -> str:  # never the key
        return f"ServerCA(subject={self.certificate.subject.rfc4514_string()!r})"

    # --- creation and storage -----------------------------------------------------------

    @classmethod
    def create(
        cls, name: str, now: datetime, *, key_type: str = "rsa3072",
        validity_days: int = CA_VALIDITY_DAYS,
    ) -> ServerCA:
        """A new CA (in memory) named `name` (the CN), valid `validity_days` from `now`."""
        if not name.strip() or any(ord(ch) < 32 for ch in name):
            raise InputError("the CA name must be a non-empty single line")
        key = new_private_key(key_type)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "smime-proxy"),
                x509.NameAttribute(NameOID.COMMON_NAME, name.strip()),
            ]
        )
        public = key.public_key()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _SKEW)
            .not_valid_after(now + timedelta(days=validity_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        return cls(key, certificate)

    @staticmethod
    def directory(data_dir: str | os.PathLike[str]) -> Path:
        return Path(data_dir) / CA_DIRNAME

    @classmethod
    def exists(cls, data_dir: str | os.PathLike[str]) -> bool:
        return (cls.directory(data_dir) / CA_CERT_FILENAME).exists()

    @classmethod
    def init(
        cls, data_dir: str | os.PathLike[str], now: datetime, *,
        name: str = DEFAULT_CA_NAME, key_type: str = "rsa3072",
    ) -> ServerCA:
        """Create a CA and store it in the data directory; `KeyExists` if there is one."""
        directory = cls.directory(data_dir)
        if cls.exists(data_dir) or (directory / CA_KEY_FILENAME).exists():
            raise KeyExists(f"a server CA already exists in {directory}")
        ca = cls.create(name, now, key_type=key_type)
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            key_pem = ca._private_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            _write_new(directory / CA_KEY_FILENAME, key_pem, 0o600)
            _write_new(
                directory / CA_CERT_FILENAME,
                ca.certificate.public_bytes(serialization.Encoding.PEM),
                0o644,
            )
        except FileExistsError:
            raise KeyExists(f"a server CA already exists in {directory}") from None
        except OSError as exc:
            raise KeyStoreError(
                f"cannot write the server CA to {directory}: {exc.strerror}"
            ) from None
        return ca

    @classmethod
    def load(cls, data_dir: str | os.PathLike[str]) -> ServerCA:
        """The stored CA; `KeyStoreError` if there is none (run `ca init`)."""
        directory = cls.directory(data_dir)
        try:
            cert_pem = (directory / CA_CERT_FILENAME).read_bytes()
            key_pem = (directory / CA_KEY_FILENAME).read_bytes()
        except FileNotFoundError:
            raise KeyStoreError(
                f"no server CA in {directory}: run `smime-proxy ca init` first"
            ) from None
        except OSError as exc:
            raise KeyStoreError(
                f"cannot read the server CA in {directory}: {exc.strerror}"
            ) from None
        try:
            certificate = x509.load_pem_x509_certificate(cert_pem)
            key = serialization.load_pem_private_key(key_pem, None)
        except (ValueError, TypeError):
            raise KeyStoreError(f"the server CA in {directory} is damaged") from None
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise KeyStoreError(f"the server CA in {directory} has an unsupported key")
        if key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) != certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ):
            raise KeyStoreError(f"the server CA key in {directory} does not match its certificate")
        return cls(key, certificate)

    # --- issuing ------------------------------------------------------------------------

    def issue_user_certificate(
        self, email: str, public_key: UserPublicKey, now: datetime,
        validity_days: int = USER_VALIDITY_DAYS, *, common_name: str | None = None,
    ) -> x509.Certificate:
        """An S/MIME end-entity certificate for `email` and `public_key`."""
        address = normalize_address(email)
        if validity_days < 1:
            raise InputError("validity must be at least one day")
        if isinstance(public_key, rsa.RSAPublicKey):
            key_encipherment, key_agreement = True, False
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            key_encipherment, key_agreement = False, True
        else:
            raise ImportRejected("user certificates are issued for RSA or EC keys only")
        not_after = min(
            now + timedelta(days=validity_days), self.certificate.not_valid_after_utc
        )
        cn = common_name if common_name and common_name.isprintable() else address
        ca_public = self.certificate.public_key()
        if not isinstance(ca_public, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise KeyStoreError("the server CA has an unsupported key")
        return (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.EMAIL_ADDRESS, address),
                        x509.NameAttribute(NameOID.COMMON_NAME, cn),
                    ]
                )
            )
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _SKEW)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False,
                    key_encipherment=key_encipherment, data_encipherment=False,
                    key_agreement=key_agreement, key_cert_sign=False, crl_sign=False,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
            )
            .add_extension(
                x509.SubjectAlternativeName([x509.RFC822Name(address)]), critical=False
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_public), critical=False
            )
            .sign(self._private_key, hashes.SHA256())
        )


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create `path` exclusively with `mode` (never widened by an existing file)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(fd, mode)
        handle.write(data)
