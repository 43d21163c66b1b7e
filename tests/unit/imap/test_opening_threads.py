"""`imap.opening_threads`: jobs run in the worker threads, results reach the event loop in
batches and in the order they finished, none after the inbox closed, none lost."""

from __future__ import annotations

import asyncio
import threading

import pytest

from smime_proxy.imap.opening_threads import CancelledJob, Inbox, OpeningThreads


class Collected:
    """An inbox on the running loop, and what it delivered, batch by batch."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, int | BaseException]]] = []
        self.arrived = asyncio.Event()
        self.inbox: Inbox[int, int] = Inbox(asyncio.get_running_loop(), self.deliver)

    def deliver(self, results: list[tuple[int, int | BaseException]]) -> None:
        assert threading.current_thread() is threading.main_thread()  # on the loop
        self.batches.append(results)
        self.arrived.set()

    async def until(self, count: int) -> list[tuple[int, int | BaseException]]:
        while sum(map(len, self.batches)) < count:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), 10)
        return [result for batch in self.batches for result in batch]


def square(number: int) -> int:
    return number * number


def fails(number: int) -> int:
    raise ValueError(number)


class Gate:
    """A job that holds its thread until `release` is set, and says when it began."""

    def __init__(self) -> None:
        self.started, self.release = threading.Event(), threading.Event()
        self.ran: list[int] = []

    def job(self, number: int) -> int:
        self.started.set()
        self.release.wait(10)
        self.ran.append(number)
        return number

    async def begun(self) -> bool:
        return await asyncio.to_thread(self.started.wait, 10)


async def test_every_result_arrives_once_with_its_context() -> None:
    threads = OpeningThreads(2, "test-open")
    collected = Collected()
    inbox = collected.inbox
    try:
        for number in range(200):
            threads.submit(inbox, number, square, number)
        assert inbox.pending == 200
        results = await collected.until(200)
        assert sorted(results, key=lambda pair: pair[0]) == [(n, n * n) for n in range(200)]
        await asyncio.sleep(0.05)  # a second call of the loop delivers nothing more
        assert sum(map(len, collected.batches)) == 200 and inbox.pending == 0
        assert len(collected.batches) < 200  # many arrived in one call
    finally:
        threads.shutdown()


async def test_a_job_that_raises_gives_its_exception() -> None:
    threads = OpeningThreads(1, "test-open")
    collected = Collected()
    inbox = collected.inbox
    try:
        threads.submit(inbox, 7, fails, 7)
        [(context, result)] = await collected.until(1)
        assert context == 7 and isinstance(result, ValueError)
    finally:
        threads.shutdown()


async def test_a_closed_inbox_gets_nothing_and_its_jobs_are_not_run() -> None:
    threads = OpeningThreads(1, "test-open")
    collected = Collected()
    inbox = collected.inbox
    gate = Gate()
    try:
        threads.submit(inbox, 1, gate.job, 1)
        threads.submit(inbox, 2, gate.job, 2)
        assert await gate.begun()
        inbox.close()
        gate.release.set()
        for _ in range(100):
            if inbox.pending == 0:
                break
            await asyncio.sleep(0.02)
        assert inbox.pending == 0  # both counted off
        assert gate.ran == [1] and collected.batches == []  # the second never ran
    finally:
        threads.shutdown()


async def test_after_shutdown_jobs_not_begun_are_cancelled() -> None:
    threads = OpeningThreads(1, "test-open")
    collected = Collected()
    inbox = collected.inbox
    gate = Gate()
    threads.submit(inbox, 1, gate.job, 1)
    threads.submit(inbox, 2, square, 2)
    assert await gate.begun()
    threads.shutdown()
    gate.release.set()
    results = dict(await collected.until(2))
    assert results[1] == 1 and isinstance(results[2], CancelledJob)
    with pytest.raises(RuntimeError):
        threads.submit(inbox, 3, square, 3)
