"""The storage ports: the same semantics on the memory twin and on SQLite."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from pathlib import Path

import pytest

from smime_proxy.errors import KeyExists, KeyStoreError, NoSuchKey
from smime_proxy.keystore.ports import AddressBook, ContactCertificate, KeyRecord, KeyStore
from smime_proxy.keystore.sqlite import (
    DB_FILENAME,
    SCHEMA_VERSION,
    SqliteAddressBook,
    SqliteDatabase,
    SqliteKeyStore,
)


def _record(
    user: str = "alice", key: bytes = b"k1", chain: tuple[bytes, ...] = (b"c1",)
) -> KeyRecord:
    certificate = b"cert-" + user.encode()
    return KeyRecord(user=user, encrypted_key=key, certificate=certificate, chain=chain)


def test_key_store_add_get_delete(key_store: KeyStore) -> None:
    assert key_store.get("alice") is None
    key_store.add(_record(chain=(b"c1", b"c2")))
    assert key_store.get("alice") == _record(chain=(b"c1", b"c2"))
    key_store.add(_record("bob", chain=()))
    assert key_store.get("bob") == _record("bob", chain=())
    assert key_store.users() == ["alice", "bob"]
    assert key_store.delete("alice") is True
    assert key_store.delete("alice") is False
    assert key_store.get("alice") is None
    assert key_store.users() == ["bob"]


def test_key_store_add_twice_is_refused(key_store: KeyStore) -> None:
    key_store.add(_record())
    with pytest.raises(KeyExists):
        key_store.add(_record(key=b"other"))
    assert key_store.get("alice") == _record()


def test_key_store_replace_is_compare_and_swap(key_store: KeyStore) -> None:
    key_store.add(_record(key=b"k1", chain=(b"a", b"b")))
    key_store.replace(_record(key=b"k2", chain=(b"c",)), expected_key=b"k1")
    assert key_store.get("alice") == _record(key=b"k2", chain=(b"c",))
    with pytest.raises(KeyExists):  # somebody changed it meanwhile
        key_store.replace(_record(key=b"k3"), expected_key=b"k1")
    assert key_store.get("alice") == _record(key=b"k2", chain=(b"c",))
    with pytest.raises(NoSuchKey):
        key_store.replace(_record("nobody"), expected_key=b"k1")


def test_key_record_repr_hides_the_key() -> None:
    record = _record(key=b"SECRET-BLOB")
    assert "SECRET" not in repr(record)


def _contact(fp: str, *addresses: str) -> ContactCertificate:
    der = b"der-" + fp.encode()
    return ContactCertificate(fingerprint=fp, certificate=der, addresses=addresses)


def test_address_book_add_find_list_remove(address_book: AddressBook) -> None:
    address_book.add("alice", _contact("f1", "bob@example.org"))
    address_book.add("alice", _contact("f2", "bob@example.org", "robert@example.org"))
    address_book.add("carol", _contact("f3", "bob@example.org"))
    found = sorted(c.fingerprint for c in address_book.find("alice", "bob@example.org"))
    assert found == ["f1", "f2"]
    assert [c.fingerprint for c in address_book.find("alice", "robert@example.org")] == ["f2"]
    assert address_book.find("alice", "nobody@example.org") == []
    entries = address_book.entries("alice")
    assert [(c.fingerprint, c.addresses) for c in entries] == [
        ("f1", ("bob@example.org",)),
        ("f2", ("bob@example.org", "robert@example.org")),
    ]
    assert entries[0].certificate == b"der-f1"
    # Removing an address unlinks it everywhere; a certificate left without address goes.
    assert address_book.remove("alice", "bob@example.org") == 2
    assert [(c.fingerprint, c.addresses) for c in address_book.entries("alice")] == [
        ("f2", ("robert@example.org",))
    ]
    assert address_book.remove("alice", "bob@example.org") == 0
    # Other users' books are separate.
    assert [c.fingerprint for c in address_book.find("carol", "bob@example.org")] == ["f3"]


def test_address_book_add_is_idempotent_and_merges_addresses(address_book: AddressBook) -> None:
    address_book.add("alice", _contact("f1", "a@example.org"))
    address_book.add("alice", _contact("f1", "a@example.org"))
    address_book.add("alice", _contact("f1", "b@example.org"))
    assert [(c.fingerprint, c.addresses) for c in address_book.entries("alice")] == [
        ("f1", ("a@example.org", "b@example.org"))
    ]


# --- SQLite specifics -------------------------------------------------------------------------


def test_sqlite_file_is_private_wal_and_versioned(tmp_path: Path) -> None:
    db = SqliteDatabase.open(tmp_path / "data")
    try:
        assert db.schema_version == SCHEMA_VERSION
        path = tmp_path / "data" / DB_FILENAME
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
        SqliteKeyStore(db).add(_record())
        for suffix in ("-wal", "-shm"):
            sidecar = Path(str(path) + suffix)
            if sidecar.exists():
                assert stat.S_IMODE(sidecar.stat().st_mode) == 0o600, suffix
    finally:
        db.close()
    raw = sqlite3.connect(tmp_path / "data" / DB_FILENAME)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        raw.close()


def test_sqlite_persists_across_reopen(tmp_path: Path) -> None:
    db = SqliteDatabase.open(tmp_path)
    SqliteKeyStore(db).add(_record(chain=(b"x", b"y")))
    SqliteAddressBook(db).add("alice", _contact("f1", "bob@example.org"))
    db.close()
    db = SqliteDatabase.open(tmp_path)
    try:
        assert SqliteKeyStore(db).get("alice") == _record(chain=(b"x", b"y"))
        assert [c.fingerprint for c in SqliteAddressBook(db).entries("alice")] == ["f1"]
    finally:
        db.close()


def test_sqlite_deleting_a_key_deletes_its_chain(tmp_path: Path) -> None:
    db = SqliteDatabase.open(tmp_path)
    try:
        store = SqliteKeyStore(db)
        store.add(_record(chain=(b"x", b"y")))
        store.delete("alice")
        store.add(_record(chain=()))
        assert store.get("alice") == _record(chain=())
    finally:
        db.close()


def test_sqlite_newer_schema_is_refused(tmp_path: Path) -> None:
    SqliteDatabase.open(tmp_path).close()
    raw = sqlite3.connect(tmp_path / DB_FILENAME)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.commit()
    raw.close()
    with pytest.raises(KeyStoreError, match="newer"):
        SqliteDatabase.open(tmp_path)


def test_sqlite_garbage_file_is_a_clean_error(tmp_path: Path) -> None:
    (tmp_path / DB_FILENAME).write_bytes(b"this is not a database" * 100)
    with pytest.raises(KeyStoreError, match="unusable"):
        SqliteDatabase.open(tmp_path)


def test_sqlite_unwritable_data_dir_is_a_clean_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(KeyStoreError, match="data directory"):
        SqliteDatabase.open(blocker / "sub")


def test_sqlite_two_connections_and_threads(tmp_path: Path) -> None:
    first = SqliteDatabase.open(tmp_path)
    second = SqliteDatabase.open(tmp_path)
    try:
        errors: list[BaseException] = []

        def work(n: int) -> None:
            try:
                db = first if n % 2 else second
                SqliteKeyStore(db).add(_record(f"user{n}"))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert len(SqliteKeyStore(first).users()) == 16
    finally:
        first.close()
        second.close()
    assert os.path.exists(tmp_path / DB_FILENAME)


def test_preferences_need_no_key_and_can_be_removed(key_store: KeyStore) -> None:
    assert key_store.preference("alice", "encryption_method") is None
    key_store.set_preference("alice", "encryption_method", "aes-128-cbc")
    key_store.set_preference("bob", "encryption_method", "aes-256-gcm")
    assert key_store.preference("alice", "encryption_method") == "aes-128-cbc"
    key_store.set_preference("alice", "encryption_method", "aes-256-cbc")
    assert key_store.preference("alice", "encryption_method") == "aes-256-cbc"
    key_store.set_preference("alice", "encryption_method", None)
    assert key_store.preference("alice", "encryption_method") is None
    assert key_store.preference("bob", "encryption_method") == "aes-256-gcm"
