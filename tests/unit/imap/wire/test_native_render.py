"""The native structure renderer (native/src/render.rs) against `render_structure_python`,
its reference: the same bytes for BODYSTRUCTURE, BODY and ENVELOPE of every vector message
(rendered natively, no fallback), and for any value; a value only Python knows (an Atom, a
Literal, a bool, a negative number) is left to Python and gives what Python gives.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from smime_proxy.errors import SmimeProxyError
from smime_proxy.imap.views import MessageView
from smime_proxy.imap.wire.values import (
    Atom,
    Literal,
    Value,
    render_structure,
    render_structure_python,
)
from support.damage import NATIVE_FUZZ, require_native

require_native()
from smime_proxy import _native as core  # noqa: E402 - only once it is known to be built

VECTORS = Path(__file__).resolve().parents[3] / "vectors"
SAMPLES = [p.read_bytes() for p in sorted([*VECTORS.rglob("*.eml"), *VECTORS.rglob("*.txt")])]


def test_the_views_of_every_vector_render_natively_the_same() -> None:
    rendered = 0
    for sample in SAMPLES:
        view = MessageView(sample)
        for value in (view.bodystructure(), view.body(), view.envelope()):
            native_bytes = core.render_structure(value)
            assert native_bytes is not None
            assert native_bytes == render_structure_python(value)
            rendered += 1
    assert rendered > 150


_leaf = st.one_of(
    st.none(), st.binary(max_size=20), st.binary(min_size=1020, max_size=1030),
    st.integers(-3, 2**70), st.booleans(), st.sampled_from([b"\\", b'"', b"a\r\nb", b"\x80"]),
    st.builds(Atom, st.sampled_from(["NIL", "\\Seen", "X"])),
    st.builds(Literal, st.binary(max_size=5)),
)
_values = st.recursive(_leaf, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                      st.lists(inner, max_size=5).map(tuple)),
                       max_leaves=30)


def _outcome(render: object, value: Value) -> object:
    try:
        return render(value)  # type: ignore[operator]
    except SmimeProxyError as exc:
        return type(exc).__name__


@NATIVE_FUZZ
@given(_values)
def test_any_value_renders_the_same(value: Value) -> None:
    assert _outcome(render_structure, value) == _outcome(render_structure_python, value)
