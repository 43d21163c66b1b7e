"""Every expectation of ../shared/vectors/README.md, through the recipes API (smime.py).

Vectors live in tests/vectors/<source>/ (see README.md there for provenance). Raw CMS blobs
(RFC 4134 .bin, OpenSSL .cms, pyca .pem/.der) are wrapped into a minimal
application/pkcs7-mime message, since the recipes API takes whole messages.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest
from asn1crypto import algos, cms
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from smime_proxy.crypto.enveloped import open_enveloped
from smime_proxy.crypto.keyagent import InProcessKeyAgent
from smime_proxy.crypto.signed import parse_signed_data
from smime_proxy.errors import (
    DecryptionFailed,
    MalformedMessage,
    NotEncrypted,
    ObsoleteAlgorithm,
    SignatureInvalid,
    SmimeProxyError,
    UnsupportedAlgorithm,
    VerificationError,
)
from smime_proxy.smime import (
    Cipher,
    Recipient,
    SignatureReport,
    decrypt_message,
    encrypt_message,
    inspect_signature,
    sign_message,
    verify_message,
)
from support.cmsutil import (
    VECTORS,
    agent_from_files,
    canon_crlf,
    header_value,
    load_cert,
    load_p12,
    pem_to_der,
    pkcs7_mime,
    run_cli,
    split_message,
    with_outer_headers,
)

TB = VECTORS / "thunderbird" / "smime"
TB_INTEROP = VECTORS / "thunderbird" / "smime-interop"
TB_MANUAL = VECTORS / "thunderbird" / "smime-manual"
RFC4134 = VECTORS / "rfc4134"
RFC9216 = VECTORS / "rfc9216"
OSSL = VECTORS / "openssl" / "80-test_cms_data"
PYCA = VECTORS / "pyca-cryptography"

# Thunderbird certificates: 2026-01-26 14:38 .. 2031-01-26 14:38 UTC.
TB_AT = dt.datetime(2027, 6, 1, tzinfo=dt.UTC)
TB_BEFORE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
TB_AFTER = dt.datetime(2031, 6, 1, tzinfo=dt.UTC)
TEXT_ALICE_BOB = b"This is a test message from Alice to Bob."
TEXT_FRAN = b"This is a test message to Fran."
RFC4134_AT = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
RFC4134_TEXT = b"This is some sample content."
RFC9216_AT = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)

SHA2 = ("SHA256", "SHA384", "SHA512")
ALL_SHA = ("SHA1", *SHA2)


def tb_root() -> list[x509.Certificate]:
    return [load_cert(TB / "TestCA.pem")]


def tb_agent(name: str) -> InProcessKeyAgent:
    base = TB_INTEROP if name.startswith("Fran") else TB
    return load_p12(base / f"{name}.p12", b"nss")


def read(path: Path) -> bytes:
    return path.read_bytes()


def emails(report: SignatureReport) -> list[str]:
    return [e.lower() for s in report.signers for e in s.email]


def assert_valid(report: SignatureReport, signer: str) -> None:
    assert report.valid, f"not valid: {report.reason}"
    assert report.reason is None
    assert report.from_address is not None
    assert report.from_address.lower() == signer
    assert report.signers, "no signer reported"
    assert all(s.signature_valid and s.chain_trusted for s in report.signers)
    assert signer in emails(report)


def signature_rejected(message: bytes, roots: list[x509.Certificate], now: dt.datetime) -> bool:
    """True when the signature itself (not only the chain) is refused."""
    try:
        report = inspect_signature(message, roots, now=now)
    except (VerificationError, MalformedMessage):
        return True
    return not report.valid and not any(s.signature_valid for s in report.signers)


# --- Thunderbird / NSS: signatures -------------------------------------------------------------


@pytest.mark.parametrize("sha", SHA2)
@pytest.mark.parametrize(
    "form",
    ["dsig.{sha}.multipart", "sig.{sha}.opaque", "html.sig.{sha}.opaque"],
    ids=["dsig", "sig", "html-sig"],
)
def test_tb_good_signature_is_valid(form: str, sha: str) -> None:
    name = "alice." + form.format(sha=sha) + ".eml"
    msg = read(TB / name)
    report = inspect_signature(msg, tb_root(), now=TB_AT)
    assert_valid(report, "alice@example.com")
    again = verify_message(msg, tb_root(), now=TB_AT)
    assert again.valid
    if "opaque" in form and "html" not in form:
        assert report.content is not None and TEXT_ALICE_BOB in report.content


@pytest.mark.parametrize("sha", ALL_SHA)
def test_tb_sha1_and_sha2_signatures_name_the_signer(sha: str) -> None:
    """Whatever the policy on SHA-1, the signer is reported and the body is intact."""
    report = inspect_signature(read(TB / f"alice.dsig.{sha}.multipart.eml"), tb_root(), now=TB_AT)
    assert len(report.signers) == 1
    assert "alice@example.com" in emails(report)
    assert "Alice" in report.signers[0].subject
    assert "NSS Test CA" in report.signers[0].issuer
    assert report.signers[0].not_after is not None
    assert report.signers[0].not_after.year == 2031


@pytest.mark.parametrize("sha", ALL_SHA)
@pytest.mark.parametrize("kind", ["bad", "mismatch-econtent"])
def test_tb_tampered_or_mismatched_signature_is_invalid(kind: str, sha: str) -> None:
    msg = read(TB / f"alice.dsig.{sha}.multipart.{kind}.eml")
    report = inspect_signature(msg, tb_root(), now=TB_AT)
    assert not report.valid
    assert report.reason
    assert not any(s.signature_valid for s in report.signers)
    with pytest.raises(SignatureInvalid):
        verify_message(msg, tb_root(), now=TB_AT)


def test_tb_good_signature_outside_certificate_validity_is_not_valid() -> None:
    msg = read(TB / "alice.dsig.SHA256.multipart.eml")
    for moment in (TB_BEFORE, TB_AFTER):
        report = inspect_signature(msg, tb_root(), now=moment)
        assert not report.valid
        assert not report.signers[0].chain_trusted
        with pytest.raises(VerificationError):
            verify_message(msg, tb_root(), now=moment)


def test_tb_good_signature_without_trust_root_is_not_valid() -> None:
    msg = read(TB / "alice.dsig.SHA256.multipart.eml")
    report = inspect_signature(msg, [], now=TB_AT)
    assert not report.valid
    assert not report.signers[0].chain_trusted


def test_tb_future_dated_message() -> None:
    """Date header 6 h after signing (outside the signature): the signature itself holds.

    Thunderbird flags the date mismatch as a UI heuristic; the CMS signature covers the body
    only, so the signer must still verify; before the certificate existed it must not.
    """
    msg = read(TB / "alice.future.dsig.SHA256.multipart.eml")
    report = inspect_signature(msg, tb_root(), now=TB_AT)
    assert report.signers[0].signature_valid
    assert report.signers[0].chain_trusted
    assert "alice@example.com" in emails(report)
    early = inspect_signature(msg, tb_root(), now=TB_BEFORE)
    assert not early.valid


@pytest.mark.parametrize("sha", SHA2)
@pytest.mark.parametrize(
    "inner", ["plain.sig.{sha}.opaque", "plain.dsig.{sha}.multipart"], ids=["in-sig", "in-dsig"]
)
@pytest.mark.parametrize(
    "outer", ["sig.{sha}.opaque", "dsig.{sha}.multipart"], ids=["out-sig", "out-dsig"]
)
def test_tb_nested_signatures_outer_dave_binds_from(inner: str, outer: str, sha: str) -> None:
    """Alice signed, then Dave signed the whole; From is Dave: Dave's outer layer is valid.

    The inner layer (report.content) is Alice's signature, intact.
    """
    name = f"alice.{inner.format(sha=sha)}.dave.{outer.format(sha=sha)}.eml"
    msg = read(TB / name)
    report = inspect_signature(msg, tb_root(), now=TB_AT)
    assert_valid(report, "dave@example.com")
    assert "alice@example.com" not in emails(report)
    assert report.content is not None
    inner_report = inspect_signature(report.content, tb_root(), now=TB_AT)
    assert "alice@example.com" in emails(inner_report)
    assert all(s.signature_valid and s.chain_trusted for s in inner_report.signers)
    # The inner entity has no From of its own: Alice's layer alone is never "valid" for Dave.
    assert not inner_report.valid


# --- Thunderbird / NSS: envelopes --------------------------------------------------------------


def test_tb_enveloped_decrypts_for_bob() -> None:
    dec = decrypt_message(read(TB / "alice.env.eml"), tb_agent("Bob"))
    assert TEXT_ALICE_BOB in dec.content
    assert dec.cipher == "aes-128-cbc"
    assert not dec.authenticated


@pytest.mark.parametrize("who", ["Alice", "Dave", "Eve"])
def test_tb_enveloped_refused_for_others(who: str) -> None:
    with pytest.raises(DecryptionFailed):
        decrypt_message(read(TB / "alice.env.eml"), tb_agent(who))


@pytest.mark.parametrize("sha", SHA2)
@pytest.mark.parametrize(
    "form",
    ["dsig.{sha}.multipart", "sig.{sha}.opaque", "html.sig.{sha}.opaque"],
    ids=["dsig", "sig", "html-sig"],
)
def test_tb_signed_then_enveloped_decrypts_then_verifies(form: str, sha: str) -> None:
    name = "alice." + form.format(sha=sha) + ".env.eml"
    outer = read(TB / name)
    dec = decrypt_message(outer, tb_agent("Bob"))
    inner = with_outer_headers(outer, dec.content)
    report = inspect_signature(inner, tb_root(), now=TB_AT)
    assert_valid(report, "alice@example.com")


def test_tb_signed_then_enveloped_sha1_decrypts() -> None:
    dec = decrypt_message(read(TB / "alice.sig.SHA1.opaque.env.eml"), tb_agent("Bob"))
    report = inspect_signature(dec.content, tb_root(), now=TB_AT)
    assert "alice@example.com" in emails(report)
    assert report.content is not None and TEXT_ALICE_BOB in report.content


@pytest.mark.parametrize("sha", SHA2)
def test_tb_encrypt_then_sign_opaque_signature_covers_ciphertext(sha: str) -> None:
    """Alice encrypted, then signed around the ciphertext: walk verify -> decrypt."""
    msg = read(TB / f"alice.env.sig.{sha}.opaque.eml")
    report = inspect_signature(msg, tb_root(), now=TB_AT)
    assert report.signers and report.signers[0].signature_valid
    assert "alice@example.com" in emails(report)
    assert report.content is not None
    dec = decrypt_message(with_outer_headers(msg, report.content), tb_agent("Bob"))
    assert TEXT_ALICE_BOB in dec.content


@pytest.mark.parametrize("sha", SHA2)
def test_tb_encrypt_then_detached_sign_does_not_verify(sha: str) -> None:
    """NSS's detached signature around the ciphertext does not verify (openssl agrees)."""
    msg = read(TB / f"alice.env.dsig.{sha}.multipart.eml")
    report = inspect_signature(msg, tb_root(), now=TB_AT)
    assert not report.valid
    assert not any(s.signature_valid for s in report.signers)
    with pytest.raises(NotEncrypted):
        decrypt_message(msg, tb_agent("Bob"))


