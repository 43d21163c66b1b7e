"""Negative cases: notes/security.md items 4 and 5, nesting (DESIGN 3), CLI garbage.

Malformed CMS is built here with asn1crypto directly (never with our own signer), so each
case breaks exactly one rule; positive controls built the same way prove the builder right.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from asn1crypto import algos, cms
from asn1crypto import x509 as ax509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from smime_proxy.crypto.keyagent import InProcessKeyAgent
from smime_proxy.errors import (
    ChainUntrusted,
    DecryptionFailed,
    NotEncrypted,
    NotSigned,
    SignatureInvalid,
    SignerMismatch,
    VerificationError,
)
from smime_proxy.smime import (
    Recipient,
    SignatureReport,
    decrypt_message,
    encrypt_message,
    inspect_signature,
    sign_message,
    verify_message,
)
from support.cmsutil import (
    Run,
    assert_clean_failure,
    multipart_signed,
    pkcs7_mime,
    run_cli,
    split_message,
)
from support.pki import NOW, Identity, make_ca, make_user

ALICE = "alice@example.test"
RNG = random.Random(4134)
RIGHT_PW = b"right-pw-7f3a"
WRONG_PW = b"bad-pw-9c2e"
ENTITY = b"Content-Type: text/plain; charset=utf-8\r\n\r\nPay 100 EUR to account 1234.\r\n"
SECRET = b"Pay 100 EUR to account 1234."


@dataclass
class Pki:
    root: Identity
    inter: Identity
    alice: Identity
    alice_ec: Identity
    other_root: Identity
    stranger: Identity  # alice@example.test, issued under other_root


@pytest.fixture(scope="module")
def pki() -> Pki:
    root = make_ca("Negative Root")
    inter = make_ca("Negative Intermediate", issuer=root)
    other_root = make_ca("Untrusted Root")
    return Pki(
        root=root,
        inter=inter,
        alice=make_user(ALICE, inter),
        alice_ec=make_user(ALICE, inter, kind="p256"),
        other_root=other_root,
        stranger=make_user(ALICE, other_root),
    )


def agent(ident: Identity) -> InProcessKeyAgent:
    return InProcessKeyAgent(ident.key, ident.cert, tuple(ident.chain))


def message(from_field: str = f"Alice <{ALICE}>", extra: str = "", body: bytes = ENTITY) -> bytes:
    head = (
        f"From: {from_field}\r\nTo: bob@example.test\r\n{extra}Subject: negative\r\n"
        "Date: Mon, 01 Jun 2026 12:00:00 +0000\r\nMIME-Version: 1.0\r\n"
    )
    return head.encode() + body


def headers(from_field: str = f"Alice <{ALICE}>", extra: str = "") -> str:
    return f"From: {from_field}\r\nTo: bob@example.test\r\n{extra}Subject: negative\r\n"


# --- an independent CMS SignedData builder (asn1crypto) -----------------------------------------


def a_cert(ident: Identity) -> ax509.Certificate:
    return ax509.Certificate.load(ident.cert.public_bytes(serialization.Encoding.DER))


def attr(kind: str, *values: object) -> cms.CMSAttribute:
    return cms.CMSAttribute({"type": kind, "values": list(values)})


def default_attrs(content: bytes) -> list[cms.CMSAttribute]:
    return [
        attr("content_type", "data"),
        attr("signing_time", cms.Time({"utc_time": NOW})),
        attr("message_digest", hashlib.sha256(content).digest()),
    ]


def signer_info(
    ident: Identity,
    attrs: Sequence[cms.CMSAttribute] | None,
    content: bytes,
    *,
    corrupt: bool = False,
) -> cms.SignerInfo:
    cert = a_cert(ident)
    sid = cms.SignerIdentifier(
        {
            "issuer_and_serial_number": cms.IssuerAndSerialNumber(
                {"issuer": cert.issuer, "serial_number": cert.serial_number}
            )
        }
    )
    key = ident.key
    is_rsa = isinstance(key, rsa.RSAPrivateKey)
    info: dict[str, object] = {
        "version": "v1",
        "sid": sid,
        "digest_algorithm": algos.DigestAlgorithm({"algorithm": "sha256"}),
        "signature_algorithm": algos.SignedDigestAlgorithm(
            {"algorithm": "sha256_rsa" if is_rsa else "sha256_ecdsa"}
        ),
        "signature": b"",
    }
    if attrs is not None:
        info["signed_attrs"] = cms.CMSAttributes(list(attrs))
    si = cms.SignerInfo(info)
    if attrs is not None:
        tagged = si["signed_attrs"].dump()
        to_sign = b"\x31" + tagged[1:]  # RFC 5652 5.4: hash the SET OF, not the [0]
    else:
        to_sign = content
    if isinstance(key, rsa.RSAPrivateKey):
        sig = key.sign(to_sign, padding.PKCS1v15(), hashes.SHA256())
    else:
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        sig = key.sign(to_sign, ec.ECDSA(hashes.SHA256()))
    if corrupt:
        sig = bytes([sig[0] ^ 0x01]) + sig[1:] if is_rsa else sig[:-1] + bytes([sig[-1] ^ 1])
    si["signature"] = sig
    return si


def signed_data(
    signer_infos: Sequence[cms.SignerInfo],
    certs: Sequence[Identity],
    econtent: bytes | None,
) -> bytes:
    chain: list[ax509.Certificate] = []
    for ident in certs:
        chain.append(a_cert(ident))
        chain.extend(
            ax509.Certificate.load(c.public_bytes(serialization.Encoding.DER)) for c in ident.chain
        )
    encap: dict[str, object] = {"content_type": "data"}
    if econtent is not None:
        encap["content"] = econtent
    sd = cms.SignedData(
        {
            "version": "v1",
            "digest_algorithms": [algos.DigestAlgorithm({"algorithm": "sha256"})],
            "encap_content_info": encap,
            "certificates": [cms.CertificateChoices({"certificate": c}) for c in chain],
            "signer_infos": list(signer_infos),
        }
    )
    der: bytes = cms.ContentInfo({"content_type": "signed_data", "content": sd}).dump()
    return der


def detached(p7s: bytes, content: bytes = ENTITY, from_field: str = f"Alice <{ALICE}>") -> bytes:
    return multipart_signed(headers(from_field), content, p7s)


def opaque(p7s: bytes, from_field: str = f"Alice <{ALICE}>") -> bytes:
    return pkcs7_mime(p7s, "signed-data", sender=from_field, to="bob@example.test")


def inspect(pki: Pki, msg: bytes) -> SignatureReport:
    return inspect_signature(msg, [pki.root.cert], now=NOW)


def assert_never_valid(pki: Pki, msg: bytes, error: type[VerificationError]) -> SignatureReport:
    report = inspect(pki, msg)
    assert not report.valid
    assert report.reason
    with pytest.raises(error):
        verify_message(msg, [pki.root.cert], now=NOW)
    return report


# --- positive controls for the builder -------------------------------------------------------


@pytest.mark.parametrize("who", ["alice", "alice_ec"])
def test_control_builder_detached_is_valid(pki: Pki, who: str) -> None:
    ident: Identity = getattr(pki, who)
    p7s = signed_data([signer_info(ident, default_attrs(ENTITY), ENTITY)], [ident], None)
    report = verify_message(detached(p7s), [pki.root.cert], now=NOW)
    assert report.valid
    assert report.from_address == ALICE


def test_control_builder_opaque_is_valid(pki: Pki) -> None:
    p7s = signed_data([signer_info(pki.alice, default_attrs(ENTITY), ENTITY)], [pki.alice], ENTITY)
    report = verify_message(opaque(p7s), [pki.root.cert], now=NOW)
    assert report.valid
    assert report.content is not None and SECRET in report.content


def test_control_two_good_signers_are_valid(pki: Pki) -> None:
    sis = [
        signer_info(pki.alice, default_attrs(ENTITY), ENTITY),
        signer_info(pki.alice_ec, default_attrs(ENTITY), ENTITY),
    ]
    report = verify_message(detached(signed_data(sis, [pki.alice, pki.alice_ec], None)),
                            [pki.root.cert], now=NOW)  # fmt: skip
    assert report.valid
    assert len(report.signers) == 2


# --- security.md item 4: CMS signature edge cases ------------------------------------------------


def test_econtent_plus_detached_content(pki: Pki) -> None:
    """Both present, even identical: refused (notes/crypto.md rule 7)."""
    p7s = signed_data([signer_info(pki.alice, default_attrs(ENTITY), ENTITY)], [pki.alice], ENTITY)
    assert_never_valid(pki, detached(p7s), SignatureInvalid)


def test_econtent_differs_from_detached_content(pki: Pki) -> None:
    other = ENTITY.replace(b"100", b"900")
    p7s = signed_data([signer_info(pki.alice, default_attrs(other), other)], [pki.alice], other)
    assert_never_valid(pki, detached(p7s), SignatureInvalid)


@pytest.mark.parametrize("form", ["detached", "opaque"])
def test_zero_signers(pki: Pki, form: str) -> None:
    p7s = signed_data([], [pki.alice], None if form == "detached" else ENTITY)
    msg = detached(p7s) if form == "detached" else opaque(p7s)
    report = assert_never_valid(pki, msg, VerificationError)
    assert not report.signers


@pytest.mark.parametrize("bad_first", [False, True])
def test_one_good_and_one_bad_signer(pki: Pki, bad_first: bool) -> None:
    good = signer_info(pki.alice, default_attrs(ENTITY), ENTITY)
    bad = signer_info(pki.alice_ec, default_attrs(ENTITY), ENTITY, corrupt=True)
    sis = [bad, good] if bad_first else [good, bad]
    msg = detached(signed_data(sis, [pki.alice, pki.alice_ec], None))
    report = assert_never_valid(pki, msg, SignatureInvalid)
    assert sorted(s.signature_valid for s in report.signers) == [False, True]


def test_good_signer_and_signer_over_other_content(pki: Pki) -> None:
    other = ENTITY.replace(b"100", b"900")
    sis = [
        signer_info(pki.alice, default_attrs(ENTITY), ENTITY),
        signer_info(pki.alice_ec, default_attrs(other), other),
    ]
    msg = detached(signed_data(sis, [pki.alice, pki.alice_ec], None))
    assert_never_valid(pki, msg, SignatureInvalid)


def test_corrupted_signature_value(pki: Pki) -> None:
    si = signer_info(pki.alice, default_attrs(ENTITY), ENTITY, corrupt=True)
    report = assert_never_valid(
        pki, detached(signed_data([si], [pki.alice], None)), SignatureInvalid
    )
    assert not report.signers[0].signature_valid


def attribute_case(name: str) -> list[cms.CMSAttribute]:
    digest = hashlib.sha256(ENTITY).digest()
    time = cms.Time({"utc_time": NOW})
    if name == "no-content-type":
        return [attr("signing_time", time), attr("message_digest", digest)]
    if name == "no-message-digest":
        return [attr("content_type", "data"), attr("signing_time", time)]
    if name == "content-type-twice":
        return [
            attr("content_type", "data"),
            attr("content_type", "data"),
            attr("message_digest", digest),
        ]
    if name == "content-type-two-values":
        return [attr("content_type", "data", "data"), attr("message_digest", digest)]
    if name == "message-digest-twice":
        return [
            attr("content_type", "data"),
            attr("message_digest", digest),
            attr("message_digest", digest),
        ]
    if name == "message-digest-two-values":
        return [attr("content_type", "data"), attr("message_digest", digest, digest)]
    if name == "message-digest-wrong":
        return [attr("content_type", "data"), attr("message_digest", hashlib.sha256(b"x").digest())]
    if name == "content-type-not-data":
        return [attr("content_type", "signed_data"), attr("message_digest", digest)]
    if name == "empty":
        return []
    raise AssertionError(name)


@pytest.mark.parametrize(
    "case",
    [
        "no-content-type",
        "no-message-digest",
        "content-type-twice",
        "content-type-two-values",
        "message-digest-twice",
        "message-digest-two-values",
        "message-digest-wrong",
        "content-type-not-data",
        "empty",
    ],
)
@pytest.mark.parametrize("form", ["detached", "opaque"])
def test_signed_attribute_rules(pki: Pki, case: str, form: str) -> None:
    """Each case is correctly signed over its (broken) attributes: only the rule can refuse it."""
    si = signer_info(pki.alice, attribute_case(case), ENTITY)
    p7s = signed_data([si], [pki.alice], None if form == "detached" else ENTITY)
    msg = detached(p7s) if form == "detached" else opaque(p7s)
    report = assert_never_valid(pki, msg, SignatureInvalid)
    assert not any(s.signature_valid for s in report.signers)


def test_signing_time_as_unsigned_attribute(pki: Pki) -> None:
    """RFC 5652 11.3: signingTime MUST be a signed attribute (OpenSSL's bad_signtime_attr)."""
    si = signer_info(pki.alice, default_attrs(ENTITY), ENTITY)
    si["unsigned_attrs"] = cms.CMSAttributes([attr("signing_time", cms.Time({"utc_time": NOW}))])
    msg = detached(signed_data([si], [pki.alice], None))
    assert_never_valid(pki, msg, SignatureInvalid)


def test_certificate_missing_from_message(pki: Pki) -> None:
    si = signer_info(pki.alice, default_attrs(ENTITY), ENTITY)
    msg = detached(signed_data([si], [], None))
    report = inspect(pki, msg)
    assert not report.valid
    with pytest.raises(VerificationError):
        verify_message(msg, [pki.root.cert], now=NOW)


def test_signer_certificate_swapped_for_another_key(pki: Pki) -> None:
    """The SignerInfo names alice's RSA certificate but alice_ec signed: never valid."""
    si = signer_info(pki.alice_ec, default_attrs(ENTITY), ENTITY)
    rsa_cert = a_cert(pki.alice)
    si["sid"] = cms.SignerIdentifier(
        {
            "issuer_and_serial_number": cms.IssuerAndSerialNumber(
                {"issuer": rsa_cert.issuer, "serial_number": rsa_cert.serial_number}
            )
        }
    )
    msg = detached(signed_data([si], [pki.alice, pki.alice_ec], None))
    assert_never_valid(pki, msg, SignatureInvalid)


def test_multipart_signed_with_a_third_part(pki: Pki) -> None:
    """An extra part smuggled after the signature (boundary reused): never valid."""
    signed = sign_message(message(), agent(pki.alice), now=NOW)
    head, body = split_message(signed)
    boundary = body.rstrip().rsplit(b"\r\n", 1)[-1]
    assert boundary.endswith(b"--"), "precondition: the body ends with the close delimiter"
    delimiter = boundary[:-2]
    extra = delimiter + b"\r\n" + ATTACKER + b"\r\n" + boundary + b"\r\n"
    forged = head + body.rstrip()[: -len(boundary)] + extra
    assert verify_message(signed, [pki.root.cert], now=NOW).valid  # control
    assert_never_valid(pki, forged, SignatureInvalid)


def test_content_type_case_does_not_matter(pki: Pki) -> None:
    """Control for the MIME parsing: header names and type names are case-insensitive."""
    signed = sign_message(message(), agent(pki.alice), now=NOW)
    variant = signed.replace(b"Content-Type: multipart/signed", b"CONTENT-TYPE: Multipart/Signed")
    assert variant != signed
    assert verify_message(variant, [pki.root.cert], now=NOW).valid


# --- chain problems -------------------------------------------------------------------------------


def test_chain_to_untrusted_root(pki: Pki) -> None:
    msg = sign_message(message(), agent(pki.stranger), now=NOW)
    report = assert_never_valid(pki, msg, ChainUntrusted)
    assert report.signers[0].signature_valid
    assert not report.signers[0].chain_trusted
    # The same message against its own root is fine (control).
    assert verify_message(msg, [pki.other_root.cert], now=NOW).valid


def test_no_trust_roots_at_all(pki: Pki) -> None:
    msg = sign_message(message(), agent(pki.alice), now=NOW)
    assert not inspect_signature(msg, [], now=NOW).valid
    with pytest.raises(ChainUntrusted):
        verify_message(msg, [], now=NOW)


def test_intermediate_as_trust_root_is_not_enough_for_a_stranger(pki: Pki) -> None:
    msg = sign_message(message(), agent(pki.stranger), now=NOW)
    with pytest.raises(ChainUntrusted):
        verify_message(msg, [pki.inter.cert], now=NOW)


@pytest.mark.parametrize(
    ("not_before", "not_after"),
    [
        (NOW - dt.timedelta(days=400), NOW - dt.timedelta(days=1)),  # expired
        (NOW + dt.timedelta(days=1), NOW + dt.timedelta(days=400)),  # not yet valid
    ],
    ids=["expired", "not-yet-valid"],
)
def test_certificate_outside_validity(
    pki: Pki, not_before: dt.datetime, not_after: dt.datetime
) -> None:
    ident = make_user(ALICE, pki.inter, not_before=not_before, not_after=not_after)
    msg = sign_message(message(), agent(ident), now=NOW)
    report = assert_never_valid(pki, msg, ChainUntrusted)
    assert report.signers[0].signature_valid
    assert not report.signers[0].chain_trusted


def test_verification_time_is_injected(pki: Pki) -> None:
    msg = sign_message(message(), agent(pki.alice), now=NOW)
    assert verify_message(msg, [pki.root.cert], now=NOW).valid
    later = NOW + dt.timedelta(days=3000)
    with pytest.raises(ChainUntrusted):
        verify_message(msg, [pki.root.cert], now=later)


@pytest.mark.parametrize(
    "eku",
    [
        [ExtendedKeyUsageOID.SERVER_AUTH],
        [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.CODE_SIGNING],
    ],
    ids=["serverAuth", "clientAuth+codeSigning"],
)
def test_wrong_eku(pki: Pki, eku: list[object]) -> None:
    ident = make_user(ALICE, pki.inter, eku=eku)  # type: ignore[arg-type]
    msg = sign_message(message(), agent(ident), now=NOW)
    report = assert_never_valid(pki, msg, ChainUntrusted)
    assert not report.signers[0].chain_trusted


def test_expired_intermediate(pki: Pki) -> None:
    inter = make_ca(
        "Expired Intermediate",
        issuer=pki.root,
        not_before=NOW - dt.timedelta(days=500),
        not_after=NOW - dt.timedelta(days=1),
    )
    ident = make_user(ALICE, inter, not_before=NOW - dt.timedelta(days=30))
    msg = sign_message(message(), agent(ident), now=NOW)
    assert_never_valid(pki, msg, ChainUntrusted)


# --- security.md item 5: identity -----------------------------------------------------------------


def signed_with_from(pki: Pki, from_field: str, extra: str = "") -> bytes:
    return sign_message(message(from_field, extra), agent(pki.alice), now=NOW)


def test_control_display_name_is_ignored(pki: Pki) -> None:
    for from_field in (
        ALICE,
        f"<{ALICE}>",
        f'"Mallory Evil" <{ALICE}>',
        f"ALICE <{ALICE.upper()}>",
    ):
        report = inspect(pki, signed_with_from(pki, from_field))
        assert report.valid, (from_field, report.reason)


def test_from_not_the_signer(pki: Pki) -> None:
    report = assert_never_valid(
        pki, signed_with_from(pki, "Mallory <mallory@example.test>"), SignerMismatch
    )
    assert report.signers[0].signature_valid and report.signers[0].chain_trusted


@pytest.mark.parametrize(
    "from_field",
    [
        f"Alice <{ALICE}>, Mallory <mallory@evil.test>",
        f"Mallory <mallory@evil.test>, Alice <{ALICE}>",
        f"{ALICE}, {ALICE}",
        f"friends: {ALICE}, mallory@evil.test;",
    ],
    ids=["alice-first", "alice-second", "twice-the-same", "group"],
)
def test_multiple_from_addresses(pki: Pki, from_field: str) -> None:
    assert_never_valid(pki, signed_with_from(pki, from_field), VerificationError)


def test_two_from_fields(pki: Pki) -> None:
    msg = signed_with_from(pki, f"Alice <{ALICE}>", extra="From: Mallory <mallory@evil.test>\r\n")
    assert_never_valid(pki, msg, VerificationError)


def test_no_from_field(pki: Pki) -> None:
    body = b"To: bob@example.test\r\nSubject: no from\r\nMIME-Version: 1.0\r\n" + ENTITY
    msg = sign_message(body, agent(pki.alice), now=NOW)
    report = assert_never_valid(pki, msg, VerificationError)
    assert report.signers and report.signers[0].signature_valid


def test_sender_mismatch(pki: Pki) -> None:
    msg = signed_with_from(pki, f"Alice <{ALICE}>", extra="Sender: mallory@evil.test\r\n")
    assert_never_valid(pki, msg, VerificationError)


def test_sender_is_the_signer_but_from_is_not(pki: Pki) -> None:
    msg = signed_with_from(pki, "Mallory <mallory@evil.test>", extra=f"Sender: {ALICE}\r\n")
    assert_never_valid(pki, msg, VerificationError)


@pytest.mark.parametrize(
    "from_field",
    [
        # CVE-2023-27043: email.utils.parseaddr/getaddresses read these as alice only.
        f"{ALICE})<mallory@evil.test>",
        f"{ALICE}<mallory@evil.test>",
        f'"{ALICE}" <mallory@evil.test>',
        f"{ALICE} <mallory@evil.test>",
        f"mallory@evil.test ({ALICE})",
        f"=?utf-8?q?{ALICE.replace('@', '=40')}?= <mallory@evil.test>",
        f"<mallory@evil.test> {ALICE}",
        f"mallory@evil.test, {ALICE}",
        f"{ALICE}@evil.test",
        "alice@example.test.evil.test",
        '"alice@example.test\\" <mallory@evil.test>',
        f"<{ALICE}",
        f"{ALICE}>",
        "alice@[127.0.0.1]",
        "alice(@example.test)@evil.test",
        "",
    ],
    ids=[
        "paren-angle", "no-space-angle", "quoted-display", "unquoted-display", "comment",
        "encoded-word", "trailing-addr", "two-addresses", "double-at", "suffix-domain",
        "escaped-quote", "unclosed-angle", "stray-angle", "literal-domain", "comment-in-local",
        "empty",
    ],
)  # fmt: skip
def test_odd_from_addresses_never_bind_to_alice(pki: Pki, from_field: str) -> None:
    msg = signed_with_from(pki, from_field)
    report = inspect(pki, msg)
    assert not report.valid, f"{from_field!r} was accepted as {report.from_address!r}"
    with pytest.raises(VerificationError):
        verify_message(msg, [pki.root.cert], now=NOW)


def test_from_header_injection_via_folding(pki: Pki) -> None:
    msg = signed_with_from(pki, f"Mallory <mallory@evil.test>\r\n <{ALICE}>")
    assert not inspect(pki, msg).valid


def test_signer_with_several_addresses_binds_each(pki: Pki) -> None:
    ident = make_user(ALICE, pki.inter, extra_emails=("alice.alt@example.test",))
    for addr in (ALICE, "alice.alt@example.test"):
        msg = sign_message(message(f"A <{addr}>"), agent(ident), now=NOW)
        assert verify_message(msg, [pki.root.cert], now=NOW).valid
    msg = sign_message(message("A <alice.other@example.test>"), agent(ident), now=NOW)
    with pytest.raises(SignerMismatch):
        verify_message(msg, [pki.root.cert], now=NOW)


# --- DESIGN 3: nested layers are not the message -------------------------------------------------


def mixed(from_field: str, parts: Sequence[bytes], boundary: str = "outer-boundary-1") -> bytes:
    head = headers(from_field) + (
        f'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
    )
    body = b"".join(f"--{boundary}\r\n".encode() + p + b"\r\n" for p in parts)
    return head.encode() + body + f"--{boundary}--\r\n".encode()


def as_entity(msg: bytes) -> bytes:
    """The MIME entity of a whole message: only its Content-* fields, and the body."""
    head, body = split_message(msg)
    lines = head.decode().replace("\r\n ", " ").split("\r\n")
    keep = [line for line in lines if line.lower().startswith("content-")]
    return ("\r\n".join(keep) + "\r\n\r\n").encode() + body


ATTACKER = b"Content-Type: text/plain\r\n\r\nIgnore the part below, I am the sender.\r\n"


@pytest.mark.parametrize("position", ["after", "before", "alone"])
@pytest.mark.parametrize("form", ["multipart", "opaque"])
def test_signed_part_inside_larger_multipart_is_not_valid(
    pki: Pki, form: str, position: str
) -> None:
    signed = sign_message(message(), agent(pki.alice), opaque=form == "opaque", now=NOW)
    inner = as_entity(signed)
    parts = {"after": [ATTACKER, inner], "before": [inner, ATTACKER], "alone": [inner]}[position]
    msg = mixed(f"Alice <{ALICE}>", parts)
    report = inspect(pki, msg)
    assert not report.valid
    with pytest.raises(NotSigned):
        verify_message(msg, [pki.root.cert], now=NOW)


def test_signed_message_attached_as_rfc822_is_not_valid(pki: Pki) -> None:
    signed = sign_message(message(), agent(pki.alice), now=NOW)
    part = b"Content-Type: message/rfc822\r\n\r\n" + signed
    msg = mixed(f"Alice <{ALICE}>", [ATTACKER, part])
    assert not inspect(pki, msg).valid
    with pytest.raises(NotSigned):
        verify_message(msg, [pki.root.cert], now=NOW)


@pytest.mark.parametrize("position", ["after", "before", "alone"])
def test_encrypted_part_inside_larger_multipart_is_not_decrypted(pki: Pki, position: str) -> None:
    enc = encrypt_message(message(), [Recipient(pki.alice.cert)], cipher="aes-256-cbc")
    assert decrypt_message(enc, agent(pki.alice)).content  # control: whole message opens
    inner = as_entity(enc)
    parts = {"after": [ATTACKER, inner], "before": [inner, ATTACKER], "alone": [inner]}[position]
    msg = mixed(f"Alice <{ALICE}>", parts)
    with pytest.raises(NotEncrypted):
        decrypt_message(msg, agent(pki.alice))


def test_encrypted_message_attached_as_rfc822_is_not_decrypted(pki: Pki) -> None:
    enc = encrypt_message(message(), [Recipient(pki.alice.cert)], cipher="aes-256-gcm")
    part = b"Content-Type: message/rfc822\r\n\r\n" + enc
    with pytest.raises(NotEncrypted):
        decrypt_message(mixed(f"Alice <{ALICE}>", [ATTACKER, part]), agent(pki.alice))


def test_plain_message_is_not_encrypted_nor_signed(pki: Pki) -> None:
    with pytest.raises(NotEncrypted):
        decrypt_message(message(), agent(pki.alice))
    with pytest.raises(NotSigned):
        verify_message(message(), [pki.root.cert], now=NOW)


def test_signed_message_is_not_encrypted(pki: Pki) -> None:
    signed = sign_message(message(), agent(pki.alice), opaque=True, now=NOW)
    with pytest.raises(NotEncrypted):
        decrypt_message(signed, agent(pki.alice))


def test_encrypted_message_is_not_signed(pki: Pki) -> None:
    enc = encrypt_message(message(), [Recipient(pki.alice.cert)])
    with pytest.raises(NotSigned):
        verify_message(enc, [pki.root.cert], now=NOW)


# --- malleability / no oracle (security.md items 2, 3) at the API --------------------------------


def mutate_body(msg: bytes, offset_from_end: int) -> bytes:
    head, body = split_message(msg)
    der = bytearray(base64.b64decode(body))
    der[len(der) - offset_from_end] ^= 0x01
    return head + base64.encodebytes(bytes(der)).replace(b"\n", b"\r\n")


@pytest.mark.parametrize("offset", [1, 8, 16, 19, 24])  # in the tag, then the ciphertext
def test_tampered_gcm_gives_no_plaintext(pki: Pki, offset: int) -> None:
    enc = encrypt_message(
        message(), [Recipient(pki.alice.cert, supports_gcm=True)], cipher="aes-256-gcm"
    )
    with pytest.raises(DecryptionFailed) as info:
        decrypt_message(mutate_body(enc, offset), agent(pki.alice))
    assert SECRET not in str(info.value).encode()


def test_mutated_ciphertext_and_key_transport_look_the_same(pki: Pki) -> None:
    """Bad CBC padding and a garbled RSA block (random CEK, RFC 3218): one and the same error.

    (A flip elsewhere in CBC ciphertext can decrypt to altered text: CBC has no integrity,
    which is what the documented CBC policy is about; only deterministic failures here.)
    """
    enc = encrypt_message(message(), [Recipient(pki.alice.cert)], cipher="aes-256-cbc")
    head, body = split_message(enc)
    der = base64.b64decode(body)
    marker = der.find(bytes.fromhex("04820100"))  # OCTET STRING of a 2048-bit encrypted key
    assert marker > 0
    candidates = [mutate_body(enc, 17)]  # flips the padding byte of the last block
    broken = bytearray(der)
    broken[marker + 10] ^= 0xFF
    candidates.append(head + base64.encodebytes(bytes(broken)).replace(b"\n", b"\r\n"))
    errors: set[tuple[type[Exception], str]] = set()
    for candidate in candidates:
        with pytest.raises(DecryptionFailed) as info:
            decrypt_message(candidate, agent(pki.alice))
        errors.add((type(info.value), str(info.value)))
    assert len(errors) == 1, errors


def test_wrong_key_is_a_decryption_failure(pki: Pki) -> None:
    enc = encrypt_message(message(), [Recipient(pki.alice.cert)], cipher="aes-256-cbc")
    stranger = agent(make_user("mallory@evil.test", pki.inter))
    with pytest.raises(DecryptionFailed) as info:
        decrypt_message(enc, stranger)
    assert SECRET not in str(info.value).encode()


# --- CLI: garbage in, one line out --------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli")
    out = {
        "bundle": pki.alice.write_pem_bundle(d / "alice.pem"),
        "cert": d / "alice.crt",
        "root": d / "root.pem",
        "garbage": d / "garbage.bin",
        "empty": d / "empty",
        "missing": d / "does-not-exist",
        "pw": d / "pw.txt",
        "wrong-pw": d / "wrong-pw.txt",
        "p12": pki.alice.write_p12(d / "alice.p12", RIGHT_PW),
        "textfile": d / "text.txt",
    }
    out["cert"].write_bytes(pki.alice.cert_pem())
    out["root"].write_bytes(pki.root.cert_pem())
    out["garbage"].write_bytes(random.Random(20260601).randbytes(700))
    out["empty"].write_bytes(b"")
    out["pw"].write_bytes(RIGHT_PW + b"\n")
    out["wrong-pw"].write_bytes(WRONG_PW + b"\n")
    out["textfile"].write_bytes(
        b"-----BEGIN CERTIFICATE-----\nnot base64 !!\n-----END CERTIFICATE-----\n"
    )
    return out


GARBAGE_MESSAGES: dict[str, bytes] = {
    "pkcs7-random-base64": pkcs7_mime(RNG.randbytes(300), "enveloped-data"),
    "pkcs7-not-base64": (
        b"From: a@example.test\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n!!!! this is not base64 ????\r\n"
    ),
    "pkcs7-truncated": pkcs7_mime(
        bytes.fromhex("3082ffff06092a864886f70d010703a0"), "enveloped-data"
    ),
    "pkcs7-signed-random": pkcs7_mime(RNG.randbytes(300), "signed-data"),
    "multipart-signed-garbage-sig": multipart_signed(headers(), ENTITY, RNG.randbytes(200)),
    "multipart-signed-no-parts": (
        b"From: a@example.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/signed; "
        b'protocol="application/pkcs7-signature"; boundary="b"\r\n\r\nnothing here\r\n'
    ),
}


def garbage_ok(res: Run) -> None:
    """Garbage: exit 2 with one readable stderr line and no traceback."""
    assert_clean_failure(res, 2)


@pytest.mark.parametrize("case", sorted(GARBAGE_MESSAGES))
def test_cli_decrypt_garbage(files: dict[str, Path], case: str) -> None:
    garbage_ok(run_cli(["msg", "decrypt", "--p12", str(files["bundle"])], GARBAGE_MESSAGES[case]))


@pytest.mark.parametrize("case", sorted(GARBAGE_MESSAGES))
def test_cli_verify_garbage(files: dict[str, Path], case: str) -> None:
    res = run_cli(["msg", "verify", "--trust", str(files["root"])], GARBAGE_MESSAGES[case])
    if res.returncode == 1:
        # A structurally broken signature may be reported as "not valid" in the JSON contract.
        assert b"Traceback" not in res.stderr
        assert b'"valid": false' in res.stdout.replace(b'"valid":false', b'"valid": false')
    else:
        garbage_ok(res)


@pytest.mark.parametrize(
    ("args", "stdin_name"),
    [
        (["msg", "sign", "--p12", "{garbage}"], "message"),
        (["msg", "sign", "--p12", "{empty}"], "message"),
        (["msg", "sign", "--p12", "{missing}"], "message"),
        (["msg", "sign", "--p12", "{cert}"], "message"),  # certificate only, no key
        (["msg", "sign", "--p12", "{bundle}", "--cert-chain", "{garbage}"], "message"),
        (["msg", "sign", "--p12", "{p12}", "--password-file", "{missing}"], "message"),
        (["msg", "encrypt", "--to", "{garbage}"], "message"),
        (["msg", "encrypt", "--to", "{missing}"], "message"),
        (["msg", "encrypt", "--to", "{textfile}"], "message"),
        (["msg", "encrypt", "--to", "{cert}", "--to", "{empty}"], "message"),
        (["msg", "decrypt", "--p12", "{garbage}"], "message"),
        (["msg", "decrypt", "--p12", "{missing}"], "message"),
        (["msg", "verify", "--trust", "{garbage}"], "message"),
        (["msg", "verify", "--trust", "{missing}"], "message"),
        (["msg", "verify", "--trust", "{root}", "--at", "yesterday"], "message"),
        (["msg", "verify", "--trust", "{root}", "--at", "2026-13-45T99:00"], "message"),
        (["msg", "sign", "--p12", "{bundle}"], "binary"),
        (["msg", "encrypt", "--to", "{cert}"], "binary"),
        (["msg", "sign", "--p12", "{bundle}"], "empty"),
        (["msg", "encrypt", "--to", "{cert}"], "empty"),
        (["msg", "decrypt", "--p12", "{bundle}"], "binary"),
        (["msg", "decrypt", "--p12", "{bundle}"], "empty"),
        (["msg", "verify", "--trust", "{root}"], "binary"),
    ],
)
def test_cli_input_errors_exit_2(
    pki: Pki, files: dict[str, Path], args: list[str], stdin_name: str
) -> None:
    stdin = {
        "message": message(),
        # no ":" anywhere, so no line can pass for a header field
        "binary": b"\x00\xff\xfe" + random.Random(7).randbytes(500).replace(b":", b""),
        "empty": b"",
    }[stdin_name]
    argv = [a.format(**{k: str(v) for k, v in files.items()}) for a in args]
    res = run_cli(argv, stdin)
    # Binary junk with no header field is not a mail message for any command (msg verify
    # already says "standard input is not a mail message"): exit 2, nothing on stdout.
    garbage_ok(res)
    assert res.stdout == b""


def test_cli_wrong_p12_password_is_negative(files: dict[str, Path]) -> None:
    res = run_cli(
        ["msg", "sign", "--p12", str(files["p12"]), "--password-file", str(files["wrong-pw"])],
        message(),
    )
    assert res.returncode == 1  # issue section 4: a wrong password is a negative result
    assert_clean_failure(res, 1)
    for secret in (RIGHT_PW, WRONG_PW):
        assert secret not in res.stderr and secret not in res.stdout


def test_cli_p12_right_password_works(files: dict[str, Path]) -> None:
    res = run_cli(
        ["msg", "sign", "--p12", str(files["p12"]), "--password-file", str(files["pw"])],
        message(),
    )
    assert res.returncode == 0, res.stderr.decode(errors="replace")


def test_cli_not_encrypted_is_negative_not_a_crash(files: dict[str, Path]) -> None:
    res = run_cli(["msg", "decrypt", "--p12", str(files["bundle"])], message())
    assert res.returncode in (1, 2)  # "not encrypted": a negative result or an input error
    assert_clean_failure(res, res.returncode)
    assert res.stdout == b""


def test_cli_not_signed_is_negative_with_json(files: dict[str, Path]) -> None:
    res = run_cli(["msg", "verify", "--trust", str(files["root"])], message())
    assert res.returncode == 1
    assert b"Traceback" not in res.stderr
    assert b'"valid": false' in res.stdout.replace(b'"valid":false', b'"valid": false')


def test_cli_nested_signed_part_exit_1(pki: Pki, files: dict[str, Path]) -> None:
    signed = sign_message(message(), agent(pki.alice), now=NOW)
    res = run_cli(
        ["msg", "verify", "--trust", str(files["root"]), "--at", NOW.isoformat()],
        mixed(f"Alice <{ALICE}>", [ATTACKER, as_entity(signed)]),
    )
    assert res.returncode == 1
    assert b'"valid": true' not in res.stdout.replace(b'"valid":true', b'"valid": true')


def test_cli_nested_encrypted_part_exit_1_and_no_plaintext(
    pki: Pki, files: dict[str, Path]
) -> None:
    enc = encrypt_message(message(), [Recipient(pki.alice.cert)], cipher="aes-256-cbc")
    res = run_cli(
        ["msg", "decrypt", "--p12", str(files["bundle"])],
        mixed(f"Alice <{ALICE}>", [ATTACKER, as_entity(enc)]),
    )
    assert res.returncode in (1, 2)
    assert_clean_failure(res, res.returncode)
    assert SECRET not in res.stdout
    assert b"nested" in res.stderr or b"not encrypted" in res.stderr


def test_cli_mutated_ciphertexts_look_the_same(pki: Pki, files: dict[str, Path]) -> None:
    """security.md item 3 at the CLI: same exit code, same stderr, no stdout."""
    enc = encrypt_message(message(), [Recipient(pki.alice.cert)], cipher="aes-256-cbc")
    head, body = split_message(enc)
    der = bytearray(base64.b64decode(body))
    marker = der.find(bytes.fromhex("04820100"))
    assert marker > 0
    der[marker + 10] ^= 0xFF
    rsa_broken = head + base64.encodebytes(bytes(der)).replace(b"\n", b"\r\n")
    outcomes = set()
    for candidate in (mutate_body(enc, 17), rsa_broken):
        res = run_cli(["msg", "decrypt", "--p12", str(files["bundle"])], candidate)
        assert_clean_failure(res, 1)
        assert res.stdout == b""
        outcomes.add((res.returncode, res.stderr))
    assert len(outcomes) == 1, outcomes
