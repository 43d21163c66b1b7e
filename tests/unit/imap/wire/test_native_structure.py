"""The native BODYSTRUCTURE (native/src/structure.rs) against the Python views, its
reference (`MessageView.bodystructure()` rendered by `fetch_rewrite.render_item_value`):
the same bytes for every vector message and any mutation of one, and None exactly for the
messages with a message/rfc822 part (whose ENVELOPE the Python code computes); the view a
worker prerenders holds the same BODYSTRUCTURE with the native core and without it.

`MIME_FUZZ_EXAMPLES=20000` for a deep run (default 600).
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from smime_proxy.imap import fetch_rewrite
from smime_proxy.imap.fetch_rewrite import prerender, render_item_value
from smime_proxy.imap.views import MessageView
from smime_proxy.imap.wire.sections import FetchItem
from support.damage import NATIVE_FUZZ, mutated_message, require_native

require_native()
from smime_proxy import _native as core  # noqa: E402 - only once it is known to be built

VECTORS = Path(__file__).resolve().parents[3] / "vectors"
SAMPLES = [p.read_bytes() for p in sorted([*VECTORS.rglob("*.eml"), *VECTORS.rglob("*.txt")])
           if p.stat().st_size < 200_000]
# what changes a structure: the fields the views read, their values and the boundaries
TOKENS = [b"\r\n", b"\n", b"\r\n\r\n", b"--", b"Content-Type: ", b"multipart/mixed",
          b"message/rfc822", b"text/plain", b"; boundary=b", b"\r\n--b\r\n", b"\r\n--b--\r\n",
          b"Content-Transfer-Encoding: ", b"base64", b" 7bit ", b"Content-Disposition: ",
          b"attachment; filename=\"a b\"", b"; filename*=utf-8''%41", b"Content-Language: ",
          b"en, de", b"Content-ID: <x>", b"Content-MD5: ", b"Content-Location: ",
          b"Content-Description: ", b"charset=us-ascii", b"(comment)", b"\x00", b"\xff",
          b"\"", b";", b"="]


def reference(data: bytes) -> bytes:
    view = MessageView(data)
    return render_item_value(FetchItem("BODYSTRUCTURE"), view.bodystructure())


def has_rfc822(data: bytes) -> bool:
    return any(part.is_message_rfc822 for part in MessageView(data).root.walk())


def same(data: bytes) -> None:
    view = MessageView(data)
    native = core.render_bodystructure(view.data)
    if has_rfc822(view.data):
        assert native is None
    else:
        assert native == reference(view.data)


def test_every_vector_is_the_same() -> None:
    taken = 0
    for sample in SAMPLES:
        same(sample)
        taken += not has_rfc822(MessageView(sample).data)
    assert taken > 100


@NATIVE_FUZZ
@given(st.one_of(mutated_message(SAMPLES, TOKENS), st.binary(max_size=300),
                 st.lists(st.sampled_from(TOKENS), max_size=40).map(b"".join)))
@example(b"Content-Type: text/plain\r\n\r\nx")  # Dovecot's plain 7-bit default
@example(b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b--\r\n")  # no parts
@example(b"Content-Type: text/plain\x00; charset=x\r\n\r\n")  # NUL: read again, cut
def test_any_message_is_the_same(data: bytes) -> None:
    same(data)


@pytest.mark.parametrize("sample", SAMPLES[:40])
def test_the_prerendered_view_is_the_same_with_and_without(sample: bytes) -> None:
    with_native = MessageView(sample)
    prerender(with_native)
    with mock.patch.object(fetch_rewrite, "native", None):
        without = MessageView(sample)
        prerender(without)
    assert with_native.rendered == without.rendered


@pytest.mark.parametrize("depth", [1, 99, 100, 101, 150])
def test_deep_nesting_is_the_same(depth: int) -> None:
    head = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
                    for i in range(depth))
    tail = b"".join(b"\r\n--b%d--\r\n" % i for i in reversed(range(depth)))
    same(head + b"Content-Type: text/plain\r\n\r\nx" + tail)


def test_the_part_cap_is_the_same() -> None:
    parts = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\n%d\r\n" % i for i in range(10050))
    same(b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + parts + b"--b--\r\n")
