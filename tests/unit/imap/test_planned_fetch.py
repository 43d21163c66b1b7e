"""A content FETCH planned from what the session knows of each message (`imap.uid_map`,
`ContentFetch._start_known`): no classification fields asked, no content downloaded for a
cached view, and every answer still decided by its own UID."""

from __future__ import annotations

from smime_proxy.imap.session import MessageOpened
from smime_proxy.imap.views import MessageView
from smime_proxy.imap.wire.spans import metadata_items
from support.imap_transcript import (
    CLS,
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
DATE = b' INTERNALDATE "01-Jun-2026 12:00:00 +0000"'


def selected(views: KeptViews) -> Run:
    """INBOX with 1 (UID 4, plain) and 2 (UID 9, S/MIME), both fetched once: 9 is cached."""
    run = logged_in(views)
    run.client(b"s SELECT INBOX\r\n")
    run.upstream_out()
    run.upstream(b"* 2 EXISTS\r\n* OK [UIDVALIDITY 7] UIDs valid\r\ns OK [READ-WRITE] Done\r\n")
    run.client_out()
    run.client(b"f1 FETCH 1:* (BODY.PEEK[])\r\n")
    assert run.upstream_out() == b"f1 FETCH 1:* (UID " + CLS + b" BODY.PEEK[])\r\n"
    run.upstream(sorted_reply(1, 4, b"\r\n", b" BODY[] " + literal(PLAIN))
                 + sorted_reply(2, 9, SMIME_FIELDS, b" BODY[] " + literal(b"smime"))
                 + b"f1 OK Fetch completed.\r\n")
    run.opened(MessageOpened(run.opens[0].request_id, "opened", SHOWN, decrypted=True))
    assert run.client_out().endswith(b"f1 OK Fetch completed.\r\n")
    assert set(views.kept) == {9}
    return run


def test_a_resync_of_opened_messages_asks_for_no_content() -> None:
    views = KeptViews()
    run = selected(views)
    run.client(b"f2 FETCH 1:* (FLAGS BODYSTRUCTURE RFC822.SIZE)\r\n")
    assert run.upstream_out() == b"f2 FETCH 1:* (UID INTERNALDATE FLAGS)\r\n"
    run.upstream(b"* 1 FETCH (UID 4" + DATE + b" FLAGS ())\r\n"
                 b"* 2 FETCH (UID 9" + DATE + b" FLAGS (\\Seen))\r\n"
                 b"f2 OK Fetch completed.\r\n")
    view = MessageView(SHOWN)
    out = run.client_out()
    assert out.startswith(b"* 2 FETCH (FLAGS (\\Seen) BODYSTRUCTURE ")  # from the view
    assert b" RFC822.SIZE %d)\r\n" % view.size in out and b"INTERNALDATE" not in out
    # the plain message: the client's own command, answered by the upstream
    assert run.upstream_out() == b"~spx2 FETCH 1 (FLAGS BODYSTRUCTURE RFC822.SIZE)\r\n"
    run.upstream(b"* 1 FETCH (FLAGS () BODYSTRUCTURE (\"text\" \"plain\") RFC822.SIZE 60)\r\n"
                 b"~spx2 OK Fetch completed.\r\n")
    assert run.client_out() == (b"* 1 FETCH (FLAGS () BODYSTRUCTURE (\"text\" \"plain\") "
                                b"RFC822.SIZE 60)\r\nf2 OK Fetch completed.\r\n")
    assert run.opens[1:] == []


def test_a_prediction_that_no_longer_holds_is_opened() -> None:
    """The upstream's UID is not the one predicted (the map was wrong): the message is
    fetched whole and opened."""
    views = KeptViews()
    run = selected(views)
    run.client(b"f2 FETCH 2 (BODY.PEEK[])\r\n")
    assert run.upstream_out() == b"f2 FETCH 2 (UID INTERNALDATE FLAGS)\r\n"
    run.upstream(b"* 2 FETCH (UID 11" + DATE + b" FLAGS ())\r\nf2 OK Fetch completed.\r\n")
    assert run.upstream_out() == b"~spx2 FETCH 2 (UID BODY.PEEK[])\r\n"
    run.upstream(b"* 2 FETCH (UID 11 BODY[] " + literal(b"smime") + b")\r\n"
                 b"~spx2 OK Fetch completed.\r\n")
    assert [o.raw for o in run.opens[1:]] == [b"smime"]
    run.opened(MessageOpened(run.opens[1].request_id, "opened", SHOWN, decrypted=True))
    assert run.client_out() == (b"* 2 FETCH (BODY[] " + literal(SHOWN)
                                + b")\r\nf2 OK Fetch completed.\r\n")


def test_a_number_that_turns_out_to_be_another_message_is_opened() -> None:
    """All plain by the map, but the upstream's UID says otherwise: not relayed as plain."""
    views = KeptViews()
    run = selected(views)
    views.kept.clear()  # 9 forgotten: message 2 is not known, message 1 is plain
    run.client(b"f2 FETCH 1 (BODY.PEEK[])\r\n")
    assert run.upstream_out() == b"f2 FETCH 1 (UID INTERNALDATE BODY.PEEK[])\r\n"
    run.upstream(b"* 1 FETCH (UID 5" + DATE + b" BODY[] " + literal(b"smime") + b")\r\n"
                 b"f2 OK Fetch completed.\r\n")
    assert [o.raw for o in run.opens[1:]] == [b"smime"]
    run.opened(MessageOpened(run.opens[1].request_id, "opened", SHOWN, decrypted=True))
    assert run.client_out() == (b"* 1 FETCH (BODY[] " + literal(SHOWN)
                                + b")\r\nf2 OK Fetch completed.\r\n")


def test_known_plain_messages_are_relayed_without_the_added_items() -> None:
    views = KeptViews()
    run = selected(views)
    run.client(b"f2 FETCH 1 (FLAGS BODY.PEEK[])\r\n")
    assert run.upstream_out() == b"f2 FETCH 1 (UID INTERNALDATE FLAGS BODY.PEEK[])\r\n"
    run.upstream(b"* 1 FETCH (UID 4" + DATE + b" FLAGS () BODY[] " + literal(PLAIN) + b")\r\n"
                 b"* 2 FETCH (FLAGS (\\Deleted))\r\n"  # unsolicited: passed on
                 b"f2 OK Fetch completed.\r\n")
    assert run.client_out() == (b"* 1 FETCH (FLAGS () BODY[] " + literal(PLAIN) + b")\r\n"
                                b"* 2 FETCH (FLAGS (\\Deleted))\r\nf2 OK Fetch completed.\r\n")


def test_an_expunge_renumbers_the_plan() -> None:
    views = KeptViews()
    run = selected(views)
    run.client(b"n NOOP\r\n")
    run.upstream_out()
    run.upstream(b"* 1 EXPUNGE\r\nn OK NOOP completed.\r\n")
    run.client_out()
    run.client(b"f2 FETCH 1 (RFC822.SIZE)\r\n")  # now UID 9, cached
    assert run.upstream_out() == b"f2 FETCH 1 (UID INTERNALDATE FLAGS)\r\n"
    run.upstream(b"* 1 FETCH (UID 9" + DATE + b" FLAGS ())\r\nf2 OK Fetch completed.\r\n")
    assert run.client_out() == (b"* 1 FETCH (RFC822.SIZE %d)\r\nf2 OK Fetch completed.\r\n"
                                % MessageView(SHOWN).size)


def test_the_usual_answer_and_any_other_shape_give_the_same_response() -> None:
    """Dovecot's usual `UID INTERNALDATE FLAGS MODSEQ` answer is read by one expression
    (`metadata_items`); an answer with another item in it by `fetch_spans`: the client's
    response is the same either way."""
    outputs = []
    for extra in (b"", b" X-GUID 9a8b7c"):
        views = KeptViews()
        run = selected(views)
        run.client(b"f2 FETCH 2 (FLAGS RFC822.SIZE)\r\n")
        assert run.upstream_out() == b"f2 FETCH 2 (UID INTERNALDATE FLAGS)\r\n"
        run.upstream(b"* 2 FETCH (UID 9" + DATE + b" FLAGS (\\Seen $Work) MODSEQ (12)" + extra
                     + b")\r\nf2 OK Fetch completed.\r\n")
        outputs.append(run.client_out())
    assert outputs[0] == outputs[1] == (b"* 2 FETCH (FLAGS (\\Seen $Work) RFC822.SIZE %d "
                                        b"MODSEQ (12))\r\nf2 OK Fetch completed.\r\n"
                                        % MessageView(SHOWN).size)


def test_metadata_items_reads_only_the_usual_shape() -> None:
    raw = b'* 3 FETCH (UID 7 INTERNALDATE "01-Jun-2026 12:00:00 +0000" MODSEQ (5) FLAGS ())\r\n'
    assert metadata_items(raw) == (3, 7, {
        b"UID": b"UID 7", b"INTERNALDATE": b'INTERNALDATE "01-Jun-2026 12:00:00 +0000"',
        b"MODSEQ": b"MODSEQ (5)", b"FLAGS": b"FLAGS ()"})
    for other in (b"* 3 FETCH (UID 7 FLAGS ())\r\n",
                  b'* 3 FETCH (UID 7 INTERNALDATE "x" FLAGS (\\Seen) BODY[] {1}\r\nx)\r\n',
                  b'* 3 FETCH (UID 7 INTERNALDATE "x" FLAGS (a)) trailing\r\n'):
        assert metadata_items(other) is None


def test_a_lock_during_a_planned_fetch_serves_nothing_it_found_before() -> None:
    """The plan holds the views it found; if the key locks before the upstream answers,
    they are not served (nothing decrypted outlives its unlock): the message is opened
    again, which asks for the key."""
    views = KeptViews()
    run = selected(views)
    run.client(b"f2 FETCH 2 (BODY.PEEK[])\r\n")
    assert run.upstream_out() == b"f2 FETCH 2 (UID INTERNALDATE FLAGS)\r\n"
    views.kept.clear()
    views.ended += 1  # the key locked: the cache dropped what was decrypted
    run.upstream(b"* 2 FETCH (UID 9" + DATE + b" FLAGS ())\r\nf2 OK Fetch completed.\r\n")
    assert run.client_out() == b""
    assert run.upstream_out() == b"~spx2 FETCH 2 (UID BODY.PEEK[])\r\n"
    run.upstream(b"* 2 FETCH (UID 9 BODY[] " + literal(b"smime") + b")\r\n"
                 b"~spx2 OK Fetch completed.\r\n")
    run.opened(MessageOpened(run.opens[-1].request_id, "locked"))
    assert b"NO [UNAVAILABLE]" in run.client_out()


def test_a_resync_of_plain_messages_is_marked_by_the_clients_own_size() -> None:
    """Every message known plain and the client asks RFC822.SIZE: that is the mark, nothing
    is added (no INTERNALDATE for the upstream to look up), the client's items go in its
    order after UID; its answers are relayed less UID, whatever their shape; unsolicited
    flags pass on as they are."""
    views = KeptViews()
    run = selected(views)  # message 1 (UID 4) known plain
    run.client(b"f2 FETCH 1 (FLAGS BODYSTRUCTURE ENVELOPE RFC822.SIZE)\r\n")
    assert run.upstream_out() == b"f2 FETCH 1 (UID FLAGS BODYSTRUCTURE ENVELOPE RFC822.SIZE)\r\n"
    structure = b' BODYSTRUCTURE ("text" "plain" NIL NIL NIL "7bit" 5 1 NIL NIL NIL NIL)'
    run.upstream(b"* 1 FETCH (UID 4 FLAGS (\\Seen) RFC822.SIZE 60" + structure + b")\r\n"
                 b"* 2 FETCH (UID 9 FLAGS (\\Deleted))\r\n"  # unsolicited: passed on
                 b"f2 OK Fetch completed.\r\n")
    assert run.client_out() == (
        b"* 1 FETCH (FLAGS (\\Seen) RFC822.SIZE 60" + structure + b")\r\n"
        b"* 2 FETCH (UID 9 FLAGS (\\Deleted))\r\nf2 OK Fetch completed.\r\n")
    run.client(b"f3 FETCH 1 (FLAGS RFC822.SIZE)\r\n")  # another shape: read by the spans
    assert run.upstream_out() == b"f3 FETCH 1 (UID FLAGS RFC822.SIZE)\r\n"
    run.upstream(b"* 1 FETCH (UID 4 MODSEQ (12) FLAGS () RFC822.SIZE 60)\r\n"
                 b"f3 OK Fetch completed.\r\n")
    assert run.client_out() == (b"* 1 FETCH (MODSEQ (12) FLAGS () RFC822.SIZE 60)\r\n"
                                b"f3 OK Fetch completed.\r\n")
    assert run.opens[1:] == []
