"""The `Keys` port of the submission core over the key store, the address book, the
admin's certificate directory and the LDAP directory, with a short-lived cache of
recipient certificate choices.

May import: accounts, config, crypto, errors, keystore, revocation, smtp, cryptography, stdlib.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from smime_proxy.accounts import Accounts
from smime_proxy.config import Revocation
from smime_proxy.crypto.keyagent import KeyAgent
from smime_proxy.errors import DirectoryUnavailable, NoRecipientCertificate, NoSuchKey
from smime_proxy.keystore.contacts import Contacts
from smime_proxy.keystore.ldap import LdapDirectory
from smime_proxy.keystore.service import SecureMail
from smime_proxy.revocation import RevocationChecker, RevocationResult, find_issuer
from smime_proxy.smtp.directory import CertificateDirectory

_CacheKey = tuple[str, str, datetime]
log = logging.getLogger("smime_proxy.smtp")


@dataclass(frozen=True)
class Located:
    """A recipient's certificate, where it was found, and its revocation check (None: not
    checked)."""

    certificate: x509.Certificate
    source: str  # "address book", "certificate_dir" or "LDAP directory"
    revocation: RevocationResult | None = None


class CertificateCache:
    """Recipient certificate choices (and misses) for `ttl` seconds: choosing parses every
    candidate certificate (~0.5 ms per recipient). An address-book change is seen after at
    most `ttl` seconds."""

    def __init__(self, ttl: float = 10.0, size: int = 4096) -> None:
        self.ttl = ttl
        self.size = size
        self._entries: dict[_CacheKey, tuple[float, x509.Certificate | list[str]]] = {}

    def get(self, key: _CacheKey) -> x509.Certificate | list[str] | None:
        """The certificate, the addresses of a miss, or None when not cached."""
        entry = self._entries.get(key)
        if entry is None or time.monotonic() > entry[0]:
            return None
        return entry[1]

    def put(self, key: _CacheKey, value: x509.Certificate | list[str]) -> None:
        if len(self._entries) >= self.size:
            self._entries.clear()
        self._entries[key] = (time.monotonic() + self.ttl, value)

    def clear(self) -> None:
        self._entries.clear()


class ServiceKeys:
    """The `Keys` port of the submission core over the key store and address book."""

    def __init__(self, secure_mail: SecureMail, contacts: Contacts, now: datetime,
                 cache: CertificateCache | None = None,
                 directory: CertificateDirectory | None = None,
                 accounts: Accounts | None = None,
                 ldap: LdapDirectory | None = None,
                 revocation: RevocationChecker | None = None,
                 revocation_mode: Revocation = "off",
                 issuers: Sequence[x509.Certificate] = ()) -> None:
        self.secure_mail = secure_mail
        self.accounts = accounts if accounts is not None else Accounts()
        self.contacts = contacts
        self.now = now
        self.cache = cache
        self.directory = directory
        self.ldap = ldap
        self.revocation = revocation
        self.revocation_mode = revocation_mode
        self.issuers = issuers  # where a recipient certificate's issuer is looked for

    def may_sign_as(self, user: str, address: str | None) -> bool:
        """Whether `user` may sign mail from `address`: one of the addresses the admin gave
        them (any address when the admin gave none)."""
        owned = self.accounts.addresses(user)
        return not owned or (address is not None and address.lower() in owned)

    def signer(self, user: str) -> KeyAgent:
        if not self.secure_mail.has_key(user):
            raise NoSuchKey("no key")
        return self.secure_mail.agent_for(user, self.now)

    def own_certificate(self, user: str) -> x509.Certificate | None:
        if not self.secure_mail.has_key(user):
            return None
        return self.secure_mail.certificate(user)

    def locate(self, user: str, address: str) -> Located:
        """The certificate to encrypt to `address` and where it came from: the user's
        address book first, then the admin's certificate directory, then the LDAP
        directory; with revocation checking on, a revoked certificate (or, under hard-fail,
        one whose status is unknown) is passed over for the next source. Raises
        NoRecipientCertificate (`unavailable` when the LDAP directory could not be asked)."""
        wanted = address.strip().lower()
        try:
            own: x509.Certificate | None = self.contacts.choose_certificate(user, address,
                                                                            self.now)
            miss = NoRecipientCertificate([wanted])
        except NoRecipientCertificate as exc:
            # its addresses are the ones safe to echo (an invalid address is not repeated)
            own, miss = None, exc
        for certificate, source in self._candidates(own, miss):
            result = self._revocation_of(certificate)
            if result is None or result.status == "good" or (
                    result.status == "unknown" and self.revocation_mode == "soft-fail"):
                return Located(certificate, source, result)
            log.info("recipient certificate not used",
                     extra={"address": miss.addresses[0] if miss.addresses else "",
                            "reason": result.detail})
        raise miss

    def _candidates(self, own: x509.Certificate | None, miss: NoRecipientCertificate
                    ) -> Iterator[tuple[x509.Certificate, str]]:
        if own is not None:
            yield own, "address book"
        if len(miss.addresses) != 1 or "@" not in miss.addresses[0]:
            return  # not one plain address: no directory is asked
        address = miss.addresses[0]
        if self.directory is not None:
            found = self.directory.choose(address, self.now)
            if found is not None:
                yield found, "certificate_dir"
        if self.ldap is not None:
            try:
                found = self.ldap.choose(address, self.now)
            except DirectoryUnavailable:
                raise NoRecipientCertificate([address], unavailable=True) from None
            if found is not None:
                yield found, "LDAP directory"

    def _revocation_of(self, certificate: x509.Certificate) -> RevocationResult | None:
        if self.revocation is None or self.revocation_mode == "off":
            return None
        issuer = find_issuer(certificate, self.issuers)
        if issuer is None:
            return RevocationResult("unknown", "none", "the issuer is not a trust root")
        return self.revocation.check(certificate, issuer, self.now)

    def _lookup(self, user: str, address: str) -> x509.Certificate:
        return self.locate(user, address).certificate

    def reads_gcm(self, user: str, address: str, certificate: x509.Certificate) -> bool:
        return self.contacts.reads_gcm(user, address, certificate)

    def encryption_method(self, user: str) -> str | None:
        return self.secure_mail.encryption_method(user)

    def recipient_certificate(self, user: str, address: str) -> x509.Certificate:
        if self.cache is None:
            return self._lookup(user, address)
        key = (user, address.lower(), self.now.replace(second=0, microsecond=0))
        value = self.cache.get(key)
        if value is None:
            try:
                value = self._lookup(user, address)
            except NoRecipientCertificate as exc:
                if exc.unavailable:  # not remembered: the directory may be back soon
                    raise
                value = list(exc.addresses)
            self.cache.put(key, value)
        if isinstance(value, list):
            raise NoRecipientCertificate(value)
        return value
