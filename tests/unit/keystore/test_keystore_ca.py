"""The server CA: `init` storage and file modes, loading, issued certificate profile."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from smime_proxy.errors import InputError, KeyExists, KeyStoreError
from smime_proxy.keystore.ca import CA_CERT_FILENAME, CA_KEY_FILENAME, ServerCA
from unit.keystore.keystore_helpers import NOW


def test_init_stores_key_0600_and_loads(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    ca = ServerCA.init(data_dir, NOW, name="Example Mail CA", key_type="ec-p256")
    directory = ServerCA.directory(data_dir)
    assert stat.S_IMODE((directory / CA_KEY_FILENAME).stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert b"PRIVATE KEY" in (directory / CA_KEY_FILENAME).read_bytes()
    assert ServerCA.exists(data_dir)
    loaded = ServerCA.load(data_dir)
    assert loaded.certificate == ca.certificate
    assert "Example Mail CA" in repr(loaded)
    assert "PRIVATE" not in repr(loaded)
    with pytest.raises(KeyExists):
        ServerCA.init(data_dir, NOW)


def test_ca_certificate_profile(tmp_path: Path) -> None:
    ca = ServerCA.init(tmp_path, NOW, key_type="ec-p256")
    cert = ca.certificate
    assert cert.subject == cert.issuer
    assert cert.subject.rfc4514_string() == "CN=smime-proxy Server CA,O=smime-proxy"
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    cert.verify_directly_issued_by(cert)


def test_default_ca_key_is_rsa3072(tmp_path: Path) -> None:
    ca = ServerCA.init(tmp_path, NOW)
    key = ca.certificate.public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 3072


def test_load_failures(tmp_path: Path) -> None:
    with pytest.raises(KeyStoreError, match="ca init"):
        ServerCA.load(tmp_path)
    ServerCA.init(tmp_path, NOW, key_type="ec-p256")
    directory = ServerCA.directory(tmp_path)
    good_key = (directory / CA_KEY_FILENAME).read_bytes()
    (directory / CA_KEY_FILENAME).write_bytes(b"garbage")
    with pytest.raises(KeyStoreError, match="damaged"):
        ServerCA.load(tmp_path)
    (directory / CA_KEY_FILENAME).write_bytes(good_key)
    other = ServerCA.create("Other", NOW, key_type="ec-p256")
    (directory / CA_CERT_FILENAME).write_bytes(
        other.certificate.public_bytes(serialization.Encoding.PEM)
    )
    with pytest.raises(KeyStoreError, match="does not match"):
        ServerCA.load(tmp_path)


def test_bad_names_are_refused() -> None:
    with pytest.raises(InputError):
        ServerCA.create("", NOW, key_type="ec-p256")
    with pytest.raises(InputError):
        ServerCA.create("a\nb", NOW, key_type="ec-p256")


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_issued_user_certificate_profile(server_ca: ServerCA, kind: str) -> None:
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
        rsa.generate_private_key(65537, 2048)
        if kind == "rsa"
        else ec.generate_private_key(ec.SECP256R1())
    )
    cert = server_ca.issue_user_certificate("Carol@Example.org", private.public_key(), NOW)
    cert.verify_directly_issued_by(server_ca.certificate)
    ext = cert.extensions
    assert ext.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.EMAIL_PROTECTION]
    )
    san = ext.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.RFC822Name) == ["carol@example.org"]
    usage = ext.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature
    assert usage.value.key_encipherment is (kind == "rsa")
    assert usage.value.key_agreement is (kind == "ec")
    bc = ext.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ski = ext.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(private.public_key())
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = server_ca.certificate.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier
    ).value
    assert aki.key_identifier == ca_ski.digest
    assert cert.not_valid_before_utc <= NOW
    assert cert.not_valid_after_utc == NOW + dt.timedelta(days=730)
    assert cert.subject.rfc4514_string() == (
        "CN=carol@example.org,1.2.840.113549.1.9.1=carol@example.org"
    )


def test_issued_validity_is_configurable_and_bounded(server_ca: ServerCA) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = server_ca.issue_user_certificate("a@example.org", key.public_key(), NOW, 30)
    assert cert.not_valid_after_utc == NOW + dt.timedelta(days=30)
    longest = server_ca.issue_user_certificate("a@example.org", key.public_key(), NOW, 100_000)
    assert longest.not_valid_after_utc == server_ca.certificate.not_valid_after_utc
    with pytest.raises(InputError):
        server_ca.issue_user_certificate("a@example.org", key.public_key(), NOW, 0)
    with pytest.raises(InputError):
        server_ca.issue_user_certificate("a@example.org\r\nBcc: b@x.org", key.public_key(), NOW)
