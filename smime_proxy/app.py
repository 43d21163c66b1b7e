"""Composition root: the one place that names concrete classes and wires the daemon.

`open_stores(data_dir, store=..., sessions=...)` opens the key store and address book on the
configured engine: SQLite in data_dir (the default) or PostgreSQL (the CLI and the demo use it
too), and the unlock sessions: in memory (the default; always for the CLI) or shared in Redis;
`build_services(config)` opens the stores, server CA and trust roots;
`Daemon(services, fronts).run()` starts every front (control endpoint, SMTP submission,
IMAP), handles SIGTERM/SIGINT (stop accepting, let in-flight work finish within a bound)
and SIGHUP (reload what can be reloaded, e.g. the policy file), and locks idle keys.

May import: everything below it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from cryptography import x509

from smime_proxy.config import AgentConfig, Config, SessionsConfig, StoreConfig
from smime_proxy.errors import ConfigError, KeyStoreError
from smime_proxy.keystore.ca import ServerCA
from smime_proxy.keystore.contacts import Contacts
from smime_proxy.keystore.ldap import LdapDirectory
from smime_proxy.keystore.pkcs import KDF_ITERATIONS
from smime_proxy.keystore.ports import AddressBook, KeyStore
from smime_proxy.keystore.service import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_UNLOCK, SecureMail
from smime_proxy.keystore.sessions import MemoryUnlockSessions, UnlockSessions
from smime_proxy.keystore.sqlite import SqliteAddressBook, SqliteDatabase, SqliteKeyStore
from smime_proxy.metrics import MailMetrics
from smime_proxy.native import native
from smime_proxy.revocation import RevocationChecker

log = logging.getLogger("smime_proxy.app")

SHUTDOWN_GRACE_SECONDS = 10.0
LOCK_SWEEP_SECONDS = 5.0


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class DaemonServices:
    """What the fronts share. `now` is the clock (tests inject their own)."""

    config: Config
    secure_mail: SecureMail
    contacts: Contacts
    trust_roots: tuple[x509.Certificate, ...]
    ca: ServerCA | None
    now: Callable[[], datetime] = utc_now
    reload_hooks: list[Callable[[], None]] = field(default_factory=list)
    metrics: MailMetrics = field(default_factory=MailMetrics)
    ldap: LdapDirectory | None = None
    revocation: RevocationChecker | None = None

    def reload(self) -> None:
        for hook in self.reload_hooks:
            try:
                hook()
            except Exception:  # a bad reload keeps the old state
                log.exception("reload failed; keeping the previous settings")


class Front(Protocol):
    """A listener of the daemon (control endpoint, SMTP, IMAP)."""

    name: str

    async def start(self) -> None:
        """Bind and start accepting; raise ConfigError if the address cannot be used."""

    async def stop(self, grace: float) -> None:
        """Stop accepting; let in-flight work finish for up to `grace` seconds, then close."""


def load_trust_roots(config: Config) -> tuple[x509.Certificate, ...]:
    roots: list[x509.Certificate] = []
    for index, path in enumerate(config.trust_roots):
        try:
            roots.extend(x509.load_pem_x509_certificates(path.read_bytes()))
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"trust_roots[{index}]: {path}: not readable PEM certificates ({exc})"
            ) from None
    return tuple(roots)


class Database(Protocol):
    """The engine under the stores (`SqliteDatabase`, `PostgresDatabase`): closed at the end."""

    def close(self) -> None: ...


@dataclass
class Stores:
    """The stores of one deployment: keys with unlock state, address books, their engine."""

    secure_mail: SecureMail
    contacts: Contacts
    database: Database

    def close(self) -> None:
        try:
            self.secure_mail.sessions.close()
        finally:
            self.database.close()


def open_sessions(sessions: SessionsConfig | None) -> UnlockSessions:
    """The unlock sessions the config's `sessions:` names: this process's memory, or Redis
    (reached now: an unreachable server or a bad cluster key stops the start)."""
    if sessions is None or sessions.backend == "memory":
        return MemoryUnlockSessions()
    from smime_proxy.keystore.redis_sessions import ClusterKey, RedisUnlockSessions

    if sessions.url is None:
        raise ConfigError("sessions.url: missing (backend redis needs url: redis://...)")
    shared = RedisUnlockSessions(sessions.url, ClusterKey(sessions.read_cluster_key()))
    try:
        shared.check()
    except BaseException:
        shared.close()
        raise
    log.info("unlock sessions in %s (cluster key id %s)", shared.where, shared.key_id)
    return shared


def open_stores(
    data_dir: str | os.PathLike[str],
    *,
    store: StoreConfig | None = None,
    ca: ServerCA | None = None,
    kdf_iterations: int = KDF_ITERATIONS,
    idle_timeout: timedelta = DEFAULT_IDLE_TIMEOUT,
    max_unlock: timedelta = DEFAULT_MAX_UNLOCK,
    mail_unlock: bool = True,
    sessions: SessionsConfig | None = None,
    agent: AgentConfig | None = None,
) -> Stores:
    """Open the key store and address book: SQLite in `data_dir` unless `store` (the config's
    `store:`) says PostgreSQL; and the unlock sessions (`open_sessions`: memory unless
    `sessions` says Redis). The daemon, the CLI and the demo all come here: this is the one
    place that names the SQLite, PostgreSQL and Redis classes."""
    database: Database
    key_store: KeyStore
    address_book: AddressBook
    if store is not None and store.backend == "postgresql":
        from smime_proxy.keystore.postgres import (
            PostgresAddressBook,
            PostgresDatabase,
            PostgresKeyStore,
        )

        shared = PostgresDatabase(store.read_dsn())
        database, key_store, address_book = (shared, PostgresKeyStore(shared),
                                             PostgresAddressBook(shared))
    else:
        local = SqliteDatabase.open(data_dir)
        database, key_store, address_book = (local, SqliteKeyStore(local),
                                             SqliteAddressBook(local))
    try:
        unlock_sessions = open_sessions(sessions)
    except BaseException:
        database.close()
        raise
    holder = None
    if agent is not None:  # the unlocked keys live in the key agent process
        from smime_proxy.agent.client import AgentClient

        holder = AgentClient(agent.socket)
    secure_mail = SecureMail(
        key_store,
        ca=ca,
        kdf_iterations=kdf_iterations,
        idle_timeout=idle_timeout,
        max_unlock=max_unlock,
        mail_unlock=mail_unlock,
        sessions=unlock_sessions,
        holder=holder,
    )
    return Stores(secure_mail, Contacts(address_book), database)


@contextlib.contextmanager
def stores_of(data_dir: str | os.PathLike[str], *, ca: ServerCA | None = None,
              store: StoreConfig | None = None) -> Iterator[Stores]:
    """`open_stores` for one command: closed when the block ends (production KDF cost)."""
    stores = open_stores(data_dir, store=store, ca=ca)
    try:
        yield stores
    finally:
        stores.close()


def build_services(
    config: Config,
    *,
    now: Callable[[], datetime] = utc_now,
    kdf_iterations: int = KDF_ITERATIONS,
) -> DaemonServices:
    """Open the data directory's stores. `kdf_iterations` below the default: tests only."""
    ca = ServerCA.load(config.data_dir) if ServerCA.exists(config.data_dir) else None
    stores = open_stores(
        config.data_dir,
        store=config.store,
        ca=ca,
        kdf_iterations=kdf_iterations,
        idle_timeout=timedelta(seconds=config.unlock.idle_timeout),
        max_unlock=timedelta(seconds=config.unlock.max_unlock),
        mail_unlock=config.unlock.mail_password,
        sessions=config.sessions,
        agent=config.agent,
    )
    return DaemonServices(
        config=config,
        secure_mail=stores.secure_mail,
        contacts=stores.contacts,
        trust_roots=load_trust_roots(config) + (
            (ca.certificate,) if ca is not None and config.trust_server_ca else ()),
        ca=ca,
        now=now,
        ldap=None if config.ldap is None else LdapDirectory.from_config(config.ldap),
        revocation=None if config.revocation == "off" else RevocationChecker(),
    )


