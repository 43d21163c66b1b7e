"""The SMTP proxy session: a sans-I/O core (events in, actions out; never awaits).

One `SmtpSession` per client connection holds the decisions of that connection; the shell
(`smtp.server`: aiosmtpd towards the client, `SubmissionUpstream` towards the upstream) parses
the client's commands, calls one event method per command (`helo`, `ehlo`, `auth`, `mail`,
`rcpt`, `rset`, `quit`, `data`, `connection_lost`) and executes the returned actions in
order. An action that needs an outcome is always the last of a batch: the shell performs it
and calls `feed(outcome)`, which returns the next batch.

    action                      outcome fed back
    ConnectUpstream             UpstreamReady | UpstreamGone
    UpstreamLogin/Mail/Rcpt/    UpstreamOk | UpstreamFailed | UpstreamGone
      Rset/Data
    ReadData (after the 354)    DataRead
    PlanMessage                 MessagePlanned | PlanRefused | PlanFailed
    ClientReply, Authenticated, SetSizeLimit, CloseUpstream, UpstreamQuit, CloseClient: none

`ClientReply` is the reply to the current command (possibly multi-line, CRLF-joined);
`Authenticated` means the AUTH succeeded (the shell answers 235); `CloseClient` ends the
client connection once the reply is written.

Decisions (DESIGN decision 6: pass-through, never store-and-forward):
- EHLO/HELO connect the upstream (one connection per client session, authenticated later
  with the client's own credentials); EHLO advertises SIZE (the upstream's, capped by
  `max_message_size`), and SMTPUTF8 / 8BITMIME only when the upstream has them.
- AUTH is the upstream's login: a 4xx is relayed, any 5xx becomes `535 5.7.8`.
- MAIL and RCPT are relayed per command (only BODY= and SMTPUTF8 MAIL parameters): the
  upstream's reply, success or failure, is the client's. At most `max_recipients` RCPTs.
- DATA: a too-big or smuggling-suspect message is refused after its end (552 / 554, with an
  upstream RSET); otherwise it is planned (`plan_submission`, run by the shell in a worker
  thread) and sent; the client's 250 is the upstream's 250 to the transformed message.
- Several copies (Bcc privacy) are separate transactions on the same upstream connection.
  If one fails the client gets the failure; the copies already accepted are remembered
  (`DeliveryMemo`: by user, envelope and message digest, for a day) and are not sent again
  when the client retries, so a retry neither loses nor duplicates mail.
- A lost or stalled upstream gives `451 4.4.2` (`421` to EHLO) and ends the client session:
  its authentication lived on that connection.

Nothing here logs a password, a key or a message body.

May import: errors, throttle, smtp, stdlib.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Final

from smime_proxy.errors import LocalProtocolError
from smime_proxy.smtp.memo import DeliveryMemo
from smime_proxy.smtp.submission import Plan, Reply
from smime_proxy.throttle import LoginGate, OpenGate, Throttled

__all__ = ["Action", "Authenticated", "ClientReply", "CloseClient", "CloseUpstream",
           "ConnectUpstream", "DataRead", "DeliveryMemo", "MessagePlanned", "Outcome",
           "PlanFailed", "PlanMessage", "PlanRefused", "ReadData", "SetSizeLimit", "SmtpSession",
           "SmtpSessionSettings", "UpstreamData", "UpstreamFailed", "UpstreamGone",
           "UpstreamLogin", "UpstreamMail", "UpstreamOk", "UpstreamQuit", "UpstreamRcpt",
           "UpstreamReady", "UpstreamRset", "format_reply"]

log = logging.getLogger("smime_proxy.smtp")

ALLOWED_MAIL_OPTIONS: Final = ("BODY=", "SMTPUTF8")
LOST: Final = "4.4.2 upstream server connection lost: message not sent, try again"


def format_reply(code: int, text: str) -> str:
    """A (possibly multi-line) reply for aiosmtpd's push(): `code-line` ... `code line`."""
    parts = [" ".join(p.split()) for p in text.splitlines() if p.strip()] or [""]
    head = [f"{code}-{p}" for p in parts[:-1]]
    return "\r\n".join([*head, f"{code} {parts[-1]}"])


