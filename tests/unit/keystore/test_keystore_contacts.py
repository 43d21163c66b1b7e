"""Address book: addresses of a certificate, add/list/remove, choosing the recipient's
certificate (memory twin and SQLite)."""

from __future__ import annotations

import datetime as dt
from functools import cache

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from smime_proxy.errors import ImportRejected, InputError, KeyStoreError, NoRecipientCertificate
from smime_proxy.keystore.certs import certificate_addresses, load_certificates, normalize_address
from smime_proxy.keystore.contacts import Contacts, usable_for_encryption
from smime_proxy.keystore.pkcs import load_key_file
from unit.keystore.keystore_helpers import NOW, vector

DAY = dt.timedelta(days=1)
_ISSUER_KEY = ec.generate_private_key(ec.SECP256R1())
_ISSUER = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Contacts Test CA")])
_UNSET = object()


@cache
def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


def make_cert(
    sans: tuple[str, ...] = ("bob@example.org",),
    *,
    subject_email: str | None = None,
    key: str = "rsa",
    eku: object = _UNSET,  # _UNSET: emailProtection; None: no extension; else a list
    key_usage: object = _UNSET,  # _UNSET: the right one for the key; None: no extension
    not_before: dt.datetime = NOW - 30 * DAY,
    not_after: dt.datetime = NOW + 300 * DAY,
    ca: bool = False,
) -> x509.Certificate:
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    if key == "rsa":
        private = _rsa_key()
    elif key == "ec":
        private = ec.generate_private_key(ec.SECP256R1())
    else:
        private = ed25519.Ed25519PrivateKey.generate()
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, "Bob")]
    if subject_email:
        attrs.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, subject_email))
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(_ISSUER)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name(a) for a in sans]), critical=False
        )
    if eku is _UNSET:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
    elif eku is not None:
        assert isinstance(eku, list)
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    if key_usage is _UNSET:
        usage = {"key_encipherment": key == "rsa", "key_agreement": key == "ec"}
    else:
        usage = key_usage  # type: ignore[assignment]
    if usage is not None:
        assert isinstance(usage, dict)
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=usage.get("key_encipherment", False),
                data_encipherment=False,
                key_agreement=usage.get("key_agreement", False),
                key_cert_sign=ca,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    return builder.sign(_ISSUER_KEY, hashes.SHA256())


