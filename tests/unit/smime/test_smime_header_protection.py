"""What a client is shown for the three header protection forms (issue 13): RFC 9788
injected headers (hp="clear"/"cipher", HP-Outer, Legacy Display Elements), RFC 8551
message/rfc822 wrapping, none; with the signed layer stripped (the default) or kept."""

from __future__ import annotations

import base64

import pytest

from smime_proxy.crypto.keyagent import InProcessKeyAgent
from smime_proxy.display import open_message
from smime_proxy.mime.entity import parse_entity
from smime_proxy.mime.protection import shown_message, without_legacy_display
from smime_proxy.smime import Recipient, encrypt_message, inspect_signature, sign_message
from support.pki import NOW, Identity, make_user

OUTER = (b"Received: from mx by imap; Mon, 01 Jun 2026 12:00:01 +0000\r\n"
         b"From: Alice <alice@example.test>\r\nTo: Bob <bob@example.test>\r\n"
         b"Subject: [...]\r\nDate: Mon, 01 Jun 2026 12:00:00 +0000\r\n"
         b"Message-ID: <hp1@example.test>\r\n")
PROTECTED = (b"From: Alice <alice@example.test>\r\nTo: Bob <bob@example.test>\r\n"
             b"Subject: the real subject\r\nDate: Mon, 01 Jun 2026 12:00:00 +0000\r\n"
             b"Message-ID: <hp1@example.test>\r\nUser-Agent: tests\r\n")
HP_OUTER = b"".join(b"HP-Outer: " + line + b"\r\n" for line in OUTER.split(b"\r\n")[1:-1])
BODY = b"Hello Bob,\r\nthe plaintext.\r\n"


@pytest.fixture(scope="module")
def bob(root: Identity) -> Identity:
    return make_user("bob@example.test", root)


def agent(identity: Identity) -> InProcessKeyAgent:
    return InProcessKeyAgent(identity.key, identity.cert, tuple(identity.chain))


def injected(alice: Identity, bob: Identity, *, sign: bool = True,
             content: bytes = b"Content-Type: text/plain; charset=utf-8; hp=\"cipher\"\r\n\r\n"
             + BODY, protected: bytes = PROTECTED + HP_OUTER) -> bytes:
    """An RFC 9788 message as the proxy's SMTP front writes it: the protected fields first
    in the signed (and encrypted) entity, the outer Subject obscured."""
    message = OUTER[OUTER.index(b"From:"):] + b"MIME-Version: 1.0\r\n" + content
    if sign:
        message = sign_message(message, agent(alice), now=NOW, protected=protected)
        return encrypt_message(message, [Recipient(bob.cert, supports_gcm=True)])
    return encrypt_message(message, [Recipient(bob.cert, supports_gcm=True)],
                           protected=protected)


def header_of(message: bytes) -> bytes:
    return message.split(b"\r\n\r\n", 1)[0] + b"\r\n"


def test_injected_headers_are_shown_as_one_ordinary_message(root: Identity, alice: Identity,
                                                            bob: Identity) -> None:
    opened = open_message(b"Received: x\r\n" + injected(alice, bob), agent(bob), [root.cert],
                          now=NOW)
    assert opened.status == ("encrypted=yes; cipher=aes-256-gcm; signature=valid;"
                             " signer=alice@example.test; headers=protected")
    header = header_of(opened.content)
    assert b"Subject: the real subject\r\n" in header and b"[...]" not in header
    assert b"User-Agent: tests\r\n" in header and b"Received: x\r\n" in header
    assert b"HP-Outer" not in header and b"hp=" not in opened.content
    assert b"multipart/signed" not in opened.content and b"smime.p7s" not in opened.content
    shown = parse_entity(opened.content)
    assert shown.content_type() == ("text/plain", {"charset": "utf-8"})
    assert shown.body == BODY


def test_keep_shows_the_signed_layer_with_the_protected_fields_outside(
        root: Identity, alice: Identity, bob: Identity) -> None:
    opened = open_message(injected(alice, bob), agent(bob), [root.cert], now=NOW,
                          signatures="keep")
    shown = opened.content.split(b"\r\n", 1)[1]  # without the status line
    assert parse_entity(shown).content_type()[0] == "multipart/signed"
    header = header_of(shown)
    assert b"Subject: the real subject\r\n" in header and b"[...]" not in header
    report = inspect_signature(shown, [root.cert], now=NOW)  # still verifies as shown
    assert report.valid and opened.status.endswith("headers=protected")


