"""The byte-offset MIME tree: offsets, exact bytes, tolerance of real mail, linear time."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from smime_proxy.mime.tree import MAX_NESTING, MimeError, Part, parse, part_at

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "mime"


def _shape(part: Part) -> object:
    if part.is_multipart:
        return ["multipart", [_shape(c) for c in part.children]]
    if part.is_message_rfc822:
        return ["rfc822", [_shape(c) for c in part.children]]
    return "leaf"


SIGNED = (
    b"From: alice@example.com\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/signed; protocol="application/pkcs7-signature";\r\n'
    b' micalg=sha-256; boundary="----B"\r\n\r\n'
    b"This is an S/MIME signed message\r\n"
    b"------B\r\nContent-Type: text/plain\r\n\r\nsigned text\r\n"
    b"------B\r\nContent-Type: application/pkcs7-signature\r\n\r\nSIG\r\n"
    b"------B--\r\nepilogue\r\n"
)


def test_signed_first_part_is_the_exact_signed_entity() -> None:
    root = parse(SIGNED)
    assert root.is_multipart and root.boundary == b"----B"
    first, sig = root.children
    # RFC 1847: the signed entity is everything between the delimiter line's CRLF and the
    # CRLF that precedes the next delimiter.
    assert first.raw_bytes == b"Content-Type: text/plain\r\n\r\nsigned text"
    assert first.header_bytes == b"Content-Type: text/plain\r\n\r\n"
    assert first.body_bytes == b"signed text"
    assert SIGNED[first.start : first.end] == first.raw_bytes
    assert sig.body_bytes == b"SIG"
    assert root.body_bytes.endswith(b"------B--\r\nepilogue\r\n")
    assert root.raw_bytes == SIGNED


def test_offsets_nest_and_cover_the_message() -> None:
    for path in sorted(VECTORS.glob("*")):
        if path.suffix not in (".txt", ".eml"):
            continue
        data = path.read_bytes()
        root = parse(data)
        assert (root.start, root.end) == (0, len(data)), path.name
        for part in root.walk():
            assert part.start <= part.body_start <= part.end, path.name
            previous_end = part.body_start
            for child in part.children:
                assert previous_end <= child.start <= child.end <= part.end, path.name
                previous_end = child.end


def test_lf_only_message() -> None:
    data = b"Content-Type: multipart/mixed; boundary=l\n\n--l\n\na\n--l\nX: y\n\nb\n--l--\n"
    root = parse(data)
    assert [c.body_bytes for c in root.children] == [b"a", b"b"]
    assert root.children[1].header_bytes == b"X: y\n\n"


def test_missing_final_boundary_runs_to_eof() -> None:
    data = b"Content-Type: multipart/mixed; boundary=z\r\n\r\n--z\r\n\r\none\r\n--z\r\n\r\ntwo"
    root = parse(data)
    assert [c.body_bytes for c in root.children] == [b"one", b"two"]
    assert root.children[-1].end == len(data)


def test_boundary_prefix_match_and_longest_wins() -> None:
    data = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b trailing junk\r\n"
        b"Content-Type: multipart/mixed; boundary=bb\r\n\r\n--bb\r\n\r\ninner\r\n--bb--\r\n"
        b"--b\r\n\r\nsecond\r\n--b--\r\n"
    )
    root = parse(data)
    assert _shape(root) == ["multipart", [["multipart", ["leaf"]], "leaf"]]
    assert root.children[0].children[0].body_bytes == b"inner"
    assert root.children[1].body_bytes == b"second"


def test_boundary_ending_in_dashes() -> None:
    data = (
        b'Content-Type: multipart/digest; boundary="__--__--"\r\n\r\n--__--__--\r\n\r\n'
        b"Subject: a\r\n\r\nx\r\n--__--__----\r\n"
    )
    root = parse(data)
    assert len(root.children) == 1
    assert root.children[0].is_message_rfc822  # digest default
    assert root.children[0].children[0].header("Subject") == b"a"


def test_preamble_epilogue_and_empty_parts() -> None:
    data = (
        b"Content-Type: multipart/mixed; boundary=e\r\n\r\npre\r\n--e\r\n--e\r\n\r\n"
        b"--e--\r\npost\r\n"
    )
    root = parse(data)
    assert [(c.header_bytes, c.body_bytes) for c in root.children] == [(b"", b""), (b"", b"")]
    assert root.body_bytes.startswith(b"pre\r\n--e")


def test_header_cut_by_an_enclosing_delimiter() -> None:
    data = (
        b"Content-Type: multipart/mixed; boundary=c\r\n\r\n--c\r\nContent-Type: text/plain\r\n"
        b"--c--\r\n"
    )
    child = parse(data).children[0]
    assert child.header_bytes == b"Content-Type: text/plain"
    assert child.body_bytes == b""


def test_message_rfc822_child_and_digest_default() -> None:
    data = (
        b"Content-Type: message/rfc822\r\n\r\nFrom: x@y.example\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/alternative; boundary=i\r\n\r\n--i\r\n\r\nA\r\n--i--\r\n"
    )
    root = parse(data)
    assert root.is_message_rfc822
    inner = root.children[0]
    assert inner.start == root.body_start and inner.end == len(data)
    assert inner.header("from") == b"x@y.example"
    assert inner.is_multipart and inner.children[0].body_bytes == b"A"


def test_non_mime_part_ignores_content_type_semantics() -> None:
    root = parse(b"Subject: x\r\n\r\nbody\r\n")
    assert root.is_text and not root.is_mime
    typed = parse(b"Content-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\n\r\nA\r\n--q--\r\n")
    assert typed.is_mime and typed.is_multipart  # Content-Type alone makes a part MIME


def test_eight_bit_headers_and_odd_lines() -> None:
    data = "Subject: grüße\r\nno colon line\r\nX:\r\n\r\nbody".encode()
    root = parse(data)
    assert root.header("subject") == "grüße".encode()
    assert [h.name for h in root.headers] == [b"Subject", b"no colon line", b"X"]
    assert root.body_bytes == b"body"


def test_header_access_helpers() -> None:
    data = (
        b"Subject:   folded\r\n  continued\r\nX-A: 1\r\nx-a: 2\r\n"
        b"Content-Type: text/plain;\r\n\tcharset=\"utf-8\"; format=flowed\r\n\r\n"
    )
    root = parse(data)
    assert root.header("SUBJECT") == b"folded\n  continued"
    assert root.headers[0].unfolded(data) == b"folded  continued"
    assert root.header_values("x-a") == [b"1", b"2"]
    assert root.header("missing") is None
    assert root.content_type() == (b"text", b"plain", [(b"charset", b"utf-8"),
                                                        (b"format", b"flowed")])
    assert root.param("CHARSET") == b"utf-8"
    assert root.disposition() is None
    attached = parse(b"Content-Disposition: ATTACHMENT; filename=\"a b\"\r\n\r\n")
    assert attached.disposition() == (b"attachment", [(b"filename", b"a b")])


def test_depth_cap() -> None:
    depth = MAX_NESTING + 20
    data = b"".join(
        b"Content-Type: multipart/mixed; boundary=n%d\r\n\r\n--n%d\r\n" % (i, i)
        for i in range(depth)
    ) + b"\r\nleaf\r\n"
    root = parse(data)
    deepest = max(p.depth for p in root.walk())
    assert deepest == MAX_NESTING - 1
    assert all(not p.is_multipart or p.depth < MAX_NESTING - 1 for p in root.walk())


def test_part_numbers() -> None:
    root = parse(SIGNED)
    assert part_at(root, [1]) is root.children[0]
    assert part_at(root, [2]) is root.children[1]
    assert part_at(root, [3]) is None
    # Dovecot (imap_msgpart_find): a trailing ".1" on a non-multipart part names that part
    # itself; any other number below a non-message part names nothing
    assert part_at(root, [1, 1]) is root.children[0]
    assert part_at(root, [1, 1, 1]) is None
    assert part_at(root, [1, 2]) is None
    single = parse(b"Subject: x\r\n\r\nbody")
    assert part_at(single, [1]) is single
    assert part_at(single, [1, 1]) is None
    assert part_at(single, [0]) is None
    rfc = parse(b"Content-Type: message/rfc822\r\n\r\nSubject: in\r\n\r\nbody")
    assert part_at(rfc, [1]) is rfc
    assert part_at(rfc, [1, 1]) is rfc.children[0]


def test_rejects_non_bytes() -> None:
    with pytest.raises(MimeError):
        parse("text")  # type: ignore[arg-type]


def _cpu(func: object, data: bytes, rounds: int = 3) -> float:
    assert callable(func)
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        func(data)
        best = min(best, time.process_time() - start)
    return max(best, 1e-4)


def test_linear_time_on_large_messages() -> None:
    """20 times the input must cost about 20 times the time (a quadratic parser: ~400).
    A ratio, not an absolute time: the machine may be busy."""
    body = b"x" * 70 + b"\r\n"
    head = b"Content-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\n\r\n"
    assert parse(head + body * 40_000).children[0].body_size == len(body) * 40_000  # no close
    assert _cpu(parse, head + body * 40_000) < 100 * _cpu(parse, head + body * 2_000)
    # one non-matching "--" line every 5 bytes: every one is looked at
    top = b"Content-Type: multipart/mixed; boundary=q\r\n\r\n"
    dash = b"--x\r\n"
    assert _cpu(parse, top + dash * 100_000) < 100 * _cpu(parse, top + dash * 5_000)
    # many nested open boundaries and many parts
    nested = b"".join(
        b"Content-Type: multipart/mixed; boundary=n%d\r\n\r\n--n%d\r\n" % (i, i)
        for i in range(90)
    )
    many = top + b"".join(b"--q\r\n\r\n%d\r\n" % i for i in range(9_000))
    assert len(parse(many).children) == 9_000
    delim = b"--n5\r\n"
    assert _cpu(parse, nested + delim * 20_000) < 100 * _cpu(parse, nested + delim * 1_000)
