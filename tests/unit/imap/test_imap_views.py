"""IMAP views computed from the tree. Expected values were checked against Dovecot 2.3.19
(the oracle tests in tests/integration/test_views_oracle.py compare the whole corpus)."""

from __future__ import annotations

import pytest

from smime_proxy.imap.views import (
    MessageView,
    SectionError,
    for_humans,
    parse_section,
    to_crlf,
)
from smime_proxy.imap.views import ViewSection as Section
from smime_proxy.imap.wire.values import render
from smime_proxy.mime.transfer import BinaryDecodeError, decode_base64, decode_qp

MIXED = (
    b'From: "Doe, John" <john@example.com>\r\nTo: a@b.example, "C D" <c@d.example>\r\n'
    b"Cc: undisclosed-recipients:;\r\nSubject: =?utf-8?q?caf=C3=A9?= and\r\n more\r\n"
    b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <m1@example.com>\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n"
    b"preamble\r\n--XX\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9 =\r\nsoft\r\n"
    b"--XX\r\nContent-Type: application/octet-stream; name=\"a.bin\"\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"Content-Disposition: attachment; filename=\"a.bin\"\r\n"
    b"Content-ID: <cid1@x>\r\nContent-Description: some\r\n data\r\n"
    b"Content-Language: en, de\r\nContent-Location: http://x.example/a\r\n"
    b"Content-MD5: Q2hlY2s=\r\n\r\nSGVsbG8=\r\n--XX--\r\nepilogue\r\n"
)


def test_bodystructure_and_body() -> None:
    view = MessageView(MIXED)
    text = [b"text", b"plain", [b"charset", b"utf-8"], None, None, b"quoted-printable", 17, 1]
    app = [b"application", b"octet-stream", [b"name", b"a.bin"], b"<cid1@x>", b"some data",
           b"base64", 8]
    assert view.bodystructure() == [
        [*text, None, None, None, None],
        [*app, b"Q2hlY2s=", [b"attachment", [b"filename", b"a.bin"]], [b"en", b"de"],
         b"http://x.example/a"],
        b"mixed", [b"boundary", b"XX"], None, None, None,
    ]
    assert view.body() == [text, app, b"mixed"]
    assert render(view.body()).startswith(b'(("text" "plain" ("charset" "utf-8") NIL NIL')


def test_defaults_for_plain_and_broken_content_types() -> None:
    plain = MessageView(b"Subject: x\r\n\r\nline\r\n")
    assert plain.bodystructure() == [
        b"text", b"plain", [b"charset", b"us-ascii"], None, None, b"7bit", 6, 1,
        None, None, None, None,
    ]
    # Dovecot 2.3: "text" alone keeps the type, "text; x=y" loses it
    alone = MessageView(b"MIME-Version: 1.0\r\nContent-Type: text\r\n\r\nx\r\n")
    assert alone.body() == [b"text", b"", [b"charset", b"us-ascii"], None, None, b"7bit", 3, 1]
    broken = MessageView(b"MIME-Version: 1.0\r\nContent-Type: text; charset=x\r\n\r\nx\r\n")
    assert broken.body() == [b"", b"", None, None, None, b"7bit", 3]
    no_parts = MessageView(b"Content-Type: multipart/mixed; boundary=q\r\n\r\n--q--\r\n")
    assert no_parts.body() == [
        [b"text", b"plain", [b"charset", b"us-ascii"], None, None, b"7bit", 0, 0], b"mixed",
    ]


def test_rfc2231_parameters_are_merged_but_left_encoded() -> None:
    view = MessageView(
        b"Content-Type: application/x-stuff;\r\n title*0*=us-ascii'en'This%20is;\r\n"
        b" title*1*=%20long;\r\n title*2=\" and %done\"\r\n"
        b"Content-Disposition: attachment; filename*=utf-8''%e2%82%ac.txt\r\n\r\nxx\r\n"
    )
    structure = view.bodystructure()
    assert structure[2] == [b"title*", b"us-ascii'en'This%20is%20long and %25done"]
    assert structure[8] == [b"attachment", [b"filename*", b"utf-8''%e2%82%ac.txt"]]


