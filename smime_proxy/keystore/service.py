"""`SecureMail`: the users' keys, their Secure Mail Password, unlock and auto-lock.

The Secure Mail Password is never stored: it only encrypts the key at rest (`keystore.pkcs`).
`unlock` decrypts the key and keeps an unlocked handle (`InProcessKeyAgent`) in this process,
subject to an idle timeout (default 180 s, refreshed by every `agent_for`) and an absolute
maximum from the moment of unlocking (default 8 h). Time is always passed in (`now`, an aware
datetime), so tests drive the clock. Callers must fetch the agent through `agent_for(user, now)`
for each operation and not keep it: the expiry is enforced there.

Unlocks live behind the `UnlockSessions` port (`keystore.sessions`: this process's memory by
default, or every node's Redis), with their timeouts decided by `keystore.unlocks`; stored
records behind the `KeyStore` port. With a key agent process (`holder`, `keystore.held`),
the unlocked keys live there instead, never in this process. Each check (`agent_for`,
`unlock_state`) asks the port or the agent, so a lock on one node ends the unlock everywhere
at the next check. Methods are synchronous and thread-safe; the password ones take ~0.2-0.5 s
(PBKDF2): the asyncio shells call them in a worker thread.

Errors: `WrongPassword` (the same message whether the user has no key or the password is
wrong), `KeyLocked`, `NoSuchKey`, `KeyExists`, `KeyMismatch`, `ImportRejected`, `InputError`;
`SessionStoreError` (a `KeyStoreError`) when a shared session store fails, which `agent_for`
raises as `SessionsUnavailable`, a `KeyLocked` too: the fronts then behave as if locked, and
`unlock_state` says locked. No message, repr or log line contains a password or key material.

May import: errors, crypto.keyagent, keystore.*, cryptography, stdlib (logging: user names
and outcomes only).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from smime_proxy.crypto.keyagent import InProcessKeyAgent, KeyAgent
from smime_proxy.errors import (
    ImportRejected,
    InputError,
    KeyExists,
    KeyMismatch,
    KeyStoreError,
    NoSuchKey,
    UsageError,
    WrongPassword,
)
from smime_proxy.keystore.ca import USER_VALIDITY_DAYS, ServerCA, new_private_key
from smime_proxy.keystore.certs import CertificateSummary, certificate_addresses
from smime_proxy.keystore.held import HeldKeys, KeyHolder
from smime_proxy.keystore.pkcs import (
    KDF_ITERATIONS,
    KeyMaterial,
    PrivateKey,
    export_pkcs12,
    load_key_file,
    pbes2_parameters,
    public_key_der,
    unwrap_private_key,
    wrap_private_key,
)
from smime_proxy.keystore.pkcs12_check import IMPORT_ITERATION_CAP
from smime_proxy.keystore.ports import KeyRecord, KeyStore
from smime_proxy.keystore.sessions import MemoryUnlockSessions, UnlockSessions
from smime_proxy.keystore.unlocks import Unlocks, UnlockState

log = logging.getLogger(__name__)
DEFAULT_IDLE_TIMEOUT = timedelta(seconds=180)
DEFAULT_MAX_UNLOCK = timedelta(hours=8)
UNLOCK_FAILED = "wrong user name or Secure Mail Password"
MAX_USER_LENGTH = 320
# what a user may choose as their Encryption Method: the ciphers the SMTP front sends
ENCRYPTION_METHODS = ("aes-256-gcm", "aes-256-cbc", "aes-128-cbc")

Password = bytes | str


def _secret(password: Password) -> bytes:
    return password.encode("utf-8") if isinstance(password, str) else bytes(password)


def _new_secret(password: Password) -> bytes:
    value = _secret(password)
    if not value:
        raise InputError("the new Secure Mail Password must not be empty")
    return value


def check_user(user: str) -> str:
    """A user name as the store keys it; `InputError` if unusable."""
    if not user or len(user) > MAX_USER_LENGTH or not user.isprintable() or user != user.strip():
        raise InputError("invalid user name")
    return user


def _check_now(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise UsageError("now must be an aware datetime")
    return now


@dataclass(frozen=True)
class KeyInfo:
    """A user's stored key, described without the key: `keys show`."""

    user: str
    certificate: CertificateSummary
    chain: tuple[CertificateSummary, ...]