@pytest.mark.parametrize("sha", SHA2)
@pytest.mark.parametrize("middle", ["sig", "dsig"])
def test_tb_triple_wrapped_encrypt_sign_sign(middle: str, sha: str) -> None:
    """Encrypted, signed by Alice, signed again by Dave (From Dave): every layer opens.

    Alice's detached middle layer does not verify in these NSS vectors (as in
    test_tb_encrypt_then_detached_sign_does_not_verify); her opaque one does.
    """
    form = f"sig.{sha}.opaque" if middle == "sig" else f"dsig.{sha}.multipart"
    msg = read(TB / f"alice.env.{form}.dave.sig.{sha}.opaque.eml")
    outer = inspect_signature(msg, tb_root(), now=TB_AT)
    assert_valid(outer, "dave@example.com")
    assert outer.content is not None
    middle_report = inspect_signature(outer.content, tb_root(), now=TB_AT)
    assert "alice@example.com" in emails(middle_report)
    assert middle_report.signers[0].signature_valid == (middle == "sig")
    assert not middle_report.valid
    assert middle_report.content is not None
    dec = decrypt_message(with_outer_headers(msg, middle_report.content), tb_agent("Bob"))
    assert TEXT_ALICE_BOB in dec.content


def test_tb_manual_triple_wrap_with_mismatched_outer_signature() -> None:
    """Hand-made sign/encrypt/sign whose outer signature does not match: never valid."""
    msg = read(TB_MANUAL / "alice.dsig.SHA256.multipart.env.dsig.eml")
    report = inspect_signature(msg, tb_root(), now=TB_AT)
    assert not report.valid
    with pytest.raises(VerificationError):
        verify_message(msg, tb_root(), now=TB_AT)
    with pytest.raises(NotEncrypted):
        decrypt_message(msg, tb_agent("Bob"))