def test_message_rfc822_structure() -> None:
    view = MessageView(
        b"Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\n"
        b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\nFrom: i@example.com\r\n\r\n"
        b"deep\r\n--o--\r\n"
    )
    rfc = view.bodystructure()[0]
    assert isinstance(rfc, list)
    assert rfc[:7] == [b"message", b"rfc822", None, None, None, b"7bit", 43]
    envelope = rfc[7]
    assert isinstance(envelope, list)
    assert envelope[1] == b"inner"
    assert envelope[2] == [[None, None, b"i", b"example.com"]]
    # "deep" has no line end (the CRLF belongs to the delimiter): 0 lines; the message 3
    assert rfc[8] == [b"text", b"plain", [b"charset", b"us-ascii"], None, None, b"7bit", 4, 0,
                      None, None, None, None]
    assert rfc[9] == 3
    assert view.section("1.HEADER") == b"Subject: inner\r\nFrom: i@example.com\r\n\r\n"
    assert view.section("1.TEXT") == b"deep"
    assert view.section("1.1") == b"deep"
    assert view.section("1.MIME") == b"Content-Type: message/rfc822\r\n\r\n"


def test_envelope_rules() -> None:
    view = MessageView(MIXED)
    assert view.envelope() == [
        b"Mon, 1 Jan 2024 00:00:00 +0000",
        b"=?utf-8?q?caf=C3=A9?= and more",  # encoded words left raw, folding removed
        [[b"Doe, John", None, b"john", b"example.com"]],
        [[b"Doe, John", None, b"john", b"example.com"]],  # Sender defaults to From
        [[b"Doe, John", None, b"john", b"example.com"]],  # Reply-To defaults to From
        [[None, None, b"a", b"b.example"], [b"C D", None, b"c", b"d.example"]],
        [[None, None, b"undisclosed-recipients", None], [None, None, None, None]],  # group
        None,
        None,
        b"<m1@example.com>",
    ]


def test_envelope_odd_addresses() -> None:
    view = MessageView(
        b"From: (comment) user@host (Real Name)\r\nTo: <@r1,@r2:u@h>, bare\r\n"
        b"Cc: a@b\r\nCc: c@d\r\nSender:\r\n\r\n"
    )
    env = view.envelope()
    assert env[2] == [[b"Real Name", None, b"user", b"host"]]
    assert env[3] == env[2]  # empty Sender: From
    assert env[5] == [[None, b"@r1,@r2", b"u", b"h"], [None, None, b"bare", b"MISSING_DOMAIN"]]
    assert env[6] == [[None, None, b"a", b"b"], [None, None, b"c", b"d"]]  # repeated fields add
    assert MessageView(b"X: y\r\n\r\n").envelope() == [None] * 10


def test_sections_and_partials() -> None:
    view = MessageView(MIXED)
    header_end = MIXED.index(b"\r\n\r\n") + 4
    assert view.section("") == MIXED
    assert view.section("HEADER") == MIXED[:header_end] == view.rfc822_header()
    assert view.section("TEXT") == MIXED[header_end:] == view.rfc822_text()
    assert view.section("1") == b"caf=C3=A9 =\r\nsoft"
    assert view.section("1.MIME") == (
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    )
    assert view.section("2") == b"SGVsbG8="
    assert view.section("3") == b""  # no such part: empty string, like Dovecot
    assert view.section("", (0, 6)) == b"From: "
    assert view.section("TEXT", (3, 5)) == b"amble"
    assert view.section("", (10**9, 5)) == b""
    assert view.section('HEADER.FIELDS (subject "Message-ID")') == (
        b"Subject: =?utf-8?q?caf=C3=A9?= and\r\n more\r\nMessage-ID: <m1@example.com>\r\n\r\n"
    )
    not_fields = view.section("HEADER.FIELDS.NOT (From To Cc Subject Date Message-ID)")
    assert not_fields == b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XX\"" \
        b"\r\n\r\n"


