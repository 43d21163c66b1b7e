"""The thin adapter around asn1crypto: the only module that imports it for parsing CMS.

Fixes applied on import (notes/crypto.md rules 1 and 3):
- indefinite-length (BER, streamed) strings are merged in linear time: asn1crypto 1.5.1 joins
  chunks with `+=`, quadratic in the number of chunks (58 s for a 40 MB `openssl cms -stream`);
- attributes are read by OID in `crypto.attributes` (the BER walker), never by `.native` on a
  whole attribute set, so unknown attributes (NSS adds Microsoft's 1.3.6.1.4.1.311.16.4) stay
  opaque.

May import: errors, asn1crypto.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from asn1crypto import core

from smime_proxy.errors import MalformedMessage

PARSER_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    OverflowError,
    AttributeError,
    RecursionError,
)
P = ParamSpec("P")
R = TypeVar("R")


def _merge_chunks_linear(self: Any) -> Any:
    """Constructable._merge_chunks without the quadratic `+=` (X.690 8.7.3 / 8.21)."""
    if not self._indefinite:
        return self._as_chunk()
    parts: list[Any] = []
    pointer = 0
    contents = self.contents
    contents_len = len(contents)
    while pointer < contents_len:
        sub_value, pointer = core._parse_build(contents, pointer, spec=self.__class__)
        parts.append(sub_value._merge_chunks())
    if not parts:
        return self._as_chunk()
    first = parts[0]
    if isinstance(first, bytes):
        return b"".join(parts)
    if isinstance(first, str):
        return "".join(parts)
    merged = first
    for part in parts[1:]:
        merged += part
    return merged


core.Constructable._merge_chunks = _merge_chunks_linear


def parse(spec: type[Any], data: bytes, what: str) -> Any:
    """Parse `data` as `spec`, turning any parser error into MalformedMessage.

    asn1crypto parses children lazily: entry points also carry `malformed_on_error`.
    """
    try:
        value = spec.load(data, strict=False)
    except MalformedMessage:
        raise
    except PARSER_ERRORS as exc:
        raise MalformedMessage(f"malformed {what}: {_short(exc)}") from None
    return value


def guarded(what: str, func: Callable[[], Any]) -> Any:
    """Run one asn1crypto access, mapping its exceptions to MalformedMessage."""
    try:
        return func()
    except MalformedMessage:
        raise
    except PARSER_ERRORS as exc:
        raise MalformedMessage(f"malformed {what}: {_short(exc)}") from None


def malformed_on_error(what: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate an entry point: any parser exception escaping it becomes MalformedMessage.

    asn1crypto and cryptography parse lazily, so a malformed field can raise far from the
    `load` call; entry points are the one place to guarantee "our error, never anything else".
    """

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return func(*args, **kwargs)
            except PARSER_ERRORS as exc:
                raise MalformedMessage(f"malformed {what}: {_short(exc)}") from None

        return wrapper

    return decorate


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]


def oid_of(algorithm: Any) -> str:
    """The dotted OID of an AlgorithmIdentifier-like value."""
    dotted: str = algorithm["algorithm"].dotted
    return dotted


@functools.lru_cache(maxsize=256)
def dotted_of(contents: bytes) -> str:
    """The dotted OID asn1crypto reads from these OBJECT IDENTIFIER contents (lenient: an
    unfinished last arc is dropped), for OIDs read apart from asn1crypto (the native reader)
    that must mean what they mean to the asn1crypto path."""
    dotted: str = core.ObjectIdentifier(contents=contents).dotted
    return dotted


def raw_parameters(algorithm: Any) -> bytes | None:
    """The DER of an AlgorithmIdentifier's parameters, or None when absent or NULL."""
    params = algorithm["parameters"]
    if isinstance(params, core.Void) or params is None:
        return None
    data: bytes = params.dump()
    if data in (b"", b"\x05\x00"):
        return None
    return data
