"""Fixtures for integration tests: the real Dovecot + Postfix upstream (smime_proxy.harness).

``upstream`` is session-scoped: started once (in a fresh directory under /tmp, which Dovecot's
and Postfix's unprivileged users can reach) and stopped at the end of the session. Tests must
not stop it; they share users alice, bob and carol, so use unique subjects or mailboxes.

``imaptest`` is Dovecot's imaptest, built once from tests/tools/imaptest/ and cached outside
the repository (support/imaptest.py).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from smime_proxy.harness import Upstream, start_upstream
from support import imaptest as imaptest_tool


@pytest.fixture(scope="session")
def upstream() -> Iterator[Upstream]:
    """A running upstream: ``host``, ``imap_port`` (plain + STARTTLS), ``imaps_port``,
    ``submission_port`` (alias ``smtp_port``), ``lmtp_port``, ``ca_file``,
    ``users`` ({"alice": "alice-pw", ...}), ``maildirs``, ``address(user)``, ``deliver()``."""
    workdir = Path(tempfile.mkdtemp(prefix="smime-upstream-"))
    os.chmod(workdir, 0o711)  # noqa: S103 (mkdtemp makes it 0700; the daemons' users need search)
    up = start_upstream(workdir)
    try:
        yield up
    finally:
        up.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def imaptest() -> imaptest_tool.Imaptest:
    """Dovecot's imaptest: ``binary`` (run it) and ``tests`` (the compliance suite). The first
    session on a machine builds it (about 15 s); later ones find it in the cache."""
    return imaptest_tool.build()