def pem(*certificates: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


# --- addresses --------------------------------------------------------------------------------


def test_addresses_from_sans_lowercased() -> None:
    cert = make_cert(("Bob@Example.ORG", "robert@example.org"), subject_email="other@example.org")
    assert certificate_addresses(cert) == ("bob@example.org", "robert@example.org")


def test_subject_email_is_the_fallback() -> None:
    assert certificate_addresses(make_cert((), subject_email="Bob@Example.org")) == (
        "bob@example.org",
    )
    assert certificate_addresses(make_cert(())) == ()


def test_thunderbird_certificates_carry_the_address_in_the_subject() -> None:
    material = load_key_file(vector("thunderbird", "smime", "Bob.p12").read_bytes(), b"nss")
    assert certificate_addresses(material.certificate) == ("bob@example.com",)


def test_unsafe_addresses_are_ignored() -> None:
    cert = make_cert(("bob@example.org\r\nBcc: eve@example.org", "ok@example.org"))
    assert certificate_addresses(cert) == ("ok@example.org",)
    for bad in ("", "bob", "bob@", "@example.org", "a b@example.org", "<bob@example.org>",
                "bob@exa..mple.org", "bob@example.org\n"):
        with pytest.raises(InputError):
            normalize_address(bad + ("x" if bad.endswith("\n") else ""))
    assert normalize_address("  Bob@Example.Org ") == "bob@example.org"


# --- add / list / remove ----------------------------------------------------------------------


def test_add_pem_and_der_list_remove(contacts: Contacts) -> None:
    first = make_cert(("bob@example.org",), not_before=NOW - 100 * DAY)
    second = make_cert(("Bob@example.org", "robert@example.org"), key="ec")
    added = contacts.add("alice", pem(first))
    assert [s.addresses for s in added] == [("bob@example.org",)]
    contacts.add("alice", second.public_bytes(serialization.Encoding.DER))
    entries = contacts.entries("alice")
    assert [e.certificate for e in entries] == [second, first]  # newest first per address
    assert entries[0].summary.key_type == "EC secp256r1"
    assert contacts.certificates_for("alice", "ROBERT@example.org") == [second]
    assert contacts.entries("carol") == []
    assert contacts.remove("alice", "Bob@Example.org") == 2
    assert [e.certificate for e in contacts.entries("alice")] == [second]
    with pytest.raises(KeyStoreError, match="no certificate"):
        contacts.remove("alice", "bob@example.org")
    with pytest.raises(InputError):
        contacts.remove("alice", "not an address")


def test_add_a_file_with_several_certificates(contacts: Contacts) -> None:
    ca_cert = make_cert((), ca=True, eku=None, key_usage=None)
    no_address = make_cert(())
    bob = make_cert(("bob@example.org",))
    added = contacts.add("alice", pem(ca_cert, no_address, bob))
    assert [s.addresses for s in added] == [("bob@example.org",)]
    assert len(contacts.entries("alice")) == 1


@pytest.mark.parametrize(
    "data",
    [b"", b"garbage", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
     b"\x30\x82\x01\x00" + b"\x00" * 10],
)
def test_add_garbage_is_refused(contacts: Contacts, data: bytes) -> None:
    with pytest.raises(ImportRejected):
        contacts.add("alice", data)


def test_add_without_address_or_ca_only_is_refused(contacts: Contacts) -> None:
    with pytest.raises(ImportRejected, match="e-mail address"):
        contacts.add("alice", pem(make_cert(())))
    with pytest.raises(ImportRejected, match="e-mail address"):
        contacts.add("alice", vector("thunderbird", "smime", "TestCA.pem").read_bytes())


def test_add_the_rfc9216_certificates(contacts: Contacts) -> None:
    for name in ("alice@smime.example.enc.pem", "bob@smime.example.sig.pem",
                 "carlos@smime.example.enc.pem"):
        contacts.add("user", vector("rfc9216", "certs", name).read_bytes())
    addresses = sorted(a for e in contacts.entries("user") for a in e.summary.addresses)
    assert addresses == ["alice@smime.example", "bob@smime.example", "carlos@smime.example"]
    at = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    assert contacts.choose_certificate("user", "alice@smime.example", at)
    # Carlos' encryption certificate is X25519: not usable by our RSA/EC encryption.
    with pytest.raises(NoRecipientCertificate):
        contacts.choose_certificate("user", "carlos@smime.example", at)


def test_take_certificate(contacts: Contacts) -> None:
    assert contacts.take_certificate("alice", make_cert(("signer@example.org",)))
    assert not contacts.take_certificate("alice", make_cert(()))
    assert len(contacts.certificates_for("alice", "signer@example.org")) == 1


def test_taking_a_kept_certificate_again_writes_nothing() -> None:
    """Each signed message read takes its signer's certificate: once kept (with what the
    signature said), reading more of that signer's mail must not write again."""
    from smime_proxy.keystore.ports import ContactCertificate, MemoryAddressBook

    class Counting(MemoryAddressBook):
        writes = 0

        def add(self, user: str, contact: ContactCertificate) -> None:
            Counting.writes += 1
            super().add(user, contact)

    contacts = Contacts(Counting())
    cert = make_cert(("signer@example.org", "other@example.org"))
    for _ in range(3):
        assert contacts.take_certificate("alice", cert, (GCM,))
    assert Counting.writes == 1
    contacts.take_certificate("alice", cert, ())  # says nothing: nothing to change
    assert Counting.writes == 1
    contacts.take_certificate("alice", cert, (CBC,))  # says something new
    assert Counting.writes == 2 and not contacts.reads_gcm("alice", "signer@example.org", cert)
    contacts.remove("alice", "other@example.org")  # an address no longer linked: kept again
    contacts.take_certificate("alice", cert, (CBC,))
    assert Counting.writes == 3 and len(contacts.certificates_for("alice", "other@example.org"))


def test_load_certificates_limits() -> None:
    with pytest.raises(ImportRejected, match="too large"):
        load_certificates(b"\x00" * (2 << 20))


# --- choosing the recipient's certificate -----------------------------------------------------


def test_choose_prefers_the_newest_valid_one(contacts: Contacts) -> None:
    old = make_cert(not_before=NOW - 300 * DAY)
    newer = make_cert(not_before=NOW - 10 * DAY, key="ec")
    future = make_cert(not_before=NOW + 10 * DAY)
    expired = make_cert(not_before=NOW - 900 * DAY, not_after=NOW - DAY)
    for cert in (old, newer, future, expired):
        contacts.add("alice", pem(cert))
    assert contacts.choose_certificate("alice", "BOB@example.org", NOW) == newer
    # Time is passed in: later, the future one is valid and newest.
    assert contacts.choose_certificate("alice", "bob@example.org", NOW + 20 * DAY) == future


@pytest.mark.parametrize(
    ("cert_args", "usable"),
    [
        ({}, True),
        ({"eku": None}, True),  # no EKU: any use
        ({"eku": [ExtendedKeyUsageOID.CLIENT_AUTH]}, False),
        ({"eku": [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.EMAIL_PROTECTION]}, True),
        ({"eku": [x509.ObjectIdentifier("2.5.29.37.0")]}, True),  # anyExtendedKeyUsage
        ({"key_usage": None}, True),  # no keyUsage: any use
        ({"key_usage": {}}, False),  # RSA signing-only
        ({"key_usage": {"key_agreement": True}}, False),
        ({"key": "ec", "key_usage": {"key_encipherment": True}}, False),
        ({"key": "ec"}, True),
        ({"key": "ed25519", "key_usage": None}, False),
        ({"ca": True, "key_usage": None}, False),
        ({"not_after": NOW - DAY}, False),
        ({"not_before": NOW + DAY}, False),
    ],
)
def test_usable_for_encryption(cert_args: dict[str, object], usable: bool) -> None:
    cert = make_cert(**cert_args)  # type: ignore[arg-type]
    assert usable_for_encryption(cert, NOW) is usable


def test_choose_raises_when_nothing_fits(contacts: Contacts) -> None:
    contacts.add("alice", pem(make_cert(eku=[ExtendedKeyUsageOID.CLIENT_AUTH])))
    with pytest.raises(NoRecipientCertificate) as info:
        contacts.choose_certificate("alice", "bob@example.org", NOW)
    assert info.value.addresses == ["bob@example.org"]
    with pytest.raises(NoRecipientCertificate):
        contacts.choose_certificate("alice", "nobody@example.org", NOW)
    with pytest.raises(NoRecipientCertificate) as bad:
        contacts.choose_certificate("alice", "x\r\nBcc: y@example.org", NOW)
    assert "\n" not in str(bad.value)


GCM = "2.16.840.1.101.3.4.1.46"
CBC = "2.16.840.1.101.3.4.1.42"


def test_what_a_signer_announced_is_kept_per_certificate(contacts: Contacts) -> None:
    """Issue 14 (capabilities): the smimeCapabilities of the latest verified signed mail
    decide; a signature that says nothing, or an import, changes nothing."""
    cert = make_cert(("signer@example.org",))
    assert not contacts.reads_gcm("alice", "signer@example.org", cert)  # unknown
    contacts.take_certificate("alice", cert, (GCM, CBC))
    assert contacts.reads_gcm("alice", "Signer@Example.org", cert)
    contacts.take_certificate("alice", cert, ())
    contacts.add("alice", cert.public_bytes(serialization.Encoding.PEM))
    assert contacts.reads_gcm("alice", "signer@example.org", cert)
    contacts.take_certificate("alice", cert, (CBC,))
    assert not contacts.reads_gcm("alice", "signer@example.org", cert)
    other = make_cert(("signer@example.org",))
    contacts.take_certificate("alice", other, (GCM,))
    assert not contacts.reads_gcm("alice", "signer@example.org", cert)  # per certificate
    assert contacts.reads_gcm("alice", "signer@example.org", other)
    assert not contacts.reads_gcm("bob", "signer@example.org", other)  # per user
    assert not contacts.reads_gcm("alice", "bad\r\naddress", other)
