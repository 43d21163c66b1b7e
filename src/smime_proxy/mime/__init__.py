"""Byte-offset MIME tree and IMAP message views (pure; stdlib and the IMAP value model only).

- `parse(bytes) -> Part`: the MIME tree over the original bytes (`tree.py`).
- `MessageView(bytes)`: every IMAP FETCH view of a message (`views.py`).
"""

from __future__ import annotations

from smime_proxy.mime.tree import Header, MimeError, Part, parse, part_at
from smime_proxy.mime.views import MessageView, Section, SectionError, UnknownCte, parse_section

__all__ = [
    "Header",
    "MessageView",
    "MimeError",
    "Part",
    "Section",
    "SectionError",
    "UnknownCte",
    "parse",
    "parse_section",
    "part_at",
]
