"""crypto.signed.der_time reads a signingTime value (RFC 5652 11.3) exactly as asn1crypto,
its reference: the DER forms by its own fast path, everything else by asn1crypto."""

from __future__ import annotations

from typing import Any

from asn1crypto import cms
from hypothesis import example, given, settings
from hypothesis import strategies as st

from smime_proxy.crypto.signed import der_time


def outcome(read: Any, value: bytes) -> object:
    try:
        return read(value)
    except (ValueError, TypeError, KeyError) as exc:
        return type(exc)


def reference(value: bytes) -> Any:
    return cms.Time.load(value).native


_digits = st.text("0123456789", min_size=10, max_size=16).map(str.encode)
_times = st.one_of(
    _digits.map(lambda d: b"\x17\x0d" + d[:12].ljust(12, b"0") + b"Z"),
    _digits.map(lambda d: b"\x18\x0f" + d[:14].ljust(14, b"0") + b"Z"),
    st.builds(lambda tag, d, z: bytes((tag, len(d) + len(z))) + d + z,
              st.sampled_from([0x17, 0x18, 0x04]), _digits, st.sampled_from([b"Z", b"", b"+0100"])),
    st.binary(max_size=20),
)


@settings(max_examples=3000, deadline=None)
@given(_times)
@example(b"\x17\x0d240101100000Z")  # what signers write
@example(b"\x17\x0d500101100000Z")  # 1950
@example(b"\x17\x0d490229100000Z")  # 2049 has no 29 February
@example(b"\x18\x0f20240229235960Z")  # a leap second
@example(b"\x18\x0f00000101000000Z")  # year 0
@example(b"\x17\x0d2401011000Z")  # no seconds (BER)
def test_the_same_as_asn1crypto(value: bytes) -> None:
    assert outcome(der_time, value) == outcome(reference, value)
