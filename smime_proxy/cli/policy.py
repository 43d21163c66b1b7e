"""`smime-proxy policy explain`: what the policy does with a message, and why.

```
smime-proxy [--data-dir DIR] policy explain --from A --to B [--to C ...]
                           [--header "X-SMIME-Sign: yes"] [--subject "text [sign]"]
                           [--user USER] [--policy FILE | --config CONFIG]
smime-proxy policy check (--policy FILE | --config CONFIG)
```

Without `--policy`, the `policy_file` of `--config` is used; with neither, the built-in
defaults. Exit 0 when the message would be sent, 1 when the policy refuses it, 2 for a bad
policy file or bad arguments.

May import: app, config, errors, keystore, policy, policy.decide, revocation, smtp.directory,
smtp.keys, stdlib.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from smime_proxy.errors import InputError
from smime_proxy.policy import Decision, Policy, decide, load_policy


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser("policy", help="the sign/encrypt policy",
                            description="Inspect the sign/encrypt policy.")
    commands = parser.add_subparsers(dest="policy_command", metavar="COMMAND")
    commands.required = True
    explain = commands.add_parser("explain", help="print the decision for a message and why")
    explain.add_argument("--from", dest="sender", required=True, help="envelope sender")
    explain.add_argument("--to", dest="recipients", action="append", required=True,
                         help="a recipient (repeat for more)")
    explain.add_argument("--header", dest="headers", action="append", default=[],
                         metavar='"NAME: VALUE"', help="a header field of the message")
    explain.add_argument("--subject", help="the Subject (for subject tags)")
    explain.add_argument("--user", help="also say, from this user's address book (then the "
                         "policy's certificate_dir and the config's LDAP directory) under "
                         "--data-dir, which certificate each recipient would get, its "
                         "revocation check and whether AES-256-GCM")
    _source_options(explain)
    explain.set_defaults(handler=_explain)
    check = commands.add_parser("check", help="validate a policy file")
    _source_options(check)
    check.set_defaults(handler=_check)


def _source_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--policy", help="policy YAML file")
    group.add_argument("--config", help="daemon config whose policy_file to use")


def _policy(args: argparse.Namespace) -> Policy:
    if args.policy:
        return load_policy(Path(args.policy))
    if args.config:
        from smime_proxy.config import load_config

        config = load_config(Path(args.config), check_files=False)
        if config.policy_file is not None:
            return load_policy(config.policy_file)
    return Policy()


def _explain(args: argparse.Namespace) -> int:
    policy = _policy(args)
    headers: list[tuple[str, str]] = []
    for item in args.headers:
        name, colon, value = str(item).partition(":")
        if not colon or not name.strip():
            raise InputError(f'--header: expected "NAME: VALUE", got {item!r}')
        headers.append((name.strip(), value.strip()))
    if args.subject is not None:
        headers.append(("Subject", args.subject))
    decision = decide(policy, args.sender, args.recipients, headers)
    source = str(policy.source) if policy.source else "built-in defaults"
    sys.stdout.write(f"policy: {source}\n")
    sys.stdout.write(decision.explain())
    if args.user:
        _certificates(args, policy, decision)
    return 1 if decision.refusal else 0


def _certificates(args: argparse.Namespace, policy: Policy, decision: Decision) -> None:
    """Per recipient: the certificate the SMTP front would encrypt to, where it comes from
    (address book, certificate_dir, or the config's LDAP directory), its revocation check
    (the config's `revocation`), and whether that recipient gets AES-256-GCM (the policy's
    list, or what their signed mail announced). The same lookup as the SMTP front's."""
    from smime_proxy.app import load_trust_roots, stores_of
    from smime_proxy.config import load_config
    from smime_proxy.errors import NoRecipientCertificate
    from smime_proxy.keystore.certs import fingerprint
    from smime_proxy.keystore.ldap import LdapDirectory
    from smime_proxy.revocation import RevocationChecker
    from smime_proxy.smtp.directory import CertificateDirectory
    from smime_proxy.smtp.keys import ServiceKeys

    if not args.data_dir:
        raise InputError("--user needs the key store: give --data-dir DIR")
    now = datetime.now(UTC)
    config = load_config(Path(args.config)) if args.config else None
    mode = config.revocation if config is not None else "off"
    sys.stdout.write(f"certificates (user {args.user}; revocation: "
                     f"{'not checked' if mode == 'off' else mode}):\n")
    with stores_of(args.data_dir, store=config.store if config is not None else None) as stores:
        keys = ServiceKeys(
            stores.secure_mail, stores.contacts, now,
            directory=CertificateDirectory.load(policy.certificate_dir),
            ldap=LdapDirectory.from_config(config.ldap) if config and config.ldap else None,
            revocation=RevocationChecker() if mode != "off" else None, revocation_mode=mode,
            issuers=load_trust_roots(config) if config is not None else ())
        for address in dict.fromkeys(a.strip().lower() for a in args.recipients):
            try:
                located = keys.locate(args.user, address)
            except NoRecipientCertificate as exc:
                why = " (the LDAP directory could not be asked)" if exc.unavailable else ""
                sys.stdout.write(f"  - {address}: no usable certificate{why}\n")
                continue
            certificate = located.certificate
            announced = keys.reads_gcm(args.user, address, certificate)
            gcm = ("yes (policy gcm_recipients)" if decision.supports_gcm(address)
                   else "yes (announced in their signed mail)" if announced else "no")
            revocation = ("" if located.revocation is None else
                          f"; revocation: {located.revocation.status} "
                          f"({located.revocation.detail})")
            sys.stdout.write(
                f"  - {address}: {located.source}, SHA-256 {fingerprint(certificate)[:16]}..., "
                f"valid until {certificate.not_valid_after_utc:%Y-%m-%d}{revocation}; "
                f"AES-256-GCM: {gcm}\n")


def _check(args: argparse.Namespace) -> int:
    policy = _policy(args)
    source = str(policy.source) if policy.source else "built-in defaults"
    sys.stdout.write(f"{source}: OK, {len(policy.rules)} rules\n")
    return 0