@pytest.mark.parametrize(
    "name",
    [
        "alice.env.mixed.dsig.SHA256.multipart.eml",
        "outer-smime-bad-sig-inner-smime-enc.eml",
        "outer-smime-bad-sig-inner-smime-enc-sig.eml",
    ],
)
def test_tb_manual_nested_encryption_is_neither_valid_nor_decrypted(name: str) -> None:
    msg = read(TB_MANUAL / name)
    assert not inspect_signature(msg, tb_root(), now=TB_AT).valid
    with pytest.raises(NotEncrypted):
        decrypt_message(msg, tb_agent("Bob"))


# --- Thunderbird smime-interop: OpenSSL-made OAEP and ECDH envelopes to Fran -------------------


@pytest.mark.parametrize(
    ("name", "cipher"),
    [
        ("fran-oaep_ossl.env", "3des"),
        ("fran-oaep-label_ossl.env", "aes-256-cbc"),
        ("fran-oaep-sha256hash_ossl.env", "aes-128-cbc"),
        ("fran-oaep-sha256hash-sha256mgf_ossl.env", "aes-256-cbc"),
        ("fran-ec_ossl-aes128-sha256.env", "aes-128-cbc"),
        ("fran-ec_ossl-aes256-sha512.env", "aes-256-cbc"),
    ],
)
def test_tb_interop_envelope_decrypts(name: str, cipher: str) -> None:
    agent = tb_agent("Fran-ec" if "-ec_" in name else "Fran")
    dec = decrypt_message(read(TB_INTEROP / name), agent)
    assert dec.content.strip().endswith(TEXT_FRAN) or TEXT_FRAN in dec.content
    assert cipher in dec.cipher


