"""A minimal DER encoder (X.690) for the CMS structures we build.

Building asn1crypto objects from nested dicts re-encodes repeatedly (notes/crypto.md rule 2):
we write DER directly instead and keep asn1crypto for parsing. Every function returns the
complete TLV bytes.

May import: stdlib only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable


def length(n: int) -> bytes:
    """X.690 8.1.3: definite length, short or long form."""
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def header(tag: int, content_length: int) -> bytes:
    """Identifier and length octets of a TLV whose contents follow separately."""
    return bytes((tag,)) + length(content_length)


def tlv(tag: int, content: bytes) -> bytes:
    return bytes((tag,)) + length(len(content)) + content


def sequence(*items: bytes) -> bytes:
    return tlv(0x30, b"".join(items))


def set_of(items: Iterable[bytes]) -> bytes:
    """X.690 11.6: DER SET OF orders its elements by their encodings."""
    return tlv(0x31, b"".join(sorted(items)))


def integer(value: int) -> bytes:
    size = max(1, (value.bit_length() + 8) // 8)  # room for the sign bit
    return tlv(0x02, value.to_bytes(size, "big", signed=True))


def octet_string(data: bytes) -> bytes:
    return tlv(0x04, data)


def bit_string(data: bytes) -> bytes:
    return tlv(0x03, b"\x00" + data)


def null() -> bytes:
    return b"\x05\x00"


def oid(dotted: str) -> bytes:
    """X.690 8.19: object identifier from dotted text."""
    arcs = [int(part) for part in dotted.split(".")]
    first = arcs[0] * 40 + arcs[1]
    out = bytearray()
    for arc in (first, *arcs[2:]):
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out.extend(reversed(chunk))
    return tlv(0x06, bytes(out))


def explicit(number: int, content: bytes) -> bytes:
    """[number] EXPLICIT: a constructed context tag around a whole TLV."""
    return tlv(0xA0 | number, content)


def implicit(number: int, tlv_bytes: bytes, *, constructed: bool) -> bytes:
    """[number] IMPLICIT: replace the tag of an encoded TLV (single-byte tags only)."""
    tag = (0xA0 if constructed else 0x80) | number
    return bytes((tag,)) + tlv_bytes[1:]


def algorithm(dotted: str, parameters: bytes | None = None) -> bytes:
    """AlgorithmIdentifier ::= SEQUENCE { algorithm OID, parameters ANY OPTIONAL }."""
    return sequence(oid(dotted), parameters if parameters is not None else b"")


def utc_or_generalized_time(moment: dt.datetime) -> bytes:
    """RFC 5652 11.3: UTCTime for 1950-2049, GeneralizedTime otherwise."""
    moment = moment.astimezone(dt.UTC)
    if 1950 <= moment.year < 2050:
        return tlv(0x17, moment.strftime("%y%m%d%H%M%SZ").encode("ascii"))
    return tlv(0x18, moment.strftime("%Y%m%d%H%M%SZ").encode("ascii"))
