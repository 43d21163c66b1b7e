"""Whole content FETCH sequences over hostile messages through the sans-I/O IMAP session:
whatever the messages, the session answers every FETCH with a tagged response and stays
usable (security issue, item 4: one message never breaks a session or a mailbox)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from smime_proxy.imap import fetch_answers, fetch_rewrite
from smime_proxy.imap.session import (
    Close,
    ImapSession,
    MessageOpened,
    OpenMessage,
    SendToClient,
    SendToUpstream,
    SessionSettings,
)
from smime_proxy.imap.wire.sequence import SequenceSet

PLAIN = b"From: a@example.test\r\nSubject: fine\r\n\r\nan ordinary message\r\n"
CLS = b"BODY.PEEK[HEADER.FIELDS (CONTENT-TYPE X-SMIME-STATUS)]"
CLS_R = b"BODY[HEADER.FIELDS (CONTENT-TYPE X-SMIME-STATUS)]"
SMIME_FIELDS = b"Content-Type: application/pkcs7-mime\r\n\r\n"
ITEMS = [b"BODY.PEEK[]", b"BODYSTRUCTURE", b"ENVELOPE", b"RFC822.SIZE",
         b"BODY.PEEK[1.2.MIME]", b"BINARY.PEEK[1]", b"BODY.PEEK[HEADER.FIELDS (FROM)]",
         b"BODY.PEEK[TEXT]<0.10>", b"BINARY.SIZE[2]", b"RFC822.HEADER"]


class Driver:
    def __init__(self) -> None:
        self.session = ImapSession(SessionSettings(plaintext_login=True))
        self.client: list[bytes] = []
        self.upstream: list[bytes] = []
        self.opens: list[OpenMessage] = []
        self.closed = False
        self.take(self.session.start())
        self.take(self.session.upstream_data(
            b"* CAPABILITY IMAP4rev1 LITERAL+\r\n~spx1 OK done\r\n"))
        self.take(self.session.client_data(b"a1 LOGIN alice pw\r\n"))
        self.take(self.session.upstream_data(b"a1 OK Logged in\r\n"))
        self.client.clear()
        self.upstream.clear()

    def take(self, actions: Sequence[object]) -> None:
        for action in actions:
            if isinstance(action, SendToClient):
                self.client.append(action.data)
            elif isinstance(action, SendToUpstream):
                self.upstream.append(action.data)
            elif isinstance(action, OpenMessage):
                self.opens.append(action)
            elif isinstance(action, Close):
                self.closed = True

    def fetch(self, messages: list[bytes], items: bytes, outcome: str,
              fields: list[bytes] | None = None) -> bytes:
        """One UID FETCH of `messages` (UIDs 1..n) with the upstream's passes scripted.
        `fields`: what the upstream says of each message's classification fields (default:
        S/MIME, so every message is opened), the last message being always plain."""
        self.take(self.session.client_data(b"f1 UID FETCH 1:* (" + items + b")\r\n"))
        assert self.upstream.pop().startswith(b"f1 UID FETCH 1:* (UID " + CLS)
        for number, message in enumerate(messages, 1):
            said = SMIME_FIELDS if fields is None else fields[(number - 1) % len(fields)]
            if number == len(messages):
                said = b"\r\n"
            self.take(self.session.upstream_data(
                b"* %d FETCH (UID %d " % (number, number) + CLS_R + b" {%d}\r\n" % len(said)
                + said + b" RFC822.SIZE %d)\r\n" % len(message)))
        self.take(self.session.upstream_data(b"f1 OK Fetch completed\r\n"))
        while self.upstream or self.opens:
            for request in list(self.opens):
                self.take(self.session.message_opened(
                    MessageOpened(request.request_id, outcome, request.raw)))  # type: ignore[arg-type]
                self.opens.remove(request)
            if self.upstream:
                self.answer_pass(self.upstream.pop(0), messages)
        out = b"".join(self.client)
        self.client.clear()
        return out

    def answer_pass(self, command: bytes, messages: list[bytes]) -> None:
        """The upstream's answer to a later pass (whole messages) or the \\Seen STORE."""
        tag, rest = command.split(b" ", 1)
        if rest.startswith(b"UID FETCH "):
            wanted = SequenceSet.parse(rest.split(b" ")[2])
            for number, message in enumerate(messages, 1):
                if wanted.contains(number, len(messages)):
                    self.take(self.session.upstream_data(
                        b"* %d FETCH (UID %d BODY[] {%d}\r\n" % (number, number, len(message))
                        + message + b")\r\n"))
        self.take(self.session.upstream_data(tag + b" OK done\r\n"))

    def still_usable(self) -> None:
        self.take(self.session.client_data(b"n1 NOOP\r\n"))
        assert self.upstream.pop() == b"n1 NOOP\r\n"
        self.take(self.session.upstream_data(b"n1 OK NOOP completed\r\n"))
        assert self.client.pop() == b"n1 OK NOOP completed\r\n"


