"""The embedded storage: one SQLite file under the data directory (stdlib `sqlite3`).

`SqliteDatabase` owns the connection (WAL journal, foreign keys on, busy timeout) and the
versioned schema (`PRAGMA user_version`, forward-only migrations); `SqliteKeyStore` and
`SqliteAddressBook` implement the `KeyStore` and `AddressBook` ports on it.

The schema uses only portable types (TEXT, BLOB -> BYTEA, INTEGER) and single-statement
operations, with compare-and-swap for updates, so a PostgreSQL implementation of the same ports
is a translation of these statements. The connection is shared by threads behind a lock: the
daemon calls the store from worker threads, off the event loop.

The file and the data directory are created private (0600 / 0700): they hold encrypted keys.

May import: errors, keystore.ports.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from smime_proxy.errors import KeyExists, KeyStoreError, NoSuchKey
from smime_proxy.keystore.ports import ContactCertificate, KeyRecord

DB_FILENAME = "smime-proxy.sqlite3"


def _migrate_1(db: sqlite3.Connection) -> None:
    # One statement per execute(): executescript() would COMMIT the migration transaction.
    statements = """
        CREATE TABLE user_keys (
            user_id       TEXT PRIMARY KEY,
            encrypted_key BLOB NOT NULL,
            certificate   BLOB NOT NULL
        );
        CREATE TABLE user_key_chain (
            user_id     TEXT NOT NULL REFERENCES user_keys(user_id) ON DELETE CASCADE,
            position    INTEGER NOT NULL,
            certificate BLOB NOT NULL,
            PRIMARY KEY (user_id, position)
        );
        CREATE TABLE contact_certs (
            user_id     TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            certificate BLOB NOT NULL,
            PRIMARY KEY (user_id, fingerprint)
        );
        CREATE TABLE contact_addresses (
            user_id     TEXT NOT NULL,
            address     TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            PRIMARY KEY (user_id, address, fingerprint),
            FOREIGN KEY (user_id, fingerprint)
                REFERENCES contact_certs(user_id, fingerprint) ON DELETE CASCADE
        );
        CREATE INDEX contact_addresses_by_cert ON contact_addresses(user_id, fingerprint);
    """
    for statement in statements.split(";"):
        if statement.strip():
            db.execute(statement)


def _migrate_2(db: sqlite3.Connection) -> None:
    """The copy of a key wrapped under the mail password (issue 13, opt-in)."""
    db.execute("""
        CREATE TABLE mail_unlock (
            user_id     TEXT PRIMARY KEY REFERENCES user_keys(user_id) ON DELETE CASCADE,
            wrapped_key BLOB NOT NULL
        )""")


def _migrate_3(db: sqlite3.Connection) -> None:
    """What a contact's signed mail said it reads (issue 14: smimeCapabilities)."""
    db.execute("ALTER TABLE contact_certs ADD COLUMN reads_gcm INTEGER")


def _migrate_4(db: sqlite3.Connection) -> None:
    """A user's Secure Mail settings (issue 14: the Encryption Method); no key needed."""
    db.execute("""
        CREATE TABLE user_preferences (
            user_id TEXT NOT NULL,
            name    TEXT NOT NULL,
            value   TEXT NOT NULL,
            PRIMARY KEY (user_id, name)
        )""")


# Index i holds the migration from version i to i + 1. Append only.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _migrate_1, _migrate_2, _migrate_3, _migrate_4)
SCHEMA_VERSION = len(MIGRATIONS)


