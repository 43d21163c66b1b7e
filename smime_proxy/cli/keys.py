"""`smime-proxy keys|ca|contacts ...`: the key store from the command line.

```
smime-proxy ca init [--name "..."] [--if-missing]   smime-proxy ca show [--pem]
smime-proxy keys import USER FILE.p12 --file-password-file F --password-file NEWPW
smime-proxy keys generate USER --email ADDR --password-file F
smime-proxy keys export USER OUT.p12 --password-file SECUREPW --file-password-file EXPORTPW
                                                                                    [--legacy]
smime-proxy keys passwd USER --password-file OLD --new-password-file NEW
smime-proxy keys remove USER --p12 FILE --file-password-file F
smime-proxy keys show USER
smime-proxy contacts add USER CERT.pem | contacts list USER | contacts remove USER EMAIL
```

All take the global `--data-dir DIR` (env SMIME_PROXY_DATA_DIR), and each command takes
`--config FILE` (env SMIME_PROXY_CONFIG): the daemon's config, whose `store:` then says where
the keys are (SQLite in data_dir, or PostgreSQL) and whose `data_dir` is used unless
`--data-dir` names one. Passwords come from files
(`-` = one line of standard input) or, with no option and a terminal, from a prompt; never
from argv. The key store uses the production KDF cost (600,000 PBKDF2 iterations) always.

May import: app, cli, config, errors, keystore, stdlib.
"""

from __future__ import annotations

import argparse
import functools
import os
import sqlite3
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding

from smime_proxy.app import Stores, stores_of
from smime_proxy.cli._common import read_file, read_secret
from smime_proxy.config import Config, load_config
from smime_proxy.errors import InputError, KeyStoreError
from smime_proxy.keystore.ca import DEFAULT_CA_NAME, ServerCA
from smime_proxy.keystore.certs import CertificateSummary

Handler = Callable[[argparse.Namespace], int]


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add the `keys`, `ca` and `contacts` groups to the top-level parser."""
    _register_ca(sub)
    _register_keys(sub)
    _register_contacts(sub)


# --- plumbing ---------------------------------------------------------------------------


def _group(sub: argparse._SubParsersAction[Any], name: str, help_text: str) -> Any:
    parser = sub.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)
    commands = parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND")
    commands.required = True
    return commands


def _leaf(commands: Any, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A command parser that takes no abbreviated options: `--password x` must not be taken
    for `--password-file x` (a password typed into argv, then echoed as a file name)."""
    parser: argparse.ArgumentParser = commands.add_parser(name, allow_abbrev=False, **kwargs)
    parser.add_argument("--config", metavar="FILE", default=os.environ.get("SMIME_PROXY_CONFIG"),
                        help="the daemon's YAML config: its key store (store:) and data_dir "
                             "(env SMIME_PROXY_CONFIG)")
    return parser


def _guarded(handler: Handler) -> Handler:
    """Map environment failures to our errors: one line on stderr, never a traceback."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except sqlite3.Error as exc:
            raise KeyStoreError(f"key store error: {exc}") from None
        except BrokenPipeError:
            raise  # the reader went away (`| head`): main ends quietly
        except OSError as exc:
            raise InputError(f"{exc.filename or 'I/O'}: {exc.strerror or exc}") from None

    return run


def _config(args: argparse.Namespace) -> Config | None:
    """The `--config` file, loaded once per command (None without one)."""
    path: str | None = getattr(args, "config", None)
    if not path:
        return None
    loaded: Config | None = getattr(args, "loaded_config", None)
    if loaded is None:
        loaded = load_config(path)
        args.loaded_config = loaded
    return loaded


def _data_dir(args: argparse.Namespace) -> str:
    data_dir: str | None = args.data_dir
    if not data_dir:
        config = _config(args)
        if config is not None:
            return str(config.data_dir)
        raise InputError("no data directory: give --data-dir DIR or set SMIME_PROXY_DATA_DIR "
                         "(or --config FILE)")
    return data_dir


def _stores(args: argparse.Namespace, ca: ServerCA | None = None) -> AbstractContextManager[Stores]:
    config = _config(args)
    return stores_of(_data_dir(args), ca=ca,  # production KDF cost, always
                     store=None if config is None else config.store)


def _now() -> datetime:
    return datetime.now(UTC)


def _safe(text: str) -> str:
    """Printable text only (a certificate subject may hold control characters)."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def _time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _print_summary(summary: CertificateSummary, *, prefix: str = "") -> None:
    _out(f"{prefix}subject: {_safe(summary.subject)}")
    _out(f"{prefix}addresses: {', '.join(summary.addresses) or '(none)'}")
    _out(f"{prefix}issuer: {_safe(summary.issuer)}")
    _out(f"{prefix}serial: {summary.serial}")
    _out(f"{prefix}not before: {_time(summary.not_before)}")
    _out(f"{prefix}not after: {_time(summary.not_after)}")
    _out(f"{prefix}key: {summary.key_type} {summary.key_size} bits")
    _out(f"{prefix}fingerprint (SHA-256): {summary.fingerprint}")