@pytest.mark.parametrize("name", sorted(p.name for p in TB_INTEROP.glob("*.env")))
def test_tb_interop_envelope_decrypts_at_cms_level(name: str) -> None:
    agent = tb_agent("Fran-ec" if "-ec_" in name else "Fran")
    _, body = split_message(read(TB_INTEROP / name))
    opened = open_enveloped(base64.b64decode(body), agent)
    assert opened.content.strip() == TEXT_FRAN


def test_tb_interop_envelope_wrong_key_type_fails_cleanly() -> None:
    with pytest.raises(DecryptionFailed):
        decrypt_message(read(TB_INTEROP / "fran-ec_ossl-aes128-sha256.env"), tb_agent("Fran"))
    with pytest.raises(DecryptionFailed):
        decrypt_message(read(TB_INTEROP / "fran-oaep_ossl.env"), tb_agent("Fran-ec"))


# --- RFC 4134 ----------------------------------------------------------------------------------


def rfc4134_cert(name: str) -> x509.Certificate:
    return load_cert(RFC4134 / f"{name}.cer")


@pytest.mark.parametrize("number", ["4.2", "4.5"])
def test_rfc4134_rsa_signed_data_verifies(number: str) -> None:
    der = read(RFC4134 / f"{number}.bin")
    msg = pkcs7_mime(der, "signed-data", sender="AliceRSA@example.com")
    report = inspect_signature(msg, [rfc4134_cert("CarlRSASelf")], now=RFC4134_AT)
    assert report.signers
    assert all(s.signature_valid for s in report.signers)
    assert "alicersa@example.com" in emails(report)
    assert report.content is not None and RFC4134_TEXT in report.content


