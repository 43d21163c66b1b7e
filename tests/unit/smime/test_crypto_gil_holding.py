"""The two small steps of opening that keep the GIL instead of giving it away for a moment
(stop 30): a signed part's digest, hashed in pieces below hashlib's threshold for a usual
message and whole for a large one, and the RFC 3218 stand-in key, taken from a pool of
random bytes. Each must give what the plain call gives: the same digest; fresh bytes never
handed out twice, per thread and per process."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smime_proxy.crypto import keyagent, signed

SIZES = [0, 1, 2046, 2047, 2048, 4094, 4095, 20_000, (1 << 18) - 1, 1 << 18, (1 << 18) + 7]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", ["sha1", "sha256", "sha384", "sha512"])
def test_the_digest_is_hashlibs_at_every_size(size: int, name: str) -> None:
    data = os.urandom(size)
    assert signed._digest(name, data) == hashlib.new(name, data).digest()


@given(st.binary(max_size=9000))
@settings(max_examples=200)
def test_the_digest_is_hashlibs(data: bytes) -> None:
    assert signed._digest("sha256", data) == hashlib.sha256(data).digest()


def _pool_bytes(lengths: list[int]) -> list[bytes]:
    return [keyagent._fallback_key(n) for n in lengths]


def test_the_stand_in_keys_are_never_handed_out_twice() -> None:
    """Across refills of the pool (8 KiB), every key is fresh: no two overlap."""
    keys = _pool_bytes([32, 16, 24] * 1000)  # 72 KiB: nine refills
    assert [len(k) for k in keys] == [32, 16, 24] * 1000
    assert len(set(keys)) == len(keys)
    # a 16-byte window of one key seen again anywhere would be a reuse
    seen: set[bytes] = set()
    for key in keys:
        window = key[:16]
        assert window not in seen
        seen.add(window)
    assert len(keyagent._fallback_key(10_000)) == 10_000  # larger than the pool


def test_each_thread_and_each_process_reads_its_own() -> None:
    got: list[bytes] = []
    thread = threading.Thread(target=lambda: got.append(keyagent._fallback_key(32)))
    mine = keyagent._fallback_key(32)
    thread.start()
    thread.join()
    assert got and got[0] != mine
    pool = keyagent._RANDOM_POOL
    before = (pool.data, pool.taken)
    pool.pid = -1  # as a forked child sees the parent's pool
    child = keyagent._fallback_key(32)
    assert pool.pid == os.getpid() and pool.data != before[0]
    assert child not in before[0]