def _write_private(path: str, data: bytes) -> None:
    """Write a file that holds a private key: mode 0600, or to stdout for `-`."""
    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(fd, 0o600)
            handle.write(data)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror}") from None


# --- ca ---------------------------------------------------------------------------------


def _register_ca(sub: argparse._SubParsersAction[Any]) -> None:
    commands = _group(sub, "ca", "the server CA that issues user certificates")
    init = _leaf(commands, "init", help="create the server CA in the data directory")
    init.add_argument("--name", default=DEFAULT_CA_NAME, help="the CA's common name")
    init.add_argument("--if-missing", action="store_true",
                      help="keep an existing CA (exit 0) instead of refusing")
    init.set_defaults(handler=_guarded(_ca_init))
    show = _leaf(commands, "show", help="describe the server CA certificate")
    show.add_argument("--pem", action="store_true",
                      help="print the certificate in PEM (to give mail clients to trust)")
    show.set_defaults(handler=_guarded(_ca_show))


def _ca_init(args: argparse.Namespace) -> int:
    data_dir = _data_dir(args)
    if args.if_missing and ServerCA.exists(data_dir):
        _out(f"the server CA exists in {ServerCA.directory(data_dir)}: kept")
        _print_summary(CertificateSummary.of(ServerCA.load(data_dir).certificate))
        return 0
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    ca = ServerCA.init(data_dir, _now(), name=args.name)
    _out(f"created the server CA in {ServerCA.directory(data_dir)}")
    _print_summary(CertificateSummary.of(ca.certificate))
    return 0


def _ca_show(args: argparse.Namespace) -> int:
    ca = ServerCA.load(_data_dir(args))
    if args.pem:
        sys.stdout.write(ca.certificate.public_bytes(Encoding.PEM).decode("ascii"))
        return 0
    _print_summary(CertificateSummary.of(ca.certificate))
    return 0


# --- keys -------------------------------------------------------------------------------


def _register_keys(sub: argparse._SubParsersAction[Any]) -> None:
    commands = _group(sub, "keys", "users' private keys and certificates")

    imp = _leaf(commands, "import", help="import a PKCS#12 file as USER's key")
    imp.add_argument("user")
    imp.add_argument("file", metavar="FILE.p12")
    imp.add_argument("--file-password-file", metavar="F", help="password of FILE.p12")
    imp.add_argument("--password-file", metavar="NEWPW", help="the new Secure Mail Password")
    imp.set_defaults(handler=_guarded(_keys_import))

    gen = _leaf(commands, "generate", help="new key + certificate from the server CA")
    gen.add_argument("user")
    gen.add_argument("--email", required=True, metavar="ADDR")
    gen.add_argument("--password-file", metavar="F", help="the Secure Mail Password")
    gen.add_argument(
        "--key-type",
        default="rsa2048",
        choices=("rsa2048", "rsa3072", "rsa4096", "ec-p256", "ec-p384"),
        help="default rsa2048 (readable by every S/MIME client)",
    )
    gen.set_defaults(handler=_guarded(_keys_generate))

    exp = _leaf(commands, "export", help="write USER's key as PKCS#12")
    exp.add_argument("user")
    exp.add_argument("out", metavar="OUT.p12")
    exp.add_argument("--password-file", metavar="SECUREPW", help="the Secure Mail Password")
    exp.add_argument("--file-password-file", metavar="EXPORTPW", help="password of OUT.p12")
    exp.add_argument(
        "--legacy", action="store_true", help="PBE-SHA1-3DES + SHA-1 MAC (gpgsm, old Outlook)"
    )
    exp.set_defaults(handler=_guarded(_keys_export))

    pw = _leaf(commands, "passwd", help="change USER's Secure Mail Password")
    pw.add_argument("user")
    pw.add_argument("--password-file", metavar="OLD", help="the current password")
    pw.add_argument("--new-password-file", metavar="NEW", help="the new password")
    pw.set_defaults(handler=_guarded(_keys_passwd))

    rm = _leaf(commands, "remove", help="delete USER's key (proof: the same key as PKCS#12)")
    rm.add_argument("user")
    rm.add_argument("--p12", required=True, metavar="FILE", help="PKCS#12 holding the same key")
    rm.add_argument("--file-password-file", metavar="F", help="password of FILE")
    rm.set_defaults(handler=_guarded(_keys_remove))

    show = _leaf(commands, "show", help="describe USER's certificate (never the key)")
    show.add_argument("user")
    show.set_defaults(handler=_guarded(_keys_show))