@pytest.mark.parametrize("number", ["4.2", "4.5"])
def test_rfc4134_rsa_signed_data_tampered_content_fails(number: str) -> None:
    der = read(RFC4134 / f"{number}.bin")
    assert der.count(b"sample") == 1  # 4.5 is BER: the text is split into chunks
    bad = der.replace(b"sample", b"simple")
    msg = pkcs7_mime(bad, "signed-data", sender="AliceRSA@example.com")
    assert signature_rejected(msg, [rfc4134_cert("CarlRSASelf")], RFC4134_AT)


@pytest.mark.parametrize("number", ["4.8", "4.9"])
def test_rfc4134_mime_signature_verifies_after_crlf_canonicalisation(number: str) -> None:
    msg = read(RFC4134 / f"{number}.eml")
    assert b"\r\n" not in msg, "precondition: the vector uses LF line ends"
    report = inspect_signature(msg, [rfc4134_cert("CarlDSSSelf")], now=RFC4134_AT)
    assert report.signers
    assert report.signers[0].signature_valid, report.signers[0].problem
    # From is aliceDss@examples.com, the certificate says AliceDSS@example.com: no binding.
    assert not report.valid


def test_rfc4134_mime_signature_tampered_fails() -> None:
    msg = read(RFC4134 / "4.8.eml")
    assert msg.count(RFC4134_TEXT) == 1
    bad = msg.replace(RFC4134_TEXT, b"This is some sample c0ntent.")
    assert signature_rejected(bad, [rfc4134_cert("CarlDSSSelf")], RFC4134_AT)


def test_rfc4134_dsa_inherited_parameters_is_an_error_not_a_crash() -> None:
    """4.6 carries Diane's DSA certificate with inherited parameters."""
    msg = pkcs7_mime(read(RFC4134 / "4.6.bin"), "signed-data", sender="DianeDSS@example.com")
    try:
        report = inspect_signature(msg, [rfc4134_cert("CarlDSSSelf")], now=RFC4134_AT)
    except SmimeProxyError:
        return
    assert not report.valid
    assert report.reason


@pytest.mark.parametrize(
    "number", ["4.1", "4.2", "4.3", "4.4", "4.5", "4.6", "4.7", "4.10", "4.11"]
)
def test_rfc4134_every_signed_data_gives_a_result_or_our_error(number: str) -> None:
    msg = pkcs7_mime(read(RFC4134 / f"{number}.bin"), "signed-data")
    roots = [rfc4134_cert("CarlRSASelf"), rfc4134_cert("CarlDSSSelf")]
    try:
        report = inspect_signature(msg, roots, now=RFC4134_AT)
    except SmimeProxyError:
        return
    # From is sender@example.test: never bound to an RFC 4134 certificate.
    assert not report.valid


def bob4134() -> InProcessKeyAgent:
    return agent_from_files(RFC4134 / "BobPrivRSAEncrypt.pri", RFC4134 / "BobRSASignByCarl.cer")


def test_rfc4134_5_1_triple_des_decrypts() -> None:
    """5.1 is a raw EnvelopedData (DER): the CMS level."""
    opened = open_enveloped(read(RFC4134 / "5.1.bin"), bob4134())
    assert opened.content == RFC4134_TEXT
    assert "3des" in opened.cipher or "ede3" in opened.cipher


def test_rfc4134_5_3_eml_decrypts() -> None:
    """5.3 is a whole message whose content is bare text (no MIME header): still a message."""
    dec = decrypt_message(read(RFC4134 / "5.3.eml"), bob4134())
    assert RFC4134_TEXT in dec.content


def test_rfc4134_5_2_rc2_is_refused_as_obsolete() -> None:
    with pytest.raises(ObsoleteAlgorithm):
        open_enveloped(read(RFC4134 / "5.2.bin"), bob4134())
    msg = pkcs7_mime(read(RFC4134 / "5.2.bin"), "enveloped-data")
    with pytest.raises(ObsoleteAlgorithm) as info:
        decrypt_message(msg, bob4134())
    assert "RC2" in str(info.value).upper()


# --- OpenSSL negative signed-attribute cases ---------------------------------------------------


