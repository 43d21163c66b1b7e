"""Transcript tests of the sans-I/O IMAP proxy session: bytes in, actions (bytes) out, no
network, no crypto (`MessageOpened` results are scripted)."""

from __future__ import annotations

import pytest

from smime_proxy.imap.session import (
    ImapSession,
    MessageOpened,
    Pause,
    SessionSettings,
    StartClientTls,
)
from smime_proxy.imap.views import MessageView
from support.gate import RecordingGate
from support.imap_transcript import (
    CLS,
    CLS_R,
    NO_FIELDS,
    PLAIN,
    SMIME_FIELDS,
    STATUS,
    UP_CAPS,
    Run,
    fetch_reply,
    literal,
    logged_in,
    sorted_reply,
    started,
)

# --- greeting, capabilities, STARTTLS, login -----------------------------------------------


def test_greeting_filters_capabilities_and_adds_starttls_logindisabled() -> None:
    run = started(starttls_available=True)
    greeting = run.client_out()
    assert greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE ")
    words = greeting.split(b"]")[0].split()
    assert b"COMPRESS=DEFLATE" not in words and b"NOTIFY" not in words
    assert b"AUTH=LOGIN" not in words and b"AUTH=PLAIN" not in words
    assert words.count(b"STARTTLS") == 1 and b"LOGINDISABLED" in words


def test_implicit_tls_advertises_plain_without_starttls() -> None:
    run = started(tls_active=True)
    words = run.client_out().split(b"]")[0].split()
    assert b"AUTH=PLAIN" in words
    assert b"STARTTLS" not in words and b"LOGINDISABLED" not in words


def test_login_without_tls_is_refused_and_not_relayed() -> None:
    run = started(starttls_available=True)
    run.client_out()
    run.client(b"a1 LOGIN alice secret\r\na2 AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n")
    out = run.client_out()
    assert b"a1 NO [PRIVACYREQUIRED]" in out and b"a2 NO [PRIVACYREQUIRED]" in out
    assert run.to_upstream == []


def test_bytes_pipelined_after_starttls_are_discarded() -> None:
    run = started(starttls_available=True)
    run.client_out()
    run.client(b"a1 STARTTLS\r\na2 LOGIN alice secret\r\n")
    assert run.client_out() == b"a1 OK Begin TLS negotiation now\r\n"
    assert any(isinstance(a, StartClientTls) for a in run.others)
    run.client(b"a3 LOGIN alice secret\r\n")  # still before the handshake: dropped too
    run.take(run.session.client_tls_started())
    assert run.to_upstream == [] and run.client_out() == b""
    run.client(b"a4 CAPABILITY\r\n")
    caps = run.client_out()
    assert b"STARTTLS" not in caps and b"AUTH=PLAIN" in caps and caps.endswith(b"a4 OK "
                                                                                b"Capability "
                                                                                b"completed\r\n")
    run.client(b"a5 LOGIN alice secret\r\n")
    assert run.upstream_out() == b"a5 LOGIN alice secret\r\n"


def test_starttls_refused_when_not_offered() -> None:
    run = started(tls_active=True)
    run.client_out()
    run.client(b"a1 STARTTLS\r\n")
    assert run.client_out().startswith(b"a1 BAD")
    assert not any(isinstance(a, StartClientTls) for a in run.others)


def test_failed_login_stays_unauthenticated() -> None:
    run = started(plaintext_login=True)
    run.client_out()
    run.client(b"a1 LOGIN alice wrong\r\n")
    assert run.upstream_out() == b"a1 LOGIN alice wrong\r\n"
    run.upstream(b"a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n")
    assert run.client_out() == b"a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
    assert run.others == [Pause(2.0)]  # the shell waits before it sends the NO
    run.client(b"a2 SELECT INBOX\r\n")
    assert run.client_out().startswith(b"a2 BAD") and run.to_upstream == []


def test_authenticate_plain_with_continuation_names_the_user() -> None:
    run = started(plaintext_login=True)
    run.client_out()
    run.client(b"a1 AUTHENTICATE PLAIN\r\n")
    assert run.upstream_out() == b"a1 AUTHENTICATE PLAIN\r\n"
    run.upstream(b"+ \r\n")
    assert run.client_out() == b"+ \r\n"
    run.client(b"AGJvYgBib2ItcHc=\r\n")  # \0bob\0bob-pw
    assert run.upstream_out() == b"AGJvYgBib2ItcHc=\r\n"
    run.upstream(b"a1 OK Logged in\r\n")
    assert run.client_out() == b"a1 OK Logged in\r\n"
    assert run.session.user == "bob"


def test_other_sasl_mechanisms_are_refused() -> None:
    run = started(plaintext_login=True)
    run.client_out()
    run.client(b"a1 AUTHENTICATE CRAM-MD5\r\n")
    assert run.client_out().startswith(b"a1 NO [CANNOT]") and run.to_upstream == []


def test_reserved_tag_prefix_and_compress_are_refused() -> None:
    run = logged_in()
    run.client(b"~spx9 NOOP\r\na2 COMPRESS DEFLATE\r\n")
    out = run.client_out()
    assert out.startswith(b"* BAD") and b"a2 NO [CANNOT]" in out
    assert run.to_upstream == []