def test_header_fields_empty_line_rules() -> None:
    no_eoh = MessageView(b"Subject: a\r\nFrom: b\r\n")
    assert no_eoh.section("HEADER.FIELDS (SUBJECT)") == b"Subject: a\r\n\r\n"
    assert no_eoh.section("HEADER.FIELDS.NOT (SUBJECT)") == b"From: b\r\n"
    nested = MessageView(b"Content-Type: message/rfc822\r\n\r\nSubject: a\r\n")
    assert nested.section("1.HEADER.FIELDS (SUBJECT)") == b"Subject: a\r\n"


def test_crlf_canonical_form() -> None:
    lf = b"Subject: lf\n\nline1\nline2\n"
    view = MessageView(lf)
    assert view.data == b"Subject: lf\r\n\r\nline1\r\nline2\r\n"
    assert view.size == len(lf) + 4
    assert view.bodystructure()[6:8] == [14, 2]
    crlf = b"A: b\r\n\r\nx\r\n"
    assert to_crlf(crlf) is crlf


def test_binary() -> None:
    view = MessageView(MIXED)
    assert view.binary((1,)) == "café soft".encode()
    assert view.binary((2,)) == b"Hello"
    assert view.binary((2,), (1, 3)) == b"ell"
    assert view.binary_size((1,)) == len("café soft".encode())
    assert view.binary((9,)) == b""
    bad = MessageView(
        b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\nSGVsbG8\r\n"
    )
    with pytest.raises(BinaryDecodeError):
        bad.binary((1,))
    odd = MessageView(b"Content-Transfer-Encoding: x-uuencode\r\nMIME-Version: 1.0\r\n\r\nx")
    with pytest.raises(BinaryDecodeError.__mro__[1]):  # UnknownCte
        odd.binary((1,))


@pytest.mark.parametrize(
    ("encoded", "decoded"),
    [
        (b"a=3db", b"a=b"),
        (b"a=3Db  \r\nx\t \r\n", b"a=b\r\nx\r\n"),
        (b"abc  =\r\nd", b"abc  d"),
        (b"x= \r\ny", b"xy"),
        (b"a =\r\n\r\nb", b"a \r\nb"),
        (b"tab\t=09\r\n", b"tab\t\t\r\n"),
        (b"lf\nonly=\nx\n", b"lf\r\nonlyx\r\n"),
    ],
)
def test_quoted_printable(encoded: bytes, decoded: bytes) -> None:
    assert decode_qp(encoded) == decoded


@pytest.mark.parametrize("encoded", [b"end=", b"end=  ", b"a\rb\r\n", b"=4", b"x=ZZ"])
def test_quoted_printable_errors(encoded: bytes) -> None:
    with pytest.raises(BinaryDecodeError):
        decode_qp(encoded)


def test_base64() -> None:
    assert decode_base64(b"SGVs bG8=\r\n") == b"Hello"
    assert decode_base64(b"\r\n") == b""
    for bad in (b"SGk", b"S", b"SGk=\r\nSGk=", b"SG*k="):
        with pytest.raises(BinaryDecodeError):
            decode_base64(bad)


def test_for_humans() -> None:
    assert for_humans(b"  a \t b\r\n  c  ") == b"a b c"
    assert for_humans(b"\r\n") == b""
    assert for_humans(b"x\0y") == b"x\x80y"


def test_parse_section() -> None:
    assert parse_section("") == Section()
    assert parse_section("1.2.MIME") == Section((1, 2), "MIME")
    assert parse_section("header.fields (a \"B c\")") == Section((), "HEADER.FIELDS",
                                                                (b"a", b"B c"))
    for bad in ("MIME", "0", "1.", "HEADER.FIELDS", "HEADER.FIELDS ()", "TEXT (a)", "X"):
        with pytest.raises(SectionError):
            parse_section(bad)
