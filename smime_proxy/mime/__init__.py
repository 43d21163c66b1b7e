"""Byte-offset MIME tree and header value parsers (pure: stdlib and smime_proxy.errors only).

- `parse(data) -> Part` (tree.py): the MIME tree over the original bytes, never re-serialised;
  `Part.raw_bytes` / `header_bytes` / `body_bytes` / `byte_range` / `boundary` / `children`,
  header helpers (`header`, `header_values`, `content_type`, `param`, `disposition`).
- transfer.py: Content-Transfer-Encoding undone as Dovecot's BINARY does it.
  (The IMAP views of a message live in `smime_proxy.imap.views`.)
- rfc822.py / address.py: Dovecot-compatible header value parsers (Content-Type parameters
  with RFC 2231 continuations, tokens, address lists).

May import: mime.
"""

from __future__ import annotations

from smime_proxy.mime.address import Address, parse_address_list
from smime_proxy.mime.rfc822 import parse_content_type, parse_token_value, rfc2231_parse
from smime_proxy.mime.transfer import BinaryDecodeError, UnknownCte, transfer_decode
from smime_proxy.mime.tree import Header, MimeError, Part, parse, part_at

__all__ = [
    "Address",
    "BinaryDecodeError",
    "Header",
    "MimeError",
    "Part",
    "UnknownCte",
    "parse",
    "parse_address_list",
    "parse_content_type",
    "parse_token_value",
    "part_at",
    "rfc2231_parse",
    "transfer_decode",
]