def test_overlong_line_closes_with_bye() -> None:
    run = started(plaintext_login=True)
    run.client_out()
    run.client(b"a1 NOOP " + b"x" * (70 * 1024))
    assert run.client_out().startswith(b"* BYE")
    assert run.closed


# --- relaying -------------------------------------------------------------------------------


def test_commands_are_relayed_one_at_a_time_and_untagged_pass_through() -> None:
    run = logged_in()
    run.client(b"a2 SELECT INBOX\r\na3 NOOP\r\n")
    assert run.upstream_out() == b"a2 SELECT INBOX\r\n"
    run.upstream(b"* 3 EXISTS\r\n* OK [UIDVALIDITY 5] Ok\r\n"
                 b"a2 OK [READ-WRITE] Select completed\r\n")
    assert run.client_out() == (b"* 3 EXISTS\r\n* OK [UIDVALIDITY 5] Ok\r\n"
                                b"a2 OK [READ-WRITE] Select completed\r\n")
    assert run.upstream_out() == b"a3 NOOP\r\n"


def test_literal_is_acknowledged_and_sent_upstream_as_literal_plus() -> None:
    run = logged_in()
    run.client(b"a2 APPEND INBOX {5}\r\n")
    assert run.client_out() == b"+ OK\r\n"
    run.client(b"hello\r\n")
    assert run.upstream_out() == b"a2 APPEND INBOX {5+}\r\nhello\r\n"


def test_idle_continuation_and_done_are_relayed() -> None:
    run = logged_in()
    run.client(b"a2 IDLE\r\n")
    run.upstream(b"+ idling\r\n* 4 EXISTS\r\n")
    assert run.client_out() == b"+ idling\r\n* 4 EXISTS\r\n"
    run.client(b"DONE\r\n")
    assert run.upstream_out() == b"a2 IDLE\r\nDONE\r\n"
    run.upstream(b"a2 OK Idle completed\r\n")
    assert run.client_out() == b"a2 OK Idle completed\r\n"


def test_non_content_fetch_is_relayed_unchanged() -> None:
    run = logged_in()
    run.client(b"a2 UID FETCH 1:* (FLAGS INTERNALDATE)\r\n")
    assert run.upstream_out() == b"a2 UID FETCH 1:* (FLAGS INTERNALDATE)\r\n"
    assert run.opens == []


def test_unsolicited_content_items_are_dropped() -> None:
    run = logged_in()
    run.client(b"a2 NOOP\r\n")
    run.upstream(b'* 1 FETCH (FLAGS (\\Seen) BODY[] "x")\r\n* 2 FETCH (BODY[] "y")\r\n'
                 b"a2 OK done\r\n")
    assert run.client_out() == b"* 1 FETCH (FLAGS (\\Seen))\r\na2 OK done\r\n"


# --- content FETCH --------------------------------------------------------------------------
# The sort pass asks for UID and the classification fields besides the client's items; plain
# messages are answered with the upstream's own bytes, S/MIME ones are opened (module
# docstring of imap.fetch_answers).

def test_plain_message_is_the_upstreams_own_answer() -> None:
    run = logged_in()
    run.client(b"a2 FETCH 1 (BODY.PEEK[] RFC822.SIZE BODY.PEEK[1]<0.5>)\r\n")
    assert run.upstream_out() == (b"a2 FETCH 1 (UID " + CLS + b" BODY.PEEK[] RFC822.SIZE "
                                  b"BODY.PEEK[1]<0.5>)\r\n")
    items = (b"BODY[] " + literal(PLAIN) + b" RFC822.SIZE %d BODY[1]<0> {5}\r\nhello"
             % len(PLAIN))
    run.upstream(sorted_reply(1, 7, NO_FIELDS, b" " + items))
    assert run.client_out() == b"* 1 FETCH (" + items + b")\r\n"  # UID was not asked
    run.upstream(b"a2 OK Fetch completed.\r\n")
    assert run.client_out() == b"a2 OK Fetch completed.\r\n"
    assert run.opens == [] and run.to_upstream == []


def test_a_uid_fetch_of_known_plain_messages_is_relayed_as_it_is() -> None:
    run = logged_in()
    run.client(b"a2 SELECT INBOX\r\n")
    run.upstream(b"* OK [UIDVALIDITY 5] Ok\r\na2 OK [READ-WRITE] Select completed\r\n")
    run.client(b"a3 UID FETCH 7:8 RFC822.SIZE\r\n")
    run.upstream_out()
    run.upstream(sorted_reply(1, 7, NO_FIELDS, b" RFC822.SIZE 5")
                 + sorted_reply(2, 8, NO_FIELDS, b" RFC822.SIZE 6") + b"a3 OK done\r\n")
    run.client_out()
    run.client(b"a4 UID FETCH 8 (BODY.PEEK[])\r\n")
    assert run.upstream_out() == b"a4 UID FETCH 8 (BODY.PEEK[])\r\n"
    run.upstream(b"* 2 FETCH (UID 8 BODY[] " + literal(PLAIN) + b")\r\na4 OK done\r\n")
    assert run.client_out() == (b"* 2 FETCH (UID 8 BODY[] " + literal(PLAIN)
                                + b")\r\na4 OK done\r\n")
    run.client(b"a5 SELECT INBOX\r\n")  # what was learnt is forgotten with the mailbox
    run.upstream(b"a5 OK [READ-WRITE] Select completed\r\n")
    run.upstream_out()
    run.client(b"a6 UID FETCH 8 (BODY.PEEK[])\r\n")
    assert CLS in run.upstream_out()


