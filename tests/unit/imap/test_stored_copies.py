"""Transcripts: a client's APPEND to its Sent folder is sealed to the user's certificate in
the same command (issue 13, Sent copies at rest); any other APPEND is relayed as it is."""

from __future__ import annotations

import pytest

from smime_proxy.imap.session import CopySealed, SealCopy
from support.imap_transcript import Run, logged_in

SENT = b"From: alice@example.test\r\nSubject: hi\r\n\r\nhello\r\n"
SEALED = b"Content-Type: application/pkcs7-mime; smime-type=authEnveloped-data\r\n\r\nMIIB\r\n"


def appended(run: Run, mailbox: bytes, message: bytes = SENT, extra: bytes = b"") -> None:
    run.client(b"a2 APPEND " + mailbox + b" (\\Seen)" + extra + b" {%d}\r\n" % len(message))
    assert run.client_out() == b"+ OK\r\n"
    run.client(message + b"\r\n")


def sealing() -> Run:
    return logged_in(sealed_uses=frozenset({"\\SENT"}))


def test_an_append_to_the_sent_folder_is_sealed_in_the_same_command() -> None:
    run = sealing()
    appended(run, b"Sent", extra=b' "01-Jun-2026 12:00:00 +0000"')
    assert run.upstream_out() == b'~spx2 LIST "" Sent RETURN (SPECIAL-USE)\r\n'
    run.upstream(b'* LIST (\\HasNoChildren \\Sent) "/" Sent\r\n~spx2 OK List completed.\r\n')
    assert run.client_out() == b""  # the proxy's own question: not shown
    seal = run.others[-1]
    assert isinstance(seal, SealCopy) and seal.message == SENT and seal.user == "alice"
    run.take(run.session.copy_sealed(CopySealed(seal.request_id, SEALED)))
    assert run.upstream_out() == (b'a2 APPEND Sent (\\Seen) "01-Jun-2026 12:00:00 +0000"'
                                  b" {%d+}\r\n" % len(SEALED) + SEALED + b"\r\n")
    run.upstream(b"a2 OK [APPENDUID 1 7] Append completed.\r\n")
    assert run.client_out() == b"a2 OK [APPENDUID 1 7] Append completed.\r\n"
    # the folder is known now: the next copy is sealed without asking again
    appended(run, b"Sent")
    assert run.upstream_out() == b""
    assert isinstance(run.others[-1], SealCopy)


def test_an_ordinary_folder_gets_the_append_as_it_is() -> None:
    run = sealing()
    appended(run, b'"Work stuff"')
    assert run.upstream_out() == b'~spx2 LIST "" "Work stuff" RETURN (SPECIAL-USE)\r\n'
    run.upstream(b'* LIST (\\HasNoChildren) "/" "Work stuff"\r\n~spx2 OK done\r\n')
    assert run.upstream_out() == (b'a2 APPEND "Work stuff" (\\Seen) {%d+}\r\n' % len(SENT)
                                  + SENT + b"\r\n")
    assert not any(isinstance(a, SealCopy) for a in run.others)


def test_an_upstream_without_list_extended_gets_it_as_it_is() -> None:
    run = sealing()
    appended(run, b"Sent")
    run.upstream_out()
    run.upstream(b"~spx2 BAD Error in IMAP command LIST: Unknown argument\r\n")
    assert run.upstream_out().startswith(b"a2 APPEND Sent (\\Seen) {")


def test_a_user_without_a_certificate_gets_the_copy_as_written() -> None:
    run = sealing()
    appended(run, b"Sent")
    run.upstream_out()
    run.upstream(b'* LIST (\\Sent) "/" Sent\r\n~spx2 OK done\r\n')
    seal = run.others[-1]
    assert isinstance(seal, SealCopy)
    run.take(run.session.copy_sealed(CopySealed(seal.request_id, None)))
    assert run.upstream_out() == b"a2 APPEND Sent (\\Seen) {%d+}\r\n" % len(SENT) + SENT + b"\r\n"


@pytest.mark.parametrize("message", [
    b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\nMIIB\r\n",
    b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"\r\n\r\nx\r\n',
])
def test_a_copy_already_s_mime_is_stored_as_written(message: bytes) -> None:
    run = sealing()
    appended(run, b"Sent", message)
    assert run.upstream_out() == (b"a2 APPEND Sent (\\Seen) {%d+}\r\n" % len(message)
                                  + message + b"\r\n")


def test_sealing_off_and_multiappend_are_relayed() -> None:
    run = logged_in()
    appended(run, b"Sent")
    assert run.upstream_out().startswith(b"a2 APPEND Sent (\\Seen) {")
    run = sealing()
    run.client(b"a3 APPEND Sent {5+}\r\nhello {5+}\r\nworld\r\n")
    assert run.upstream_out() == b"a3 APPEND Sent {5+}\r\nhello {5+}\r\nworld\r\n"


def test_a_large_copy_is_collected_whole_and_sealed() -> None:
    """Over the streaming threshold (256 KiB) an APPEND to a folder that may be sealed is
    collected, not streamed through; to an ordinary folder it is still streamed."""
    big = SENT + b"x" * (300 * 1024) + b"\r\n"
    run = sealing()
    run.client(b"a2 APPEND Sent {%d}\r\n" % len(big))
    assert run.client_out() == b"+ OK\r\n"
    for start in range(0, len(big), 65536):
        run.client(big[start:start + 65536])
        assert run.upstream_out() == b""  # nothing of it goes upstream yet
    run.client(b"\r\n")
    assert run.upstream_out() == b'~spx2 LIST "" Sent RETURN (SPECIAL-USE)\r\n'
    run.upstream(b'* LIST (\\Sent) "/" Sent\r\n~spx2 OK done\r\n')
    seal = run.others[-1]
    assert isinstance(seal, SealCopy) and seal.message == big
    run.take(run.session.copy_sealed(CopySealed(seal.request_id, SEALED)))
    assert run.upstream_out() == b"a2 APPEND Sent {%d+}\r\n" % len(SEALED) + SEALED + b"\r\n"
    run.upstream(b"a2 OK done\r\n")
    run.client_out()
    # a folder known to be ordinary: streamed as it comes
    run.session.mailbox_uses[b"Archive"] = frozenset()
    run.client(b"a3 APPEND Archive {%d}\r\n" % len(big))
    run.client(big[:65536])
    assert run.upstream_out().startswith(b"a3 APPEND Archive {%d+}\r\n" % len(big))


def test_a_copy_without_a_header_the_parsers_take_is_stored_as_written() -> None:
    """Found reading the change: a message with no empty line within the header limit made
    the session raise (the client's copy was lost with the connection)."""
    from smime_proxy.mime.entity import MAX_HEADER_BYTES

    blob = b"X" * (MAX_HEADER_BYTES + 10)
    run = sealing()
    appended(run, b"Sent", blob)
    assert run.upstream_out() == b"a2 APPEND Sent (\\Seen) {%d+}\r\n" % len(blob) + blob + b"\r\n"
