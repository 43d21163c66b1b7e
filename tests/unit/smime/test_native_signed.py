"""The native SignedData and attribute readers (native/src/cms.rs) against asn1crypto's
reading in crypto.signed and the BER walk of crypto.attributes, the references: for
signatures we make, RFC 4134's, BER from `openssl cms -sign -stream` and any mutation of
them, verifying with the native reader gives the same content, certificates and
per-signer results (problem text included), or the same error class, as verifying
without it; signed attributes and any damage to them read the same (error text included).

`MIME_FUZZ_EXAMPLES=20000` for a deep run (default 600).
"""

from __future__ import annotations

import datetime as dt
import subprocess
import tempfile
from pathlib import Path
from unittest import mock

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given
from hypothesis import strategies as st

from smime_proxy.crypto import attributes, signed
from smime_proxy.crypto.ber import Tlv, children, elements
from smime_proxy.crypto.keyagent import InProcessKeyAgent
from smime_proxy.crypto.signed import build_signed_data, parse_signed_data
from smime_proxy.errors import SmimeProxyError
from support.damage import (
    NATIVE_FUZZ,
    damaged_element,
    element_at,
    require_native,
    retagged,
)
from support.pki import make_ca, make_user

require_native()
from smime_proxy import _native as core  # noqa: E402 - only once it is known to be built

CONTENT = b"Content-Type: text/plain\r\n\r\n" + b"signed the same either way\r\n" * 20
RFC4134 = Path(__file__).resolve().parents[2] / "vectors" / "rfc4134"

_ROOT = make_ca()
_ALICE = make_user("alice@example.test", _ROOT)
ALICE = InProcessKeyAgent(_ALICE.key, _ALICE.cert, tuple(_ALICE.chain))
WHEN = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def _streamed(tmp: Path) -> bytes:
    """BER as openssl streams it: indefinite lengths, the content in chunks."""
    (tmp / "alice.pem").write_bytes(_ALICE.key_pem() + _ALICE.cert_pem())
    (tmp / "in.txt").write_bytes(CONTENT)
    subprocess.run(["openssl", "cms", "-sign", "-stream", "-nodetach", "-binary", "-outform",
                    "DER", "-signer", str(tmp / "alice.pem"), "-in", str(tmp / "in.txt"),
                    "-out", str(tmp / "out.der")], check=True, capture_output=True)
    return (tmp / "out.der").read_bytes()


def _outcome(der: bytes, detached: bytes | None, reader: object) -> tuple[object, ...]:
    with mock.patch.object(signed, "native", reader):
        try:
            parsed = parse_signed_data(der, detached)
        except SmimeProxyError as exc:
            return (type(exc).__name__,)
    return (parsed.content, parsed.content_type,
            [c.public_bytes(Encoding.DER) for c in parsed.certificates],
            [(None if s.certificate is None else s.certificate.public_bytes(Encoding.DER),
              s.signature_valid, s.problem, s.digest, s.signing_time, s.capabilities,
              s.key_preference) for s in parsed.signers])


def _same(der: bytes, detached: bytes | None) -> None:
    assert _outcome(der, detached, core) == _outcome(der, detached, None)


OPAQUE = build_signed_data(CONTENT, ALICE, detached=False, signing_time=WHEN)
DETACHED = build_signed_data(CONTENT, ALICE, detached=True, signing_time=WHEN)
PSS = build_signed_data(CONTENT, ALICE, detached=True, pss=True, digest="sha384")
with tempfile.TemporaryDirectory() as _tmp:
    STREAMED = _streamed(Path(_tmp))
SAMPLES: list[tuple[bytes, bytes | None]] = [(OPAQUE, None), (DETACHED, CONTENT),
                                             (PSS, CONTENT), (STREAMED, None)]


@pytest.mark.parametrize("index", range(len(SAMPLES)))
def test_our_signatures_are_read_natively_and_verify_the_same(index: int) -> None:
    der, detached = SAMPLES[index]
    assert core.read_signed(der) is not None
    _same(der, detached)
    signers = _outcome(der, detached, core)[3]
    assert isinstance(signers, list)
    assert [signer[1] for signer in signers] == [True]


def test_the_content_given_both_ways_or_neither_is_the_same_error() -> None:
    _same(OPAQUE, CONTENT)
    _same(DETACHED, None)


def test_rfc4134_signatures_are_the_same() -> None:
    samples = sorted(RFC4134.glob("4.*.bin"))
    assert len(samples) >= 9
    read = 0
    for path in samples:
        der = path.read_bytes()
        read += core.read_signed(der) is not None
        _same(der, None)
        _same(der, (RFC4134 / "ExContent.bin").read_bytes())
    assert read >= 5  # the native reader takes most of them (DSA and RSA signers)


