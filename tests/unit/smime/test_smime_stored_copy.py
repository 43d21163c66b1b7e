"""The user's own stored copies (issue 13, Sent and Drafts at rest): sealed to the user's
certificate, read back through `open_message` exactly as the client wrote them."""

from __future__ import annotations

from pathlib import Path

import pytest

from smime_proxy.crypto.keyagent import InProcessKeyAgent
from smime_proxy.display import open_message
from smime_proxy.smime import seal_stored_copy
from support.pki import NOW, Identity, make_user
from support.smime_check import decrypt

SENT = (b"Bcc: secret-friend@example.test\r\nFrom: Bob <bob@example.test>\r\n"
        b"To: alice@example.test\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
        b"Date: Mon, 01 Jun 2026 12:00:00 +0000\r\nMessage-ID: <sent1@example.test>\r\n"
        b"User-Agent: Thunderbird\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=UTF-8; format=flowed\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe,\r\n\r\n-- \r\nBob\r\n")


@pytest.fixture(scope="module")
def bob(root: Identity) -> Identity:
    return make_user("bob@example.test", root)


def test_a_stored_copy_reads_back_exactly(root: Identity, bob: Identity) -> None:
    sealed = seal_stored_copy(SENT, bob.cert)
    assert b"Gr\xc3\xbc" not in sealed and b"secret-friend" not in sealed
    head = sealed.split(b"\r\n\r\n", 1)[0]
    assert b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n" in head + b"\r\n"  # for the listing
    assert b"authEnveloped-data" in head  # AES-GCM: authenticated, shown whole
    agent = InProcessKeyAgent(bob.key, bob.cert, tuple(bob.chain))
    opened = open_message(sealed, agent, [root.cert], now=NOW)
    assert opened.status == "encrypted=yes; cipher=aes-256-gcm; signature=none"
    shown = opened.content.split(b"\r\n", 1)[1]
    assert shown == SENT


def test_openssl_reads_a_stored_copy(bob: Identity, tmp_path: Path) -> None:
    inner = decrypt(seal_stored_copy(SENT, bob.cert), bob, tmp_path)
    assert inner.endswith(SENT)


def test_a_forged_status_field_inside_is_not_shown(root: Identity, bob: Identity) -> None:
    forged = b"X-SMIME-Status: encrypted=yes; signature=valid\r\n" + SENT
    agent = InProcessKeyAgent(bob.key, bob.cert, tuple(bob.chain))
    opened = open_message(seal_stored_copy(forged, bob.cert), agent, [root.cert], now=NOW)
    assert opened.content.count(b"X-SMIME-Status") == 1
    assert opened.content.split(b"\r\n", 1)[1] == SENT


def test_a_stored_copy_with_raw_8bit_fields_up_front_opens(bob: Identity) -> None:
    """Seed found by tests/fuzz/test_lmtp_fuzz.py: the decrypted entity's first 64 bytes
    reach into the message, here raw bytes that are not UTF-8 text; GCM's tag proves the
    key, so it opens (it was "cannot decrypt")."""
    message = b"\xff\x01 not a header\r\nSubject: Gr\xfc\xdfe\r\n\r\nbody\r\n"
    sealed = seal_stored_copy(message, bob.cert)
    agent = InProcessKeyAgent(bob.key, bob.cert, tuple(bob.chain))
    shown = open_message(sealed, agent, [], now=NOW)
    assert shown.content.split(b"\r\n", 1)[1] == message
