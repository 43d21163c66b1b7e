"""CMS attributes (RFC 5652 5.3 and 11) read with the BER walker, by OID.

A SignerInfo's signed attributes are read for every signed message; asn1crypto built an
object per attribute and per value for them (a quarter of verifying a signature). Here one
pass over byte offsets gives each attribute's OID and its values as their own TLV bytes;
a caller decodes only the values it uses, and an unknown attribute stays opaque
(notes/crypto.md rule 3).

With the native core built, the walk is native (native/src/cms.rs `read_attributes`); where
it finds anything wrong, the code here reads the contents and says what.

May import: errors, crypto.ber, native, stdlib.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from smime_proxy.crypto import ber
from smime_proxy.errors import MalformedMessage
from smime_proxy.native import native


@dataclass(frozen=True)
class Attribute:
    """Attribute ::= SEQUENCE { attrType OBJECT IDENTIFIER, attrValues SET OF ANY }."""

    oid: str
    values: tuple[bytes, ...]  # each value's whole TLV


def read_attributes(contents: bytes) -> list[Attribute]:
    """The attributes in the contents of a SET OF Attribute (signedAttrs, unsignedAttrs)."""
    found = None if native is None else native.read_attributes(contents)
    if found is not None:
        return [Attribute(ber.dotted(contents[a:b]), tuple([contents[s:e] for s, e in values]))
                for (a, b), values in found]
    return read_attributes_python(contents)


def read_attributes_python(contents: bytes) -> list[Attribute]:
    """`read_attributes` by this module's code alone (the native walk's reference)."""
    attributes = []
    for item in ber.elements(contents):
        if item.tag != 0x30:
            raise MalformedMessage("malformed attribute: not a SEQUENCE")
        fields = ber.children(contents, item)
        if len(fields) != 2 or fields[1].tag != 0x31:
            raise MalformedMessage("malformed attribute: not a type and a SET of values")
        oid = ber.dotted(ber.primitive(contents, fields[0], 0x06, "attribute type"))
        values = tuple(contents[value.begin : value.stop]
                       for value in ber.children(contents, fields[1]))
        attributes.append(Attribute(oid, values))
    return attributes


def values_of(attributes: list[Attribute], oid: str) -> list[tuple[bytes, ...]]:
    """The value lists of every attribute with this OID (one list per occurrence)."""
    return [attribute.values for attribute in attributes if attribute.oid == oid]


def oid_value(value: bytes, what: str) -> str:
    """An OBJECT IDENTIFIER value (contentType, RFC 5652 11.1), dotted."""
    return ber.dotted(_primitive(value, 0x06, what))


def octets_value(value: bytes, what: str) -> bytes:
    """An OCTET STRING value (messageDigest, RFC 5652 11.2): DER, so one primitive string."""
    return _primitive(value, 0x04, what)


@functools.lru_cache(maxsize=256)
def capability_oids(value: bytes) -> tuple[str, ...]:
    """SMIMECapabilities ::= SEQUENCE OF SEQUENCE { capabilityID OID, parameters ANY }
    (RFC 8551 2.5.2): the capability OIDs, in the signer's order of preference. Kept by
    value: a signer sends the same list with every message."""
    found = []
    items = ber.elements(value)
    if len(items) != 1 or items[0].tag != 0x30:
        raise MalformedMessage("malformed smimeCapabilities")
    for capability in ber.children(value, items[0]):
        if capability.tag != 0x30:
            raise MalformedMessage("malformed smimeCapabilities")
        parts = ber.children(value, capability)
        if not parts:
            raise MalformedMessage("malformed smimeCapabilities")
        found.append(ber.dotted(ber.primitive(value, parts[0], 0x06, "smimeCapabilities")))
    return tuple(found)


def _primitive(value: bytes, tag: int, what: str) -> bytes:
    items = ber.elements(value)
    if len(items) != 1:
        raise MalformedMessage(f"malformed {what}")
    return ber.primitive(value, items[0], tag, what)
