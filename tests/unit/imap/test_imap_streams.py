"""`imap.streams.TurnLock`: the order of a connection's turns, taken with or without
awaiting."""

from __future__ import annotations

import asyncio

import pytest

from smime_proxy.imap.streams import TurnLock


async def test_take_now_only_when_free() -> None:
    lock = TurnLock()
    assert lock.take_now() and lock.locked()
    assert not lock.take_now()
    lock.release()
    assert not lock.locked() and lock.take_now()


async def test_release_hands_the_lock_to_the_first_waiter_before_anyone_takes_it_now() -> None:
    """The waiter holds the lock from the release on: a callback that tries to take it in
    between (before the waiter's task runs) finds it held, so its read goes behind."""
    lock = TurnLock()
    order: list[str] = []
    await lock.acquire()

    async def waiter(name: str) -> None:
        async with lock:
            order.append(name)
            await asyncio.sleep(0)

    tasks = [asyncio.ensure_future(waiter(n)) for n in ("first", "second")]
    await asyncio.sleep(0)  # both wait
    lock.release()
    assert lock.locked() and not lock.take_now()
    await asyncio.gather(*tasks)
    assert order == ["first", "second"]
    assert not lock.locked()


async def test_a_cancelled_waiter_neither_holds_nor_blocks_the_lock() -> None:
    lock = TurnLock()
    await lock.acquire()
    cancelled = asyncio.ensure_future(lock.acquire())
    after = asyncio.ensure_future(lock.acquire())
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    lock.release()
    await asyncio.wait_for(after, 1)  # the next waiter got it
    assert lock.locked()
    lock.release()
    assert not lock.locked()


async def test_a_waiter_cancelled_once_handed_the_lock_gives_it_back() -> None:
    lock = TurnLock()
    await lock.acquire()
    handed = asyncio.ensure_future(lock.acquire())
    await asyncio.sleep(0)
    lock.release()  # handed over: the waiter's future is done, its task not yet run
    handed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await handed
    assert not lock.locked()
