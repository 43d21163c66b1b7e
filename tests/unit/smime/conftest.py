"""Identities the recipe tests share: a root CA, alice and bob (RSA) under it."""

from __future__ import annotations

import pytest

from support.pki import Identity, make_ca, make_user


@pytest.fixture(scope="module")
def root() -> Identity:
    return make_ca()


@pytest.fixture(scope="module")
def alice(root: Identity) -> Identity:
    return make_user("alice@example.test", root)


@pytest.fixture(scope="module")
def bob(root: Identity) -> Identity:
    return make_user("bob@example.test", root)
