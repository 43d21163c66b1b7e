"""Replacing stored messages by their other form over IMAP, as the user, resumably: "encrypt
these plain messages" or "decrypt these encrypted ones", one message or a whole folder.

Per message, on the user's own IMAP connection to the mail store (never through the
proxy): FETCH it (flags, INTERNALDATE, the whole message), build the other form
(`at_rest.forms`), APPEND that with the same flags and INTERNALDATE plus the keyword
`$SmimeReplacement`, read its UID from `APPENDUID` (RFC 4315 UIDPLUS, required), mark the
original `\\Deleted` and `UID EXPUNGE` it alone, then take the keyword off the replacement.

A journal (JSON lines, flushed to disk before each step that changes the mailbox) makes a
crash at any point harmless: the original stays until its replacement exists, and a rerun
finishes what was begun instead of appending twice. After a crash between APPEND and the
journal line saying so, the one message with the keyword that no journal line claims is
that replacement (messages are replaced one at a time). At most one copy of either form of
a message exists at any moment.

May import: errors, aioimaplib, stdlib.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from aioimaplib import aioimaplib

from smime_proxy.errors import SmimeProxyError

Action = Literal["encrypt", "decrypt"]
MARK = "$SmimeReplacement"
_FETCH = re.compile(rb"UID (\d+)|FLAGS \(([^)]*)\)|INTERNALDATE (\"[^\"]*\")")
_APPENDUID = re.compile(r"\[APPENDUID (\d+) (\d+)\]", re.IGNORECASE)
_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]", re.IGNORECASE)
_SMIME_TYPES = (b"application/pkcs7-mime", b"application/x-pkcs7-mime")


class StoreOperationFailed(SmimeProxyError):
    """The mail store refused or broke a step (the message says which; no content)."""


@dataclass
class Progress:
    total: int = 0
    done: int = 0
    skipped: int = 0  # not convertible (the reason is logged per message)
    reasons: list[str] = field(default_factory=list)


class Journal:
    """What was begun and finished, per original UID, for one (mailbox, UIDVALIDITY)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.appending: int | None = None  # begun, APPEND not known to have happened
        self.appended: dict[int, int] = {}  # original -> replacement, not finished
        self.done: set[int] = set()
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                entry = json.loads(line)
                self._apply(entry["step"], int(entry["uid"]), entry.get("new"))

    def _apply(self, step: str, uid: int, new: int | None) -> None:
        if step == "appending":
            self.appending = uid
        elif step == "appended" and new is not None:
            self.appending = None
            self.appended[uid] = int(new)
        elif step == "done":
            self.appending = None
            self.appended.pop(uid, None)
            self.done.add(uid)

    def record(self, step: str, uid: int, new: int | None = None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps({"step": step, "uid": uid, "new": new}) + "\n")
            out.flush()
            os.fsync(out.fileno())
        self._apply(step, uid, new)


