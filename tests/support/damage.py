"""Damage done to test inputs by hypothesis, shared by the fuzz tests and the tests of the
native core against its Python twins: a mail message mutated by tokens, bytes damaged at
a place, and DER with one element changed. Also what those native tests check first
(`require_native`) and the examples they run (`NATIVE_FUZZ`, `MIME_FUZZ_EXAMPLES`, default 600).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from smime_proxy.crypto.ber import Tlv, children, elements
from smime_proxy.native import native

NATIVE_FUZZ = settings(max_examples=int(os.environ.get("MIME_FUZZ_EXAMPLES", "600")),
                       deadline=None,
                       suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# tags a damaged element is given: each DER type the CMS readers look for, and wrong ones
DER_TAGS = (0x02, 0x04, 0x05, 0x06, 0x24, 0x30, 0x31, 0x80, 0xA0, 0xA1, 0xA2, 0xA3, 0x1F)


def require_native() -> None:
    """At a native test module's top: skipped when the native core is turned off
    (`SMIME_PROXY_NATIVE=0`), failed when it is not built (never skipped silently)."""
    if os.environ.get("SMIME_PROXY_NATIVE") == "0":
        pytest.skip("the native core is turned off (SMIME_PROXY_NATIVE=0)",
                    allow_module_level=True)
    if native is None:
        pytest.fail("the native core is not built: scripts/build-native.sh .venv/bin/python",
                    pytrace=False)


@st.composite
def mutated_message(draw: st.DrawFn, samples: Sequence[bytes],
                    tokens: Sequence[bytes]) -> bytes:
    """One of `samples` with 1-8 tokens inserted, runs deleted or bits flipped."""
    data = bytearray(draw(st.sampled_from(samples)))
    for _ in range(draw(st.integers(1, 8))):
        pos = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["insert", "delete", "flip"]))
        if action == "insert":
            data[pos:pos] = draw(st.sampled_from(tokens))
        elif action == "delete":
            del data[pos : pos + draw(st.integers(1, 40))]
        elif pos < len(data):
            data[pos] ^= 1 << draw(st.integers(0, 7))
    return bytes(data)


BYTE_VALUES = (0x00, 0x80, 0x81, 0x82, 0xFF, 0x30, 0x04, 0xA0)  # DER tags and lengths


def damage_at(draw: st.DrawFn, data: bytearray, pos: int,
              values: Sequence[int] = BYTE_VALUES) -> None:
    """Damage `data` in place at `pos`: a bit flipped, the byte set to one of `values`, 1-4
    bytes deleted, or 1-4 random bytes inserted."""
    action = draw(st.sampled_from(["flip", "set", "delete", "insert"]))
    if action == "flip":
        data[pos] ^= 1 << draw(st.integers(0, 7))
    elif action == "set":
        data[pos] = draw(st.sampled_from(values))
    elif action == "delete":
        del data[pos : pos + draw(st.integers(1, 4))]
    else:
        data[pos:pos] = draw(st.binary(min_size=1, max_size=4))


def element_at(der: bytes, *path: int) -> Tlv:
    """The element at these child indexes from the outermost one down."""
    item = elements(der)[0]
    for index in path:
        item = children(der, item)[index]
    return item


def retagged(der: bytes, item: Tlv, tag: int) -> bytes:
    return der[: item.begin] + bytes([tag]) + der[item.begin + 1 :]


def damaged_element(draw: st.DrawFn, data: bytes, node: Tlv,
                    tags: Sequence[int] = DER_TAGS, contents: bool = True) -> bytes:
    """`data` with `node` changed: its tag, its length, dropped or doubled, or (with
    `contents`) a byte of its contents."""
    actions = ["tag", "length", "drop", "double", *(["contents"] if contents else [])]
    action = draw(st.sampled_from(actions))
    if action == "tag":
        return retagged(data, node, draw(st.sampled_from(tags)))
    if action == "length":
        at = node.begin + 1
        return data[:at] + bytes([data[at] ^ draw(st.sampled_from([1, 2, 0x80]))]) + data[at + 1 :]
    if action == "drop":
        return data[: node.begin] + data[node.stop :]
    if action == "double":
        return data[: node.stop] + data[node.begin : node.stop] + data[node.stop :]
    if node.start == node.end:
        return data
    at = draw(st.integers(node.start, node.end - 1))
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
