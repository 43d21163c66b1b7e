"""Signed attributes read with the BER walker (`crypto.attributes`), and the signer found
among the bundled certificates by its identifier in either form (RFC 5652 5.3).

The reader is checked against asn1crypto's own BER parser on attributes hypothesis writes,
and on the attributes of a real signature; the signer lookup with a certificate named by
its subject key identifier and with an issuer name written in another form.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from asn1crypto import cms, core, parser
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from hypothesis import example, given, settings
from hypothesis import strategies as st

from smime_proxy.crypto import attributes, der, oids
from smime_proxy.crypto.keyagent import InProcessKeyAgent
from smime_proxy.crypto.signed import build_signed_data, parse_signed_data
from smime_proxy.errors import MalformedMessage
from support.pki import NOW, Identity

_OIDS = ["1.2.840.113549.1.9.3", "1.2.840.113549.1.9.4", "1.3.6.1.4.1.311.16.4", "2.5.4.3",
         "1.2.840.113549.1.9.15"]


def _values() -> st.SearchStrategy[bytes]:
    leaves = st.one_of(
        st.sampled_from(_OIDS).map(der.oid),
        st.binary(max_size=40).map(der.octet_string),
        st.binary(max_size=10).map(lambda b: der.tlv(0x17, b)),
        st.integers(-(2**70), 2**70).map(der.integer),
        st.binary(max_size=6).map(lambda b: b"\x9f\x81\x22" + der.length(len(b)) + b),
    )
    return st.recursive(leaves, lambda inner: st.lists(inner, max_size=3).map(
        lambda items: der.sequence(*items)), max_leaves=6)


def _reference(contents: bytes) -> list[tuple[str, tuple[bytes, ...]]]:
    """The same reading with asn1crypto's generic BER parser (X.690, no schema)."""
    found = []
    for attribute in _tlvs(contents):
        oid_tlv, values_tlv = _tlvs(parser.parse(attribute)[4])
        values = tuple(_tlvs(parser.parse(values_tlv)[4]))
        found.append((core.ObjectIdentifier.load(oid_tlv).dotted, values))
    return found


def _tlvs(data: bytes) -> list[bytes]:
    items, pointer = [], 0
    while pointer < len(data):
        _, _, _, header, contents, trailer = parser.parse(data[pointer:])
        end = pointer + len(header) + len(contents) + len(trailer)
        items.append(data[pointer:end])
        pointer = end
    return items


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_OIDS), st.lists(_values(), max_size=3)),
                max_size=5))
def test_reading_is_asn1cryptos(attrs: list[tuple[str, list[bytes]]]) -> None:
    contents = b"".join(der.sequence(der.oid(oid), der.tlv(0x31, b"".join(values)))
                        for oid, values in attrs)
    read = [(a.oid, a.values) for a in attributes.read_attributes(contents)]
    assert read == _reference(contents) == [(oid, tuple(values)) for oid, values in attrs]


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
@example(b"\x30\x03\x06\x01\x2a")  # no SET of values
@example(b"\x30\x05\x06\x00\x31\x00")  # an empty OID
@example(b"\x30\x84\xff\xff\xff\xff")  # a length past the end
@example(b"\x1f\xff\xff\xff\xff\x01\x00")  # a tag number too large
def test_any_bytes_read_or_malformed(data: bytes) -> None:
    with contextlib.suppress(MalformedMessage):
        for attribute in attributes.read_attributes(data):
            assert attribute.oid
            for value in attribute.values:
                assert value in data
                with contextlib.suppress(MalformedMessage):
                    attributes.capability_oids(value)
                with contextlib.suppress(MalformedMessage):
                    attributes.oid_value(value, "x")


def test_our_signatures_attributes(alice: Identity) -> None:
    agent = InProcessKeyAgent(alice.key, alice.cert, tuple(alice.chain))
    signed = build_signed_data(b"hello\r\n", agent, detached=True, signing_time=NOW)
    info = cms.ContentInfo.load(signed)
    signed_attrs = info["content"]["signer_infos"][0]["signed_attrs"]
    read = attributes.read_attributes(signed_attrs.contents)
    assert [a.oid for a in read] == [a["type"].dotted for a in signed_attrs]
    assert [list(a.values) for a in read] == [[v.dump() for v in a["values"]]
                                                for a in signed_attrs]
    (capabilities,) = attributes.values_of(read, oids.SMIME_CAPABILITIES)
    assert list(attributes.capability_oids(capabilities[0])) == [
        c["capability_id"].dotted for a in signed_attrs
        if a["type"].dotted == oids.SMIME_CAPABILITIES for c in a["values"][0]]
    (content_type,) = attributes.values_of(read, oids.CONTENT_TYPE)
    assert attributes.oid_value(content_type[0], "contentType") == oids.DATA
    with pytest.raises(MalformedMessage):
        attributes.octets_value(content_type[0], "messageDigest")


