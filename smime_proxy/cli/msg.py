"""`smime-proxy msg sign|encrypt|decrypt|verify`: S/MIME on files and pipes.

Messages come on standard input and go to standard output as bytes. `--p12` takes a PKCS#12
file or a PEM file with the private key and certificate(s); its password comes from
`--password-file` (`-` for standard input) or a prompt, never from the command line.

May import: cli, crypto, errors, keystore, mime, smime, cryptography, stdlib.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any, cast

from cryptography import x509

from smime_proxy.cli._common import read_file, read_secret, read_stdin, write_stdout
from smime_proxy.crypto.keyagent import InProcessKeyAgent
from smime_proxy.errors import ImportRejected, InputError, WrongPassword
from smime_proxy.keystore.certs import load_certificates
from smime_proxy.keystore.pkcs import load_key_file
from smime_proxy.mime.entity import parse_entity
from smime_proxy.smime import (
    Cipher,
    KeyTransport,
    Recipient,
    decrypt_message,
    encrypt_message,
    inspect_signature,
    sign_message,
)

_CIPHERS = ("aes-256-gcm", "aes-256-cbc", "aes-128-cbc")


def register(sub: argparse._SubParsersAction[Any]) -> None:
    msg = sub.add_parser("msg", help="sign, encrypt, decrypt or verify one message (stdin)")
    actions = msg.add_subparsers(dest="msg_command", metavar="ACTION")
    actions.required = True

    sign = actions.add_parser("sign", help="sign a message: stdin -> stdout")
    _key_options(sign)
    sign.add_argument("--opaque", action="store_true", help="application/pkcs7-mime signed-data")
    sign.add_argument("--cert-chain", metavar="PEM", help="extra certificates to include")
    sign.add_argument("--digest", default="sha256", choices=("sha256", "sha384", "sha512"))
    sign.add_argument("--pss", action="store_true", help="RSA-PSS instead of PKCS#1 v1.5")
    sign.set_defaults(handler=_sign)

    encrypt = actions.add_parser("encrypt", help="encrypt a message: stdin -> stdout")
    encrypt.add_argument(
        "--to", metavar="CERT.pem", action="append", required=True, help="recipient certificate"
    )
    encrypt.add_argument("--cipher", choices=_CIPHERS, help="default: per recipient")
    encrypt.add_argument("--key-transport", choices=("pkcs1", "oaep"))
    encrypt.set_defaults(handler=_encrypt)

    decrypt = actions.add_parser("decrypt", help="decrypt a message: stdin -> stdout")
    _key_options(decrypt)
    decrypt.set_defaults(handler=_decrypt)

    verify = actions.add_parser("verify", help="verify a signed message; JSON on stdout")
    verify.add_argument("--trust", metavar="CA.pem", action="append", required=True)
    verify.add_argument("--at", metavar="ISO-8601", help="validate at this time (default: now)")
    verify.add_argument("--out", metavar="FILE", help="write the signed content here")
    verify.set_defaults(handler=_verify)


def _key_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--p12", metavar="FILE", required=True, help="PKCS#12 or PEM key+cert")
    parser.add_argument("--password-file", metavar="F", help="file with the password, - = stdin")


def _agent(args: argparse.Namespace) -> InProcessKeyAgent:
    data = read_file(args.p12, "key file")
    needs_password = not (b"-----BEGIN " in data[:4096] and b"ENCRYPTED" not in data)
    password = b""
    if needs_password:
        if args.password_file is None and not sys.stdin.isatty():
            try:  # a PKCS#12 without password (or with an empty one) needs no prompt
                material = load_key_file(data, b"")
                return InProcessKeyAgent(material.private_key, material.certificate, material.chain)
            except WrongPassword:
                raise InputError("the key file needs a password: give --password-file") from None
        password = read_secret(args.password_file, "password for the key file: ")
    material = load_key_file(data, password)
    return InProcessKeyAgent(material.private_key, material.certificate, material.chain)


def _message_from_stdin(args: argparse.Namespace) -> bytes:
    if getattr(args, "password_file", None) == "-":
        raise InputError("--password-file - reads standard input, which carries the message")
    data = read_stdin()
    if not data.strip():
        raise InputError("no message on standard input")
    if not parse_entity(data).fields:
        raise InputError("standard input is not a mail message (no header fields)")
    return data


def _sign(args: argparse.Namespace) -> int:
    message = _message_from_stdin(args)
    agent = _agent(args)
    chain: list[x509.Certificate] = list(agent.chain)
    if args.cert_chain:
        chain.extend(_load_certificates(args.cert_chain))
    write_stdout(
        sign_message(
            message, agent, opaque=args.opaque, digest=args.digest, pss=args.pss, extra_certs=chain
        )
    )
    return 0


def _encrypt(args: argparse.Namespace) -> int:
    message = _message_from_stdin(args)
    recipients: list[Recipient] = []
    for path in args.to:
        certificates = _load_certificates(path)
        recipients.append(
            Recipient(
                certificates[0],
                supports_gcm=args.cipher == "aes-256-gcm",
                key_transport=cast("KeyTransport | None", args.key_transport),
            )
        )
    write_stdout(encrypt_message(message, recipients, cipher=cast("Cipher | None", args.cipher)))
    return 0


def _decrypt(args: argparse.Namespace) -> int:
    message = _message_from_stdin(args)
    agent = _agent(args)
    write_stdout(decrypt_message(message, agent).content)
    return 0


def _verify(args: argparse.Namespace) -> int:
    message = _message_from_stdin(args)
    roots: list[x509.Certificate] = []
    for path in args.trust:
        roots.extend(_load_certificates(path))
    now = _parse_time(args.at) if args.at else dt.datetime.now(dt.UTC)
    report = inspect_signature(message, roots, now=now)
    sys.stdout.write(json.dumps(report.to_json()) + "\n")
    sys.stdout.flush()
    if args.out and report.content is not None:
        Path(args.out).write_bytes(report.content)
    return 0 if report.valid else 1


def _parse_time(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"--at: not an ISO-8601 time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _load_certificates(path: str) -> list[x509.Certificate]:
    data = read_file(path, "certificate file")
    try:
        return load_certificates(data)
    except ImportRejected as exc:
        raise InputError(f"{path}: {exc}") from None