def test_opened_content_is_what_every_item_describes() -> None:
    shown = b"X-SMIME-Status: encrypted=yes; cipher=aes-256-gcm; signature=none\r\n" + PLAIN
    run = logged_in()
    run.client(b"a2 UID FETCH 7 (BODY.PEEK[]<0.30> RFC822.SIZE BODYSTRUCTURE)\r\n")
    assert run.upstream_out() == (b"a2 UID FETCH 7 (UID " + CLS + b" BODY.PEEK[]<0.30> "
                                  b"RFC822.SIZE BODYSTRUCTURE)\r\n")
    run.upstream(sorted_reply(1, 7, SMIME_FIELDS, b' BODY[]<0> {3}\r\nMIM RFC822.SIZE 99 '
                              b'BODYSTRUCTURE ("application" "pkcs7-mime" NIL NIL NIL '
                              b'"base64" 10 NIL NIL NIL NIL)'))
    assert run.client_out() == b"" and run.opens == []
    run.upstream(b"a2 OK Fetch completed.\r\n")
    assert run.upstream_out() == b"~spx2 UID FETCH 7 (UID BODY.PEEK[])\r\n"
    run.upstream(fetch_reply(1, 7, b"ciphertext-ish") + b"~spx2 OK Fetch completed.\r\n")
    assert [o.raw for o in run.opens] == [b"ciphertext-ish"]
    run.opened(MessageOpened(run.opens[0].request_id, "opened", shown))
    view = MessageView(shown)
    out = run.client_out()
    assert out.startswith(b"* 1 FETCH (UID 7 BODY[]<0> {30}\r\n" + shown[:30]
                          + b" RFC822.SIZE %d BODYSTRUCTURE (" % len(shown))
    assert b"ciphertext" not in out and b"pkcs7" not in out
    assert view.size == len(shown)
    assert out.endswith(b"a2 OK Fetch completed.\r\n")


def test_a_whole_body_in_the_sort_pass_is_opened_without_a_second_download() -> None:
    run = logged_in()
    run.client(b"a2 UID FETCH 7 (UID BODY.PEEK[])\r\n")
    run.upstream_out()
    run.upstream(sorted_reply(1, 7, SMIME_FIELDS, b" BODY[] " + literal(b"smime bytes"))
                 + b"a2 OK done\r\n")
    assert [o.raw for o in run.opens] == [b"smime bytes"] and run.to_upstream == []
    run.opened(MessageOpened(run.opens[0].request_id, "opened", STATUS + PLAIN))
    assert run.client_out() == (b"* 1 FETCH (UID 7 BODY[] " + literal(STATUS + PLAIN)
                                + b")\r\na2 OK done\r\n")


@pytest.mark.parametrize("fields", [
    b"X-SMIME-Status: encrypted=yes; signature=valid; signer=boss@example.test\r\n\r\n",
    b"x-smime-status : signature=valid\r\n\r\n",
    b"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"\r\n\r\n",
])
def test_forged_status_or_signature_is_opened_not_relayed(fields: bytes) -> None:
    ours = b"X-SMIME-Status: encrypted=no; signature=none\r\n"
    run = logged_in()
    run.client(b"a2 FETCH 1 BODY.PEEK[HEADER]\r\n")
    run.upstream_out()
    run.upstream(sorted_reply(1, 3, fields, b" BODY[HEADER] " + literal(fields))
                 + b"a2 OK done\r\n")
    assert run.client_out() == b""
    assert run.upstream_out() == b"~spx2 FETCH 1 (UID BODY.PEEK[])\r\n"
    run.upstream(fetch_reply(1, 3, fields + PLAIN) + b"~spx2 OK done\r\n")
    run.opened(MessageOpened(run.opens[0].request_id, "opened", ours + PLAIN, plain=False))
    out = run.client_out()
    assert b"signature=valid" not in out and ours in out and out.endswith(b"a2 OK done\r\n")


