"""Transcripts: a login the upstream accepted hands the shell the mail password (`MailLogin`)
before the client's OK, so that a user who chose it finds the key unlocked (issue 13); a
refused login hands over nothing, and the password never shows in a repr."""

from __future__ import annotations

import pytest

from smime_proxy.imap.session import MailLogin, SendToClient
from support.imap_transcript import started


def test_login_hands_over_the_password_before_the_ok() -> None:
    run = started(plaintext_login=True)
    run.client_out()
    run.client(b'a1 LOGIN alice "pass word"\r\n')
    run.upstream_out()
    actions = run.session.upstream_data(b"a1 OK Logged in\r\n")
    kinds = [type(a) for a in actions]
    assert MailLogin in kinds and kinds.index(MailLogin) < kinds.index(SendToClient)
    login = next(a for a in actions if isinstance(a, MailLogin))
    assert login == MailLogin("alice", b"pass word")
    assert "pass word" not in repr(login)


@pytest.mark.parametrize("initial", [True, False])
def test_authenticate_plain_hands_over_the_password(initial: bool) -> None:
    run = started(plaintext_login=True)
    run.client_out()
    blob = b"AGJvYgBib2ItcHc="  # \0bob\0bob-pw
    if initial:
        run.client(b"a1 AUTHENTICATE PLAIN " + blob + b"\r\n")
    else:
        run.client(b"a1 AUTHENTICATE PLAIN\r\n")
        run.upstream(b"+ \r\n")
        run.client(blob + b"\r\n")
    run.upstream_out()
    run.upstream(b"a1 OK Logged in\r\n")
    assert MailLogin("bob", b"bob-pw") in run.others


def test_a_refused_login_hands_over_nothing() -> None:
    run = started(plaintext_login=True)
    run.client_out()
    run.client(b"a1 LOGIN alice wrong\r\n")
    run.upstream(b"a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n")
    assert not any(isinstance(a, MailLogin) for a in run.others)
