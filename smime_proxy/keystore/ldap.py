"""`LdapDirectory`: recipients' certificates from an LDAP directory, and publishing a user's
own certificate to the directory entry of their address.

Lookup: the entries matching the admin's filter (RFC 4515, the address escaped) under the
base; their `userCertificate;binary` values (DER, RFC 4523) and `userSMIMECertificate`
values (a degenerate PKCS#7 SignedData, RFC 2798 9.1.2) are read; a certificate is used only
for an address it carries and when `usable_for_encryption` (valid now, emailProtection, the
right key usage, not a CA). Answers (found or not) are kept `cache_seconds`; a directory that
cannot be reached raises `DirectoryUnavailable` and is not asked again for 30 s, so a dead
directory costs one timeout, not one per message.

The protocol is ldap3's (pure Python, synchronous; writing our own LDAP client has no
reason). Callers run it in worker threads: every method is thread-safe. TLS is always
verified (ldaps:// or StartTLS; clear text only for a loopback host, as config allows), and
only the server's name, the address and fixed words reach a log line or an error.

May import: config, errors, keystore.certs, keystore.contacts, cryptography, ldap3, stdlib.
"""

from __future__ import annotations

import contextlib
import logging
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import ldap3
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars

from smime_proxy.config import LdapConfig
from smime_proxy.errors import DirectoryUnavailable
from smime_proxy.keystore.certs import certificate_addresses, fingerprint, normalize_address
from smime_proxy.keystore.contacts import usable_for_encryption

log = logging.getLogger("smime_proxy.ldap")

CERTIFICATE_ATTRIBUTE = "userCertificate;binary"
SMIME_ATTRIBUTE = "userSMIMECertificate"
DOWN_SECONDS = 30.0  # a directory that did not answer is not asked again for this long
MAX_ENTRIES = 20  # entries one address may match (more: the filter is wrong)
MAX_CACHED = 10_000


