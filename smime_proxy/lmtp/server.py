"""The Store Encrypted filter: an LMTP listener between the MTA and the mail store.

Postfix delivers to it (`virtual_transport = lmtp:inet:<this listener>`); it delivers each
message on to the store's LMTP (Dovecot), per recipient in the form `at_rest.forms` chose:
recipients whose copy is unchanged share one transaction, each encrypted copy has its own.

LMTP's promise is kept (RFC 2033 4.2): after the data, one reply per accepted recipient, in
order, each given only once the store replied for that recipient; a store that did not
answer, or a failure here, gives that recipient `451` so that the MTA keeps the message
and retries. Nothing is acknowledged that the store did not acknowledge.

aiosmtpd's `LMTP` is the server protocol for the commands; DATA is read by chunks with the
SMTP front's `DataReader` (un-stuffing, smuggling-proof end marker, size limit). The
encryption runs in a worker thread.

May import: accounts, at_rest, config, errors, event_loop, keystore, lmtp, policy, services,
smtp.data, aiosmtpd, stdlib.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, AnyStr

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import Envelope, Session

from smime_proxy.accounts import Accounts
from smime_proxy.at_rest.forms import StoredForm, stored_form
from smime_proxy.config import ListenerConfig, UpstreamEndpoint
from smime_proxy.errors import ConfigError
from smime_proxy.event_loop import write_if_open
from smime_proxy.keystore.service import SecureMail
from smime_proxy.lmtp.upstream import Reply, StorePool
from smime_proxy.policy import Policy, load_policy, store_encrypted
from smime_proxy.services import Services
from smime_proxy.smtp.data import DataReader, DataResult

log = logging.getLogger("smime_proxy.lmtp")

NO_ANSWER = "451 4.4.2 the mail store did not answer for this recipient; try again later"
# RFC 5321 4.1.2 Path with a Dot-string local part and a domain of labels (no quoting, no
# address literal, no route): the common case, parsed here; anything else by aiosmtpd
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_SIMPLE_PATH = re.compile(
    rf"\s*<({_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    rf"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*)>(?=\s|$)")
MAX_HELD_REPLIES = 64  # replies held for one write at most (a long pipelined group)
NOT_PREPARED = "451 4.3.0 the message could not be prepared for this recipient; try again later"
MAX_MESSAGE = 200 * 1024 * 1024
READ_CHUNK = 65536
INLINE_LIMIT = 256 * 1024  # smaller messages are sealed in the loop (< 1 ms): no thread hand-off
_PASSED_OPTIONS = ("BODY=", "SMTPUTF8")  # SIZE is not passed: an encrypted copy is larger


class LmtpFront:
    """The `Front` of the Store Encrypted filter (see app.Front)."""

    name = "lmtp"

    def __init__(self, *, secure_mail: SecureMail, listener: ListenerConfig,
                 upstream: UpstreamEndpoint, accounts: Accounts | None = None,
                 policy: Policy | None = None, policy_file: Path | None = None,
                 now: Callable[[], datetime], timeout: float = 60.0,
                 max_message: int = MAX_MESSAGE) -> None:
        self.secure_mail = secure_mail
        self.listener = listener
        self.upstream = upstream
        self.accounts = accounts if accounts is not None else Accounts()
        self.policy_file = policy_file
        self.policy = policy if policy is not None else (
            load_policy(policy_file) if policy_file is not None else Policy())
        self.now = now
        self.max_message = max_message
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self.store = StorePool(upstream.host, upstream.port, step_seconds=timeout)

    @property
    def timeout(self) -> float:
        """Seconds each step with the store may take."""
        return self.store.step_seconds

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        self.store.step_seconds = seconds

    @classmethod
    def from_services(cls, services: Services) -> LmtpFront:
        config = services.config
        assert config.listeners.lmtp is not None and config.upstream.lmtp is not None
        front = cls(secure_mail=services.secure_mail, listener=config.listeners.lmtp,
                    upstream=config.upstream.lmtp, accounts=Accounts.from_config(config),
                    policy_file=config.policy_file, now=services.now)
        services.reload_hooks.append(front.reload_policy)
        return front

    def reload_policy(self) -> None:
        if self.policy_file is not None:
            self.policy = load_policy(self.policy_file)

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return self.listener.port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: _Connection(self), self.listener.host, self.listener.port)
        except OSError as exc:
            raise ConfigError(f"listeners.lmtp.port: cannot listen on {self.listener.host} "
                              f"port {self.listener.port}: {exc.strerror}") from None

    async def stop(self, grace: float) -> None:
        if self._server is not None:
            self._server.close()
        deadline = asyncio.get_running_loop().time() + grace
        while self._connections and asyncio.get_running_loop().time() < deadline:
            if not any(c.busy for c in self._connections):
                break
            await asyncio.sleep(0.05)  # a delivery in flight finishes (its replies are due)
        for connection in list(self._connections):
            if connection.transport is not None:
                connection.transport.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None
        await self.store.close()

    # --- one message ------------------------------------------------------------------------

    def forms(self, recipients: Sequence[str], message: bytes) -> list[StoredForm | None]:
        """Per recipient what to store (None: it could not be prepared). CPU work: the
        caller runs it in a worker thread for a large message."""
        forms: list[StoredForm | None] = []
        for recipient in recipients:
            try:
                address = recipient.strip().lower()
                wanted, _origin = store_encrypted(self.policy, address)
                user = self.accounts.user(address)
                wanted = wanted or self.secure_mail.store_encrypted_choice(user)
                certificate = (self.secure_mail.certificate(user)
                               if wanted and self.secure_mail.has_key(user) else None)
                form = stored_form(message, certificate, wanted=wanted)
            except Exception as exc:
                log.warning("cannot prepare a delivery", extra={"reason": type(exc).__name__})
                forms.append(None)
                continue
            log.info("delivery prepared", extra={"user": user, "reason": form.reason})
            forms.append(form)
        return forms

    async def deliver(self, sender: str, recipients: Sequence[str], message: bytes,
                      options: Sequence[str]) -> list[str]:
        """The reply lines for `recipients`, in order, once the store answered."""
        forms = self.forms(recipients, message) if len(message) < INLINE_LIMIT \
            else await asyncio.to_thread(self.forms, recipients, message)
        replies = [NOT_PREPARED] * len(recipients)
        unchanged = [i for i, f in enumerate(forms) if f is not None and not f.encrypted]
        groups: list[tuple[list[int], bytes]] = [(unchanged, message)] if unchanged else []
        groups.extend(([i], f.message) for i, f in enumerate(forms)
                      if f is not None and f.encrypted)
        passed = [o for o in options if o.upper().startswith(_PASSED_OPTIONS)]
        answers = await asyncio.gather(*(
            self.store.deliver(sender, [recipients[i] for i in indexes], copy,
                               mail_options=passed)
            for indexes, copy in groups))
        for (indexes, _copy), results in zip(groups, answers, strict=True):
            for index, result in zip(indexes, results, strict=True):
                replies[index] = _reply_line(result)
        return replies


def _reply_line(result: Reply | None) -> str:
    return NO_ANSWER if result is None else result.line


class _Connection(LMTP):
    """One MTA connection: aiosmtpd's LMTP for the commands; DATA read here by chunks
    (`smtp.data.DataReader`: aiosmtpd reads it line by line, ~10 ms per 20 KB message, and
    answers a too-big message with one reply where LMTP needs one per recipient)."""

    def __init__(self, front: LmtpFront) -> None:
        super().__init__(_Handler(front), data_size_limit=front.max_message,
                         decode_data=False, enable_SMTPUTF8=True, hostname="smime-proxy",
                         ident="smime-proxy Store Encrypted")
        self.front = front
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.front._connections.add(self)
        self._held: list[bytes] = []
        super().connection_made(transport)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's address parse (MAIL FROM, RCPT TO), with a fast path for what an MTA
        sends: `<dot-atom@domain>` (RFC 5321 4.1.2), then parameters. aiosmtpd's parse goes
        through email's header parser and defines a class per call: ~15 % of the filter's
        CPU per message. Anything else (quoted local parts, UTF-8, routes) goes to it."""
        if arg.strip() == "<>":
            return "<>", ""  # the null reverse-path, as aiosmtpd gives it
        found = _SIMPLE_PATH.match(arg)
        if found is None:
            return super()._getaddr(arg)
        address = found[1]
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, arg[found.end() :]

    async def push(self, status: AnyStr) -> None:
        """aiosmtpd's reply, but replies to pipelined commands go out together (RFC 2920
        3.1 allows it): a reply is held while the next command is already read, and sent
        with the first reply after which the client has nothing more waiting. One write per
        transaction instead of one per command (each is a loopback TCP send, ~0.2 ms)."""
        line = status.encode("utf-8") if isinstance(status, str) else bytes(status)
        self._held.append(line + b"\r\n")
        reader: Any = self._reader
        if b"\n" in reader._buffer and len(self._held) < MAX_HELD_REPLIES:
            return
        held, self._held = b"".join(self._held), []
        write_if_open(self._writer, held)
        await self._writer.drain()

    def connection_lost(self, exc: Exception | None) -> None:
        self.front._connections.discard(self)
        super().connection_lost(exc)

    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed():
            return
        envelope = self.envelope
        assert envelope is not None
        if not envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        self.busy = True
        try:
            result = await self._read_data()
            if result is None:
                return  # the MTA went away: it delivers nothing and retries
            count = len(envelope.rcpt_tos)
            if result.too_big:
                replies = [f"552 5.3.4 message larger than {self.front.max_message} bytes"] \
                    * count
            elif result.bare_line_end or result.content is None:
                replies = ["550 5.6.0 bare CR or LF in the message (RFC 5321 2.3.8)"] * count
            else:
                # aiosmtpd keeps the null reverse-path (a bounce) as "<>": the store gets
                # MAIL FROM:<> (RFC 5321 4.5.5), not MAIL FROM:<<>>
                sender = envelope.mail_from or ""
                replies = await self.front.deliver("" if sender == "<>" else sender,
                                                   envelope.rcpt_tos, result.content,
                                                   envelope.mail_options)
        except Exception:
            log.exception("delivery failed")
            replies = [NOT_PREPARED] * len(envelope.rcpt_tos)
        finally:
            self.busy = False
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        # RFC 2033 4.2: one reply per accepted RCPT, in order
        await self.push("\r\n".join(replies))

    async def _read_data(self) -> DataResult | None:
        reader: Any = self._reader
        line_limit = reader._limit
        reader._limit = max(line_limit, READ_CHUNK)  # whole chunks, not lines
        data = DataReader(limit=self.front.max_message)
        leftover = b""
        try:
            while not data.done:
                chunk = await reader.read(READ_CHUNK)
                if not chunk:
                    return None
                leftover = data.feed(chunk)
        finally:
            reader._limit = line_limit
        if leftover:  # pipelined commands after the end of data: put them back
            reader._buffer[:0] = leftover
        return data.result()


class _Handler:
    def __init__(self, front: LmtpFront) -> None:
        self.front = front

    async def handle_EHLO(self, server: _Connection, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        """LHLO: PIPELINING (RFC 2920; aiosmtpd reads commands in order, so a pipelining
        MTA is served as it is by the store), no AUTH (there is none), in one write."""
        session.host_name = hostname
        lines = [r for r in responses[:-1] if not r.startswith("250-AUTH")]
        lines += ["250-PIPELINING", "250-ENHANCEDSTATUSCODES", "250 HELP"]
        return ["\r\n".join(lines)]

    async def handle_RCPT(self, server: _Connection, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"


__all__ = ["LmtpFront"]
