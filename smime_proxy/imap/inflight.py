"""The commands an IMAP session has in flight (one at a time): a client command relayed as
sent, a content FETCH being answered message by message, or a command of the proxy's own.

May import: imap.wire, imap.events, stdlib.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from smime_proxy.imap.events import MessageOpened
from smime_proxy.imap.wire import FetchCommand, Value


@dataclass
class RelayedCommand:
    """A client command relayed upstream as is, waiting for its tagged response."""

    tag: bytes
    pieces: deque[bytes] = field(default_factory=deque)  # after each upstream "+"
    login: bool = False  # LOGIN / AUTHENTICATE: authenticated once the upstream says OK
    login_user: str | None = None  # the user then (keys are looked up by this name)
    sasl_plain: bool = False  # AUTHENTICATE PLAIN waiting for the initial response
    client_continues: bool = False  # the upstream's "+" went to the client
    select: bool = False  # SELECT / EXAMINE: note whether the mailbox is read-only
    throttled: bytes | None = None  # AUTHENTICATE refused here: our NO, sent when it ends


@dataclass
class FetchEntry:
    """One untagged response of a content FETCH, in order: a message to answer (request_id
    set) or another response passed through (raw)."""

    raw: bytes = b""
    number: int = 0
    request_id: int | None = None
    stored: bytes = b""
    items: dict[bytes, Value] = field(default_factory=dict)
    result: MessageOpened | None = None


@dataclass
class FetchJob:
    command: FetchCommand
    entries: deque[FetchEntry] = field(default_factory=deque)
    done: bytes | None = None  # the upstream's tagged response, raw
    done_ok: bool = False
    locked: bool = False
    unknown_cte: bool = False
    unviewable: bool = False  # a message whose views could not be computed (NO SERVERBUG)
    seen_uids: list[int] = field(default_factory=list)
    store_tag: bytes | None = None


@dataclass
class InternalCommand:
    """A command of the proxy's own (CAPABILITY at start)."""

    tag: bytes
    purpose: Literal["capability"]
