"""Interop test support: a test PKI written to disk, and a throw-away GNUPGHOME for gpgsm.

Used by tests/interop/test_openssl_interop.py and tests/interop/test_gpgsm_interop.py.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from smime_proxy.crypto.keyagent import InProcessKeyAgent
from support.cmsutil import Run, run_tool
from support.pki import NOW, Identity, KeyKind, make_ca, make_user

# name -> (address, key kind)
USERS: dict[str, tuple[str, KeyKind]] = {
    "rsa": ("alice@example.test", "rsa"),
    "rsa2": ("bob@example.test", "rsa"),
    "p256": ("carol@example.test", "p256"),
    "p384": ("dave@example.test", "p384"),
}

AT_ISO = NOW.isoformat()
AT_EPOCH = str(int(NOW.timestamp()))


@dataclass
class Pki:
    """Root -> intermediate -> users, with every file a tool may want."""

    dir: Path
    root: Identity
    inter: Identity
    users: dict[str, Identity] = field(default_factory=dict)

    @property
    def root_pem(self) -> Path:
        return self.dir / "root.pem"

    @property
    def inter_pem(self) -> Path:
        return self.dir / "inter.pem"

    def email(self, name: str) -> str:
        return USERS[name][0]

    def cert(self, name: str) -> Path:
        return self.dir / f"{name}.crt.pem"

    def key(self, name: str) -> Path:
        return self.dir / f"{name}.key.pem"

    def bundle(self, name: str) -> Path:
        """Key + certificate + chain in one PEM (what `--p12` also accepts)."""
        return self.dir / f"{name}.bundle.pem"

    def p12(self, name: str) -> Path:
        """PKCS#12 with password `PKCS12_PASSWORD`, PBE-SHA1-3DES (gpgsm can import it)."""
        return self.dir / f"{name}.p12"

    def write_p12(self, name: str) -> None:
        """(Re)write `p12(name)`: every call draws a new salt and IV."""
        ident = self.users[name]
        legacy = (
            serialization.PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(2048)
            .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
            .hmac_hash(hashes.SHA1())  # noqa: S303 - the only MAC gpgsm 2.2 imports
            .build(PKCS12_PASSWORD)
        )
        self.p12(name).write_bytes(
            pkcs12.serialize_key_and_certificates(
                name.encode(), ident.key, ident.cert, [self.inter.cert, self.root.cert], legacy
            )
        )

    def agent(self, name: str) -> InProcessKeyAgent:
        ident = self.users[name]
        return InProcessKeyAgent(ident.key, ident.cert, tuple(ident.chain))


PKCS12_PASSWORD = b"interop-pw"


def make_pki(directory: Path, names: Sequence[str] = tuple(USERS)) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    root = make_ca("Interop Root CA")
    inter = make_ca("Interop Intermediate CA", issuer=root)
    pki = Pki(directory, root, inter)
    pki.root_pem.write_bytes(root.cert_pem())
    pki.inter_pem.write_bytes(inter.cert_pem())
    for name in names:
        address, kind = USERS[name]
        ident = make_user(address, inter, kind=kind)
        pki.users[name] = ident
        pki.cert(name).write_bytes(ident.cert_pem())
        pki.key(name).write_bytes(ident.key_pem())
        ident.write_pem_bundle(pki.bundle(name))
        pki.write_p12(name)
    (directory / "password.txt").write_bytes(PKCS12_PASSWORD + b"\n")
    return pki


def message_for(pki: Pki, name: str, body: bytes = b"Hello from the interop tests.\r\n") -> bytes:
    sender = pki.email(name)
    return (
        f"From: {name.upper()} <{sender}>\r\nTo: Rcpt <rcpt@example.test>\r\n"
        "Subject: interop\r\nDate: Mon, 01 Jun 2026 12:00:00 +0000\r\n"
        "Message-ID: <interop@example.test>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
    ).encode() + body


ENTITY = b"Content-Type: text/plain; charset=utf-8\r\n\r\nHello from openssl and gpgsm.\r\n"
ENTITY_TEXT = b"Hello from openssl and gpgsm."


# --- gpgsm ------------------------------------------------------------------------------------