def test_non_peek_fetch_sets_seen_before_the_tagged_ok() -> None:
    run = logged_in()
    run.client(b"a2 FETCH 1:2 (BODY[] FLAGS)\r\n")
    assert run.upstream_out() == b"a2 FETCH 1:2 (UID " + CLS + b" FLAGS)\r\n"
    run.upstream(sorted_reply(1, 7, NO_FIELDS, b" FLAGS ()")
                 + sorted_reply(2, 9, SMIME_FIELDS, b" FLAGS ()") + b"a2 OK Fetch completed.\r\n")
    assert run.client_out() == b""
    # the plain message: the client's own command, so the upstream sets \Seen itself
    assert run.upstream_out() == b"~spx2 FETCH 1 (BODY[] FLAGS)\r\n"
    plain_answer = b"* 1 FETCH (BODY[] " + literal(PLAIN) + b" FLAGS (\\Seen))\r\n"
    run.upstream(plain_answer + b"~spx2 OK Fetch completed.\r\n")
    assert run.client_out() == plain_answer
    assert run.upstream_out() == b"~spx3 FETCH 2 (UID BODY.PEEK[])\r\n"
    run.upstream(fetch_reply(2, 9, b"smime") + b"~spx3 OK Fetch completed.\r\n")
    run.opened(MessageOpened(run.opens[0].request_id, "opened", STATUS + PLAIN))
    out = run.client_out()
    assert out == b"* 2 FETCH (BODY[] " + literal(STATUS + PLAIN) + b" FLAGS (\\Seen))\r\n"
    assert run.upstream_out() == b"~spx4 UID STORE 9 +FLAGS.SILENT (\\Seen)\r\n"
    run.upstream(b"~spx4 OK Store completed.\r\n")
    assert run.client_out() == b"a2 OK Fetch completed.\r\n"


def test_a_non_peek_uid_fetch_of_a_plain_message_names_its_uid_again() -> None:
    """The plain pass of a UID FETCH names the message by its UID (7), not its number."""
    run = logged_in()
    run.client(b"a2 UID FETCH 7 (BODY[] FLAGS)\r\n")
    assert run.upstream_out() == b"a2 UID FETCH 7 (UID " + CLS + b" FLAGS)\r\n"
    run.upstream(sorted_reply(3, 7, NO_FIELDS, b" FLAGS ()") + b"a2 OK Fetch completed.\r\n")
    assert run.upstream_out() == b"~spx2 UID FETCH 7 (BODY[] FLAGS)\r\n"
    plain_answer = b"* 3 FETCH (UID 7 BODY[] " + literal(PLAIN) + b" FLAGS (\\Seen))\r\n"
    run.upstream(plain_answer + b"~spx2 OK Fetch completed.\r\n")
    assert run.client_out() == plain_answer + b"a2 OK Fetch completed.\r\n"


def opened_once(run: Run, command: bytes, sort_rest: bytes, content: bytes,
                done: bytes = b"a2 OK ok\r\n") -> bytes:
    """Run one content FETCH of S/MIME message 1 (UID 7) whose opening shows `content`."""
    run.client(command)
    run.upstream_out()
    run.upstream(sorted_reply(1, 7, SMIME_FIELDS, sort_rest) + done)
    run.upstream_out()
    run.upstream(fetch_reply(1, 7, b"smime") + b"~spx2 OK done\r\n")
    run.opened(MessageOpened(run.opens[-1].request_id, "opened", content))
    return run.client_out()


def test_seen_flags_are_added_when_not_asked() -> None:
    run = logged_in()
    out = opened_once(run, b"a2 UID FETCH 7 BODY[TEXT]\r\n", b" FLAGS (\\Answered)",
                      STATUS + PLAIN)
    assert out == (b"* 1 FETCH (UID 7 BODY[TEXT] {13}\r\nhello world\r\n"
                   b" FLAGS (\\Answered \\Seen))\r\n")


def test_locked_key_gives_tagged_unavailable_and_no_data_for_that_message() -> None:
    run = logged_in()
    run.client(b"a2 FETCH 1:2 BODY.PEEK[]\r\n")
    run.upstream_out()
    run.upstream(sorted_reply(1, 7, SMIME_FIELDS, b" BODY[] " + literal(b"one"))
                 + sorted_reply(2, 8, SMIME_FIELDS, b" BODY[] " + literal(b"two"))
                 + b"a2 OK Fetch completed.\r\n")
    run.opened(MessageOpened(run.opens[1].request_id, "locked"))
    assert run.client_out() == b""  # in order: message 1 first
    run.opened(MessageOpened(run.opens[0].request_id, "opened", STATUS + PLAIN))
    out = run.client_out()
    assert out.startswith(b"* 1 FETCH") and b"* 2 FETCH" not in out
    assert out.endswith(b"\r\na2 NO [UNAVAILABLE] This message is encrypted and your Secure"
                        b" Mail key is locked: unlock it, then open the message again\r\n")


def test_locked_key_passthrough_shows_the_raw_message() -> None:
    run = logged_in(locked_fetch="passthrough")
    run.client(b"a2 FETCH 1 BODY.PEEK[]\r\n")
    run.upstream(sorted_reply(1, 7, SMIME_FIELDS, b" BODY[] " + literal(b"raw smime\r\n"))
                 + b"a2 OK done\r\n")
    run.opened(MessageOpened(run.opens[0].request_id, "locked"))
    assert run.client_out() == b"* 1 FETCH (BODY[] {11}\r\nraw smime\r\n)\r\na2 OK done\r\n"


def test_upstream_no_is_relayed_after_the_data() -> None:
    run = logged_in()
    run.client(b"a2 FETCH 1 BODY.PEEK[]\r\n")
    run.upstream(b"a2 NO Some messages were expunged\r\n")
    assert run.client_out() == b"a2 NO Some messages were expunged\r\n"