def _with_sid(signed: bytes, sid: cms.SignerIdentifier) -> bytes:
    info = cms.ContentInfo.load(signed)
    info["content"]["signer_infos"][0]["sid"] = sid
    encoded: bytes = info.dump(force=True)
    return encoded


def _ski(certificate: x509.Certificate) -> bytes:
    return certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def test_the_signer_is_found_by_key_identifier(alice: Identity) -> None:
    agent = InProcessKeyAgent(alice.key, alice.cert, tuple(alice.chain))
    signed = build_signed_data(b"hello\r\n", agent, detached=True, signing_time=NOW)
    by_key = _with_sid(signed, cms.SignerIdentifier(
        name="subject_key_identifier", value=_ski(alice.cert)))
    (check,) = parse_signed_data(by_key, b"hello\r\n").signers
    assert check.signature_valid and check.certificate == alice.cert
    unknown = _with_sid(signed, cms.SignerIdentifier(
        name="subject_key_identifier", value=b"\x01" * 20))
    (check,) = parse_signed_data(unknown, b"hello\r\n").signers
    assert check.certificate is None and not check.signature_valid


def test_the_signer_is_found_by_an_issuer_name_written_otherwise(alice: Identity) -> None:
    """RFC 5280 7.1: the same name in another string type and case still names the signer
    (asn1crypto's comparison, after the byte-for-byte one)."""
    agent = InProcessKeyAgent(alice.key, alice.cert, tuple(alice.chain))
    signed = build_signed_data(b"hello\r\n", agent, detached=True, signing_time=NOW)
    issuer = asn1_x509.Name.load(alice.cert.issuer.public_bytes())
    rewritten = asn1_x509.Name.build({k: v.upper() for k, v in issuer.native.items()},
                                     use_printable=True)
    assert rewritten.dump() != issuer.dump() and rewritten == issuer
    sid = cms.SignerIdentifier(name="issuer_and_serial_number", value={
        "issuer": rewritten, "serial_number": alice.cert.serial_number})
    (check,) = parse_signed_data(_with_sid(signed, sid), b"hello\r\n").signers
    assert check.signature_valid and check.certificate == alice.cert
    other = cms.SignerIdentifier(name="issuer_and_serial_number", value={
        "issuer": rewritten, "serial_number": alice.cert.serial_number + 1})
    (check,) = parse_signed_data(_with_sid(signed, other), b"hello\r\n").signers
    assert check.certificate is None


def test_a_signature_with_malformed_attributes_is_not_valid(alice: Identity) -> None:
    agent = InProcessKeyAgent(alice.key, alice.cert, tuple(alice.chain))
    signed = bytearray(build_signed_data(b"hello\r\n", agent, detached=True,
                                         signing_time=NOW))
    # the contentType attribute's OID tag (06 09 2a 86 48 86 f7 0d 01 09 03) made a SET
    at = bytes(signed).index(der.oid(oids.CONTENT_TYPE))
    signed[at] = 0x31
    (check,) = parse_signed_data(bytes(signed), b"hello\r\n").signers
    assert not check.signature_valid and check.problem


def test_answers_kept_per_certificate_are_each_certificates_own(alice: Identity,
                                                                  bob: Identity) -> None:
    """`crypto.per_certificate`: each certificate object gets its own answer, a new object of
    the same DER too, and past the bound (the answers dropped, ids free for reuse) nothing
    is answered for the wrong certificate. Every function kept so answers as it would
    anew."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from smime_proxy.crypto import per_certificate, signer_info
    from smime_proxy.keystore import certs

    kept: list[per_certificate.PerCertificate[Any]] = [
        signer_info.issuer_and_serial_of, signer_info.subject_key_identifier,
        certs.certificate_addresses, certs.subject_and_issuer, certs.fingerprint]

    def same(cert: x509.Certificate) -> None:
        for function in kept:
            assert function(cert) == function.__wrapped__(cert)

    for cert in (alice.cert, bob.cert, *alice.chain, alice.cert):
        same(cert)
    for _ in range(3 * per_certificate.KEPT // 2):  # objects come and go: ids repeat
        for source in (alice.cert, bob.cert, alice.chain[0]):
            same(x509.load_der_x509_certificate(source.public_bytes(Encoding.DER)))
    assert all(len(function) <= per_certificate.KEPT for function in kept)
