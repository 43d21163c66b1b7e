"""One client of the IMAP front: the asyncio shell around `imap.session.ImapSession` for
one client connection and its upstream connection (`ClientConnection`; the listener and the
front's shared state are `imap.server.ImapFront`'s).

- One upstream connection per client, made before the client is greeted, by the one
  connector `imap.upstream.open_stream` (TLS per `upstream.imap`, the STARTTLS injection
  check of notes/security.md item 7, `* OK` greeting only).
- Client STARTTLS: whatever the client sent after the command, before the handshake, is
  dropped (the session drops what it was fed; the shell clears the stream's read buffer,
  which asyncio has no public call for).
- `OpenMessage` requests run `imap.opening.open_for_client` in the front's opening threads
  (`imap.opening_threads`, `ImapSettings.open_workers`), with the user's key agent when
  the message is encrypted and the key is unlocked; their results come back in batches.
  `SealCopy` runs `imap.opening.seal_for_user` in the front's other worker threads.
- Turns: a read from either side is fed to the session and its actions carried out under
  one lock (`imap.streams.TurnLock`), so actions go out in the order the session gave
  them. Once logged in, a read is taken in the connection's protocol callback when nothing
  waits before it (`_turns_in_callbacks`): the reader holds none of that side's bytes, the
  lock is free, neither side's writes are backed up; what the session then says is
  written at once, and only an action that must wait (a large write, opening, a pause,
  closing) goes on in a task that holds the lock. Otherwise one task per side reads its
  stream (`_pump`). Back-pressure: the upstream is not read while many messages wait to be
  opened, the client not while the session holds a lot of unread client data.
- `ConvertRequested` (a client set `$SmimeEncrypt` / `$SmimeDecrypt`) starts
  `at_rest.operations.FolderOperations.request_by_keyword` with the login of this
  connection: for that, the mail password the client logged in with is kept in this
  connection's memory while it lives (only when the front has folder operations).
- The upstream closing (or failing) mid-command gives the client `* BYE` and a close.
- Autologout after 30 minutes without a byte from either side (the upstream's IDLE
  keep-alives count, so an IDLEing client stays).

Nothing here logs a password, a key or a message body.

May import: config, errors, event_loop, throttle, tlsconfig, imap, stdlib.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import TYPE_CHECKING

from smime_proxy.config import control_url
from smime_proxy.errors import KeyLocked, SmimeProxyError
from smime_proxy.event_loop import write_if_open
from smime_proxy.imap.events import ConvertRequested
from smime_proxy.imap.opening import open_for_client, seal_for_user
from smime_proxy.imap.opening_threads import Inbox
from smime_proxy.imap.session import (
    Action,
    Close,
    CopySealed,
    ImapSession,
    MailLogin,
    MessageOpened,
    OpenMessage,
    Pause,
    SealCopy,
    SendToClient,
    SendToUpstream,
    SessionSettings,
    StartClientTls,
)
from smime_proxy.imap.streams import StreamProtocol, TurnLock
from smime_proxy.imap.upstream import UpstreamUnavailable, open_stream
from smime_proxy.imap.view_cache import UserViews
from smime_proxy.throttle import AddressGate
from smime_proxy.tlsconfig import is_loopback_peer

if TYPE_CHECKING:
    from smime_proxy.imap.server import ImapFront

log = logging.getLogger("smime_proxy.imap")

READ_SIZE = 65536
BATCH_MAX = 256 * 1024  # client data up to this size is joined into one write
WRITE_SLICE = 1024 * 1024  # a larger piece is written a slice at a time (`_write_large`)
WRITE_BACKED_UP = 64 * 1024  # more unsent than this (asyncio's high-water mark): no turn in
# a callback, the pump's turn drains it


class ClientConnection:
    def __init__(self, front: ImapFront, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.front = front
        self.reader = reader
        self.writer = writer
        self.up_reader: asyncio.StreamReader | None = None
        self.up_writer: asyncio.StreamWriter | None = None
        self.session: ImapSession | None = None
        self.closed = False
        # messages being opened for this connection (made with the first), and what was
        # opened and not yet handed to the session (`_opened`), and the task that hands them
        self.inbox: Inbox[tuple[str, int], MessageOpened] | None = None
        self.ready: collections.deque[
            tuple[tuple[str, int], MessageOpened | BaseException]] = collections.deque()
        self.feeder: asyncio.Future[None] | None = None
        self.lock = TurnLock()  # one batch of the session's actions at a time, in order
        self.turns: set[asyncio.Task[None]] | None = None  # callback turns going on
        self.changed = asyncio.Event()  # back-pressure may have eased
        self.last_activity = time.monotonic()
        self.counted: tuple[str, str] | None = None  # (user, address) once logged in
        self.up_taken = 0  # bytes the session took from the upstream reader
        self.client_taken = 0  # and from the client reader
        self.views_user: str | None = None  # bound to the view cache as this user
        self.mail_password: bytes = b""  # for keyword requests (ConvertRequested)

    @property
    def busy(self) -> bool:
        return self.session is not None and self.session.busy and not self.closed

    def _views_for(self, login: str) -> UserViews:
        """The user's opened views, for as long as this connection lasts."""
        user = self.front.accounts.user(login)
        secure_mail = self.front.services.secure_mail
        now = self.front.services.now

        def current_unlock() -> object | None:
            try:
                return secure_mail.agent_for(user, now())
            except (KeyLocked, SmimeProxyError):
                return None

        self.views_user = user
        return self.front.views.bind(user, current_unlock)

    async def run(self) -> None:
        front = self.front
        listener = front.listener
        implicit = listener.tls is not None and listener.tls.mode == "implicit"
        settings = SessionSettings(
            starttls_available=listener.tls is not None and listener.tls.mode == "starttls",
            tls_active=implicit,
            plaintext_login=listener.plaintext_loopback
            and is_loopback_peer(self.writer.get_extra_info("peername")),
            locked_fetch=front.locked_fetch,
            unlock_url=control_url(front.services.config.listeners.control),
            sealed_uses=front.sealed_uses,
        )
        try:
            self.up_reader, self.up_writer = await asyncio.wait_for(
                open_stream(front.upstream, connect_timeout=front.settings.connect_timeout,
                            handshake_timeout=front.settings.tls_handshake_timeout),
                front.settings.connect_timeout)
        except (UpstreamUnavailable, OSError, TimeoutError, ssl.SSLError) as exc:
            await self._upstream_refused(exc)
            return
        peer = self.writer.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        self.session = ImapSession(settings, AddressGate(front.login_throttle, address, "imap",
                                                          front.services.metrics.refusals),
                                   self._views_for)
        async with self.lock:
            await self._do(self.session.start())
        assert self.up_reader is not None
        self._turns_in_callbacks()
        pumps = {
            asyncio.ensure_future(self._pump(
                self.reader, self._from_client_reader, self._client_held_back)),
            asyncio.ensure_future(self._pump(
                self.up_reader, self._from_up_reader, self._upstream_held_back)),
        }
        watch = asyncio.ensure_future(self._watch_idle())
        try:
            # a pump ends at its side's end of stream, and the session then says what to do
            # (close; or, after LOGOUT, wait for the upstream's last answer)
            running = set(pumps)
            while running and not self.closed:
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for pump in done:
                    error = pump.exception()
                    if error is not None:
                        raise error
        finally:
            for task in (*pumps, watch):
                task.cancel()

    def _client_held_back(self) -> bool:
        """Back-pressure on the client only while a command is in progress: an idle session
        holding many bytes is completing one message (an APPEND literal) and must read on
        or it waits forever."""
        session = self.session
        return (session is not None and session.busy
                and session.client.buffered >= self.front.settings.max_client_backlog)

    def _upstream_held_back(self) -> bool:
        """The upstream is not read while many messages, or many bytes of them, wait to be
        opened (a message read meanwhile is held whole until it is answered)."""
        session = self.session
        if session is None:
            return False
        count, size = session.pending_opens
        settings = self.front.settings
        return count >= settings.max_pending_opens or (
            count > 0 and size >= settings.max_pending_open_bytes)

    def _from_up_reader(self, data: bytes) -> list[Action]:
        assert self.session is not None
        self.up_taken += len(data)
        return self.session.upstream_data(data)

    def _from_client_reader(self, data: bytes) -> list[Action]:
        assert self.session is not None
        self.client_taken += len(data)
        return self.session.client_data(data)

    def _turns_in_callbacks(self) -> None:
        """Reads taken in the protocol callbacks (`imap.streams.StreamProtocol.shortcut`:
        bound methods, not closures, which would make each idle connection larger)."""
        assert self.up_writer is not None
        for writer, shortcut in ((self.up_writer, self._upstream_read_now),
                                 (self.writer, self._client_read_now)):
            protocol = writer.transport.get_protocol()
            if isinstance(protocol, StreamProtocol):
                protocol.shortcut = shortcut

    def _upstream_read_now(self, data: bytes, passed: int) -> bool:
        """An upstream read, taken in the callback when nothing waits before it: the reader
        holds none of the upstream's bytes (`passed` to it = what the session took from
        it), the upstream is not held back, and (but for a piece of a literal that says
        nothing: `ImapSession.take_literal_piece`) the conditions of `_turn_now`."""
        session = self.session
        if (self.closed or session is None or self.up_taken != passed
                or self._upstream_held_back()):
            return False
        if not self.lock.locked() and session.take_literal_piece(data):
            self.last_activity = time.monotonic()
            return True
        return self._turn_now(session.upstream_data, data)

    def _client_read_now(self, data: bytes, passed: int) -> bool:
        """A client read, taken in the callback on the same terms."""
        session = self.session
        if (self.closed or session is None or self.client_taken != passed
                or self._client_held_back()):
            return False
        return self._turn_now(session.client_data, data)

    def _turn_now(self, feed: Callable[[bytes], list[Action]], data: bytes) -> bool:
        """One turn in a protocol callback: False (the read goes to the reader) unless
        logged in and counted (`_check_login_limit` has run), the lock is free and no
        write is backed up. The actions up to the first that must wait are written at once;
        the rest go on in a task that holds the lock until they are done."""
        assert self.up_writer is not None
        if (self.counted is None
                or self.writer.transport.get_write_buffer_size() > WRITE_BACKED_UP
                or self.up_writer.transport.get_write_buffer_size() > WRITE_BACKED_UP
                or not self.lock.take_now()):
            return False
        self.last_activity = time.monotonic()
        try:
            actions = feed(data)
            done = self._write_now(actions)
        except Exception as exc:  # a bug: said once and the session ends, as from a pump
            self.lock.release()
            self._go_on(self.failed(exc))
            return True
        if done == len(actions):
            self.lock.release()
            self.changed.set()
        else:
            self._go_on(self._rest_of_turn(actions[done:]))
        return True

    def _write_now(self, actions: list[Action], start: int = 0) -> int:
        """Write the actions from `start` on that need no wait, up to the first that does (a
        large piece for the client, or anything but data); the index of that one."""
        assert self.up_writer is not None
        pending: list[bytes] = []  # consecutive client data goes out in one write
        done = start
        while done < len(actions):
            action = actions[done]
            if isinstance(action, SendToClient) and len(action.data) < BATCH_MAX:
                pending.append(action.data)
            elif isinstance(action, SendToUpstream):
                if pending:
                    write_if_open(self.writer, b"".join(pending))
                    pending.clear()
                write_if_open(self.up_writer, action.data)
            else:
                break
            done += 1
        if pending:
            write_if_open(self.writer, b"".join(pending))
        return done

    def _go_on(self, turn: Coroutine[object, object, None]) -> None:
        if self.turns is None:  # made when first needed (idle connections hold none)
            self.turns = set()
        task = asyncio.ensure_future(turn)
        self.turns.add(task)
        task.add_done_callback(self.turns.discard)

    async def _rest_of_turn(self, actions: list[Action]) -> None:
        """The actions of a turn taken in a callback that must wait; the lock is held."""
        try:
            await self._do(actions)
        except Exception as exc:
            await self.failed(exc)
        finally:
            self.lock.release()

    async def failed(self, exc: Exception) -> None:
        """A bug met while serving this client: said once in the log (no data, no
        credential), `* BYE Internal error` to the client, and the connection closed."""
        session = self.session
        log.error("IMAP session failed", extra={
            "user": session.user if session is not None and session.user else "",
            "reason": type(exc).__name__})
        await self.close(b"* BYE Internal error\r\n")

    async def _upstream_refused(self, exc: BaseException) -> None:
        """No upstream connection: the client is told in a BYE, the admin in a log line that
        says why (an upstream that closes before its greeting is most often at its
        connection limit: Dovecot's imap-login process_limit, docs/imap-front.md)."""
        closed = isinstance(exc, UpstreamUnavailable) and "closed the connection" in str(exc)
        self.front.services.metrics.upstream_errors.labels(
            "imap", "closed" if closed else "unreachable").inc()
        reason = str(exc) if isinstance(exc, UpstreamUnavailable) else type(exc).__name__
        log.warning("upstream IMAP unavailable: %s%s", reason,
                    " (at its connection limit?)" if closed else "",
                    extra={"upstream": f"{self.front.upstream.host}:{self.front.upstream.port}"})
        bye = (b"* BYE [UNAVAILABLE] The mail server closed the connection before its greeting;"
               b" try again later\r\n" if closed
               else b"* BYE [UNAVAILABLE] The mail server cannot be reached\r\n")
        with contextlib.suppress(Exception):
            write_if_open(self.writer, bye)
            await self.writer.drain()

    async def _pump(self, reader: asyncio.StreamReader, feed: Callable[[bytes], list[Action]],
                    held_back: Callable[[], bool]) -> None:
        """Read one side and feed the session, one read at a time, not while `held_back()`.

        While no batch of actions is being done the bytes are fed at once (nothing can run
        between the check and the feed), and a read the session says nothing to costs no
        batch."""
        while not self.closed:
            while held_back() and not self.closed:
                await self._wait_for_change()
            data = await self._read(reader)
            self.last_activity = time.monotonic()
            actions = feed(data) if data and not self.lock.locked() else None
            if actions == []:
                self.changed.set()
                continue
            async with self.lock:  # when free, taken without a pause: the order is kept
                await self._do(feed(data) if actions is None else actions)
                await self._check_login_limit()
            if not data:
                return

    async def _wait_for_change(self) -> None:
        self.changed.clear()
        await self.changed.wait()

    def _opened(self, results: list[tuple[tuple[str, int], MessageOpened | BaseException]]
                ) -> None:
        """Messages were opened (in the opening threads): the session hears of them in
        order.

        Results wait in `ready` for one feeding task, which hands the session all that
        arrived meanwhile and writes their answers at once: a task, a lock and a drain per
        message cost the event loop as much as a tenth of opening one."""
        if self.closed:
            return
        self.ready.extend(results)
        if self.feeder is None:
            self.feeder = asyncio.ensure_future(self._feed_opened())

    async def _feed_opened(self) -> None:
        session = self.session
        assert session is not None
        try:
            async with self.lock:
                while self.ready and not self.closed:
                    actions: list[Action] = []
                    while self.ready:
                        (user, locks_before), result = self.ready.popleft()
                        if isinstance(result, BaseException):
                            # a bug: never show anything uncertain
                            log.error("opening a message failed", extra={
                                "user": session.user, "command": "FETCH",
                                "reason": type(result).__name__})
                            await self._do([*actions, SendToClient(b"* BYE Internal error\r\n"),
                                            Close("open failed")])
                            return
                        if (result.unlock is not None
                                and self.front.views.lock_count(user) != locks_before):
                            # an unlock ended while it was opened: the view cache asks the key
                            # store whether one holds now (the one it was opened under may
                            # be gone)
                            result = replace(result, unlock=None)
                        actions.extend(session.message_opened(result))
                    await self._check_login_limit()
                    await self._do(actions)
        except Exception as exc:  # a bug: said once and the session ends; never a silent hang
            await self.failed(exc)
        finally:
            self.feeder = None

    async def _watch_idle(self) -> None:
        """Autologout after `idle_timeout` without a byte from either side (RFC 9051 5.4);
        the upstream's IDLE keep-alives count."""
        timeout = self.front.settings.idle_timeout
        while not self.closed:
            left = self.last_activity + timeout - time.monotonic()
            if left <= 0 and (self.inbox is None or not self.inbox.pending):
                await self.close(b"* BYE Autologout; idle for too long\r\n")
                return
            await asyncio.sleep(max(left, 1.0))

    async def _check_login_limit(self) -> None:
        """Dovecot's mail_max_userip_connections: at most N logged-in connections per user
        and client address; the next one is told so and closed."""
        session = self.session
        if self.closed or self.counted is not None or session is None or session.user is None:
            return
        peer = self.writer.get_extra_info("peername")
        key = (self.front.accounts.user(session.user).lower(),
               str(peer[0]) if isinstance(peer, tuple) else "")
        counts = self.front.user_ip_counts
        if counts.get(key, 0) >= self.front.settings.max_user_ip_connections:
            log.info("connection refused", extra={"user": session.user,
                                                   "reason": "too many connections"})
            self.front.services.metrics.refusals.labels("imap", "connections").inc()
            await self.close(b"* BYE [LIMIT] Too many connections from this user and address\r\n")
            return
        counts[key] = counts.get(key, 0) + 1
        self.counted = key

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> bytes:
        try:
            return await reader.read(READ_SIZE)
        except (OSError, ssl.SSLError, EOFError):
            return b""

    async def _mail_login(self, action: MailLogin) -> None:
        """Unlock the key by the mail login, for a user who chose it (a worker thread: one
        PBKDF2, unless the key is already unlocked under this password)."""
        services = self.front.services
        await asyncio.get_running_loop().run_in_executor(
            self.front.workers, services.secure_mail.mail_login_logged,
            self.front.accounts.user(action.user), action.password, services.now())

    def _convert(self, action: ConvertRequested) -> None:
        """Start the conversion a client asked for by keyword (it runs on its own
        connection; this session sees its effects from the upstream)."""
        operations = self.front.folder_operations
        if operations is None or not self.mail_password:
            return
        user = self.front.accounts.user(action.user)
        try:
            operations.request_by_keyword(user, action.user,
                                          self.mail_password.decode("utf-8", "replace"),
                                          action.action, action.mailbox)
        except SmimeProxyError as exc:  # e.g. locked since the session looked
            log.info("keyword request not started",
                     extra={"user": user, "reason": type(exc).__name__})

    async def _seal(self, action: SealCopy) -> None:
        """Seal a Sent or Drafts copy to the user's own certificate (a worker thread), then
        let the session append it. No certificate: the copy is stored as written."""
        user = self.front.accounts.user(action.user)
        try:
            sealed = await asyncio.get_running_loop().run_in_executor(
                self.front.workers, seal_for_user, self.front.services, user, action.message)
        except Exception as exc:  # stored as written: the client's copy is never lost
            log.warning("cannot seal a stored copy",
                        extra={"user": user, "command": "APPEND", "reason": type(exc).__name__})
            sealed = None
        assert self.session is not None
        await self._do(self.session.copy_sealed(CopySealed(action.request_id, sealed)))

    async def _do(self, actions: list[Action]) -> None:
        assert self.up_writer is not None and self.session is not None
        index = 0
        while index < len(actions):
            if self.closed:
                return
            index = self._write_now(actions, index)
            if index == len(actions):
                break
            action = actions[index]
            index += 1
            if isinstance(action, SendToClient):
                # a large answer goes out as it is: not copied into a batch
                await self._write_large(action.data)
            elif isinstance(action, OpenMessage):
                user = self.front.accounts.user(action.user)
                locks_before = self.front.views.lock_count(user)
                if self.inbox is None:
                    self.inbox = Inbox(asyncio.get_running_loop(), self._opened)
                self.front.opening.submit(
                    self.inbox, (user, locks_before), open_for_client, self.front.services,
                    user, action.raw, action.request_id, self.front.processes)
            elif isinstance(action, MailLogin):
                if self.front.folder_operations is not None:
                    self.mail_password = action.password
                await self._mail_login(action)
            elif isinstance(action, ConvertRequested):
                self._convert(action)
            elif isinstance(action, SealCopy):
                await self._seal(action)
            elif isinstance(action, Pause):
                await self.writer.drain()
                await asyncio.sleep(action.seconds)
            elif isinstance(action, StartClientTls):
                await self._start_tls()
            elif isinstance(action, Close):
                await self.close()
                return
        self.changed.set()
        try:  # the sides written to
            if any(isinstance(action, SendToClient) for action in actions):
                await self.writer.drain()
            if any(isinstance(action, SendToUpstream) for action in actions):
                await self.up_writer.drain()
        except (OSError, ssl.SSLError):
            await self.close()

    async def _write_large(self, data: bytes) -> None:
        """Write a large piece as the client takes it: a slice at a time, so that the
        transport never holds a copy of what the socket did not take at once."""
        view = memoryview(data)
        try:
            for start in range(0, len(view), WRITE_SLICE):
                if not write_if_open(self.writer, view[start : start + WRITE_SLICE]):
                    raise ConnectionResetError("the client has gone")
                await self.writer.drain()
        except (OSError, ssl.SSLError):
            await self.close()

    async def _start_tls(self) -> None:
        context = self.front.tls_context
        assert context is not None and self.session is not None
        await self.writer.drain()
        # (the client pump is not reading: it is the one executing this action)
        # Plaintext the client pipelined after STARTTLS must not be read as if it came
        # through TLS: asyncio has no public way to drop the stream's buffer.
        buffer: bytearray | None = getattr(self.reader, "_buffer", None)
        if buffer:
            self.client_taken += len(buffer)  # dropped counts as taken (`_turns_in_callbacks`)
            buffer.clear()
        try:
            await self.writer.start_tls(
                context, ssl_handshake_timeout=self.front.settings.tls_handshake_timeout)
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError):
            await self.close()
            return
        await self._do(self.session.client_tls_started())

    async def close(self, bye: bytes = b"") -> None:
        if self.closed:
            return
        self.closed = True
        if self.views_user is not None:
            self.front.views.detach(self.views_user)
            self.views_user = None
        if self.counted is not None:
            counts = self.front.user_ip_counts
            counts[self.counted] -= 1
            if counts[self.counted] <= 0:
                del counts[self.counted]
            self.counted = None
        if self.inbox is not None:
            self.inbox.close()
        self.changed.set()
        for writer in (self.writer, self.up_writer):
            if writer is None:
                continue
            with contextlib.suppress(Exception):
                if bye and writer is self.writer:
                    write_if_open(writer, bye)
                await asyncio.wait_for(writer.drain(), 2.0)
            writer.close()
        for writer in (self.writer, self.up_writer):
            if writer is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), 1.0)
