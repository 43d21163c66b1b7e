"""The regular-expression fast paths give exactly what the general Dovecot-rule parsers give."""

from __future__ import annotations

import time

from hypothesis import example, given, settings
from hypothesis import strategies as st

from smime_proxy.mime.address import _fast, parse_address_list, parse_address_list_slow
from smime_proxy.mime.entity import content_type_by_email_package
from smime_proxy.mime.entity import parse_content_type as entity_content_type
from smime_proxy.mime.rfc822 import (
    _parse_content_type_fast,
    parse_content_type,
    parse_content_type_slow,
    parse_language,
    parse_token_value,
    parse_transfer_encoding,
)

# bytes that matter to the grammars, plus a few ordinary ones
_PIECES = [
    b"a", b"Z", b"0", b".", b"/", b";", b"=", b'"', b"\\", b" ", b"\t", b"\r\n ", b"\n",
    b"(", b")", b"<", b">", b"@", b",", b":", b"*", b"-", b"'", b"%", b"\xc3\xa9", b"[", b"]",
    b"text", b"plain", b"multipart/mixed", b"charset", b"boundary", b"x*0", b"x*1*", b"\0",
]
_values = st.lists(st.sampled_from(_PIECES), max_size=14).map(b"".join)


@settings(max_examples=3000, deadline=2000)
@given(_values)
@example(b'text/plain; charset="utf-8"')
@example(b"text/plain;")
@example(b"text/ plain ; a = b ")
def test_content_type_fast_path_is_exact(value: bytes) -> None:
    assert parse_content_type(value) == parse_content_type_slow(value)


def test_content_type_fast_path_is_taken() -> None:
    assert _parse_content_type_fast(b'multipart/mixed; boundary="a b"; x=y') == (
        b"multipart", b"mixed", [(b"boundary", b"a b"), (b"x", b"y")], 1,
    )
    assert _parse_content_type_fast(b"text/plain (comment)") is None


@settings(max_examples=3000, deadline=2000)
@given(_values)
@example(b'"Doe, John" <j@d.example>, x@y')
@example(b"a@b <c@d>")
@example(b'a"b"c <x@y>')
def test_address_fast_path_is_exact(value: bytes) -> None:
    assert parse_address_list(value) == parse_address_list_slow(value)


def test_address_fast_path_is_taken() -> None:
    assert _fast(b"John Doe <j@d.example>, x@y") is not None
    assert _fast(b"group: a@b;") is None


@given(_values)
def test_other_header_parsers_never_crash(value: bytes) -> None:
    parse_transfer_encoding(value)
    parse_token_value(value)
    parse_language(value)


def test_no_catastrophic_backtracking() -> None:
    """Header values come from the network: every parser stays linear (the first version of
    the address fast path took minutes on b'multipart/mixedmultipart/mixed'). Doubling the
    input may at most about double the time (ratio bound, not an absolute time)."""

    def cost(value: bytes) -> float:
        best = float("inf")
        for _ in range(3):
            start = time.process_time()
            parse_address_list(value)
            parse_content_type(value)
            parse_token_value(value)
            best = min(best, time.process_time() - start)
        return max(best, 1e-4)

    nasty = [
        b"multipart/mixed",
        b"a",
        b"a.",
        b'"x" ',
        b"a ",
        b"x; a=b",
        b"(",
        b"a@b, ",
        b"a\"b\n ",
    ]
    for unit in nasty:
        small, large = unit * 2_000, unit * 16_000
        assert cost(large) < 40 * cost(small), unit


@settings(max_examples=3000, deadline=2000)
@given(_values)
@example(b'Multipart/Mixed;\r\n boundary="=_x y"')
@example(b"text/plain; charset=utf-8; charset=latin1")
@example(b'application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m";')
def test_entity_content_type_fast_path_is_the_email_package(value: bytes) -> None:
    """mime.entity's reading of a Content-Type (for the S/MIME layer) is the email
    package's, whichever way it is read."""
    assert entity_content_type(value) == content_type_by_email_package(value)
