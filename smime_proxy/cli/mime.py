"""`smime-proxy mime ...` commands: inspect the IMAP views the proxy computes for a message.

`smime-proxy mime fetch --item ITEM < message.eml` prints the value of one FETCH data item,
exactly as it would follow the item name in an untagged FETCH response on the wire: the item
is read by the wire layer's fetch-att parser and answered by the same code as the IMAP front
(`imap.fetch_rewrite.content_value`), so what an admin inspects is what clients get.

May import: cli, errors, imap.fetch_rewrite, imap.views, imap.wire, stdlib.
"""

from __future__ import annotations

import argparse
from typing import Any

from smime_proxy.cli._common import read_file, read_stdin, write_stdout
from smime_proxy.errors import InputError, PeerProtocolError
from smime_proxy.imap.fetch_rewrite import content_value, is_content, render_item_value
from smime_proxy.imap.views import MessageView
from smime_proxy.imap.wire import FetchCommand, FetchItem, parse_command


def parse_fetch_item(text: str) -> FetchItem:
    """One content fetch-att (RFC 9051 section 6.4.5), e.g. `BODY.PEEK[1.2]<0.100>`."""
    try:
        command = parse_command(b"A FETCH 1 (" + text.strip().encode("utf-8") + b")\r\n")
    except (PeerProtocolError, UnicodeEncodeError):
        raise InputError(f"not a FETCH item: {text[:80]!r}") from None
    if not isinstance(command, FetchCommand) or len(command.items) != 1:
        raise InputError("give exactly one FETCH item")
    item = command.items[0]
    if not is_content(item):
        raise InputError(f"{item.name} is not computed from the message (a content item is)")
    return item


def _fetch(args: argparse.Namespace) -> int:
    message = read_file(args.file, "message") if args.file else read_stdin()
    item = parse_fetch_item(args.item)
    value = content_value(MessageView(message), item)
    write_stdout(render_item_value(item, value) + b"\n")
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
        "--item",
        required=True,
        help="a FETCH item: BODYSTRUCTURE, BODY, ENVELOPE, RFC822.SIZE, 'BODY[1.2.MIME]', "
        "'BODY[]<0.100>', 'BINARY[1]', 'BINARY.SIZE[1]'...",
    )
    fetch.add_argument("--file", help="read the message from FILE instead of stdin")
    fetch.set_defaults(handler=_fetch)
