"""The PostgreSQL key store beyond the shared contract tests (conftest runs those on it too):
the versioned schema and its migration (two nodes starting at once), errors at open that
never show the password, two nodes racing on one record, and the wiring from the config
(`open_stores`, the key CLI's `--config`)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import psycopg
import pytest
import yaml

from smime_proxy.app import open_stores, stores_of
from smime_proxy.cli import main
from smime_proxy.config import StoreConfig
from smime_proxy.errors import ConfigError, KeyExists, KeyStoreError, NoSuchKey, WrongPassword
from smime_proxy.keystore import postgres
from smime_proxy.keystore.pkcs import public_key_der, unwrap_private_key
from smime_proxy.keystore.ports import ContactCertificate, KeyRecord
from smime_proxy.keystore.postgres import (
    SCHEMA_VERSION,
    PostgresAddressBook,
    PostgresDatabase,
    PostgresKeyStore,
)
from smime_proxy.keystore.service import SecureMail
from support.postgres import PostgresServer
from unit.keystore.keystore_helpers import FAST_ITERATIONS, NOW, THUNDERBIRD_PASSWORD, vector

T = TypeVar("T")
TABLES = {"smime_proxy_schema", "user_keys", "user_key_chain", "contact_certs",
          "contact_addresses", "mail_unlock", "user_preferences"}


@pytest.fixture
def empty_database(postgres_server: PostgresServer) -> Iterator[str]:
    """A whole new database (not only a schema): what a first node meets."""
    name, dsn = postgres_server.fresh_database()
    try:
        yield dsn
    finally:
        postgres_server.drop_database(name)


@pytest.fixture
def database(postgres_dsn: str) -> Iterator[PostgresDatabase]:
    db = PostgresDatabase(postgres_dsn)
    try:
        yield db
    finally:
        db.close()


def _tables(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as db:
        rows = db.execute("SELECT table_name FROM information_schema.tables WHERE "
                          "table_schema = current_schema()").fetchall()
    return {str(r[0]) for r in rows}


def _at_once(count: int, work: Callable[[int], T]) -> list[T | BaseException]:
    """Run `work(0..count-1)` in threads released together; results or exceptions."""
    barrier = threading.Barrier(count)
    results: list[T | BaseException] = [RuntimeError("not run") for _ in range(count)]

    def run(n: int) -> None:
        barrier.wait()
        try:
            results[n] = work(n)
        except BaseException as exc:
            results[n] = exc

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


# --- schema ----------------------------------------------------------------------------------


def test_schema_is_versioned_and_reopening_changes_nothing(postgres_dsn: str) -> None:
    first = PostgresDatabase(postgres_dsn)
    try:
        assert first.schema_version == SCHEMA_VERSION == len(postgres.MIGRATIONS) == 4
        PostgresKeyStore(first).add(KeyRecord("alice", b"k", b"c", (b"x", b"y")))
        PostgresAddressBook(first).add("alice", ContactCertificate("f1", b"d", ("b@x.org",),
                                                                   reads_gcm=True))
    finally:
        first.close()
    assert _tables(postgres_dsn) == TABLES
    again = PostgresDatabase(postgres_dsn)
    try:
        assert again.schema_version == SCHEMA_VERSION
        assert PostgresKeyStore(again).get("alice") == KeyRecord("alice", b"k", b"c",
                                                                 (b"x", b"y"))
        assert PostgresAddressBook(again).entries("alice") == [
            ContactCertificate("f1", b"d", ("b@x.org",), reads_gcm=True)]
    finally:
        again.close()


def test_two_nodes_opening_an_empty_database_at_once_both_succeed(empty_database: str
                                                                   ) -> None:
    opened = _at_once(4, lambda _n: PostgresDatabase(empty_database))
    try:
        assert all(isinstance(db, PostgresDatabase) for db in opened), opened
        for db in opened:
            assert isinstance(db, PostgresDatabase) and db.schema_version == SCHEMA_VERSION
        assert _tables(empty_database) == TABLES
        with psycopg.connect(empty_database) as raw:
            assert raw.execute("SELECT count(*) FROM smime_proxy_schema").fetchone() == (1,)
    finally:
        for db in opened:
            if isinstance(db, PostgresDatabase):
                db.close()


def test_an_older_schema_is_migrated_forward(postgres_dsn: str) -> None:
    with psycopg.connect(postgres_dsn) as raw:  # what a version-2 program left behind
        raw.execute("CREATE TABLE smime_proxy_schema (one INTEGER PRIMARY KEY, "
                    "version INTEGER NOT NULL)")
        raw.execute("INSERT INTO smime_proxy_schema VALUES (1, 2)")
        postgres.MIGRATIONS[0](raw)
        postgres.MIGRATIONS[1](raw)
        raw.execute("INSERT INTO user_keys VALUES ('alice', 'k', 'c')")
        raw.execute("INSERT INTO contact_certs VALUES ('alice', 'f1', 'd')")
    db = PostgresDatabase(postgres_dsn)
    try:
        assert db.schema_version == SCHEMA_VERSION
        assert PostgresKeyStore(db).get("alice") == KeyRecord("alice", b"k", b"c")
        assert PostgresAddressBook(db).entries("alice")[0].reads_gcm is None
        PostgresKeyStore(db).set_preference("alice", "encryption_method", "aes-256-gcm")
    finally:
        db.close()


def test_a_newer_schema_is_refused(database: PostgresDatabase, postgres_dsn: str) -> None:
    with psycopg.connect(postgres_dsn) as raw:
        raw.execute("UPDATE smime_proxy_schema SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(KeyStoreError, match="newer than this program"):
        PostgresDatabase(postgres_dsn)


# --- errors ----------------------------------------------------------------------------------


def test_a_wrong_password_is_a_clear_error_without_the_password(
        postgres_server: PostgresServer) -> None:
    secret = "Wrong-Secret-4711"
    for dsn in (postgres_server.dsn(password=secret),
                f"postgresql://smime:{secret}@127.0.0.1:{postgres_server.port}/postgres"):
        with pytest.raises(KeyStoreError) as info:
            PostgresDatabase(dsn)
        message = str(info.value)
        assert "password authentication failed" in message
        assert f"port={postgres_server.port}" in message or str(postgres_server.port) in message
        assert secret not in message and secret not in repr(info.value)
        assert "\n" not in message


def test_a_server_that_is_down_is_a_clear_error(postgres_server: PostgresServer) -> None:
    from support.control import free_port

    dead = free_port()
    with pytest.raises(KeyStoreError) as info:
        PostgresDatabase(f"host=127.0.0.1 port={dead} user=smime password=Hidden-Pw-99 "
                         "dbname=keys connect_timeout=3")
    message = str(info.value)
    assert message.startswith(f"cannot open the key store database (host=127.0.0.1 "
                              f"port={dead} dbname=keys)")
    assert "Hidden-Pw-99" not in message


@pytest.mark.parametrize("dsn", ["not a dsn but a password Pw-Secret-1",
                                 "host=x password='Pw-Secret-1",
                                 "postgresql://u:Pw-Secret-1@host/db?nonsense=1"])
def test_a_dsn_that_does_not_parse_is_a_config_error_that_does_not_quote_it(dsn: str) -> None:
    with pytest.raises(ConfigError) as info:
        PostgresDatabase(dsn)
    assert str(info.value).startswith("store.dsn: ")
    assert "Pw-Secret-1" not in str(info.value)


def test_engine_errors_after_open_are_key_store_errors(
        database: PostgresDatabase, postgres_dsn: str) -> None:
    store = PostgresKeyStore(database)
    store.add(KeyRecord("alice", b"k", b"c"))
    with psycopg.connect(postgres_dsn) as raw:
        raw.execute("DROP TABLE mail_unlock")
    assert store.get("alice") == KeyRecord("alice", b"k", b"c")
    with pytest.raises(KeyStoreError, match="key store database error") as info:
        store.mail_copy("alice")
    assert "password" not in str(info.value).lower()
    assert "Pw" not in repr(database) and "password" not in repr(database)


# --- two nodes, one record -------------------------------------------------------------------


def test_compare_and_swap_from_two_nodes_lets_exactly_one_win(postgres_dsn: str) -> None:
    nodes = [PostgresDatabase(postgres_dsn), PostgresDatabase(postgres_dsn)]
    try:
        stores = [PostgresKeyStore(db) for db in nodes]
        stores[0].add(KeyRecord("alice", b"k0", b"c0", (b"x",)))

        def swap(n: int) -> int:
            stores[n % 2].replace(KeyRecord("alice", b"k%d" % (n + 1), b"c%d" % (n + 1),
                                            (b"chain-%d" % (n + 1),) * (n + 1)),
                                  expected_key=b"k0")
            return n

        results = _at_once(8, swap)
        winners = [r for r in results if isinstance(r, int)]
        assert len(winners) == 1, results
        assert all(isinstance(r, KeyExists) for r in results if not isinstance(r, int))
        n = winners[0] + 1
        assert stores[1].get("alice") == KeyRecord("alice", b"k%d" % n, b"c%d" % n,
                                                   (b"chain-%d" % n,) * n)
        with pytest.raises(NoSuchKey):
            stores[1].replace(KeyRecord("bob", b"k", b"c"), expected_key=b"k")
    finally:
        for db in nodes:
            db.close()


def test_password_change_on_one_node_while_another_unlocks(postgres_dsn: str) -> None:
    """Node A changes the Secure Mail Password while node B unlocks with the old one. B's
    unlock also writes (it upgrades the key to its higher KDF cost, a compare-and-swap like
    A's change), so both race for the same record: one wins each round, the record always
    opens with exactly one of the two passwords, and it is the winner's."""
    nodes = [PostgresDatabase(postgres_dsn), PostgresDatabase(postgres_dsn)]
    try:
        node_a = SecureMail(PostgresKeyStore(nodes[0]), kdf_iterations=FAST_ITERATIONS)
        node_b = SecureMail(PostgresKeyStore(nodes[1]), kdf_iterations=FAST_ITERATIONS * 3)
        p12 = vector("thunderbird", "smime", "Alice.p12").read_bytes()
        node_a.import_pkcs12("alice", p12, THUNDERBIRD_PASSWORD, b"password-0")
        certificate = node_a.store.get("alice")
        assert certificate is not None
        current = 0
        outcomes: dict[str, int] = {}
        for _round in range(12):
            old, new = b"password-%d" % current, b"password-%d" % (current + 1)

            def act(n: int, old: bytes = old, new: bytes = new) -> str:
                if n == 0:
                    node_a.change_password("alice", old, new)
                    return "changed"
                node_b.unlock("alice", old, NOW)
                node_b.lock("alice")
                return "unlocked"

            changed, unlocked = _at_once(2, act)
            assert changed == "changed" or isinstance(changed, KeyExists), changed
            assert unlocked == "unlocked" or isinstance(unlocked, WrongPassword), unlocked
            key = "A won" if changed == "changed" else "B won"
            outcomes[key] = outcomes.get(key, 0) + 1
            record = PostgresKeyStore(nodes[1]).get("alice")
            assert record is not None and record.certificate == certificate.certificate
            opens = []
            for password in (old, new):
                try:
                    private = unwrap_private_key(record.encrypted_key, password)
                except WrongPassword:
                    continue
                assert public_key_der(private) == public_key_der(node_a.certificate("alice"))
                opens.append(password)
            assert opens == ([new] if changed == "changed" else [old]), (changed, unlocked)
            if changed == "changed":
                current += 1
        assert outcomes.get("A won", 0) >= 1
        node_b.unlock("alice", b"password-%d" % current, NOW)  # the survivor works on B
    finally:
        for db in nodes:
            db.close()


# --- wiring ----------------------------------------------------------------------------------


def test_open_stores_uses_the_configured_postgresql(postgres_dsn: str, tmp_path: Path) -> None:
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(postgres_dsn + "\n")
    with stores_of(tmp_path / "data", store=StoreConfig("postgresql", dsn_file=dsn_file)
                   ) as stores:
        assert isinstance(stores.database, PostgresDatabase)
        stores.secure_mail.store.set_preference("alice", "encryption_method", "aes-256-gcm")
    other = open_stores(tmp_path / "elsewhere", store=StoreConfig("postgresql",
                                                                  dsn=postgres_dsn))
    try:
        assert other.secure_mail.encryption_method("alice") == "aes-256-gcm"
    finally:
        other.close()
    assert not (tmp_path / "data").exists()  # nothing was written to the SQLite default


def test_the_key_cli_reads_the_store_from_config(postgres_dsn: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SMIME_PROXY_DATA_DIR", raising=False)
    monkeypatch.delenv("SMIME_PROXY_CONFIG", raising=False)
    (tmp_path / "dsn").write_text(postgres_dsn + "\n")
    listener = {"host": "127.0.0.1", "plaintext_loopback": True}
    upstream = {"host": "127.0.0.1", "tls": "none"}
    config = tmp_path / "smime-proxy.yaml"
    config.write_text(yaml.safe_dump({
        "listeners": {name: {**listener, "port": port} for name, port in
                      (("imap", 11143), ("smtp", 11587), ("control", 18443))},
        "upstream": {"imap": {**upstream, "port": 143}, "smtp": {**upstream, "port": 587}},
        "data_dir": "data",
        "store": {"backend": "postgresql", "dsn_file": "dsn"},
    }))
    (tmp_path / "pw").write_text("secure mail password\n")
    assert main(["ca", "init", "--config", str(config)]) == 0
    assert (tmp_path / "data").is_dir()  # the CA lives in the config's data_dir
    assert main(["keys", "generate", "alice", "--email", "alice@example.org",
                 "--key-type", "ec-p256", "--password-file", str(tmp_path / "pw"),
                 "--config", str(config)]) == 0
    capsys.readouterr()
    db = PostgresDatabase(postgres_dsn)
    try:
        assert PostgresKeyStore(db).users() == ["alice"]
    finally:
        db.close()
    assert not (tmp_path / "data" / "smime-proxy.sqlite3").exists()
    assert main(["keys", "show", "alice", "--config", str(config)]) == 0
    assert "alice@example.org" in capsys.readouterr().out
