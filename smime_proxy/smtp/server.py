"""The SMTP submission front's I/O shell: the aiosmtpd listener (client side, TLS, DATA
reading) and one `SubmissionUpstream` per client connection, around the sans-I/O core
`smtp.session.SmtpSession`, which decides every reply (see its docstring for the behaviour).

- TLS: `starttls` (offered on the plain port; commands pipelined before the handshake are
  discarded by aiosmtpd) or `implicit`. AUTH PLAIN/LOGIN only over TLS, except from a
  loopback client when the listener has `plaintext_loopback: true`.
- aiosmtpd parses the client's commands (and SASL PLAIN/LOGIN); each is handed to the core,
  whose actions are carried out here: upstream commands (their outcome is fed back), the
  DATA read by `smtp.data.DataReader` (size limit enforced before buffering past it; bare
  CR/LF refused, never split), `plan_submission` (in a worker thread for large messages),
  replies, closing.
- The client's own Sent copy is an IMAP APPEND, never seen here.

Nothing here logs a password, a key or a message body.

May import: accounts, throttle, config, errors, keystore, memory, metrics, policy, revocation,
services, smtp, tlsconfig, aiosmtpd, cryptography, stdlib.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import ssl
import time
from base64 import b64decode
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, Session
from cryptography import x509

from smime_proxy.accounts import Accounts
from smime_proxy.config import ListenerConfig, Revocation, UpstreamEndpoint, control_url
from smime_proxy.errors import ConfigError
from smime_proxy.keystore.contacts import Contacts
from smime_proxy.keystore.ldap import LdapDirectory
from smime_proxy.keystore.service import SecureMail
from smime_proxy.memory import tune_memory
from smime_proxy.metrics import MailMetrics
from smime_proxy.policy import Policy, load_policy
from smime_proxy.revocation import RevocationChecker
from smime_proxy.services import Services
from smime_proxy.smtp.data import DataReader
from smime_proxy.smtp.directory import CertificateDirectory
from smime_proxy.smtp.keys import CertificateCache, ServiceKeys
from smime_proxy.smtp.relay import (
    DEFAULT_TIMEOUT,
    SubmissionUpstream,
    UpstreamLost,
    UpstreamReply,
)
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
    Outcome,
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
)
from smime_proxy.smtp.submission import Plan, SubmissionRefused, plan_submission
from smime_proxy.throttle import AddressGate, Throttle
from smime_proxy.tlsconfig import is_loopback_peer, listener_context, upstream_context

__all__ = ["CertificateCache", "ServiceKeys", "SmtpConnection", "SmtpFront", "SmtpSettings"]

log = logging.getLogger("smime_proxy.smtp")


class _AiosmtpdLogFilter(logging.Filter):
    """aiosmtpd's own log lines that must not be written: what `challenge_auth` logs below
    WARNING (an AUTH answer that is not base64 - often a raw password - and, if ever
    enabled, the answers themselves), DATA lines (a message body), and the deprecation
    warning it triggers itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.funcName == "challenge_auth" and record.levelno < logging.WARNING:
            return False
        text = str(record.msg)
        return not (text.startswith("DATA readline") or "login_data is deprecated" in text)


logging.getLogger("mail.log").addFilter(_AiosmtpdLogFilter())

READ_CHUNK = 65536
_SIMPLE_PATH = re.compile(
    r"\s*<((?![.])[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+(?<![.])@[A-Za-z0-9](?:[A-Za-z0-9.-]*"
    r"[A-Za-z0-9])?)>[ \t]*([^(]*)\Z", re.DOTALL)
INLINE_LIMIT = 256 * 1024


@dataclass(frozen=True)
class SmtpSettings:
    timeout: float = DEFAULT_TIMEOUT  # per upstream step
    max_message_size: int = 200 * 1024 * 1024
    max_recipients: int = 1000
    hostname: str = "smime-proxy"
    client_timeout: float = 300.0



