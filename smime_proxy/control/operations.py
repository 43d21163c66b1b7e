"""The Secure Mail operations on a user's key and address book, as the JSON API and the web
page both call them (no HTTP here: inputs are plain values, outcomes are values or a
`Refusal` carrying the status a front should give and a message safe to show).

Slow key-store work (PBKDF2, RSA key generation) runs in worker threads. Every operation
that takes the Secure Mail Password is throttled per user and source address; a wrong
password, a throttled attempt and an unlock are counted in the metrics. No password, key or
file content is ever logged.

May import: accounts, at_rest, throttle, errors, services, keystore, control.auth,
control.metrics, stdlib.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from smime_proxy.accounts import Accounts
from smime_proxy.at_rest.convert import StoreOperationFailed
from smime_proxy.at_rest.operation import LoginRefused, StoreUnreachable
from smime_proxy.at_rest.operations import FolderOperations, Operation
from smime_proxy.control.metrics import ControlMetrics
from smime_proxy.errors import (
    DirectoryUnavailable,
    InputError,
    KeyExists,
    KeyLocked,
    KeyMismatch,
    KeyStoreError,
    KeysUnavailable,
    NoSuchKey,
    SmimeProxyError,
    WrongPassword,
)
from smime_proxy.keystore.certs import (
    CertificateSummary,
    certificate_addresses,
    normalize_address,
)
from smime_proxy.keystore.contacts import usable_for_encryption
from smime_proxy.keystore.service import ENCRYPTION_METHODS, UNLOCK_FAILED
from smime_proxy.services import Services
from smime_proxy.throttle import Throttle, Throttled

log = logging.getLogger("smime_proxy.control")

KEY_TYPES = ("rsa2048", "rsa3072", "ec-p256", "ec-p384")
AUTOMATIC = "automatic"  # the Encryption Method that follows the policy's order
NO_KEY = "you have no Secure Mail key"
MAIL_UNLOCK_FORBIDDEN = "unlocking by mail login is turned off on this server"
BAD_PKCS12_FILE = "wrong password for the PKCS#12 file (or a damaged file)"
T = TypeVar("T")


class Refusal(SmimeProxyError):
    """An operation refused, with the HTTP status it maps to and a message safe to show
    (never a secret)."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def start_operation(operations: FolderOperations, user: str, login: str, mail_password: str,
                    action: str, mailbox: str, uids: list[int] | None) -> Operation:
    """`FolderOperations.start` with its refusals as HTTP statuses (the caller unlocked
    the key)."""
    try:
        return operations.start(user, login, mail_password, action, mailbox, uids)
    except InputError as exc:
        raise Refusal(400, str(exc)) from None
    except SmimeProxyError as exc:
        raise Refusal(409, str(exc)) from None


async def read_mail_store(work: Awaitable[T]) -> T:
    """A listing of the user's mail (`at_rest.listing`) with its failures as HTTP statuses."""
    try:
        return await work
    except StoreOperationFailed as exc:
        raise Refusal(404, f"no such folder ({exc})") from None
    except (StoreUnreachable, LoginRefused) as exc:
        raise Refusal(502, str(exc)) from None


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def summary_json(summary: CertificateSummary) -> dict[str, Any]:
    return {
        "subject": summary.subject,
        "issuer": summary.issuer,
        "addresses": list(summary.addresses),
        "serial": summary.serial,
        "not_before": summary.not_before.isoformat(),
        "not_after": summary.not_after.isoformat(),
        "key_type": summary.key_type,
        "key_size": summary.key_size,
        "fingerprint": summary.fingerprint,
    }


def same_twice(first: str, second: str, what: str) -> str:
    """A new password typed twice: the value, or a Refusal when empty or different."""
    if not first:
        raise Refusal(400, f"the {what} must not be empty")
    if not hmac.compare_digest(first.encode("utf-8"), second.encode("utf-8")):
        raise Refusal(400, f"the two {what}s differ")
    return first


