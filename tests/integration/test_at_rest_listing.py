"""Folders with their counts, and messages found by subject or sender, read from the real
Dovecot as the user (at_rest.listing)."""

from __future__ import annotations

import imaplib
import itertools

from smime_proxy.at_rest.listing import find_messages, folder_counts
from smime_proxy.config import UpstreamEndpoint
from smime_proxy.harness import Upstream
from smime_proxy.smime import seal_stored_copy
from support.smtp_proxy import people

_BOX = itertools.count()


def _message(subject: str, sender: str = "Dave <dave@example.org>") -> bytes:
    return (f"From: {sender}\r\nTo: carol@example.test\r\nSubject: {subject}\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nbody\r\n"
            ).encode()


def _endpoint(up: Upstream) -> UpstreamEndpoint:
    return UpstreamEndpoint(up.host, up.imap_port, "starttls", True, up.ca_file)


def _folder(up: Upstream, messages: list[bytes]) -> str:
    mailbox = f"Listing {next(_BOX)}"  # a space: the name must be quoted both ways
    with imaplib.IMAP4(up.host, up.imap_port) as imap:
        imap.login("carol", up.users["carol"])
        imap.create(f'"{mailbox}"')
        for message in messages:
            imap.append(f'"{mailbox}"', "", None, message)
    return mailbox


async def test_folders_are_counted(upstream: Upstream) -> None:
    carol = people().ids["carol"]
    sealed = seal_stored_copy(_message("sealed one"), carol.cert)
    signed_only = (b"From: dave@example.org\r\nSubject: opaque signed\r\nMIME-Version: 1.0\r\n"
                   b"Content-Type: application/pkcs7-mime; smime-type=signed-data\r\n\r\nMIIB\r\n")
    mailbox = _folder(upstream, [_message("a"), sealed, _message("b"), signed_only])
    counts = {c.mailbox: c for c in await folder_counts(_endpoint(upstream), "carol",
                                                         upstream.users["carol"])}
    assert counts[mailbox].to_json() == {"mailbox": mailbox, "total": 4, "encrypted": 1,
                                         "plain": 3}
    assert "INBOX" in counts


async def test_messages_are_found_by_subject_and_sender(upstream: Upstream) -> None:
    carol = people().ids["carol"]
    mailbox = _folder(upstream, [
        _message("Quarterly report"), _message("lunch", "Eve <eve@example.org>"),
        seal_stored_copy(_message("Quarterly numbers"), carol.cert),
        _message("=?utf-8?q?Gr=C3=BC=C3=9Fe?=")])
    endpoint, password = _endpoint(upstream), upstream.users["carol"]
    found = await find_messages(endpoint, "carol", password, mailbox, subject="quarterly")
    assert [(m.subject, m.encrypted) for m in found] == [
        ("Quarterly numbers", True), ("Quarterly report", False)]
    assert found[0].uid > found[1].uid
    by_sender = await find_messages(endpoint, "carol", password, mailbox, sender="eve@")
    assert [m.subject for m in by_sender] == ["lunch"]
    assert by_sender[0].sender == "Eve <eve@example.org>"
    assert [m.subject for m in await find_messages(endpoint, "carol", password, mailbox,
                                                   subject="grüße")] == ["Grüße"]
    assert len(await find_messages(endpoint, "carol", password, mailbox)) == 4