def _keys_import(args: argparse.Namespace) -> int:
    data = read_file(args.file, "PKCS#12 file")
    file_password = read_secret(args.file_password_file, "password of the PKCS#12 file: ")
    new_password = read_secret(args.password_file, "new Secure Mail Password: ", confirm=True)
    with _stores(args) as stores:
        certificate = stores.secure_mail.import_pkcs12(
            args.user, data, file_password, new_password
        )
    summary = CertificateSummary.of(certificate)
    _out(f"imported the key of {args.user}")
    _print_summary(summary)
    return 0


def _keys_generate(args: argparse.Namespace) -> int:
    password = read_secret(args.password_file, "new Secure Mail Password: ", confirm=True)
    data_dir = _data_dir(args)
    ca = ServerCA.load(data_dir)
    with _stores(args, ca) as stores:
        certificate = stores.secure_mail.generate(
            args.user, args.email, password, _now(), key_type=args.key_type
        )
    _out(f"generated a key and certificate for {args.user}")
    _print_summary(CertificateSummary.of(certificate))
    return 0


def _keys_export(args: argparse.Namespace) -> int:
    password = read_secret(args.password_file, "Secure Mail Password: ")
    export_password = read_secret(
        args.file_password_file, "password for the exported file: ", confirm=True
    )
    with _stores(args) as stores:
        data = stores.secure_mail.export_pkcs12(
            args.user, password, export_password, legacy=args.legacy
        )
    _write_private(args.out, data)
    if args.out != "-":
        form = "legacy PBE-SHA1-3DES" if args.legacy else "PBES2 AES-256"
        _out(f"exported the key of {args.user} to {args.out} ({form})")
    return 0


def _keys_passwd(args: argparse.Namespace) -> int:
    old = read_secret(args.password_file, "current Secure Mail Password: ")
    new = read_secret(args.new_password_file, "new Secure Mail Password: ", confirm=True)
    with _stores(args) as stores:
        stores.secure_mail.change_password(args.user, old, new)
    _out(f"changed the Secure Mail Password of {args.user}")
    return 0


def _keys_remove(args: argparse.Namespace) -> int:
    data = read_file(args.p12, "PKCS#12 file")
    file_password = read_secret(args.file_password_file, "password of the PKCS#12 file: ")
    with _stores(args) as stores:
        stores.secure_mail.remove(args.user, data, file_password)
    _out(f"removed the key of {args.user}")
    return 0


def _keys_show(args: argparse.Namespace) -> int:
    with _stores(args) as stores:
        info = stores.secure_mail.key_info(args.user)
    _out(f"user: {_safe(info.user)}")
    _print_summary(info.certificate)
    for number, issuer in enumerate(info.chain, 1):
        _out(f"chain {number}: {_safe(issuer.subject)} (until {_time(issuer.not_after)})")
    return 0


# --- contacts ---------------------------------------------------------------------------


def _register_contacts(sub: argparse._SubParsersAction[Any]) -> None:
    commands = _group(sub, "contacts", "users' address books of recipients' certificates")
    add = _leaf(commands, "add", help="add a recipient certificate (PEM or DER)")
    add.add_argument("user")
    add.add_argument("certificate", metavar="CERT.pem")
    add.set_defaults(handler=_guarded(_contacts_add))
    lst = _leaf(commands, "list", help="list USER's address book")
    lst.add_argument("user")
    lst.set_defaults(handler=_guarded(_contacts_list))
    rm = _leaf(commands, "remove", help="forget EMAIL's certificates")
    rm.add_argument("user")
    rm.add_argument("email")
    rm.set_defaults(handler=_guarded(_contacts_remove))


def _contacts_add(args: argparse.Namespace) -> int:
    data = read_file(args.certificate, "certificate file")
    with _stores(args) as stores:
        added = stores.contacts.add(args.user, data)
    for summary in added:
        _out(f"added {', '.join(summary.addresses)}: {_safe(summary.subject)}")
    return 0


def _contacts_list(args: argparse.Namespace) -> int:
    with _stores(args) as stores:
        entries = stores.contacts.entries(args.user)
    for entry in entries:
        s = entry.summary
        _out(
            f"{', '.join(s.addresses)}\t{_time(s.not_before)}\t{_time(s.not_after)}\t"
            f"{s.key_type} {s.key_size}\t{s.fingerprint}\t{_safe(s.subject)}"
        )
    return 0


def _contacts_remove(args: argparse.Namespace) -> int:
    with _stores(args) as stores:
        count = stores.contacts.remove(args.user, args.email)
    _out(f"removed {count} certificate(s) for {args.email.strip().lower()}")
    return 0
