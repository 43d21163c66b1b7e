"""`smime-proxy mime ...` commands: inspect the IMAP views the proxy computes for a message.

`smime-proxy mime fetch --item ITEM < message.eml` prints the value of one FETCH data item,
exactly as it would follow the item name in an untagged FETCH response on the wire.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from typing import Any

from smime_proxy.cli._common import read_file, read_stdin, write_stdout
from smime_proxy.errors import InputError
from smime_proxy.imap.wire.values import Binary, Literal, Value, render
from smime_proxy.mime.views import MessageView, Section, parse_section


@dataclass(frozen=True, slots=True)
class FetchItem:
    """One fetch-att: `name` is BODYSTRUCTURE, BODY, ENVELOPE, RFC822.SIZE, RFC822.HEADER,
    RFC822.TEXT, RFC822, BODY[] (section), BINARY[] or BINARY.SIZE[]."""

    name: str
    section: Section | None = None
    partial: tuple[int, int] | None = None


_SIMPLE = {
    "BODYSTRUCTURE", "BODY", "ENVELOPE", "RFC822.SIZE", "RFC822.HEADER", "RFC822.TEXT", "RFC822",
}
_ITEM_RE = re.compile(
    r"^(?P<name>BODY(?:\.PEEK)?|BINARY(?:\.PEEK)?|BINARY\.SIZE)\[(?P<section>[^\]]*)\]"
    r"(?:<(?P<origin>[0-9]+)\.(?P<length>[0-9]+)>)?$",
    re.IGNORECASE,
)


def parse_fetch_item(text: str) -> FetchItem:
    """Parse one fetch-att (RFC 9051 section 6.4.5). Kept in one function so that the wire
    layer's fetch-att parser can replace it."""
    item = text.strip()
    upper = item.upper()
    if upper in _SIMPLE:
        return FetchItem(upper)
    m = _ITEM_RE.match(item)
    if m is None:
        raise InputError(f"unsupported FETCH item: {item[:80]!r}")
    name = m.group("name").upper().replace(".PEEK", "")
    section = parse_section(m.group("section"))
    partial = None
    if m.group("origin") is not None:
        partial = (int(m.group("origin")), int(m.group("length")))
    if name.startswith("BINARY"):
        if section.text:
            raise InputError("BINARY takes part numbers only")
        if name == "BINARY.SIZE" and partial is not None:
            raise InputError("BINARY.SIZE takes no partial")
    return FetchItem(name, section, partial)


def fetch_value(view: MessageView, item: FetchItem) -> Value:
    """The value of one item for one message, in the IMAP value model."""
    if item.name == "BODYSTRUCTURE":
        return view.bodystructure()
    if item.name == "BODY" and item.section is None:
        return view.body()
    if item.name == "ENVELOPE":
        return view.envelope()
    if item.name == "RFC822.SIZE":
        return view.size
    if item.name == "RFC822.HEADER":
        return Literal(view.rfc822_header())
    if item.name == "RFC822.TEXT":
        return Literal(view.rfc822_text())
    if item.name == "RFC822":
        return Literal(view.data)
    assert item.section is not None
    if item.name == "BODY":
        return Literal(view.section(item.section, item.partial))
    if item.name == "BINARY.SIZE":
        return view.binary_size(item.section.parts)
    content = view.binary(item.section.parts, item.partial)
    return Binary(content) if b"\0" in content else Literal(content)


def _fetch(args: argparse.Namespace) -> int:
    message = read_file(args.file, "message") if args.file else read_stdin()
    item = parse_fetch_item(args.item)
    view = MessageView(message)
    write_stdout(render(fetch_value(view, item)) + b"\n")
    return 0


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add this group's commands to the top-level parser."""
    group = sub.add_parser("mime", help="inspect the IMAP views of a message")
    cmds = group.add_subparsers(dest="mime_command", metavar="COMMAND")
    cmds.required = True
    fetch = cmds.add_parser(
        "fetch",
        help="print one FETCH item of a message (read from stdin) as it appears on the wire",
    )
    fetch.add_argument(
        "--item", required=True,
        help="a FETCH item: BODYSTRUCTURE, BODY, ENVELOPE, RFC822.SIZE, 'BODY[1.2.MIME]', "
        "'BODY[]<0.100>', 'BINARY[1]', 'BINARY.SIZE[1]'...",
    )
    fetch.add_argument("--file", help="read the message from FILE instead of stdin")
    fetch.set_defaults(handler=_fetch)