class StoredMessages:
    """One selected mailbox on a logged-in aioimaplib client."""

    def __init__(self, client: aioimaplib.IMAP4ClientProtocol, mailbox: str) -> None:
        self.client = client
        self.mailbox = mailbox
        self.quoted = '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'

    async def _ok(self, response: aioimaplib.Response, step: str) -> aioimaplib.Response:
        if response.result != "OK":
            raise StoreOperationFailed(f"{step}: the mail store answered {response.result}")
        return response

    async def select(self) -> int:
        """SELECT the mailbox; its UIDVALIDITY. (The capabilities are asked again first:
        a server names UIDPLUS only once logged in.)"""
        await self.client.capability()
        if "UIDPLUS" not in {c.upper() for c in self.client.capabilities}:
            raise StoreOperationFailed("the mail store lacks UIDPLUS (RFC 4315)")
        response = await self._ok(await self.client.select(self.quoted), "SELECT")
        for line in response.lines:
            found = _UIDVALIDITY.search(bytes(line))
            if found:
                return int(found[1])
        raise StoreOperationFailed("SELECT: no UIDVALIDITY")

    async def candidates(self, action: Action) -> list[int]:
        """UIDs of the messages in the form the action starts from (not our own
        replacements in flight)."""
        response = await self._ok(await self.client.uid(
            "fetch", "1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (CONTENT-TYPE)])"),
            "FETCH")
        found: list[int] = []
        lines = [bytes(line) for line in response.lines]
        for index, line in enumerate(lines):
            if b"FETCH (" not in line:
                continue
            uid, flags, _date = _fetch_items(line)
            if uid is None or MARK.lower() in flags.lower():
                continue
            header = lines[index + 1].lower() if index + 1 < len(lines) else b""
            encrypted = any(t in header for t in _SMIME_TYPES) and (
                b"enveloped" in header or b"smime-type" not in header)
            if (action == "decrypt") == encrypted:
                found.append(uid)
        return found

    async def fetch(self, uid: int) -> tuple[bytes, list[str], str]:
        """(the message, its flags, its INTERNALDATE as a quoted IMAP date)."""
        response = await self._ok(await self.client.uid(
            "fetch", str(uid), "(UID FLAGS INTERNALDATE BODY.PEEK[])"), "FETCH")
        lines = response.lines
        for index, line in enumerate(lines):
            if b"FETCH (" in bytes(line) and index + 1 < len(lines):
                _uid, flags, date = _fetch_items(bytes(line))
                keep = [f for f in flags.split() if f.lower() != "\\recent"]
                return bytes(lines[index + 1]), keep, date or ""
        raise StoreOperationFailed(f"FETCH: message {uid} is gone")

    async def append(self, message: bytes, flags: list[str], date: str) -> int:
        # as aioimaplib's append(), but with the date exactly as FETCH gave it (its own
        # conversion moves it to UTC: the same moment, another zone than the original's)
        args = [self.quoted, "(" + " ".join([*flags, MARK]) + ")"]
        if date:
            args.append(date)
        args.append(f"{{{len(message)}}}")
        self.client.literal_data = message
        response = await self._ok(await self.client.execute(aioimaplib.Command(
            "APPEND", self.client.new_tag(), *args, loop=self.client.loop)), "APPEND")
        for line in response.lines:
            found = _APPENDUID.search(bytes(line).decode("ascii", "replace"))
            if found:
                return int(found[2])
        raise StoreOperationFailed("APPEND: no APPENDUID (the store lacks UIDPLUS)")

    async def expunge(self, uid: int) -> None:
        await self._ok(await self.client.uid("store", str(uid), "+FLAGS.SILENT", "(\\Deleted)"),
                       "STORE")
        await self._ok(await self.client.uid("expunge", str(uid)), "EXPUNGE")

    async def unmark(self, uid: int) -> None:
        await self._ok(await self.client.uid("store", str(uid), "-FLAGS.SILENT", f"({MARK})"),
                       "STORE")

    async def marked(self) -> set[int]:
        response = await self._ok(await self.client.search("KEYWORD", MARK, charset=None,
                                                           by_uid=True), "SEARCH")
        found: set[int] = set()
        for line in response.lines[:-1]:  # aioimaplib gives "* SEARCH 1 2" as b"1 2"
            words = bytes(line).split()
            if words and words[0].upper() == b"SEARCH":
                words = words[1:]
            if all(word.isdigit() for word in words):
                found.update(int(word) for word in words)
        return found


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
                  step: Step | None = None) -> Progress:
    """Replace each of `uids` by `build(message)`; first finish what the journal says was
    begun. Messages `build` refuses are left as they are (counted as skipped)."""
    note = step or (lambda _name: None)
    await _finish_begun(messages, journal)
    todo = [uid for uid in uids if uid not in journal.done]
    state = Progress(total=len(todo))
    for uid in todo:
        try:
            message, flags, date = await messages.fetch(uid)
        except StoreOperationFailed:
            state.skipped += 1  # expunged meanwhile by another client
            continue
        note("fetched")
        try:
            replacement = build(message)
        except SmimeProxyError as exc:
            state.skipped += 1
            state.reasons.append(f"{uid}: {type(exc).__name__}")
            journal.record("done", uid)
            continue
        journal.record("appending", uid)
        note("journal-appending")
        new = await messages.append(replacement, flags, date)
        note("appended")
        journal.record("appended", uid, new)
        note("journal-appended")
        await _finish(messages, journal, uid, new, note)
        state.done += 1
        if progress is not None:
            progress(state)
    return state


async def _finish_begun(messages: StoredMessages, journal: Journal) -> None:
    if journal.appending is not None:
        claimed = set(journal.appended.values())
        orphans = sorted((await messages.marked()) - claimed)
        if len(orphans) == 1:  # the APPEND happened before the crash
            journal.record("appended", journal.appending, orphans[0])
        elif not orphans:
            journal.appending = None  # it did not: the message is done again from scratch
        else:
            raise StoreOperationFailed(f"{len(orphans)} unclaimed {MARK} messages: "
                                       "remove the keyword from those that are not "
                                       "replacements and run again")
    for uid, new in list(journal.appended.items()):
        await _finish(messages, journal, uid, new, lambda _name: None)


async def _finish(messages: StoredMessages, journal: Journal, uid: int, new: int,
                  note: Step) -> None:
    await messages.expunge(uid)
    note("expunged")
    await messages.unmark(new)
    note("unmarked")
    journal.record("done", uid)