# --- actions (out) ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientReply:
    """The reply to the client's current command (CRLF-joined lines, no final CRLF)."""

    text: str


@dataclass(frozen=True, slots=True)
class Authenticated:
    """The AUTH succeeded for `user` (the shell answers 235)."""

    user: str


@dataclass(frozen=True, slots=True)
class SetSizeLimit:
    """The largest message the client may send (advertised in EHLO, checked on MAIL SIZE=)."""

    limit: int


@dataclass(frozen=True, slots=True)
class CloseClient:
    """End the client connection once the replies so far are written."""


@dataclass(frozen=True, slots=True)
class CloseUpstream:
    """Drop the upstream connection (no QUIT)."""


@dataclass(frozen=True, slots=True)
class UpstreamQuit:
    """Say QUIT to the upstream and close it (failures ignored)."""


@dataclass(frozen=True, slots=True)
class ConnectUpstream:
    """Connect (and STARTTLS) a fresh upstream connection: `UpstreamReady` or `UpstreamGone`."""


@dataclass(frozen=True, slots=True)
class UpstreamLogin:
    user: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class UpstreamMail:
    sender: str
    options: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class UpstreamRcpt:
    recipient: str
    options: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class UpstreamRset:
    pass


@dataclass(frozen=True, slots=True)
class UpstreamData:
    """DATA with these exact bytes (the shell dot-stuffs them)."""

    message: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class ReadData:
    """Read the client's data up to its end marker, keeping at most `limit` bytes."""

    limit: int


@dataclass(frozen=True, slots=True)
class PlanMessage:
    """Run `plan_submission` on the data just read (off the event loop if large)."""

    user: str
    sender: str
    recipients: tuple[str, ...]


Action = (ClientReply | Authenticated | SetSizeLimit | CloseClient | CloseUpstream | UpstreamQuit
          | ConnectUpstream | UpstreamLogin | UpstreamMail | UpstreamRcpt | UpstreamRset
          | UpstreamData | ReadData | PlanMessage)
NEEDS_OUTCOME: Final = (ConnectUpstream, UpstreamLogin, UpstreamMail, UpstreamRcpt, UpstreamRset,
                        UpstreamData, ReadData, PlanMessage)


# --- outcomes (in) ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UpstreamReady:
    size_limit: int | None
    eight_bit: bool
    smtputf8: bool


@dataclass(frozen=True, slots=True)
class UpstreamOk:
    reply: str  # as the client gets it (format_reply)


@dataclass(frozen=True, slots=True)
class UpstreamFailed:
    code: int
    text: str

    def lines(self) -> str:
        return format_reply(self.code, self.text)


@dataclass(frozen=True, slots=True)
class UpstreamGone:
    reason: str  # for the log (never message content)


@dataclass(frozen=True, slots=True)
class DataRead:
    too_big: bool = False
    bare_line_end: bool = False
    closed: bool = False  # the client went away before the end of data


@dataclass(frozen=True, slots=True)
class MessagePlanned:
    plan: Plan
    digest: str  # of the received message (the retry memo's key)


@dataclass(frozen=True, slots=True)
class PlanRefused:
    reply: Reply


@dataclass(frozen=True, slots=True)
class PlanFailed:
    """An unexpected error while planning (the shell logged it)."""


Outcome = (UpstreamReady | UpstreamOk | UpstreamFailed | UpstreamGone | DataRead
           | MessagePlanned | PlanRefused | PlanFailed)
_Step = Generator[Action, Outcome | None, None]


@dataclass(frozen=True)
class SmtpSessionSettings:
    hostname: str = "smime-proxy"
    max_message_size: int = 200 * 1024 * 1024
    max_recipients: int = 1000


# --- the session --------------------------------------------------------------------------