def test_a_protected_from_of_someone_else_is_a_mismatch(root: Identity, alice: Identity,
                                                        bob: Identity) -> None:
    forged = PROTECTED.replace(b"Alice <alice@example.test>", b"CEO <ceo@example.test>")
    opened = open_message(injected(alice, bob, protected=forged), agent(bob), [root.cert],
                          now=NOW)
    assert "signature=mismatch" in opened.status
    assert b"multipart/signed" in opened.content  # nothing verified is taken apart


def test_encrypted_only_shows_the_fields_it_carries(root: Identity, alice: Identity,
                                                    bob: Identity) -> None:
    stored = injected(alice, bob, sign=False).replace(
        b"To: Bob", b"Cc: eve@example.test\r\nTo: Bob", 1)  # outside only
    opened = open_message(stored, agent(bob), [root.cert], now=NOW)
    assert opened.status == "encrypted=yes; cipher=aes-256-gcm; signature=none"
    header = header_of(opened.content)
    assert b"Subject: the real subject\r\n" in header and b"HP-Outer" not in header
    assert b"eve@example.test" not in header  # an outer field the sender did not protect
    assert parse_entity(opened.content).body == BODY


def test_wrapped_messages_are_unwrapped(root: Identity, alice: Identity, bob: Identity) -> None:
    wrapped = (OUTER[OUTER.index(b"From:"):] + b"MIME-Version: 1.0\r\n"
               b"Content-Type: message/rfc822; forwarded=no\r\n\r\n" + PROTECTED
               + b"Content-Type: text/plain\r\n\r\n" + BODY)
    signed = sign_message(wrapped, agent(alice), now=NOW)
    stored = encrypt_message(signed, [Recipient(bob.cert, supports_gcm=True)])
    opened = open_message(stored, agent(bob), [root.cert], now=NOW)
    assert opened.status.endswith("headers=protected")
    assert b"message/rfc822" not in opened.content
    assert b"Subject: the real subject\r\n" in header_of(opened.content)
    shown = parse_entity(opened.content)
    assert shown.content_type()[0] == "text/plain" and shown.body == BODY


LDE_TEXT = b"Subject: the real subject\r\n\r\n"
LDE_HTML = (b'<div class="header-protection-legacy-display"><pre>Subject: the real subject'
            b"</pre></div>")


def test_legacy_display_elements_are_removed(root: Identity, alice: Identity,
                                             bob: Identity) -> None:
    html = b"<html><body>" + LDE_HTML + b"<p>the plaintext.</p></body></html>\r\n"
    content = (b'Content-Type: multipart/alternative; boundary="b1"; hp="cipher"\r\n\r\n'
               b"--b1\r\nContent-Type: text/plain; charset=utf-8; hp-legacy-display=\"1\"\r\n"
               b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + LDE_TEXT + BODY
               + b"\r\n--b1\r\nContent-Type: text/html; hp-legacy-display=\"1\"\r\n"
               b"Content-Transfer-Encoding: base64\r\n\r\n"
               + base64.encodebytes(html).replace(b"\n", b"\r\n") + b"\r\n--b1--\r\n")
    opened = open_message(injected(alice, bob, content=content), agent(bob), [root.cert],
                          now=NOW)
    body = parse_entity(opened.content).body
    assert LDE_TEXT not in body and b"Hello Bob,\r\nthe plaintext.\r\n" in body
    encoded = body.split(b"base64\r\n\r\n", 1)[1].split(b"\r\n--b1--", 1)[0]
    assert base64.b64decode(encoded) == b"<html><body><p>the plaintext.</p></body></html>\r\n"


def test_a_display_element_without_the_marker_stays() -> None:
    entity = b"Content-Type: text/plain\r\n\r\n" + LDE_TEXT + BODY
    assert without_legacy_display(entity) == entity


def test_unprotected_outer_fields_stay_when_there_is_no_protection() -> None:
    outer = b"From: a@example.test\r\nSubject: s\r\nContent-Type: multipart/signed\r\n\r\n"
    entity = b"Content-Type: text/plain\r\n\r\nhi\r\n"
    assert shown_message(outer, entity) == (b"From: a@example.test\r\nSubject: s\r\n"
                                            b"MIME-Version: 1.0\r\nContent-Type: text/plain"
                                            b"\r\n\r\nhi\r\n")
