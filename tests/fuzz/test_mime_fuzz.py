"""Fuzzing the MIME tree and the IMAP views.

Any bytes give a tree (or our own `MimeError`), never another exception; on every tree every
view (BODYSTRUCTURE, BODY, ENVELOPE, sections of every part with partials, BINARY of every
part) either answers or raises our own error (`UnknownCte` for BINARY); rendered values are
valid wire bytes. Inputs: random bytes, random MIME-shaped token soups, and mutations of the
corpus in tests/vectors/mime. `MIME_FUZZ_EXAMPLES=20000` for a deep run (default 600).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smime_proxy.errors import SmimeProxyError
from smime_proxy.imap.views import MessageView
from smime_proxy.imap.views import ViewSection as Section
from smime_proxy.imap.wire.values import render
from smime_proxy.mime.transfer import UnknownCte
from smime_proxy.mime.tree import Part, parse
from support.damage import mutated_message

FUZZ = settings(
    max_examples=int(os.environ.get("MIME_FUZZ_EXAMPLES", "600")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "mime"
SAMPLES = [p.read_bytes() for p in sorted(VECTORS.glob("msg_*.txt"))][:20]

TOKENS = [
    b"\r\n", b"\n", b"\r", b" ", b"\t", b":", b";", b"=", b'"', b"--", b"--b", b"--b--", b"--bb",
    b"Content-Type: ", b"multipart/mixed; boundary=b", b"multipart/digest; boundary=bb",
    b"message/rfc822", b"text/plain", b"MIME-Version: 1.0", b"Content-Transfer-Encoding: ",
    b"base64", b"quoted-printable", b"=3D", b"=\r\n", b"SGk=", b"From: ", b"To: ", b"a@b",
    b"<x@y>", b"(c)", b"g: a@b;", b"Subject: ", b"\xff", b"\0", b"x*0*=a", b"Content-Disposition: ",
]

_soup = st.lists(st.sampled_from(TOKENS), max_size=60).map(b"".join)


_inputs = st.one_of(st.binary(max_size=600), _soup, mutated_message(SAMPLES, TOKENS))


def _numbers(root: Part) -> list[tuple[int, ...]]:
    out: list[tuple[int, ...]] = [(1,), (2,), (1, 1), (1, 2, 3)]

    def walk(part: Part, prefix: tuple[int, ...]) -> None:
        kids = part.children[0].children if part.is_message_rfc822 and part.children else (
            part.children if part.is_multipart else []
        )
        for i, child in enumerate(kids, 1):
            out.append((*prefix, i))
            walk(child, (*prefix, i))

    walk(root, ())
    return out


def _check_tree(data: bytes, root: Part) -> None:
    assert (root.start, root.end) == (0, len(data))
    for part in root.walk():
        assert part.start <= part.body_start <= part.end <= len(data)
        previous = part.body_start
        for child in part.children:
            assert previous <= child.start <= child.end <= part.end
            previous = child.end
        assert part.raw_bytes == part.header_bytes + part.body_bytes


def _exercise(data: bytes) -> None:
    try:
        root = parse(data)
    except SmimeProxyError:
        return
    _check_tree(data, root)
    view = MessageView(data)
    _check_tree(view.data, view.root)
    for value in (view.bodystructure(), view.body(), view.envelope()):
        assert isinstance(render(value), bytes)
    assert view.size == len(view.data)
    assert view.section(Section()) == view.data
    fields = (b"From", b"Subject")
    for numbers in [(), *_numbers(view.root)]:
        for text in ("", "HEADER", "TEXT", "MIME", "HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            if text == "MIME" and not numbers:
                continue
            section = Section(numbers, text, fields if text.startswith("HEADER.F") else ())
            whole = view.section(section)
            assert view.section(section, (1, 3)) == whole[1:4]
        if numbers:
            try:
                decoded = view.binary(numbers)
            except UnknownCte:
                continue
            assert view.binary_size(numbers) == len(decoded)


@FUZZ
@given(_inputs)
def test_any_bytes_give_a_tree_and_views(data: bytes) -> None:
    _exercise(data)


@FUZZ
@given(st.integers(1, 150), st.sampled_from([b"multipart/mixed", b"message/rfc822"]))
def test_deep_nesting(depth: int, kind: bytes) -> None:
    if kind == b"message/rfc822":
        data = b"Content-Type: message/rfc822\r\n\r\n" * depth + b"Subject: x\r\n\r\nbody"
    else:
        data = b"".join(
            b"Content-Type: multipart/mixed; boundary=n%d\r\n\r\n--n%d\r\n" % (i, i)
            for i in range(depth)
        )
    _exercise(data)


_HP_ENTITY = st.builds(
    lambda fields, ctype, body: fields + ctype + b"\r\n" + body,
    st.sampled_from([b"", b"From: a@b\r\nSubject: s\r\nHP-Outer: Subject: x\r\n",
                     b"From: =?x?q?\xff?=\r\n", b"\r\n"]),
    st.sampled_from([b'Content-Type: text/plain; hp="cipher"\r\n',
                     b'Content-Type: multipart/mixed; boundary=b; hp=clear\r\n',
                     b"Content-Type: message/rfc822\r\n",
                     b'Content-Type: text/plain; hp-legacy-display="1"; hp="cipher"\r\n'
                     b"Content-Transfer-Encoding: base64\r\n", b""]),
    st.binary(max_size=300))


@given(outer=st.binary(max_size=200), entity=st.one_of(_HP_ENTITY, st.binary(max_size=300)))
def test_header_protection_never_fails_unexpectedly(outer: bytes, entity: bytes) -> None:
    """What a hostile sender puts in a signed or encrypted entity: one of our errors at most
    (the IMAP front then shows the stored message), never another exception."""
    from smime_proxy.errors import SmimeProxyError
    from smime_proxy.mime.protection import (
        shown_message,
        stored_copy,
        with_protected_fields,
        without_legacy_display,
    )

    works: list[Callable[[], bytes | None]] = [
        lambda: shown_message(outer, entity), lambda: stored_copy(entity),
        lambda: with_protected_fields(outer, entity), lambda: without_legacy_display(entity)]
    for work in works:
        try:
            result = work()
        except SmimeProxyError:
            continue
        assert result is None or isinstance(result, bytes)