class SqliteDatabase:
    """One SQLite file, opened in WAL mode, schema migrated to `SCHEMA_VERSION`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            if str(self.path) != ":memory:" and not self.path.exists():
                # Create the file private before SQLite writes anything into it.
                fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
                os.close(fd)
            self._db = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise KeyStoreError(f"cannot open the key store {self.path}: {exc}") from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
            self._private_sidecars()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise KeyStoreError(f"the key store {self.path} is unusable: {exc}") from None

    def _private_sidecars(self) -> None:
        """SQLite creates the -wal and -shm files with the umask's mode: make them 0600."""
        for suffix in ("-wal", "-shm"):
            sidecar = Path(str(self.path) + suffix)
            try:
                if sidecar.exists():
                    sidecar.chmod(0o600)
            except OSError:
                pass

    @classmethod
    def open(cls, data_dir: str | os.PathLike[str]) -> SqliteDatabase:
        """Open (creating if needed, mode 0700) the data directory's database."""
        directory = Path(data_dir)
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise KeyStoreError(
                f"cannot create the data directory {directory}: {exc.strerror}"
            ) from None
        return cls(directory / DB_FILENAME)

    def __repr__(self) -> str:
        return f"SqliteDatabase({str(self.path)!r})"

    @property
    def schema_version(self) -> int:
        with self._lock:
            row = self._db.execute("PRAGMA user_version").fetchone()
            return int(row[0])

    def _migrate(self) -> None:
        with self.transaction() as db:
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise KeyStoreError(
                    f"the key store {self.path} has schema {version}, newer than this program "
                    f"({SCHEMA_VERSION})"
                )
            for step in range(version, SCHEMA_VERSION):
                MIGRATIONS[step](db)
                db.execute(f"PRAGMA user_version = {step + 1}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error), serialised between threads."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()


class SqliteKeyStore:
    """`KeyStore` on a `SqliteDatabase`."""

    def __init__(self, database: SqliteDatabase) -> None:
        self._database = database

    def __repr__(self) -> str:
        return f"SqliteKeyStore({self._database!r})"

    def get(self, user: str) -> KeyRecord | None:
        with self._database.transaction() as db:
            row = db.execute(
                "SELECT encrypted_key, certificate FROM user_keys WHERE user_id = ?", (user,)
            ).fetchone()
            if row is None:
                return None
            chain = db.execute(
                "SELECT certificate FROM user_key_chain WHERE user_id = ? ORDER BY position",
                (user,),
            ).fetchall()
        return KeyRecord(
            user=user,
            encrypted_key=bytes(row[0]),
            certificate=bytes(row[1]),
            chain=tuple(bytes(c[0]) for c in chain),
        )

    def add(self, record: KeyRecord) -> None:
        with self._database.transaction() as db:
            try:
                db.execute(
                    "INSERT INTO user_keys (user_id, encrypted_key, certificate) VALUES (?, ?, ?)",
                    (record.user, record.encrypted_key, record.certificate),
                )
            except sqlite3.IntegrityError:
                raise KeyExists(f"user {record.user!r} already has a key") from None
            self._write_chain(db, record)

    def replace(self, record: KeyRecord, *, expected_key: bytes) -> None:
        with self._database.transaction() as db:
            updated = db.execute(
                "UPDATE user_keys SET encrypted_key = ?, certificate = ? "
                "WHERE user_id = ? AND encrypted_key = ?",
                (record.encrypted_key, record.certificate, record.user, expected_key),
            ).rowcount
            if updated != 1:
                exists = db.execute(
                    "SELECT 1 FROM user_keys WHERE user_id = ?", (record.user,)
                ).fetchone()
                if exists is None:
                    raise NoSuchKey(f"user {record.user!r} has no key")
                raise KeyExists(f"the key of user {record.user!r} changed meanwhile")
            db.execute("DELETE FROM user_key_chain WHERE user_id = ?", (record.user,))
            self._write_chain(db, record)

    @staticmethod
    def _write_chain(db: sqlite3.Connection, record: KeyRecord) -> None:
        db.executemany(
            "INSERT INTO user_key_chain (user_id, position, certificate) VALUES (?, ?, ?)",
            [(record.user, i, cert) for i, cert in enumerate(record.chain)],
        )

    def delete(self, user: str) -> bool:
        with self._database.transaction() as db:
            return db.execute("DELETE FROM user_keys WHERE user_id = ?", (user,)).rowcount > 0

    def users(self) -> list[str]:
        with self._database.transaction() as db:
            rows = db.execute("SELECT user_id FROM user_keys ORDER BY user_id").fetchall()
        return [str(r[0]) for r in rows]

    def mail_copy(self, user: str) -> bytes | None:
        with self._database.transaction() as db:
            row = db.execute("SELECT wrapped_key FROM mail_unlock WHERE user_id = ?",
                             (user,)).fetchone()
        return None if row is None else bytes(row[0])

    def set_mail_copy(self, user: str, wrapped: bytes | None) -> None:
        with self._database.transaction() as db:
            if db.execute("SELECT 1 FROM user_keys WHERE user_id = ?", (user,)).fetchone() \
                    is None:
                raise NoSuchKey(f"user {user!r} has no key")
            db.execute("DELETE FROM mail_unlock WHERE user_id = ?", (user,))
            if wrapped is not None:
                db.execute("INSERT INTO mail_unlock (user_id, wrapped_key) VALUES (?, ?)",
                           (user, wrapped))

    def preference(self, user: str, name: str) -> str | None:
        with self._database.transaction() as db:
            row = db.execute("SELECT value FROM user_preferences WHERE user_id = ? AND "
                             "name = ?", (user, name)).fetchone()
        return None if row is None else str(row[0])

    def set_preference(self, user: str, name: str, value: str | None) -> None:
        with self._database.transaction() as db:
            db.execute("DELETE FROM user_preferences WHERE user_id = ? AND name = ?",
                       (user, name))
            if value is not None:
                db.execute("INSERT INTO user_preferences (user_id, name, value) "
                           "VALUES (?, ?, ?)", (user, name, value))


class SqliteAddressBook:
    """`AddressBook` on a `SqliteDatabase`."""

    def __init__(self, database: SqliteDatabase) -> None:
        self._database = database

    def __repr__(self) -> str:
        return f"SqliteAddressBook({self._database!r})"

    def add(self, user: str, contact: ContactCertificate) -> None:
        with self._database.transaction() as db:
            told = None if contact.reads_gcm is None else int(contact.reads_gcm)
            db.execute(
                "INSERT INTO contact_certs (user_id, fingerprint, certificate, reads_gcm) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (user_id, fingerprint) DO UPDATE SET "
                "reads_gcm = COALESCE(excluded.reads_gcm, contact_certs.reads_gcm)",
                (user, contact.fingerprint, contact.certificate, told),
            )
            db.executemany(
                "INSERT INTO contact_addresses (user_id, address, fingerprint) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                [(user, address, contact.fingerprint) for address in contact.addresses],
            )

    def _load(self, db: sqlite3.Connection, user: str, fingerprints: list[str]) -> list[
        ContactCertificate
    ]:
        result = []
        for fp in fingerprints:
            cert = db.execute(
                "SELECT certificate, reads_gcm FROM contact_certs"
                " WHERE user_id = ? AND fingerprint = ?",
                (user, fp),
            ).fetchone()
            addresses = db.execute(
                "SELECT address FROM contact_addresses WHERE user_id = ? AND fingerprint = ? "
                "ORDER BY address",
                (user, fp),
            ).fetchall()
            result.append(
                ContactCertificate(
                    fingerprint=fp,
                    certificate=bytes(cert[0]),
                    addresses=tuple(str(a[0]) for a in addresses),
                    reads_gcm=None if cert[1] is None else bool(cert[1]),
                )
            )
        return result

    def find(self, user: str, address: str) -> list[ContactCertificate]:
        with self._database.transaction() as db:
            rows = db.execute(
                "SELECT fingerprint FROM contact_addresses WHERE user_id = ? AND address = ? "
                "ORDER BY fingerprint",
                (user, address),
            ).fetchall()
            return self._load(db, user, [str(r[0]) for r in rows])

    def entries(self, user: str) -> list[ContactCertificate]:
        with self._database.transaction() as db:
            rows = db.execute(
                "SELECT fingerprint FROM contact_certs WHERE user_id = ? ORDER BY fingerprint",
                (user,),
            ).fetchall()
            return self._load(db, user, [str(r[0]) for r in rows])

    def remove(self, user: str, address: str) -> int:
        with self._database.transaction() as db:
            count = db.execute(
                "DELETE FROM contact_addresses WHERE user_id = ? AND address = ?", (user, address)
            ).rowcount
            db.execute(
                "DELETE FROM contact_certs WHERE user_id = ? AND NOT EXISTS ("
                " SELECT 1 FROM contact_addresses a"
                " WHERE a.user_id = contact_certs.user_id"
                " AND a.fingerprint = contact_certs.fingerprint)",
                (user,),
            )
        return int(count)
