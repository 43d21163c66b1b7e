"""The SMTP submission front: aiosmtpd listener + one authenticated upstream connection per
client session (the I/O shell around `smtp.submission`).

- TLS: `starttls` (offered on the plain port; commands pipelined before the handshake are
  discarded by aiosmtpd) or `implicit`. AUTH PLAIN/LOGIN only over TLS, except from a
  loopback client when the listener has `plaintext_loopback: true`.
- EHLO advertises SIZE (the upstream's, capped by `max_message_size`), 8BITMIME, SMTPUTF8
  (only when the upstream has it), PIPELINING, ENHANCEDSTATUSCODES, STARTTLS, AUTH.
- AUTH is checked by logging in to the upstream submission server with the same
  credentials, on the upstream connection that then carries the session's mail. The
  credentials are not kept.
- MAIL and RCPT are relayed per command: the upstream's reply (success or rejection) is the
  client's reply. DATA is read by `smtp.data.DataReader` (size limit enforced before buffering
  past it; bare CR/LF refused, never split), transformed by `plan_submission` in a worker
  thread, then sent. The client's `250` is the upstream's `250` (DESIGN decision 6): any
  upstream failure is relayed (4xx/5xx), a lost or stalled upstream gives `451 4.4.2` and
  ends the session. Nothing is queued here.
- Several copies (Bcc privacy): sent one after the other on the same upstream connection.
  If a later copy fails, the client gets the failure and retries; the copies already
  accepted are remembered (by user, envelope and message digest, for a day) and not sent
  again on that retry, so a retry neither loses nor duplicates mail.
- The client's own Sent copy is an IMAP APPEND, never seen here.

Nothing here logs a password, a key or a message body.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
from base64 import b64decode
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, Session
from cryptography import x509

from smime_proxy.config import ListenerConfig, UpstreamEndpoint
from smime_proxy.crypto.keyagent import KeyAgent
from smime_proxy.errors import ConfigError, NoRecipientCertificate, NoSuchKey
from smime_proxy.keystore.contacts import Contacts
from smime_proxy.keystore.service import SecureMail
from smime_proxy.memory import tune_allocator
from smime_proxy.policy import Policy, load_policy
from smime_proxy.services import Services
from smime_proxy.smtp.data import DataReader
from smime_proxy.smtp.directory import CertificateDirectory
from smime_proxy.smtp.relay import (
    DEFAULT_TIMEOUT,
    SubmissionUpstream,
    UpstreamLost,
    UpstreamReply,
)
from smime_proxy.smtp.submission import Plan, SubmissionRefused, plan_submission
from smime_proxy.tlsconfig import is_loopback_peer, listener_context

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
_MEMO_SECONDS = 24 * 3600
_MEMO_MAX = 1000


@dataclass(frozen=True)
class SmtpSettings:
    timeout: float = DEFAULT_TIMEOUT  # per upstream step
    max_message_size: int = 200 * 1024 * 1024
    max_recipients: int = 1000
    hostname: str = "smime-proxy"
    client_timeout: float = 300.0


_CacheKey = tuple[str, str, datetime]


class CertificateCache:
    """Recipient certificate choices (and misses) for `ttl` seconds: choosing parses every
    candidate certificate (~0.5 ms per recipient). An address-book change is seen after at
    most `ttl` seconds."""

    def __init__(self, ttl: float = 10.0, size: int = 4096) -> None:
        self.ttl = ttl
        self.size = size
        self._entries: dict[_CacheKey, tuple[float, x509.Certificate | list[str]]] = {}

    def get(self, key: _CacheKey) -> x509.Certificate | list[str] | None:
        """The certificate, the addresses of a miss, or None when not cached."""
        entry = self._entries.get(key)
        if entry is None or time.monotonic() > entry[0]:
            return None
        return entry[1]

    def put(self, key: _CacheKey, value: x509.Certificate | list[str]) -> None:
        if len(self._entries) >= self.size:
            self._entries.clear()
        self._entries[key] = (time.monotonic() + self.ttl, value)

    def clear(self) -> None:
        self._entries.clear()


class ServiceKeys:
    """The `Keys` port of the submission core over the key store and address book."""

    def __init__(self, secure_mail: SecureMail, contacts: Contacts, now: datetime,
                 cache: CertificateCache | None = None,
                 directory: CertificateDirectory | None = None) -> None:
        self.secure_mail = secure_mail
        self.contacts = contacts
        self.now = now
        self.cache = cache
        self.directory = directory

    def signer(self, user: str) -> KeyAgent:
        if not self.secure_mail.has_key(user):
            raise NoSuchKey("no key")
        return self.secure_mail.agent_for(user, self.now)

    def own_certificate(self, user: str) -> x509.Certificate | None:
        if not self.secure_mail.has_key(user):
            return None
        return self.secure_mail.certificate(user)

    def _lookup(self, user: str, address: str) -> x509.Certificate:
        """The user's address book first, then the admin's certificate directory."""
        try:
            return self.contacts.choose_certificate(user, address, self.now)
        except NoRecipientCertificate as exc:
            if self.directory is not None and exc.addresses == [address.strip().lower()]:
                found = self.directory.choose(exc.addresses[0], self.now)
                if found is not None:
                    return found
            raise

    def recipient_certificate(self, user: str, address: str) -> x509.Certificate:
        if self.cache is None:
            return self._lookup(user, address)
        key = (user, address.lower(), self.now.replace(second=0, microsecond=0))
        value = self.cache.get(key)
        if value is None:
            try:
                value = self._lookup(user, address)
            except NoRecipientCertificate as exc:
                value = list(exc.addresses)
            self.cache.put(key, value)
        if isinstance(value, list):
            raise NoRecipientCertificate(value)
        return value


def unlock_url(control: ListenerConfig) -> str:
    scheme = "https" if control.tls is not None else "http"
    host = f"[{control.host}]" if ":" in control.host else control.host
    return f"{scheme}://{host}:{control.port}/"



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
    ) -> None:
        self.secure_mail = secure_mail
        self.contacts = contacts
        self.listener = listener
        self.upstream = upstream
        self.unlock_url = unlock_url
        self.policy_file = policy_file
        self.policy = policy if policy is not None else (
            load_policy(policy_file) if policy_file is not None else Policy())
        self.now = now
        self.settings = settings
        self._server: asyncio.Server | None = None
        self._sessions: set[SmtpConnection] = set()
        self._memo: dict[str, tuple[float, set[tuple[str, ...]]]] = {}
        self.certificates = CertificateCache()
        self.directory = CertificateDirectory.load(self.policy.certificate_dir)
        self._tls = listener_context(listener, "smtp")

    @classmethod
    def from_services(cls, services: Services) -> SmtpFront:
        """Build from the daemon's `Services`, and register the policy reload hook."""
        config = services.config
        front = cls(
            secure_mail=services.secure_mail, contacts=services.contacts,
            listener=config.listeners.smtp, upstream=config.upstream.smtp,
            unlock_url=unlock_url(config.listeners.control),
            policy_file=config.policy_file, now=services.now,
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
        tune_allocator()  # idempotent; `smime-proxy serve` did it already
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

    # --- the memo of copies already accepted (partial multi-copy deliveries) -------------

    def memo_get(self, key: str) -> set[tuple[str, ...]]:
        now = time.monotonic()
        for k in [k for k, (t, _) in self._memo.items() if now - t > _MEMO_SECONDS]:
            del self._memo[k]
        entry = self._memo.get(key)
        return set(entry[1]) if entry else set()

    def memo_put(self, key: str, done: set[tuple[str, ...]]) -> None:
        if not done:
            self._memo.pop(key, None)
            return
        if len(self._memo) >= _MEMO_MAX:
            oldest = min(self._memo, key=lambda k: self._memo[k][0])
            del self._memo[oldest]
        self._memo[key] = (time.monotonic(), set(done))


class SmtpConnection(SMTP):
    """One client connection."""

    def __init__(self, front: SmtpFront) -> None:
        self.front = front
        self.upstream: SubmissionUpstream | None = None
        self.user: str | None = None
        self.busy = False
        starttls = front.listener.tls is not None and front.listener.tls.mode == "starttls"
        super().__init__(
            _Hooks(self),
            data_size_limit=front.settings.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=front.settings.hostname,
            ident="smime-proxy",
            tls_context=front._tls if starttls else None,
            auth_required=True,
            auth_require_tls=True,
            timeout=front.settings.client_timeout,
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

    def connection_lost(self, error: Exception | None) -> None:
        self.front._sessions.discard(self)
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None
        super().connection_lost(error)

    def close_now(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def ensure_upstream(self) -> SubmissionUpstream:
        if self.upstream is None or not self.upstream.connected:
            upstream = SubmissionUpstream(self.front.upstream,
                                          timeout=self.front.settings.timeout,
                                          local_hostname=self.front.settings.hostname)
            await upstream.connect()
            self.upstream = upstream
            size = upstream.size_limit
            limit = self.front.settings.max_message_size
            self.data_size_limit = min(size, limit) if size else limit
        return self.upstream

    async def lost(self, exc: UpstreamLost) -> str:
        """The upstream is gone: this session cannot continue (its AUTH lived there)."""
        log.warning("upstream lost: %s", exc)
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None
        loop = asyncio.get_running_loop()
        loop.call_soon(self.close_now)
        return "451 4.4.2 upstream server connection lost: message not sent, try again"

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

    # --- AUTH (upstream login) -------------------------------------------------------------

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
        try:
            user = login.decode("utf-8")
            secret = password.decode("utf-8")
        except UnicodeDecodeError:
            return AuthResult(success=False, handled=False,
                              message="501 5.5.2 credentials are not UTF-8")
        try:
            upstream = await self.ensure_upstream()
            await upstream.login(user, secret)
        except UpstreamReply as exc:
            log.info("AUTH refused by the upstream", extra={"code": exc.code})
            if 400 <= exc.code < 500:
                return AuthResult(success=False, handled=False, message=exc.lines())
            return AuthResult(success=False, handled=False,
                              message="535 5.7.8 Authentication credentials invalid")
        except UpstreamLost as exc:
            return AuthResult(success=False, handled=False, message=await self.lost(exc))
        self.user = user
        log.info("authenticated", extra={"user": user})
        return AuthResult(success=True, auth_data=user)

    # --- DATA ------------------------------------------------------------------------------

    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        self.busy = True
        try:
            reader = DataReader(limit=self.data_size_limit or 0)
            leftover = b""
            while not reader.done:
                chunk = await self._reader.read(READ_CHUNK)
                if not chunk:  # EOF: aiosmtpd cancels us; be safe anyway
                    return
                self._reset_timeout()
                leftover = reader.feed(chunk)
            if leftover:  # pipelined commands after the end of data: put them back
                self._reader._buffer[:0] = leftover  # type: ignore[attr-defined]
            result = reader.result()
            del reader
            too_big, refused = result.too_big, result.bare_line_end
            holder = [result.content] if result.content is not None else []
            del result  # `holder` is the only reference: _deliver frees it once planned
            if too_big:
                status = (f"552 5.3.4 Message too big: the limit is "
                          f"{self.data_size_limit} bytes")
                await self._abort_transaction()
            elif refused or not holder:
                status = ("554 5.6.0 Message refused: bare CR or LF in the data "
                          "(RFC 5321 2.3.8)")
                await self._abort_transaction()
            else:
                status = await self._deliver(holder, self.envelope)
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            await self.push(status)
        finally:
            self.busy = False

    async def _abort_transaction(self) -> None:
        if self.upstream is not None and self.upstream.connected:
            with contextlib.suppress(UpstreamReply, UpstreamLost):
                await self.upstream.rset()

    async def _deliver(self, holder: list[bytes], envelope: Envelope) -> str:
        """Plan and relay the message in `holder` (emptied once planned, so the received
        bytes are freed before the transformed copies are sent)."""
        upstream = self.upstream
        if upstream is None or not upstream.connected or self.user is None:
            return "451 4.4.2 upstream server connection lost: message not sent, try again"
        sender = envelope.mail_from or ""
        recipients = list(envelope.rcpt_tos)
        now = self.front.now()
        digest = hashlib.sha256(holder[0]).hexdigest()
        try:
            user = self.user
            keys = ServiceKeys(self.front.secure_mail, self.front.contacts, now,
                               self.front.certificates, self.front.directory)
            policy = self.front.policy

            def work() -> Plan:
                return plan_submission(
                    holder.pop(), user=user, sender=sender, recipients=recipients,
                    policy=policy, keys=keys, now=now, unlock_url=self.front.unlock_url)

            # Small messages: a few ms of CPU, cheaper in the loop than a thread hand-off
            # (the GIL serialises the work anyway); large ones must not stall other sessions.
            plan = work() if len(holder[0]) < INLINE_LIMIT else await asyncio.to_thread(work)
        except SubmissionRefused as exc:
            log.info("message refused", extra={"user": self.user, "code": exc.reply.code,
                                                "reason": exc.reply.text})
            await self._abort_transaction()
            return exc.reply.line()
        except Exception:
            log.exception("cannot prepare the message")
            await self._abort_transaction()
            return "451 4.3.0 Internal error while preparing the message: not sent"
        finally:
            holder.clear()
        limit = upstream.size_limit
        for copy in plan.copies:
            if limit and len(copy.message) > limit:
                await self._abort_transaction()
                return (f"552 5.3.4 Message too big after S/MIME: {len(copy.message)} bytes,"
                        f" the upstream limit is {limit}")
        log.info("relaying", extra={"user": self.user, "signed": plan.signed,
                                    "encrypted": plan.encrypted, "copies": len(plan.copies),
                                    "recipients": len(recipients)})
        try:
            if len(plan.copies) == 1:
                return await upstream.data(plan.copies[0].message)
            return await self._deliver_copies(upstream, plan, digest, envelope)
        except UpstreamReply as exc:
            return exc.lines()
        except UpstreamLost as exc:
            return await self.lost(exc)

    async def _deliver_copies(self, upstream: SubmissionUpstream, plan: Plan, digest: str,
                              envelope: Envelope) -> str:
        """Several transactions (Bcc copies) on the one upstream connection."""
        key = "\x00".join([self.user or "", envelope.mail_from or "",
                           *sorted(envelope.rcpt_tos), digest])
        done = self.front.memo_get(key)
        await upstream.rset()
        options = list(envelope.mail_options)
        last = ""
        try:
            for copy in plan.copies:
                if copy.recipients in done:
                    continue
                await upstream.mail(envelope.mail_from or "", options)
                for rcpt in copy.recipients:
                    await upstream.rcpt(rcpt)
                last = await upstream.data(copy.message)
                done.add(copy.recipients)
        except UpstreamReply:
            self.front.memo_put(key, done)
            with contextlib.suppress(UpstreamReply, UpstreamLost):
                await upstream.rset()
            raise
        except UpstreamLost:
            self.front.memo_put(key, done)
            raise
        self.front.memo_put(key, set())
        code_text = last.split(" ", 1)[1] if " " in last else "2.0.0 Ok"
        return f"250 {code_text} ({len(plan.copies)} separately encrypted copies)"


class _Hooks:
    """aiosmtpd handler hooks of one session: relay MAIL/RCPT/RSET/QUIT upstream."""

    def __init__(self, session: SmtpConnection) -> None:
        self.s = session

    async def handle_HELO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str) -> str:
        try:
            await self.s.ensure_upstream()
        except UpstreamLost as exc:
            return await self.s.lost(exc)
        session.host_name = hostname
        return f"250 {self.s.hostname}"

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        try:
            upstream = await self.s.ensure_upstream()
            if upstream.in_transaction:
                await upstream.rset()
        except UpstreamLost as exc:
            return [(await self.s.lost(exc)).replace("451 4.4.2", "421 4.4.2", 1)]
        except UpstreamReply as exc:
            return [exc.lines()]
        session.host_name = hostname
        out: list[str] = []
        for line in responses[:-1]:
            keyword = line[4:].split(" ", 1)[0].upper()
            if keyword == "SIZE":
                line = f"250-SIZE {self.s.data_size_limit}"
            if keyword == "SMTPUTF8" and not upstream.smtputf8:
                continue
            if keyword == "8BITMIME" and not upstream.eight_bit:
                continue
            out.append(line)
        out.extend(["250-PIPELINING", "250-ENHANCEDSTATUSCODES", "250 HELP"])
        return out

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        upstream = self.s.upstream
        if upstream is None or not upstream.connected:
            return "421 4.4.2 upstream server connection lost"
        try:
            reply = await upstream.mail(address, mail_options)
        except UpstreamReply as exc:
            return exc.lines()
        except UpstreamLost as exc:
            return await self.s.lost(exc)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return reply

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        upstream = self.s.upstream
        if upstream is None or not upstream.connected:
            return "421 4.4.2 upstream server connection lost"
        if len(envelope.rcpt_tos) >= self.s.front.settings.max_recipients:
            return "452 4.5.3 Too many recipients"
        try:
            reply = await upstream.rcpt(address, rcpt_options)
        except UpstreamReply as exc:
            return exc.lines()
        except UpstreamLost as exc:
            return await self.s.lost(exc)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return reply

    async def handle_RSET(self, server: SMTP, session: Session,
                          envelope: Envelope) -> str:
        upstream = self.s.upstream
        if upstream is not None and upstream.connected:
            try:
                await upstream.rset()
            except UpstreamReply as exc:
                return exc.lines()
            except UpstreamLost as exc:
                return await self.s.lost(exc)
        return "250 2.0.0 OK"

    async def handle_QUIT(self, server: SMTP, session: Session,
                          envelope: Envelope) -> str:
        if self.s.upstream is not None:
            await self.s.upstream.quit()
            self.s.upstream = None
        return "221 2.0.0 Bye"
