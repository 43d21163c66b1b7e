"""The native base64 decoder (native/src/base64.rs) against binascii's non-strict
`a2b_base64`, its reference: the same bytes for any input, and None exactly where binascii
raises; `smime_forms.decode_body` gives the same bytes or the same error with it and without.

`MIME_FUZZ_EXAMPLES=20000` for a deep run (default 600).
"""

from __future__ import annotations

import base64
import binascii
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smime_proxy import smime_forms
from smime_proxy.errors import MalformedMessage
from smime_proxy.mime.entity import parse_entity
from support.damage import NATIVE_FUZZ, require_native

require_native()
from smime_proxy import _native as core  # noqa: E402 - only once it is known to be built


def reference(data: bytes) -> bytes | None:
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:
        return None


# what a body is made of: the alphabet, pads, line ends and bytes outside the alphabet
PIECES = st.sampled_from([b"A", b"z", b"0", b"+", b"/", b"=", b"==", b"\r\n", b"\n", b" ",
                          b"-", b"\x00", b"\xff", b"QUJD", b"YQ==", b"YWI=", b"*"])


@NATIVE_FUZZ
@given(st.lists(PIECES, max_size=40).map(b"".join), st.binary(max_size=6))
def test_same_as_binascii(body: bytes, prefix: bytes) -> None:
    assert core.decode_base64(prefix + body, len(prefix)) == reference(body)


@NATIVE_FUZZ
@given(st.binary(max_size=300), st.integers(0, 76))
def test_encoded_data_and_any_bytes(data: bytes, cut: int) -> None:
    encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
    assert core.decode_base64(encoded, 0) == data
    damaged = encoded[:cut] + encoded[cut + 1 :]
    assert core.decode_base64(damaged, 0) == reference(damaged)


@pytest.mark.parametrize(("body", "expected"), [
    (b"aGVs\r\nbG8=\r\n", b"hello"),
    (b"aGVsbG8=ignored after the pad", b"hello"),  # a completed quantum ends the data
    (b"a=GVs", b"hel"),  # a pad before the third character of a quantum is skipped
    (b"aGVsbG8", None),  # a partial quantum without its pad
    (b"aGVsb", None),  # one character more than a multiple of four
    (b"", b""),
])
def test_edges(body: bytes, expected: bytes | None) -> None:
    assert reference(body) == expected
    assert core.decode_base64(body, 0) == expected


def test_start_beyond_the_data_is_empty() -> None:
    assert core.decode_base64(b"QUJD", 9) == b""


@pytest.mark.parametrize("body", [b"QUJD\r\nREVG\r\n", b"QUJDRA\r\n", b"QUJDR\r\n"])
def test_decode_body_same_with_and_without(body: bytes) -> None:
    entity = parse_entity(b"Content-Transfer-Encoding: base64\r\n\r\n" + body)

    def outcome() -> bytes | str:
        try:
            return smime_forms.decode_body(entity)
        except MalformedMessage as exc:
            return str(exc)

    native_outcome = outcome()
    with mock.patch.object(smime_forms, "native", None):
        assert outcome() == native_outcome
