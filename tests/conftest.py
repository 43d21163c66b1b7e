"""Top-level pytest configuration: make `tests/support` importable as `support`, refuse to test
any copy of the package but this checkout's (the editable install points here; a stale
non-editable install in the venv would otherwise be imported silently), and the session's
real Dovecot + Postfix upstream (``upstream``), shared by tests/integration and tests/clients.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import smime_proxy
from smime_proxy import event_loop
from smime_proxy.harness import Upstream, start_upstream

sys.path.insert(0, str(Path(__file__).parent))

_ROOT = Path(__file__).resolve().parent.parent
_IMPORTED = Path(smime_proxy.__file__).resolve().parent
if _IMPORTED != _ROOT / "smime_proxy":
    raise RuntimeError(
        f"pytest imported smime_proxy from {_IMPORTED}, not from this checkout "
        f"({_ROOT / 'smime_proxy'}): reinstall with `pip install -e .[test]`"
    )


@pytest.fixture(scope="session")
def upstream() -> Iterator[Upstream]:
    """A running upstream: ``host``, ``imap_port`` (plain + STARTTLS), ``imaps_port``,
    ``submission_port`` (alias ``smtp_port``), ``lmtp_port``, ``ca_file``,
    ``users`` ({"alice": "alice-pw", ...}), ``maildirs``, ``address(user)``, ``deliver()``.

    Session-scoped: started once (in a fresh directory under /tmp, which Dovecot's and
    Postfix's unprivileged users can reach) and stopped at the end of the session. Tests must
    not stop it; they share users alice, bob and carol, so use unique subjects or mailboxes."""
    workdir = Path(tempfile.mkdtemp(prefix="smime-upstream-"))
    os.chmod(workdir, 0o711)  # noqa: S103 (mkdtemp makes it 0700; the daemons' users need search)
    up = start_upstream(workdir)
    try:
        yield up
    finally:
        up.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item
                                  ) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Async tests run on the loop the daemon runs on (`smime_proxy.event_loop`: uvloop,
    or asyncio's with SMIME_PROXY_EVENT_LOOP=asyncio)."""
    return {event_loop.loop_name(): event_loop.loop_factory()}