class SmtpFront:
    """The `Front` of SMTP submission (see app.Front)."""

    name = "smtp"

    def __init__(
        self,
        *,
        secure_mail: SecureMail,
        contacts: Contacts,
        listener: ListenerConfig,
        upstream: UpstreamEndpoint,
        unlock_url: str,
        policy: Policy | None = None,
        policy_file: Path | None = None,
        now: Callable[[], datetime],
        settings: SmtpSettings = SmtpSettings(),
        accounts: Accounts | None = None,
        metrics: MailMetrics | None = None,
        ldap: LdapDirectory | None = None,
        revocation: RevocationChecker | None = None,
        revocation_mode: Revocation = "off",
        issuers: tuple[x509.Certificate, ...] = (),
    ) -> None:
        self.ldap = ldap
        self.revocation = revocation if revocation_mode != "off" else None
        self.revocation_mode = revocation_mode
        self.issuers = issuers
        self.metrics = metrics if metrics is not None else MailMetrics()
        self.secure_mail = secure_mail
        self.accounts = accounts if accounts is not None else Accounts()
        self.contacts = contacts
        self.listener = listener
        self.upstream = upstream
        self.unlock_url = unlock_url
        self.policy_file = policy_file
        self.policy = policy if policy is not None else (
            load_policy(policy_file) if policy_file is not None else Policy())
        self.now = now
        self.login_throttle = Throttle(now)  # AUTH failures, across connections
        self.settings = settings
        self._server: asyncio.Server | None = None
        self._sessions: set[SmtpConnection] = set()
        self.memo = DeliveryMemo()
        self.certificates = CertificateCache()
        self.directory = CertificateDirectory.load(self.policy.certificate_dir)
        self._tls = listener_context(listener, "smtp")
        self._upstream_tls: ssl.SSLContext | None = None

    def upstream_tls(self) -> ssl.SSLContext | None:
        """The client TLS context for the upstream, built once and shared by the sessions."""
        if self._upstream_tls is None and self.upstream.tls != "none":
            self._upstream_tls = upstream_context(self.upstream)
        return self._upstream_tls

    @classmethod
    def from_services(cls, services: Services) -> SmtpFront:
        """Build from the daemon's `Services`, and register the policy reload hook."""
        config = services.config
        front = cls(
            secure_mail=services.secure_mail, contacts=services.contacts,
            listener=config.listeners.smtp, upstream=config.upstream.smtp,
            unlock_url=control_url(config.listeners.control),
            policy_file=config.policy_file, now=services.now,
            accounts=Accounts.from_config(config), metrics=services.metrics,
            ldap=services.ldap, revocation=services.revocation,
            revocation_mode=config.revocation, issuers=services.trust_roots,
        )
        services.reload_hooks.append(front.reload_policy)
        return front

    def reload_policy(self) -> None:
        """SIGHUP: load the policy file again; on error the old policy stays (raises)."""
        if self.policy_file is not None:
            policy = load_policy(self.policy_file)
            directory = CertificateDirectory.load(policy.certificate_dir)
            self.policy, self.directory = policy, directory
            self.certificates.clear()
            log.info("policy reloaded", extra={"rules": len(policy.rules),
                                               "directory_addresses": len(directory.by_address)})

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return self.listener.port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def implicit_tls(self) -> bool:
        return self.listener.tls is not None and self.listener.tls.mode == "implicit"

    async def start(self) -> None:
        tune_memory()  # idempotent; `smime-proxy serve` did it already
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: SmtpConnection(self), self.listener.host, self.listener.port,
                ssl=self._tls if self.implicit_tls else None,
            )
        except OSError as exc:
            raise ConfigError(f"listeners.smtp.port: cannot listen on {self.listener.host} "
                              f"port {self.listener.port}: {exc.strerror}") from None

    async def stop(self, grace: float) -> None:
        if self._server is not None:
            self._server.close()
        deadline = time.monotonic() + grace
        while self._sessions and time.monotonic() < deadline:
            if not any(s.busy for s in self._sessions):
                break
            await asyncio.sleep(0.05)
        for session in list(self._sessions):
            session.close_now()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None


