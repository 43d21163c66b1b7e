"""Storage ports of the key store, with their in-memory twins.

Two repositories, both holding *stored records* only (bytes and plain values, no crypto):

- `KeyStore`: one record per user: the private key encrypted at rest (a DER PKCS#8
  EncryptedPrivateKeyInfo, PBES2), the user's certificate and its chain (DER).
- `AddressBook`: per user, recipients' certificates (DER) indexed by lowercase e-mail address.

Every method is one atomic operation with no engine-specific semantics (no cursors, no
transactions spanning calls), so the SQLite implementation (`keystore.sqlite`) can be
re-implemented on PostgreSQL for several proxy nodes. Concurrent updates are guarded by
compare-and-swap (`replace(..., expected_key=...)`), not by locks held across calls.

The memory implementations are the reference semantics: the same test suite runs against both.

May import: errors.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from smime_proxy.errors import KeyExists, NoSuchKey


@dataclass(frozen=True)
class KeyRecord:
    """What the store keeps for one user. `encrypted_key` is never shown by repr."""

    user: str
    encrypted_key: bytes = field(repr=False)
    certificate: bytes = field(repr=False)
    chain: tuple[bytes, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class ContactCertificate:
    """One recipient certificate in a user's address book."""

    fingerprint: str  # SHA-256 of the DER certificate, lowercase hex
    certificate: bytes = field(repr=False)
    addresses: tuple[str, ...] = ()
    # AES-256-GCM in the smimeCapabilities of the holder's latest verified signed mail;
    # None: not told (an imported certificate; a signature that announced nothing)
    reads_gcm: bool | None = None


class KeyStore(Protocol):
    """Repository of users' encrypted keys and certificates."""

    def get(self, user: str) -> KeyRecord | None:
        """The user's record, or None."""
        ...

    def add(self, record: KeyRecord) -> None:
        """Store a new record; `KeyExists` if the user already has one."""
        ...

    def replace(self, record: KeyRecord, *, expected_key: bytes) -> None:
        """Replace the user's record if its stored `encrypted_key` still equals `expected_key`.

        `NoSuchKey` if the user has no record, `KeyExists` if the record changed meanwhile
        (compare-and-swap: a concurrent password change or removal wins, this one fails).
        """
        ...

    def delete(self, user: str) -> bool:
        """Remove the user's record; True if there was one."""
        ...

    def users(self) -> list[str]:
        """Every user with a record, sorted."""
        ...

    def mail_copy(self, user: str) -> bytes | None:
        """The copy of the user's key wrapped under the mail password, or None (issue 13:
        unlock by mail login, the user's choice)."""
        ...

    def set_mail_copy(self, user: str, wrapped: bytes | None) -> None:
        """Store (or with None remove) that copy; `NoSuchKey` if the user has no record. It
        goes with the record when the record is deleted."""
        ...

    def preference(self, user: str, name: str) -> str | None:
        """One of the user's Secure Mail settings (e.g. "encryption_method"), or None. A
        setting does not need a key and stays when the key is removed."""
        ...

    def set_preference(self, user: str, name: str, value: str | None) -> None:
        """Store (or with None remove) one setting."""
        ...


class AddressBook(Protocol):
    """Repository of recipients' certificates, per user, by lowercase e-mail address."""

    def add(self, user: str, contact: ContactCertificate) -> None:
        """Store the certificate (idempotent by fingerprint) and link it to its addresses;
        a `reads_gcm` that is not None replaces the stored one."""
        ...

    def find(self, user: str, address: str) -> list[ContactCertificate]:
        """Certificates linked to `address` (already lowercase), any order."""
        ...

    def entries(self, user: str) -> list[ContactCertificate]:
        """Every certificate of the user's address book, sorted by fingerprint."""
        ...

    def remove(self, user: str, address: str) -> int:
        """Unlink `address` from every certificate; drop certificates left without an address.

        Returns the number of certificates that were linked to the address.
        """
        ...


# --- in-memory twins ------------------------------------------------------------------------


class MemoryKeyStore:
    """`KeyStore` in a dict (tests, and the reference semantics)."""

    def __init__(self) -> None:
        self._records: dict[str, KeyRecord] = {}
        self._mail_copies: dict[str, bytes] = {}
        self._preferences: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryKeyStore(users={len(self._records)})"

    def mail_copy(self, user: str) -> bytes | None:
        with self._lock:
            return self._mail_copies.get(user)

    def set_mail_copy(self, user: str, wrapped: bytes | None) -> None:
        with self._lock:
            if user not in self._records:
                raise NoSuchKey(f"user {user!r} has no key")
            if wrapped is None:
                self._mail_copies.pop(user, None)
            else:
                self._mail_copies[user] = wrapped

    def preference(self, user: str, name: str) -> str | None:
        with self._lock:
            return self._preferences.get((user, name))

    def set_preference(self, user: str, name: str, value: str | None) -> None:
        with self._lock:
            if value is None:
                self._preferences.pop((user, name), None)
            else:
                self._preferences[(user, name)] = value

    def get(self, user: str) -> KeyRecord | None:
        with self._lock:
            return self._records.get(user)

    def add(self, record: KeyRecord) -> None:
        with self._lock:
            if record.user in self._records:
                raise KeyExists(f"user {record.user!r} already has a key")
            self._records[record.user] = record

    def replace(self, record: KeyRecord, *, expected_key: bytes) -> None:
        with self._lock:
            current = self._records.get(record.user)
            if current is None:
                raise NoSuchKey(f"user {record.user!r} has no key")
            if current.encrypted_key != expected_key:
                raise KeyExists(f"the key of user {record.user!r} changed meanwhile")
            self._records[record.user] = record

    def delete(self, user: str) -> bool:
        with self._lock:
            self._mail_copies.pop(user, None)
            return self._records.pop(user, None) is not None

    def users(self) -> list[str]:
        with self._lock:
            return sorted(self._records)


class MemoryAddressBook:
    """`AddressBook` in dicts (tests, and the reference semantics)."""

    def __init__(self) -> None:
        # user -> fingerprint -> contact
        self._books: dict[str, dict[str, ContactCertificate]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryAddressBook(users={len(self._books)})"

    def add(self, user: str, contact: ContactCertificate) -> None:
        with self._lock:
            book = self._books.setdefault(user, {})
            old = book.get(contact.fingerprint)
            addresses: Sequence[str] = contact.addresses
            reads_gcm = contact.reads_gcm
            if old is not None:
                addresses = list(old.addresses) + [a for a in addresses if a not in old.addresses]
                reads_gcm = old.reads_gcm if reads_gcm is None else reads_gcm
            book[contact.fingerprint] = replace(contact, addresses=tuple(sorted(set(addresses))),
                                                reads_gcm=reads_gcm)

    def find(self, user: str, address: str) -> list[ContactCertificate]:
        with self._lock:
            book = self._books.get(user, {})
            return [c for c in book.values() if address in c.addresses]

    def entries(self, user: str) -> list[ContactCertificate]:
        with self._lock:
            book = self._books.get(user, {})
            return [book[fp] for fp in sorted(book)]

    def remove(self, user: str, address: str) -> int:
        with self._lock:
            book = self._books.get(user, {})
            count = 0
            for fp, contact in list(book.items()):
                if address not in contact.addresses:
                    continue
                count += 1
                left = tuple(a for a in contact.addresses if a != address)
                if left:
                    book[fp] = replace(contact, addresses=left)
                else:
                    del book[fp]
            return count
