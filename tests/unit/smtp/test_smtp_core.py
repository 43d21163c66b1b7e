"""The sans-I/O SMTP core as transcripts: client events and upstream outcomes in, actions out.
No network, no event loop: what the client is answered, what is relayed, when a copy is done,
which copies a retry skips, the 451/421 on a lost upstream."""

from __future__ import annotations

import pytest

from smime_proxy.errors import LocalProtocolError
from smime_proxy.policy import Policy, decide
from smime_proxy.smtp.session import (
    Action,
    Authenticated,
    ClientReply,
    CloseClient,
    CloseUpstream,
    ConnectUpstream,
    DataRead,
    DeliveryMemo,
    MessagePlanned,
    PlanFailed,
    PlanMessage,
    PlanRefused,
    ReadData,
    SetSizeLimit,
    SmtpSession,
    SmtpSessionSettings,
    UpstreamData,
    UpstreamFailed,
    UpstreamGone,
    UpstreamLogin,
    UpstreamMail,
    UpstreamOk,
    UpstreamQuit,
    UpstreamRcpt,
    UpstreamReady,
    UpstreamRset,
    format_reply,
)
from smime_proxy.smtp.submission import Copy, Plan, Reply
from support.gate import RecordingGate

ALICE = "alice@example.test"
BOB = "bob@example.test"
CAROL = "carol@example.test"
READY = UpstreamReady(size_limit=5000, eight_bit=True, smtputf8=False)
AIOSMTPD_EHLO = ["250-proxy.test", "250-SIZE 209715200", "250-8BITMIME", "250-SMTPUTF8",
                 "250-AUTH LOGIN PLAIN", "250 HELP"]
LOST_451 = ClientReply("451 4.4.2 upstream server connection lost: message not sent, "
                       "try again")


def _session(memo: DeliveryMemo | None = None, **settings: object) -> SmtpSession:
    return SmtpSession(SmtpSessionSettings(hostname="proxy.test", **settings),  # type: ignore[arg-type]
                       memo if memo is not None else DeliveryMemo())


def _plan(*copies: tuple[tuple[str, ...], bytes]) -> Plan:
    decision = decide(Policy(), ALICE, [BOB], [])
    return Plan(tuple(Copy(r, m) for r, m in copies), signed=False, encrypted=len(copies) > 1,
                decision=decision, reasons=())


def _ready(session: SmtpSession) -> SmtpSession:
    """EHLO done, upstream connected, alice authenticated."""
    assert session.ehlo("client.test", AIOSMTPD_EHLO) == [ConnectUpstream()]
    session.feed(READY)
    assert session.auth(b"alice", b"pw") == [UpstreamLogin("alice", "pw")]
    assert session.feed(UpstreamOk("235 2.7.0 ok")) == [Authenticated("alice")]
    return session


def _transaction(session: SmtpSession, *recipients: str) -> None:
    assert session.mail(ALICE, ["SIZE=100", "BODY=8BITMIME"]) == [
        UpstreamMail(ALICE, ("BODY=8BITMIME",))]
    assert session.feed(UpstreamOk("250 2.1.0 Ok")) == [ClientReply("250 2.1.0 Ok")]
    for rcpt in recipients:
        assert session.rcpt(rcpt, []) == [UpstreamRcpt(rcpt)]
        assert session.feed(UpstreamOk("250 2.1.5 Ok")) == [ClientReply("250 2.1.5 Ok")]


def _state(session: SmtpSession) -> tuple[str | None, bool]:
    return session.sender, session.in_transaction


def _until_planned(session: SmtpSession) -> None:
    assert session.data("") == [ClientReply("354 End data with <CR><LF>.<CR><LF>"),
                                ReadData(5000)]
    assert session.feed(DataRead()) == [PlanMessage("alice", ALICE, tuple(session.recipients))]


def test_ehlo_connects_and_advertises_what_the_upstream_has() -> None:
    session = _session()
    assert session.ehlo("client.test", AIOSMTPD_EHLO) == [ConnectUpstream()]
    assert session.feed(READY) == [
        SetSizeLimit(5000),
        ClientReply("\r\n".join(["250-proxy.test", "250-SIZE 5000", "250-8BITMIME",
                                 "250-AUTH LOGIN PLAIN", "250-PIPELINING",
                                 "250-ENHANCEDSTATUSCODES", "250 HELP"])),
    ]
    assert not session.waiting
    # a second EHLO reuses the connection
    [reply] = session.ehlo("client.test", AIOSMTPD_EHLO)
    assert isinstance(reply, ClientReply) and "250-SIZE 5000" in reply.text


