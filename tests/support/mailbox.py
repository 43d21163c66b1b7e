"""Reading what arrived, straight from the real Dovecot (not through the proxy)."""

from __future__ import annotations

import imaplib
import re
import time
from typing import NamedTuple

from smime_proxy.harness import Upstream


class Stored(NamedTuple):
    uid: int
    flags: bytes  # as FETCH FLAGS gives them, without the parentheses
    date: bytes  # INTERNALDATE, quoted
    message: bytes


def stored_messages(upstream: Upstream, user: str, mailbox: str) -> list[Stored]:
    """Every message of `user`'s `mailbox` with its UID, flags and INTERNALDATE, in order
    (read-only: nothing is marked \\Seen)."""
    with imaplib.IMAP4(upstream.host, upstream.imap_port) as imap:
        imap.login(user, upstream.users[user])
        imap.select(f'"{mailbox}"', readonly=True)
        _, data = imap.uid("FETCH", "1:*", "(UID FLAGS INTERNALDATE BODY.PEEK[])")
    found = []
    for item in data:
        if isinstance(item, tuple):
            head = item[0]
            uid = re.search(rb"UID (\d+)", head)
            flags = re.search(rb"FLAGS \(([^)]*)\)", head)
            date = re.search(rb"INTERNALDATE (\"[^\"]*\")", head)
            assert uid is not None and flags is not None and date is not None
            found.append(Stored(int(uid[1]), flags[1], date[1], item[1]))
    return found


def fetch(upstream: Upstream, user: str, token: str, mailbox: str = "INBOX") -> list[bytes]:
    """Every message of `user`'s `mailbox` whose Subject contains `token` (no spaces)."""
    with imaplib.IMAP4(upstream.host, upstream.imap_port) as imap:
        imap.login(user, upstream.users[user])
        status, _ = imap.select(mailbox, readonly=True)
        if status != "OK":
            return []
        _, data = imap.search(None, "SUBJECT", f'"{token}"')
        found: list[bytes] = []
        for number in (data[0] or b"").split():
            _, parts = imap.fetch(number.decode(), "(BODY.PEEK[])")
            for part in parts:
                if isinstance(part, tuple):
                    found.append(part[1])
        return found


def wait_for(upstream: Upstream, user: str, token: str, count: int = 1,
             timeout: float = 30.0) -> list[bytes]:
    """Poll until `count` messages with `token` are in `user`'s INBOX (then settle briefly
    and return all of them, so an unexpected extra copy is seen too)."""
    deadline = time.monotonic() + timeout
    while True:
        found = fetch(upstream, user, token)
        if len(found) >= count:
            time.sleep(0.3)
            return fetch(upstream, user, token)
        if time.monotonic() > deadline:
            return found
        time.sleep(0.1)