def test_unsolicited_responses_during_fetch_keep_their_order() -> None:
    run = logged_in()
    run.client(b"a2 UID FETCH 7:8 BODY.PEEK[]\r\n")
    run.upstream(sorted_reply(1, 7, SMIME_FIELDS, b" BODY[] " + literal(b"smime"))
                 + b"* 1 EXPUNGE\r\n"
                 + sorted_reply(1, 8, NO_FIELDS, b" BODY[] " + literal(PLAIN))
                 + b"a2 OK done\r\n")
    assert run.client_out() == b""  # the plain one must not overtake the EXPUNGE
    run.opened(MessageOpened(run.opens[0].request_id, "opened", STATUS + PLAIN))
    out = run.client_out()
    assert out.index(b"* 1 FETCH (UID 7") < out.index(b"* 1 EXPUNGE") < out.index(
        b"* 1 FETCH (UID 8") < out.index(b"a2 OK done")


def test_upstream_dying_mid_fetch_closes_the_client() -> None:
    run = logged_in()
    run.client(b"a2 FETCH 1 BODY.PEEK[]\r\n")
    run.upstream(b"* 1 FETCH (UID 7 BODY[] {100}\r\npartial")
    run.upstream(b"")
    assert run.client_out() == b"* BYE Upstream server connection lost\r\n"
    assert run.closed and run.opens == []


@pytest.mark.parametrize("item", [b"BODYSTRUCTURE", b"ENVELOPE", b"RFC822.SIZE", b"BODY",
                                  b"BINARY.PEEK[1]", b"RFC822.HEADER", b"ALL", b"FULL"])
def test_every_content_item_is_sorted_first(item: bytes) -> None:
    run = logged_in()
    run.client(b"a2 FETCH 1 " + item + b"\r\n")
    assert run.upstream_out().startswith(b"a2 FETCH 1 (UID " + CLS)


def test_pipelined_commands_wait_for_the_fetch() -> None:
    run = logged_in()
    run.client(b"a2 FETCH 1 BODY.PEEK[]\r\na3 NOOP\r\n")
    assert run.upstream_out() == b"a2 FETCH 1 (UID " + CLS + b" BODY.PEEK[])\r\n"
    run.upstream(sorted_reply(1, 7, SMIME_FIELDS, b" BODY[] " + literal(b"x"))
                 + b"a2 OK done\r\n")
    assert run.to_upstream == []
    run.opened(MessageOpened(run.opens[0].request_id, "opened", STATUS + PLAIN))
    assert run.upstream_out() == b"a3 NOOP\r\n"


def test_logout_after_login_is_relayed_and_closes() -> None:
    run = logged_in()
    run.client(b"a9 LOGOUT\r\n")
    assert run.upstream_out() == b"a9 LOGOUT\r\n"
    run.upstream(b"* BYE Logging out\r\na9 OK Logout completed.\r\n")
    run.upstream(b"")
    assert run.client_out() == b"* BYE Logging out\r\na9 OK Logout completed.\r\n"
    assert run.closed


def test_structures_are_rendered_without_space_between_parts_and_addresses() -> None:
    from smime_proxy.imap.wire.values import render_structure

    part = [b"text", b"plain", None, None, None, b"7bit", 3, 1]
    assert render_structure([part, part, b"mixed"]) == (
        b'(("text" "plain" NIL NIL NIL "7bit" 3 1)("text" "plain" NIL NIL NIL "7bit" 3 1)'
        b' "mixed")')
    address = [None, None, b"a", b"example.test"]
    envelope = [b"date", b"subject", [address, address], None]
    assert render_structure(envelope) == (
        b'("date" "subject" ((NIL NIL "a" "example.test")(NIL NIL "a" "example.test")) NIL)')


def test_binary_of_8bit_content_is_literal8() -> None:
    message = (b"Content-Type: text/plain; charset=utf-8\r\n"
               b"Content-Transfer-Encoding: 8bit\r\n\r\ncaf\xc3\xa9\r\n")
    run = logged_in()
    out = opened_once(run, b"a2 FETCH 1 (BINARY.PEEK[1] BINARY.SIZE[1])\r\n", b"",
                      STATUS + message, done=b"a2 OK done\r\n")
    assert out == (b"* 1 FETCH (BINARY[1] ~{7}\r\ncaf\xc3\xa9\r\n BINARY.SIZE[1] 7)"
                   b"\r\na2 OK done\r\n")


def test_literals_before_login_are_capped() -> None:
    run = started(plaintext_login=True)
    run.client_out()
    run.client(b"a1 LOGIN {100000}\r\n")
    assert run.client_out() == b"a1 NO [TOOBIG] Literal too large\r\n"
    assert run.to_upstream == []


def test_examined_mailbox_gets_no_seen() -> None:
    run = logged_in()
    run.client(b"a2 EXAMINE INBOX\r\n")
    run.upstream(b"* 1 EXISTS\r\na2 OK [READ-ONLY] Examine completed\r\n")
    run.client_out()
    run.upstream_out()
    out = opened_once(run, b"a3 FETCH 1 BODY[]\r\n", b" FLAGS ()", STATUS + PLAIN,
                      done=b"a3 OK done\r\n")
    assert out == b"* 1 FETCH (BODY[] " + literal(STATUS + PLAIN) + b")\r\na3 OK done\r\n"
    assert run.to_upstream == []  # no STORE
    run.client(b"a4 SELECT INBOX\r\n")
    run.upstream(b"a4 OK [READ-WRITE] Select completed\r\n")
    assert run.session.read_only is False


