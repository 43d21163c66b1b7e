"""What a user sees before choosing a folder operation (issue 11, "from every place a user
is"): their folders with how many messages are encrypted, and the messages of a folder
found by subject or sender, read over IMAP as the user (the Secure Mail page and the JSON
API call these with the mail login of the request, never stored).

Counting is the mail store's work: EXAMINE gives the number of messages, one SEARCH the
encrypted ones (a Content-Type of `application/(x-)pkcs7-mime` that is not signed-data,
the rule `StoredMessages.candidates` applies per message). Only the outer header is read:
a message with header protection is found by what its stored header says (often "...").

May import: at_rest, config, aioimaplib, stdlib.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from typing import Final

from aioimaplib import aioimaplib

from smime_proxy.at_rest.convert import checked, quoted, search_uids
from smime_proxy.at_rest.operation import logged_in
from smime_proxy.config import UpstreamEndpoint

MAX_FOLDERS: Final = 200  # folders counted in one listing
MAX_FOUND: Final = 50  # messages shown for one search (the newest)
_LIST: Final = re.compile(rb'\(([^)]*)\) (?:"(?:[^"\\]|\\.)*"|NIL) (.+)$', re.IGNORECASE)
_EXISTS: Final = re.compile(rb"^(\d+) EXISTS$", re.IGNORECASE)
_UID: Final = re.compile(rb"UID (\d+)")
_ENCRYPTED_SEARCH: Final = ("HEADER", "Content-Type", "pkcs7-mime",
                            "NOT", "HEADER", "Content-Type", "signed-data")


@dataclass(frozen=True)
class FolderCount:
    mailbox: str
    total: int
    encrypted: int

    def to_json(self) -> dict[str, object]:
        return {"mailbox": self.mailbox, "total": self.total, "encrypted": self.encrypted,
                "plain": self.total - self.encrypted}


@dataclass(frozen=True)
class FoundMessage:
    uid: int
    subject: str
    sender: str
    date: str
    encrypted: bool

    def to_json(self) -> dict[str, object]:
        return {"uid": self.uid, "subject": self.subject, "from": self.sender,
                "date": self.date, "encrypted": self.encrypted}


def _unquoted(name: bytes) -> str:
    text = name.decode("utf-8", "replace").strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


async def _examine(client: aioimaplib.IMAP4ClientProtocol, mailbox: str) -> int:
    """EXAMINE (read-only: nothing is marked \\Seen); the number of messages."""
    response = checked(await client.execute(aioimaplib.Command(
        "EXAMINE", client.new_tag(), quoted(mailbox), loop=client.loop)), "EXAMINE")
    client.state = aioimaplib.SELECTED  # as aioimaplib's select() does: SEARCH may follow
    for line in response.lines:
        found = _EXISTS.match(bytes(line).strip())
        if found:
            return int(found[1])
    return 0


async def folder_counts(endpoint: UpstreamEndpoint, login: str, mail_password: str
                        ) -> list[FolderCount]:
    """Every selectable folder of the user (up to MAX_FOLDERS), with its counts."""
    async with logged_in(endpoint, login, mail_password) as client:
        response = checked(await client.simple_command("LIST", '""', '"*"'), "LIST")
        names: list[str] = []
        for line in response.lines[:-1]:
            found = _LIST.match(bytes(line))
            if found is None or b"\\noselect" in found[1].lower() or (
                    b"\\nonexistent" in found[1].lower()):
                continue
            names.append(_unquoted(found[2]))
        counts: list[FolderCount] = []
        for name in sorted(names, key=lambda n: (n.upper() != "INBOX", n))[:MAX_FOLDERS]:
            total = await _examine(client, name)
            encrypted = len(await search_uids(client, *_ENCRYPTED_SEARCH)) if total else 0
            counts.append(FolderCount(name, total, encrypted))
        return counts


async def find_messages(endpoint: UpstreamEndpoint, login: str, mail_password: str,
                        mailbox: str, subject: str = "", sender: str = ""
                        ) -> list[FoundMessage]:
    """The newest MAX_FOUND messages of `mailbox` whose stored Subject and From contain
    the given texts (empty: any)."""
    criteria: list[str] = []
    if subject:
        criteria += ["SUBJECT", quoted(subject)]
    if sender:
        criteria += ["FROM", quoted(sender)]
    utf8 = not (subject + sender).isascii()
    async with logged_in(endpoint, login, mail_password) as client:
        if not await _examine(client, mailbox):
            return []
        uids = sorted(await search_uids(client, *(criteria or ["ALL"]),
                                    charset="UTF-8" if utf8 else None))[-MAX_FOUND:]
        if not uids:
            return []
        encrypted = await search_uids(client, "UID", ",".join(map(str, uids)),
                                      *_ENCRYPTED_SEARCH)
        response = checked(await client.uid(
            "fetch", ",".join(map(str, uids)),
            "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT FROM DATE)])"), "FETCH")
        lines = [bytes(line) for line in response.lines]
        found: list[FoundMessage] = []
        parser = BytesHeaderParser(policy=default_policy)
        for index, line in enumerate(lines):
            uid = _UID.search(line) if b"FETCH (" in line else None
            if uid is None or index + 1 >= len(lines):
                continue
            header = parser.parsebytes(lines[index + 1])
            found.append(FoundMessage(int(uid[1]), str(header.get("Subject", "")),
                                      str(header.get("From", "")), str(header.get("Date", "")),
                                      int(uid[1]) in encrypted))
        return sorted(found, key=lambda m: -m.uid)