def test_size_is_capped_by_max_message_size() -> None:
    session = _session(max_message_size=1000)
    session.ehlo("c", AIOSMTPD_EHLO)
    assert session.feed(READY)[0] == SetSizeLimit(1000)
    other = _session()
    other.helo("c")
    assert other.feed(UpstreamReady(None, True, True)) == [
        SetSizeLimit(200 * 1024 * 1024), ClientReply("250 proxy.test")]


@pytest.mark.parametrize(("command", "code"), [("ehlo", "421"), ("helo", "451")])
def test_upstream_unreachable_at_greeting_ends_the_session(command: str, code: str) -> None:
    session = _session()
    actions = session.ehlo("c", AIOSMTPD_EHLO) if command == "ehlo" else session.helo("c")
    assert actions == [ConnectUpstream()]
    assert session.feed(UpstreamGone("refused")) == [
        CloseUpstream(),
        ClientReply(f"{code} 4.4.2 upstream server connection lost: message not sent, "
                    "try again"),
        CloseClient(),
    ]


def test_auth_outcomes() -> None:
    session = _session()
    session.ehlo("c", AIOSMTPD_EHLO)
    session.feed(READY)
    assert session.auth(b"\xff", b"pw") == [ClientReply("501 5.5.2 credentials are not UTF-8")]
    session.auth(b"alice", b"bad")
    assert session.feed(UpstreamFailed(535, "5.7.8 Error: authentication failed")) == [
        ClientReply("535 5.7.8 Authentication credentials invalid")]
    session.auth(b"alice", b"bad")
    assert session.feed(UpstreamFailed(554, "5.7.0 anything")) == [
        ClientReply("535 5.7.8 Authentication credentials invalid")]
    session.auth(b"alice", b"pw")
    assert session.feed(UpstreamFailed(454, "4.7.0 try later\nsecond line")) == [
        ClientReply("454-4.7.0 try later\r\n454 second line")]
    assert _user(session) is None
    session.auth(b"alice", b"pw")
    assert session.feed(UpstreamOk("235")) == [Authenticated("alice")]
    assert _user(session) == "alice"
    session.auth(b"mallory", b"guess")  # a later AUTH that fails leaves nobody logged in
    session.feed(UpstreamFailed(503, "5.5.1 Error: already authenticated"))
    assert _user(session) is None


def _user(session: SmtpSession) -> str | None:
    return session.user


def test_the_password_never_shows_in_a_repr() -> None:
    assert "s3cret" not in repr(UpstreamLogin("alice", "s3cret"))
    assert "body" not in repr(UpstreamData(b"body"))


def test_auth_connects_the_upstream_when_needed_and_a_loss_is_451() -> None:
    session = _session()
    assert session.auth(b"alice", b"pw") == [ConnectUpstream()]
    assert session.feed(READY) == [SetSizeLimit(5000), UpstreamLogin("alice", "pw")]
    assert session.feed(UpstreamGone("reset")) == [CloseUpstream(), LOST_451, CloseClient()]


def test_mail_and_rcpt_are_relayed_per_command() -> None:
    session = _ready(_session())
    assert session.mail(ALICE, []) == [UpstreamMail(ALICE)]
    assert session.feed(UpstreamFailed(451, "4.3.0 try later")) == [
        ClientReply("451 4.3.0 try later")]
    assert _state(session) == (None, False)
    _transaction(session, BOB)
    assert _state(session) == (ALICE, True)
    assert session.rcpt(CAROL, ["NOTIFY=NEVER"]) == [UpstreamRcpt(CAROL, ("NOTIFY=NEVER",))]
    assert session.feed(UpstreamFailed(550, "5.1.1 no such user")) == [
        ClientReply("550 5.1.1 no such user")]
    assert session.recipients == [BOB]


def test_mail_without_upstream_is_421() -> None:
    session = _session()
    assert session.mail(ALICE, []) == [ClientReply("421 4.4.2 upstream server connection lost")]
    assert session.rcpt(BOB, []) == [ClientReply("421 4.4.2 upstream server connection lost")]


def test_recipient_cap() -> None:
    session = _ready(_session(max_recipients=2))
    _transaction(session, BOB, CAROL)
    assert session.rcpt("dave@example.test", []) == [ClientReply("452 4.5.3 Too many recipients")]


def test_rset_quit_and_ehlo_in_a_transaction() -> None:
    session = _ready(_session())
    _transaction(session, BOB)
    assert session.ehlo("c", AIOSMTPD_EHLO) == [UpstreamRset()]  # the upstream's MAIL goes
    [reply] = session.feed(UpstreamOk("250 2.0.0 Ok"))
    assert isinstance(reply, ClientReply) and reply.text.startswith("250-proxy.test")
    assert session.sender is None and not session.in_transaction
    _transaction(session, BOB)
    assert session.rset() == [UpstreamRset()]
    assert session.feed(UpstreamOk("250 2.0.0 Ok")) == [ClientReply("250 2.0.0 OK")]
    assert session.recipients == []
    assert session.quit() == [UpstreamQuit(), ClientReply("221 2.0.0 Bye")]
    assert session.upstream is None


