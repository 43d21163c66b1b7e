"""The identity check runs on the headers the client is shown (security issue, item 1):
an opaque signature's own header fields, a wrapped message/rfc822's From."""

from __future__ import annotations

import pytest

from smime_proxy.crypto.keyagent import InProcessKeyAgent
from smime_proxy.crypto.signed import build_signed_data
from smime_proxy.display import open_message
from smime_proxy.mime.building import base64_lines, pkcs7_mime_header
from smime_proxy.smime import inspect_signature, sign_message
from support.pki import NOW, Identity, make_user


@pytest.fixture(scope="module")
def carol(root: Identity) -> InProcessKeyAgent:
    carol = make_user("carol@example.test", root)
    return InProcessKeyAgent(carol.key, carol.cert, tuple(carol.chain))


def opaque(agent: InProcessKeyAgent, outer_from: bytes, content: bytes) -> bytes:
    """An opaque signed-data message whose signed content is `content`, header included."""
    der = build_signed_data([content], agent, detached=False, digest="sha256", pss=False,
                            extra_certs=list(agent.chain), signing_time=NOW)
    return (b"From: " + outer_from + b"\r\nTo: bob@example.test\r\nSubject: s\r\n"
            + pkcs7_mime_header("signed-data") + base64_lines(der))


def test_opaque_content_with_someone_elses_from_is_a_mismatch(root: Identity,
                                                              carol: InProcessKeyAgent) -> None:
    forged = opaque(carol, b"carol@example.test",
                    b"From: alice@example.test\r\nContent-Type: text/plain\r\n\r\nI am alice\r\n")
    report = inspect_signature(forged, [root.cert], now=NOW)
    assert not report.valid
    opened = open_message(forged, None, [root.cert], now=NOW)
    assert b"From: alice@example.test" in opened.content  # what the client sees...
    assert "signature=mismatch" in opened.status  # ...is never called valid
    assert "signature=valid" not in opened.status


def test_opaque_content_with_the_signers_own_from_is_valid(root: Identity,
                                                           carol: InProcessKeyAgent) -> None:
    message = opaque(carol, b"someone@example.test",
                     b"From: carol@example.test\r\nContent-Type: text/plain\r\n\r\nhi\r\n")
    opened = open_message(message, None, [root.cert], now=NOW)
    assert "signature=valid" in opened.status and "signer=carol@example.test" in opened.status


def test_opaque_without_inner_from_uses_the_outer_one(root: Identity,
                                                      carol: InProcessKeyAgent) -> None:
    plain = b"From: carol@example.test\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
    message = sign_message(plain, carol, opaque=True, now=NOW)
    assert inspect_signature(message, [root.cert], now=NOW).valid


def test_wrapped_message_from_someone_else_is_a_mismatch(root: Identity,
                                                         carol: InProcessKeyAgent) -> None:
    wrapped = (b"From: carol@example.test\r\nTo: bob@example.test\r\nSubject: fwd\r\n"
               b"MIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\n"
               b"From: alice@example.test\r\nSubject: I am alice\r\n\r\nbody\r\n")
    for as_opaque in (False, True):
        signed = sign_message(wrapped, carol, opaque=as_opaque, now=NOW)
        report = inspect_signature(signed, [root.cert], now=NOW)
        assert not report.valid, as_opaque
        assert "wrapped message" in (report.reason or "")
        status = open_message(signed, None, [root.cert], now=NOW).status
        assert "signature=mismatch" in status


def test_wrapped_message_from_the_signer_is_valid(root: Identity,
                                                  carol: InProcessKeyAgent) -> None:
    wrapped = (b"From: carol@example.test\r\nTo: bob@example.test\r\nSubject: s\r\n"
               b"MIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\n"
               b"From: Carol <carol@example.test>\r\nSubject: s\r\n\r\nbody\r\n")
    assert inspect_signature(sign_message(wrapped, carol, now=NOW), [root.cert], now=NOW).valid


@pytest.mark.parametrize("from_field", [
    b'"alice@example.test" <carol@example.test>',
    b"carol@example.test (alice@example.test)",
    b"=?utf-8?q?alice=40example=2Etest?= <carol@example.test>",
    b'"ALICE@example.test via" <carol@example.test>',
])
def test_a_display_name_that_is_another_address_is_a_mismatch(
        root: Identity, carol: InProcessKeyAgent, from_field: bytes) -> None:
    message = (b"From: " + from_field + b"\r\nTo: bob@example.test\r\nSubject: s\r\n"
               b"Content-Type: text/plain\r\n\r\nhello\r\n")
    status = open_message(sign_message(message, carol, now=NOW), None, [root.cert],
                          now=NOW).status
    assert "signature=mismatch" in status


@pytest.mark.parametrize("from_field", [
    b"Carol <carol@example.test>", b'"carol@example.test" <carol@example.test>',
    b"CAROL@EXAMPLE.TEST",
])
def test_a_display_name_naming_the_signer_is_valid(root: Identity, carol: InProcessKeyAgent,
                                                   from_field: bytes) -> None:
    message = (b"From: " + from_field + b"\r\nTo: bob@example.test\r\nSubject: s\r\n"
               b"Content-Type: text/plain\r\n\r\nhello\r\n")
    status = open_message(sign_message(message, carol, now=NOW), None, [root.cert],
                          now=NOW).status
    assert "signature=valid" in status


def test_headers_protected_only_when_the_signature_covers_what_is_shown(
        root: Identity, carol: InProcessKeyAgent) -> None:
    """`headers=protected|unprotected` (security issue, item 1): a Subject changed after
    signing is shown, so the status must say the headers are not covered."""
    plain = (b"From: carol@example.test\r\nTo: bob@example.test\r\nSubject: invoice\r\n"
             b"Content-Type: text/plain\r\n\r\npay 10\r\n")
    signed = sign_message(plain, carol, now=NOW)
    assert open_message(signed, None, [root.cert], now=NOW).status.endswith(
        "signature=valid; signer=carol@example.test; headers=unprotected")
    wrapped = (b"From: carol@example.test\r\nTo: bob@example.test\r\nSubject: invoice\r\n"
               b"MIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\n"
               b"From: carol@example.test\r\nTo: bob@example.test\r\nSubject: invoice\r\n"
               b"\r\npay 10\r\n")
    signed = sign_message(wrapped, carol, now=NOW)
    assert open_message(signed, None, [root.cert], now=NOW).status.endswith(
        "headers=protected")
    # a Subject changed in transit outside the wrapper: the client sees the signed one
    changed = signed.replace(b"Subject: invoice\r\nMIME", b"Subject: URGENT pay now\r\nMIME", 1)
    opened = open_message(changed, None, [root.cert], now=NOW)
    assert opened.status.endswith("signature=valid; signer=carol@example.test; "
                                  "headers=protected")
    header = opened.content.split(b"\r\n\r\n", 1)[0]
    assert b"Subject: invoice" in header and b"URGENT" not in header
    opaque_own = (b"From: carol@example.test\r\nSubject: x\r\nContent-Type: text/plain\r\n"
                  b"\r\nhi\r\n")
    status = open_message(opaque(carol, b"carol@example.test", opaque_own), None,
                          [root.cert], now=NOW).status
    assert status.endswith("headers=unprotected")  # the outer To is shown and not signed
