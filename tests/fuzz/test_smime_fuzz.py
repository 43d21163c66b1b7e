"""Hypothesis fuzzing of the S/MIME entry points: a result or our own error, never anything else.

Inputs: arbitrary bytes, and valid signed/encrypted messages whose CMS DER is mutated (bit
flips, truncation, insertion) before being re-wrapped in base64. Seeds that once found a bug
are kept as explicit examples.
"""

from __future__ import annotations

import base64
import contextlib
from functools import cache

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from smime_proxy.crypto.keyagent import InProcessKeyAgent
from smime_proxy.errors import SmimeProxyError
from smime_proxy.mime.entity import canonical_crlf, parse_entity, split_multipart
from smime_proxy.smime import (
    Recipient,
    decrypt_message,
    encrypt_message,
    inspect_signature,
    sign_message,
)
from support.pki import NOW, Identity, make_ca, make_user, simple_message

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@cache
def _pki() -> tuple[Identity, Identity]:
    root = make_ca()
    return root, make_user("alice@example.test", root, kind="p256")


@cache
def _samples() -> tuple[bytes, bytes, bytes]:
    root, alice = _pki()
    signer = InProcessKeyAgent(alice.key, alice.cert, (root.cert,))
    detached = sign_message(simple_message(), signer, now=NOW)
    opaque = sign_message(simple_message(), signer, opaque=True, now=NOW)
    encrypted = encrypt_message(simple_message(), [Recipient(alice.cert, supports_gcm=True)])
    return detached, opaque, encrypted


def _check_open(message: bytes) -> None:
    root, alice = _pki()
    try:
        report = inspect_signature(message, [root.cert], now=NOW)
        assert isinstance(report.valid, bool)
    except SmimeProxyError:
        pass
    with contextlib.suppress(SmimeProxyError):
        decrypt_message(message, InProcessKeyAgent(alice.key, alice.cert, ()))


@FUZZ
@given(st.binary(max_size=2048))
@example(b"Content-Type: multipart/signed; boundary=x\r\n\r\n--x\r\n\r\n--x\r\n\r\n--x--")
@example(b"Content-Type: application/pkcs7-mime\r\nContent-Transfer-Encoding: base64\r\n\r\nMA==")
@example(
    b"Content-Type: application/pkcs7-mime\r\n\r\n0\x80\x06\x09*\x86H\x86\xf7\r\x01\x07\x02\xa0\x80"
)
def test_arbitrary_bytes(data: bytes) -> None:
    _check_open(data)


def _rewrap(message: bytes, mutate: st.DataObject) -> bytes:
    """Mutate the base64 CMS at the end of the message (the signature or envelope)."""
    head, _, tail = message.rpartition(b"\r\n\r\n")
    if tail.endswith(b"--\r\n"):  # multipart/signed: the signature is the last part
        body, closing = tail.rsplit(b"\r\n--", 1)
        closing = b"\r\n--" + closing
    else:
        body, closing = tail, b""
    der = bytearray(base64.b64decode(body))
    action = mutate.draw(st.sampled_from(["flip", "truncate", "insert", "zero-length"]))
    index = mutate.draw(st.integers(0, len(der) - 1))
    if action == "flip":
        der[index] ^= 1 << mutate.draw(st.integers(0, 7))
    elif action == "truncate":
        del der[index:]
    elif action == "insert":
        der[index:index] = mutate.draw(st.binary(min_size=1, max_size=8))
    else:
        der[index] = 0x80  # indefinite or bogus length
    return head + b"\r\n\r\n" + base64.encodebytes(bytes(der)) + closing


@FUZZ
@given(st.sampled_from([0, 1, 2]), st.data())
def test_mutated_cms(which: int, data: st.DataObject) -> None:
    _check_open(_rewrap(_samples()[which], data))


@FUZZ
@given(st.binary(max_size=1024), st.text(min_size=0, max_size=80))
def test_mime_helpers(data: bytes, boundary: str) -> None:
    entity = parse_entity(data)
    assert data.startswith(entity.header) and data.endswith(entity.body)
    entity.content_type()
    canonical = canonical_crlf(data)
    assert b"\n" not in canonical.replace(b"\r\n", b"")
    try:
        parts = split_multipart(data, boundary)
    except SmimeProxyError:
        return
    assert all(part in data for part in parts)
