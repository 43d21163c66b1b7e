"""SEARCH over shown messages (imap.search): the program's tree, its leaves as the upstream
gets them, content keys judged on real-ish messages, bounds, and fuzzing."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smime_proxy.imap.search import (
    MAX_DEPTH,
    MAX_HEADER_BYTES,
    MAX_LEAVES,
    MAX_TEXT_BYTES,
    MAX_TEXT_KEYS,
    And,
    Leaf,
    Node,
    Not,
    Or,
    SearchUnsupported,
    Text,
    evaluate,
    has_text,
    leaves,
    matching,
    parse_program,
)
from smime_proxy.imap.views import MessageView
from smime_proxy.imap.wire import SearchCommand, parse_command
from smime_proxy.imap.wire.values import Atom, Binary, Literal, Value

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "mime"


def command(criteria: bytes) -> SearchCommand:
    parsed = parse_command(b"t1 UID SEARCH " + criteria + b"\r\n")
    assert isinstance(parsed, SearchCommand)
    return parsed


def program(criteria: bytes) -> Node:
    parsed = command(criteria)
    return parse_program(parsed.criteria, parsed.charset)


# --- parsing -------------------------------------------------------------------------------

NO_ARGUMENT_KEYS = [
    "ALL", "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "NEW", "OLD", "RECENT", "SEEN",
    "UNANSWERED", "UNDELETED", "UNDRAFT", "UNFLAGGED", "UNSEEN", "SAVEDATESUPPORTED",
]


@pytest.mark.parametrize("key", NO_ARGUMENT_KEYS)
def test_a_key_without_arguments_is_a_leaf_in_upper_case(key: str) -> None:
    assert program(key.encode()) == Leaf(key.encode())
    assert program(key.lower().encode()) == Leaf(key.encode())


LEAF_FORMS = [
    # (criteria as the client sends them, the leaf the upstream gets)
    (b"BEFORE 1-Feb-1994", b"BEFORE 1-Feb-1994"),
    (b"on 01-feb-1994", b"ON 01-feb-1994"),
    (b'SINCE "1-Feb-1994"', b'SINCE "1-Feb-1994"'),
    (b"SINCE {10}\r\n1-Feb-1994", b'SINCE "1-Feb-1994"'),  # a literal comes back quoted
    (b"SENTBEFORE 1-Feb-1994", b"SENTBEFORE 1-Feb-1994"),
    (b"SENTON 1-Feb-1994", b"SENTON 1-Feb-1994"),
    (b"SENTSINCE 1-Feb-1994", b"SENTSINCE 1-Feb-1994"),
    (b"SAVEDBEFORE 1-Feb-1994", b"SAVEDBEFORE 1-Feb-1994"),
    (b"SAVEDON 1-Feb-1994", b"SAVEDON 1-Feb-1994"),
    (b"SAVEDSINCE 1-Feb-1994", b"SAVEDSINCE 1-Feb-1994"),
    (b"LARGER 100", b"LARGER 100"),
    (b"SMALLER 0", b"SMALLER 0"),
    (b"OLDER 3600", b"OLDER 3600"),
    (b"YOUNGER 60", b"YOUNGER 60"),
    (b"KEYWORD $Forwarded", b"KEYWORD $Forwarded"),
    (b"UNKEYWORD Junk", b"UNKEYWORD Junk"),
    (b"KEYWORD 42", b"KEYWORD 42"),
    (b"UID 1:5", b"UID 1:5"),
    (b"UID 1,3:*", b"UID 1,3:*"),
    (b"UID 7", b"UID 7"),
    (b"UID $", b"UID $"),
    (b"1:5", b"1:5"),
    (b"5", b"5"),
    (b"*", b"*"),
    (b"2,4:7,9", b"2,4:7,9"),
    (b"$", b"$"),
    (b"MODSEQ 620162338", b"MODSEQ 620162338"),
    (b'MODSEQ "/flags/\\\\draft" all 620162338', b'MODSEQ "/flags/\\\\draft" all 620162338'),
    (b'MODSEQ "/flags/$Junk" PRIV 5', b'MODSEQ "/flags/$Junk" PRIV 5'),
    (b"EMAILID M6d99ac3275bb4e", b"EMAILID M6d99ac3275bb4e"),
    (b"THREADID T64b478a75b7ea9", b"THREADID T64b478a75b7ea9"),
    # plain keys together: one leaf, as the client wrote them
    (b"OR SEEN FLAGGED", b"OR SEEN FLAGGED"),
    (b"NOT DELETED", b"NOT DELETED"),
    (b"SEEN UNDELETED", b"(SEEN UNDELETED)"),
    (b"(SEEN UNDELETED)", b"(SEEN UNDELETED)"),
    (b"OR (SEEN LARGER 5) NOT UID 3:4", b"OR (SEEN LARGER 5) NOT UID 3:4"),
    (b"ALL SEEN", b"SEEN"),
    (b"ALL ALL", b"ALL"),
    (b"(ALL)", b"ALL"),
]


@pytest.mark.parametrize(("criteria", "text"), LEAF_FORMS)
def test_keys_the_upstream_judges_are_leaves_rendered_exactly(criteria: bytes, text: bytes) -> None:
    node = program(criteria)
    assert node == Leaf(text)
    assert not has_text(node)


@pytest.mark.parametrize("leaf", [text for _criteria, text in LEAF_FORMS])
def test_a_leaf_is_itself_a_search_key_that_parses_back_to_itself(leaf: bytes) -> None:
    assert program(leaf) == Leaf(leaf)


TEXT_FORMS = [
    (b"BODY hello", Text("BODY", None, b"hello")),
    (b'body "hello world"', Text("BODY", None, b"hello world")),
    (b"TEXT {5}\r\nhello", Text("TEXT", None, b"hello")),
    (b"SUBJECT NIL", Text("SUBJECT", None, b"NIL")),  # the astring NIL, not nil
    (b"SUBJECT 2024", Text("SUBJECT", None, b"2024")),
    (b'FROM ""', Text("FROM", None, b"")),
    (b"TO bob@example.org", Text("TO", None, b"bob@example.org")),
    (b"CC carol", Text("CC", None, b"carol")),
    (b"BCC dave", Text("BCC", None, b"dave")),
    (b'HEADER X-Spam "yes"', Text("HEADER", b"X-Spam", b"yes")),
    (b'HEADER "List-Id" ""', Text("HEADER", b"List-Id", b"")),
    (b"HEADER Message-ID {3}\r\n<a@", Text("HEADER", b"Message-ID", b"<a@")),
    (b"CHARSET UTF-8 SUBJECT {6}\r\ncaf\xc3\xa9!", Text("SUBJECT", None, b"caf\xc3\xa9!")),
]


@pytest.mark.parametrize(("criteria", "node"), TEXT_FORMS)
def test_content_keys_are_text_nodes(criteria: bytes, node: Text) -> None:
    assert program(criteria) == node
    assert has_text(node) and leaves(node) == []


def test_or_not_and_nesting_keep_their_shape_around_content_keys() -> None:
    body, subject = Text("BODY", None, b"x"), Text("SUBJECT", None, b"y")
    assert program(b"OR BODY x SEEN") == Or(body, Leaf(b"SEEN"))
    assert program(b"OR SEEN BODY x") == Or(Leaf(b"SEEN"), body)
    assert program(b"NOT BODY x") == Not(body)
    assert program(b"NOT NOT BODY x") == Not(Not(body))
    assert program(b"(SEEN BODY x)") == And((Leaf(b"SEEN"), body))
    assert program(b"ALL BODY x") == body
    assert program(b"SEEN BODY x UNDELETED SUBJECT y") == And(
        (Leaf(b"(SEEN UNDELETED)"), body, subject)
    )
    assert program(b"OR (FROM a BODY x) NOT (SUBJECT y UNSEEN)") == Or(
        And((Text("FROM", None, b"a"), body)), Not(And((Leaf(b"UNSEEN"), subject)))
    )
    assert program(b"1:5 OR BODY x $ UID 3") == And(
        (Leaf(b"(1:5 UID 3)"), Or(body, Leaf(b"$")))
    )
    assert program(b"((((BODY x))))") == body


def test_leaves_are_distinct_in_order_and_a_bare_all_is_not_one() -> None:
    node = program(b"OR (SEEN BODY a) (FLAGGED BODY b) OR SEEN TEXT c OR ALL SUBJECT d")
    assert leaves(node) == [Leaf(b"SEEN"), Leaf(b"FLAGGED")]
    assert leaves(program(b"SEEN")) == [Leaf(b"SEEN")]
    assert leaves(program(b"ALL")) == []
    assert has_text(node) and not has_text(program(b"OR SEEN NOT 1:3"))


@pytest.mark.parametrize(
    "criteria",
    [
        b"X-GM-RAW foo", b"FILTER myfilter", b"FUZZY BODY x", b"ANNOTATION /comment value x",
        b"NOSUCHKEY", b"BODY", b"OR SEEN", b"NOT", b"HEADER X-Foo", b'HEADER "" x',
        b"SINCE 2024-01-01", b"SINCE 1-Foo-2024", b"BEFORE 5", b"LARGER x", b"LARGER (1)",
        b"OLDER 0", b"UID x", b"UID", b"0", b"1:0", b"1::2", b"MODSEQ x",
        b'MODSEQ "/flags/x" bogus 5', b'MODSEQ "/other" all 5', b"KEYWORD (a)", b'KEYWORD "a"',
        b'EMAILID "x"', b"EMAILID a.b", b'"SEEN"', b"NIL", b"()", b"SEEN ()",
        b"CHARSET X-NO-SUCH-CHARSET BODY x", b"CHARSET UTF-8 BODY {1}\r\n\xff",
        b"BODY ~{1}\r\nx",
    ],
)
def test_what_the_proxy_does_not_judge_is_unsupported(criteria: bytes) -> None:
    parsed = command(criteria)
    with pytest.raises(SearchUnsupported):
        parse_program(parsed.criteria, parsed.charset)


def test_the_size_of_a_program_is_bounded() -> None:
    assert has_text(program(b" ".join([b"BODY x"] * MAX_TEXT_KEYS)))
    with pytest.raises(SearchUnsupported):
        program(b" ".join([b"BODY x"] * (MAX_TEXT_KEYS + 1)))
    assert has_text(program(b"NOT " * (MAX_DEPTH - 1) + b"BODY x"))
    with pytest.raises(SearchUnsupported):
        parse_program((Atom("NOT"),) * (MAX_DEPTH + 5) + (Atom("BODY"), b"x"))
    many = b" ".join(b"OR KEYWORD k%d BODY x%d" % (i, i) for i in range(MAX_TEXT_KEYS))
    assert len(leaves(program(many))) == MAX_TEXT_KEYS <= MAX_LEAVES


def test_parse_program_takes_values_built_by_hand() -> None:
    criteria: tuple[Value, ...] = (
        Atom("subject"), Literal(b"x"), (Atom("SEEN"), 3), Atom("HEADER"), b"X-A", None,
    )
    assert parse_program(criteria) == And(
        (Leaf(b"(SEEN 3)"), Text("SUBJECT", None, b"x"), Text("HEADER", b"X-A", b"NIL"))
    )
    with pytest.raises(SearchUnsupported):
        parse_program((Atom("BODY"), Binary(b"x")))
    with pytest.raises(SearchUnsupported):
        parse_program((True,))
    with pytest.raises(SearchUnsupported):
        parse_program(())


def test_a_charset_is_checked_and_the_needle_must_be_valid_in_it() -> None:
    latin = program(b"CHARSET ISO-8859-1 BODY {4}\r\ncaf\xe9")
    assert latin == Text("BODY", None, b"caf\xe9")
    assert program(b"CHARSET US-ASCII BODY x") == Text("BODY", None, b"x")
    for charset in ("punycode", "idna", "rot13", "base64", "x-unknown", "../../etc"):
        with pytest.raises(SearchUnsupported):
            parse_program((Atom("BODY"), b"x"), charset)


# --- content keys on messages --------------------------------------------------------------

ALTERNATIVE = (
    b"From: =?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <juergen@example.de>\r\n"
    b'To: "Smith, Bob" <bob@example.org>, carol@example.org\r\n'
    b"Cc: team: dave@example.org, erin@example.org;\r\n"
    b"Subject: =?iso-8859-1?q?R=E9union?= du\r\n"
    b"  =?utf-8?b?bHVuZGkg4oCUIG9yZHJl?= du jour\r\n"
    b"X-Empty:\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="outer"\r\n'
    b"\r\n"
    b"preamble: needle-in-preamble\r\n"
    b"--outer\r\n"
    b'Content-Type: multipart/alternative; boundary="inner"\r\n'
    b"\r\n"
    b"--inner\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    + base64.encodebytes("Grüße aus Köln, wir sehen uns im Café.\r\n".encode()).replace(
        b"\n", b"\r\n"
    )
    + b"--inner\r\n"
    b"Content-Type: text/html; charset=iso-8859-1\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"<p>Na=EFve fa=E7ade, soft=\r\n"
    b"break</p>\r\n"
    b"--inner--\r\n"
    b"--outer\r\n"
    b"Content-Type: application/octet-stream; name=secret.bin\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    + base64.encodebytes(b"needle-in-attachment").replace(b"\n", b"\r\n")
    + b"--outer\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"Subject: forwarded-subject\r\n"
    b"From: frank@example.net\r\n"
    b"\r\n"
    b"forwarded body text\r\n"
    b"--outer--\r\n"
    b"epilogue: needle-in-epilogue\r\n"
)


def matches(key: str, needle: str | bytes, message: bytes, field: bytes | None = None,
            charset: str | None = None) -> bool:
    raw = needle.encode() if isinstance(needle, str) else needle
    return evaluate(Text(key, field, raw), MessageView(message), {}, charset)


@pytest.mark.parametrize(
    ("needle", "found"),
    [
        ("grüße aus köln", True),  # base64, utf-8
        ("GRÜSSE AUS", True),  # case folding: ß is ss
        ("IM CAFÉ", True),
        ("im cafe", False),  # accents count
        ("naïve façade", True),  # quoted-printable, iso-8859-1
        ("softbreak", True),  # a soft line break joins the lines
        ("forwarded body", True),  # the text part of an attached message
        ("needle-in-attachment", False),  # an application/* part is not text
        ("needle-in-preamble", False),
        ("needle-in-epilogue", False),
        ("forwarded-subject", False),  # headers are not BODY
        ("Content-Type", False),
        ("Köln, wir sehen uns im Café.\r\n<p>", False),  # never across two parts
    ],
)
def test_body_searches_decoded_text_parts(needle: str, found: bool) -> None:
    assert matches("BODY", needle, ALTERNATIVE) is found


@pytest.mark.parametrize(
    ("needle", "found"),
    [
        ("grüße", True),
        ("subject: réunion du  lundi — ordre du jour", True),  # a decoded top-level field
        ("forwarded-subject", True),  # the header of an attached message
        ("frank@example.net", True),
        ("name=secret.bin", True),  # MIME headers count too
        ("needle-in-attachment", False),
        ("needle-in-preamble", False),
    ],
)
def test_text_searches_every_header_block_and_the_body(needle: str, found: bool) -> None:
    assert matches("TEXT", needle, ALTERNATIVE) is found


@pytest.mark.parametrize(
    ("key", "needle", "found"),
    [
        ("SUBJECT", "Réunion du lundi — ordre du jour", True),  # encoded words, folded
        ("SUBJECT", "RÉUNION DU LUNDI", True),
        ("SUBJECT", "reunion", False),
        ("SUBJECT", "re\u0301union", True),  # canonically equivalent forms match
        ("SUBJECT", "du  lundi", False),  # runs of whitespace are one space
        ("SUBJECT", "forwarded-subject", False),  # only the message's own header
        ("SUBJECT", "=?iso-8859-1?q?", False),
        ("SUBJECT", "", True),
        ("FROM", "jürgen müller <juergen@example.de>", True),  # Dovecot's normalised form
        ("FROM", "juergen@example", True),
        ("FROM", "frank", False),
        ("TO", "Smith, Bob <bob@example.org>, carol@example.org", True),
        ("TO", "carol", True),
        ("CC", "team: dave@example.org, erin@example.org;", True),
        ("BCC", "", False),  # no such field
        ("BCC", "anyone", False),
    ],
)
def test_header_keys_search_the_decoded_top_level_fields(key: str, needle: str,
                                                         found: bool) -> None:
    assert matches(key, needle, ALTERNATIVE) is found


def test_header_with_an_empty_string_asks_whether_the_field_exists() -> None:
    assert matches("HEADER", "", ALTERNATIVE, b"x-empty")
    assert matches("HEADER", "", ALTERNATIVE, b"MIME-Version")
    assert not matches("HEADER", "", ALTERNATIVE, b"X-Missing")
    assert not matches("HEADER", "", ALTERNATIVE, b"Content-Transfer-Encoding")  # a part's
    assert matches("HEADER", "multipart/MIXED", ALTERNATIVE, b"content-type")
    assert matches("HEADER", "réunion du  lundi", ALTERNATIVE, b"Subject")  # unfolded as is
    assert not matches("HEADER", "réunion du lundi", ALTERNATIVE, b"Subject")
    # HEADER To is the value as written, not the normalised address list
    assert matches("HEADER", '"smith, bob"', ALTERNATIVE, b"To")


def test_an_empty_body_or_text_needle_matches_every_message() -> None:
    assert matches("BODY", "", b"")
    assert matches("TEXT", "", b"Content-Type: image/png\r\n\r\nxx")


def test_a_folded_header_is_unfolded() -> None:
    message = b"Subject: a long\r\n\tsubject line\r\nX-List: one,\r\n two\r\n\r\nbody\r\n"
    assert matches("SUBJECT", "a long subject line", message)
    assert matches("HEADER", "one, two", message, b"X-List")
    assert not matches("HEADER", "one,two", message, b"X-List")


@pytest.mark.parametrize(
    ("header", "body", "needle"),
    [
        # 8-bit text without charset, not UTF-8: read as ISO-8859-1
        (b"", b"caf\xe9 cr\xe8me", "café crème"),
        (b"Content-Type: text/plain; charset=us-ascii\r\n", b"caf\xe9", "café"),
        (b"Content-Type: text/plain; charset=utf-8\r\n", b"caf\xe9", "café"),
        (b"Content-Type: text/plain; charset=x-unknown\r\n", "Grüße".encode(), "grüße"),
        (b"Content-Type: text/plain; charset=punycode\r\n", "Grüße".encode(), "grüße"),
        (b"Content-Type: text/plain; charset=windows-1252\r\n", b"\x93quoted\x94", "“quoted”"),
        (b"Content-Type: text/plain; charset=koi8-r\r\n", "привет".encode("koi8-r"), "ПРИВЕТ"),
        (b"Content-Type: text/plain; charset*=utf-8''iso-8859-1\r\n", b"na\xefve", "naïve"),
        (b"Content-Type: text/plain; charset=utf-16\r\n", "hello".encode("utf-16"), "hello"),
        (b"Content-Type: text/enriched\r\n", b"<bold>rich</bold>", "rich"),
        (b"Content-Type: message/delivery-status\r\n", b"Action: failed", "failed"),
        # a broken transfer encoding: its valid bits still count
        (b"Content-Transfer-Encoding: base64\r\n", b"aGVsbG8gd29y!!bGQ", "hello world"),
        (b"Content-Transfer-Encoding: base64\r\n", b"aGVsbG8=", "hello"),
        (b"Content-Transfer-Encoding: quoted-printable\r\n", b"a=ZZb=3Dc", "a=zzb=c"),
        (b"Content-Transfer-Encoding: x-uuencode\r\n", b"raw text", "raw text"),
        (b"Content-Transfer-Encoding: 8bit\r\n", "ﬁle".encode(), "FILE"),  # NFKC: ﬁ is fi
        (b"Content-Type: text/plain; charset=utf-8\r\n", "cafe\u0301".encode(), "café"),
        (b"Content-Type: text/plain; charset=utf-8\r\n", "Straße".encode(), "STRASSE"),
    ],
)
def test_body_charsets_and_transfer_encodings(header: bytes, body: bytes, needle: str) -> None:
    message = b"Subject: s\r\nMIME-Version: 1.0\r\n" + header + b"\r\n" + body + b"\r\n"
    assert matches("BODY", needle, message)
    assert not matches("BODY", needle + "-not-there", message)


@pytest.mark.parametrize(
    ("subject", "needle"),
    [
        (b"=?UTF-8?B?w6l0w6k=?=", "été"),
        (b"=?utf-8?q?caf=C3?= =?utf-8?q?=A9?=", "café"),  # a character split across words
        (b"=?iso-8859-1?q?a?=   =?iso-8859-1?q?b?=", "ab"),  # whitespace between words goes
        (b"=?iso-8859-1?q?a?= x =?iso-8859-1?q?b?=", "a x b"),
        (b"=?utf-8*en?q?hello_world?=", "hello world"),  # RFC 2231 language
        (b"=?x-unknown?q?plain?=", "plain"),
        (b"=?utf-8?q?unterminated", "=?utf-8?q?unterminated"),
        (b"caf\xc3\xa9 raw utf-8", "café raw"),
        (b"caf\xe9 raw latin-1", "café raw"),
    ],
)
def test_encoded_words_are_decoded(subject: bytes, needle: str) -> None:
    assert matches("SUBJECT", needle, b"Subject: " + subject + b"\r\n\r\nbody\r\n")


def test_the_search_charset_decodes_the_needle() -> None:
    message = "Subject: x\r\n\r\ncafé\r\n".encode()
    assert matches("BODY", b"caf\xe9", message, charset="iso-8859-1")
    assert matches("BODY", b"caf\xc3\xa9", message)
    assert matches("BODY", b"caf\xc3\xa9", message, charset="UTF-8")


def test_a_shared_vector_with_every_transfer_encoding() -> None:
    message = (VECTORS / "msg_10.txt").read_bytes()
    assert matches("BODY", "¡this is a quoted printable encoded message!", message)
    assert matches("BODY", "This is a Base64 encoded message.", message)
    assert matches("BODY", "has no content-transfer-encoding", message)
    assert not matches("BODY", "BOUNDARY", message)
    assert matches("TEXT", "boundary", message)
    assert matches("TO", "Dingus Lovers <cravindogs@cravindogs.com>", message)
    assert matches("SUBJECT", "lyrics", message)


def test_work_per_message_is_bounded() -> None:
    head = b"Subject: s\r\n\r\n"
    near = head + b"a" * (MAX_TEXT_BYTES - 100) + b" needle\r\n"
    far = head + b"a" * MAX_TEXT_BYTES + b" needle\r\n"
    assert matches("BODY", "needle", near)
    assert not matches("BODY", "needle", far)
    encoded = base64.encodebytes(b"a" * MAX_TEXT_BYTES + b" needle").replace(b"\n", b"\r\n")
    cte = b"Subject: s\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    assert not matches("BODY", "needle", cte + encoded)
    late_field = b"X-Pad: " + b"p" * MAX_HEADER_BYTES + b"\r\nX-Late: found\r\n\r\n"
    assert not matches("HEADER", "", late_field, b"X-Late")
    assert matches("HEADER", "", b"X-Pad: p\r\nX-Late: found\r\n\r\n", b"X-Late")


def test_a_hostile_run_of_combining_marks_is_searched_in_linear_time() -> None:
    marks = ("a" + "\u0301\u0316" * 200_000 + " needle").encode()
    message = b"Subject: s\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + marks
    assert matches("BODY", "needle", message)


# --- leaves, and several messages ----------------------------------------------------------


def test_leaves_take_the_upstreams_results() -> None:
    view = MessageView(b"Subject: hello\r\n\r\nbody\r\n")
    node = program(b"OR (SEEN SUBJECT hello) (FLAGGED BODY nothing)")
    seen, flagged = Leaf(b"SEEN"), Leaf(b"FLAGGED")
    assert leaves(node) == [seen, flagged]
    assert evaluate(node, view, {seen: True, flagged: True})
    assert not evaluate(node, view, {seen: False, flagged: True})
    assert evaluate(program(b"NOT SUBJECT bye"), view, {})
    assert evaluate(program(b"OR ALL BODY nothing"), view, {})
    assert not evaluate(program(b"NOT (ALL SUBJECT hello)"), view, {})
    with pytest.raises(KeyError):
        evaluate(program(b"SEEN SUBJECT hello"), view, {})


def test_a_leaf_is_not_needed_when_the_content_key_decides() -> None:
    view = MessageView(b"Subject: hello\r\n\r\nbody\r\n")
    leaf = Leaf(b"SEEN")
    # content keys come after the leaves, but an OR that a leaf decides stops there
    assert evaluate(Or(Text("SUBJECT", None, b"hello"), leaf), view, {leaf: True})
    assert not evaluate(And((Text("SUBJECT", None, b"nope"), leaf)), view, {leaf: True})


def test_matching_gives_the_uids_whose_messages_match() -> None:
    views = {
        10: MessageView(b"Subject: invoice 1\r\n\r\nplease pay\r\n"),
        11: MessageView(b"Subject: invoice 2\r\n\r\nalready paid\r\n"),
        12: MessageView(b"Subject: lunch\r\n\r\npay later\r\n"),
    }
    node = program(b"UNDELETED OR SUBJECT invoice BODY pay")
    undeleted = Leaf(b"UNDELETED")
    assert matching(node, views, {undeleted: {10, 11, 12}}) == {10, 11, 12}
    assert matching(node, views, {undeleted: {11, 12, 99}}) == {11, 12}
    assert matching(program(b"BODY PA NOT SUBJECT lunch"), views, {}) == {10, 11}
    assert matching(program(b"BODY nowhere"), views, {}) == set()
    assert matching(node, {}, {undeleted: set()}) == set()


# --- fuzzing -------------------------------------------------------------------------------

_ARGUMENT_KEYS: dict[str, st.SearchStrategy[Value]] = {
    "BEFORE": st.just(Atom("1-Feb-1994")),
    "SINCE": st.just(b"30-Dec-2020"),
    "SENTON": st.just(Atom("9-jan-2001")),
    "SAVEDSINCE": st.just(Atom("1-Feb-1994")),
    "LARGER": st.integers(0, 2**40),
    "SMALLER": st.integers(0, 2**32 - 1),
    "OLDER": st.integers(1, 10**6),
    "YOUNGER": st.integers(1, 10**6),
    "KEYWORD": st.sampled_from([Atom("$Forwarded"), Atom("Junk"), Atom("\\Seen")]),
    "UNKEYWORD": st.sampled_from([Atom("$label1"), Atom("x")]),
    "UID": st.sampled_from([Atom("1:*"), Atom("$"), 7, Atom("2,4:5")]),
    "EMAILID": st.sampled_from([Atom("M1234"), Atom("abc_-9")]),
    "THREADID": st.just(Atom("T1")),
}
_NEEDLES = st.one_of(
    st.sampled_from([b"", b"a", b"caf\xc3\xa9", b"Subject", b"=?", b"--b", b"\xc3\x9f"]),
    st.text(max_size=6).map(lambda text: text.encode("utf-8", "surrogatepass")),
)


def _plain_key() -> st.SearchStrategy[tuple[Value, ...]]:
    no_arg = st.sampled_from(NO_ARGUMENT_KEYS).map(lambda key: (Atom(key),))
    with_arg = st.sampled_from(sorted(_ARGUMENT_KEYS)).flatmap(
        lambda key: _ARGUMENT_KEYS[key].map(lambda arg: (Atom(key), arg))
    )
    sequence = st.sampled_from([1, 5, Atom("1:5"), Atom("*"), Atom("$"), Atom("3,1:2")])
    modseq = st.sampled_from([
        (Atom("MODSEQ"), 5), (Atom("MODSEQ"), b"/flags/\\Seen", Atom("all"), 0),
    ])
    return st.one_of(no_arg, with_arg, sequence.map(lambda item: (item,)), modseq)


def _text_key() -> st.SearchStrategy[tuple[Value, ...]]:
    simple = st.tuples(
        st.sampled_from(["BODY", "TEXT", "SUBJECT", "FROM", "TO", "CC", "BCC"]).map(Atom),
        _NEEDLES.filter(_valid_utf8),
    )
    header = st.tuples(
        st.just(Atom("HEADER")), st.sampled_from([b"Subject", b"X-A", b"content-type"]),
        _NEEDLES.filter(_valid_utf8),
    )
    return st.one_of(simple, header)


def _valid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _extend(keys: st.SearchStrategy[tuple[Value, ...]]) -> st.SearchStrategy[tuple[Value, ...]]:
    return st.one_of(
        keys.map(lambda key: (Atom("NOT"), *key)),
        st.tuples(keys, keys).map(lambda pair: (Atom("OR"), *pair[0], *pair[1])),
        st.lists(keys, min_size=1, max_size=3).map(
            lambda items: (tuple(value for key in items for value in key),)
        ),
    )


SEARCH_KEYS = st.recursive(st.one_of(_plain_key(), _text_key()), _extend, max_leaves=8)
CRITERIA = st.lists(SEARCH_KEYS, min_size=1, max_size=4).map(
    lambda keys: tuple(value for key in keys for value in key)
)

_FRAGMENTS = [
    b"Subject: ", b"From: ", b"To: a@b, ", b"Content-Type: ", b"multipart/mixed; boundary=b",
    b"text/plain; charset=", b"utf-8", b"iso-8859-1", b"utf-16", b"x-bad", b"punycode",
    b"message/rfc822", b"Content-Transfer-Encoding: ", b"base64", b"quoted-printable",
    b"=?utf-8?q?", b"=?iso-8859-1?b?", b"?=", b"=C3=A9", b"=", b"--b", b"--b--", b"\r\n",
    b"\n", b" ", b"\t", b":", b"\x00", b"\xff", b"\xcc\x81", b"caf\xc3\xa9", b"a",
    b"MIME-Version: 1.0", b"(", b'"', b"<", b">", b"@", b";", b",", b"group:", b"X-A: ",
]
MESSAGES = st.one_of(
    st.binary(max_size=600),
    st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.binary(max_size=6)), max_size=80).map(
        b"".join
    ),
)


def _any_value(depth: int = 2) -> st.SearchStrategy[Value]:
    scalar: st.SearchStrategy[Value] = st.one_of(
        st.none(), st.booleans(), st.integers(-2, 2**64),
        st.sampled_from(["OR", "NOT", "HEADER", "BODY", "UID", "MODSEQ", "SINCE", "SEEN", "$",
                         "1:*", "ALL", "KEYWORD", "x", "é"]).map(Atom),
        st.binary(max_size=8),
        st.binary(max_size=4).map(Literal),
        st.binary(max_size=4).map(Binary),
    )
    if depth == 0:
        return scalar
    return st.one_of(scalar, st.lists(_any_value(depth - 1), max_size=4).map(tuple))


@given(CRITERIA, MESSAGES, st.data())
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_programs_from_the_grammar_on_hostile_messages(
    criteria: tuple[Value, ...], message: bytes, data: st.DataObject
) -> None:
    node = parse_program(criteria)
    for leaf in leaves(node):
        assert program(leaf.text) == leaf  # every leaf is a search key the upstream reads
    results = {leaf: data.draw(st.booleans()) for leaf in leaves(node)}
    view = MessageView(message)
    answer = evaluate(node, view, results)
    assert isinstance(answer, bool)
    assert matching(node, {1: view}, {leaf: {1} if hit else set()
                                       for leaf, hit in results.items()}) == ({1} if answer
                                                                              else set())


@given(st.lists(_any_value(), min_size=1, max_size=6).map(tuple), st.none() | st.text(max_size=8))
@settings(max_examples=400, deadline=None)
def test_fuzz_parse_program_accepts_or_refuses_any_values(
    criteria: tuple[Value, ...], charset: str | None
) -> None:
    try:
        node = parse_program(criteria, charset)
    except SearchUnsupported:
        return
    assert isinstance(node, (Leaf, Text, And, Or, Not))


@given(MESSAGES, st.sampled_from(["BODY", "TEXT", "SUBJECT", "FROM", "TO", "HEADER"]), _NEEDLES,
       st.none() | st.sampled_from(["utf-8", "iso-8859-1", "koi8-r", "x-bad", "punycode"]))
@settings(max_examples=400, deadline=None)
def test_fuzz_content_keys_never_raise(
    message: bytes, key: str, needle: bytes, charset: str | None
) -> None:
    field = b"X-A" if key == "HEADER" else None
    assert isinstance(evaluate(Text(key, field, needle), MessageView(message), {}, charset), bool)
