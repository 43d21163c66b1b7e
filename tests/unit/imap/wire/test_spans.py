"""`imap.wire.spans`: the byte offsets of FETCH response items, checked against the parser on
generated responses (every value form, literals nested in lists) and on Dovecot's forms."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_imap_parsing import response_items, values  # type: ignore[import-not-found]

from smime_proxy.imap.wire import FetchResponse, ParseError, parse_response
from smime_proxy.imap.wire import spans as spans_module
from smime_proxy.imap.wire.spans import (
    fetch_spans,
    item_value,
    last_literal,
    metadata_items,
    uid_date_head,
    uid_literal_head,
    uid_size_head,
    uid_value,
    without_items,
)
from smime_proxy.imap.wire.values import render

responses = st.builds(
    lambda number, items: FetchResponse(number, tuple(items)),
    st.integers(1, 2**32 - 1),
    st.lists(st.tuples(response_items(), values), min_size=1, max_size=6,
             unique_by=lambda pair: pair[0].render()),
)


@given(responses, st.data())
@settings(max_examples=400)
def test_spans_cut_exactly_the_items_the_parser_reads(response: FetchResponse,
                                                      data: st.DataObject) -> None:
    raw = response.render()
    spans = fetch_spans(raw)
    assert spans.complete and spans.number == response.number
    assert [s.name for s in spans.items] == [i.render().upper() for i, _ in response.items]
    dropped = data.draw(st.sets(st.sampled_from([s.name for s in spans.items])))
    cut = without_items(raw, spans, frozenset(dropped))
    # scanning only as far as the last dropped item cuts the same
    assert without_items(raw, fetch_spans(raw, frozenset(dropped)), frozenset(dropped)) == cut
    kept = tuple((i, v) for i, v in response.items if i.render().upper() not in dropped)
    if not kept:
        assert cut == raw  # a response keeps at least one item
    else:
        assert parse_response(cut) == FetchResponse(response.number, kept)


def test_dovecot_forms_and_string_values() -> None:
    raw = (b'* 4 FETCH (UID 9 FLAGS (\\Seen) BODY[HEADER.FIELDS (CONTENT-TYPE X-SMIME-STATUS)]'
           b' {4}\r\nab\r\n BODY[]<0> "q\\"x" ENVELOPE (NIL "s" ((NIL NIL {1}\r\n) "b"))) '
           b'RFC822.SIZE 12 X NIL)\r\n')
    spans = fetch_spans(raw)
    names = [s.name for s in spans.items]
    assert names == [b"UID", b"FLAGS", b"BODY[HEADER.FIELDS (CONTENT-TYPE X-SMIME-STATUS)]",
                     b"BODY[]<0>", b"ENVELOPE", b"RFC822.SIZE", b"X"]
    assert item_value(raw, spans.items[2]) == b"ab\r\n"
    assert item_value(raw, spans.items[3]) == b'q"x'
    assert item_value(raw, spans.items[6]) is None
    with pytest.raises(ParseError):
        item_value(raw, spans.items[1])


def test_a_streamed_head_keeps_its_open_literal() -> None:
    head = b"* 2 FETCH (UID 5 BODY[HEADER.FIELDS (CONTENT-TYPE)] {2}\r\n\r\n BODY[] {900}\r\n"
    spans = fetch_spans(head)
    assert not spans.complete and spans.items[-1].name == b"BODY[]"
    assert without_items(head, spans, frozenset({b"UID", b"BODY[]",
                                                 b"BODY[HEADER.FIELDS (CONTENT-TYPE)]"})) == (
        b"* 2 FETCH (BODY[] {900}\r\n")


@pytest.mark.parametrize("raw", [b"* 1 EXISTS\r\n", b"* 1 FETCH (UID)\r\n",
                                 b"* 1 FETCH (UID 1 FLAGS (x)\r\n", b"* 1 FETCH (UID 1\r\n)\r\n",
                                 b"* 1 FETCH ( 1)\r\n", b"* 1 FETCH (BODY[ 1)\r\n"])
def test_what_is_not_a_fetch_response_is_refused(raw: bytes) -> None:
    with pytest.raises(ParseError):
        spans = fetch_spans(raw)
        assert spans.complete  # an incomplete result is not a refusal: fail


def test_adjacent_lists_of_dovecot_parse() -> None:
    """Dovecot writes the addresses of an ENVELOPE and the parts of a multipart BODYSTRUCTURE
    with no SP between them; found by bench/imap.py on the sort pass of S/MIME messages."""
    raw = (b'* 1 FETCH (ENVELOPE (NIL "s" (("R" NIL "r" "x.org")(NIL NIL "o" "x.org")) NIL NIL '
           b'NIL NIL NIL NIL NIL) BODYSTRUCTURE (("text" "plain" NIL NIL NIL "7bit" 1 1)'
           b'("application" "pkcs7-signature" NIL NIL NIL "base64" 4) "signed"))\r\n')
    response = parse_response(raw)
    assert isinstance(response, FetchResponse)
    envelope = response.items[0][1]
    assert isinstance(envelope, tuple) and len(envelope[2]) == 2
    assert fetch_spans(raw).complete


_flag = st.sampled_from([b"\\Seen", b"\\Answered", b"\\Deleted", b"$Work", b"NonJunk", b"\\*"])
_metadata_tail = st.lists(st.one_of(
    st.lists(_flag, max_size=4).map(lambda flags: b"FLAGS (" + b" ".join(flags) + b")"),
    st.integers(1, 2**63).map(lambda modseq: b"MODSEQ (%d)" % modseq),
    st.sampled_from([b"X-GUID abc", b"RFC822.SIZE 12", b'X-MAILBOX "a b"', b"FLAGS x"]),
), max_size=3)


@given(st.integers(1, 2**32 - 1), st.integers(1, 2**32 - 1), _metadata_tail)
@settings(max_examples=400)
def test_metadata_items_reads_what_fetch_spans_reads_or_nothing(
        number: int, uid: int, tail: list[bytes]) -> None:
    """The one-expression reading of a planned pass's answer agrees with `fetch_spans` on
    every item, or declines (None) and leaves the answer to it."""
    raw = (b'* %d FETCH (UID %d INTERNALDATE "01-Jun-2026 12:00:00 +0000"' % (number, uid)
           + b"".join(b" " + item for item in tail) + b")\r\n")
    quick = metadata_items(raw)
    if quick is None:
        assert any(not item.startswith((b"FLAGS (", b"MODSEQ (")) for item in tail)
        return
    spans = fetch_spans(raw)
    assert quick == (spans.number, uid_value(raw, spans),
                     {s.name: raw[s.start : s.end] for s in spans.items})


_list_soup = st.lists(st.sampled_from(
    [b"(", b")", b"(", b")", b'"', b"\\", b"{", b"}", b"\r", b"\n", b" ", b"a", b"NIL",
     b"{1}\r\n", b'"x y"', b'"\\""', b"~{2}\r\n"]), max_size=40).map(b"".join)


@given(st.one_of(values.map(lambda v: b"(" + render(v) + b")"),
                 _list_soup.map(lambda soup: b"(" + soup)))
@settings(max_examples=600)
def test_a_list_matched_at_once_ends_where_its_tokens_end(raw: bytes) -> None:
    """The one-expression list matcher (`_FAST_LIST`, no literal inside, bounded depth)
    ends each list exactly where the token-by-token reading (`_list_end`) ends it, and
    declines (None) what it cannot read; the reading then decides as before."""
    fast = spans_module._FAST_LIST.match(raw)
    if fast is None:
        return
    assert fast.end() == spans_module._list_end(raw, 0)


def test_lists_deeper_than_the_matcher_are_read_by_tokens() -> None:
    deep = b"(" * 40 + b'"a"' + b")" * 40
    assert spans_module._FAST_LIST.match(deep) is None
    raw = b"* 1 FETCH (BODYSTRUCTURE " + deep + b" UID 3)\r\n"
    assert uid_value(raw, fetch_spans(raw)) == 3


@given(responses, st.integers(0, 2**32 - 1), st.sampled_from(
    [b'"03-Dec-2026 22:00:00 +0000"', b'" 1-Jan-2000 00:00:00 -0130"', b'"x"', b'""']),
    st.booleans(), st.booleans(), st.booleans())
@settings(max_examples=400)
def test_the_uid_and_date_head_cuts_what_the_spans_cut(
        response: FetchResponse, uid: int, date: bytes, lower: bool, drop_uid: bool,
        drop_date: bool) -> None:
    """A response starting `UID n INTERNALDATE "..."` with more items (neither of them
    again: a server names an item once): the one expression finds what the spans find, and
    cuts the same bytes."""
    if any(i.render().upper() in (b"UID", b"INTERNALDATE") for i, _ in response.items):
        return
    body = response.render()[len(b"* %d FETCH (" % response.number):]
    head = b"UID %d INTERNALDATE %s " % (uid, date)
    raw = b"* %d FETCH (" % response.number + (head.lower() if lower else head) + body
    found = uid_date_head(raw)
    if not body[:1].isalpha():  # an item name of the generator that is not an atom
        assert found is None
        return
    assert found is not None and found.uid == uid
    spans = fetch_spans(raw)
    dropped = frozenset(name for name, drop in ((b"UID", drop_uid),
                                                (b"INTERNALDATE", drop_date)) if drop)
    assert found.without(raw, drop_uid, drop_date) == without_items(raw, spans, dropped)


def test_the_uid_and_date_head_needs_that_shape() -> None:
    assert uid_date_head(b'* 1 FETCH (UID 4 INTERNALDATE "d" FLAGS ())\r\n') == (
        1, 4, 11, 17, 17, 30, 34)
    for raw in (b'* 1 FETCH (UID 4 INTERNALDATE "d")\r\n',  # nothing after it
                b'* 1 FETCH (INTERNALDATE "d" UID 4 FLAGS ())\r\n',  # another order
                b'* 1 FETCH (UID 4 INTERNALDATE "d\\"" FLAGS ())\r\n',  # an escape
                b'* 1 FETCH (UID 4 INTERNALDATE "d" \r\n',  # no item after the space
                b'* 1 FETCH (UID 12345678901 INTERNALDATE "d" FLAGS ())\r\n'):
        assert uid_date_head(raw) is None, raw


@given(responses, st.integers(0, 2**32 - 1), st.integers(0, 2**40),
       st.sampled_from([b"", b"FLAGS () ", b"FLAGS (\\Seen $Junk) ", b"flags (a) "]),
       st.booleans(), st.booleans())
@settings(max_examples=400)
def test_the_uid_and_size_head_cuts_what_the_spans_cut(
        response: FetchResponse, uid: int, size: int, flags: bytes, lower: bool,
        more: bool) -> None:
    """A response starting `UID n`, then RFC822.SIZE (maybe after FLAGS), then maybe more
    items: the head finds the UID and the mark where the spans do, and cuts the same bytes
    for UID (the mark is the client's own: kept)."""
    if any(i.render().upper() in (b"UID", b"RFC822.SIZE", b"FLAGS")
           for i, _ in response.items):
        return
    body = response.render()[len(b"* %d FETCH (" % response.number):]
    size_item = b"RFC822.SIZE %d" % size
    head = b"UID %d " % uid + flags + (size_item.lower() if lower else size_item)
    raw = b"* %d FETCH (" % response.number + head + (b" " + body if more else b")\r\n")
    found = uid_size_head(raw)
    assert found is not None and (found.number, found.uid) == (response.number, uid)
    spans = fetch_spans(raw)
    assert spans.find(b"RFC822.SIZE") is not None
    assert found.without(raw, True, False) == without_items(raw, spans, frozenset({b"UID"}))
    assert found.without(raw, False, False) == raw


def test_the_uid_and_size_head_needs_that_shape() -> None:
    for raw in (b"* 1 FETCH (UID 4 FLAGS ())\r\n",  # no size: a flag update
                b"* 1 FETCH (UID 4 MODSEQ (5) RFC822.SIZE 60)\r\n",  # something between
                b"* 1 FETCH (RFC822.SIZE 60 UID 4)\r\n",  # another order
                b"* 1 FETCH (UID 4 RFC822.SIZE 60x)\r\n",  # not a number
                b"* 1 FETCH (UID 4 FLAGS (() RFC822.SIZE 60)\r\n"):  # not a flag list
        assert uid_size_head(raw) is None, raw


FIELDS = b"BODY[HEADER.FIELDS (CONTENT-TYPE X-SMIME-STATUS)]"


SHORT_ITEMS = [b"FLAGS () ", b"FLAGS (\\Seen $Junk) ", b"flags (a) ", b"RFC822.SIZE 15523 ",
               b"MODSEQ (12) ", b'INTERNALDATE "17-Jul-1996 02:44:25 -0700" ']


@given(responses, st.integers(0, 2**32 - 1), st.binary(max_size=80), st.booleans(),
       st.booleans(), st.booleans(), st.lists(st.sampled_from(SHORT_ITEMS), max_size=3))
@settings(max_examples=400)
def test_the_uid_and_literal_head_cuts_what_the_spans_cut(
        response: FetchResponse, uid: int, fields: bytes, lower: bool, drop_uid: bool,
        drop_fields: bool, between: list[bytes]) -> None:
    """A response starting `UID n` and an item whose value is a literal, maybe with short
    items between them (Dovecot writes FLAGS and RFC822.SIZE there), with more items
    (none again): the head finds the literal's data and cuts what the spans cut."""
    if any(i.render().upper() in (b"UID", FIELDS) for i, _ in response.items):
        return
    body = response.render()[len(b"* %d FETCH (" % response.number):]
    head = b"UID %d " % uid + b"".join(between) + (FIELDS.lower() if lower else FIELDS) + (
        b" {%d}\r\n" % len(fields)) + fields + b" "
    raw = b"* %d FETCH (" % response.number + head + body
    found = uid_literal_head(raw, FIELDS)
    if not body[:1].isalpha():
        assert found is None
        return
    assert found is not None and (found.number, found.uid) == (response.number, uid)
    spans = fetch_spans(raw)
    assert raw[found.value_start : found.rest_start - 1] == fields
    span = spans.find(FIELDS)
    assert span is not None and item_value(raw, span) == fields
    dropped = frozenset(name for name, drop in ((b"UID", drop_uid), (FIELDS, drop_fields))
                        if drop)
    assert found.without(raw, drop_uid, drop_fields) == without_items(raw, spans, dropped)


def test_the_uid_and_literal_head_needs_that_shape() -> None:
    good = b"* 2 FETCH (UID 4 " + FIELDS + b" {3}\r\nabc FLAGS ())\r\n"
    assert uid_literal_head(good, FIELDS) == (2, 4, 11, 17, 17, 72, 76)
    dovecot = (b"* 2 FETCH (UID 4 FLAGS (\\Recent) RFC822.SIZE 9 " + FIELDS
               + b" {3}\r\nabc ENVELOPE NIL)\r\n")
    found = uid_literal_head(dovecot, FIELDS)
    assert found is not None and dovecot[found.value_start : found.rest_start - 1] == b"abc"
    assert found.without(dovecot, True, True) == (
        b"* 2 FETCH (FLAGS (\\Recent) RFC822.SIZE 9 ENVELOPE NIL)\r\n")
    for raw in (b"* 2 FETCH (UID 4 " + FIELDS + b" {3}\r\nabc)\r\n",  # nothing after it
                b"* 2 FETCH (UID 4 " + FIELDS + b' "abc" FLAGS ())\r\n',  # not a literal
                b"* 2 FETCH (UID 4 " + FIELDS + b" NIL FLAGS ())\r\n",  # gone
                b"* 2 FETCH (UID 4 " + FIELDS + b" {4}\r\nabc FLAGS ())\r\n",  # too short
                b"* 2 FETCH (" + FIELDS + b" {3}\r\nabc UID 4 FLAGS ())\r\n",  # order
                b"* 2 FETCH (UID 4 BODY[] {3}\r\nabc FLAGS ())\r\n",  # another item
                b"* 2 FETCH (UID 4 ENVELOPE NIL " + FIELDS + b" {3}\r\nabc FLAGS ())\r\n",  # long
                b"* 2 FETCH (UID 4 FLAGS (a (b)) " + FIELDS + b" {3}\r\nabc FLAGS ())\r\n"):
        assert uid_literal_head(raw, FIELDS) is None, raw


@given(responses, st.binary(max_size=40), st.booleans())
@settings(max_examples=200)
def test_the_last_literal_is_the_items_value_as_the_spans_read_it(
        response: FetchResponse, data: bytes, lower: bool) -> None:
    """`BODY[] {n}` ending a response: the literal's data where `fetch_spans` finds it."""
    if any(i.render().upper() == b"BODY[]" for i, _ in response.items):
        return
    head = response.render()[: -len(b")\r\n")] + b" "
    raw = head + (b"body[]" if lower else b"BODY[]") + b" {%d}\r\n" % len(data) + data + b")\r\n"
    found = last_literal(raw, len(head), b"BODY[]")
    span = fetch_spans(raw).find(b"BODY[]")
    assert found is not None and span is not None
    assert raw[found[0] : found[1]] == item_value(raw, span) == data


def test_the_last_literal_needs_that_shape() -> None:
    start = len(b"* 2 FETCH (UID 4 ")
    assert last_literal(b"* 2 FETCH (UID 4 BODY[] {3}\r\nabc)\r\n", start, b"BODY[]") == (
        start + 12, start + 15)
    for raw in (b"* 2 FETCH (UID 4 BODY[] {3}\r\nabc FLAGS ())\r\n",  # more after it
                b"* 2 FETCH (UID 4 BODY[] {3}\r\nabc)\r\nx",  # bytes after the end
                b"* 2 FETCH (UID 4 BODY[] {4}\r\nabc)\r\n",  # too short
                b"* 2 FETCH (UID 4 BODY[] {2}\r\nabc)\r\n",  # too long
                b'* 2 FETCH (UID 4 BODY[] "abc")\r\n',  # not a literal
                b"* 2 FETCH (UID 4 BODY[] NIL)\r\n",  # gone
                b"* 2 FETCH (UID 4 BODY[]<0> {3}\r\nabc)\r\n",  # a part of it
                b"* 2 FETCH (UID 4 BODY[]{3}\r\nabc)\r\n"):
        assert last_literal(raw, start, b"BODY[]") is None, raw
