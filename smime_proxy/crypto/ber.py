"""Linear-time BER walking for streamed (indefinite-length) CMS envelopes (X.690 8.1).

`openssl cms -stream`, Outlook and NSS send EnvelopedData with indefinite lengths and the
ciphertext cut into thousands of small OCTET STRING chunks. asn1crypto rescans an
indefinite element once per nesting level and copies its contents at each level (11 s and
1.2 GB for 100 MB). Here one pass over byte offsets finds the encrypted content, joins its
chunks once, and hands asn1crypto a small DER skeleton with the content left out.

The same walker reads small structures where asn1crypto's objects cost more than the work
(`elements`, `children`, `primitive`, `dotted`: the signed attributes, crypto.attributes).

May import: errors, crypto.der, stdlib.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from smime_proxy.crypto import der
from smime_proxy.errors import MalformedMessage

_MAX_DEPTH = 32
_EOC = b"\x00\x00"


def _header(buf: bytes, pos: int) -> tuple[int, int, int]:
    """(identifier octet, start of contents, length or -1 for indefinite) of the TLV at pos."""
    end = len(buf)
    if pos + 2 > end:
        raise MalformedMessage("truncated BER element")
    tag = buf[pos]
    pos += 1
    if tag & 0x1F == 0x1F:
        # X.690 8.1.2.4: the number follows in base 128; `tag` keeps the first octet (class,
        # form and 0x1F), which no field we look for has
        number_start = pos
        while pos < end and buf[pos] & 0x80:
            pos += 1
        pos += 1
        if pos - number_start > 4:
            raise MalformedMessage("BER tag number too large")
    if pos >= end:
        raise MalformedMessage("truncated BER element")
    first = buf[pos]
    pos += 1
    if first < 0x80:
        return tag, pos, first
    count = first & 0x7F
    if count == 0:
        if not tag & 0x20:
            raise MalformedMessage("indefinite length on a primitive element")
        return tag, pos, -1
    if count > 8 or pos + count > end:
        raise MalformedMessage("bad BER length")
    length = int.from_bytes(buf[pos : pos + count], "big")
    return tag, pos + count, length


@dataclass(frozen=True)
class Tlv:
    tag: int  # identifier octet
    begin: int  # first byte of the identifier
    start: int  # first byte of the contents
    end: int  # end of the contents
    stop: int  # end of the element, end-of-contents octets included
    kids: tuple[Tlv, ...] | None = None  # children, when finding the end walked them


def _element(buf: bytes, pos: int, depth: int = 0) -> Tlv:
    if depth > _MAX_DEPTH:
        raise MalformedMessage("BER nested too deeply")
    tag, start, length = _header(buf, pos)
    if length >= 0:
        end = start + length
        if end > len(buf):
            raise MalformedMessage("truncated BER element")
        return Tlv(tag, pos, start, end, end)
    cursor = start
    kids: list[Tlv] = []
    while True:
        if buf[cursor : cursor + 2] == _EOC:
            return Tlv(tag, pos, start, cursor, cursor + 2, tuple(kids))
        if cursor >= len(buf):
            raise MalformedMessage("missing end-of-contents")
        kid = _element(buf, cursor, depth + 1)
        kids.append(kid)
        cursor = kid.stop


def _children(buf: bytes, parent: Tlv) -> list[Tlv]:
    if parent.kids is not None:  # an indefinite-length element already walked
        return list(parent.kids)
    items = []
    cursor = parent.start
    while cursor < parent.end:
        item = _element(buf, cursor)
        items.append(item)
        cursor = item.stop
    if cursor != parent.end:
        raise MalformedMessage("BER element overruns its parent")
    return items


def _string_chunks(buf: bytes, item: Tlv, out: list[memoryview]) -> None:
    """Collect the value of a (possibly constructed) OCTET STRING (X.690 8.7.3)."""
    if not item.tag & 0x20:
        out.append(memoryview(buf)[item.start : item.end])
        return
    for child in _children(buf, item):
        if child.tag & 0xDF != 0x04:
            raise MalformedMessage("constructed OCTET STRING holds something else")
        _string_chunks(buf, child, out)


def content_type(ber: bytes) -> str:
    """The dotted contentType OID of a ContentInfo (RFC 5652 section 3), parsing nothing else."""
    tag, start, _ = _header(ber, 0)
    if tag != 0x30:
        raise MalformedMessage("CMS object is not a SEQUENCE")
    oid_tag, oid_start, oid_length = _header(ber, start)
    if oid_tag != 0x06 or oid_length <= 0 or oid_start + oid_length > len(ber):
        raise MalformedMessage("CMS object does not start with a content type")
    return dotted(ber[oid_start : oid_start + oid_length])


def elements(buf: bytes) -> list[Tlv]:
    """The elements one after the other that make up `buf` (a SET's or SEQUENCE's contents),
    each walked to its end; MalformedMessage for anything truncated or overrunning."""
    return _children(buf, Tlv(0x30, 0, 0, len(buf), len(buf)))


def children(buf: bytes, parent: Tlv) -> list[Tlv]:
    """The elements inside a constructed `parent` of `buf`."""
    if not parent.tag & 0x20:
        raise MalformedMessage("a primitive BER element where a constructed one belongs")
    return _children(buf, parent)


def primitive(buf: bytes, item: Tlv, tag: int, what: str) -> bytes:
    """The contents of a primitive element that must carry `tag` (a DER-only field)."""
    if item.tag != tag:
        raise MalformedMessage(f"malformed {what}")
    return buf[item.start : item.end]


@functools.lru_cache(maxsize=1024)
def dotted(body: bytes) -> str:
    """X.690 8.19: OID contents to dotted text."""
    arcs: list[int] = []
    value = 0
    for byte in body:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    if value or not arcs:
        raise MalformedMessage("malformed object identifier")
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in (first, arcs[0] - 40 * first, *arcs[1:]))


def split_encrypted_content(ber: bytes) -> tuple[bytes, bytes | memoryview | None]:
    """Return (a skeleton without the encrypted content, the encrypted content).

    Works on ContentInfo(EnvelopedData | AuthEnvelopedData); for anything else, or when the
    content is absent, returns (ber, None) unchanged. The skeleton has definite lengths at
    the levels walked; other fields are copied as they are. Content in one piece (a
    primitive OCTET STRING, as DER has it) is a view of `ber`, not a copy: the content of a
    25 MB message is most of it.
    """
    root = _element(ber, 0)
    if root.stop != len(ber):
        raise MalformedMessage("trailing bytes after the CMS object")
    if root.tag != 0x30:
        raise MalformedMessage("CMS object is not a SEQUENCE")
    parts = _children(ber, root)
    if len(parts) != 2 or parts[1].tag != 0xA0:
        return ber, None
    body = _children(ber, parts[1])
    if len(body) != 1 or body[0].tag != 0x30:
        return ber, None
    fields = _children(ber, body[0])
    # EncryptedContentInfo: the first SEQUENCE after version, [0] originatorInfo and the
    # recipientInfos SET (RFC 5652 section 6.1, RFC 5083 section 2.1).
    index = next((i for i, f in enumerate(fields) if f.tag == 0x30 and i >= 2), None)
    if index is None:
        return ber, None
    eci = _children(ber, fields[index])
    if len(eci) != 3 or eci[2].tag not in (0x80, 0xA0):
        return ber, None
    chunks: list[memoryview] = []
    _string_chunks(ber, eci[2], chunks)
    content: bytes | memoryview = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    del chunks

    def raw(item: Tlv) -> bytes:
        return ber[item.begin : item.stop]

    new_fields = [
        der.sequence(raw(eci[0]), raw(eci[1])) if i == index else raw(f)
        for i, f in enumerate(fields)
    ]
    skeleton = der.sequence(raw(parts[0]), der.explicit(0, der.sequence(*new_fields)))
    return skeleton, content
