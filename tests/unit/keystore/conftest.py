"""Fixtures for the key store tests: every repository test runs on the memory twin, SQLite
and a real PostgreSQL (started once per session by `support.postgres`; a fresh schema per
test). The unlock sessions' tests use a real Redis likewise (`support.redis`, once per
session, emptied before each test). Without PostgreSQL or Redis installed their tests are
skipped, or fail when `CI` is set."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from smime_proxy.keystore.ca import ServerCA
from smime_proxy.keystore.contacts import Contacts
from smime_proxy.keystore.ports import AddressBook, KeyStore, MemoryAddressBook, MemoryKeyStore
from smime_proxy.keystore.service import SecureMail
from smime_proxy.keystore.sqlite import SqliteAddressBook, SqliteDatabase, SqliteKeyStore
from support.postgres import PostgresServer, postgres_bin_dir
from support.redis import RedisServer, redis_server_binary
from unit.keystore.keystore_helpers import FAST_ITERATIONS, NOW


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL for the session (its own cluster under /tmp, stopped at the end)."""
    if postgres_bin_dir() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed (scripts/test.sh installs the Debian "
                        "package postgresql): the key store's PostgreSQL tests cannot run")
        pytest.skip("PostgreSQL is not installed (Debian package postgresql)")
    server = PostgresServer.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> Iterator[str]:
    """The DSN of a fresh, empty schema (the store sees an empty database), dropped after."""
    name, dsn = postgres_server.fresh_schema()
    try:
        yield dsn
    finally:
        postgres_server.drop_schema(name)


def _needs_redis() -> None:
    if redis_server_binary() is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed (scripts/test.sh installs the Debian "
                        "package redis-server): the shared unlock sessions' tests cannot run")
        pytest.skip("redis-server is not installed (Debian package redis-server)")


@pytest.fixture(scope="session")
def redis_server_once() -> Iterator[RedisServer]:
    """One Redis for the session (its own directory under /tmp, nothing on disk)."""
    _needs_redis()
    server = RedisServer.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_server(redis_server_once: RedisServer) -> RedisServer:
    """The session's Redis, emptied for this test."""
    redis_server_once.flush()
    return redis_server_once


@pytest.fixture
def own_redis_server() -> Iterator[RedisServer]:
    """A Redis of this test's own (to be stopped in the middle of it)."""
    _needs_redis()
    server = RedisServer.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def repositories(backend: str, request: pytest.FixtureRequest, tmp_path: Path
                 ) -> Iterator[tuple[KeyStore, AddressBook]]:
    if backend == "memory":
        yield MemoryKeyStore(), MemoryAddressBook()
    elif backend == "sqlite":
        db = SqliteDatabase.open(tmp_path / "data")
        try:
            yield SqliteKeyStore(db), SqliteAddressBook(db)
        finally:
            db.close()
    else:
        from smime_proxy.keystore.postgres import (
            PostgresAddressBook,
            PostgresDatabase,
            PostgresKeyStore,
        )

        pg = PostgresDatabase(request.getfixturevalue("postgres_dsn"))
        try:
            yield PostgresKeyStore(pg), PostgresAddressBook(pg)
        finally:
            pg.close()


@pytest.fixture
def key_store(repositories: tuple[KeyStore, AddressBook]) -> KeyStore:
    return repositories[0]


@pytest.fixture
def address_book(repositories: tuple[KeyStore, AddressBook]) -> AddressBook:
    return repositories[1]


@pytest.fixture(scope="session")
def server_ca() -> ServerCA:
    return ServerCA.create("Keystore Test CA", NOW - dt.timedelta(days=10), key_type="ec-p256")


@pytest.fixture
def mail(key_store: KeyStore, server_ca: ServerCA) -> SecureMail:
    return SecureMail(key_store, ca=server_ca, kdf_iterations=FAST_ITERATIONS)


@pytest.fixture
def contacts(address_book: AddressBook) -> Contacts:
    return Contacts(address_book)
