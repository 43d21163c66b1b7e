"""Self-signed TLS material for the test upstream: a throw-away CA and a server certificate.

The CA certificate (``ca.pem``) is what clients verify against; the server certificate names
``localhost``, ``mail.example.test`` and the IP ``127.0.0.1``. Files are created once and reused
while they stay valid for at least a week, so a reused work directory keeps its trust anchor.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_MIN_REMAINING = datetime.timedelta(days=7)
_LIFETIME = datetime.timedelta(days=90)


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the PEM files: the CA to trust, the server chain and its private key."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


def tls_files(tls_dir: Path) -> TlsFiles:
    """The file names used under ``tls_dir`` (the templates name the same files)."""
    return TlsFiles(
        ca_cert=tls_dir / "ca.pem",
        server_cert=tls_dir / "server-cert.pem",
        server_key=tls_dir / "server-key.pem",
    )


def ensure_tls(tls_dir: Path, *, now: datetime.datetime | None = None) -> TlsFiles:
    """Create (or keep, if still valid) the CA and server certificate under ``tls_dir``."""
    now = now or datetime.datetime.now(datetime.UTC)
    files = tls_files(tls_dir)
    if _still_valid(files, now):
        return files
    tls_dir.mkdir(parents=True, exist_ok=True)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "smime-proxy test upstream"),
        x509.NameAttribute(NameOID.COMMON_NAME, "smime-proxy test upstream CA"),
    ])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + _LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + _LIFETIME)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.DNSName("mail.example.test"),
                x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
            ]),
            critical=False,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write(files.server_key, key_pem, 0o600)
    _write(files.server_cert, cert.public_bytes(pem) + ca_cert.public_bytes(pem), 0o644)
    _write(files.ca_cert, ca_cert.public_bytes(pem), 0o644)
    return files


def _still_valid(files: TlsFiles, now: datetime.datetime) -> bool:
    try:
        ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
        server = x509.load_pem_x509_certificates(files.server_cert.read_bytes())[0]
        if not files.server_key.is_file():
            return False
    except (OSError, ValueError, IndexError):
        return False
    return all(
        c.not_valid_before_utc <= now and c.not_valid_after_utc - now > _MIN_REMAINING
        for c in (ca, server)
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
