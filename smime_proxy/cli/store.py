"""`smime-proxy store encrypt|decrypt USER`: keep stored mail encrypted, or decrypt it, in
place on the mail store (issue 11, `at_rest.convert`).

```
smime-proxy store encrypt|decrypt USER --config CONFIG --mailbox M (--uid N ... | --all)
                                  [--mail-password-file F] [--password-file F]
```

USER logs in to the config's upstream IMAP server with the mail password; the key store
(the config's `store:`, SQLite in `data_dir` by default) unlocks USER's key with the Secure
Mail Password, for both actions: encrypting proves first that the key opens what it seals,
so that nothing is stored that its owner cannot read. Progress goes to standard error on a
terminal; the journal under `data_dir/at-rest/` lets the same command, run again after a
crash or an interrupt, finish the work without duplicates.

Exit codes: 0 done (messages that cannot be converted are skipped and counted), 1 refused
(wrong password or login), 2 usage error or the mail store unreachable.

May import: cli, app, accounts, at_rest, config, stdlib.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smime_proxy.at_rest.convert import Progress


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
    from smime_proxy.at_rest.operation import builder, run_operation
    from smime_proxy.cli._common import read_secret
    from smime_proxy.config import load_config

    config = load_config(Path(args.config))
    mail_password = read_secret(args.mail_password_file, "Mail password: ")
    password = read_secret(args.password_file, "Secure Mail Password: ")
    user = Accounts.from_config(config).user(args.user)
    now = datetime.now(UTC)
    show = sys.stderr.isatty()

    def progress(state: Progress) -> None:
        if show:
            sys.stderr.write(f"\r{args.action} {progress_bar(state.done, state.total)}")
            sys.stderr.flush()

    with stores_of(config.data_dir, store=config.store) as stores:
        mail = stores.secure_mail
        mail.unlock(user, password.decode("utf-8", "replace"), now)
        try:
            build = builder(args.action, mail.agent_for(user, now), mail.certificate(user),
                            load_trust_roots(config), now)
            done = asyncio.run(run_operation(
                config.upstream.imap, config.data_dir / "at-rest", args.user,
                mail_password.decode("utf-8", "replace"), args.mailbox, args.action,
                None if args.all else args.uids, build, progress=progress))
        finally:
            mail.lock(user)
    if show:
        sys.stderr.write("\n")
    verb = "encrypted" if args.action == "encrypt" else "decrypted"
    sys.stdout.write(f"{verb} {done.done} of {done.total} messages in {args.mailbox}"
                     f" ({done.skipped} skipped)\n")
    return 0


def progress_bar(done: int, total: int, width: int = 30) -> str:
    """`[#########.....................]  30/100` (a terminal's progress line)."""
    filled = width if total <= 0 else min(width, width * done // total)
    return f"[{'#' * filled}{'.' * (width - filled)}] {done:>{len(str(total))}}/{total}"
