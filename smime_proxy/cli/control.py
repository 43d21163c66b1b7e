"""`smime-proxy unlock USER` / `smime-proxy lock USER`: ask the running daemon's control API.

The daemon's URL comes from `--url`, else from the control listener of `--config`. The user's
mail password (HTTP Basic, checked upstream) comes from `--mail-password-file` (`-` = stdin)
or a prompt; for `unlock`, the Secure Mail Password from `--password-file` or a prompt. When
both are read from stdin, the mail password is the first line. Never from argv.

Exit codes: 0 done, 1 refused (wrong password, throttled), 2 usage error or daemon unreachable.

May import: cli, config, errors, stdlib.
"""

from __future__ import annotations

import argparse
import base64
import json
import ssl
import sys
import urllib.error
import urllib.request
from typing import Any

from smime_proxy.cli._common import read_secret
from smime_proxy.errors import InputError, KeyStoreError


class Refused(KeyStoreError):
    """The daemon said no (wrong password, throttled): exit 1."""


def register(sub: argparse._SubParsersAction[Any]) -> None:
    for name, text in (("unlock", "unlock USER's key in the running daemon"),
                       ("lock", "lock USER's key in the running daemon")):
        parser = sub.add_parser(name, help=text)
        parser.add_argument("user", metavar="USER", help="the mail user name")
        parser.add_argument("--url", help="the control endpoint, e.g. https://127.0.0.1:8443")
        parser.add_argument("--config", metavar="FILE",
                            help="the daemon's YAML config (its control listener is the URL)")
        parser.add_argument("--cafile", metavar="FILE",
                            help="CA certificate(s) to verify the control endpoint's TLS")
        parser.add_argument("--mail-password-file", metavar="FILE",
                            help="file with the mail password ('-' = stdin); else a prompt")
        if name == "unlock":
            parser.add_argument("--password-file", metavar="FILE",
                                help="file with the Secure Mail Password ('-' = stdin)")
        parser.set_defaults(handler=_run, action=name)


def _url(args: argparse.Namespace) -> str:
    if args.url:
        if not args.url.startswith(("http://", "https://")):
            raise InputError("--url must start with http:// or https://")
        return str(args.url).rstrip("/")
    if not args.config:
        raise InputError("give --url or --config")
    from smime_proxy.config import load_config

    listener = load_config(args.config, check_files=False).listeners.control
    host = listener.host
    if host in ("0.0.0.0", "::"):  # noqa: S104
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if listener.tls else 'http'}://{host}:{listener.port}"


def _call(url: str, path: str, user: str, mail_password: bytes, body: dict[str, str] | None,
          cafile: str | None) -> dict[str, Any]:
    token = base64.b64encode(user.encode("utf-8") + b":" + mail_password).decode("ascii")
    data = json.dumps(body).encode("utf-8") if body is not None else b""
    request = urllib.request.Request(  # noqa: S310 (scheme checked in _url)
        url + path, data=data, method="POST",
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
    )
    context = ssl.create_default_context(cafile=cafile) if url.startswith("https") else None
    try:
        with urllib.request.urlopen(request, timeout=60, context=context) as response:  # noqa: S310
            answer: dict[str, Any] = json.loads(response.read())
            return answer
    except urllib.error.HTTPError as exc:
        try:
            message = str(json.loads(exc.read()).get("error", exc.reason))
        except (ValueError, AttributeError):
            message = str(exc.reason)
        if exc.code in (401, 403, 429):
            raise Refused(message) from None
        raise InputError(f"the daemon answered {exc.code}: {message}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise InputError(f"cannot reach the daemon at {url}: {reason}") from None


def _run(args: argparse.Namespace) -> int:
    url = _url(args)
    if args.mail_password_file is None and not sys.stdin.isatty():
        raise InputError("the mail password: give --mail-password-file (no terminal to ask)")
    mail_password = read_secret(args.mail_password_file, f"Mail password for {args.user}: ")
    if args.action == "unlock":
        secure = read_secret(args.password_file, "Secure Mail Password: ")
        try:
            secret = secure.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError("the Secure Mail Password is not UTF-8") from None
        status = _call(url, "/api/v1/unlock", args.user, mail_password,
                       {"password": secret}, args.cafile)
        sys.stdout.write(f"unlocked until {status.get('expires_at')}\n")
    else:
        _call(url, "/api/v1/lock", args.user, mail_password, None, args.cafile)
        sys.stdout.write("locked\n")
    return 0
