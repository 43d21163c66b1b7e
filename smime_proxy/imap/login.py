"""How the IMAP session handles logins (a part of `imap.session.ImapSession`, kept here to
keep that module readable): the commands it answers itself before login (CAPABILITY, NOOP,
LOGOUT) and STARTTLS, LOGIN and AUTHENTICATE PLAIN relayed with the client's own
credentials, the login throttle asked before each attempt and told the outcome, a failed
login answered after a pause, and the session set up for the user once the upstream says OK.

May import: imap.wire, imap.events, imap.inflight, imap.negotiation, imap.view_cache,
imap.streaming, throttle, stdlib (logging: the user and the upstream's refusal, never a
credential).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final, Literal

from smime_proxy.imap.events import (
    Action,
    Close,
    MailLogin,
    Pause,
    SendToClient,
    SendToUpstream,
    SessionSettings,
    StartClientTls,
)
from smime_proxy.imap.inflight import RelayedCommand
from smime_proxy.imap.negotiation import sasl_plain_credentials
from smime_proxy.imap.streaming import MAX_MESSAGE, MAX_STREAMED, STREAM_AT
from smime_proxy.imap.view_cache import ViewCache
from smime_proxy.imap.wire import MAX_LINE, GenericCommand, ServerFramer
from smime_proxy.throttle import LoginGate, Throttled

log = logging.getLogger(__name__)
FAILED_LOGIN_DELAY: Final = 2.0
MAX_LITERAL_BEFORE_LOGIN: Final = 64 * 1024
NOT_THE_PASSWORD: Final = (b"[UNAVAILABLE]", b"[LIMIT]", b"[SERVERBUG]", b"[INUSE]",
                             b"[PRIVACYREQUIRED]", b"[CONTACTADMIN]")


def password_refused(status: bytes) -> bool:
    """Whether a tagged LOGIN/AUTHENTICATE answer says the credentials were wrong: NO, but
    not with a code that names another cause (RFC 5530: the server is busy, the user is at
    a connection limit, ...), which is neither paused nor counted as a guess."""
    upper = status.upper()
    return upper.startswith(b"NO") and not upper[2:].lstrip().startswith(NOT_THE_PASSWORD)



class Logins:
    """The login half of the session (a mixin: the session provides the state)."""

    settings: SessionSettings
    gate: LoginGate
    client: ServerFramer
    state: Literal["starting", "not_authenticated", "authenticated", "closed"]
    user: str | None
    views: ViewCache
    _views_for: Callable[[str], ViewCache] | None
    tls_active: bool
    starttls_available: bool
    _awaiting_tls: bool
    _out: list[Action]

    def _local(self, tag: bytes, name: str, raw: bytes) -> None:
        """CAPABILITY, NOOP, LOGOUT before login and STARTTLS: answered by the proxy."""
        if name == "CAPABILITY":
            caps = b" ".join(c.encode("ascii") for c in self._caps())
            self._out.append(SendToClient(b"* CAPABILITY " + caps + b"\r\n" + tag
                                          + b" OK Capability completed\r\n"))
        elif name == "NOOP":
            self._out.append(SendToClient(tag + b" OK NOOP completed\r\n"))
        elif name == "LOGOUT":
            self._out.append(SendToClient(b"* BYE Logging out\r\n" + tag
                                          + b" OK Logout completed\r\n"))
            self._out.append(Close("logout"))
            self.state = "closed"
        elif not self.starttls_available or self.state == "authenticated" or (
            raw.upper().rstrip(b"\r\n") != tag.upper() + b" STARTTLS"
        ):
            self._bad(tag, b"STARTTLS not available")
        else:
            self._out.append(SendToClient(tag + b" OK Begin TLS negotiation now\r\n"))
            self._out.append(StartClientTls())
            self._awaiting_tls = True
            # Anything the client sent after STARTTLS, before the handshake, is dropped.
            self.client = ServerFramer(max_line_length=MAX_LINE, max_message_size=MAX_MESSAGE,
                                       max_literal_size=MAX_LITERAL_BEFORE_LOGIN)

    def _relay(self, tag: bytes, raw: bytes, *, login: bool = False,
               login_user: str | None = None, login_secret: bytes = b"",
               sasl_plain: bool = False, select: bool = False, plain_fetch: bool = False,
               pipelined: bool = False) -> None:
        raise NotImplementedError

    def _caps(self) -> list[str]:
        raise NotImplementedError

    def _bad(self, tag: bytes, text: bytes) -> None:
        raise NotImplementedError

    def _login_allowed(self) -> bool:
        return self.tls_active or self.settings.plaintext_login

    def _login_answered(self, job: RelayedCommand, status: bytes, ok: bool) -> None:
        """The upstream's tagged answer to a LOGIN / AUTHENTICATE (`status`: after the tag)."""
        if ok:
            self.user = job.login_user or ""
            self.state = "authenticated"
            if self._views_for is not None:
                self.views = self._views_for(self.user)
            self.client.max_literal_size = MAX_STREAMED  # APPEND: as the upstream takes
            self.client.stream_threshold = STREAM_AT
            self.gate.succeeded(self.user)
            log.info("IMAP login", extra={"user": self.user})
            if job.login_secret:  # before the client's OK: it may unlock the key
                self._out.append(MailLogin(self.user, job.login_secret))
                job.login_secret = b""
            return
        job.login_secret = b""
        # the upstream's words (a response code and text, never a credential)
        reason = status.rstrip(b"\r\n").decode("ascii", "replace")[:200]
        if password_refused(status):
            self.gate.failed(job.login_user or "")  # stays counted
            self._out.append(Pause(FAILED_LOGIN_DELAY))
        else:  # BAD, or NO [UNAVAILABLE] / [LIMIT]...: no password was judged wrong
            self.gate.cancel(job.login_user or "")
        log.info("IMAP login refused by the upstream",
                 extra={"user": job.login_user or "", "reason": reason})

    def _client_continuation(self, job: RelayedCommand, raw: bytes) -> None:
        """A line the client sends after a "+" of the upstream (SASL data, IDLE's DONE)."""
        job.client_continues = False
        if job.sasl_plain:
            job.sasl_plain = False
            job.login_user, job.login_secret = sasl_plain_credentials(raw.rstrip(b"\r\n"))
            refusal = self._throttled(job.login_user or "")
            if refusal is not None:
                job.throttled = refusal
                self._out.append(SendToUpstream(b"*\r\n"))  # cancel the exchange (RFC 9051 6.2.2)
                return
        self._out.append(SendToUpstream(raw))

    def _login(self, tag: bytes, raw: bytes, user: str, secret: bytes) -> None:
        """LOGIN, or AUTHENTICATE PLAIN with its initial response: relayed unless throttled."""
        refusal = self._throttled(user)
        if refusal is not None:
            self._out.append(SendToClient(tag + b" " + refusal))
        else:
            self._relay(tag, raw, login=True, login_user=user, login_secret=secret)

    def _throttled(self, user: str) -> bytes | None:
        """None when this login attempt may go upstream; else the NO text to answer."""
        try:
            self.gate.reserve(user)
        except Throttled as exc:
            return (b"NO [UNAVAILABLE] Too many failed login attempts; try again in %d s\r\n"
                    % exc.retry_after)
        return None

    def _authenticate(self, command: GenericCommand, raw: bytes) -> None:
        tag = command.tag
        args = command.args.split(b" ")
        if not args or args[0].upper() != b"PLAIN" or len(args) > 2:
            self._out.append(SendToClient(tag + b" NO [CANNOT] Only AUTHENTICATE PLAIN\r\n"))
            return
        if not self._login_allowed():
            self._out.append(SendToClient(
                tag + b" NO [PRIVACYREQUIRED] Use STARTTLS or TLS first\r\n"))
            return
        if len(args) == 2:
            user, secret = sasl_plain_credentials(args[1])
            self._login(tag, raw, user or "", secret)
        else:
            self._relay(tag, raw, login=True, sasl_plain=True)