def have_gpgsm() -> bool:
    return shutil.which("gpgsm") is not None and shutil.which("gpgconf") is not None


@dataclass
class Gpgsm:
    home: Path

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["GNUPGHOME"] = str(self.home)
        return env

    def run(self, *args: str, stdin: bytes = b"", passphrase: bytes | None = None) -> Run:
        argv = [
            "gpgsm",
            "--batch",
            "--no-tty",
            "--pinentry-mode",
            "loopback",
            "--disable-crl-checks",
            "--disable-dirmngr",
            "--status-fd",
            "2",
        ]
        if passphrase is not None:
            argv += ["--passphrase-fd", "0"]
            stdin = passphrase + b"\n" + stdin
        proc = subprocess.run(
            [*argv, *args],
            input=stdin,
            capture_output=True,
            env=self.env(),
            timeout=120,
            check=False,
        )
        return Run(proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str, stdin: bytes = b"", passphrase: bytes | None = None) -> Run:
        res = self.run(*args, stdin=stdin, passphrase=passphrase)
        assert res.returncode == 0, (
            f"gpgsm {' '.join(args)} failed: {res.stderr.decode(errors='replace')}"
        )
        return res


@contextlib.contextmanager
def gpgsm_home(base: Path, pki: Pki, secret_keys: Sequence[str] = ()) -> Iterator[Gpgsm]:
    """A GNUPGHOME trusting `pki`'s root, holding the given users' private keys."""
    home = base / "gnupghome"
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    (home / "gpg-agent.conf").write_text("allow-loopback-pinentry\n")
    fingerprint = pki.root.cert.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303 - trustlist
    pretty = ":".join(fingerprint[i : i + 2] for i in range(0, len(fingerprint), 2))
    (home / "trustlist.txt").write_text(f"{pretty} S\n")
    gpg = Gpgsm(home)
    try:
        # Launch the agent before any passphrase is needed: right after an autostart, gpgsm
        # 2.2's loopback passphrase inquiry was seen to fail once (PKCS#12 "decryption failed").
        run_tool_env(["gpgconf", "--launch", "gpg-agent"], gpg.env())
        gpg.ok("--import", str(pki.root_pem), str(pki.inter_pem))
        for name in pki.users:
            gpg.ok("--import", str(pki.cert(name)))
        for name in secret_keys:
            _import_secret(gpg, pki, name)
        yield gpg
    finally:
        run_tool_env(["gpgconf", "--kill", "gpg-agent"], gpg.env())


def _import_secret(gpg: Gpgsm, pki: Pki, name: str, attempts: int = 4) -> None:
    """Import the user's PKCS#12 into gpgsm.

    gpgsm 2.2.40 fails to parse about 1 in 50 PKCS#12 files that OpenSSL and pyca read
    ("error parsing or decrypting the PKCS#12 file"), every time for a given file; the same
    key written again with a new salt and IV imports (measured: 3 failing files of 150, each
    imported 5 of 5 times once rewritten). So a failure rewrites the file; a real problem
    (key, certificate, password) still fails every attempt. The agent is restarted too: right
    after an autostart, its loopback passphrase hand-over was once seen to fail.
    """
    for _ in range(attempts - 1):
        if gpg.run("--import", str(pki.p12(name)), passphrase=PKCS12_PASSWORD).returncode == 0:
            return
        pki.write_p12(name)
        run_tool_env(["gpgconf", "--kill", "gpg-agent"], gpg.env())
        run_tool_env(["gpgconf", "--launch", "gpg-agent"], gpg.env())
    gpg.ok("--import", str(pki.p12(name)), passphrase=PKCS12_PASSWORD)


def run_tool_env(args: Sequence[str], env: dict[str, str]) -> None:
    subprocess.run(list(args), env=env, capture_output=True, timeout=60, check=False)


__all__ = [
    "AT_EPOCH",
    "AT_ISO",
    "ENTITY",
    "ENTITY_TEXT",
    "NOW",
    "PKCS12_PASSWORD",
    "Gpgsm",
    "Pki",
    "gpgsm_home",
    "have_gpgsm",
    "make_pki",
    "message_for",
    "run_tool",
]