def test_data_checks() -> None:
    session = _ready(_session())
    assert session.data("") == [ClientReply("503 5.5.1 Error: need RCPT command")]
    _transaction(session, BOB)
    assert session.data("x") == [ClientReply("501 5.5.4 Syntax: DATA")]


@pytest.mark.parametrize(("read", "reply"), [
    (DataRead(too_big=True), "552 5.3.4 Message too big: the limit is 5000 bytes"),
    (DataRead(bare_line_end=True),
     "554 5.6.0 Message refused: bare CR or LF in the data (RFC 5321 2.3.8)"),
])
def test_refused_data_resets_the_upstream_transaction(read: DataRead, reply: str) -> None:
    session = _ready(_session())
    _transaction(session, BOB)
    session.data("")
    assert session.feed(read) == [UpstreamRset()]
    assert session.feed(UpstreamFailed(500, "whatever")) == [ClientReply(reply)]
    assert session.sender is None and session.recipients == []


def test_client_gone_during_data_answers_nothing() -> None:
    session = _ready(_session())
    _transaction(session, BOB)
    session.data("")
    assert session.feed(DataRead(closed=True)) == []
    assert not session.waiting


def test_one_copy_the_client_gets_the_upstreams_250() -> None:
    session = _ready(_session())
    _transaction(session, BOB)
    _until_planned(session)
    assert session.feed(MessagePlanned(_plan(((BOB,), b"m")), "d")) == [UpstreamData(b"m")]
    assert session.feed(UpstreamOk("250 2.0.0 Ok: queued as X")) == [
        ClientReply("250 2.0.0 Ok: queued as X")]
    assert session.sender is None and not session.in_transaction


@pytest.mark.parametrize("outcome", [UpstreamFailed(554, "5.7.0 no"),
                                     UpstreamGone("timeout")])
def test_one_copy_failure_is_relayed_or_451(outcome: UpstreamFailed | UpstreamGone) -> None:
    session = _ready(_session())
    _transaction(session, BOB)
    _until_planned(session)
    session.feed(MessagePlanned(_plan(((BOB,), b"m")), "d"))
    expected: list[Action] = ([ClientReply("554 5.7.0 no")]
                              if isinstance(outcome, UpstreamFailed)
                              else [CloseUpstream(), LOST_451, CloseClient()])
    assert session.feed(outcome) == expected


def test_plan_refused_or_failed() -> None:
    session = _ready(_session())
    _transaction(session, BOB)
    _until_planned(session)
    refusal = Reply(451, "4.7.0", "signing required but your S/MIME key is locked")
    assert session.feed(PlanRefused(refusal)) == [UpstreamRset()]
    assert session.feed(UpstreamOk("250")) == [ClientReply(refusal.line())]
    _transaction(session, BOB)
    _until_planned(session)
    assert session.feed(PlanFailed()) == [UpstreamRset()]
    assert session.feed(UpstreamGone("reset")) == [
        CloseUpstream(),
        ClientReply("451 4.3.0 Internal error while preparing the message: not sent")]
    assert session.upstream is None


def test_too_big_after_smime() -> None:
    session = _ready(_session())
    _transaction(session, BOB)
    _until_planned(session)
    assert session.feed(MessagePlanned(_plan(((BOB,), b"x" * 5001)), "d")) == [UpstreamRset()]
    assert session.feed(UpstreamOk("250")) == [ClientReply(
        "552 5.3.4 Message too big after S/MIME: 5001 bytes, the upstream limit is 5000")]


def _copies(session: SmtpSession) -> Plan:
    _transaction(session, BOB, CAROL)
    _until_planned(session)
    return _plan(((BOB,), b"to-bob"), ((CAROL,), b"to-carol"))


