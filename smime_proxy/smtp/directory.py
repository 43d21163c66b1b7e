"""Recipients' certificates from an admin-managed directory of PEM/DER files.

The second source of recipient certificates after the sender's own address book (the
policy file's `certificate_dir`). Loaded when the front starts and on every policy reload
(SIGHUP). Files that are not certificates are skipped (logged by name, never content); CA
certificates and certificates without an e-mail address are ignored.

May import: errors, keystore, cryptography, stdlib.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from cryptography import x509

from smime_proxy.errors import ImportRejected, InputError
from smime_proxy.keystore.certs import certificate_addresses, fingerprint, load_certificates
from smime_proxy.keystore.contacts import usable_for_encryption

log = logging.getLogger("smime_proxy.smtp")
SUFFIXES = (".pem", ".crt", ".cer", ".der")
MAX_FILES = 10_000


class CertificateDirectory:
    def __init__(self, by_address: dict[str, list[x509.Certificate]],
                 source: Path | None = None) -> None:
        self.by_address = by_address
        self.source = source

    def __repr__(self) -> str:
        return f"CertificateDirectory({self.source}, addresses={len(self.by_address)})"

    @classmethod
    def load(cls, directory: Path | None) -> CertificateDirectory:
        by_address: dict[str, list[x509.Certificate]] = {}
        if directory is None:
            return cls(by_address)
        files = sorted(p for p in directory.iterdir()
                       if p.is_file() and p.suffix.lower() in SUFFIXES)[:MAX_FILES]
        for path in files:
            try:
                certificates = load_certificates(path.read_bytes())
            except (ImportRejected, InputError, OSError):
                log.warning("certificate_dir: skipping %s (not a readable certificate)",
                            path.name)
                continue
            for certificate in certificates:
                try:
                    is_ca = certificate.extensions.get_extension_for_class(
                        x509.BasicConstraints).value.ca
                except x509.ExtensionNotFound:
                    is_ca = False
                if is_ca:
                    continue
                for address in certificate_addresses(certificate):
                    by_address.setdefault(address, []).append(certificate)
        return cls(by_address, directory)

    def choose(self, address: str, now: datetime) -> x509.Certificate | None:
        """The best usable certificate for `address` (lower-case addr-spec) at `now`."""
        usable = [c for c in self.by_address.get(address, ()) if usable_for_encryption(c, now)]
        if not usable:
            return None
        usable.sort(key=lambda c: (c.not_valid_before_utc, c.not_valid_after_utc,
                                   fingerprint(c)), reverse=True)
        return usable[0]
