"""Address lists and Content-Type values: each expected value was measured on Dovecot 2.3.19
(ENVELOPE / BODYSTRUCTURE of a message with that field)."""

from __future__ import annotations

import pytest

from smime_proxy.mime.address import parse_address_list
from smime_proxy.mime.rfc822 import parse_content_type

Fields = tuple[bytes | None, bytes | None, bytes | None, bytes | None]
ADDRESSES: list[tuple[bytes, list[Fields]]] = [
    (b"a@b", [(None, None, b"a", b"b")]),
    (b'"Doe, John" <j@d.example>, x@y', [(b"Doe, John", None, b"j", b"d.example"),
                                          (None, None, b"x", b"y")]),
    (b"(comment) user@host (Real Name)", [(b"Real Name", None, b"user", b"host")]),
    (b"<@r1,@r2:u@h>", [(None, b"@r1,@r2", b"u", b"h")]),
    (b"bare", [(None, None, b"bare", b"MISSING_DOMAIN")]),
    (b"g: a@b, c@d;", [(None, None, b"g", None), (None, None, b"a", b"b"),
                       (None, None, b"c", b"d"), (None, None, None, None)]),
    (b".", [(None, None, b".", b"MISSING_DOMAIN")]),
    (b". ", [(None, None, b"MISSING_MAILBOX", b"MISSING_DOMAIN")]),
    (b".a", [(None, None, b".a", b"MISSING_DOMAIN")]),
    (b"a..b@c", [(None, None, b"a..b", b"c")]),
    (b'."q w"', [(b". q w", None, b"MISSING_MAILBOX", b"MISSING_DOMAIN")]),
    (b"x@y.", [(None, None, b"x", b"MISSING_DOMAIN")]),
    (b"x@y. z", [(None, None, b"x", b"y.z")]),
    (b"a <x@y.>", [(b"a", None, b"x", b"SYNTAX_ERROR")]),
    (b'a"a', [(None, None, b"a", b"MISSING_DOMAIN")]),
    (b'a"a"', [(b"a a", None, b"MISSING_MAILBOX", b"MISSING_DOMAIN")]),
    (b'a"b\n c', [(b"a b", None, b"MISSING_MAILBOX", b"MISSING_DOMAIN")]),
    (b'a"b\n ', [(None, None, b"a", b"MISSING_DOMAIN")]),
    (b'a"b\n c\n ', [(b"a b", None, b"MISSING_MAILBOX", b"MISSING_DOMAIN")]),
    (b"a(a\\", [(None, None, b"MISSING_MAILBOX", b"MISSING_DOMAIN")]),
    (b"a(a\n a", [(b"a", None, b"MISSING_MAILBOX", b"MISSING_DOMAIN")]),
    (b".\n ", [(None, None, b"MISSING_MAILBOX", b"MISSING_DOMAIN")]),
    (b'a"b\n  ', [(b"a b", None, b"MISSING_MAILBOX", b"MISSING_DOMAIN")]),
    (b'"b\n c" <a@b>', [(b"b c", None, b"a", b"b")]),
]


@pytest.mark.parametrize(("value", "expected"), ADDRESSES)
def test_address_lists(value: bytes, expected: list[Fields]) -> None:
    got = [(a.name, a.route, a.mailbox, a.domain) for a in parse_address_list(value)]
    assert got == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"text/plain", (b"text", b"plain", [])),
        (b" Text/Plain ; CharSet=UTF-8", (b"Text", b"Plain", [(b"CharSet", b"UTF-8")])),
        (b"text", (b"text", None, [])),
        (b"text; charset=x", (b"", None, [])),
        (b"text/", (b"", None, [])),
        (b"text/;a=b", (b"", None, [])),
        (b"a/b/c; x=y", (b"", None, [])),
        (b"text /plain", (b"text", b"plain", [])),
        (b"a/b; x*0*=us-ascii'en'A%20; x*1=\"b%\"",
         (b"a", b"b", [(b"x*", b"us-ascii'en'A%20b%25")])),
        (b"a/b; x*1=B; x*0=A", (b"a", b"b", [(b"x", b"AB")])),
        (b"a/b; x*0=A; x*2=C", (b"a", b"b", [(b"x*0", b"A"), (b"x*2", b"C")])),
        (b"a/b; name==?utf-8?q?x?=", (b"a", b"b", [(b"name", b"=?utf-8?q?x?=")])),
        (b"a/b; (c) k = \"v w\" ; j=1", (b"a", b"b", [(b"k", b"v w"), (b"j", b"1")])),
    ],
)
def test_content_type_values(
    value: bytes, expected: tuple[bytes, bytes | None, list[tuple[bytes, bytes]]]
) -> None:
    ctype, subtype, params, _ret = parse_content_type(value)
    assert (ctype, subtype, params) == expected