# --- login throttling across connections (the shell's gate) --------------------------------


def gated(gate: RecordingGate) -> Run:
    run = Run(ImapSession(SessionSettings(plaintext_login=True), gate))
    run.take(run.session.start())
    run.upstream(UP_CAPS + b"~spx1 OK done\r\n")
    run.upstream_out()
    run.client_out()
    return run


REFUSED = b"NO [UNAVAILABLE] Too many failed login attempts; try again in 7 s\r\n"


def test_throttled_login_is_answered_here_and_not_relayed() -> None:
    gate = RecordingGate(blocked=("alice",))
    run = gated(gate)
    run.client(b"a1 LOGIN alice secret\r\na2 AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n")
    assert run.client_out() == b"a1 " + REFUSED + b"a2 " + REFUSED
    assert run.to_upstream == []
    assert gate.calls == [("reserve", "alice"), ("reserve", "alice")]


def test_throttled_authenticate_without_initial_response_is_cancelled_upstream() -> None:
    gate = RecordingGate(blocked=("alice",))
    run = gated(gate)
    run.client(b"a1 AUTHENTICATE PLAIN\r\n")
    assert run.upstream_out() == b"a1 AUTHENTICATE PLAIN\r\n"
    run.upstream(b"+ \r\n")
    run.client_out()
    run.client(b"AGFsaWNlAHNlY3JldA==\r\n")
    assert run.upstream_out() == b"*\r\n"  # the password never goes upstream
    run.upstream(b"a1 BAD Authentication aborted by client\r\n")
    assert run.client_out() == b"a1 " + REFUSED
    assert run.session.user is None


def test_login_outcomes_reach_the_gate() -> None:
    gate = RecordingGate()
    run = gated(gate)
    run.client(b"a1 LOGIN alice wrong\r\n")
    run.upstream(b"a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n")
    assert any(isinstance(a, Pause) for a in run.others)  # the failure stays counted
    run.client(b"a2 LOGIN alice {3+}\r\nbad\r\n")
    run.upstream(b"a2 BAD Error in IMAP command\r\n")
    run.client(b"a3 LOGIN alice secret\r\n")
    run.upstream(b"a3 OK Logged in\r\n")
    assert gate.calls == [("reserve", "alice"), ("failed", "alice"), ("reserve", "alice"),
                          ("cancel", "alice"), ("reserve", "alice"), ("succeeded", "alice")]
    assert run.session.user == "alice"


def test_a_message_expunged_elsewhere_is_nil_not_an_empty_message() -> None:
    """Dovecot answers BODY[] NIL for a message another session expunged; an empty message
    in its place would be cached by the client as that message."""
    run = logged_in()
    run.client(b"a2 UID FETCH 7,8 (BODY.PEEK[] BODYSTRUCTURE RFC822.SIZE FLAGS)\r\n")
    run.upstream_out()
    run.upstream(b"* 1 FETCH (UID 7 " + CLS_R + b" NIL FLAGS (\\Seen) BODY[] NIL "
                 b"BODYSTRUCTURE NIL RFC822.SIZE 0)\r\n"
                 + sorted_reply(2, 8, SMIME_FIELDS, b" BODY[] " + literal(b"smime"))
                 + b"a2 OK Fetch completed.\r\n")
    assert [o.raw for o in run.opens] == [b"smime"]  # nothing to open for the expunged one
    run.opened(MessageOpened(run.opens[0].request_id, "opened", STATUS + PLAIN))
    out = run.client_out()
    # the upstream's own answer for it (Dovecot's forms: RFC822.SIZE 0, ENVELOPE of NILs...)
    assert out.startswith(b"* 1 FETCH (UID 7 FLAGS (\\Seen) BODY[] NIL BODYSTRUCTURE NIL "
                          b"RFC822.SIZE 0)\r\n* 2 FETCH (UID 8 BODY[] {")
    assert out.endswith(b"a2 OK Fetch completed.\r\n")


def test_modseq_of_a_changedsince_fetch_is_kept() -> None:
    """RFC 7162: the upstream's MODSEQ, not asked for by name, comes back to the client."""
    run = logged_in()
    run.client(b"a2 UID FETCH 1:* (BODY.PEEK[]) (CHANGEDSINCE 5)\r\n")
    assert run.upstream_out() == (b"a2 UID FETCH 1:* (UID " + CLS + b" BODY.PEEK[]) "
                                  b"(CHANGEDSINCE 5)\r\n")
    run.upstream(b"* 1 FETCH (UID 7 MODSEQ (12) " + CLS_R + b" " + literal(SMIME_FIELDS)
                 + b" BODY[] " + literal(b"smime") + b")\r\na2 OK Fetch completed.\r\n")
    run.opened(MessageOpened(run.opens[0].request_id, "opened", STATUS + PLAIN))
    out = run.client_out()
    assert out.startswith(b"* 1 FETCH (UID 7 BODY[] " + literal(STATUS + PLAIN)
                          + b" MODSEQ (12))\r\n")


# --- streaming of large literals (imap.streaming) -------------------------------------------

BIG = 300 * 1024  # over STREAM_AT


