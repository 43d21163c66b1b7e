"""Round trips and rules of the S/MIME recipes (smime_proxy.smime), with a fresh test PKI."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Literal

import pytest
from cryptography import x509

from smime_proxy.crypto.keyagent import InProcessKeyAgent
from smime_proxy.errors import (
    ChainUntrusted,
    DecryptionFailed,
    NoMatchingRecipient,
    NotEncrypted,
    NotSigned,
    SignatureInvalid,
    SignerMismatch,
)
from smime_proxy.mime.entity import parse_entity
from smime_proxy.smime import (
    Recipient,
    decrypt_message,
    encrypt_message,
    inspect_signature,
    sign_message,
    verify_message,
)
from smime_proxy.smime_forms import is_signed
from support.pki import NOW, Identity, KeyKind, make_ca, make_user, simple_message


@pytest.fixture(scope="module")
def intermediate(root: Identity) -> Identity:
    return make_ca("Test Intermediate", issuer=root)


def agent(identity: Identity) -> InProcessKeyAgent:
    return InProcessKeyAgent(identity.key, identity.cert, tuple(identity.chain))


@pytest.mark.parametrize("opaque", [False, True])
@pytest.mark.parametrize(("kind", "pss"), [("rsa", False), ("rsa", True), ("p256", False)])
def test_sign_then_verify(
    root: Identity, intermediate: Identity, kind: KeyKind, pss: bool, opaque: bool
) -> None:
    alice = make_user("alice@example.test", intermediate, kind=kind)
    signed = sign_message(simple_message(), agent(alice), opaque=opaque, pss=pss, now=NOW)
    assert is_signed(signed)
    report = verify_message(signed, [root.cert], now=NOW)
    assert report.valid and report.reason is None
    assert report.from_address == "alice@example.test"
    assert report.signers[0].email == ("alice@example.test",)
    assert report.content is not None and b"this is a test." in report.content
    assert report.opaque is opaque


def test_tampered_body_is_invalid(root: Identity, intermediate: Identity) -> None:
    alice = make_user("alice@example.test", intermediate)
    signed = sign_message(simple_message(), agent(alice), now=NOW)
    tampered = signed.replace(b"this is a test.", b"this is a jest.")
    with pytest.raises(SignatureInvalid, match="digest"):
        verify_message(tampered, [root.cert], now=NOW)


def test_signature_survives_lf_conversion(root: Identity, intermediate: Identity) -> None:
    """A relay storing LF-only lines must not break the signature (canonical CRLF)."""
    alice = make_user("alice@example.test", intermediate)
    signed = sign_message(simple_message(), agent(alice), now=NOW)
    assert verify_message(signed.replace(b"\r\n", b"\n"), [root.cert], now=NOW).valid


def test_eight_bit_body_is_reencoded_before_signing(root: Identity, intermediate: Identity) -> None:
    alice = make_user("alice@example.test", intermediate)
    message = simple_message(body="Grüße aus Köln\r\n".encode()).replace(
        b"charset=utf-8\r\n", b"charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
    )
    signed = sign_message(message, agent(alice), now=NOW)
    assert all(byte < 0x80 for byte in signed)
    report = verify_message(signed, [root.cert], now=NOW)
    assert report.content is not None
    assert b"quoted-printable" in report.content and b"Gr=C3=BC=C3=9Fe" in report.content


def test_untrusted_root_expired_and_wrong_eku(root: Identity, intermediate: Identity) -> None:
    from cryptography.x509.oid import ExtendedKeyUsageOID

    other_root = make_ca("Other Root")
    alice = make_user("alice@example.test", intermediate)
    signed = sign_message(simple_message(), agent(alice), now=NOW)
    with pytest.raises(ChainUntrusted):
        verify_message(signed, [other_root.cert], now=NOW)
    with pytest.raises(ChainUntrusted, match="expired"):
        verify_message(signed, [root.cert], now=NOW + dt.timedelta(days=3000))
    tls_only = make_user("alice@example.test", intermediate, eku=[ExtendedKeyUsageOID.SERVER_AUTH])
    signed = sign_message(simple_message(), agent(tls_only), now=NOW)
    with pytest.raises(ChainUntrusted, match="emailProtection"):
        verify_message(signed, [root.cert], now=NOW)


@pytest.mark.parametrize(
    "from_field",
    [
        b"Mallory <mallory@example.test>",
        b"Alice <mallory@example.test>",
        b"alice@example.test, mallory@example.test",
        b'"alice@example.test" <mallory@example.test>',
        b"mallory@example.test (alice@example.test)",
        b"alice@example.test@mallory.test",
        b'"alice@example.test"@mallory.test',
    ],
)
def test_from_must_be_the_signer(root: Identity, intermediate: Identity, from_field: bytes) -> None:
    alice = make_user("alice@example.test", intermediate)
    signed = sign_message(simple_message(), agent(alice), now=NOW)
    forged = signed.replace(b"From: Alice <alice@example.test>", b"From: " + from_field, 1)
    report = inspect_signature(forged, [root.cert], now=NOW)
    assert not report.valid
    assert all(s.signature_valid and s.chain_trusted for s in report.signers)
    with pytest.raises(SignerMismatch):
        verify_message(forged, [root.cert], now=NOW)


def test_sender_other_than_from_is_not_valid(root: Identity, intermediate: Identity) -> None:
    alice = make_user("alice@example.test", intermediate)
    signed = sign_message(simple_message(), agent(alice), now=NOW)
    with_sender = b"Sender: mallory@example.test\r\n" + signed
    assert not inspect_signature(with_sender, [root.cert], now=NOW).valid


def test_display_name_and_case_are_ignored(root: Identity, intermediate: Identity) -> None:
    alice = make_user("alice@example.test", intermediate)
    signed = sign_message(simple_message(), agent(alice), now=NOW)
    renamed = signed.replace(
        b"From: Alice <alice@example.test>", b"From: Someone <ALICE@Example.TEST>"
    )
    assert verify_message(renamed, [root.cert], now=NOW).valid


def test_signed_part_nested_in_a_larger_message_is_not_signed(
    root: Identity, intermediate: Identity
) -> None:
    alice = make_user("alice@example.test", intermediate)
    signed = sign_message(simple_message(), agent(alice), now=NOW)
    wrapper = (
        b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: fwd\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="outer"\r\n\r\n'
        b"--outer\r\nContent-Type: text/plain\r\n\r\nInjected text\r\n--outer\r\n"
        + signed.split(b"\r\n\r\n", 1)[0].split(b"MIME-Version: 1.0\r\n", 1)[1]
        + b"\r\n\r\n"
        + signed.split(b"\r\n\r\n", 1)[1]
        + b"\r\n--outer--\r\n"
    )
    assert not is_signed(wrapper)
    report = inspect_signature(wrapper, [root.cert], now=NOW)
    assert not report.valid and report.signers == ()
    assert report.reason is not None and "nested" in report.reason
    with pytest.raises(NotSigned):
        verify_message(wrapper, [root.cert], now=NOW)


Cipher = Literal["aes-256-gcm", "aes-256-cbc", "aes-128-cbc"]


@pytest.mark.parametrize("cipher", ["aes-256-gcm", "aes-256-cbc", "aes-128-cbc"])
@pytest.mark.parametrize(
    ("kind", "transport"),
    [("rsa", "pkcs1"), ("rsa", "oaep"), ("p256", None), ("p384", None)],
)
def test_encrypt_then_decrypt(
    intermediate: Identity,
    cipher: Cipher,
    kind: KeyKind,
    transport: Literal["pkcs1", "oaep"] | None,
) -> None:
    bob = make_user("bob@example.test", intermediate, kind=kind)
    carol = make_user("carol@example.test", intermediate, kind="rsa")
    encrypted = encrypt_message(
        simple_message(),
        [Recipient(bob.cert, key_transport=transport), Recipient(carol.cert)],
        cipher=cipher,
    )
    assert b"this is a test" not in encrypted
    for reader in (bob, carol):
        opened = decrypt_message(encrypted, agent(reader))
        assert opened.cipher == cipher
        assert opened.authenticated is cipher.endswith("gcm")
        message = parse_entity(opened.content)
        assert message.get("subject") == b"Hello"
        assert message.get("mime-version") == b"1.0"
        assert message.body == b"Hello Bob,\r\nthis is a test.\r\n"


def test_default_cipher_follows_recipient_capabilities(intermediate: Identity) -> None:
    bob = make_user("bob@example.test", intermediate)
    legacy = encrypt_message(simple_message(), [Recipient(bob.cert)])
    assert b"smime-type=enveloped-data" in legacy
    assert decrypt_message(legacy, agent(bob)).cipher == "aes-256-cbc"
    modern = encrypt_message(simple_message(), [Recipient(bob.cert, supports_gcm=True)])
    assert b"smime-type=authEnveloped-data" in modern
    assert decrypt_message(modern, agent(bob)).cipher == "aes-256-gcm"


def test_bcc_never_leaves(intermediate: Identity) -> None:
    bob = make_user("bob@example.test", intermediate)
    message = b"Bcc: secret@example.test\r\n" + simple_message()
    encrypted = encrypt_message(message, [Recipient(bob.cert)])
    assert b"secret@example.test" not in encrypted
    assert b"secret@example.test" not in decrypt_message(encrypted, agent(bob)).content


def test_sign_then_encrypt_then_decrypt_then_verify(root: Identity, intermediate: Identity) -> None:
    alice = make_user("alice@example.test", intermediate)
    bob = make_user("bob@example.test", intermediate, kind="p256")
    signed = sign_message(simple_message(), agent(alice), now=NOW)
    encrypted = encrypt_message(signed, [Recipient(bob.cert), Recipient(alice.cert)])
    opened = decrypt_message(encrypted, agent(bob))
    assert verify_message(opened.content, [root.cert], now=NOW).valid


def test_not_our_message(intermediate: Identity) -> None:
    bob = make_user("bob@example.test", intermediate)
    eve = make_user("eve@example.test", intermediate)
    encrypted = encrypt_message(simple_message(), [Recipient(bob.cert)])
    with pytest.raises(NoMatchingRecipient):
        decrypt_message(encrypted, agent(eve))
    with pytest.raises(NotEncrypted):
        decrypt_message(simple_message(), agent(bob))


def _flip(message: bytes, locate: bytes, delta: int = 0) -> bytes:
    """Flip one bit of the CMS DER at the first byte of `locate` (plus delta)."""
    header, body = message.split(b"\r\n\r\n", 1)
    der = bytearray(base64.b64decode(body))
    position = der.find(locate) + delta
    assert position >= 0
    der[position] ^= 0x01
    return header + b"\r\n\r\n" + base64.encodebytes(bytes(der))


def _cms(message: bytes) -> bytes:
    return base64.b64decode(message.split(b"\r\n\r\n", 1)[1])


@pytest.mark.parametrize("cipher", ["aes-256-gcm", "aes-256-cbc"])
def test_mutated_ciphertexts_all_fail_the_same_way(intermediate: Identity, cipher: Cipher) -> None:
    """No oracle: bad padding, bad key transport and bad tags give one generic error."""
    from asn1crypto import cms

    bob = make_user("bob@example.test", intermediate)
    encrypted = encrypt_message(simple_message(), [Recipient(bob.cert)], cipher=cipher)
    info = cms.ContentInfo.load(_cms(encrypted))
    body = info["content"]
    encrypted_key = body["recipient_infos"][0].chosen["encrypted_key"].native
    eci = body[
        "auth_encrypted_content_info" if cipher.endswith("gcm") else "encrypted_content_info"
    ]
    ciphertext = eci["encrypted_content"].native
    mutants = [
        _flip(encrypted, encrypted_key, 7),  # RSA PKCS#1 v1.5 key transport (RFC 3218 path)
        _flip(encrypted, encrypted_key, len(encrypted_key) - 1),
        # CBC: the last byte of the next-to-last block flips the final padding byte
        _flip(encrypted, ciphertext, len(ciphertext) - 17),
    ]
    if cipher.endswith("gcm"):
        mutants.append(_flip(encrypted, body["mac"].native, 3))  # the tag itself
    messages: set[str] = set()
    for mutant in mutants:
        with pytest.raises(DecryptionFailed) as failure:
            decrypt_message(mutant, agent(bob))
        messages.add(f"{type(failure.value).__name__}: {failure.value}")
    assert messages == {"DecryptionFailed: cannot decrypt this message"}


def test_signer_certificate_email_fallback_to_subject(root: Identity) -> None:
    """Certificates without SAN (NSS test CAs) fall back to the subject emailAddress."""
    alice = make_user("alice@example.test", root)
    builder = (
        x509.CertificateBuilder()
        .subject_name(alice.cert.subject)
        .issuer_name(root.cert.subject)
        .public_key(alice.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(alice.cert.not_valid_before_utc)
        .not_valid_after(alice.cert.not_valid_after_utc)
    )
    from cryptography.hazmat.primitives import hashes

    bare = builder.sign(root.key, hashes.SHA256())
    signer = InProcessKeyAgent(alice.key, bare, ())
    signed = sign_message(simple_message(), signer, now=NOW)
    assert verify_message(signed, [root.cert], now=NOW).signers[0].email == ("alice@example.test",)
