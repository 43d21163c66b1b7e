"""Byte-offset MIME tree and IMAP message views (pure: stdlib, smime_proxy.errors and the IMAP
value model of smime_proxy.imap.wire.values only).

- `parse(data) -> Part` (tree.py): the MIME tree over the original bytes, never re-serialised;
  `Part.raw_bytes` / `header_bytes` / `body_bytes` / `byte_range` / `boundary` / `children`,
  header helpers (`header`, `header_values`, `content_type`, `param`, `disposition`).
- `MessageView(data)` (views.py): every IMAP FETCH view of a message, equal to Dovecot's.
- rfc822.py / address.py: Dovecot-compatible header value parsers (Content-Type parameters
  with RFC 2231 continuations, tokens, address lists).
"""

from __future__ import annotations

from smime_proxy.mime.address import Address, parse_address_list
from smime_proxy.mime.rfc822 import parse_content_type, parse_token_value, rfc2231_parse
from smime_proxy.mime.tree import Header, MimeError, Part, parse, part_at
from smime_proxy.mime.views import (
    BinaryDecodeError,
    MessageView,
    Section,
    SectionError,
    UnknownCte,
    parse_section,
    to_crlf,
)

__all__ = [
    "Address",
    "BinaryDecodeError",
    "Header",
    "MessageView",
    "MimeError",
    "Part",
    "Section",
    "SectionError",
    "UnknownCte",
    "parse",
    "parse_address_list",
    "parse_content_type",
    "parse_section",
    "parse_token_value",
    "part_at",
    "rfc2231_parse",
    "to_crlf",
]
