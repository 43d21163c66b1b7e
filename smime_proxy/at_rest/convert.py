"""Replacing stored messages by their other form over IMAP, as the user, resumably: "encrypt
these plain messages" or "decrypt these encrypted ones", one message or a whole folder.

Per message, on the user's own IMAP connection to the mail store (never through the
proxy): FETCH it (flags, INTERNALDATE, the whole message), build the other form
(`at_rest.forms`), APPEND that with the same flags and INTERNALDATE plus the keyword
`$SmimeReplacement`, read its UID from `APPENDUID` (RFC 4315 UIDPLUS, required), mark the
original `\\Deleted` and `UID EXPUNGE` it alone, then take the keyword off the replacement.

Messages go in rounds of `BATCH`: one FETCH, the APPENDs, one STORE and one UID EXPUNGE
of the originals, one STORE taking the keyword off. A journal (JSON lines, flushed to disk
before each step that changes the mailbox) makes a crash at any point harmless: an
original stays until its replacement exists, and a rerun finishes what was begun instead of
appending twice. After a crash among the APPENDs of a round, the messages with the keyword
that no journal line claims are, in UID order, the replacements of the round's first
originals (APPENDs go in journal order and UIDs only grow). At most one copy of either form
of a message exists at any moment.

May import: at_rest.keywords, errors, aioimaplib, stdlib.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aioimaplib import aioimaplib

from smime_proxy.at_rest.keywords import MARK, REQUEST_KEYWORDS, Action
from smime_proxy.errors import SmimeProxyError

_NOT_COPIED = {"\\recent", *(k.lower() for k in REQUEST_KEYWORDS.values())}
_FETCH = re.compile(rb"UID (\d+)|FLAGS \(([^)]*)\)|INTERNALDATE (\"[^\"]*\")")
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")
_APPENDUID_SET = re.compile(r"\[APPENDUID \d+ ([\d:,]+)\]", re.IGNORECASE)
_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]", re.IGNORECASE)
_SMIME_TYPES = (b"application/pkcs7-mime", b"application/x-pkcs7-mime")
BATCH = 50  # messages per round
CANDIDATE_SLICE = 200  # messages per FETCH when looking for candidates
ROUND_BYTES = 16 * 1024 * 1024  # and about this much of them (held twice: read and built)


class StoreOperationFailed(SmimeProxyError):
    """The mail store refused or broke a step (the message says which; no content)."""


@dataclass
class Progress:
    total: int = 0
    done: int = 0
    skipped: int = 0  # not convertible (the reason is logged per message)
    cancelled: bool = False
    reasons: list[str] = field(default_factory=list)


class Journal:
    """What was begun and finished, per original UID, for one (mailbox, UIDVALIDITY)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.appending: list[int] = []  # begun, in APPEND order; not known to be appended
        self.appended: dict[int, int] = {}  # original -> replacement, not finished
        self.done: set[int] = set()
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                entry = json.loads(line)
                self._apply(entry["step"], [int(u) for u in entry["uids"]],
                            {int(k): int(v) for k, v in (entry.get("new") or {}).items()})

    def _apply(self, step: str, uids: list[int], new: dict[int, int]) -> None:
        if step == "appending":
            self.appending = list(uids)
        elif step == "appended":
            self.appending = [u for u in self.appending if u not in new]
            self.appended.update(new)
        elif step == "done":
            self.appending = [u for u in self.appending if u not in uids]
            for uid in uids:
                self.appended.pop(uid, None)
            self.done.update(uids)

    def record(self, step: str, uids: list[int], new: dict[int, int] | None = None) -> None:
        """Append one line and flush it to disk before the caller goes on."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps({"step": step, "uids": uids,
                                  "new": {str(k): v for k, v in (new or {}).items()}}) + "\n")
            out.flush()
            os.fsync(out.fileno())
        self._apply(step, uids, new or {})


class StoredMessages:
    """One selected mailbox on a logged-in aioimaplib client."""

    def __init__(self, client: aioimaplib.IMAP4ClientProtocol, mailbox: str) -> None:
        self.client = client
        self.mailbox = mailbox
        self.quoted = quoted(mailbox)
        self.sizes: dict[int, int] = {}  # RFC822.SIZE by UID, as `candidates` saw them

    async def select(self) -> int:
        """SELECT the mailbox; its UIDVALIDITY. (The capabilities are asked again first:
        a server names UIDPLUS only once logged in.)"""
        await self.client.capability()
        if "UIDPLUS" not in {c.upper() for c in self.client.capabilities}:
            raise StoreOperationFailed("the mail store lacks UIDPLUS (RFC 4315)")
        response = checked(await self.client.select(self.quoted), "SELECT")
        for line in response.lines:
            found = _UIDVALIDITY.search(bytes(line))
            if found:
                return int(found[1])
        raise StoreOperationFailed("SELECT: no UIDVALIDITY")

    async def candidates(self, action: Action, among: set[int] | None = None) -> list[int]:
        """UIDs of the messages (all, or those of `among`) in the form the action starts
        from (not our own replacements in flight). Asked in slices: aioimaplib handles the
        lines of one response recursively, and a FETCH 1:* of a few thousand messages
        overflows it."""
        everything = sorted(await self._search("ALL") if among is None else among)
        found: list[int] = []
        for start in range(0, len(everything), CANDIDATE_SLICE):
            response = checked(await self.client.uid(
                "fetch", _uid_set(everything[start:start + CANDIDATE_SLICE]),
                "(UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (CONTENT-TYPE)])"), "FETCH")
            lines = [bytes(line) for line in response.lines]
            for index, line in enumerate(lines):
                if b"FETCH (" not in line:
                    continue
                uid, flags, _date = _fetch_items(line)
                if uid is None or MARK.lower() in flags.lower():
                    continue
                size = _SIZE.search(line)
                self.sizes[uid] = int(size[1]) if size else 0
                header = lines[index + 1].lower() if index + 1 < len(lines) else b""
                encrypted = any(t in header for t in _SMIME_TYPES) and (
                    b"enveloped" in header or b"smime-type" not in header)
                if (action == "decrypt") == encrypted:
                    found.append(uid)
        return found

    async def fetch(self, uids: list[int]) -> dict[int, tuple[bytes, list[str], str]]:
        """Per UID still there: (the message, its flags, its INTERNALDATE, quoted)."""
        response = checked(await self.client.uid(
            "fetch", _uid_set(uids), "(UID FLAGS INTERNALDATE BODY.PEEK[])"), "FETCH")
        found: dict[int, tuple[bytes, list[str], str]] = {}
        lines = response.lines
        for index, line in enumerate(lines):
            if b"FETCH (" in bytes(line) and index + 1 < len(lines):
                uid, flags, date = _fetch_items(bytes(line))
                if uid is not None:
                    keep = [f for f in flags.split() if f.lower() not in _NOT_COPIED]
                    found[uid] = (bytes(lines[index + 1]), keep, date or "")
        return found

    async def append_many(self, items: list[tuple[bytes, list[str], str]]) -> list[int]:
        """APPEND every (message, flags, date) with the keyword; their UIDs, in order. One
        MULTIAPPEND command (RFC 3502: all or none, one commit on the server) when the
        store offers it with LITERAL+ (RFC 7888), else one APPEND each."""
        capabilities = {c.upper() for c in self.client.capabilities}
        if {"MULTIAPPEND", "LITERAL+"} <= capabilities:
            return await self._append(items) if items else []
        return [(await self._append([item]))[0] for item in items]

    async def append(self, message: bytes, flags: list[str], date: str) -> int:
        return (await self._append([(message, flags, date)]))[0]

    async def _append(self, items: list[tuple[bytes, list[str], str]]) -> list[int]:
        """One APPEND command for `items` (more than one: MULTIAPPEND with LITERAL+).

        As aioimaplib's append(), but with each date exactly as FETCH gave it (its own
        conversion moves it to UTC: the same moment, another zone than the original's).
        The command line ends with the first literal's size; aioimaplib writes its
        `literal_data` on the server's "+": the first message, then each further message
        as ` flags date {size+}` CRLF and the message (non-synchronizing)."""
        (first, first_flags, first_date), *rest = items
        args = [self.quoted, _flag_list(first_flags), *([first_date] if first_date else []),
                f"{{{len(first)}}}"]
        tail: list[bytes] = [first]
        for message, flags, date in rest:
            head = " ".join([_flag_list(flags), *([date] if date else [])])
            tail.append(f" {head} {{{len(message)}+}}\r\n".encode("ascii"))
            tail.append(message)
        self.client.literal_data = b"".join(tail)
        del tail
        response = checked(await self.client.execute(aioimaplib.Command(
            "APPEND", self.client.new_tag(), *args, loop=self.client.loop)), "APPEND")
        for line in response.lines:
            found = _APPENDUID_SET.search(bytes(line).decode("ascii", "replace"))
            if found:
                uids = _expand(found[1])
                if len(uids) == len(items):
                    return uids
        raise StoreOperationFailed("APPEND: no APPENDUID for every message (the store "
                                   "lacks UIDPLUS?)")

    async def expunge(self, uids: list[int]) -> None:
        """Mark `uids` \\Deleted and expunge exactly them (UID EXPUNGE)."""
        if uids:
            checked(await self.client.uid("store", _uid_set(uids), "+FLAGS.SILENT",
                                                 "(\\Deleted)"), "STORE")
            checked(await self.client.uid("expunge", _uid_set(uids)), "EXPUNGE")

    async def unmark(self, uids: list[int]) -> None:
        if uids:
            checked(await self.client.uid("store", _uid_set(uids), "-FLAGS.SILENT",
                                                 f"({MARK})"), "STORE")

    async def marked(self) -> set[int]:
        return await self._search("KEYWORD", MARK)

    async def requested(self, action: Action) -> set[int]:
        """UIDs a mail client asked to convert by setting the action's keyword."""
        return await self._search("KEYWORD", REQUEST_KEYWORDS[action])

    async def clear_request(self, action: Action, uids: set[int]) -> None:
        if uids:
            checked(await self.client.uid(
                "store", _uid_set(sorted(uids)), "-FLAGS.SILENT",
                f"({REQUEST_KEYWORDS[action]})"), "STORE")

    async def _search(self, *criteria: str) -> set[int]:
        return await search_uids(self.client, *criteria)


