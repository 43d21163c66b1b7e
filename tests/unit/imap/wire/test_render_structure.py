"""`render_structure` (BODYSTRUCTURE, BODY, ENVELOPE) against the plain recursive form it
replaced for speed: leading lists follow each other without a space, everything else is
`render`."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from smime_proxy.imap.wire.values import Atom, Value, render, render_structure


def reference(value: Value) -> bytes:
    if isinstance(value, (list, tuple)):
        index = 0
        lead: list[bytes] = []
        while index < len(value) and isinstance(value[index], (list, tuple)):
            lead.append(reference(value[index]))
            index += 1
        parts = [b"".join(lead)] if lead else []
        parts.extend(reference(item) for item in value[index:])
        return b"(" + b" ".join(parts) + b")"
    return render(value)


leaves = st.one_of(st.none(), st.integers(0, 10**9), st.binary(max_size=12),
                   st.sampled_from([Atom("\\Seen"), Atom("NIL")]))
values = st.recursive(leaves, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                      st.lists(inner, max_size=5).map(tuple)),
                      max_leaves=30)


@settings(max_examples=400, deadline=None)
@given(values)
def test_render_structure_is_the_reference_form(value: Value) -> None:
    assert render_structure(value) == reference(value)


def test_multipart_and_address_lists_have_no_space_between_their_leading_lists() -> None:
    multipart = [[b"text", b"plain", None], [b"text", b"html", None], b"alternative"]
    assert render_structure(multipart) == (b'(("text" "plain" NIL)("text" "html" NIL) '
                                           b'"alternative")')
    assert render_structure([None, [[b"A", None, b"a", b"x"], [b"B", None, b"b", b"x"]]]) == (
        b'(NIL (("A" NIL "a" "x")("B" NIL "b" "x")))')
