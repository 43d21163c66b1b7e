"""The shared storage: PostgreSQL, for several proxy nodes (psycopg 3 with `psycopg_pool`).

`PostgresDatabase` owns a connection pool and the versioned schema; `PostgresKeyStore` and
`PostgresAddressBook` implement the `KeyStore` and `AddressBook` ports on it with the semantics
of the memory twins (and of `keystore.sqlite`, whose statements these translate).

Why psycopg 3 (synchronous, with its pool) and not asyncpg: the ports are synchronous. The
daemon calls them from worker threads, off the event loop, and the CLI calls them with no loop
at all; asyncpg is asyncio-only and would need a loop per call or a bridge back into the
daemon's loop. A thread-safe pool of blocking connections fits the ports as they are.

Schema: the same versions 1..4 as SQLite's (same tables and meaning; BYTEA for BLOB, BOOLEAN
for the 0/1 column), recorded in the one-row table `smime_proxy_schema`. Every open migrates
forward in one transaction under `pg_advisory_xact_lock`, so nodes starting at once take turns:
the first creates, the others find it done. A schema newer than this program is refused.

Concurrency: each method is one transaction; `replace` is compare-and-swap in one UPDATE (a
concurrent UPDATE of the row waits for the row lock, then sees the new key and fails), reads
are single statements (one snapshot). Engine errors become `KeyStoreError`s whose text never
holds the DSN's password.

May import: errors, keystore.ports.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg.errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool

from smime_proxy.errors import ConfigError, KeyExists, KeyStoreError, NoSuchKey
from smime_proxy.keystore.ports import ContactCertificate, KeyRecord

Connection = psycopg.Connection[TupleRow]

# pg_advisory_xact_lock key of the migration: any fixed number ("smime-px" in ASCII)
MIGRATION_LOCK = 0x736D696D652D7078
CONNECT_TIMEOUT_SECONDS = 10


def _migrate_1(db: Connection) -> None:
    db.execute("""
        CREATE TABLE user_keys (
            user_id       TEXT PRIMARY KEY,
            encrypted_key BYTEA NOT NULL,
            certificate   BYTEA NOT NULL
        )""")
    db.execute("""
        CREATE TABLE user_key_chain (
            user_id     TEXT NOT NULL REFERENCES user_keys(user_id) ON DELETE CASCADE,
            position    INTEGER NOT NULL,
            certificate BYTEA NOT NULL,
            PRIMARY KEY (user_id, position)
        )""")
    db.execute("""
        CREATE TABLE contact_certs (
            user_id     TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            certificate BYTEA NOT NULL,
            PRIMARY KEY (user_id, fingerprint)
        )""")
    db.execute("""
        CREATE TABLE contact_addresses (
            user_id     TEXT NOT NULL,
            address     TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            PRIMARY KEY (user_id, address, fingerprint),
            FOREIGN KEY (user_id, fingerprint)
                REFERENCES contact_certs(user_id, fingerprint) ON DELETE CASCADE
        )""")
    db.execute("CREATE INDEX contact_addresses_by_cert ON contact_addresses(user_id, fingerprint)")


def _migrate_2(db: Connection) -> None:
    """The copy of a key wrapped under the mail password (issue 13, opt-in)."""
    db.execute("""
        CREATE TABLE mail_unlock (
            user_id     TEXT PRIMARY KEY REFERENCES user_keys(user_id) ON DELETE CASCADE,
            wrapped_key BYTEA NOT NULL
        )""")


def _migrate_3(db: Connection) -> None:
    """What a contact's signed mail said it reads (issue 14: smimeCapabilities)."""
    db.execute("ALTER TABLE contact_certs ADD COLUMN reads_gcm BOOLEAN")


def _migrate_4(db: Connection) -> None:
    """A user's Secure Mail settings (issue 14: the Encryption Method); no key needed."""
    db.execute("""
        CREATE TABLE user_preferences (
            user_id TEXT NOT NULL,
            name    TEXT NOT NULL,
            value   TEXT NOT NULL,
            PRIMARY KEY (user_id, name)
        )""")