def test_a_large_append_goes_upstream_as_it_comes() -> None:
    run = logged_in()
    run.client(b"a2 APPEND Sent (\\Seen) {%d}\r\n" % BIG)
    assert run.client_out() == b"+ OK\r\n"
    assert run.upstream_out() == b"a2 APPEND Sent (\\Seen) {%d+}\r\n" % BIG
    run.client(b"x" * 1000)
    assert run.upstream_out() == b"x" * 1000
    run.client(b"y" * (BIG - 1000))
    assert run.upstream_out() == b"y" * (BIG - 1000)
    run.client(b"\r\n")
    assert run.upstream_out() == b"\r\n"
    run.upstream(b"a2 OK [APPENDUID 1 5] Append completed.\r\n")
    assert run.client_out() == b"a2 OK [APPENDUID 1 5] Append completed.\r\n"
    run.client(b"a3 NOOP\r\n")
    assert run.upstream_out() == b"a3 NOOP\r\n"


def test_a_large_plain_message_is_streamed_to_the_client() -> None:
    body = b"Subject: big\r\n\r\n" + b"z" * BIG
    run = logged_in()
    run.client(b"a2 UID FETCH 7 BODY.PEEK[]\r\n")
    run.upstream_out()
    run.upstream(b"* 1 FETCH (UID 7 " + CLS_R + b" " + literal(NO_FIELDS)
                 + b" BODY[] {%d}\r\n" % len(body) + body[:5000])
    assert run.client_out() == b"* 1 FETCH (UID 7 BODY[] {%d}\r\n" % len(body) + body[:5000]
    run.upstream(body[5000:] + b")\r\na2 OK done\r\n")
    assert run.client_out() == body[5000:] + b")\r\na2 OK done\r\n"
    assert run.opens == []


def test_an_answer_waits_for_the_end_of_a_streamed_response() -> None:
    body = b"Subject: big\r\n\r\n" + b"z" * BIG
    run = logged_in()
    run.client(b"a2 UID FETCH 6:7 BODY.PEEK[]\r\n")
    run.upstream_out()
    run.upstream(sorted_reply(1, 6, SMIME_FIELDS, b" BODY[] " + literal(b"smime"))
                 + b"* 2 FETCH (UID 7 " + CLS_R + b" " + literal(NO_FIELDS)
                 + b" BODY[] {%d}\r\n" % len(body) + body[:100])
    run.client_out()
    run.opened(MessageOpened(run.opens[0].request_id, "opened", STATUS + PLAIN))
    assert run.client_out() == b""  # not in the middle of message 2's literal
    run.upstream(body[100:] + b")\r\n")
    out = run.client_out()
    assert out.startswith(body[100:] + b")\r\n* 1 FETCH (UID 6 BODY[] {")


def test_a_large_smime_message_is_collected_and_opened() -> None:
    stored = b"Content-Type: application/pkcs7-mime\r\n\r\n" + b"A" * BIG
    run = logged_in()
    run.client(b"a2 UID FETCH 7 BODY.PEEK[]\r\n")
    run.upstream_out()
    run.upstream(sorted_reply(1, 7, SMIME_FIELDS, b" BODY[] " + literal(stored))[:-3])
    assert run.client_out() == b"" and run.opens == []
    run.upstream(b")\r\na2 OK done\r\n")
    assert [o.raw for o in run.opens] == [stored]
    run.opened(MessageOpened(run.opens[0].request_id, "opened", STATUS + PLAIN))
    assert run.client_out().endswith(b"a2 OK done\r\n")


def test_a_message_over_the_cap_is_left_out_and_the_session_goes_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from smime_proxy.imap import streaming

    monkeypatch.setattr(streaming, "MAX_MESSAGE", BIG)
    stored = b"Content-Type: application/pkcs7-mime\r\n\r\n" + b"A" * (2 * BIG)
    run = logged_in()
    run.client(b"a2 UID FETCH 6:7 BODY.PEEK[]\r\n")
    run.upstream_out()
    run.upstream(sorted_reply(1, 6, SMIME_FIELDS, b" BODY[] " + literal(stored))
                 + sorted_reply(2, 7, NO_FIELDS, b" BODY[] " + literal(PLAIN))
                 + b"a2 OK done\r\n")
    out = run.client_out()
    assert run.opens == [] and b"* 2 FETCH (UID 7 BODY[]" in out and b"* 1 FETCH" not in out
    assert out.endswith(b"a2 NO [LIMIT] A message is larger than the proxy opens (64 MiB);"
                        b" the others were shown\r\n")
    run.client(b"a3 APPEND INBOX {%d+}\r\n" % (2 * BIG) + b"q" * (2 * BIG) + b"\r\n")
    assert b"a3 APPEND INBOX" in run.upstream_out()  # streamed: no cap of the proxy's
    run.upstream(b"a3 OK done\r\n")
    assert run.client_out() == b"a3 OK done\r\n"


@pytest.mark.parametrize("answer", [b"a1 NO [LIMIT] Maximum number of connections from user+IP",
                                    b"a1 NO [UNAVAILABLE] Temporary authentication failure"])