def _nodes(der: bytes) -> list[Tlv]:
    """Every element of the structure down to the signer infos' fields."""
    found: list[Tlv] = []

    def walk(item: Tlv, depth: int) -> None:
        found.append(item)
        if item.tag & 0x20 and depth < 9:
            for child in children(der, item):
                walk(child, depth + 1)

    walk(elements(der)[0], 0)
    return found


@st.composite
def _restructured(draw: st.DrawFn) -> tuple[bytes, bytes | None]:
    """One element changed (`damaged_element`), with the sample's detached content."""
    data, detached = draw(st.sampled_from(SAMPLES))
    return damaged_element(draw, data, draw(st.sampled_from(_nodes(data)))), detached


@NATIVE_FUZZ
@given(_restructured())
def test_any_mutation_verifies_the_same_with_either_reader(
        sample: tuple[bytes, bytes | None]) -> None:
    _same(*sample)


# Seeds the mutations found: where asn1crypto decides more than the shape, the native path
# gives the same answer ([1, 0] is SignedData in the ContentInfo's [0]).

def test_seed_encapsulated_content_of_another_type_is_malformed() -> None:
    oid = element_at(OPAQUE, 1, 0, 2, 0)  # eContentType
    damaged = OPAQUE[: oid.start] + b"\xd5" + OPAQUE[oid.start + 1 :]
    _same(damaged, None)
    assert _outcome(damaged, None, core) == ("MalformedMessage",)


def test_seed_an_attribute_certificate_is_checked_by_asn1crypto() -> None:
    damaged = retagged(DETACHED, element_at(DETACHED, 1, 0, 3, 0), 0xA1)  # certificates, first
    _same(damaged, CONTENT)
    assert _outcome(damaged, CONTENT, core) == ("MalformedMessage",)


def test_seed_damaged_pss_parameters_are_reported_as_asn1crypto_reports_them() -> None:
    params = element_at(PSS, 1, 0, 4, 0, 4, 1)  # signerInfos, first, signatureAlgorithm, parameters
    damaged = retagged(PSS, params, 0x10)  # a SEQUENCE tag without the constructed bit
    _same(damaged, CONTENT)
    signers = _outcome(damaged, CONTENT, core)[3]
    assert isinstance(signers, list) and signers[0][2] == "malformed signer information"


def test_seed_a_damaged_signer_name_is_reported_as_asn1crypto_reports_it() -> None:
    rdn = element_at(OPAQUE, 1, 0, 4, 0, 1, 0, 0)  # signerInfos, first, sid, issuer, first RDN
    damaged = retagged(OPAQUE, rdn, 0xF1)  # private class
    _same(damaged, None)
    signers = _outcome(damaged, None, core)[3]
    assert isinstance(signers, list) and signers[0][2].startswith("malformed signer identifier")


def _attribute_contents() -> list[bytes]:
    found = []
    for der, _ in SAMPLES:
        item = element_at(der, 1, 0, 4, 0, 3)  # signerInfos, first, [0] signedAttrs
        if item.tag == 0xA0:
            found.append(der[item.start : item.end])
    return found


ATTRIBUTES = _attribute_contents()


def _read_both(contents: bytes) -> tuple[object, object]:
    def read(reader: object) -> object:
        with mock.patch.object(attributes, "native", reader):
            try:
                return attributes.read_attributes(contents)
            except SmimeProxyError as exc:
                return type(exc).__name__, str(exc)
    return read(core), read(None)


@st.composite
def _damaged_attributes(draw: st.DrawFn) -> bytes:
    data = draw(st.sampled_from(ATTRIBUTES))
    nodes: list[Tlv] = []

    def walk(item: Tlv) -> None:
        nodes.append(item)
        if item.tag & 0x20:
            for child in children(data, item):
                walk(child)

    for item in elements(data):
        walk(item)
    return damaged_element(draw, data, draw(st.sampled_from(nodes)),
                           tags=(0x04, 0x06, 0x30, 0x31, 0x80, 0xA0, 0x26, 0x1F), contents=False)


def test_signed_attributes_are_read_natively_the_same() -> None:
    assert len(ATTRIBUTES) >= 3
    for contents in ATTRIBUTES:
        assert core.read_attributes(contents) is not None
        both = _read_both(contents)
        assert both[0] == both[1]


@NATIVE_FUZZ
@given(_damaged_attributes())
def test_any_damaged_attributes_read_the_same(contents: bytes) -> None:
    both = _read_both(contents)
    assert both[0] == both[1]