# Index i holds the migration from version i to i + 1, as in keystore.sqlite. Append only.
MIGRATIONS: tuple[Callable[[Connection], None], ...] = (
    _migrate_1, _migrate_2, _migrate_3, _migrate_4)
SCHEMA_VERSION = len(MIGRATIONS)


class PostgresDatabase:
    """A pool of connections to one PostgreSQL database, schema migrated to `SCHEMA_VERSION`.

    `dsn`: a libpq connection string (`host=... dbname=...`) or a `postgresql://` URI.
    Raises `ConfigError` for a DSN that does not parse, `KeyStoreError` when the server cannot
    be reached or refuses (the message names host, port and database, never the password)."""

    def __init__(self, dsn: str, *, max_connections: int = 10) -> None:
        try:
            params = conninfo_to_dict(dsn)
        except psycopg.Error:
            # libpq's own message quotes pieces of the string: it may hold the password
            raise ConfigError("store.dsn: not a PostgreSQL connection string (key=value "
                              "pairs or a postgresql:// URI; the text is not shown)") from None
        self._password = str(params.get("password") or "")
        self._where = " ".join(f"{name}={params[name]}" for name in ("host", "port", "dbname")
                               if params.get(name) not in (None, "")) or "libpq defaults"
        extra: dict[str, Any] = {}
        if "connect_timeout" not in params:
            extra["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
        if "application_name" not in params:
            extra["application_name"] = "smime-proxy"
        try:
            with psycopg.connect(dsn, **extra) as first:
                self._migrate(first)
        except psycopg.Error as exc:
            raise KeyStoreError(f"cannot open the key store database ({self._where}): "
                                f"{self._scrub(exc)}") from None
        self._pool: ConnectionPool[Connection] = ConnectionPool(
            dsn, kwargs=extra, min_size=1, max_size=max(1, max_connections), open=False,
            name="smime-proxy-keystore", check=ConnectionPool.check_connection)
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_SECONDS)
        except psycopg.Error as exc:
            self._pool.close()
            raise KeyStoreError(f"cannot open the key store database ({self._where}): "
                                f"{self._scrub(exc)}") from None

    def __repr__(self) -> str:
        return f"PostgresDatabase({self._where!r})"

    def _scrub(self, exc: BaseException) -> str:
        """One line of the engine's message, with the DSN's password cut out if it is there."""
        text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        if self._password:
            text = text.replace(self._password, "***")
        return text or type(exc).__name__

    def _migrate(self, db: Connection) -> None:
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            row = db.execute("SELECT to_regclass('smime_proxy_schema') IS NOT NULL").fetchone()
            if row is None or not row[0]:
                db.execute("CREATE TABLE smime_proxy_schema (one INTEGER PRIMARY KEY "
                           "CHECK (one = 1), version INTEGER NOT NULL)")
                db.execute("INSERT INTO smime_proxy_schema (one, version) VALUES (1, 0)")
            version = self._version(db)
            if version > SCHEMA_VERSION:
                raise KeyStoreError(
                    f"the key store database ({self._where}) has schema {version}, newer than "
                    f"this program ({SCHEMA_VERSION})")
            for step in range(version, SCHEMA_VERSION):
                MIGRATIONS[step](db)
                db.execute("UPDATE smime_proxy_schema SET version = %s", (step + 1,))

    @staticmethod
    def _version(db: Connection) -> int:
        row = db.execute("SELECT version FROM smime_proxy_schema").fetchone()
        return 0 if row is None else int(row[0])

    @property
    def schema_version(self) -> int:
        with self.transaction() as db:
            return self._version(db)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A pooled connection in a transaction: COMMIT at the end, ROLLBACK on error; engine
        errors (lost server, pool timeout) come out as `KeyStoreError`."""
        try:
            with self._pool.connection() as db, db.transaction():
                yield db
        except psycopg.Error as exc:
            raise KeyStoreError(f"key store database error ({self._where}): "
                                f"{self._scrub(exc)}") from None

    def close(self) -> None:
        self._pool.close()


class PostgresKeyStore:
    """`KeyStore` on a `PostgresDatabase`."""

    def __init__(self, database: PostgresDatabase) -> None:
        self._database = database

    def __repr__(self) -> str:
        return f"PostgresKeyStore({self._database!r})"

    def get(self, user: str) -> KeyRecord | None:
        with self._database.transaction() as db:
            row = db.execute(
                "SELECT k.encrypted_key, k.certificate, ARRAY(SELECT c.certificate FROM "
                "user_key_chain c WHERE c.user_id = k.user_id ORDER BY c.position) "
                "FROM user_keys k WHERE k.user_id = %s", (user,)).fetchone()
        if row is None:
            return None
        return KeyRecord(user=user, encrypted_key=bytes(row[0]), certificate=bytes(row[1]),
                         chain=tuple(bytes(c) for c in row[2]))

    def add(self, record: KeyRecord) -> None:
        with self._database.transaction() as db:
            try:
                db.execute("INSERT INTO user_keys (user_id, encrypted_key, certificate) "
                           "VALUES (%s, %s, %s)",
                           (record.user, record.encrypted_key, record.certificate))
            except psycopg.errors.UniqueViolation:
                raise KeyExists(f"user {record.user!r} already has a key") from None
            self._write_chain(db, record)

    def replace(self, record: KeyRecord, *, expected_key: bytes) -> None:
        with self._database.transaction() as db:
            updated = db.execute(
                "UPDATE user_keys SET encrypted_key = %s, certificate = %s "
                "WHERE user_id = %s AND encrypted_key = %s",
                (record.encrypted_key, record.certificate, record.user, expected_key),
            ).rowcount
            if updated != 1:
                exists = db.execute("SELECT 1 FROM user_keys WHERE user_id = %s",
                                    (record.user,)).fetchone()
                if exists is None:
                    raise NoSuchKey(f"user {record.user!r} has no key")
                raise KeyExists(f"the key of user {record.user!r} changed meanwhile")
            db.execute("DELETE FROM user_key_chain WHERE user_id = %s", (record.user,))
            self._write_chain(db, record)

    @staticmethod
    def _write_chain(db: Connection, record: KeyRecord) -> None:
        with db.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO user_key_chain (user_id, position, certificate) "
                "VALUES (%s, %s, %s)",
                [(record.user, i, cert) for i, cert in enumerate(record.chain)])

    def delete(self, user: str) -> bool:
        with self._database.transaction() as db:
            return db.execute("DELETE FROM user_keys WHERE user_id = %s", (user,)).rowcount > 0

    def users(self) -> list[str]:
        with self._database.transaction() as db:
            rows = db.execute("SELECT user_id FROM user_keys ORDER BY user_id COLLATE \"C\"")
            return [str(r[0]) for r in rows.fetchall()]

    def mail_copy(self, user: str) -> bytes | None:
        with self._database.transaction() as db:
            row = db.execute("SELECT wrapped_key FROM mail_unlock WHERE user_id = %s",
                             (user,)).fetchone()
        return None if row is None else bytes(row[0])

    def set_mail_copy(self, user: str, wrapped: bytes | None) -> None:
        with self._database.transaction() as db:
            # FOR KEY SHARE: a concurrent delete of the key waits until this is done
            if db.execute("SELECT 1 FROM user_keys WHERE user_id = %s FOR KEY SHARE",
                          (user,)).fetchone() is None:
                raise NoSuchKey(f"user {user!r} has no key")
            if wrapped is None:
                db.execute("DELETE FROM mail_unlock WHERE user_id = %s", (user,))
            else:
                db.execute("INSERT INTO mail_unlock (user_id, wrapped_key) VALUES (%s, %s) "
                           "ON CONFLICT (user_id) DO UPDATE SET wrapped_key = "
                           "excluded.wrapped_key", (user, wrapped))

    def preference(self, user: str, name: str) -> str | None:
        with self._database.transaction() as db:
            row = db.execute("SELECT value FROM user_preferences WHERE user_id = %s AND "
                             "name = %s", (user, name)).fetchone()
        return None if row is None else str(row[0])

    def set_preference(self, user: str, name: str, value: str | None) -> None:
        with self._database.transaction() as db:
            if value is None:
                db.execute("DELETE FROM user_preferences WHERE user_id = %s AND name = %s",
                           (user, name))
            else:
                db.execute("INSERT INTO user_preferences (user_id, name, value) "
                           "VALUES (%s, %s, %s) ON CONFLICT (user_id, name) DO UPDATE SET "
                           "value = excluded.value", (user, name, value))


# one statement: the certificates and their addresses from the same snapshot
_ENTRIES = (
    "SELECT c.fingerprint, c.certificate, c.reads_gcm, ARRAY(SELECT a.address FROM "
    "contact_addresses a WHERE a.user_id = c.user_id AND a.fingerprint = c.fingerprint "
    "ORDER BY a.address COLLATE \"C\") FROM contact_certs c WHERE c.user_id = %s "
    "ORDER BY c.fingerprint COLLATE \"C\"")
_FIND = (
    "SELECT c.fingerprint, c.certificate, c.reads_gcm, ARRAY(SELECT a.address FROM "
    "contact_addresses a WHERE a.user_id = c.user_id AND a.fingerprint = c.fingerprint "
    "ORDER BY a.address COLLATE \"C\") FROM contact_certs c WHERE c.user_id = %s "
    "AND EXISTS (SELECT 1 FROM contact_addresses f WHERE f.user_id = c.user_id "
    "AND f.fingerprint = c.fingerprint AND f.address = %s) ORDER BY c.fingerprint COLLATE \"C\"")


class PostgresAddressBook:
    """`AddressBook` on a `PostgresDatabase`."""

    def __init__(self, database: PostgresDatabase) -> None:
        self._database = database

    def __repr__(self) -> str:
        return f"PostgresAddressBook({self._database!r})"

    def add(self, user: str, contact: ContactCertificate) -> None:
        with self._database.transaction() as db:
            db.execute(
                "INSERT INTO contact_certs (user_id, fingerprint, certificate, reads_gcm) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (user_id, fingerprint) DO UPDATE SET "
                "reads_gcm = COALESCE(excluded.reads_gcm, contact_certs.reads_gcm)",
                (user, contact.fingerprint, contact.certificate, contact.reads_gcm))
            with db.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO contact_addresses (user_id, address, fingerprint) "
                    "VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                    [(user, address, contact.fingerprint) for address in contact.addresses])

    def _query(self, sql: str, params: tuple[str, ...]) -> list[ContactCertificate]:
        with self._database.transaction() as db:
            rows = db.execute(sql, params).fetchall()
        return [ContactCertificate(fingerprint=str(r[0]), certificate=bytes(r[1]),
                                   addresses=tuple(str(a) for a in r[3]),
                                   reads_gcm=None if r[2] is None else bool(r[2]))
                for r in rows]

    def find(self, user: str, address: str) -> list[ContactCertificate]:
        return self._query(_FIND, (user, address))

    def entries(self, user: str) -> list[ContactCertificate]:
        return self._query(_ENTRIES, (user,))

    def remove(self, user: str, address: str) -> int:
        with self._database.transaction() as db:
            count = db.execute("DELETE FROM contact_addresses WHERE user_id = %s AND "
                               "address = %s", (user, address)).rowcount
            db.execute(
                "DELETE FROM contact_certs c WHERE c.user_id = %s AND NOT EXISTS ("
                "SELECT 1 FROM contact_addresses a WHERE a.user_id = c.user_id "
                "AND a.fingerprint = c.fingerprint)", (user,))
        return int(count)
