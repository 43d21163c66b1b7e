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
import multiprocessing
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
        settings = ChildSettings(
            tuple(root.public_bytes(Encoding.DER) for root in services.trust_roots),
            config.unauthenticated_content, config.signatures)
        self._open_in_child = opening.open_in_child
        self._pool = concurrent.futures.ProcessPoolExecutor(
            count, mp_context=multiprocessing.get_context("spawn"),
            initializer=opening.start_child, initargs=(settings,))
        for _ in range(count):  # start them now, not at the first message
            self._pool.submit(int)

    def open(self, raw: bytes, key: ContentKey, now: datetime) -> ChildOpened:
        """Blocking (a front thread): the message opened in a process."""
        try:
            return self._pool.submit(self._open_in_child, raw, key.key, now).result()
        except Exception:  # a process died (BrokenProcessPool) or the pool stopped
            return ChildOpened(b"", (), None, {}, error="internal")

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