def default_fronts(services: DaemonServices) -> list[Front]:
    """Every front this build has, in start order."""
    from smime_proxy.at_rest.operations import FolderOperations
    from smime_proxy.control import ControlFront

    control = services.config.control
    agent = services.config.agent
    if agent is not None and agent.start:  # first started, last stopped
        from smime_proxy.agent.child import AgentChild

        first: list[Front] = [AgentChild(agent.socket)]
    else:
        first = []
    folder_operations = FolderOperations(services)  # the page's, the API's, IMAP keywords'
    fronts: list[Front] = [
        *first,
        ControlFront(
            services,
            client_max_size=control.max_upload_bytes,
            allowed_hosts=control.allowed_hosts,
            mail_domain=control.mail_domain,
            folder_operations=folder_operations,
        )
    ]
    from smime_proxy.smtp.server import SmtpFront

    fronts.append(SmtpFront.from_services(services))
    from smime_proxy.imap.server import ImapFront

    fronts.append(ImapFront(services, folder_operations=folder_operations))
    if services.config.listeners.lmtp is not None:
        from smime_proxy.lmtp.server import LmtpFront

        fronts.append(LmtpFront.from_services(services))
    return fronts


class Daemon:
    def __init__(self, services: DaemonServices, fronts: Sequence[Front]) -> None:
        self.services = services
        self.fronts = list(fronts)
        self._stopping = asyncio.Event()
        self._started: list[Front] = []

    def request_stop(self) -> None:
        self._stopping.set()

    async def start(self) -> None:
        for front in self.fronts:
            await front.start()
            self._started.append(front)
            port = getattr(front, "port", None)
            listener = getattr(front, "listener", None)
            host = getattr(listener, "host", None)
            if port is None:
                log.info("%s started", front.name, extra={"front": front.name})
            else:
                log.info("%s listening on %s port %s", front.name, host or "?", port,
                         extra={"front": front.name})

    async def stop(self, grace: float = SHUTDOWN_GRACE_SECONDS) -> None:
        for front in reversed(self._started):
            try:
                await front.stop(grace)
            except Exception:
                log.exception("error while stopping %s", front.name)
        self._started.clear()

    async def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT, stop gracefully."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        sweeper = asyncio.create_task(self._lock_sweeper(), name="lock-sweeper")
        try:
            await self.start()
            log.info("smime-proxy ready (opening mail: %s)", "native core" if native is not None
                     else "Python (the native core is not built or is turned off)")
            await self._stopping.wait()
            log.info("shutting down")
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await self.stop()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            log.info("stopped")

    def _reload(self) -> None:
        log.info("SIGHUP: reloading")
        self.services.reload()

    async def _lock_sweeper(self) -> None:
        """Lock keys whose idle or absolute time ran out, even if nobody touches them (in a
        worker thread: a shared session store is a network call per user)."""
        mail = self.services.secure_mail
        while True:
            await asyncio.sleep(LOCK_SWEEP_SECONDS)
            try:
                ended = await asyncio.to_thread(mail.lock_expired, self.services.now())
            except KeyStoreError as exc:  # a session store outage: the next sweep retries
                log.warning("lock sweep failed", extra={"reason": type(exc).__name__})
                continue
            for user in ended:
                log.info("auto-locked", extra={"user": user})
