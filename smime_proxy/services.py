"""The `Services` protocol: what the I/O shells (IMAP, SMTP, control) may use of the daemon.

The composition root (`app.build_services`) builds the concrete object; the shells only
name this protocol, so they never import `app` and never build a store themselves.

May import: config, keystore, metrics, revocation, cryptography, stdlib.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from cryptography import x509

from smime_proxy.config import Config
from smime_proxy.keystore.ca import ServerCA
from smime_proxy.keystore.contacts import Contacts
from smime_proxy.keystore.ldap import LdapDirectory
from smime_proxy.keystore.service import SecureMail
from smime_proxy.metrics import MailMetrics
from smime_proxy.revocation import RevocationChecker


class Services(Protocol):
    """The key store, address book, trust roots and clock a front works with."""

    @property
    def config(self) -> Config: ...

    @property
    def secure_mail(self) -> SecureMail: ...

    @property
    def contacts(self) -> Contacts: ...

    @property
    def trust_roots(self) -> tuple[x509.Certificate, ...]: ...

    @property
    def ca(self) -> ServerCA | None: ...

    @property
    def reload_hooks(self) -> list[Callable[[], None]]:
        """Called on SIGHUP; a front appends what it can reload (e.g. the policy file)."""
        ...

    def now(self) -> datetime:
        """The clock (UTC); tests inject their own."""
        ...

    @property
    def ldap(self) -> LdapDirectory | None:
        """The LDAP directory of recipients' certificates, if the config names one."""
        ...

    @property
    def revocation(self) -> RevocationChecker | None:
        """The revocation checker, when the config's `revocation` is not off."""
        ...

    @property
    def metrics(self) -> MailMetrics:
        """The mail fronts' counters (served at the control endpoint's /metrics)."""
        ...