@pytest.mark.parametrize(
    "name", ["no_ct_attr", "ct_multiple_attr", "no_md_attr", "bad_signtime_attr"]
)
def test_openssl_bad_signed_attributes_are_rejected(name: str) -> None:
    der = read(OSSL / f"{name}.cms")
    msg = pkcs7_mime(der, "signed-data")
    assert signature_rejected(msg, [], dt.datetime(2023, 1, 1, tzinfo=dt.UTC))
    with pytest.raises(VerificationError):
        verify_message(msg, [], now=dt.datetime(2023, 1, 1, tzinfo=dt.UTC))


@pytest.mark.parametrize(
    "name", ["no_ct_attr", "ct_multiple_attr", "no_md_attr", "bad_signtime_attr"]
)
def test_openssl_bad_signed_attributes_rejected_at_cms_level(name: str) -> None:
    der = read(OSSL / f"{name}.cms")
    try:
        parsed = parse_signed_data(der, None)
    except (SignatureInvalid, MalformedMessage):
        return
    assert parsed.signers
    assert not any(s.signature_valid for s in parsed.signers), [s.problem for s in parsed.signers]


def test_openssl_md4_signature_is_never_valid() -> None:
    """pkcs7-md4.pem: SignedData with an MD4 digest (OpenSSL's own negative case)."""
    der = pem_to_der(read(OSSL / "pkcs7-md4.pem"))
    try:
        parsed = parse_signed_data(der, None)
    except (SignatureInvalid, MalformedMessage, UnsupportedAlgorithm):
        parsed = None
    if parsed is not None:
        assert not any(s.signature_valid for s in parsed.signers)
    msg = pkcs7_mime(der, "signed-data")
    assert signature_rejected(msg, [], dt.datetime(2023, 1, 1, tzinfo=dt.UTC))


def test_openssl_signed_and_enveloped_pkcs7_is_refused_cleanly() -> None:
    """pkcs7-md4-encrypted.pem: PKCS#7 signedAndEnvelopedData (type 4): our error, no crash."""
    msg = pkcs7_mime(pem_to_der(read(OSSL / "pkcs7-md4-encrypted.pem")), "enveloped-data")
    with pytest.raises(SmimeProxyError):
        decrypt_message(msg, tb_agent("Bob"))
    try:
        report = inspect_signature(msg, [], now=dt.datetime(2023, 1, 1, tzinfo=dt.UTC))
    except SmimeProxyError:
        return
    assert not report.valid


# --- pyca/cryptography -------------------------------------------------------------------------


def pyca_agent() -> InProcessKeyAgent:
    return agent_from_files(PYCA / "rsa_key.pem", PYCA / "rsa_ca.pem")


# The pyca envelopes hold bare text, not a MIME entity: the recipes refuse to show such
# content as a message (smime.py's RFC 3218 garbage check), so these go through the CMS level.


def test_pyca_enveloped_rsa_oaep_decrypts() -> None:
    opened = open_enveloped(pem_to_der(read(PYCA / "enveloped-rsa-oaep.pem")), pyca_agent())
    assert opened.content == b"Hello, world!"
    assert opened.cipher == "aes-128-cbc"
    assert not opened.authenticated


def test_pyca_enveloped_triple_des_decrypts() -> None:
    opened = open_enveloped(pem_to_der(read(PYCA / "enveloped-triple-des.pem")), pyca_agent())
    assert opened.content.strip() == b"Hello, World!"
    assert "3des" in opened.cipher


def test_pyca_enveloped_wrong_key_fails() -> None:
    agent = tb_agent("Bob")
    with pytest.raises(DecryptionFailed):
        open_enveloped(pem_to_der(read(PYCA / "enveloped-rsa-oaep.pem")), agent)


def test_pyca_enveloped_without_content_fails_cleanly() -> None:
    msg = pkcs7_mime(read(PYCA / "enveloped-no-content.der"), "enveloped-data")
    with pytest.raises((DecryptionFailed, MalformedMessage, UnsupportedAlgorithm)):
        decrypt_message(msg, pyca_agent())


# --- RFC 9216 sample keys: our own round trips with published keys -----------------------------


def lamps_root() -> list[x509.Certificate]:
    return [
        load_cert(RFC9216 / "certs" / "Sample_LAMPS_RSA_Certification_Authority.selfsigned.pem")
    ]


