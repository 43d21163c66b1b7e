"""The native MIME tree and Content-Type parser (native/src) against their Python twins
(`mime.tree`, `mime.rfc822`), which are the reference: the same tree, field for field, for
every vector message, for MIME-shaped token soups, mutations of the vectors and any bytes;
the same Content-Type reading for any value.

The native module must be built (scripts/test.sh builds it; scripts/build-native.sh); with
`SMIME_PROXY_NATIVE=0` the package runs without it and these tests are skipped.
`MIME_FUZZ_EXAMPLES=20000` for a deep run (default 600).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smime_proxy.mime import entity, tree
from smime_proxy.mime.rfc822 import parse_content_type
from support.damage import NATIVE_FUZZ, mutated_message, require_native

require_native()
from smime_proxy import _native as core  # noqa: E402 - only once it is known to be built

TESTS = Path(__file__).resolve().parents[2]
VECTORS = sorted([*(TESTS / "vectors").rglob("*.eml"), *(TESTS / "vectors").rglob("*.txt")])
SAMPLES = [p.read_bytes() for p in VECTORS if p.stat().st_size < 200_000]

TOKENS = [
    b"\r\n", b"\n", b"\r", b" ", b"\t", b":", b";", b"=", b'"', b"\\", b"(", b")", b"--", b"--b",
    b"--b--", b"--bb", b"--bb--", b"Content-Type: ", b"content-type:",
    b"multipart/mixed; boundary=b",
    b'multipart/alternative; boundary="bb"', b"multipart/digest; boundary=bb",
    b"multipart/signed; boundary=b; protocol=x", b"message/rfc822", b"text/plain", b"text",
    b"MIME-Version: 1.0", b"Content-Transfer-Encoding: base64", b"From: a@b", b"Subject: x",
    b"\xff", b"\0", b"x*0*=a", b"x*1=b%", b"x*=c", b"; name*0=a", b"; name*2*=c", b" (c) ",
    b"=?utf-8?b?SGk=?=", b"Content-Disposition: attachment",
]
_soup = st.lists(st.sampled_from(TOKENS), max_size=80).map(b"".join)


def _own(part: tree.Part) -> tuple[object, ...]:
    return (part.start, part.body_start, part.end, part.headers, part.is_mime,
            part.is_multipart, part.is_digest, part.is_message_rfc822, part.is_text,
            part.boundary, part.header_complete, part.depth, part.overflow, part.ct)


def _record(part: tree.Part, index: dict[int, int]) -> tuple[object, ...]:
    parent = part.parent
    return (*_own(part), None if parent is None else index[id(parent)],
            [index[id(child)] for child in part.children])


def _flat(root: tree.Part) -> list[tuple[object, ...]]:
    parts = list(root.walk())
    index = {id(part): i for i, part in enumerate(parts)}
    return [_record(part, index) for part in parts]


def _same_tree(data: bytes) -> None:
    native_root = tree.parse(data)
    python_root = tree.parse_python(data)
    assert native_root.data is data
    assert _flat(native_root) == _flat(python_root)
    for native_part, python_part in zip(native_root.walk(), python_root.walk(), strict=True):
        for native_header, python_header in zip(native_part.headers, python_part.headers,
                                                strict=True):
            # the value the native parser kept for a Content-Type is the one Python reads
            if native_header.cached is not None:
                assert native_header.cached == python_header.value(data)
    # the top alone (tree.parse_top) is the root and its children's spans of the whole tree
    top, children = tree.parse_top(data)
    assert _own(top) == _own(python_root) and top.parent is None
    assert top.content_type() == python_root.content_type()
    assert children == [(child.start, child.end) for child in python_root.children]


def test_limits_are_the_same() -> None:
    assert (core.MAX_NESTING, core.MAX_PARTS) == (tree.MAX_NESTING, tree.MAX_PARTS)


def test_the_vectors_give_the_same_trees() -> None:
    assert len(SAMPLES) > 50
    for sample in SAMPLES:
        _same_tree(sample)


@pytest.mark.parametrize("kind", [b"multipart/mixed", b"message/rfc822", b"multipart/digest"])
@pytest.mark.parametrize("depth", [1, 2, 99, 100, 101, 150])
def test_deep_nesting_gives_the_same_tree(kind: bytes, depth: int) -> None:
    if kind == b"message/rfc822":
        data = b"Content-Type: message/rfc822\r\n\r\n" * depth + b"Subject: end\r\n\r\nx\r\n"
    else:
        head = b"".join(b"Content-Type: %s; boundary=b%d\r\n\r\n--b%d\r\n" % (kind, i, i)
                        for i in range(depth))
        tail = b"".join(b"\r\n--b%d--\r\n" % i for i in reversed(range(depth)))
        data = head + b"Content-Type: text/plain\r\n\r\nx" + tail
    _same_tree(data)


def test_the_part_cap_gives_the_same_tree() -> None:
    parts = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\n%d\r\n" % i for i in range(10050))
    _same_tree(b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + parts + b"--b--\r\n")


@NATIVE_FUZZ
@given(st.one_of(_soup, mutated_message(SAMPLES, TOKENS), st.binary(max_size=400)))
def test_any_bytes_give_the_same_tree(data: bytes) -> None:
    _same_tree(data)


_CT_TOKENS = [b" ", b"\t", b"\r\n ", b"\n\t", b"(", b")", b"\\", b'"', b";", b"=", b"/", b"*",
              b"text", b"plain", b"multipart", b"charset", b"utf-8", b"boundary", b"name*0*",
              b"name*1", b"name*", b"name*00", b"name*4294967297", b"%", b"''", b"==?", b"\xe9",
              b"\0", b"\r", b"a.b", b"x"]


_KEYS = [b"name", b"NAME", b"name*", b"name*0", b"name*0*", b"name*1", b"name*1*", b"name*2",
         b"name*00", b"name*x", b"name**", b"name*4294967296", b"title*", b"title*0", b"c"]
_VALUES = [b"a", b"%41", b"utf-8''%41", b'"q uoted"', b'"a\\"b"', b"=?x?=", b"", b"b%"]
_params = st.lists(st.tuples(st.sampled_from([b";", b"; ", b" ;\r\n "]), st.sampled_from(_KEYS),
                             st.sampled_from([b"=", b" = "]), st.sampled_from(_VALUES)),
                   max_size=6).map(lambda ps: b"".join(b"".join(p) for p in ps))


@pytest.mark.parametrize("value", [
    b"text/plain; name*0*=utf-8''a%20b; name*1=c%d",  # a plain piece after an extended one
    b"text/plain; name*1=b; name*0=a",  # out of order
    b"text/plain; name*0=a; name*2=c",  # a gap: kept under the raw names
    b"text/plain; name*2=a; title*=b",  # the index carried over to `title*`
    b"text/plain; name*4294967297=a; name*0=b",  # 32-bit index
    b"text/plain; Name*0=a; name*1=b",  # grouped ignoring case, sorted by bytes
])
def test_rfc2231_merges_are_the_same(value: bytes) -> None:
    assert core.parse_content_type(value) == parse_content_type(value)


@NATIVE_FUZZ
@given(st.one_of(st.lists(st.sampled_from(_CT_TOKENS), max_size=40).map(b"".join),
                 st.tuples(st.sampled_from([b"text/plain", b" multipart/mixed", b"a/b (c)"]),
                           _params).map(b"".join),
                 st.binary(max_size=80)))
def test_any_content_type_is_read_the_same(value: bytes) -> None:
    assert core.parse_content_type(value) == parse_content_type(value)


_FIELD_TOKENS = [b"\r\n", b"\n", b"\r", b" ", b"\t", b":", b"From", b"subject", b"X-A",
                 b"\xe9", b"\x0b", b"\x0c", b"value", b"\r\n ", b"\n\t", b"\r\n\r\n", b""]


def _header_of(data: bytes) -> bytes:
    """What `parse_entity` hands the field splitter: the header block, no empty line."""
    return data[: entity.parse_entity(data).header_end] if data else data


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: str(len(m)))
def test_the_vectors_give_the_same_header_fields(message: bytes) -> None:
    header = _header_of(message)
    assert core.header_fields(header, entity.HeaderField) == tuple(entity._fields(header))


@NATIVE_FUZZ
@given(st.one_of(st.lists(st.sampled_from(_FIELD_TOKENS), max_size=60).map(b"".join),
                 mutated_message(SAMPLES, _FIELD_TOKENS), st.binary(max_size=300)))
def test_any_header_gives_the_same_fields(data: bytes) -> None:
    """Any bytes as a header block (line ends, folds, names with white space, bytes outside
    ASCII, no colon): the fields `mime.entity._fields` makes, as the same named tuples."""
    fields = core.header_fields(data, entity.HeaderField)
    assert fields == tuple(entity._fields(data))
    assert all(type(field) is entity.HeaderField for field in fields)


_LINE_END_TOKENS = [b"\r\n", b"\n", b"\r", b"\r\r\n", b"\n\r", b"x", b"", b"\0"]


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: str(len(m)))
def test_the_vectors_have_the_same_bare_lf(message: bytes) -> None:
    for data in (message, message.replace(b"\r\n", b"\n"), message.replace(b"\n", b"\r\n")):
        assert core.has_bare_lf(data) is entity._has_bare_lf(data)


@NATIVE_FUZZ
@given(st.one_of(st.lists(st.sampled_from(_LINE_END_TOKENS), max_size=60).map(b"".join),
                 mutated_message(SAMPLES, _LINE_END_TOKENS), st.binary(max_size=300)))
def test_any_bytes_have_the_same_bare_lf(data: bytes) -> None:
    """A bare LF anywhere (first byte, after a lone CR, after CR CR, at the end): the
    native one-pass scan answers as the two counts do."""
    assert core.has_bare_lf(data) is entity._has_bare_lf(data)
    assert entity.canonical_crlf(data).count(b"\n") == entity.canonical_crlf(data).count(b"\r\n")
