"""Fixtures for integration tests. The real Dovecot + Postfix upstream (``upstream``) is the
session fixture of tests/conftest.py, shared with tests/clients.

``imaptest`` is Dovecot's imaptest, built once from tests/tools/imaptest/ and cached outside
the repository (support/imaptest.py).
"""

from __future__ import annotations

import pytest

from support import imaptest as imaptest_tool


@pytest.fixture(scope="session")
def imaptest() -> imaptest_tool.Imaptest:
    """Dovecot's imaptest: ``binary`` (run it) and ``tests`` (the compliance suite). The first
    session on a machine builds it (about 15 s); later ones find it in the cache."""
    return imaptest_tool.build()
