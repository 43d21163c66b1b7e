"""Key store: users' encrypted keys, unlock with auto-lock, address books, the server CA.

Safe API for the daemon and the fronts:

- `SecureMail` (service.py): import/generate/export/remove keys, `unlock`, `agent_for`, `lock`,
  `change_password`, `certificate` (encrypt-to-self without unlock); its unlocks with their
  timeouts (unlocks.py) over the `UnlockSessions` port (sessions.py: memory; redis_sessions.py:
  shared by every node).
- `Contacts` (contacts.py): address book per user, `choose_certificate`.
- `ServerCA` (ca.py): `ca init`, issuing user certificates.
- Ports (ports.py: `KeyStore`, `AddressBook`) with in-memory twins, and the SQLite
  implementation (sqlite.py: `SqliteDatabase`, `SqliteKeyStore`, `SqliteAddressBook`).

May import: keystore.
"""

from __future__ import annotations

from smime_proxy.keystore.ca import ServerCA
from smime_proxy.keystore.contacts import Contacts, usable_for_encryption
from smime_proxy.keystore.pkcs import KDF_ITERATIONS
from smime_proxy.keystore.pkcs12_check import IMPORT_ITERATION_CAP
from smime_proxy.keystore.ports import (
    AddressBook,
    ContactCertificate,
    KeyRecord,
    KeyStore,
    MemoryAddressBook,
    MemoryKeyStore,
)
from smime_proxy.keystore.service import KeyInfo, SecureMail
from smime_proxy.keystore.sqlite import SqliteAddressBook, SqliteDatabase, SqliteKeyStore
from smime_proxy.keystore.unlocks import UnlockState

__all__ = [
    "IMPORT_ITERATION_CAP",
    "KDF_ITERATIONS",
    "AddressBook",
    "ContactCertificate",
    "Contacts",
    "KeyInfo",
    "KeyRecord",
    "KeyStore",
    "MemoryAddressBook",
    "MemoryKeyStore",
    "SecureMail",
    "ServerCA",
    "SqliteAddressBook",
    "SqliteDatabase",
    "SqliteKeyStore",
    "UnlockState",
    "usable_for_encryption",
]
