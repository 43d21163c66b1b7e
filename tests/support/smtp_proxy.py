"""Helpers for SMTP proxy tests: an async client (aiosmtplib, for tests on pytest-asyncio's
loop), an event loop in a thread (`LoopThread`: only for blocking clients such as smtplib,
swaks and s-nail, and for the IMAP tests' imaplib), users with keys and address books, and
the proxy front itself on a free 127.0.0.1 port."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import aiosmtplib
from cryptography.hazmat.primitives.serialization import Encoding

from smime_proxy import event_loop
from smime_proxy.config import ListenerConfig, ListenerTls, UpstreamEndpoint
from smime_proxy.keystore.contacts import Contacts
from smime_proxy.keystore.ports import MemoryAddressBook, MemoryKeyStore
from smime_proxy.keystore.service import SecureMail
from smime_proxy.policy import Policy, parse_policy
from smime_proxy.smtp.server import SmtpFront, SmtpSettings
from support import pki

T = TypeVar("T")
KEY_PASSWORD = "secure-mail-pw"
UNLOCK_URL = "https://127.0.0.1:8443/"


class LoopThread:
    """An event loop running in a daemon thread: the kind the daemon runs on
    (smime_proxy.event_loop: uvloop, or asyncio's with SMIME_PROXY_EVENT_LOOP=asyncio)."""

    def __init__(self) -> None:
        self.loop = event_loop.loop_factory()()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> LoopThread:
        self._thread.start()
        return self

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __exit__(self, *exc: object) -> None:
        async def _cancel_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(_cancel_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@dataclass
class People:
    """A CA and S/MIME identities by user name (alice, bob, carol, dave)."""

    ca: pki.Identity
    ids: dict[str, pki.Identity] = field(default_factory=dict)

    @classmethod
    def make(cls, names: tuple[str, ...] = ("alice", "bob", "carol", "dave")) -> People:
        ca = pki.make_ca("SMTP Test CA")
        return cls(ca, {n: pki.make_user(f"{n}@example.test", ca) for n in names})


_PEOPLE: People | None = None


def people() -> People:
    """One PKI per test session (RSA key generation is slow)."""
    global _PEOPLE  # noqa: PLW0603
    if _PEOPLE is None:
        _PEOPLE = People.make()
    return _PEOPLE


@dataclass
class KeyWorld:
    secure_mail: SecureMail
    contacts: Contacts
    now: datetime

    def give_key(self, user: str, identity: pki.Identity, *, unlock: bool) -> None:
        bundle = identity.key_pem() + identity.cert_pem() + b"".join(
            c.public_bytes(Encoding.PEM) for c in identity.chain)
        self.secure_mail.import_pkcs12(user, bundle, b"", KEY_PASSWORD)
        if unlock:
            self.secure_mail.unlock(user, KEY_PASSWORD, self.now)

    def know(self, user: str, identity: pki.Identity) -> None:
        self.contacts.add(user, identity.cert_pem())


def key_world(now: datetime = pki.NOW) -> KeyWorld:
    return KeyWorld(SecureMail(MemoryKeyStore(), kdf_iterations=1000),
                    Contacts(MemoryAddressBook()), now)


def policy(text: str = "") -> Policy:
    import yaml

    return parse_policy(yaml.safe_load(text) if text else {})


def listener(*, tls: tuple[Path, Path, str] | None = None,
             plaintext_loopback: bool = True) -> ListenerConfig:
    return ListenerConfig(
        host="127.0.0.1", port=0,
        tls=None if tls is None else ListenerTls(mode=tls[2], cert=tls[0], key=tls[1]),  # type: ignore[arg-type]
        plaintext_loopback=plaintext_loopback,
    )


def make_front(world: KeyWorld, upstream: UpstreamEndpoint, *, the_policy: Policy | None = None,
               listen: ListenerConfig | None = None,
               settings: SmtpSettings | None = None) -> SmtpFront:
    return SmtpFront(
        secure_mail=world.secure_mail, contacts=world.contacts,
        listener=listen or listener(), upstream=upstream, unlock_url=UNLOCK_URL,
        policy=the_policy or Policy(), now=lambda: world.now,
        settings=settings or SmtpSettings(timeout=5.0),
    )


def plain_upstream(port: int) -> UpstreamEndpoint:
    return UpstreamEndpoint(host="127.0.0.1", port=port, tls="none", verify=False,
                            ca_file=None)


@contextmanager
def running(loop: LoopThread, front: SmtpFront) -> Iterator[SmtpFront]:
    loop.run(front.start())
    try:
        yield front
    finally:
        loop.run(front.stop(1.0))


@asynccontextmanager
async def async_client(port: int, *, login: tuple[str, str] | None = None, ehlo: bool = True,
                       use_tls: bool = False, tls_context: ssl.SSLContext | None = None,
                       seconds: float = 20) -> AsyncIterator[aiosmtplib.SMTP]:
    """An aiosmtplib client of the proxy on 127.0.0.1 (EHLO done, optionally logged in);
    QUIT and closed on exit."""
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=seconds, use_tls=use_tls,
                             start_tls=False, tls_context=tls_context,
                             local_hostname="client.test")
    await client.connect()
    try:
        if ehlo:
            await client.ehlo()
        if login is not None:
            await client.login(*login)
        yield client
    finally:
        if client.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await client.quit()
        client.close()


async def command(client: aiosmtplib.SMTP, line: str) -> tuple[int, str]:
    """Send one raw command line; its reply code and text (no exception on a failure)."""
    response = await client.execute_command(*line.encode().split(b" "))
    return response.code, response.message