def quoted(value: str) -> str:
    """An IMAP quoted string (RFC 9051 4.3)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def checked(response: aioimaplib.Response, step: str) -> aioimaplib.Response:
    """`response` if the store answered OK; `StoreOperationFailed` naming `step` if not."""
    if response.result != "OK":
        raise StoreOperationFailed(f"{step}: the mail store answered {response.result}")
    return response


async def search_uids(client: aioimaplib.IMAP4ClientProtocol, *criteria: str,
                      charset: str | None = None) -> set[int]:
    """UID SEARCH on the selected mailbox."""
    response = checked(await client.search(*criteria, charset=charset, by_uid=True),
                       "SEARCH")
    found: set[int] = set()
    for line in response.lines[:-1]:  # aioimaplib gives "* SEARCH 1 2" as b"1 2"
        words = bytes(line).split()
        if words and words[0].upper() == b"SEARCH":
            words = words[1:]
        if all(word.isdigit() for word in words):
            found.update(int(word) for word in words)
    return found


def _flag_list(flags: list[str]) -> str:
    return "(" + " ".join([*flags, MARK]) + ")"


def _expand(uid_set: str) -> list[int]:
    """An APPENDUID uid-set ("5:7,9") in order (RFC 4315 3)."""
    uids: list[int] = []
    for part in uid_set.split(","):
        low, _, high = part.partition(":")
        first, last = int(low), int(high or low)
        step = 1 if last >= first else -1
        uids.extend(range(first, last + step, step))
    return uids


def _uid_set(uids: list[int]) -> str:
    return ",".join(str(uid) for uid in uids)


def _fetch_items(line: bytes) -> tuple[int | None, str, str | None]:
    uid: int | None = None
    flags = ""
    date: str | None = None
    for match in _FETCH.finditer(line):
        if match[1]:
            uid = int(match[1])
        elif match[2] is not None:
            flags = match[2].decode("utf-8", "replace")
        elif match[3]:
            date = match[3].decode("ascii", "replace")
    return uid, flags, date


Build = Callable[[bytes], bytes]  # the other form; raises SmimeProxyError to skip a message
Step = Callable[[str], None]  # called at each step (tests stop the operation there)


async def convert(messages: StoredMessages, journal: Journal, uids: Iterable[int],
                  build: Build, *, progress: Callable[[Progress], None] | None = None,
                  step: Step | None = None, batch: int = BATCH,
                  cancelled: Callable[[], bool] | None = None) -> Progress:
    """Replace each of `uids` by `build(message)`, `batch` messages per round (one FETCH,
    their APPENDs, one STORE and one UID EXPUNGE, three journal lines); first finish what
    the journal says was begun. Messages `build` refuses are left as they are (skipped).
    `cancelled` is asked between rounds: a cancelled operation stops there, whole."""
    note = step or (lambda _name: None)
    await _finish_begun(messages, journal)
    todo = [uid for uid in uids if uid not in journal.done]
    state = Progress(total=len(todo))
    for part in _rounds(todo, messages.sizes, batch):
        if cancelled is not None and cancelled():
            state.cancelled = True
            break
        fetched = await messages.fetch(part)
        note("fetched")
        ready: list[tuple[int, bytes, list[str], str]] = []
        for uid in part:
            if uid not in fetched:
                state.skipped += 1  # expunged meanwhile by another client
                continue
            message, flags, date = fetched.pop(uid)
            try:
                ready.append((uid, build(message), flags, date))
            except SmimeProxyError as exc:
                state.skipped += 1
                state.reasons.append(f"{uid}: {type(exc).__name__}")
        del fetched
        journal.record("appending", [uid for uid, *_rest in ready])  # in APPEND order
        note("journal-appending")
        order = [uid for uid, *_rest in ready]
        new = await messages.append_many([(data, flags, date) for _u, data, flags, date in ready])
        del ready  # the replacements are on the server now
        note("appended")
        appended = dict(zip(order, new, strict=True))
        journal.record("appended", order, appended)
        note("journal-appended")
        await _finish(messages, journal, appended, note)
        journal.record("done", [uid for uid in part if uid not in appended])
        state.done += len(appended)
        if progress is not None:
            progress(state)
    return state


def _rounds(uids: list[int], sizes: dict[int, int], batch: int) -> Iterator[list[int]]:
    """`uids` in rounds of at most `batch` messages and about ROUND_BYTES (a larger message
    goes alone)."""
    part: list[int] = []
    total = 0
    for uid in uids:
        size = sizes.get(uid, 0)
        if part and (len(part) >= batch or total + size > ROUND_BYTES):
            yield part
            part, total = [], 0
        part.append(uid)
        total += size
    if part:
        yield part


async def _finish_begun(messages: StoredMessages, journal: Journal) -> None:
    if journal.appending:
        claimed = set(journal.appended.values())
        orphans = sorted((await messages.marked()) - claimed)
        if len(orphans) > len(journal.appending):
            raise StoreOperationFailed(f"{len(orphans)} unclaimed {MARK} messages: "
                                       "remove the keyword from those that are not "
                                       "replacements and run again")
        # the APPENDs went in journal order and UIDs only grow: the first k were appended
        found = dict(zip(journal.appending, orphans, strict=False))
        journal.record("appended", list(found), found)
        journal.appending = []  # the others were not: they are done again from scratch
    await _finish(messages, journal, dict(journal.appended), lambda _name: None)


async def _finish(messages: StoredMessages, journal: Journal, appended: dict[int, int],
                  note: Step) -> None:
    if not appended:
        return
    await messages.expunge(list(appended))
    note("expunged")
    await messages.unmark(list(appended.values()))
    note("unmarked")
    journal.record("done", list(appended))