class SmtpConnection(SMTP):
    """One client connection: aiosmtpd's protocol, the core's actions carried out."""

    def __init__(self, front: SmtpFront) -> None:
        self.front = front
        settings = front.settings
        self.core = SmtpSession(
            SmtpSessionSettings(hostname=settings.hostname,
                                max_message_size=settings.max_message_size,
                                max_recipients=settings.max_recipients),
            front.memo)
        self.upstream: SubmissionUpstream | None = None
        self.busy = False
        self._content: bytes | None = None  # the DATA just read, until planned
        self._line_limit: int | None = None  # aiosmtpd's reader limit while DATA is read
        starttls = front.listener.tls is not None and front.listener.tls.mode == "starttls"
        super().__init__(
            _Hooks(self),
            data_size_limit=settings.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=settings.hostname,
            ident="smime-proxy",
            tls_context=front._tls if starttls else None,
            auth_required=True,
            auth_require_tls=True,
            timeout=settings.client_timeout,
        )

    # --- connection ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self._original_transport is None and getattr(self, "transport", None) is None
        super().connection_made(transport)
        if first:
            self.front._sessions.add(self)
            implicit = transport.get_extra_info("sslcontext") is not None
            loopback_ok = (self.front.listener.plaintext_loopback
                           and is_loopback_peer(transport.get_extra_info("peername")))
            self._auth_require_tls = not (implicit or loopback_ok)
            peer = transport.get_extra_info("peername")
            address = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
            self.core.gate = AddressGate(self.front.login_throttle, address, "smtp",
                                         self.front.metrics.refusals)

    def connection_lost(self, error: Exception | None) -> None:
        self.front._sessions.discard(self)
        self.core.connection_lost()
        self._close_upstream()
        super().connection_lost(error)

    def close_now(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _close_upstream(self) -> None:
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None

    # --- carrying out the core's actions ---------------------------------------------------

    async def run(self, actions: list[Action]) -> list[str]:
        """Carry out `actions` (and those the fed-back outcomes bring); the client replies,
        in order (any before a `ReadData` are pushed at once)."""
        replies: list[str] = []
        queue = deque(actions)
        while queue:
            action = queue.popleft()
            if isinstance(action, ClientReply):
                replies.append(action.text)
            elif isinstance(action, Authenticated):
                pass  # the AUTH glue answers 235
            elif isinstance(action, SetSizeLimit):
                self.data_size_limit = action.limit
            elif isinstance(action, CloseUpstream):
                self._close_upstream()
            elif isinstance(action, UpstreamQuit):
                if self.upstream is not None:
                    await self.upstream.quit()
                    self.upstream = None
            elif isinstance(action, CloseClient):
                asyncio.get_running_loop().call_soon(self.close_now)
            else:
                if isinstance(action, ReadData):
                    self._widen_reader()  # before the 354: the data follows it at once
                    for reply in replies:
                        await self.push(reply)
                    replies.clear()
                queue.extend(self.core.feed(await self._perform(action)))
        return replies

    async def _perform(self, action: Action) -> Outcome:
        if isinstance(action, ReadData):
            return await self._read_data(action.limit)
        if isinstance(action, PlanMessage):
            return await self._plan(action)
        if isinstance(action, ConnectUpstream):
            self._close_upstream()
            upstream = SubmissionUpstream(self.front.upstream,
                                          timeout=self.front.settings.timeout,
                                          local_hostname=self.front.settings.hostname,
                                          tls_context=self.front.upstream_tls())
            try:
                await upstream.connect()
            except UpstreamLost as exc:
                self.front.metrics.upstream_errors.labels("smtp", "unreachable").inc()
                return UpstreamGone(str(exc))
            self.upstream = upstream
            return UpstreamReady(upstream.size_limit, upstream.eight_bit, upstream.smtputf8)
        current = self.upstream
        if current is None or not current.connected:
            return UpstreamGone("the upstream connection is closed")
        try:
            if isinstance(action, UpstreamLogin):
                await current.login(action.user, action.password)
                return UpstreamOk("235 2.7.0 Authentication successful")
            if isinstance(action, UpstreamMail):
                return UpstreamOk(await current.mail(action.sender, action.options))
            if isinstance(action, UpstreamRcpt):
                return UpstreamOk(await current.rcpt(action.recipient, action.options))
            if isinstance(action, UpstreamRset):
                await current.rset()
                return UpstreamOk("250 2.0.0 OK")
            assert isinstance(action, UpstreamData)
            return UpstreamOk(await current.data(action.message))
        except UpstreamReply as exc:
            return UpstreamFailed(exc.code, exc.text)
        except UpstreamLost as exc:
            return UpstreamGone(str(exc))

    def _widen_reader(self) -> None:
        """Let aiosmtpd's StreamReader hold a READ_CHUNK of DATA without pausing the
        transport: its limit is the command line length (1001), so every message above 2 KB
        paused and resumed reading (two epoll_ctl calls) before `_read_data` took it. Only
        while DATA is read (by chunks, not lines); `_read_data` restores it."""
        reader: Any = self._reader
        self._line_limit = reader._limit
        reader._limit = max(reader._limit, READ_CHUNK)

    async def _read_data(self, limit: int) -> DataRead:
        """Read DATA up to its end marker; the content waits in `_content` for the plan."""
        self.busy = True
        reader = DataReader(limit=limit)
        leftover = b""
        try:
            while not reader.done:
                chunk = await self._reader.read(READ_CHUNK)
                if not chunk:  # EOF: aiosmtpd cancels us; be safe anyway
                    return DataRead(closed=True)
                self._reset_timeout()
                leftover = reader.feed(chunk)
        finally:
            if self._line_limit is not None:
                self._reader._limit = self._line_limit  # type: ignore[attr-defined]
                self._line_limit = None
        if leftover:  # pipelined commands after the end of data: put them back
            self._reader._buffer[:0] = leftover  # type: ignore[attr-defined]
        result = reader.result()
        del reader
        self._content = result.content
        return DataRead(too_big=result.too_big, bare_line_end=result.bare_line_end)

    async def _plan(self, action: PlanMessage) -> Outcome:
        """`plan_submission` on the content read; `_content` is freed once planned, so the
        received bytes are gone before the transformed copies are sent."""
        holder = [self._content] if self._content is not None else []
        self._content = None
        if not holder:
            return PlanFailed()
        front = self.front
        now = front.now()
        keys = ServiceKeys(front.secure_mail, front.contacts, now, front.certificates,
                           front.directory, front.accounts, front.ldap, front.revocation,
                           front.revocation_mode, front.issuers)
        policy = front.policy

        def work() -> tuple[Plan, str]:
            digest = hashlib.sha256(holder[0]).hexdigest()
            # the message's only reference goes to plan_submission, which frees it early
            return plan_submission(
                holder.pop(), user=front.accounts.user(action.user), sender=action.sender,
                recipients=action.recipients, policy=policy, keys=keys, now=now,
                unlock_url=front.unlock_url), digest

        metrics = front.metrics
        started = time.perf_counter()
        try:
            # Small messages: a few ms of CPU, cheaper in the loop than a thread hand-off
            # (the GIL serialises the work anyway); large ones must not stall other sessions.
            # A directory lookup or a revocation check may wait on the network: never in
            # the loop.
            inline = (len(holder[0]) < INLINE_LIMIT and front.ldap is None
                      and front.revocation is None)
            plan, digest = work() if inline else await asyncio.to_thread(work)
        except SubmissionRefused as exc:
            metrics.submitted.labels("refused").inc()
            metrics.refusals.labels("smtp", _refusal_reason(exc.reply.code)).inc()
            return PlanRefused(exc.reply)
        except Exception:
            log.exception("cannot prepare the message", extra={"user": action.user})
            metrics.submitted.labels("failed").inc()
            return PlanFailed()
        finally:
            holder.clear()
        metrics.prepare_seconds.observe(time.perf_counter() - started)
        metrics.submitted.labels("signed_encrypted" if plan.signed and plan.encrypted
                                 else "signed" if plan.signed
                                 else "encrypted" if plan.encrypted else "as_is").inc()
        return MessagePlanned(plan, digest)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's address parser (email._header_value_parser) costs ~0.4 ms per MAIL or
        RCPT; a plain `<dot-atom@domain>` is taken directly, anything else goes to it."""
        match = _SIMPLE_PATH.match(arg)
        if match is not None and ".." not in match[1]:
            local = match[1].rpartition("@")[0]
            if not (self.local_part_limit and len(local) > self.local_part_limit):
                return match[1], match[2]
        result: tuple[str | None, str | None] = SMTP._getaddr(self, arg)
        return result

    # --- AUTH (SASL decoding here; the upstream login is the core's) ----------------------

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        if len(args) == 1:
            blob = await self.challenge_auth("")
            if blob is MISSING:
                return AuthResult(success=False)
        else:
            try:
                blob = b64decode(args[1].encode(), validate=True)
            except ValueError:
                await self.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        assert isinstance(blob, bytes)
        parts = blob.split(b"\x00")
        if len(parts) != 3:
            await self.push("501 5.5.2 Can't split auth value")
            return AuthResult(success=False, handled=True)
        return await self._login(parts[1], parts[2])

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        if len(args) == 1:
            login = await self.challenge_auth(self.AuthLoginUsernameChallenge)
            if login is MISSING:
                return AuthResult(success=False)
        else:
            try:
                login = b64decode(args[1].encode(), validate=True)
            except ValueError:
                await self.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        password = await self.challenge_auth(self.AuthLoginPasswordChallenge)
        if password is MISSING:
            return AuthResult(success=False)
        assert isinstance(login, bytes)
        assert isinstance(password, bytes)
        return await self._login(login, password)

    async def _login(self, login: bytes, password: bytes) -> AuthResult:
        replies = await self.run(self.core.auth(login, password))
        user = self.core.user  # set by the core when it emits `Authenticated`
        if user is not None:
            await self._mail_login(user, password)
            return AuthResult(success=True, auth_data=user)
        return AuthResult(success=False, handled=False, message="\r\n".join(replies))

    async def _mail_login(self, login: str, password: bytes) -> None:
        """Unlock the key by the mail login the upstream accepted, for a user who chose it
        (`SecureMail.mail_login`; before the 235, so that signing finds it unlocked)."""
        front = self.front
        await asyncio.to_thread(front.secure_mail.mail_login_logged,
                                front.accounts.user(login), password, front.now())

    # --- DATA ------------------------------------------------------------------------------

    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        try:
            replies = await self.run(self.core.data(arg))
            if not replies:  # the client went away
                return
            if self.core.sender is None:  # the transaction ended (delivered or refused)
                self._set_post_data_state()  # type: ignore[no-untyped-call]
            for reply in replies:
                await self.push(reply)
        finally:
            self.busy = False
            self._content = None


class _Hooks:
    """aiosmtpd handler hooks of one session: each command handed to the core; aiosmtpd's
    envelope mirrors the core's transaction (aiosmtpd checks its order of commands)."""

    def __init__(self, connection: SmtpConnection) -> None:
        self.c = connection

    async def handle_HELO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str) -> str:
        reply = "\r\n".join(await self.c.run(self.c.core.helo(hostname)))
        if reply.startswith("250"):
            session.host_name = hostname
        return reply

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        replies = await self.c.run(self.c.core.ehlo(hostname, responses))
        lines = "\r\n".join(replies).split("\r\n")
        if lines[0].startswith("250"):
            session.host_name = hostname
        return lines

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        reply = "\r\n".join(await self.c.run(self.c.core.mail(address, mail_options)))
        if self.c.core.sender is not None:
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
        return reply

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        before = len(self.c.core.recipients)
        reply = "\r\n".join(await self.c.run(self.c.core.rcpt(address, rcpt_options)))
        if len(self.c.core.recipients) > before:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
        return reply

    async def handle_RSET(self, server: SMTP, session: Session,
                          envelope: Envelope) -> str:
        return "\r\n".join(await self.c.run(self.c.core.rset()))

    async def handle_QUIT(self, server: SMTP, session: Session,
                          envelope: Envelope) -> str:
        return "\r\n".join(await self.c.run(self.c.core.quit()))


def _refusal_reason(code: int) -> str:
    """The metrics' word for a refused submission (plan_submission's reply codes)."""
    return {451: "key_locked", 552: "size", 553: "sender"}.get(code, "policy")