def lamps_alice() -> InProcessKeyAgent:
    return agent_from_files(
        RFC9216 / "keys" / "lamps-alice.p8.pem", RFC9216 / "certs" / "alice@smime.example.sig.pem"
    )


def lamps_bob_decrypt() -> InProcessKeyAgent:
    return agent_from_files(
        RFC9216 / "keys" / "lamps-bob.decrypt.p8.pem",
        RFC9216 / "certs" / "bob@smime.example.enc.pem",
    )


def lamps_message() -> bytes:
    return (
        b"From: Alice <alice@smime.example>\r\nTo: bob@smime.example\r\nSubject: 9216\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nHello from the LAMPS samples.\r\n"
    )


@pytest.mark.parametrize("opaque", [False, True])
def test_rfc9216_alice_signs_and_it_verifies_to_the_lamps_root(opaque: bool) -> None:
    signed = sign_message(lamps_message(), lamps_alice(), opaque=opaque, now=RFC9216_AT)
    report = verify_message(signed, lamps_root(), now=RFC9216_AT)
    assert_valid(report, "alice@smime.example")


@pytest.mark.parametrize("cipher", ["aes-256-gcm", "aes-256-cbc", "aes-128-cbc"])
def test_rfc9216_encrypt_to_bob_decrypts_with_his_published_key(cipher: Cipher) -> None:
    bob = load_cert(RFC9216 / "certs" / "bob@smime.example.enc.pem")
    enc = encrypt_message(lamps_message(), [Recipient(bob, supports_gcm=True)], cipher=cipher)
    dec = decrypt_message(enc, lamps_bob_decrypt())
    assert b"Hello from the LAMPS samples." in dec.content
    assert dec.cipher == cipher


def test_rfc9216_x25519_recipient_is_refused_cleanly() -> None:
    dana = load_cert(RFC9216 / "certs" / "dana@smime.example.enc.pem")
    with pytest.raises(SmimeProxyError):
        encrypt_message(lamps_message(), [Recipient(dana)])


def ed25519_signed_data(content: bytes) -> bytes:
    """Carlos's Ed25519 SignedData (RFC 8419), built with asn1crypto (openssl 3.0 cannot)."""
    key = serialization.load_pem_private_key(
        read(RFC9216 / "keys" / "lamps-carlos.p8.pem"), password=None
    )
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    cert = ax509.Certificate.load(
        load_cert(RFC9216 / "certs" / "carlos@smime.example.sig.pem").public_bytes(
            serialization.Encoding.DER
        )
    )
    attrs = cms.CMSAttributes(
        [
            cms.CMSAttribute({"type": "content_type", "values": ["data"]}),
            cms.CMSAttribute(
                {"type": "message_digest", "values": [hashlib.sha512(content).digest()]}
            ),
        ]
    )
    si = cms.SignerInfo(
        {
            "version": "v1",
            "sid": cms.SignerIdentifier(
                {
                    "issuer_and_serial_number": cms.IssuerAndSerialNumber(
                        {"issuer": cert.issuer, "serial_number": cert.serial_number}
                    )
                }
            ),
            "digest_algorithm": algos.DigestAlgorithm({"algorithm": "sha512"}),
            "signed_attrs": attrs,
            "signature_algorithm": algos.SignedDigestAlgorithm({"algorithm": "ed25519"}),
            "signature": b"",
        }
    )
    tagged = si["signed_attrs"].dump()
    si["signature"] = key.sign(b"\x31" + tagged[1:])
    sd = cms.SignedData(
        {
            "version": "v1",
            "digest_algorithms": [algos.DigestAlgorithm({"algorithm": "sha512"})],
            "encap_content_info": {"content_type": "data", "content": content},
            "certificates": [cms.CertificateChoices({"certificate": cert})],
            "signer_infos": [si],
        }
    )
    der: bytes = cms.ContentInfo({"content_type": "signed_data", "content": sd}).dump()
    return der


