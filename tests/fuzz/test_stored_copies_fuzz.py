"""Hostile APPENDs and LIST answers through the sealing path of the IMAP session (issue 13,
Sent copies at rest): whatever the client appends and the upstream answers, the client's
APPEND gets exactly one tagged answer, nothing is appended twice, and the session goes on."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smime_proxy.imap.session import CopySealed, SealCopy
from support.imap_transcript import logged_in

_MAILBOXES = st.sampled_from([b"Sent", b'"Sent"', b'"Sent Items"', b"INBOX", b'"a\\"b"',
                              b"Drafts", b"%", b"Sent*", b'""'])
_ATTRIBUTES = st.lists(st.sampled_from([b"\\Sent", b"\\Drafts", b"\\HasNoChildren",
                                        b"\\Noselect", b"\\sent", b"junk"]), max_size=3)
_MESSAGES = st.one_of(
    st.binary(max_size=300),
    st.just(b"From: a@b\r\nSubject: s\r\n\r\nbody\r\n"),
    st.just(b"Content-Type: application/pkcs7-mime\r\n\r\nMIIB\r\n"),
)
_TAGGED = st.sampled_from([b"OK done", b"NO [TRYCREATE] no", b"BAD syntax",
                           b"OK [APPENDUID 1 2] done"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mailbox=_MAILBOXES, flags=st.sampled_from([b"", b" (\\Seen)", b" ()"]),
       message=_MESSAGES, attributes=_ATTRIBUTES, list_answer=_TAGGED,
       sealed=st.one_of(st.none(), st.binary(min_size=1, max_size=200)),
       append_answer=_TAGGED)
def test_every_append_gets_one_answer(mailbox: bytes, flags: bytes, message: bytes,
                                      attributes: list[bytes], list_answer: bytes,
                                      sealed: bytes | None, append_answer: bytes) -> None:
    run = logged_in(sealed_uses=frozenset({"\\SENT", "\\DRAFTS"}))
    run.client(b"a2 APPEND " + mailbox + flags + b" {%d}\r\n" % len(message))
    if run.client_out() != b"+ OK\r\n":
        return  # refused before the literal (a client error the session answered)
    run.client(message + b"\r\n")
    sent = run.upstream_out()
    if sent.startswith(b"~spx"):  # the proxy asks what the folder is for
        list_tag = sent.split(b" ", 1)[0]
        run.upstream(b"* LIST (" + b" ".join(attributes) + b') "/" ' + mailbox + b"\r\n"
                     + list_tag + b" " + list_answer + b"\r\n")
        seals = [a for a in run.others if isinstance(a, SealCopy)]
        if seals:
            run.take(run.session.copy_sealed(CopySealed(seals[-1].request_id, sealed)))
        sent = run.upstream_out()
    if sent.startswith(b"a2 APPEND"):
        assert sent.count(b"a2 APPEND") == 1  # never a second copy
        run.upstream(b"a2 " + append_answer + b"\r\n")
    answer = run.client_out()
    assert answer.count(b"a2 ") == 1 and answer.endswith(b"\r\n"), answer
    assert b"~spx" not in answer  # the proxy's own question never shows
    run.client(b"a3 NOOP\r\n")
    assert run.upstream_out() == b"a3 NOOP\r\n"  # the session goes on
