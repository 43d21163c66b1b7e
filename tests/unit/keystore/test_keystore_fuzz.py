"""Hypothesis: hostile key and certificate files give our own error, never anything else."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smime_proxy.errors import ImportRejected, WrongPassword
from smime_proxy.keystore.certs import certificate_addresses, load_certificates
from smime_proxy.keystore.pkcs import load_key_file
from unit.keystore.keystore_helpers import NOW, make_p12

_KEY = ec.generate_private_key(ec.SECP256R1())
_NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fuzz")])
_CERT = (
    x509.CertificateBuilder()
    .subject_name(_NAME)
    .issuer_name(_NAME)
    .public_key(_KEY.public_key())
    .serial_number(1)
    .not_valid_before(NOW - dt.timedelta(days=1))
    .not_valid_after(NOW + dt.timedelta(days=1))
    .add_extension(
        x509.SubjectAlternativeName([x509.RFC822Name("fuzz@example.org")]), critical=False
    )
    .sign(_KEY, hashes.SHA256())
)
_P12 = make_p12(_KEY, _CERT, None, b"pw", iterations=1)
_DER = _CERT.public_bytes(serialization.Encoding.DER)


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int) -> bytes:
    buf = bytearray(data)
    for position, value in edits:
        buf[position % len(buf)] = value
    return bytes(buf[: max(1, len(buf) - cut)])


_EDITS = st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=4)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=_EDITS, cut=st.integers(0, 40))
def test_mutated_pkcs12_gives_our_error(edits: list[tuple[int, int]], cut: int) -> None:
    data = _mutate(_P12, edits, cut)
    try:
        material = load_key_file(data, b"pw", cap=10_000)
    except (ImportRejected, WrongPassword):
        return
    assert material.certificate is not None


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=600))
def test_random_bytes_as_key_file(data: bytes) -> None:
    try:
        load_key_file(data, b"pw", cap=10_000)
    except (ImportRejected, WrongPassword):
        return


@settings(max_examples=200, deadline=None)
@given(edits=_EDITS, cut=st.integers(0, 40))
def test_mutated_certificate_gives_our_error(edits: list[tuple[int, int]], cut: int) -> None:
    try:
        certificates = load_certificates(_mutate(_DER, edits, cut))
    except ImportRejected:
        return
    for certificate in certificates:
        for address in certificate_addresses(certificate):
            assert "\n" not in address and "\r" not in address


def test_a_serial_number_that_is_not_positive_is_refused() -> None:
    """Found by the fuzz test above (a CryptographyDeprecationWarning in CI): RFC 5280
    4.1.2.2 wants a positive serial; cryptography warns today and will refuse later."""
    der = bytearray(_DER)
    at = der.index(b"\xa0\x03\x02\x01\x02") + 5  # after the version: the serial INTEGER
    assert der[at] == 0x02
    der[at + 2] |= 0x80  # its first content octet: negative now
    with pytest.raises(ImportRejected):
        load_certificates(bytes(der))
