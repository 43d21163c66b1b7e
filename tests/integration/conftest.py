"""Fixtures for integration tests. The real Dovecot + Postfix upstream (``upstream``) is the
session fixture of tests/conftest.py, shared with tests/clients.

``loop`` is an event loop in a thread, one per test module, for the fronts that blocking
clients (imaplib, smtplib) talk to.

``imaptest`` is Dovecot's imaptest, built once from tests/tools/imaptest/ and cached outside
the repository (support/imaptest.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support import imaptest as imaptest_tool
from support.imap_proxy import LoopThread


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    with LoopThread() as lt:
        yield lt


@pytest.fixture(scope="session")
def imaptest() -> imaptest_tool.Imaptest:
    """Dovecot's imaptest: ``binary`` (run it) and ``tests`` (the compliance suite). The first
    session on a machine builds it (about 15 s); later ones find it in the cache."""
    return imaptest_tool.build()