class KeyOperations:
    """What a logged-in user may do with their Secure Mail key and address book."""

    def __init__(self, services: Services, metrics: ControlMetrics, *,
                 accounts: Accounts, throttle: Throttle | None = None,
                 mail_domain: str | None = None) -> None:
        self.services = services
        self.metrics = metrics
        self.throttle = throttle if throttle is not None else Throttle(services.now)
        self.mail_domain = mail_domain
        self.accounts = accounts

    def status(self, user: str) -> dict[str, Any]:
        mail = self.services.secure_mail
        now = self.services.now()
        certificate = None
        if mail.has_key(user):
            certificate = summary_json(mail.key_info(user).certificate)
        state = mail.unlock_state(user, now)
        expires = state.expires if state.unlocked else None
        left = max(0, int((expires - now).total_seconds())) if expires else None
        return {
            "user": user,
            "key_present": certificate is not None,
            "locked": not state.unlocked,
            "expires_at": _iso(expires),
            "idle_expires_at": _iso(state.idle_expires),
            "absolute_expires_at": _iso(state.absolute_expires),
            "seconds_left": left,
            "certificate": certificate,
            "mail_unlock": {"allowed": mail.mail_unlock,
                            "enabled": certificate is not None
                            and mail.mail_unlock_enabled(user)},
            "encryption_method": mail.encryption_method(user) or AUTOMATIC,
            "store_encrypted": mail.store_encrypted_choice(user),
        }

    def set_store_encrypted(self, user: str, wanted: bool) -> dict[str, Any]:
        """The user's own Store Encrypted switch: incoming plain mail is sealed to their
        certificate as the mail store receives it (where the admin runs the LMTP filter;
        the admin's policy may also turn it on for them)."""
        self.services.secure_mail.set_store_encrypted_choice(user, wanted)
        log.info("Store Encrypted chosen", extra={"user": user, "enabled": wanted})
        return self.status(user)

    def set_encryption_method(self, user: str, method: str) -> dict[str, Any]:
        """The user's Encryption Method: one of ENCRYPTION_METHODS, or "automatic" (the
        policy's order). The policy's cipher list stays the limit (a method it does not
        allow is not used, and `policy explain` says so)."""
        if method != AUTOMATIC and method not in ENCRYPTION_METHODS:
            raise Refusal(400, f"method must be one of {AUTOMATIC}, "
                               f"{', '.join(ENCRYPTION_METHODS)}")
        self.services.secure_mail.set_encryption_method(
            user, None if method == AUTOMATIC else method)
        log.info("Encryption Method chosen", extra={"user": user, "method": method})
        return self.status(user)

    async def run(self, action: Awaitable[T]) -> T:
        """Await an operation, mapping the key store's errors to Refusals."""
        try:
            return await action
        except Refusal:
            raise
        except KeyExists:
            raise Refusal(409, "you already have a key: remove it first") from None
        except KeyMismatch as exc:
            raise Refusal(409, str(exc)) from None
        except NoSuchKey:
            raise Refusal(404, NO_KEY) from None
        except KeysUnavailable as exc:  # Redis or the key agent: try again later
            raise Refusal(503, str(exc)) from None
        except KeyLocked:
            raise Refusal(409, "the key is locked") from None
        except InputError as exc:  # ImportRejected too
            raise Refusal(400, str(exc)) from None
        except KeyStoreError as exc:
            raise Refusal(409, str(exc)) from None

    async def _with_password(self, user: str, remote: str, work: Callable[[], T], *,
                             counted: str | None = None) -> T:
        """Run a Secure-Mail-Password operation in a thread, throttled."""
        try:
            self.throttle.reserve(user, remote)
        except Throttled as exc:
            self.metrics.failures.labels("throttled").inc()
            if counted:
                self.metrics.unlocks.labels("throttled").inc()
            raise Refusal(429, str(exc), {"Retry-After": str(exc.retry_after)}) from None
        try:
            result = await asyncio.to_thread(work)
        except WrongPassword:
            self.throttle.failed(user, remote)
            self.metrics.failures.labels("secure_mail_password").inc()
            if counted:
                self.metrics.unlocks.labels("wrong_password").inc()
            log.info("wrong Secure Mail Password", extra={"user": user, "remote": remote})
            raise Refusal(403, UNLOCK_FAILED) from None
        except BaseException:
            self.throttle.cancel(user, remote)  # not a password failure
            raise
        self.throttle.succeeded(user, remote)
        if counted:
            self.metrics.unlocks.labels("ok").inc()
        return result

    def _require_key(self, user: str) -> None:
        if not self.services.secure_mail.has_key(user):
            raise Refusal(404, NO_KEY)

    async def unlock(self, user: str, remote: str, password: str) -> dict[str, Any]:
        if not password:
            raise Refusal(400, "missing field: password")
        mail = self.services.secure_mail
        now = self.services.now()
        await self._with_password(user, remote, lambda: mail.unlock(user, password, now),
                                  counted="unlock")
        log.info("unlocked", extra={"user": user, "remote": remote})
        return self.status(user)

    async def set_mail_unlock(self, user: str, remote: str, enable: bool, password: str,
                              mail_password: str) -> dict[str, Any]:
        """Turn unlocking by mail login on (a second copy of the key under the mail
        password, which the caller has checked with the upstream) or off."""
        self._require_key(user)
        mail = self.services.secure_mail
        if not enable:
            mail.disable_mail_unlock(user)
            log.info("unlock by mail login turned off", extra={"user": user})
            return self.status(user)
        if not mail.mail_unlock:
            raise Refusal(403, MAIL_UNLOCK_FORBIDDEN)
        if not password:
            raise Refusal(400, "missing field: password")
        if not mail_password:
            raise Refusal(400, "missing field: mail_password")
        now = self.services.now()
        await self._with_password(
            user, remote, lambda: mail.enable_mail_unlock(user, password, mail_password, now))
        log.info("unlock by mail login turned on", extra={"user": user})
        return self.status(user)

    def lock(self, user: str) -> dict[str, Any]:
        self.services.secure_mail.lock(user)
        log.info("locked", extra={"user": user})
        return self.status(user)

    async def import_pkcs12(self, user: str, data: bytes, file_password: str, password: str,
                            password2: str) -> dict[str, Any]:
        new = same_twice(password, password2, "new Secure Mail Password")
        if not data:
            raise Refusal(400, "missing field: file")
        try:
            own = self.accounts.addresses(user)
            await asyncio.to_thread(
                functools.partial(self.services.secure_mail.import_pkcs12, user, data,
                                  file_password, new, own_addresses=own or None))
        except WrongPassword:
            raise Refusal(403, BAD_PKCS12_FILE) from None
        log.info("key imported", extra={"user": user})
        return await self._published(user, self.status(user))

    def certificate_address(self, user: str, email: str, domain: str | None) -> str:
        """The address a generated certificate may carry for this user: one of the addresses
        the admin gave them (`accounts`), else as the login and `mail_domain` allow."""
        owned = self.accounts.addresses(user)
        if owned:
            if not email:
                return owned[0]
            try:
                address = normalize_address(email)
            except InputError:
                raise Refusal(400, "not an e-mail address") from None
            if address not in owned:
                raise Refusal(400, "the certificate can only be for your own addresses: "
                              + ", ".join(owned))
            return address
        login = user.lower()
        if email:
            try:
                address = normalize_address(email)
            except InputError:
                raise Refusal(400, "not an e-mail address") from None
            local, _, address_domain = address.partition("@")
            if "@" in login:
                if address != login:
                    raise Refusal(400, f"the certificate can only be for {login}")
            elif local != login or (self.mail_domain is not None
                                    and address_domain != self.mail_domain.lower()):
                raise Refusal(400, "the address does not belong to this account")
            return address
        if "@" in login:
            return login
        chosen = domain or self.mail_domain
        if not chosen:
            raise Refusal(400, "give the e-mail address for the certificate")
        try:
            return normalize_address(f"{login}@{chosen}")
        except InputError:
            raise Refusal(400, "not an e-mail address") from None

    async def generate(self, user: str, email: str, key_type: str, password: str,
                       password2: str, domain: str | None = None) -> dict[str, Any]:
        new = same_twice(password, password2, "new Secure Mail Password")
        if key_type not in KEY_TYPES:
            raise Refusal(400, f"key_type must be one of {', '.join(KEY_TYPES)}")
        address = self.certificate_address(user, email, domain)
        mail = self.services.secure_mail
        if mail.ca is None:
            raise Refusal(409, "this server has no certificate authority to issue keys")
        now = self.services.now()
        await asyncio.to_thread(mail.generate, user, address, new, now, key_type=key_type)
        log.info("key generated", extra={"user": user})
        return await self._published(user, self.status(user))

    async def _published(self, user: str, status: dict[str, Any]) -> dict[str, Any]:
        """With `ldap.publish`: the user's new certificate written to the directory entry
        of each of its addresses; what happened is `status["directory"]` (the key is kept
        whatever the directory says)."""
        ldap = self.services.ldap
        if ldap is None or not ldap.config.publish:
            return status
        certificate = self.services.secure_mail.certificate(user)
        said = []
        for address in certificate_addresses(certificate):
            try:
                said.append(await asyncio.to_thread(ldap.publish, address, certificate))
            except DirectoryUnavailable as exc:
                said.append(f"not published: {exc}")
        status["directory"] = "; ".join(said) or "not published: the certificate has no address"
        return status

    async def export(self, user: str, remote: str, password: str, export_password: str,
                     export_password2: str, legacy: bool) -> bytes:
        export = same_twice(export_password, export_password2, "export password")
        if not password:
            raise Refusal(400, "missing field: password")
        self._require_key(user)
        mail = self.services.secure_mail
        data = await self._with_password(
            user, remote, lambda: mail.export_pkcs12(user, password, export, legacy))
        log.info("key exported", extra={"user": user})
        return data

    async def change_password(self, user: str, remote: str, old: str, new: str,
                              new2: str) -> dict[str, Any]:
        fresh = same_twice(new, new2, "new Secure Mail Password")
        if not old:
            raise Refusal(400, "missing field: old_password")
        self._require_key(user)
        mail = self.services.secure_mail
        await self._with_password(user, remote, lambda: mail.change_password(user, old, fresh))
        log.info("Secure Mail Password changed", extra={"user": user})
        return self.status(user)

    async def remove(self, user: str, remote: str, data: bytes,
                     file_password: str) -> dict[str, Any]:
        if not data:
            raise Refusal(400, "missing field: file")
        self._require_key(user)
        mail = self.services.secure_mail
        try:
            await self._with_password(user, remote,
                                      lambda: mail.remove(user, data, file_password))
        except Refusal as exc:
            if exc.status == 403:
                raise Refusal(403, BAD_PKCS12_FILE) from None
            raise
        log.info("key removed", extra={"user": user})
        return self.status(user)

    def contacts(self, user: str) -> list[tuple[CertificateSummary, bool]]:
        """The address book: each certificate and whether it can be used to encrypt now."""
        now = self.services.now()
        return [(e.summary, usable_for_encryption(e.certificate, now))
                for e in self.services.contacts.entries(user)]

    async def contacts_add(self, user: str, data: bytes) -> list[CertificateSummary]:
        if not data:
            raise Refusal(400, "missing field: file")
        added = await asyncio.to_thread(self.services.contacts.add, user, data)
        log.info("contacts added", extra={"user": user, "count": len(added)})
        return added

    def contacts_remove(self, user: str, address: str) -> int:
        try:
            count = self.services.contacts.remove(user, address)
        except InputError:
            raise Refusal(400, "not an e-mail address") from None
        except KeyStoreError as exc:
            raise Refusal(404, str(exc)) from None
        log.info("contact removed", extra={"user": user})
        return count
