"""Worker processes that open encrypted messages for the IMAP front (issue 10).

Opening a message is Python work under the GIL (CMS parsing, verification, MIME): threads
cannot use a second core for it. With `imap.open_processes: N` in the config, N processes do
that work. The private key never goes there: the front's thread recovers each message's
content-encryption key with the user's key agent (`smime.message_content_key`), and a
process is given the stored message and that one key (`imap.opening.open_in_child`). The
processes are started with `spawn`, so they inherit nothing of the daemon's memory (keys,
passwords, sessions). With revocation checking on, messages are opened in threads (the
checks need the daemon's caches and network).

May import: config, crypto, services, imap.opening (inside: the functions a process runs), stdlib.
"""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import multiprocessing
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from cryptography.hazmat.primitives.serialization import Encoding

from smime_proxy.crypto.enveloped import ContentKey
from smime_proxy.services import Services

Signer = tuple[bytes, tuple[str, ...], bytes | None]  # certificate, capabilities, preferred


@dataclass(frozen=True)
class ChildSettings:
    """What a worker process is started with (pickled once)."""

    trust_roots: tuple[bytes, ...]  # DER
    unauthenticated: Literal["withhold", "text"]
    signatures: Literal["strip", "keep"]


@dataclass(frozen=True)
class ChildOpened:
    """A worker process's answer: the shown message, the valid signature's signers (DER),
    the address it was verified for, the rendered structures of the view; or `error`, the
    word the client is told (the message is then shown as stored)."""

    content: bytes = field(repr=False)
    signers: tuple[Signer, ...]
    from_address: str | None
    rendered: dict[str, bytes] = field(repr=False)
    error: str | None = None


class OpenProcesses:
    """The pool (started at once: a process takes about a second to import what it needs)."""

    def __init__(self, count: int, services: Services) -> None:
        from smime_proxy.imap import opening  # the functions a process runs

        config = services.config
        self._settings = ChildSettings(
            tuple(root.public_bytes(Encoding.DER) for root in services.trust_roots),
            config.unauthenticated_content, config.signatures)
        self._count = count
        self._open_in_child = opening.open_in_child
        self._start_child = opening.start_child
        self._lock = threading.Lock()
        self._stopped = False
        self._pool = self._new_pool()

    def _new_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        pool = concurrent.futures.ProcessPoolExecutor(
            self._count, mp_context=multiprocessing.get_context("spawn"),
            initializer=self._start_child, initargs=(self._settings,))
        for _ in range(self._count):  # start them now, not at the first message
            pool.submit(int)
        return pool

    def open(self, raw: bytes, key: ContentKey, now: datetime) -> ChildOpened:
        """Blocking (a front thread): the message opened in a process. A process that dies
        (killed, out of memory) breaks the pool: a new one is started for what follows,
        and this message is shown as stored."""
        pool = self._pool
        try:
            return pool.submit(self._open_in_child, raw, key.key, now).result()
        except concurrent.futures.process.BrokenProcessPool:
            with self._lock:
                if self._pool is pool and not self._stopped:
                    pool.shutdown(wait=False, cancel_futures=True)
                    self._pool = self._new_pool()
            return ChildOpened(b"", (), None, {}, error="internal")
        except Exception:  # the pool stopped
            return ChildOpened(b"", (), None, {}, error="internal")

    def shutdown(self) -> None:
        with self._lock:
            self._stopped = True
            self._pool.shutdown(wait=False, cancel_futures=True)