class LdapDirectory:
    """Certificates by address from one LDAP directory (see the module docstring)."""

    def __init__(self, config: LdapConfig, *, password: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._password = password
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, tuple[x509.Certificate, ...]]] = {}
        self._down_until = 0.0
        parts = re.fullmatch(r"(ldaps?)://(\[[^\]]+\]|[^:/]+)(?::(\d+))?/?", config.url)
        if parts is None:
            raise ValueError("ldap.url: expected ldap://host[:port] or ldaps://host[:port]")
        self.host = parts[2].strip("[]")
        self.implicit_tls = parts[1] == "ldaps"
        self.port = int(parts[3]) if parts[3] else (636 if self.implicit_tls else 389)

    def __repr__(self) -> str:
        return f"LdapDirectory({self.config.url}, base={self.config.base!r})"

    @classmethod
    def from_config(cls, config: LdapConfig) -> LdapDirectory:
        password = None
        if config.bind_password_file is not None:
            password = config.bind_password_file.read_text(encoding="utf-8").rstrip("\r\n")
        return cls(config, password=password)

    # --- lookup -----------------------------------------------------------------------------

    def certificates(self, address: str) -> tuple[x509.Certificate, ...]:
        """Every certificate the directory holds for `address` (cached); raises
        DirectoryUnavailable."""
        address = normalize_address(address)
        now = self._clock()
        with self._lock:
            cached = self._cache.get(address)
            if cached is not None and cached[0] > now:
                return cached[1]
            if self._down_until > now:
                raise DirectoryUnavailable(f"the LDAP directory {self.host} did not answer "
                                           "(asked again shortly)")
        try:
            found = self._search(address)
        except DirectoryUnavailable:
            with self._lock:
                self._down_until = self._clock() + DOWN_SECONDS
            raise
        with self._lock:
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
            self._cache[address] = (self._clock() + self.config.cache_seconds, found)
        return found

    def choose(self, address: str, now: datetime) -> x509.Certificate | None:
        """The newest certificate for `address` that mail may be encrypted to at `now`."""
        wanted = normalize_address(address)
        usable = [c for c in self.certificates(wanted)
                  if wanted in certificate_addresses(c) and usable_for_encryption(c, now)]
        if not usable:
            return None
        usable.sort(key=lambda c: (c.not_valid_before_utc, c.not_valid_after_utc,
                                   fingerprint(c)), reverse=True)
        return usable[0]

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
            self._down_until = 0.0

    def _search(self, address: str) -> tuple[x509.Certificate, ...]:
        query = self.config.filter.replace("{address}", escape_filter_chars(address))
        with self._connection() as connection:
            try:
                connection.search(self.config.base, query, search_scope=ldap3.SUBTREE,
                                  attributes=[CERTIFICATE_ATTRIBUTE, SMIME_ATTRIBUTE],
                                  size_limit=MAX_ENTRIES, time_limit=self.config.timeout)
            except LDAPException as exc:
                raise self._unavailable("search", exc) from None
            entries = [e for e in connection.response or () if e.get("type") == "searchResEntry"]
        found: list[x509.Certificate] = []
        for entry in entries:
            found.extend(_entry_certificates(entry.get("raw_attributes", {})))
        return tuple(found)

    # --- publishing -------------------------------------------------------------------------

    def publish(self, address: str, certificate: x509.Certificate) -> str:
        """Add `certificate` to the `userCertificate;binary` of the one entry of `address`.
        Returns what happened, in words a user may read; raises DirectoryUnavailable."""
        address = normalize_address(address)
        query = self.config.filter.replace("{address}", escape_filter_chars(address))
        der = certificate.public_bytes(serialization.Encoding.DER)
        with self._connection() as connection:
            try:
                connection.search(self.config.base, query, search_scope=ldap3.SUBTREE,
                                  attributes=[CERTIFICATE_ATTRIBUTE], size_limit=2,
                                  time_limit=self.config.timeout)
                entries = [e for e in connection.response or ()
                           if e.get("type") == "searchResEntry"]
                if len(entries) != 1:
                    return (f"not published: the directory has "
                            f"{'no entry' if not entries else 'more than one entry'} "
                            f"for {address}")
                held = entries[0].get("raw_attributes", {}).get(CERTIFICATE_ATTRIBUTE, [])
                if der in held:
                    return f"already in the directory entry of {address}"
                connection.modify(entries[0]["dn"],
                                  {CERTIFICATE_ATTRIBUTE: [(ldap3.MODIFY_ADD, [der])]})
            except LDAPException as exc:
                raise self._unavailable("publish", exc) from None
        with self._lock:
            self._cache.pop(address, None)
        log.info("certificate published to the directory", extra={"address": address})
        return f"published to the directory entry of {address}"

    # --- the connection ---------------------------------------------------------------------

    @contextlib.contextmanager
    def _connection(self) -> Iterator[ldap3.Connection]:
        """A bound connection, unbound when the block ends; raises DirectoryUnavailable.
        (ldap3's own `with` keeps a connection bound that was bound before it.)"""
        config = self.config
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, sni=self.host,
                        ca_certs_file=str(config.ca_file) if config.ca_file else None)
        server = ldap3.Server(self.host, port=self.port, use_ssl=self.implicit_tls,
                              tls=tls if (self.implicit_tls or config.starttls) else None,
                              connect_timeout=config.timeout, get_info=ldap3.NONE)
        connection = ldap3.Connection(
            server, user=config.bind_dn, password=self._password,
            receive_timeout=config.timeout, auto_bind=ldap3.AUTO_BIND_NONE,
            raise_exceptions=True, read_only=not config.publish)
        try:
            connection.open()
            if config.starttls and not self.implicit_tls:
                connection.start_tls()
            connection.bind()
        except (LDAPException, OSError) as exc:  # ssl.SSLError is an OSError
            _close(connection)
            raise self._unavailable("connect", exc) from None
        try:
            yield connection
        finally:
            _close(connection)

    def _unavailable(self, step: str, exc: BaseException) -> DirectoryUnavailable:
        # the exception's class names the failure; its text may echo the bind DN's password
        # back in some ldap3 paths, so only the class is kept
        reason = type(exc).__name__
        log.warning("LDAP directory unavailable", extra={"step": step, "reason": reason,
                                                          "server": self.host})
        return DirectoryUnavailable(
            f"the LDAP directory {self.host} cannot be used ({step}: {reason})")


def _close(connection: ldap3.Connection) -> None:
    with contextlib.suppress(LDAPException, OSError):
        connection.unbind()
    # after a failed StartTLS or bind, ldap3's unbind may leave the socket open
    sock = getattr(connection, "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


def _entry_certificates(attributes: dict[str, Any]) -> list[x509.Certificate]:
    """The certificates of one entry's raw attribute values; values that do not parse are
    skipped (a directory is not trusted to hold only well-formed data)."""
    found: list[x509.Certificate] = []
    for name, values in attributes.items():
        kind = name.lower().split(";", 1)[0]
        for value in values if isinstance(values, list) else ():
            if not isinstance(value, bytes):
                continue
            try:
                if kind == "usercertificate":
                    found.append(x509.load_der_x509_certificate(value))
                elif kind == SMIME_ATTRIBUTE.lower():
                    found.extend(pkcs7.load_der_pkcs7_certificates(value))
            except ValueError:
                log.info("LDAP: skipping a value that is not a certificate",
                         extra={"attribute": name})
    return found
