"""A mail client asks for a stored message's other form by setting a keyword through the
proxy (issue 11, "from an unmodified mail client"), against the real Dovecot: the original
is expunged, the replacement appears without the keyword, with the same flags and date,
and reads as the original through the proxy; while the key is locked, an ALERT says so
and nothing changes."""

from __future__ import annotations

import imaplib
import itertools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from smime_proxy.at_rest.operations import FolderOperations
from smime_proxy.harness import Upstream
from smime_proxy.smime_forms import is_encrypted
from support.imap_proxy import LoopThread, imap_services, running_front, upstream_imap
from support.mailbox import Stored, stored_messages
from support.smtp_proxy import KeyWorld, key_world, people

_BOX = itertools.count()
DATE = '"02-Jan-2026 03:04:05 +0100"'
ORIGINAL = (b"From: Dave <dave@example.org>\r\nTo: carol@example.test\r\n"
            b"Subject: keep me safe\r\nMessage-ID: <kw-1@example.org>\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n\r\nthe stored body\r\n")


def _stored(up: Upstream, mailbox: str) -> list[Stored]:
    """(UID, flags, INTERNALDATE, message) of every message, straight from Dovecot."""
    return stored_messages(up, "carol", mailbox)


@contextmanager
def _proxy(up: Upstream, tmp_path: Path) -> Iterator[tuple[imaplib.IMAP4, KeyWorld, str]]:
    """carol (key unlocked) logged in through the proxy, a new folder with ORIGINAL selected."""
    world = key_world()
    world.give_key("carol", people().ids["carol"], unlock=True)
    services = imap_services(tmp_path, world, upstream_imap(up))
    mailbox = f"Keyword{next(_BOX)}"
    with imaplib.IMAP4(up.host, up.imap_port) as direct:
        direct.login("carol", up.users["carol"])
        direct.create(mailbox)
        direct.append(mailbox, "(\\Seen $Label1)", DATE, ORIGINAL)
    with LoopThread() as loop, running_front(
            loop, services, folder_operations=FolderOperations(services)) as front:
        imap = imaplib.IMAP4("127.0.0.1", front.port)
        try:
            imap.login("carol", up.users["carol"])
            imap.select(mailbox)
            yield imap, world, mailbox
        finally:
            imap.logout()


def _replaced(imap: imaplib.IMAP4, up: Upstream, mailbox: str, old_uid: int
              ) -> tuple[int, bytes, bytes, bytes]:
    """Wait (NOOP through the proxy) until `old_uid` is gone and one other message is there."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        imap.noop()
        stored = _stored(up, mailbox)
        if [uid for uid, *_ in stored] != [old_uid] and len(stored) == 1:
            return stored[0]
        time.sleep(0.2)
    raise AssertionError(f"not replaced: {[(u, f) for u, f, _d, _m in _stored(up, mailbox)]}")


def test_encrypt_then_decrypt_by_keyword(upstream: Upstream, tmp_path: Path) -> None:
    with _proxy(upstream, tmp_path) as (imap, _world, mailbox):
        [(uid, flags, date, _message)] = _stored(upstream, mailbox)
        # as Thunderbird sends a tag named "$SmimeEncrypt": its keys are lower case
        assert imap.uid("STORE", str(uid), "+FLAGS", "($smimeencrypt)")[0] == "OK"
        new_uid, new_flags, new_date, sealed = _replaced(imap, upstream, mailbox, uid)
        assert is_encrypted(sealed) and b"the stored body" not in sealed
        assert sorted(new_flags.split()) == sorted(flags.split()) == [b"$Label1", b"\\Seen"]
        assert new_date == date
        # the client's own view: the original expunged, the replacement reads as it was
        _, data = imap.uid("FETCH", "1:*", "(UID BODY.PEEK[TEXT])")
        assert data[0] is not None and isinstance(data[0], tuple)
        assert f"UID {new_uid} ".encode() in data[0][0]
        assert data[0][1] == b"the stored body\r\n"

        assert imap.uid("STORE", str(new_uid), "+FLAGS.SILENT", "($SmimeDecrypt)")[0] == "OK"
        _uid, back_flags, back_date, plain = _replaced(imap, upstream, mailbox, new_uid)
        assert plain == ORIGINAL
        assert sorted(back_flags.split()) == [b"$Label1", b"\\Seen"] and back_date == date


def test_a_keyword_on_a_message_already_in_that_form_is_taken_off(upstream: Upstream,
                                                                  tmp_path: Path) -> None:
    with _proxy(upstream, tmp_path) as (imap, _world, mailbox):
        [(uid, _flags, _date, _message)] = _stored(upstream, mailbox)
        assert imap.uid("STORE", str(uid), "FLAGS", "(\\Seen $SmimeDecrypt)")[0] == "OK"
        deadline = time.monotonic() + 30
        while b"$SmimeDecrypt" in _stored(upstream, mailbox)[0][1]:
            assert time.monotonic() < deadline, "the keyword stayed"
            time.sleep(0.2)
        [(same_uid, flags, _date, message)] = _stored(upstream, mailbox)
        assert (same_uid, flags, message) == (uid, b"\\Seen", ORIGINAL)


def test_while_locked_an_alert_and_nothing_changes(upstream: Upstream, tmp_path: Path) -> None:
    with _proxy(upstream, tmp_path) as (imap, world, mailbox):
        world.secure_mail.lock("carol")
        [(uid, _flags, _date, _message)] = _stored(upstream, mailbox)
        typ, _data = imap.uid("STORE", str(uid), "+FLAGS", "($SmimeEncrypt)")
        assert typ == "OK"
        alerts = [line for line in imap.untagged_responses.pop("OK", [])
                  if b"[ALERT]" in line]
        assert alerts and b"Secure Mail is locked" in alerts[0]
        # only that STORE says so: no other command of the session does
        imap.noop()
        imap.uid("STORE", str(uid), "+FLAGS", "($Label2)")
        imap.select(mailbox)
        assert not [line for line in imap.untagged_responses.get("OK", [])
                    if b"[ALERT]" in line]
        time.sleep(1)
        [(same_uid, flags, _date, message)] = _stored(upstream, mailbox)
        assert same_uid == uid and message == ORIGINAL and b"$SmimeEncrypt" in flags
