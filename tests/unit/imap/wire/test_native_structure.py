"""The native BODYSTRUCTURE and ENVELOPE (native/src/structure.rs) against the Python
views, their reference (`MessageView.bodystructure()` and `envelope()` rendered by
`fetch_rewrite.render_item_value`): the same bytes for every vector message and any
mutation of one; None for a BODYSTRUCTURE exactly when the message has a message/rfc822
part, and for an ENVELOPE only when an address field is in a form the fast reading of
mime/address.py does not take (then the Python views answer); the view a worker
prerenders holds the same structures with the native core and without it.

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
from smime_proxy.mime.address import _fast, _strip_blank_folds
from smime_proxy.mime.transfer import c_string
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
          b"\"", b";", b"=", b"From: ", b"To: ", b"Cc: ", b"Sender: ", b"Reply-To: ",
          b"Subject: ", b"Date: ", b"Message-ID: ", b"In-Reply-To: ", b"a@b.example",
          b"Alice <a@b>", b"\"A, B\" <c@d>", b", ", b"<", b">", b"@", b".", b"\t", b"  "]


def reference(data: bytes) -> tuple[bytes, bytes]:
    view = MessageView(data)
    return (render_item_value(FetchItem("BODYSTRUCTURE"), view.bodystructure()),
            render_item_value(FetchItem("ENVELOPE"), view.envelope()))


def has_rfc822(data: bytes) -> bool:
    return any(part.is_message_rfc822 for part in MessageView(data).root.walk())


def fast_addresses(data: bytes) -> bool:
    """Whether every address field of the message is one `address._fast` reads."""
    root = MessageView(data).root
    fields = (b"from", b"sender", b"reply-to", b"to", b"cc", b"bcc")
    return all(_fast(_strip_blank_folds(c_string(h.value(root.data)))) is not None
               for h in root.headers if h.name.lower() in fields)


def same(data: bytes) -> tuple[bool, bool]:
    """Checks one message; whether each structure was made natively."""
    view = MessageView(data)
    structure, envelope = core.render_views(view.data)
    expected_structure, expected_envelope = reference(view.data)
    assert structure == (None if has_rfc822(view.data) else expected_structure)
    assert envelope == (expected_envelope if fast_addresses(view.data) else None)
    return structure is not None, envelope is not None


def test_every_vector_is_the_same() -> None:
    taken = [same(sample) for sample in SAMPLES]
    assert sum(structure for structure, _ in taken) > 100
    assert sum(envelope for _, envelope in taken) > 100


@pytest.mark.parametrize(("field", "native"), [
    (b"a@b.example", True),
    (b" Alice Example <a@b.example> , \"B, C\" <c@d.example>,e@f", True),
    (b"<a@b.example>", True),
    (b"a\"b\" <c@d>", True),
    (b"Name <a@b>\n ", True),
    (b"\"q\" <a@b>\n ", True),  # a blank fold after a quoted string is dropped
    (b"", False),
    (b"undisclosed-recipients:;", False),
    (b"a@b (comment)", False),
    (b"\"a\\\"b\" <c@d>", False),
    (b"a@b,", False),
])
def test_address_forms(field: bytes, native: bool) -> None:
    data = b"From: " + field + b"\r\nTo: x@y\r\nSubject:  a\tb \r\n\r\nbody\r\n"
    assert same(data)[1] is native


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