def test_rfc9216_ed25519_signer_is_a_result_or_our_error() -> None:
    """Ed25519 (Carlos): verified, or refused with our own error; never a crash."""
    content = b"Content-Type: text/plain\r\n\r\nHello from Carlos\r\n"
    msg = pkcs7_mime(ed25519_signed_data(content), "signed-data", sender="carlos@smime.example")
    root = load_cert(
        RFC9216 / "certs" / "Sample_LAMPS_Ed25519_Certification_Authority.selfsigned.pem"
    )
    try:
        report = inspect_signature(msg, [root], now=RFC9216_AT)
    except (VerificationError, MalformedMessage, UnsupportedAlgorithm):
        return
    assert "carlos@smime.example" in emails(report)
    if report.signers[0].signature_valid:
        # Control: a changed content must then fail.
        bad = pkcs7_mime(
            ed25519_signed_data(content).replace(b"Carlos", b"Mallet"),
            "signed-data",
            sender="carlos@smime.example",
        )
        assert not inspect_signature(bad, [root], now=RFC9216_AT).valid


# --- the same vectors through the CLI -------------------------------------------------------------

CLI_AT = TB_AT.isoformat()


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("alice.dsig.SHA256.multipart.eml", 0),
        ("alice.sig.SHA512.opaque.eml", 0),
        ("alice.plain.dsig.SHA384.multipart.dave.dsig.SHA384.multipart.eml", 0),
        ("alice.dsig.SHA256.multipart.bad.eml", 1),
        ("alice.dsig.SHA384.multipart.mismatch-econtent.eml", 1),
    ],
)
def test_tb_cli_verify(tmp_path: Path, name: str, code: int) -> None:
    out = tmp_path / "content"
    res = run_cli(
        ["msg", "verify", "--trust", str(TB / "TestCA.pem"), "--at", CLI_AT, "--out", str(out)],
        read(TB / name),
    )
    assert res.returncode == code, res.stderr.decode(errors="replace")
    data = json.loads(res.stdout)
    assert data["valid"] is (code == 0)
    assert data["reason"] is None if code == 0 else data["reason"]
    if ".bad." in name or code == 0:
        assert data["signers"], data
    if code == 0:
        assert out.exists() and b"This is a test message from Alice to Bob." in out.read_bytes()


def test_tb_cli_verify_manual_nested_is_exit_1() -> None:
    res = run_cli(
        ["msg", "verify", "--trust", str(TB / "TestCA.pem"), "--at", CLI_AT],
        read(TB_MANUAL / "alice.env.mixed.dsig.SHA256.multipart.eml"),
    )
    assert res.returncode == 1
    assert json.loads(res.stdout)["valid"] is False


@pytest.mark.parametrize(
    "name",
    ["alice.env.eml", "alice.sig.SHA256.opaque.env.eml", "alice.dsig.SHA512.multipart.env.eml"],
)
def test_tb_cli_decrypt_with_nss_p12(tmp_path: Path, name: str) -> None:
    pw = tmp_path / "pw"
    pw.write_bytes(b"nss\n")
    res = run_cli(["msg", "decrypt", "--p12", str(TB / "Bob.p12"), "--password-file", str(pw)],
                  read(TB / name))  # fmt: skip
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    assert b"From: Alice@example.com" in res.stdout
    assert b"smime-type=enveloped-data" not in res.stdout
    wrong = run_cli(["msg", "decrypt", "--p12", str(TB / "Alice.p12"), "--password-file", str(pw)],
                    read(TB / name))  # fmt: skip
    assert wrong.returncode == 1
    assert wrong.stdout == b""


# --- sanity of the test inputs themselves --------------------------------------------------------


def test_vector_inputs_are_what_the_tests_assume() -> None:
    good = read(TB / "alice.dsig.SHA256.multipart.eml")
    future = read(TB / "alice.future.dsig.SHA256.multipart.eml")
    assert header_value(good, "From") == "Alice@example.com"
    assert header_value(future, "Date") != header_value(good, "Date")
    _, body = split_message(read(TB / "alice.dsig.SHA256.multipart.eml"))
    _, fbody = split_message(read(TB / "alice.future.dsig.SHA256.multipart.eml"))
    assert canon_crlf(body) == canon_crlf(fbody)
    assert tb_agent("Bob").certificate.subject.rfc4514_string().startswith("CN=Bob")
