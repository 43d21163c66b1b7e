"""The threads that open messages for the IMAP front's connections, and the way their
results reach the event loop: each connection has an `Inbox`, and the loop is called once
for every result that arrived in it meanwhile, not once per result.

Why not `concurrent.futures.ThreadPoolExecutor`: there each message cost a future with its
own `threading.Condition`, a work item, a done callback and one `call_soon_threadsafe` (a
write to the loop's self-pipe, a wake-up and a handle), and all of it holds the GIL, which
bounds the first read of encrypted mail (docs/native.md, "the GIL"). Here a job is a tuple
in a `queue.SimpleQueue` (C), and a result is appended to a deque.

May import: stdlib.
"""

from __future__ import annotations

import collections
import contextlib
import queue
import threading
from asyncio import AbstractEventLoop
from collections.abc import Callable
from typing import Generic, TypeVar

C = TypeVar("C")  # what the submitter keeps with a job
T = TypeVar("T")  # a job's result


class Inbox(Generic[C, T]):
    """Where one connection's finished jobs wait for its event loop. `deliver` is called on
    the loop with every (context, result or the exception the job raised) that arrived, in
    the order they finished; never after `close`."""

    def __init__(self, loop: AbstractEventLoop,
                 deliver: Callable[[list[tuple[C, T | BaseException]]], None]) -> None:
        self._loop = loop
        self._deliver = deliver
        self._done: collections.deque[tuple[C, T | BaseException]] = collections.deque()
        self._called = False  # a call of `_take` is on its way to the loop
        self.pending = 0  # submitted, not yet delivered or dropped (on the loop)
        self.closed = False

    def put(self, context: C, result: T | BaseException) -> None:
        """In a worker thread: one finished job."""
        self._done.append((context, result))
        if not self._called:
            # A race with `_take` clearing the flag at once can only call it twice; the
            # second finds nothing and does nothing. It can never miss a result: `_take`
            # clears the flag before it empties the deque.
            self._called = True
            with contextlib.suppress(RuntimeError):  # the loop has closed
                self._loop.call_soon_threadsafe(self._take)

    def _take(self) -> None:
        self._called = False
        results = []
        done = self._done
        while done:
            results.append(done.popleft())
        self.pending -= len(results)
        if results and not self.closed:
            self._deliver(results)

    def close(self) -> None:
        """On the loop: nothing more is delivered, and jobs not begun are not run."""
        self.closed = True


class OpeningThreads:
    """`count` worker threads (started with the first job) for every connection's jobs, in
    the order submitted. A job of a closed inbox that has not begun is dropped."""

    def __init__(self, count: int, name: str) -> None:
        self._count = count
        self._name = name
        self._jobs: queue.SimpleQueue[tuple[Inbox[object, object], object,
                                            Callable[..., object], tuple[object, ...]]
                                      | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._stopped = False

    def submit(self, inbox: Inbox[C, T], context: C, job: Callable[..., T],
               *args: object) -> None:
        """On the loop: run `job(*args)` in a worker thread; its result goes to `inbox`."""
        if self._stopped:
            raise RuntimeError("the opening threads have stopped")
        if not self._threads:
            self._start()
        inbox.pending += 1
        self._jobs.put((inbox, context, job, args))  # type: ignore[arg-type]

    def _start(self) -> None:
        for number in range(self._count):
            # daemon: a job left running never holds the process at exit (the executor
            # this replaces joined its threads at exit instead)
            thread = threading.Thread(target=self._work, name=f"{self._name}_{number}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def _work(self) -> None:
        jobs = self._jobs
        while True:
            item = jobs.get()
            if item is None:
                return
            inbox, context, job, args = item
            if inbox.closed:
                inbox.put(context, CancelledJob())  # counted off on the loop, not delivered
                continue
            try:
                result: object = job(*args)
            except BaseException as exc:  # handed to the connection as it is (it says so)
                result = exc
            inbox.put(context, result)
            del item, inbox, context, job, args, result  # nothing kept alive while waiting

    def shutdown(self) -> None:
        """Jobs not begun are dropped; the threads end after the job they are doing."""
        self._stopped = True
        with contextlib.suppress(queue.Empty):
            while True:
                item = self._jobs.get_nowait()
                if item is not None:
                    item[0].put(item[1], CancelledJob())
        for _ in self._threads:
            self._jobs.put(None)


class CancelledJob(Exception):
    """What an inbox gets for a job that was never run (its connection closed, or the
    threads stopped)."""