def hostile_messages() -> st.SearchStrategy[bytes]:
    boundary = st.sampled_from([b"b", b"=_x", b"b b", b"", b"-" * 70])
    line = st.binary(max_size=120).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))

    def nested(depth: int, b: bytes) -> bytes:
        head = b"Content-Type: multipart/mixed; boundary=\"" + b + b"%d\"\r\n\r\n" % depth
        inner = nested(depth - 1, b) if depth else b"Content-Type: text/plain\r\n\r\nx\r\n"
        return head + b"--" + b + b"%d\r\n" % depth + inner + b"\r\n--" + b + b"%d--\r\n" % depth

    return st.one_of(
        st.binary(max_size=2000),
        st.lists(line, max_size=40).map(b"\r\n".join),
        st.tuples(st.integers(0, 120), boundary).map(lambda t: b"From: x@y\r\n" + nested(*t)),
        st.tuples(boundary, st.lists(line, max_size=10)).map(
            lambda t: b"Content-Type: multipart/signed; boundary=" + t[0] + b"; boundary=z\r\n"
            b"\r\n--" + t[0] + b"x\r\n" + b"\r\n".join(t[1]) + b"\r\n--" + t[0] + b"--\r\n"),
        st.integers(1, 3000).map(lambda n: b"X-Long: " + b"a" * (n * 50) + b"\r\n\r\nb"),
        st.just(b"Content-Transfer-Encoding: base64\r\n\r\n!!!not base64!!!\r\n"),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=st.lists(hostile_messages(), min_size=1, max_size=4),
       items=st.lists(st.sampled_from(ITEMS), min_size=1, max_size=4, unique=True),
       outcome=st.sampled_from(["opened", "shown"]))
@example(messages=[b"From: x\r\n" + b"X-F: " + b"y" * 60 + b"\r\n" * 1, PLAIN],
         items=[b"BODYSTRUCTURE"], outcome="shown")
def test_hostile_messages_never_end_the_session(messages: list[bytes], items: list[bytes],
                                                outcome: str) -> None:
    driver = Driver()
    out = driver.fetch([*messages, PLAIN], b" ".join(items), outcome)
    assert not driver.closed  # (a BYE of the session's own comes with a close)
    last = out.rsplit(b"\r\n", 2)[-2]
    assert last.startswith((b"f1 OK", b"f1 NO")), last
    assert b"* %d FETCH" % (len(messages) + 1) in out  # the ordinary message was answered
    driver.still_usable()


@settings(max_examples=100, deadline=None)
@given(messages=st.lists(hostile_messages(), min_size=1, max_size=4),
       fields=st.lists(st.one_of(hostile_messages(), st.just(SMIME_FIELDS)), min_size=1,
                       max_size=4))
def test_hostile_classification_fields_never_end_the_session(messages: list[bytes],
                                                             fields: list[bytes]) -> None:
    """Whatever the upstream says a message's Content-Type and status fields are, every
    message is answered (relayed or opened) and the session goes on."""
    driver = Driver()
    out = driver.fetch([*messages, PLAIN], b"RFC822.SIZE BODY.PEEK[]", "opened", fields)
    assert not driver.closed  # (a message may hold "* BYE" itself: not checked in `out`)
    assert out.rsplit(b"\r\n", 2)[-2].startswith((b"f1 OK", b"f1 NO"))
    for number in range(1, len(messages) + 2):
        assert b"* %d FETCH" % number in out
    driver.still_usable()


def test_a_message_whose_views_fail_gets_no_and_the_others_are_answered(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in the views (simulated) for one message: that message is left out, the FETCH
    ends in NO [SERVERBUG], the other messages are answered, the session goes on."""
    real = fetch_rewrite.answer

    def failing(number: int, *args: object, **kwargs: object) -> list[bytes]:
        if number == 2:
            raise RecursionError("simulated bug")
        return real(number, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(fetch_rewrite, "answer", failing)
    driver = Driver()
    out = driver.fetch([PLAIN, PLAIN, PLAIN], b"BODY.PEEK[]", "shown")
    assert b"* 1 FETCH" in out and b"* 3 FETCH" in out and b"* 2 FETCH" not in out
    assert out.endswith(b"f1 NO [SERVERBUG] A message could not be shown (the others were);"
                        b" it is left as stored on the server\r\n")
    assert not driver.closed
    driver.still_usable()


def test_the_stored_bytes_answer_when_the_shown_ones_cannot(
        monkeypatch: pytest.MonkeyPatch) -> None:
    real = fetch_answers.MessageView  # type: ignore[attr-defined]

    def picky(data: bytes) -> object:
        if b"shown-version" in data:
            raise ValueError("simulated")
        return real(data)

    monkeypatch.setattr(fetch_answers, "MessageView", picky)
    driver = Driver()
    stored = b"X-SMIME-Status: signature=valid\r\n" + PLAIN
    fields = b"X-SMIME-Status: signature=valid\r\n\r\n"
    driver.take(driver.session.client_data(b"f1 UID FETCH 1 (BODY.PEEK[])\r\n"))
    driver.upstream.clear()
    driver.take(driver.session.upstream_data(
        b"* 1 FETCH (UID 1 " + CLS_R + b" {%d}\r\n" % len(fields) + fields
        + b" BODY[] {%d}\r\n" % len(stored) + stored + b")\r\nf1 OK done\r\n"))
    request = driver.opens.pop()
    driver.take(driver.session.message_opened(
        MessageOpened(request.request_id, "opened", b"shown-version\r\n" + PLAIN)))
    out = b"".join(driver.client)
    assert b"{%d}\r\n" % len(PLAIN) + PLAIN in out  # the stored bytes, forged field removed
    assert out.endswith(b"f1 OK done\r\n")
