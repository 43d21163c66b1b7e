"""The stream pieces the IMAP shell is built of: asyncio's stream protocol with a way around
its reader (`StreamProtocol`, both sides of a client's connection), the lock that orders a
connection's turns and can be taken from a protocol callback (`TurnLock`), and a listener
whose connections have that protocol (`start_stream_server`).

Why: an IMAP command and its answer cost the proxy a few hundred microseconds of Python, and
each read that goes through a StreamReader wakes a task, takes a lock and drains a writer
on the way. When nothing waits before a read, the shell (imap/connection.py) does the
session's whole turn in the protocol callback instead: no task, no await.

May import: stdlib.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from ssl import SSLContext
from types import TracebackType


class StreamProtocol(asyncio.StreamReaderProtocol):
    """asyncio's stream protocol with a way around the reader: bytes that `shortcut` takes
    (it returns True) never reach the reader. `passed` counts the bytes the reader was
    given, and `shortcut(data, passed)` is told it, so that it can tell when the reader's
    consumer has taken them all (a shortcut past bytes still in the reader would reorder
    them)."""

    def __init__(self, reader: asyncio.StreamReader,
                 client_connected_cb: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                               Awaitable[None]] | None = None) -> None:
        super().__init__(reader, client_connected_cb)
        self.shortcut: Callable[[bytes, int], bool] | None = None
        self.passed = 0

    def data_received(self, data: bytes) -> None:
        shortcut = self.shortcut
        if shortcut is not None and shortcut(data, self.passed):
            return
        self.passed += len(data)
        super().data_received(data)


async def start_stream_server(
        connected: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
        host: str, port: int, *, limit: int, ssl: SSLContext | None,
        ssl_handshake_timeout: float | None) -> asyncio.Server:
    """`asyncio.start_server`, its connections' protocol a `StreamProtocol`
    (`writer.transport.get_protocol()`)."""
    loop = asyncio.get_running_loop()

    def factory() -> StreamProtocol:
        return StreamProtocol(asyncio.StreamReader(limit=limit), connected)

    return await loop.create_server(factory, host, port, ssl=ssl,
                                    ssl_handshake_timeout=ssl_handshake_timeout)


class TurnLock:
    """A lock for the turns of one connection (feed the session, carry out what it says),
    so that actions go out in the order the session gave them.

    Unlike asyncio.Lock it can be taken without awaiting (`take_now`, from a protocol
    callback), and `release` hands it straight to the first waiter, so that nothing taken
    now can slip in between a release and that waiter's turn."""

    __slots__ = ("_held", "_waiters")

    def __init__(self) -> None:
        self._held = False
        # made when first needed: a thousand idle connections would each hold an empty deque
        self._waiters: collections.deque[asyncio.Future[None]] | None = None

    def locked(self) -> bool:
        return self._held

    def take_now(self) -> bool:
        """Take the lock if it is free; never waits."""
        if self._held:
            return False
        self._held = True
        return True

    async def acquire(self) -> None:
        if not self._held:
            self._held = True
            return
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = collections.deque()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # it was handed over as the waiter was cancelled
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # held on, by the waiter now
                return
        self._held = False

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.release()