class SmtpSession:
    """The decisions of one client connection (see the module docstring)."""

    def __init__(self, settings: SmtpSessionSettings, memo: DeliveryMemo,
                 gate: LoginGate | None = None) -> None:
        self.settings = settings
        self.memo = memo
        self.gate: LoginGate = gate if gate is not None else OpenGate()
        self.user: str | None = None
        self.data_size_limit = settings.max_message_size
        self.upstream: UpstreamReady | None = None  # None: no usable upstream connection
        self.in_transaction = False  # upstream side: MAIL accepted, no DATA/RSET since
        # the client's transaction (mirrored by the shell into aiosmtpd's envelope)
        self.sender: str | None = None
        self.mail_options: list[str] = []
        self.recipients: list[str] = []
        self._step: _Step | None = None

    @property
    def waiting(self) -> bool:
        """An action's outcome is expected (`feed`)."""
        return self._step is not None

    # --- events from the client ------------------------------------------------------------

    def helo(self, hostname: str) -> list[Action]:
        return self._start(self._helo())

    def ehlo(self, hostname: str, responses: Sequence[str]) -> list[Action]:
        """`responses`: aiosmtpd's own EHLO lines (they depend on the TLS and AUTH state)."""
        return self._start(self._ehlo(list(responses)))

    def auth(self, login: bytes, password: bytes) -> list[Action]:
        return self._start(self._auth(login, password))

    def mail(self, address: str, options: Sequence[str]) -> list[Action]:
        return self._start(self._mail(address, list(options)))

    def rcpt(self, address: str, options: Sequence[str]) -> list[Action]:
        return self._start(self._rcpt(address, list(options)))

    def rset(self) -> list[Action]:
        return self._start(self._rset())

    def quit(self) -> list[Action]:
        return self._start(self._quit())

    def data(self, arg: str) -> list[Action]:
        """DATA (HELO and AUTH already checked by the shell)."""
        return self._start(self._data(arg))

    def connection_lost(self) -> list[Action]:
        self._step = None
        self.upstream = None
        return [CloseUpstream()]

    def feed(self, outcome: Outcome) -> list[Action]:
        """The outcome of the last action of the previous batch."""
        if self._step is None:
            raise LocalProtocolError(f"no action waits for {type(outcome).__name__}")
        return self._run(outcome)

    # --- driving the steps -----------------------------------------------------------------

    def _start(self, step: _Step) -> list[Action]:
        if self._step is not None:
            raise LocalProtocolError("a command arrived while an action was pending")
        self._step = step
        return self._run(None)

    def _run(self, outcome: Outcome | None) -> list[Action]:
        assert self._step is not None
        out: list[Action] = []
        try:
            action = self._step.send(outcome)
            while True:
                out.append(action)
                if isinstance(action, NEEDS_OUTCOME):
                    return out
                action = self._step.send(None)
        except StopIteration:
            self._step = None
        return out

    # --- commands --------------------------------------------------------------------------

    def _reset_transaction(self) -> None:
        self.sender = None
        self.mail_options = []
        self.recipients = []

    def _helo(self) -> _Step:
        self._reset_transaction()
        if (yield from self._ensure_upstream("451")):
            yield ClientReply(f"250 {self.settings.hostname}")

    def _ehlo(self, responses: list[str]) -> _Step:
        self._reset_transaction()
        if not (yield from self._ensure_upstream("421")):
            return
        if self.in_transaction:
            outcome = yield UpstreamRset()
            if isinstance(outcome, UpstreamGone):
                yield from self._lost(outcome, "421")
                return
            if isinstance(outcome, UpstreamFailed):
                yield ClientReply(outcome.lines())
                return
            self.in_transaction = False
        upstream = self.upstream
        assert upstream is not None
        out: list[str] = []
        for line in responses[:-1]:
            keyword = line[4:].split(" ", 1)[0].upper()
            if keyword == "SIZE":
                line = f"250-SIZE {self.data_size_limit}"
            if keyword == "SMTPUTF8" and not upstream.smtputf8:
                continue
            if keyword == "8BITMIME" and not upstream.eight_bit:
                continue
            out.append(line)
        out.extend(["250-PIPELINING", "250-ENHANCEDSTATUSCODES", "250 HELP"])
        yield ClientReply("\r\n".join(out))

    def _auth(self, login: bytes, password: bytes) -> _Step:
        self.user = None  # a new AUTH (e.g. after STARTTLS) replaces any earlier identity
        try:
            user = login.decode("utf-8")
            secret = password.decode("utf-8")
        except UnicodeDecodeError:
            yield ClientReply("501 5.5.2 credentials are not UTF-8")
            return
        try:
            self.gate.reserve(user)  # failures per user and client address, all connections
        except Throttled as exc:
            yield ClientReply(f"454 4.7.0 Too many failed authentication attempts; try again"
                              f" in {exc.retry_after} s")
            return
        if not (yield from self._ensure_upstream("451")):
            self.gate.cancel(user)
            return
        outcome = yield UpstreamLogin(user, secret)
        del secret
        if isinstance(outcome, UpstreamGone):
            self.gate.cancel(user)
            yield from self._lost(outcome)
        elif isinstance(outcome, UpstreamFailed):
            log.info("AUTH refused by the upstream", extra={"code": outcome.code, "user": user})
            if 400 <= outcome.code < 500:
                self.gate.cancel(user)  # the upstream could not judge the password
                yield ClientReply(outcome.lines())
            else:
                self.gate.failed(user)
                yield ClientReply("535 5.7.8 Authentication credentials invalid")
        else:
            self.user = user
            self.gate.succeeded(user)
            log.info("authenticated", extra={"user": user})
            yield Authenticated(user)

    def _mail(self, address: str, options: list[str]) -> _Step:
        if self.upstream is None:
            yield ClientReply("421 4.4.2 upstream server connection lost")
            return
        outcome = yield UpstreamMail(address, _mail_options(options))
        if (reply := (yield from self._relayed(outcome))) is not None:
            self.in_transaction = True
            self.sender = address
            self.mail_options.extend(options)
            yield ClientReply(reply)

    def _rcpt(self, address: str, options: list[str]) -> _Step:
        if self.upstream is None:
            yield ClientReply("421 4.4.2 upstream server connection lost")
            return
        if len(self.recipients) >= self.settings.max_recipients:
            yield ClientReply("452 4.5.3 Too many recipients")
            return
        outcome = yield UpstreamRcpt(address, tuple(options))
        if (reply := (yield from self._relayed(outcome))) is not None:
            self.recipients.append(address)
            yield ClientReply(reply)

    def _rset(self) -> _Step:
        self._reset_transaction()
        if self.upstream is not None:
            outcome = yield UpstreamRset()
            if (yield from self._relayed(outcome)) is None:
                return
            self.in_transaction = False
        yield ClientReply("250 2.0.0 OK")

    def _quit(self) -> _Step:
        self.upstream = None
        self.in_transaction = False
        yield UpstreamQuit()
        yield ClientReply("221 2.0.0 Bye")

    def _data(self, arg: str) -> _Step:
        if not self.recipients:
            yield ClientReply("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            yield ClientReply("501 5.5.4 Syntax: DATA")
            return
        yield ClientReply("354 End data with <CR><LF>.<CR><LF>")
        read = yield ReadData(self.data_size_limit)
        assert isinstance(read, DataRead)
        if read.closed:
            return
        reply: str | None
        if read.too_big:
            yield from self._abort()
            reply = f"552 5.3.4 Message too big: the limit is {self.data_size_limit} bytes"
        elif read.bare_line_end:
            yield from self._abort()
            reply = "554 5.6.0 Message refused: bare CR or LF in the data (RFC 5321 2.3.8)"
        else:
            reply = yield from self._deliver()
        self._reset_transaction()
        if reply is not None:
            yield ClientReply(reply)

    # --- delivery --------------------------------------------------------------------------

    def _deliver(self) -> Generator[Action, Outcome | None, str | None]:
        """Plan, then relay; the client's reply (None: already given, the session ends)."""
        if self.upstream is None or self.user is None:
            return "451 " + LOST
        sender = self.sender or ""
        outcome = yield PlanMessage(self.user, sender, tuple(self.recipients))
        if isinstance(outcome, PlanRefused):
            log.info("message refused", extra={"user": self.user, "code": outcome.reply.code,
                                                "reason": outcome.reply.text})
            yield from self._abort()
            return outcome.reply.line()
        if not isinstance(outcome, MessagePlanned):
            yield from self._abort()
            return "451 4.3.0 Internal error while preparing the message: not sent"
        plan = outcome.plan
        limit = self.upstream.size_limit
        for copy in plan.copies:
            if limit and len(copy.message) > limit:
                yield from self._abort()
                return (f"552 5.3.4 Message too big after S/MIME: {len(copy.message)} bytes,"
                        f" the upstream limit is {limit}")
        log.info("relaying", extra={"user": self.user, "signed": plan.signed,
                                    "encrypted": plan.encrypted, "copies": len(plan.copies),
                                    "recipients": len(self.recipients)})
        if len(plan.copies) == 1:
            sent = yield UpstreamData(plan.copies[0].message)
            self.in_transaction = False
            return (yield from self._relayed(sent))
        return (yield from self._deliver_copies(plan, outcome.digest))

    def _deliver_copies(self, plan: Plan, digest: str
                        ) -> Generator[Action, Outcome | None, str | None]:
        """Several transactions (Bcc copies) on the one upstream connection; copies the memo
        knows as accepted (a retry after a partial failure) are not sent again."""
        sender = self.sender or ""
        key = "\x00".join([self.user or "", sender, *sorted(self.recipients), digest])
        done = self.memo.get(key)
        outcome = yield UpstreamRset()
        if (yield from self._relayed(outcome)) is None:
            return None
        self.in_transaction = False
        options = _mail_options(self.mail_options)
        last = ""
        for copy in plan.copies:
            if copy.recipients in done:
                continue
            steps: list[Action] = [UpstreamMail(sender, options),
                                   *(UpstreamRcpt(r) for r in copy.recipients),
                                   UpstreamData(copy.message)]
            for action in steps:
                self.in_transaction = not isinstance(action, UpstreamData)
                outcome = yield action
                if isinstance(outcome, UpstreamOk):
                    last = outcome.reply
                    continue
                self.memo.put(key, done)
                if isinstance(outcome, UpstreamFailed):
                    yield from self._abort()
                    yield ClientReply(outcome.lines())
                else:
                    assert isinstance(outcome, UpstreamGone)
                    yield from self._lost(outcome)
                return None
            done.add(copy.recipients)
        self.memo.put(key, set())
        code_text = last.split(" ", 1)[1] if " " in last else "2.0.0 Ok"
        return f"250 {code_text} ({len(plan.copies)} separately encrypted copies)"

    # --- helpers ---------------------------------------------------------------------------

    def _ensure_upstream(self, code: str) -> Generator[Action, Outcome | None, bool]:
        if self.upstream is not None:
            return True
        outcome = yield ConnectUpstream()
        if not isinstance(outcome, UpstreamReady):
            assert isinstance(outcome, UpstreamGone)
            yield from self._lost(outcome, code)
            return False
        self.upstream = outcome
        self.in_transaction = False
        size, limit = outcome.size_limit, self.settings.max_message_size
        self.data_size_limit = min(size, limit) if size else limit
        yield SetSizeLimit(self.data_size_limit)
        return True

    def _relayed(self, outcome: Outcome | None) -> Generator[Action, Outcome | None, str | None]:
        """The reply of a relayed command: the upstream's success text, or None once its
        failure (or the lost connection) has been answered."""
        if isinstance(outcome, UpstreamOk):
            return outcome.reply
        if isinstance(outcome, UpstreamFailed):
            yield ClientReply(outcome.lines())
        else:
            assert isinstance(outcome, UpstreamGone)
            yield from self._lost(outcome)
        return None

    def _lost(self, outcome: UpstreamGone, code: str = "451") -> _Step:
        """The upstream is gone: this session cannot continue (its AUTH lived there)."""
        log.warning("upstream lost: %s", outcome.reason)
        self.upstream = None
        self.in_transaction = False
        yield CloseUpstream()
        yield ClientReply(f"{code} {LOST}")
        yield CloseClient()

    def _abort(self) -> _Step:
        """RSET the upstream transaction after a refusal; its failure changes nothing."""
        if self.upstream is None:
            return
        outcome = yield UpstreamRset()
        if isinstance(outcome, UpstreamOk):
            self.in_transaction = False
        elif isinstance(outcome, UpstreamGone):
            self.upstream = None
            self.in_transaction = False
            yield CloseUpstream()


def _mail_options(options: Sequence[str]) -> tuple[str, ...]:
    """The MAIL parameters relayed upstream (SIZE= is the client's, not the copy's)."""
    return tuple(o for o in options if o.upper().startswith(ALLOWED_MAIL_OPTIONS))