def test_copies_partial_failure_then_retry_sends_only_the_missing_one() -> None:
    memo = DeliveryMemo()
    session = _ready(_session(memo))
    plan = _copies(session)
    assert session.feed(MessagePlanned(plan, "digest")) == [UpstreamRset()]
    assert session.feed(UpstreamOk("250")) == [UpstreamMail(ALICE, ("BODY=8BITMIME",))]
    assert session.feed(UpstreamOk("250")) == [UpstreamRcpt(BOB)]
    assert session.feed(UpstreamOk("250")) == [UpstreamData(b"to-bob")]
    assert session.feed(UpstreamOk("250 2.0.0 Ok: queued as B")) == [
        UpstreamMail(ALICE, ("BODY=8BITMIME",))]
    assert session.feed(UpstreamOk("250")) == [UpstreamRcpt(CAROL)]
    assert session.feed(UpstreamOk("250")) == [UpstreamData(b"to-carol")]
    assert session.feed(UpstreamFailed(451, "4.3.0 disk full")) == [UpstreamRset()]
    assert session.feed(UpstreamOk("250")) == [ClientReply("451 4.3.0 disk full")]
    assert len(memo) == 1
    # the client retries (a new connection): bob's copy is not sent again
    again = _ready(_session(memo))
    plan = _copies(again)
    assert again.feed(MessagePlanned(plan, "digest")) == [UpstreamRset()]
    assert again.feed(UpstreamOk("250")) == [UpstreamMail(ALICE, ("BODY=8BITMIME",))]
    assert again.feed(UpstreamOk("250")) == [UpstreamRcpt(CAROL)]
    assert again.feed(UpstreamOk("250")) == [UpstreamData(b"to-carol")]
    assert again.feed(UpstreamOk("250 2.0.0 Ok: queued as C")) == [
        ClientReply("250 2.0.0 Ok: queued as C (2 separately encrypted copies)")]
    assert len(memo) == 0  # a later deliberate resend is sent in full


def test_copies_upstream_lost_midway_is_remembered_and_451() -> None:
    memo = DeliveryMemo()
    session = _ready(_session(memo))
    plan = _copies(session)
    session.feed(MessagePlanned(plan, "digest"))
    for _ in range(4):  # RSET, MAIL, RCPT bob, DATA bob
        session.feed(UpstreamOk("250 ok"))
    assert session.feed(UpstreamGone("reset")) == [CloseUpstream(), LOST_451, CloseClient()]
    assert len(memo) == 1


def test_copies_rset_refused_is_relayed() -> None:
    session = _ready(_session())
    plan = _copies(session)
    session.feed(MessagePlanned(plan, "digest"))
    assert session.feed(UpstreamFailed(503, "5.5.1 nope")) == [ClientReply("503 5.5.1 nope")]


def test_no_upstream_at_data_end_is_451() -> None:
    session = _ready(_session())
    _transaction(session, BOB)
    session.data("")
    session.upstream = None  # e.g. lost by an earlier abort
    assert session.feed(DataRead()) == [LOST_451]


def test_misuse_is_a_local_protocol_error() -> None:
    session = _session()
    with pytest.raises(LocalProtocolError):
        session.feed(UpstreamOk("250"))
    session.helo("c")
    with pytest.raises(LocalProtocolError):
        session.mail(ALICE, [])
    assert session.connection_lost() == [CloseUpstream()]
    assert not session.waiting


def test_memo_expires_and_is_bounded() -> None:
    now = [0.0]
    memo = DeliveryMemo(clock=lambda: now[0], seconds=10, size=2)
    memo.put("a", {("x",)})
    assert memo.get("a") == {("x",)}
    now[0] = 11
    assert memo.get("a") == set()
    memo.put("a", {("x",)})
    now[0] = 12
    memo.put("b", {("y",)})
    memo.put("c", {("z",)})  # full: the oldest goes
    assert memo.get("a") == set() and memo.get("c") == {("z",)}


def test_format_reply() -> None:
    assert format_reply(250, "ok") == "250 ok"
    assert format_reply(550, "a\n  b  c\n\n") == "550-a\r\n550 b c"
    assert format_reply(451, "") == "451 "


# --- AUTH guessing is throttled across connections (security issue, item 5) -----------------


def test_throttled_auth_is_454_and_never_reaches_the_upstream() -> None:
    gate = RecordingGate(blocked=("alice",), retry_after=4)
    session = SmtpSession(SmtpSessionSettings(hostname="proxy.test"), DeliveryMemo(), gate)
    session.ehlo("c", AIOSMTPD_EHLO)
    session.feed(READY)
    assert session.auth(b"alice", b"guess") == [ClientReply(
        "454 4.7.0 Too many failed authentication attempts; try again in 4 s")]
    assert session.user is None and gate.calls == [("reserve", "alice")]


def test_auth_outcomes_reach_the_gate() -> None:
    gate = RecordingGate()
    session = SmtpSession(SmtpSessionSettings(hostname="proxy.test"), DeliveryMemo(), gate)
    session.ehlo("c", AIOSMTPD_EHLO)
    session.feed(READY)
    session.auth(b"alice", b"wrong")
    assert session.feed(UpstreamFailed(535, "5.7.8 no")) == [
        ClientReply("535 5.7.8 Authentication credentials invalid")]
    session.auth(b"alice", b"pw")
    session.feed(UpstreamFailed(454, "4.7.0 try later"))  # not judged: undone
    session.auth(b"alice", b"pw")
    assert session.feed(UpstreamOk("235 2.7.0 ok")) == [Authenticated("alice")]
    assert gate.calls == [("reserve", "alice"), ("failed", "alice"), ("reserve", "alice"),
                          ("cancel", "alice"), ("reserve", "alice"), ("succeeded", "alice")]
