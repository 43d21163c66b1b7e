"""Fixtures for the key store tests: every repository test runs on the memory twin and SQLite."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from smime_proxy.keystore.ca import ServerCA
from smime_proxy.keystore.contacts import Contacts
from smime_proxy.keystore.ports import AddressBook, KeyStore, MemoryAddressBook, MemoryKeyStore
from smime_proxy.keystore.service import SecureMail
from smime_proxy.keystore.sqlite import SqliteAddressBook, SqliteDatabase, SqliteKeyStore
from unit.keystore.keystore_helpers import FAST_ITERATIONS, NOW


@pytest.fixture(params=["memory", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield str(request.param)


@pytest.fixture
def database(backend: str, tmp_path: Path) -> Iterator[SqliteDatabase | None]:
    if backend == "memory":
        yield None
        return
    db = SqliteDatabase.open(tmp_path / "data")
    try:
        yield db
    finally:
        db.close()


@pytest.fixture
def key_store(database: SqliteDatabase | None) -> KeyStore:
    return MemoryKeyStore() if database is None else SqliteKeyStore(database)


@pytest.fixture
def address_book(database: SqliteDatabase | None) -> AddressBook:
    return MemoryAddressBook() if database is None else SqliteAddressBook(database)


@pytest.fixture(scope="session")
def server_ca() -> ServerCA:
    return ServerCA.create("Keystore Test CA", NOW - dt.timedelta(days=10), key_type="ec-p256")


@pytest.fixture
def mail(key_store: KeyStore, server_ca: ServerCA) -> SecureMail:
    return SecureMail(key_store, ca=server_ca, kdf_iterations=FAST_ITERATIONS)


@pytest.fixture
def contacts(address_book: AddressBook) -> Contacts:
    return Contacts(address_book)
