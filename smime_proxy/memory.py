"""Process memory tuning for large messages (called once by the CLI and the daemon).

glibc's malloc raises its mmap threshold each time a large block is freed (up to 32 MB), so
after the first big message, 25 MB buffers come from the heap and their memory is not given
back: peak RSS for a 25 MB encryption grew from 2.6x to 4.1x the message. Fixing the
threshold at 288 KiB keeps large buffers (the base64 blocks of 4096 lines, 312 KiB, and
above) in their own mappings, returned to the system as soon as they are freed. It is above
asyncio's 256 KiB socket reads (`recv(262144)`, `SSLObject.read(262144)`: the bytes object is a
little larger than that), which at exactly 256 KiB cost an mmap plus an munmap or mremap per
socket read (27 syscalls per message relayed by the SMTP front, ~0.5 ms of CPU).
A no-op where glibc is not the C library.

Each TLS connection of asyncio (3.11 to 3.13) allocates a 256 KiB read buffer
(`asyncio.sslproto.SSLProtocol.max_size`) for its whole life: with 1000 clients in IDLE,
each with its TLS upstream connection, that was most of the proxy's 365 MB (bench/imap.py).
`shrink_tls_buffers` makes it 32 KiB (two TLS records): more, smaller reads for a large
message, an eighth of the memory for every idle connection (1000 in IDLE: 132 MB in all).
It matters on asyncio's loop only (`SMIME_PROXY_EVENT_LOOP=asyncio`, event_loop.py): uvloop,
the default, reads TLS into its own C buffer, whose untouched pages cost nothing (1000 in
IDLE: 126 MB in all on uvloop against 146 MB on asyncio's loop, bench/imap.py). What a read
touches there stays resident: `imap.upstream._small_receive_window_nearby` bounds the reads
of the upstream connections.

May import: stdlib only.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_MMAP_THRESHOLD = -3  # glibc malloc.h
TLS_READ_BUFFER_BYTES = 32 * 1024
MMAP_THRESHOLD_BYTES = 288 * 1024
_done = False


def tune_allocator() -> bool:
    """Fix glibc's mmap threshold; True when it took effect."""
    global _done  # noqa: PLW0603 - once per process
    if _done:
        return True
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    result: int = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    _done = result == 1
    return _done


def shrink_tls_buffers() -> bool:
    """Set asyncio's per-connection TLS read buffer to `TLS_READ_BUFFER_BYTES` (for the
    connections made after the call); True when asyncio has that setting."""
    from asyncio import sslproto

    protocol = getattr(sslproto, "SSLProtocol", None)
    if protocol is None or not isinstance(getattr(protocol, "max_size", None), int):
        return False
    protocol.max_size = TLS_READ_BUFFER_BYTES
    return True


def tune_memory() -> None:
    """Everything above, once at start (idempotent)."""
    tune_allocator()
    shrink_tls_buffers()
