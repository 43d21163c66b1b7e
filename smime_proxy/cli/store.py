"""`smime-proxy store encrypt|decrypt USER`: keep stored mail encrypted, or decrypt it, in
place on the mail store (issue 11, `at_rest.convert`).

```
smime-proxy store encrypt|decrypt USER --config CONFIG --mailbox M (--uid N ... | --all)
                                  [--mail-password-file F] [--password-file F]
```

USER logs in to the config's upstream IMAP server with the mail password; the key store
(the config's `data_dir`) unlocks USER's key with the Secure Mail Password, for both
actions: encrypting proves first that the key opens what it seals, so that nothing is
stored that its owner cannot read. Progress goes to standard error on a terminal; the
journal under `data_dir/at-rest/` lets the same command, run again after a crash or an
interrupt, finish the work without duplicates.

Exit codes: 0 done (messages that cannot be converted are skipped and counted), 1 refused
(wrong password or login), 2 usage error or the mail store unreachable.

May import: cli, app, accounts, at_rest, config, control.imapcheck, crypto, errors,
imap.upstream, cryptography, stdlib.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509

from smime_proxy.errors import InputError, SmimeProxyError, WrongPassword

if TYPE_CHECKING:
    from smime_proxy.at_rest.convert import Progress
    from smime_proxy.config import Config
    from smime_proxy.crypto.keyagent import KeyAgent

Build = Callable[[bytes], bytes]


class LoginRefused(WrongPassword):
    """The mail store refused the mail login: exit 1."""


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser("store", help="encrypt or decrypt messages stored on the server")
    commands = parser.add_subparsers(dest="store_command", metavar="ACTION")
    commands.required = True
    for action, text in (("encrypt", "replace plain messages by ones encrypted to USER"),
                         ("decrypt", "replace USER's encrypted messages by their plaintext")):
        command = commands.add_parser(action, help=text)
        command.add_argument("user", metavar="USER", help="the mail login")
        command.add_argument("--config", required=True, metavar="FILE",
                             help="the daemon's YAML config (upstream IMAP, data_dir)")
        command.add_argument("--mailbox", required=True, help="the folder, e.g. INBOX")
        which = command.add_mutually_exclusive_group(required=True)
        which.add_argument("--uid", dest="uids", type=int, action="append",
                           help="a message's UID (repeat for more)")
        which.add_argument("--all", action="store_true", help="every message of the folder")
        command.add_argument("--mail-password-file", metavar="FILE",
                             help="the mail password (- = first line of stdin)")
        command.add_argument("--password-file", metavar="FILE",
                             help="the Secure Mail Password (- = next line of stdin)")
        command.set_defaults(handler=_run, action=action)


def _run(args: argparse.Namespace) -> int:
    from smime_proxy.accounts import Accounts
    from smime_proxy.app import load_trust_roots, stores_of
    from smime_proxy.cli._common import read_secret
    from smime_proxy.config import load_config

    config = load_config(Path(args.config))
    mail_password = read_secret(args.mail_password_file, "Mail password: ")
    password = read_secret(args.password_file, "Secure Mail Password: ")
    user = Accounts.from_config(config).user(args.user)
    now = datetime.now(UTC)
    with stores_of(config.data_dir) as stores:
        mail = stores.secure_mail
        mail.unlock(user, password.decode("utf-8", "replace"), now)
        try:
            agent = mail.agent_for(user, now)
            build = _builder(args.action, agent, mail.certificate(user),
                             load_trust_roots(config), now)
            done = asyncio.run(_convert(args, config, mail_password.decode("utf-8", "replace"),
                                        build))
        finally:
            mail.lock(user)
    verb = "encrypted" if args.action == "encrypt" else "decrypted"
    sys.stdout.write(f"{verb} {done.done} of {done.total} messages in {args.mailbox}"
                     f" ({done.skipped} skipped)\n")
    return 0


def _builder(action: str, agent: KeyAgent, certificate: x509.Certificate,
             trust_roots: Sequence[x509.Certificate], now: datetime) -> Build:
    from smime_proxy.at_rest.forms import NotDecryptable, decrypted_form, stored_form

    if action == "decrypt":
        return lambda message: decrypted_form(message, agent, trust_roots, now)
    probe = b"Subject: probe\r\n\r\nprobe\r\n"
    sealed = stored_form(probe, certificate, wanted=True).message
    if decrypted_form(sealed, agent, trust_roots, now) != probe:
        raise InputError("the key does not open what it seals: nothing was changed")

    def encrypt(message: bytes) -> bytes:
        form = stored_form(message, certificate, wanted=True)
        if not form.encrypted:
            raise NotDecryptable(form.reason)
        return form.message

    return encrypt


async def _convert(args: argparse.Namespace, config: Config, mail_password: str,
                   build: Build) -> Progress:
    from smime_proxy.at_rest.convert import Journal, StoredMessages, convert
    from smime_proxy.control.imapcheck import authenticate
    from smime_proxy.imap.upstream import close_client, open_client

    try:
        client = await open_client(config.upstream.imap, connect_timeout=10,
                                   handshake_timeout=10)
    except (OSError, SmimeProxyError) as exc:
        raise InputError(f"cannot reach the mail store: {type(exc).__name__}") from None
    try:
        if not await authenticate(client, args.user, mail_password):
            raise LoginRefused("the mail store refused the login")
        messages = StoredMessages(client, args.mailbox)
        validity = await messages.select()
        key = f"{args.user}\0{args.mailbox}\0{validity}\0{args.action}".encode()
        journal = Journal(config.data_dir / "at-rest"
                          / f"{hashlib.sha256(key).hexdigest()[:24]}.jsonl")
        found = await messages.candidates(args.action)
        uids = found if args.all else [u for u in args.uids if u in set(found)]
        show = sys.stderr.isatty()

        def progress(state: Progress) -> None:
            if show:
                sys.stderr.write(f"\r{args.action}: {state.done}/{state.total}")
                sys.stderr.flush()

        done = await convert(messages, journal, uids, build, progress=progress)
        if show:
            sys.stderr.write("\n")
        return done
    finally:
        await close_client(client)
