"""The commands an IMAP session has in flight (one at a time): a client command relayed as
sent, a content FETCH being answered message by message, a SEARCH that looks into encrypted
mail, or a command of the proxy's own.

May import: imap.wire, imap.events, imap.search, imap.views, stdlib.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from smime_proxy.imap.events import MessageOpened
from smime_proxy.imap.search import Leaf, Node
from smime_proxy.imap.views import MessageView
from smime_proxy.imap.wire import FetchCommand, FetchItem, SearchCommand, Value


@dataclass
class RelayedCommand:
    """A client command relayed upstream as is, waiting for its tagged response."""

    tag: bytes
    pieces: deque[bytes] = field(default_factory=deque)  # after each upstream "+"
    login: bool = False  # LOGIN / AUTHENTICATE: authenticated once the upstream says OK
    login_user: str | None = None  # the user then (keys are looked up by this name)
    login_secret: bytes = field(default=b"", repr=False)  # for MailLogin, then forgotten
    sasl_plain: bool = False  # AUTHENTICATE PLAIN waiting for the initial response
    client_continues: bool = False  # the upstream's "+" went to the client
    select: bool = False  # SELECT / EXAMINE: note whether the mailbox is read-only
    throttled: bytes | None = None  # AUTHENTICATE refused here: our NO, sent when it ends
    plain_fetch: bool = False  # a FETCH of messages known to be plain: content passes through
    requests: tuple[Literal["encrypt", "decrypt"], ...] = ()  # STORE of a request keyword


@dataclass
class FetchEntry:
    """One untagged response of a content FETCH, in order: a response passed on as it is
    (`raw`), or a message to answer: from a cached view, or once it is opened (`request_id`,
    then `result`), or once its stored bytes arrive with the open pass (`waiting`)."""

    raw: bytes = b""
    other: bool = False  # raw is not a FETCH response (EXPUNGE, EXISTS...)
    number: int = 0
    uid: int | None = None
    request_id: int | None = None
    stored: bytes = b""
    items: dict[bytes, Value] = field(default_factory=dict)
    result: MessageOpened | None = None
    waiting: bool = False
    view: MessageView | None = None
    # the upstream's items as it wrote them (name to text), when the answer copies them
    # (`fetch_rewrite.answer_copying`: a first read whose sort-pass answer had the usual shape)
    copied: dict[bytes, bytes] | None = None

    @property
    def is_raw(self) -> bool:
        return self.request_id is None and not self.waiting and self.view is None


@dataclass
class FetchJob:
    """A client FETCH that asks for content, answered in up to three upstream passes.

    "sort": the client's set with UID and the classification fields (plus the client's own
    items when none of them sets \\Seen: then plain messages are answered right there);
    "plain": the client's own command for the plain messages not yet answered; "open": the
    whole stored bytes of the S/MIME messages the cache does not hold."""

    command: FetchCommand
    relays_items: bool  # the sort pass carries the client's items
    strip: frozenset[bytes]  # item names removed from a relayed sort-pass response
    listing: bool = False  # only items served as stored while the key is locked (is_listing)
    phase: Literal["sort", "plain", "open", "done"] = "sort"
    phase_tag: bytes | None = None
    entries: deque[FetchEntry] = field(default_factory=deque)
    held: int = 0  # non-FETCH responses queued: a relayed FETCH must not overtake them
    plain: list[int] = field(default_factory=list)  # numbers (or UIDs) for the plain pass
    to_open: dict[int, FetchEntry] = field(default_factory=dict)  # by UID, for the open pass
    done: bytes | None = None  # the sort pass's tagged response (the client's tag)
    done_ok: bool = False
    failure: bytes | None = None  # a later pass's NO/BAD, as the client's tagged response
    locked: bool = False
    unknown_cte: bool = False
    unviewable: bool = False  # a message whose views could not be computed (NO SERVERBUG)
    too_large: bool = False  # a message over the proxy's cap was left out (NO LIMIT)
    seen_uids: list[int] = field(default_factory=list)
    store_tag: bytes | None = None
    # Planned from what is known of each message (`imap.uid_map`): the sort pass asks for
    # no classification fields, and these views (by UID) answer their messages
    known: dict[int, MessageView] | None = None
    locks: int = 0  # the user's ended unlocks when they were found (`ViewCache.locks`)
    # how a view answers when the upstream's items are copied (`fetch_rewrite.copy_plan`)
    copy_plan: tuple[tuple[bytes, FetchItem | None], ...] | None = None
    # a planned pass's mark: the item that tells its answers from unsolicited FETCH data
    mark: bytes = b"INTERNALDATE"
    # how the entries with `copied` items are answered (made with the first of them)
    first_read_plan: tuple[tuple[bytes, FetchItem | None], ...] | None = None

    def pending_opens(self) -> tuple[int, int]:
        """Messages handed out to be opened and not yet back, and their stored bytes."""
        count = size = 0
        for entry in self.entries:
            if entry.request_id is not None and entry.result is None:
                count += 1
                size += len(entry.stored)
        return count, size


@dataclass
class Stream:
    """A command or response whose large literals are being streamed (`imap.streaming`):
    relayed as it comes, collected to be handled whole, or discarded (over the cap)."""

    mode: Literal["relay", "collect", "discard"]
    tag: bytes = b"*"
    collected: bytearray = field(default_factory=bytearray)


@dataclass
class SearchJob:
    """A SEARCH that may find encrypted mail, answered in passes (`imap.search_job`)."""

    command: SearchCommand
    tree: Node
    returns: tuple[str, ...] | None  # ESEARCH options asked, None for a plain SEARCH
    phase: Literal["upstream", "candidates", "leaves", "uids", "open", "done"] = "upstream"
    tag: bytes = b""  # the internal command in flight
    found: set[int] = field(default_factory=set)  # pass 1
    numbers: list[int] = field(default_factory=list)  # what the pass in flight returned
    candidates: list[int] = field(default_factory=list)
    leaf_list: list[Leaf] = field(default_factory=list)
    leaf_numbers: dict[Leaf, set[int]] = field(default_factory=dict)
    uids: dict[int, int] = field(default_factory=dict)  # number -> UID
    views: dict[int, MessageView] = field(default_factory=dict)  # number -> shown message
    opening: dict[int, int] = field(default_factory=dict)  # request id -> number
    done: bytes = b""  # the upstream's tagged answer to pass 1, with the client's tag

    def pending_opens(self) -> tuple[int, int]:
        """`FetchJob.pending_opens`; a search keeps no stored bytes of them."""
        return len(self.opening), 0


@dataclass
class AppendJob:
    """A client APPEND that may be sealed (`imap.stored_copies`): "list" asks the upstream
    what the folder is used for, "seal" waits for `CopySealed`."""

    tag: bytes
    raw: bytes = field(repr=False)  # the client's command, relayed as it is if not sealed
    mailbox: bytes  # as the client wrote it (atom or quoted string)
    head: bytes  # the command up to the literal: tag APPEND mailbox [flags] [date-time]
    message: bytes = field(repr=False)
    phase: Literal["list", "seal"] = "list"
    list_tag: bytes | None = None
    request_id: int = 0


@dataclass
class InternalCommand:
    """A command of the proxy's own (CAPABILITY at start)."""

    tag: bytes
    purpose: Literal["capability"]


InFlight = RelayedCommand | FetchJob | InternalCommand | SearchJob | AppendJob
"""What the session waits for (`ImapSession._inflight`)."""
