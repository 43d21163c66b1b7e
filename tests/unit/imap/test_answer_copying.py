"""`fetch_rewrite.answer_copying` (a resync of opened messages: the upstream's items copied
as written, the proxy's own from the view) against `answer` (every item parsed and
rendered), which is the reference: the same bytes for any list of items, with the view's
structures prerendered or not, with or without MODSEQ and INTERNALDATE (the passes that
copy always carry UID and FLAGS: `answer` would write a missing one as NIL or ())."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from smime_proxy.imap import fetch_rewrite
from smime_proxy.imap.views import MessageView
from smime_proxy.imap.wire.commands import FetchCommand, parse_command
from smime_proxy.imap.wire.responses import FetchResponse, parse_response

MESSAGE = (b"X-SMIME-Status: encrypted=yes; signature=none\r\n"
           b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: Hi\r\n"
           b"Date: Mon, 1 Jun 2026 12:00:00 +0000\r\nMIME-Version: 1.0\r\n"
           b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
           b"--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
           b"--b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           b"JVBERi0=\r\n--b--\r\n")
ITEMS = ["FLAGS", "BODYSTRUCTURE", "ENVELOPE", "RFC822.SIZE", "BODY", "INTERNALDATE",
         "BODY.PEEK[HEADER.FIELDS (SUBJECT)]", "BINARY.SIZE[1]", "BODY.PEEK[1]", "MODSEQ",
         "UID", "BODY.PEEK[]"]
# the upstream's items as it writes them
UPSTREAM = {b"FLAGS": b"FLAGS (\\Seen $Work)", b"UID": b"UID 9",
            b"INTERNALDATE": b'INTERNALDATE "01-Jun-2026 12:00:00 +0000"',
            b"MODSEQ": b"MODSEQ (12)"}


def _command(items: list[str], uid: bool) -> FetchCommand:
    command = parse_command(b"t %sFETCH 2 (%s)\r\n" % (b"UID " if uid else b"",
                                                       " ".join(items).encode("ascii")))
    assert isinstance(command, FetchCommand)
    return command


@settings(max_examples=300, deadline=None)
@example(["INTERNALDATE"], False, False, {b"INTERNALDATE", b"MODSEQ"})  # no item: it wrote
@given(st.lists(st.sampled_from(ITEMS), min_size=1, max_size=6), st.booleans(), st.booleans(),
       st.sets(st.sampled_from([b"MODSEQ", b"INTERNALDATE"])))
def test_copying_answers_as_answer_does(items: list[str], uid: bool, prerendered: bool,
                                        missing: set[bytes]) -> None:
    command = _command(items, uid)
    view = MessageView(MESSAGE)
    if prerendered:
        fetch_rewrite.prerender(view)
    written = {name: text for name, text in UPSTREAM.items() if name not in missing}
    response = parse_response(b"* 2 FETCH (%s)\r\n" % b" ".join(written.values()))
    assert isinstance(response, FetchResponse)  # and as `answer` reads them:
    read = {item.render(): value for item, value in response.items}
    copied = fetch_rewrite.answer_copying(2, fetch_rewrite.copy_plan(command), view, written)
    reference = b"".join(fetch_rewrite.answer(2, command, view, read, mark_seen=False))
    assert copied == reference
