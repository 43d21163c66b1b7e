"""Transcript helpers for the sans-I/O IMAP session (`imap.session.ImapSession`): bytes in,
actions out, no network, no crypto (`MessageOpened` results are scripted by the test)."""

from __future__ import annotations

from dataclasses import dataclass, field

from smime_proxy.imap.session import (
    Action,
    Close,
    ImapSession,
    MessageOpened,
    OpenMessage,
    SendToClient,
    SendToUpstream,
    SessionSettings,
)
from smime_proxy.imap.view_cache import MailboxKey, ViewCache
from smime_proxy.imap.views import MessageView

UP_CAPS = (b"* CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID ENABLE IDLE STARTTLS "
           b"AUTH=PLAIN AUTH=LOGIN COMPRESS=DEFLATE NOTIFY\r\n")
PLAIN = (b"From: a@example.test\r\nTo: b@example.test\r\nSubject: hi\r\n\r\n"
         b"hello world\r\n")
STATUS = b"X-SMIME-Status: encrypted=no; signature=none\r\n"


@dataclass
class Run:
    session: ImapSession
    to_client: list[bytes] = field(default_factory=list)
    to_upstream: list[bytes] = field(default_factory=list)
    opens: list[OpenMessage] = field(default_factory=list)
    others: list[Action] = field(default_factory=list)

    def take(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, SendToClient):
                self.to_client.append(action.data)
            elif isinstance(action, SendToUpstream):
                self.to_upstream.append(action.data)
            elif isinstance(action, OpenMessage):
                self.opens.append(action)
            else:
                self.others.append(action)

    def client(self, data: bytes) -> None:
        self.take(self.session.client_data(data))

    def upstream(self, data: bytes) -> None:
        self.take(self.session.upstream_data(data))

    def opened(self, result: MessageOpened) -> None:
        self.take(self.session.message_opened(result))

    def client_out(self) -> bytes:
        out, self.to_client[:] = b"".join(self.to_client), []
        return out

    def upstream_out(self) -> bytes:
        out, self.to_upstream[:] = b"".join(self.to_upstream), []
        return out

    @property
    def closed(self) -> bool:
        return any(isinstance(a, Close) for a in self.others)


def started(views: ViewCache | None = None, **settings: object) -> Run:
    run = Run(ImapSession(SessionSettings(**settings),  # type: ignore[arg-type]
                          views_for=None if views is None else lambda login: views))
    run.take(run.session.start())
    assert run.upstream_out() == b"~spx1 CAPABILITY\r\n"
    assert run.to_client == []
    run.upstream(UP_CAPS + b"~spx1 OK Pre-login capabilities listed.\r\n")
    return run


def logged_in(views: ViewCache | None = None, **settings: object) -> Run:
    run = started(views, plaintext_login=True, **settings)
    run.client_out()
    run.client(b"a1 LOGIN alice secret\r\n")
    assert run.upstream_out() == b"a1 LOGIN alice secret\r\n"
    run.upstream(b"a1 OK [CAPABILITY IMAP4rev1 COMPRESS=DEFLATE IDLE] Logged in\r\n")
    assert run.client_out() == b"a1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n"
    assert run.session.user == "alice"
    return run


def fetch_reply(number: int, uid: int, message: bytes, extra: bytes = b"") -> bytes:
    return (b"* %d FETCH (UID %d BODY[] {%d}\r\n" % (number, uid, len(message)) + message
            + extra + b")\r\n")


CLS = b"BODY.PEEK[HEADER.FIELDS (CONTENT-TYPE X-SMIME-STATUS)]"
CLS_R = b"BODY[HEADER.FIELDS (CONTENT-TYPE X-SMIME-STATUS)]"
NO_FIELDS = b"\r\n"
SMIME_FIELDS = b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\n"


def sorted_reply(number: int, uid: int, fields: bytes, rest: bytes = b"",
                 between: bytes = b"") -> bytes:
    """A sort-pass response: UID, `between` (items, each with a space after it: Dovecot
    writes FLAGS and RFC822.SIZE there), the classification fields, then `rest` (items)."""
    return (b"* %d FETCH (UID %d " % (number, uid) + between + CLS_R
            + b" {%d}\r\n" % len(fields) + fields + rest + b")\r\n")


def literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


class KeptViews(ViewCache):
    """A view cache that keeps every view put in it, by UID (whatever the mailbox), until a
    test says an unlock ended (`ended`)."""

    def __init__(self, kept: dict[int, MessageView] | None = None) -> None:
        self.kept: dict[int, MessageView] = dict(kept or {})
        self.ended = 0  # unlocks ended so far

    def locks(self) -> int:
        return self.ended

    def get(self, mailbox: MailboxKey, uid: int) -> MessageView | None:
        return self.kept.get(uid)

    def put(self, mailbox: MailboxKey, uid: int, view: MessageView, *,
            decrypted: bool, unlock: object | None = None) -> None:
        self.kept[uid] = view