class SecureMail:
    """Users' keys: import, generate, unlock/lock, change password, export, remove."""

    def __init__(
        self,
        store: KeyStore,
        *,
        ca: ServerCA | None = None,
        kdf_iterations: int = KDF_ITERATIONS,
        idle_timeout: timedelta = DEFAULT_IDLE_TIMEOUT,
        max_unlock: timedelta = DEFAULT_MAX_UNLOCK,
        import_iteration_cap: int = IMPORT_ITERATION_CAP,
        mail_unlock: bool = True,
        sessions: UnlockSessions | None = None,
        holder: KeyHolder | None = None,
    ) -> None:
        """`kdf_iterations` below 600,000 are for tests only; production uses the default.
        `mail_unlock`: whether users may choose to unlock by mail login (the admin's call).
        `sessions`: where unlocks live (default: this process's memory). `holder`: a key
        agent process that keeps the unlocked keys instead (then `sessions` only makes mail
        marks)."""
        if kdf_iterations < 1 or import_iteration_cap < kdf_iterations:
            raise UsageError("bad KDF iteration settings")
        if idle_timeout <= timedelta(0) or max_unlock < idle_timeout:
            raise UsageError("bad unlock timeouts")
        self.store = store
        self.ca = ca
        self.kdf_iterations = kdf_iterations
        self.idle_timeout = idle_timeout
        self.max_unlock = max_unlock
        self.import_iteration_cap = import_iteration_cap
        self.sessions: UnlockSessions = (MemoryUnlockSessions() if sessions is None
                                         else sessions)
        self._unlocks = Unlocks(self.sessions, idle_timeout, max_unlock)
        self.held = None if holder is None else HeldKeys(holder, idle_timeout, max_unlock)
        self._dummy: bytes | None = None
        self.mail_unlock = mail_unlock

    def __repr__(self) -> str:
        return (
            f"SecureMail(store={self.store!r}, sessions={self.sessions!r}, "
            f"idle_timeout={self.idle_timeout}, max_unlock={self.max_unlock})"
        )

    def add_lock_listener(self, listener: Callable[[str], None]) -> None:
        """Call `listener(user)` whenever a user's unlock ends (lock, expiry, a new unlock
        replacing it; on another node: at this process's next check of it): what was
        decrypted under it must go too (the IMAP view cache). It must be idempotent."""
        self._unlocks.add_listener(listener)
        if self.held is not None:
            self.held.add_listener(listener)

    # --- reading (no password needed) ---------------------------------------------------

    def _record(self, user: str) -> KeyRecord:
        record = self.store.get(check_user(user))
        if record is None:
            raise NoSuchKey(f"user {user!r} has no key")
        return record

    def has_key(self, user: str) -> bool:
        return self.store.get(check_user(user)) is not None

    def certificate(self, user: str) -> x509.Certificate:
        """The user's own certificate (to encrypt to self: no unlock needed)."""
        return _load_cert(self._record(user).certificate)

    def chain(self, user: str) -> tuple[x509.Certificate, ...]:
        """The issuers of the user's certificate, as stored (EE excluded)."""
        return tuple(_load_cert(der) for der in self._record(user).chain)

    def key_info(self, user: str) -> KeyInfo:
        record = self._record(user)
        return KeyInfo(
            user=user,
            certificate=CertificateSummary.of(_load_cert(record.certificate)),
            chain=tuple(CertificateSummary.of(_load_cert(der)) for der in record.chain),
        )

    def addresses(self, user: str) -> tuple[str, ...]:
        return certificate_addresses(self.certificate(user))

    # --- unlock / lock ------------------------------------------------------------------

    def _open(self, record: KeyRecord, password: bytes) -> PrivateKey:
        """Decrypt the stored key; WrongPassword (generic) on any mismatch."""
        try:
            key = unwrap_private_key(
                record.encrypted_key, password, max_iterations=self.import_iteration_cap
            )
        except WrongPassword:
            raise WrongPassword(UNLOCK_FAILED) from None
        if public_key_der(key) != public_key_der(_load_cert(record.certificate)):
            raise WrongPassword(UNLOCK_FAILED)
        return key

    def _waste_time(self, password: bytes) -> None:
        """Cost of a real unlock for a user without a key: no timing difference."""
        if self._dummy is None:
            dummy_key = ec.generate_private_key(ec.SECP256R1())
            self._dummy = wrap_private_key(
                dummy_key, b"\x00not-a-password", iterations=self.kdf_iterations
            )
        with contextlib.suppress(WrongPassword):
            unwrap_private_key(
                self._dummy, password or b"-", max_iterations=self.import_iteration_cap
            )

    def _record_or_fail(self, user: str, password: bytes) -> KeyRecord:
        """The record; for a user without one, the same work and error as a wrong password."""
        record = self.store.get(check_user(user))
        if record is None:
            self._waste_time(password)
            raise WrongPassword(UNLOCK_FAILED)
        return record

    def unlock(self, user: str, password: Password, now: datetime) -> KeyAgent:
        """Decrypt the key with the Secure Mail Password; it stays unlocked until idle for
        `idle_timeout`, `max_unlock` after now, or `lock`."""
        _check_now(now)
        secret = _secret(password)
        record = self._record_or_fail(user, secret)
        if self.held is not None:  # the agent process opens it: no key here
            try:
                self.held.unlock(user, record.encrypted_key, secret, record.certificate, now)
            except WrongPassword:
                raise WrongPassword(UNLOCK_FAILED) from None
            return self.agent_for(user, now)
        key = self._open(record, secret)
        self._upgrade_kdf(record, key, secret)
        return self._start_session(user, record, key, now)

    def _start_session(self, user: str, record: KeyRecord, key: PrivateKey, now: datetime,
                       mail_mark: bytes | None = None) -> InProcessKeyAgent:
        """The key unlocked from now on; an unlock it replaces ends (its listeners hear)."""
        agent = InProcessKeyAgent(
            key,
            _load_cert(record.certificate),
            tuple(_load_cert(der) for der in record.chain),
        )
        self._unlocks.start(user, agent, now, mail_mark)
        return agent

    def _upgrade_kdf(self, record: KeyRecord, key: PrivateKey, password: bytes) -> None:
        """Re-encrypt a key stored with fewer KDF iterations than configured (records from an
        older setting), now that the password is at hand. Best effort: a concurrent change
        wins."""
        if pbes2_parameters(record.encrypted_key).iterations >= self.kdf_iterations:
            return
        upgraded = KeyRecord(
            user=record.user,
            encrypted_key=wrap_private_key(key, password, iterations=self.kdf_iterations),
            certificate=record.certificate,
            chain=record.chain,
        )
        with contextlib.suppress(KeyExists, NoSuchKey):
            self.store.replace(upgraded, expected_key=record.encrypted_key)

    def agent_for(self, user: str, now: datetime) -> KeyAgent:
        """The unlocked key's agent (refreshes the idle timer); `KeyLocked` if not unlocked
        (`SessionsUnavailable`, a `KeyLocked`, when a shared session store fails; an
        `AgentUnreachable`, a `KeyLocked`, when the key agent process is not there)."""
        if self.held is not None:
            return self.held.agent_for(user, lambda: self._certificates(user), _check_now(now))
        return self._unlocks.agent_for(user, _check_now(now))

    def _certificates(self, user: str) -> tuple[bytes, tuple[bytes, ...]]:
        record = self._record(user)
        return record.certificate, record.chain

    def unlock_state(self, user: str, now: datetime) -> UnlockState:
        """Whether the key is unlocked at `now` (does not refresh the idle timer); a shared
        session store that fails reads as locked (and is logged)."""
        if self.held is not None:
            return self.held.state(user, _check_now(now))
        return self._unlocks.state(user, _check_now(now))

    def lock(self, user: str) -> None:
        """End the user's unlock (on every node sharing the sessions); `SessionStoreError`
        if a shared store fails (then it did not happen)."""
        if self.held is not None:
            self.held.lock(user)
            return
        self._unlocks.end(user, None)

    def lock_expired(self, now: datetime) -> list[str]:
        """End every expired session this process knows of (the daemon's periodic sweep);
        returns the users whose unlock ended (expired, or found gone from a shared store)."""
        if self.held is not None:
            return self.held.lock_expired(_check_now(now))
        return self._unlocks.lock_expired(_check_now(now))

    # --- unlock by mail login (issue 13: the user's choice) ------------------------------

    def encryption_method(self, user: str) -> str | None:
        """The cipher the user chose to encrypt with (one of ENCRYPTION_METHODS), None for
        the policy's order."""
        value = self.store.preference(check_user(user), "encryption_method")
        return value if value in ENCRYPTION_METHODS else None

    def set_encryption_method(self, user: str, method: str | None) -> None:
        """Choose the Encryption Method (None: the policy's order); InputError otherwise."""
        if method is not None and method not in ENCRYPTION_METHODS:
            raise InputError(f"the Encryption Method must be one of "
                             f"{', '.join(ENCRYPTION_METHODS)}")
        self.store.set_preference(check_user(user), "encryption_method", method)

    def store_encrypted_choice(self, user: str) -> bool:
        """Whether the user asked that incoming plain mail be stored encrypted to them."""
        return self.store.preference(check_user(user), "store_encrypted") == "yes"

    def set_store_encrypted_choice(self, user: str, wanted: bool) -> None:
        self.store.set_preference(check_user(user), "store_encrypted",
                                  "yes" if wanted else None)

    def mail_unlock_enabled(self, user: str) -> bool:
        return self.mail_unlock and self.store.mail_copy(check_user(user)) is not None

    def enable_mail_unlock(self, user: str, password: Password, mail_password: Password,
                           now: datetime) -> None:
        """Keep a second copy of the key wrapped under the mail password (PBKDF2 as the
        first), so that a mail login unlocks it: the key is then only as safe as the mail
        password. Needs the Secure Mail Password; WrongPassword (generic) otherwise."""
        _check_now(now)
        if not self.mail_unlock:
            raise UsageError("unlocking by mail login is turned off on this server")
        mail = _secret(mail_password)
        if not mail:
            raise InputError("the mail password must not be empty")
        secret = _secret(password)
        record = self._record_or_fail(user, secret)
        key = self._open(record, secret)
        self.store.set_mail_copy(user, wrap_private_key(key, mail,
                                                        iterations=self.kdf_iterations))

    def disable_mail_unlock(self, user: str) -> None:
        """Drop the mail-password copy (the key stays, under the Secure Mail Password)."""
        self.store.set_mail_copy(check_user(user), None)

    def mail_login(self, user: str, mail_password: Password, now: datetime) -> str:
        """A mail login (IMAP, SMTP) that the upstream accepted with `mail_password`.

        For a user who chose it: "unlocked" (the mail copy opened), "refreshed" (already
        unlocked: the login counts as activity), "rewrapped" (already unlocked but the copy
        did not open: the mail password changed upstream, so the copy is wrapped anew from
        the unlocked key), "stale" (locked and the copy did not open: the Secure Mail
        Password is needed once). "none": the user did not choose it, or it is turned off.
        """
        _check_now(now)
        user = check_user(user)
        mail = _secret(mail_password)
        copy = self.store.mail_copy(user) if self.mail_unlock and mail else None
        if copy is None:
            return "none"
        if self.held is not None:
            return self._held_mail_login(user, copy, mail, now)
        mark = self.sessions.mail_mark(user, mail)
        session = self._unlocks.live(user, now)
        if session is not None and session.mail_mark == mark:
            if self._unlocks.touch(user, session, now):
                return "refreshed"
            session = None  # ended or replaced meanwhile: as if locked
        record = self._record(user)
        try:
            key = self._open(KeyRecord(user, copy, record.certificate, record.chain), mail)
        except WrongPassword:
            key = None
        if session is not None:
            if key is None:  # the mail password changed upstream: wrap the copy anew
                with contextlib.suppress(NoSuchKey):
                    self.store.set_mail_copy(user, wrap_private_key(
                        session.agent.private_key, mail, iterations=self.kdf_iterations))
            self._unlocks.touch(user, session, now, mail_mark=mark)
            return "refreshed" if key is not None else "rewrapped"
        if key is None:
            return "stale"
        self._start_session(user, record, key, now, mail_mark=mark)
        return "unlocked"

    def _held_mail_login(self, user: str, copy: bytes, mail: bytes, now: datetime) -> str:
        """`mail_login` with a key agent process: an unlock is refreshed by the login (the
        upstream accepted the password); a locked key is opened there from the mail copy.
        A copy that no longer opens stays as it is ("stale"): it cannot be wrapped anew
        here, where the key never is."""
        assert self.held is not None
        if self.held.touch(user, now):
            return "refreshed"
        record = self._record(user)
        try:
            self.held.unlock(user, copy, mail, record.certificate, now)
        except WrongPassword:
            return "stale"
        return "unlocked"

    def mail_login_logged(self, user: str, mail_password: Password, now: datetime) -> None:
        """`mail_login` for the fronts: never raises (the login stands, the key stays as it
        was), and logs what happened with the user's name only."""
        try:
            outcome = self.mail_login(user, mail_password, now)
        except Exception as exc:
            log.warning("unlock by mail login failed",
                        extra={"user": user, "reason": type(exc).__name__})
            return
        if outcome != "none":
            log.info("unlock by mail login", extra={"user": user, "outcome": outcome})

    # --- changing keys ------------------------------------------------------------------

    def change_password(self, user: str, old_password: Password, new_password: Password) -> None:
        """Re-encrypt the same key under a new Secure Mail Password."""
        new = _new_secret(new_password)
        record = self._record_or_fail(user, _secret(old_password))
        key = self._open(record, _secret(old_password))
        rewrapped = KeyRecord(
            user=record.user,
            encrypted_key=wrap_private_key(key, new, iterations=self.kdf_iterations),
            certificate=record.certificate,
            chain=record.chain,
        )
        self.store.replace(rewrapped, expected_key=record.encrypted_key)

    def _store_new(self, user: str, material: KeyMaterial, password: bytes) -> None:
        encrypted = wrap_private_key(
            material.private_key, password, iterations=self.kdf_iterations
        )
        self.store.add(
            KeyRecord(
                user=user,
                encrypted_key=encrypted,
                certificate=material.certificate.public_bytes(serialization.Encoding.DER),
                chain=tuple(c.public_bytes(serialization.Encoding.DER) for c in material.chain),
            )
        )

    def import_pkcs12(
        self, user: str, data: bytes, file_password: Password, new_password: Password,
        *, own_addresses: Collection[str] | None = None,
    ) -> x509.Certificate:
        """Import a PKCS#12 (or PEM key + certificates) file as the user's key, protected by
        `new_password` (the Secure Mail Password). Returns the user's certificate.
        `own_addresses`: when given, the certificate must name one of them (a user imports a
        key for their own addresses, not for someone else's)."""
        check_user(user)
        new = _new_secret(new_password)
        if self.store.get(user) is not None:
            raise KeyExists(f"user {user!r} already has a key: remove it first")
        material = load_key_file(data, _secret(file_password), cap=self.import_iteration_cap)
        if own_addresses is not None:
            named = certificate_addresses(material.certificate)
            if not set(named) & {a.lower() for a in own_addresses}:
                raise ImportRejected(
                    "the certificate is for " + (", ".join(named) or "no address")
                    + ", not for one of your addresses: " + ", ".join(own_addresses))
        self._store_new(user, material, new)
        return material.certificate

    def generate(
        self,
        user: str,
        email: str,
        password: Password,
        now: datetime,
        *,
        key_type: str = "rsa2048",
        validity_days: int = USER_VALIDITY_DAYS,
    ) -> x509.Certificate:
        """A new key and a certificate for `email` issued by the server CA."""
        _check_now(now)
        check_user(user)
        new = _new_secret(password)
        if self.ca is None:
            raise KeyStoreError("no server CA: run `smime-proxy ca init` first")
        if self.store.get(user) is not None:
            raise KeyExists(f"user {user!r} already has a key: remove it first")
        key = new_private_key(key_type)
        certificate = self.ca.issue_user_certificate(
            email, key.public_key(), now, validity_days
        )
        self._store_new(user, KeyMaterial(key, certificate, (self.ca.certificate,)), new)
        return certificate

    def export_pkcs12(
        self, user: str, password: Password, export_password: Password, legacy: bool = False
    ) -> bytes:
        """The key, certificate and chain as PKCS#12 under `export_password`.

        Modern: PBES2/AES-256/PBKDF2-SHA256 (OpenSSL 3, NSS); `legacy`: PBE-SHA1-3DES with a
        SHA-1 MAC (gpgsm 2.2, old Outlook).
        """
        export = _secret(export_password)
        if not export:
            raise InputError("the export file password must not be empty")
        record = self._record_or_fail(user, _secret(password))
        key = self._open(record, _secret(password))
        certificate = _load_cert(record.certificate)
        addresses = certificate_addresses(certificate)
        name = (addresses[0] if addresses else user).encode("utf-8")
        material = KeyMaterial(key, certificate, tuple(_load_cert(d) for d in record.chain))
        return export_pkcs12(
            material, export, legacy=legacy, iterations=self.kdf_iterations, friendly_name=name
        )

    def remove(self, user: str, p12_data: bytes, file_password: Password) -> None:
        """Delete the user's key, only if the given PKCS#12 holds the same key."""
        record = self._record(user)
        material = load_key_file(p12_data, _secret(file_password), cap=self.import_iteration_cap)
        if public_key_der(material.private_key) != public_key_der(_load_cert(record.certificate)):
            raise KeyMismatch("the file holds a different key: nothing removed")
        self.lock(user)
        if not self.store.delete(user):
            raise NoSuchKey(f"user {user!r} has no key")


def _load_cert(der: bytes) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        raise KeyStoreError("a stored certificate is damaged") from None
