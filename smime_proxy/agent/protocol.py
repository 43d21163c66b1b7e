"""The key agent's wire format (pure; no I/O): how the fronts' process and the key agent
process (`smime-proxy agent`) talk over their Unix socket.

A frame is a 4-byte big-endian length and that many bytes (at most `MAX_FRAME`). A frame's
body is one operation or outcome byte and then fields, each a 4-byte big-endian length and
its bytes (at most `MAX_FIELDS`). Numbers and names travel as ASCII text fields. Nothing is
parsed beyond this: a malformed frame is a `ProtocolError`, and the agent answers it with
`BAD_REQUEST` and closes the connection.

Why not JSON or pickle: the agent parses nothing but these frames, and fields that are bytes
(keys, digests, passwords) need no encoding; pickle would run code.

Requests (op, fields):
  UNLOCK   user, encrypted key (PKCS#8 PBES2 DER), password, certificate DER,
           idle seconds, maximum seconds, now (UNIX seconds), mail mark (may be empty)
  LOCK     user
  UNWRAP   user, now, encrypted CEK, "pkcs1"|"oaep", OAEP hash, MGF hash, label flag
           ("0"/"1"), label, expected length
  ECDH     user, now, peer public key (SubjectPublicKeyInfo DER)
  SIGN     user, now, digest, hash name, "pkcs1"|"pss"|"ecdsa"
  STATUS   user, now                  -> unlocked_at, last_used, mail mark (when unlocked)
  TOUCH    user, now [, mail mark]    -> as STATUS, and counts as use; a mark replaces the
                                         stored one
  EXPIRE   now                        -> the users whose unlock ended
Outcomes: OK (fields), LOCKED, WRONG_PASSWORD, BAD_REQUEST (a message), UNSUPPORTED (a
message).

May import: stdlib.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

MAX_FRAME: Final = 1 << 20  # a frame holds a key, a certificate, a password: far less
MAX_FIELDS: Final = 16
_LENGTH: Final = struct.Struct(">I")

UNLOCK: Final = b"U"
LOCK: Final = b"L"
UNWRAP: Final = b"K"
ECDH: Final = b"E"
SIGN: Final = b"S"
STATUS: Final = b"T"
TOUCH: Final = b"M"
EXPIRE: Final = b"X"
OPERATIONS: Final = frozenset({UNLOCK, LOCK, UNWRAP, ECDH, SIGN, STATUS, TOUCH, EXPIRE})

OK: Final = b"0"
LOCKED: Final = b"1"
WRONG_PASSWORD: Final = b"2"
BAD_REQUEST: Final = b"3"
UNSUPPORTED: Final = b"4"
OUTCOMES: Final = frozenset({OK, LOCKED, WRONG_PASSWORD, BAD_REQUEST, UNSUPPORTED})


class ProtocolError(Exception):
    """A frame that is not one of this protocol's."""


@dataclass(frozen=True)
class Message:
    """A request (`kind` an operation) or an answer (`kind` an outcome), with its fields."""

    kind: bytes
    fields: tuple[bytes, ...] = ()

    def __repr__(self) -> str:  # fields hold passwords and keys: never shown
        return f"Message(kind={self.kind!r}, fields={len(self.fields)})"


def encode(message: Message) -> bytes:
    """The frame of `message`."""
    if len(message.fields) > MAX_FIELDS:
        raise ProtocolError("too many fields")
    body = b"".join([message.kind, *(_LENGTH.pack(len(f)) + f for f in message.fields)])
    if len(body) > MAX_FRAME:
        raise ProtocolError("frame too large")
    return _LENGTH.pack(len(body)) + body


def frame_length(header: bytes) -> int:
    """The body length a 4-byte frame header announces (checked against MAX_FRAME)."""
    if len(header) != _LENGTH.size:
        raise ProtocolError("short frame header")
    (length,) = _LENGTH.unpack(header)
    if not 1 <= length <= MAX_FRAME:
        raise ProtocolError("bad frame length")
    return int(length)


def decode(body: bytes, kinds: frozenset[bytes]) -> Message:
    """The message in a frame's body; its kind must be one of `kinds`."""
    if not body or body[:1] not in kinds:
        raise ProtocolError("unknown operation or outcome")
    fields: list[bytes] = []
    at = 1
    while at < len(body):
        if len(fields) == MAX_FIELDS or at + _LENGTH.size > len(body):
            raise ProtocolError("malformed fields")
        (length,) = _LENGTH.unpack_from(body, at)
        at += _LENGTH.size
        if at + length > len(body):
            raise ProtocolError("field longer than the frame")
        fields.append(body[at : at + length])
        at += length
    return Message(body[:1], tuple(fields))


def text(value: bytes, name: str, *, limit: int = 320) -> str:
    """A field that holds ASCII text (a user name, a number, an algorithm name)."""
    if len(value) > limit:
        raise ProtocolError(f"{name}: too long")
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError(f"{name}: not ASCII") from None


def number(value: bytes, name: str) -> float:
    """A field that holds a non-negative decimal number."""
    raw = text(value, name, limit=32)
    try:
        result = float(raw)
    except ValueError:
        raise ProtocolError(f"{name}: not a number") from None
    if not 0 <= result < 1e12:
        raise ProtocolError(f"{name}: out of range")
    return result


def user_name(value: bytes) -> str:
    """A user field: UTF-8, 1..320 bytes, no control characters."""
    if not 0 < len(value) <= 320:
        raise ProtocolError("user: bad length")
    try:
        name = value.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("user: not UTF-8") from None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise ProtocolError("user: control character")
    return name
