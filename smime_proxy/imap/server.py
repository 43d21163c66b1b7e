"""The IMAP front: its listener and what its clients share (`ImapFront`); each client is an
`imap.connection.ClientConnection`.

- Listener per `listeners.imap`: implicit TLS, STARTTLS offered on the plain port, or plain
  text (login only from a loopback client with `plaintext_loopback: true`).
- Shared by the front's clients: the threads (`imap.opening_threads`) and processes that
  open messages, the worker threads for mail logins and sealing stored copies,
  the opened views (`imap.view_cache.OpenedViews`, dropped on lock), the login throttle
  and the per user and address connection counts.
- `stop(grace)`: stop accepting, wait up to `grace` for commands in progress, then
  `* BYE` to every client and close.

May import: accounts, at_rest, config, errors, services, throttle, imap, memory, tlsconfig,
stdlib.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from dataclasses import dataclass

from smime_proxy.accounts import Accounts
from smime_proxy.at_rest.operations import FolderOperations
from smime_proxy.config import ListenerConfig, UpstreamEndpoint
from smime_proxy.errors import ConfigError
from smime_proxy.imap.connection import ClientConnection
from smime_proxy.imap.open_processes import OpenProcesses
from smime_proxy.imap.opening_threads import OpeningThreads
from smime_proxy.imap.streams import start_stream_server
from smime_proxy.imap.view_cache import OpenedViews
from smime_proxy.imap.wire import MAX_LINE
from smime_proxy.memory import tune_memory
from smime_proxy.services import Services
from smime_proxy.throttle import Throttle
from smime_proxy.tlsconfig import listener_context


@dataclass(frozen=True)
class ImapSettings:
    connect_timeout: float = 30.0
    tls_handshake_timeout: float = 30.0
    # Messages read from the upstream and not yet opened, and their stored bytes: enough
    # for the threads never to wait for the next one (first encrypted fetch, two interleaved
    # runs of 5 rounds, 8 against 32: 749 -> 804 and 914 -> 939 messages/s), few enough
    # bytes to hold (8 of any size before; a message larger than the bound is opened alone).
    max_pending_opens: int = 32
    max_pending_open_bytes: int = 8 * 1024 * 1024
    max_client_backlog: int = 256 * 1024  # unread client bytes held by the session
    max_user_ip_connections: int = 10  # per user and address; config imap.max_userip_connections
    idle_timeout: float = 30 * 60  # nothing from client nor upstream: autologout
    # Threads opening messages. Opening is Python work under the GIL but for the RSA
    # operation: more threads only contend (bench/imap.py, 300 encrypted messages: 158 msg/s
    # with 1, 146 with 2, 138 with 4); 2 keep one huge message from holding up the others.
    open_workers: int = 2


# --- the front ----------------------------------------------------------------------------


class ImapFront:
    """The `Front` of the IMAP proxy (see app.Front)."""

    name = "imap"

    def __init__(self, services: Services, *, listener: ListenerConfig | None = None,
                 upstream: UpstreamEndpoint | None = None,
                 settings: ImapSettings | None = None,
                 folder_operations: FolderOperations | None = None) -> None:
        """`folder_operations`: where keyword requests go (None: a keyword is only a
        keyword). `settings`: by default ImapSettings with the config's connection limit."""
        config = services.config
        self.folder_operations = folder_operations
        self.services = services
        self.listener = listener if listener is not None else config.listeners.imap
        self.upstream = upstream if upstream is not None else config.upstream.imap
        self.locked_fetch = config.locked_fetch
        self.sealed_uses = frozenset(
            use for use, on in (("\\SENT", config.imap.seal_sent),
                                ("\\DRAFTS", config.imap.seal_drafts)) if on)
        self.settings = settings if settings is not None else ImapSettings(
            max_user_ip_connections=config.imap.max_userip_connections)
        self.tls_context = listener_context(self.listener, "imap")
        self._server: asyncio.Server | None = None
        self._connections: set[ClientConnection] = set()
        self.user_ip_counts: dict[tuple[str, str], int] = {}
        self.login_throttle = Throttle(services.now)  # across this front's connections
        self.accounts = Accounts.from_config(config)  # the key-store user of a login
        mib = 1024 * 1024
        # the labelled counters once: `labels()` takes a lock and builds a key each time,
        # and every message of a content FETCH is looked up
        hits, misses = (services.metrics.view_cache.labels(word) for word in ("hit", "miss"))
        self.views = OpenedViews(config.imap.view_cache_mb_per_user * mib,
                                 config.imap.view_cache_mb * mib,
                                 lambda hit: (hits if hit else misses).inc())
        services.secure_mail.add_lock_listener(self.views.drop_decrypted)
        self._tasks: set[asyncio.Task[None]] = set()
        # with worker processes, a thread recovers a message's key and waits for its
        # process: two threads per process keep them busy
        self.processes: OpenProcesses | None = None
        self.opening = OpeningThreads(
            self.settings.open_workers + 2 * config.imap.open_processes, "imap-open")
        # the other blocking jobs of a session: a mail login's key derivation, sealing a
        # stored copy
        self.workers = concurrent.futures.ThreadPoolExecutor(
            self.settings.open_workers, thread_name_prefix="imap-work")

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return self.listener.port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        tune_memory()  # idempotent; `smime-proxy serve` did it already
        count = self.services.config.imap.open_processes
        if count and self.processes is None:
            self.processes = OpenProcesses(count, self.services)
        implicit = self.listener.tls is not None and self.listener.tls.mode == "implicit"
        try:
            self._server = await start_stream_server(
                self._client, self.listener.host, self.listener.port, limit=MAX_LINE,
                ssl=self.tls_context if implicit else None,
                ssl_handshake_timeout=self.settings.tls_handshake_timeout if implicit else None)
        except OSError as exc:
            raise ConfigError(f"listeners.imap.port: cannot listen on {self.listener.host} "
                              f"port {self.listener.port}: {exc.strerror}") from None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = ClientConnection(self, reader, writer)
        self._connections.add(connection)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await connection.run()
        except Exception as exc:
            await connection.failed(exc)
        finally:
            await connection.close()
            self._connections.discard(connection)
            if task is not None:
                self._tasks.discard(task)

    async def stop(self, grace: float) -> None:
        if self._server is not None:
            self._server.close()
        deadline = time.monotonic() + grace
        while self._connections and time.monotonic() < deadline:
            if not any(c.busy for c in self._connections):
                break
            await asyncio.sleep(0.05)
        for connection in list(self._connections):
            await connection.close(b"* BYE Server shutting down\r\n")
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None
        self.opening.shutdown()
        self.workers.shutdown(wait=False, cancel_futures=True)
        if self.processes is not None:
            self.processes.shutdown()
            self.processes = None
