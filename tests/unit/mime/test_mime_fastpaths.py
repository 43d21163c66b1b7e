"""The regular-expression fast paths give exactly what the general Dovecot-rule parsers give."""

from __future__ import annotations

import re
import time

from hypothesis import example, given, settings
from hypothesis import strategies as st

from smime_proxy.errors import MalformedMessage
from smime_proxy.mime.address import _fast, parse_address_list, parse_address_list_slow
from smime_proxy.mime.entity import MAX_HEADER_BYTES, content_type_by_email_package, parse_entity
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


def _entity_reference(data: bytes) -> tuple[int, int, list[tuple[str, bytes]]] | None:
    """parse_entity as first written (the regular expression for the end of the header, a
    field a line with continuation lines joined, the value unfolded by an expression): the
    spec of the faster code. None where it refuses the header as too large."""
    if data.startswith((b"\r\n", b"\n")):
        return 0, 2 if data.startswith(b"\r\n") else 1, []
    match = re.compile(rb"\r?\n\r?\n").search(data, 0, MAX_HEADER_BYTES + 4)
    if match is None:
        if len(data) > MAX_HEADER_BYTES:
            return None
        header_end = body_start = len(data)
    else:
        header_end = match.start() + (2 if data[match.start()] == 0x0D else 1)
        body_start = match.end()
    raws: list[list[bytes]] = []
    for line in data[:header_end].splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and raws:
            raws[-1].append(line)
        else:
            raws.append([line])
    fields = []
    for raw in map(b"".join, raws):
        name, colon, value = raw.partition(b":")
        if colon and (lowered := name.strip().decode("ascii", "replace").lower()):
            fields.append((lowered, re.sub(rb"\r?\n(?=[ \t])", b"", value).strip()))
    return header_end, body_start, fields


_HEADER_PIECES = [b"a", b"B", b":", b" ", b"\t", b"\r", b"\n", b"\r\n", b"\r\n ", b"\n\t",
                  b"\r\n\r\n", b"\n\n", b"\n\r\n", b"From: x", b"\xff", b"body"]


@settings(max_examples=3000, deadline=2000)
@given(st.lists(st.sampled_from(_HEADER_PIECES), max_size=24).map(b"".join))
@example(b"Received: a\r\n\tb\r\nFrom: c\r\n\r\nbody")
@example(b" lead: x\r\n more\r\nA: b\n\nbody")
@example(b"A: b\r\rC: d\n\r\nbody")
def test_parse_entity_is_the_reference(data: bytes) -> None:
    expected = _entity_reference(data)
    try:
        entity = parse_entity(data)
    except MalformedMessage:
        assert expected is None
        return
    fields = [(f.name, f.value()) for f in entity.fields]
    assert (entity.header_end, entity.body_start, fields) == expected


def test_a_header_beyond_the_limit_is_refused_as_before() -> None:
    data = b"A: " + b"x" * MAX_HEADER_BYTES
    assert _entity_reference(data) is None
    try:
        parse_entity(data)
    except MalformedMessage:
        return
    raise AssertionError("a header beyond the limit was taken")
