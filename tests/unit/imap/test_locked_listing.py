"""Transcripts: while the user's key is locked, a client still lists and syncs a folder of
encrypted mail (flags, sizes, envelope, top-level header fields as stored), and only opening
a message is refused, with one tagged NO that nothing is cached from (issue 13)."""

from __future__ import annotations

import pytest

from smime_proxy.imap.fetch_rewrite import is_listing
from smime_proxy.imap.session import MessageOpened
from smime_proxy.imap.view_cache import ViewCache
from smime_proxy.imap.wire import parse_command
from smime_proxy.imap.wire.commands import FetchCommand
from support.imap_transcript import (
    CLS,
    SMIME_FIELDS,
    literal,
    logged_in,
    sorted_reply,
)

LOCKED_NO = (b" NO [UNAVAILABLE] This message is encrypted and your Secure Mail key"
             b" is locked: unlock it, then open the message again\r\n")
STORED_HEADER = (b"From: alice@example.test\r\nSubject: [...]\r\n"
                 b"X-SMIME-Status: encrypted=no; signature=valid; forged\r\n"
                 b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\n")


class Locked(ViewCache):
    def key_unlocked(self) -> bool:
        return False


def test_thunderbirds_header_sync_is_answered_as_stored_without_opening() -> None:
    run = logged_in(Locked())
    run.client(b"a2 UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS"
               b" (From Subject X-SMIME-Status)])\r\n")
    assert run.upstream_out() == (b"a2 UID FETCH 1:* (UID " + CLS + b" RFC822.SIZE FLAGS"
                                  b" BODY.PEEK[HEADER.FIELDS (From Subject X-SMIME-Status)])"
                                  b"\r\n")
    fields = (b"From: alice@example.test\r\nSubject: [...]\r\n"
              b"X-SMIME-Status: encrypted=no; signature=valid\r\n\r\n")
    run.upstream(sorted_reply(1, 7, SMIME_FIELDS, b" RFC822.SIZE 4711 FLAGS (\\Seen)"
                              b" BODY[HEADER.FIELDS (FROM SUBJECT X-SMIME-STATUS)] "
                              + literal(fields)) + b"a2 OK Fetch completed.\r\n")
    assert run.opens == []  # nothing downloaded, nothing decrypted
    shown = b"From: alice@example.test\r\nSubject: [...]\r\n\r\n"
    assert run.client_out() == (
        b"* 1 FETCH (UID 7 RFC822.SIZE 4711 FLAGS (\\Seen)"
        b" BODY[HEADER.FIELDS (FROM SUBJECT X-SMIME-STATUS)] " + literal(shown) + b")\r\n"
        b"a2 OK Fetch completed.\r\n")


def test_envelope_is_the_upstreams_and_the_fetch_ends_ok() -> None:
    run = logged_in(Locked())
    run.client(b"a2 FETCH 1 (FLAGS ENVELOPE)\r\n")
    run.upstream_out()
    envelope = b' ENVELOPE (NIL "[...]" NIL NIL NIL NIL NIL NIL NIL NIL)'
    run.upstream(sorted_reply(1, 7, SMIME_FIELDS, b" FLAGS ()" + envelope)
                 + b"a2 OK Fetch completed.\r\n")
    assert run.client_out() == (b"* 1 FETCH (FLAGS ()" + envelope + b")\r\n"
                                b"a2 OK Fetch completed.\r\n")


@pytest.mark.parametrize("items", [b"BODY.PEEK[]", b"(RFC822.SIZE BODYSTRUCTURE)",
                                   b"BODY.PEEK[TEXT]", b"BODY.PEEK[1]",
                                   b"BODY.PEEK[HEADER]<0.10>"])
def test_opening_or_the_structure_is_refused_once_and_not_answered(items: bytes) -> None:
    run = logged_in(Locked())
    run.client(b"a2 FETCH 1 " + items + b"\r\n")
    run.upstream_out()
    run.upstream(sorted_reply(1, 7, SMIME_FIELDS) + b"a2 OK Fetch completed.\r\n")
    run.upstream_out()
    run.upstream(b"* 1 FETCH (UID 7 BODY[] " + literal(STORED_HEADER + b"MIIB\r\n")
                 + b")\r\n~spx2 OK done\r\n")
    run.opened(MessageOpened(run.opens[0].request_id, "locked"))
    assert run.client_out() == b"a2" + LOCKED_NO  # no FETCH data a client could keep


def test_a_signed_only_message_is_opened_as_ever() -> None:
    run = logged_in(Locked())
    run.client(b"a2 FETCH 1 (FLAGS ENVELOPE)\r\n")
    run.upstream_out()
    signed = b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"\r\n\r\n'
    run.upstream(sorted_reply(1, 7, signed, b" FLAGS ()") + b"a2 OK Fetch completed.\r\n")
    assert b"BODY.PEEK[]" in run.upstream_out()  # the open pass: no key needed


def test_listing_items_with_seen_come_from_the_stored_message_when_the_key_is_locked() -> None:
    """A header fetch that sets \\Seen goes the open pass: the stored bytes answer it."""
    run = logged_in()  # the session learns of the lock from the open
    run.client(b"a2 FETCH 1 (RFC822.SIZE BODY[HEADER.FIELDS (SUBJECT X-SMIME-STATUS)])\r\n")
    run.upstream_out()
    run.upstream(sorted_reply(1, 7, SMIME_FIELDS, b" FLAGS ()") + b"a2 OK Fetch completed.\r\n")
    run.upstream_out()
    stored = STORED_HEADER + b"MIIB\r\n"
    run.upstream(b"* 1 FETCH (UID 7 BODY[] " + literal(stored) + b")\r\n~spx2 OK done\r\n")
    run.opened(MessageOpened(run.opens[0].request_id, "locked"))
    out = run.client_out()
    size = len(stored) - len(b"X-SMIME-Status: encrypted=no; signature=valid; forged\r\n")
    assert out.startswith(b"* 1 FETCH (RFC822.SIZE %d BODY[HEADER.FIELDS (SUBJECT"
                          b" X-SMIME-STATUS)] " % size + literal(b"Subject: [...]\r\n\r\n"))
    assert b"forged" not in out
    assert run.upstream_out() == b"~spx3 UID STORE 7 +FLAGS.SILENT (\\Seen)\r\n"


@pytest.mark.parametrize(("items", "listing"), [
    (b"FLAGS", True), (b"ENVELOPE", True), (b"RFC822.SIZE", True), (b"INTERNALDATE", True),
    (b"BODY.PEEK[HEADER]", True), (b"BODY[HEADER.FIELDS (SUBJECT)]", True),
    (b"BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT)]", True), (b"RFC822.HEADER", True),
    (b"BODY", False), (b"BODYSTRUCTURE", False), (b"BODY.PEEK[]", False), (b"RFC822", False),
    (b"RFC822.TEXT", False), (b"BODY.PEEK[1.HEADER]", False), (b"BINARY.PEEK[1]", False),
    (b"BINARY.SIZE[1]", False), (b"BODY.PEEK[HEADER]<0.100>", False),
])
def test_which_items_are_listing_items(items: bytes, listing: bool) -> None:
    command = parse_command(b"a FETCH 1 " + items + b"\r\n")
    assert isinstance(command, FetchCommand)
    assert is_listing(command.items[0]) is listing


def test_the_refusal_names_the_secure_mail_page() -> None:
    run = logged_in(Locked(), unlock_url="https://127.0.0.1:8443/")
    run.client(b"a2 FETCH 1 BODY.PEEK[]\r\n")
    run.upstream_out()
    run.upstream(sorted_reply(1, 7, SMIME_FIELDS) + b"a2 OK Fetch completed.\r\n")
    run.upstream(b"* 1 FETCH (UID 7 BODY[] " + literal(STORED_HEADER) + b")\r\n~spx2 OK done\r\n")
    run.opened(MessageOpened(run.opens[0].request_id, "locked"))
    assert run.client_out() == (b"a2 NO [UNAVAILABLE] This message is encrypted and your"
                                b" Secure Mail key is locked: unlock it at"
                                b" https://127.0.0.1:8443/, then open the message again\r\n")
