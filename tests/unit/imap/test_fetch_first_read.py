"""A client's first read of S/MIME messages (`FETCH ... BODY.PEEK[]`): the sort-pass answers
in the usual shape are queued for opening without being read whole
(`ContentFetch._sorted_usual`), with exactly what the long way (`_sorted`, `_to_answer`)
does: the same bytes to the client and the upstream, the same messages opened."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from smime_proxy.imap import fetch_answers
from smime_proxy.imap.session import MessageOpened
from smime_proxy.imap.views import MessageView
from smime_proxy.imap.wire.spans import last_literal
from support.imap_transcript import (
    PLAIN,
    SMIME_FIELDS,
    STATUS,
    KeptViews,
    Run,
    literal,
    logged_in,
    sorted_reply,
)

SHOWN = STATUS + PLAIN


def _transcript(command: bytes, replies: bytes, kept: dict[int, MessageView],
                select: bool = True) -> tuple[bytes, bytes, list[bytes]]:
    """The client's and the upstream's bytes (after the sort pass) and the opened messages
    of one FETCH, every message opened to SHOWN + its stored bytes."""
    run: Run = logged_in(KeptViews(kept))
    if select:
        run.client(b"s SELECT INBOX\r\n")
        run.upstream(b"* 3 EXISTS\r\n* OK [UIDVALIDITY 7] Ok\r\ns OK [READ-WRITE] Done\r\n")
    run.client_out()
    run.upstream_out()
    run.client(command)
    assert run.upstream_out().startswith(command.split(b" (")[0].split(b" B")[0] + b" (UID ")
    run.upstream(replies)
    opened = []
    while run.opens:
        request = run.opens.pop(0)
        opened.append(request.raw)
        run.opened(MessageOpened(request.request_id, "opened", SHOWN + request.raw,
                                 decrypted=True))
    return run.client_out(), run.upstream_out(), opened


def _message(number: int, uid: int, rest: bytes, between: bytes = b"") -> bytes:
    return sorted_reply(number, uid, SMIME_FIELDS, rest, between)


CASES: list[tuple[bytes, bytes]] = [
    (b"a FETCH 1:3 (BODY.PEEK[])\r\n",
     sorted_reply(1, 4, b"\r\n", b" BODY[] " + literal(PLAIN))
     + _message(2, 7, b" BODY[] " + literal(b"smime one")) + b"* 4 EXISTS\r\n"
     + _message(3, 9, b" body[] " + literal(b"smime two")) + b"a OK Fetch completed.\r\n"),
    (b"a UID FETCH 7:9 (UID BODY.PEEK[])\r\n",
     _message(2, 7, b" BODY[] " + literal(b"x")) + _message(3, 9, b" BODY[] {0}\r\n")
     + b"a OK done\r\n"),
    # not the usual shape: read whole, either way
    (b"a FETCH 2 (BODY.PEEK[] FLAGS)\r\n",
     _message(2, 7, b" BODY[] " + literal(b"smime") + b" FLAGS (\\Seen)") + b"a OK done\r\n"),
    (b"a FETCH 2 BODY.PEEK[]<0.3>\r\n",
     _message(2, 7, b" BODY[]<0> " + literal(b"smi")) + b"a OK done\r\n"),
    # Dovecot's order for a client that asks FLAGS and RFC822.SIZE too (Thunderbird): they
    # come between UID and the fields
    (b"a FETCH 1:3 (FLAGS RFC822.SIZE BODY.PEEK[])\r\n",
     sorted_reply(1, 4, b"\r\n", b" BODY[] " + literal(PLAIN), b"FLAGS () RFC822.SIZE 3 ")
     + _message(2, 7, b" BODY[] " + literal(b"smime one"),
                b"FLAGS (\\Seen $Junk) RFC822.SIZE 9 ")
     + _message(3, 9, b" BODY[] " + literal(b"smime two"), b"MODSEQ (5) ")
     + b"a OK Fetch completed.\r\n"),
]
# and a client's sync of plain messages, cut in place
SHAPES = [*CASES, (
    b"a FETCH 1:3 (FLAGS BODYSTRUCTURE RFC822.SIZE)\r\n",
    sorted_reply(1, 4, b"\r\n", b" BODYSTRUCTURE NIL", b"FLAGS (\\Recent) RFC822.SIZE 3 ")
    + sorted_reply(2, 5, b"Content-Type: text/plain\r\n\r\n", b" BODYSTRUCTURE NIL",
                   b"FLAGS () RFC822.SIZE 31 ")
    + b"a OK Fetch completed.\r\n")]


@pytest.mark.parametrize(("command", "replies"), CASES)
@pytest.mark.parametrize("cached", [False, True])
@pytest.mark.parametrize("select", [True, False])
def test_the_short_way_answers_as_the_long_way(
        monkeypatch: pytest.MonkeyPatch, command: bytes, replies: bytes, cached: bool,
        select: bool) -> None:
    kept = {7: MessageView(SHOWN + b"cached")} if cached else {}
    short = _transcript(command, replies, kept, select)
    taken: list[bool] = []
    real: Callable[[bytes, int, bytes], tuple[int, int] | None] = last_literal

    def never(raw: bytes, start: int, name: bytes) -> tuple[int, int] | None:
        taken.append(real(raw, start, name) is not None)
        return None

    monkeypatch.setattr(fetch_answers, "last_literal", never)
    long = _transcript(command, replies, kept, select)
    assert short == long
    if not short[1]:  # no open pass asked (a partial body is opened from the whole)
        assert short[0].endswith(b" OK Fetch completed.\r\n" if b"1:3" in command
                                 else b" OK done\r\n")
    if select and b"FLAGS" not in command and b"<" not in command:
        assert any(taken)  # the short way was there to take
    if not cached and not short[1]:
        assert short[2]


@pytest.mark.parametrize(("command", "replies"), SHAPES)
@pytest.mark.parametrize("cached", [False, True])
def test_the_heads_read_in_place_answer_as_the_whole_reading(
        monkeypatch: pytest.MonkeyPatch, command: bytes, replies: bytes, cached: bool) -> None:
    """Every answer read in place by its head (`uid_literal_head`: plain ones cut there,
    S/MIME ones queued) is what reading each answer whole (`_sorted`) gives, also with
    items between UID and the fields."""
    kept = {7: MessageView(SHOWN + b"cached")} if cached else {}
    short = _transcript(command, replies, kept)
    monkeypatch.setattr(fetch_answers, "uid_literal_head", lambda raw, name: None)
    assert short == _transcript(command, replies, kept)


def test_a_first_read_is_opened_from_the_sort_pass() -> None:
    client, upstream, opened = _transcript(
        b"a FETCH 2 (BODY.PEEK[])\r\n",
        _message(2, 7, b" BODY[] " + literal(b"smime")) + b"a OK done\r\n", {})
    assert opened == [b"smime"] and upstream == b""
    assert client == (b"* 2 FETCH (BODY[] " + literal(SHOWN + b"smime") + b")\r\n"
                      b"a OK done\r\n")


def test_the_messages_being_opened_are_counted_with_their_bytes() -> None:
    """What the shell's back-pressure reads (`ClientConnection._upstream_held_back`)."""
    run: Run = logged_in(KeptViews())
    run.client(b"s SELECT INBOX\r\n")
    run.upstream(b"* 3 EXISTS\r\n* OK [UIDVALIDITY 7] Ok\r\ns OK [READ-WRITE] Done\r\n")
    run.client(b"a FETCH 1:3 (BODY.PEEK[])\r\n")
    assert run.session.pending_opens == (0, 0)
    run.upstream(_message(1, 4, b" BODY[] " + literal(b"x" * 100))
                 + _message(2, 7, b" BODY[] " + literal(b"y" * 50)))
    assert run.session.pending_opens == (2, 150)
    first = run.opens.pop(0)
    run.opened(MessageOpened(first.request_id, "opened", SHOWN, decrypted=True))
    assert run.session.pending_opens == (1, 50)