def test_a_login_refused_for_another_cause_is_no_guess(answer: bytes) -> None:
    """Dovecot's NO [LIMIT] (mail_max_userip_connections) or [UNAVAILABLE] is passed on at
    once and not counted as a wrong password (RFC 5530 codes)."""
    gate = RecordingGate()
    run = gated(gate)
    run.client(b"a1 LOGIN alice secret\r\n")
    run.upstream(answer + b"\r\n")
    assert run.client_out() == answer + b"\r\n"
    assert not any(isinstance(a, Pause) for a in run.others)
    assert gate.calls == [("reserve", "alice"), ("cancel", "alice")]


# --- pipelining -------------------------------------------------------------------------------


def test_simple_commands_are_pipelined_and_answered_by_tag() -> None:
    run = logged_in()
    run.client(b"a2 NOOP\r\na3 UID STORE 1 +FLAGS (\\Seen)\r\na4 STATUS INBOX (MESSAGES)\r\n")
    assert run.upstream_out() == (b"a2 NOOP\r\na3 UID STORE 1 +FLAGS (\\Seen)\r\n"
                                  b"a4 STATUS INBOX (MESSAGES)\r\n")
    assert run.session.busy
    run.upstream(b"a2 OK done\r\n* 1 FETCH (UID 1 FLAGS (\\Seen))\r\n"
                 b"* STATUS INBOX (MESSAGES 1)\r\na4 OK done\r\na3 OK stored\r\n")
    assert run.client_out() == (b"a2 OK done\r\n* 1 FETCH (UID 1 FLAGS (\\Seen))\r\n"
                                b"* STATUS INBOX (MESSAGES 1)\r\na4 OK done\r\na3 OK stored\r\n")
    assert not run.session.busy


@pytest.mark.parametrize("second", [b"a3 SELECT INBOX\r\n", b"a3 FETCH 1 BODY.PEEK[]\r\n",
                                    b"a3 IDLE\r\n", b"a2 NOOP\r\n"])
def test_other_commands_wait_for_the_pipelined_ones(second: bytes) -> None:
    run = logged_in()
    run.client(b"a2 NOOP\r\n" + second + b"a4 NOOP\r\n")
    assert run.upstream_out() == b"a2 NOOP\r\n"  # the second waits, and so does what follows
    run.upstream(b"a2 OK done\r\n")
    assert run.client_out() == b"a2 OK done\r\n"
    assert run.upstream_out().startswith(second.split(b" ", 1)[0])


# --- SEARCH over encrypted mail (imap.search_job) -------------------------------------------


def selected() -> Run:
    run = logged_in()
    run.client(b"a2 SELECT INBOX\r\n")
    run.upstream(b"* OK [UIDVALIDITY 5] Ok\r\na2 OK [READ-WRITE] Select completed\r\n")
    run.client_out()
    run.upstream_out()
    return run


def test_a_text_search_looks_into_encrypted_messages_in_the_clients_numbering() -> None:
    run = selected()
    run.client(b"s1 SEARCH UNSEEN BODY zebra\r\n")
    assert run.upstream_out() == b"~spx2 SEARCH UNSEEN BODY zebra\r\n"
    run.upstream(b"* SEARCH 4\r\n~spx2 OK done\r\n")
    assert run.upstream_out() == (b"~spx3 SEARCH OR HEADER Content-Type pkcs7 "
                                  b"HEADER Content-Type p7m\r\n")
    run.upstream(b"* SEARCH 1 2\r\n~spx3 OK done\r\n")
    assert run.upstream_out() == b"~spx4 SEARCH 1:2 UNSEEN\r\n"  # the key judged upstream
    run.upstream(b"* SEARCH 1 2\r\n~spx4 OK done\r\n")
    assert run.upstream_out() == b"~spx5 FETCH 1:2 (UID)\r\n"
    run.upstream(b"* 1 FETCH (UID 10)\r\n* 2 FETCH (UID 11)\r\n~spx5 OK done\r\n")
    assert run.upstream_out() == b"~spx6 FETCH 1:2 (UID BODY.PEEK[])\r\n"
    run.upstream(fetch_reply(1, 10, b"one") + fetch_reply(2, 11, b"two") + b"~spx6 OK done\r\n")
    assert run.client_out() == b""
    zebra = PLAIN.replace(b"hello world", b"a zebra")
    run.opened(MessageOpened(run.opens[0].request_id, "opened", STATUS + zebra))
    run.opened(MessageOpened(run.opens[1].request_id, "locked"))
    assert run.client_out() == b"* SEARCH 1 4\r\ns1 OK done\r\n"


def test_a_search_the_upstream_refuses_is_its_answer() -> None:
    run = selected()
    run.client(b"s1 UID SEARCH RETURN (COUNT) TEXT x\r\n")
    assert run.upstream_out() == b"~spx2 UID SEARCH TEXT x\r\n"
    run.upstream(b"~spx2 BAD Error in IMAP command\r\n")
    assert run.client_out() == b"s1 BAD Error in IMAP command\r\n"
    run.client(b"s2 UID SEARCH RETURN (SAVE) TEXT x\r\n")  # SEARCHRES: the upstream's own
    assert run.upstream_out() == b"s2 UID SEARCH RETURN (SAVE) TEXT x\r\n"
