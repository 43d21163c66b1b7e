"""The event loop the daemon and the key agent run on: uvloop where it is installed (a
dependency everywhere but Windows), else asyncio's own.

Why uvloop: much of the proxy's time per relayed command is the event loop's socket and
TLS work, which asyncio does in Python (its `sslproto` copies each TLS record through Python
buffers) and uvloop in C over libuv. Measured interleaved, the same hour: the relay's CPU per
`UID FETCH n BODY.PEEK[]` of 19 KB 470-670 µs against 630-870 µs (three pairs); with
bench/imap.py (three runs against two) 1000 clients in IDLE 127 MB against 146 MB, the
cached encrypted fetch 2.36-2.58 of Dovecot's speed against 1.61-1.75; the first encrypted
fetch and imaptest the same within their spread (docs/imap-front.md "Speed").

`SMIME_PROXY_EVENT_LOOP=asyncio` in the environment picks asyncio's loop (to compare, or to
rule the loop out when debugging); `uvloop`, the default, falls back to asyncio's loop when
uvloop is not installed; any other value is refused by name.

One difference the shells must mind: writing to a transport that is closing (closed by us,
or lost) is dropped silently by asyncio's loop but raises RuntimeError on uvloop.
`write_if_open` drops it on both, which is what every shell was written against: the lost
connection is then seen where it always was, at the next read or drain.

May import: errors, stdlib (uvloop when installed).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from smime_proxy.errors import ConfigError

ENVIRONMENT_VARIABLE = "SMIME_PROXY_EVENT_LOOP"
CHOICES = ("uvloop", "asyncio")
_T = TypeVar("_T")


def write_if_open(writer: asyncio.StreamWriter, data: bytes | bytearray | memoryview) -> bool:
    """`writer.write(data)` unless its transport is closing; whether it wrote."""
    if writer.transport.is_closing():
        return False
    writer.write(data)
    return True


def loop_name(environ: dict[str, str] | None = None) -> str:
    """"uvloop" or "asyncio": the loop `run` will use under `environ` (default: os.environ)."""
    wanted = (os.environ if environ is None else environ).get(ENVIRONMENT_VARIABLE, "uvloop")
    if wanted not in CHOICES:
        raise ConfigError(f"{ENVIRONMENT_VARIABLE}={wanted!r}: expected one of "
                          f"{', '.join(CHOICES)}")
    if wanted == "uvloop":
        try:
            import uvloop  # noqa: F401 - only whether it is there
        except ImportError:
            return "asyncio"
    return wanted


def loop_factory(environ: dict[str, str] | None = None
                 ) -> Callable[[], asyncio.AbstractEventLoop]:
    """A callable making a new loop of the kind `loop_name` names."""
    if loop_name(environ) == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def run(main: Coroutine[Any, Any, _T]) -> _T:
    """`asyncio.run(main)` on the loop `loop_name` picks."""
    try:
        factory = loop_factory()
    except ConfigError:
        main.close()  # never awaited: no "coroutine was never awaited" warning
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
