"""The `smime-proxy` command line: argument parsing and dispatch (top layer).

Each command group lives in its own module exposing `register(subparsers)`; handlers take the
parsed namespace and return an exit code. Exit codes: 0 success, 1 negative result (invalid
signature, cannot decrypt, wrong password), 2 usage or input error - always one readable line
on stderr, never a traceback.

May import: errors, memory, stdlib.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from smime_proxy.errors import (
    CryptoError,
    InputError,
    KeyStoreError,
    SmimeProxyError,
)
from smime_proxy.memory import tune_memory

# Command-group modules, each with register(subparsers).
_GROUPS = ("msg", "keys", "mime", "serve", "policy", "control", "store", "agent")

EXIT_OK = 0
EXIT_NEGATIVE = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """Exit 2 with one line on errors; no abbreviated options anywhere (a `--password`
    typo must never be taken for `--password-file` and echo the secret in an error)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        if message.startswith("unrecognized arguments: "):
            # name the options only: a mistyped option's value may be a password
            words = message.removeprefix("unrecognized arguments: ").split()
            shown = [w.split("=", 1)[0] for w in words if w.startswith("-")]
            message = "unrecognized arguments: " + (" ".join(shown) or "(values not shown)")
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="smime-proxy", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("SMIME_PROXY_DATA_DIR"),
        help="data directory of the key store (env SMIME_PROXY_DATA_DIR)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in _GROUPS:
        module = importlib.import_module(f"smime_proxy.cli.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    tune_memory()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except InputError as exc:
        _fail(exc)
        return EXIT_USAGE
    except (CryptoError, KeyStoreError) as exc:
        _fail(exc)
        return EXIT_NEGATIVE
    except SmimeProxyError as exc:
        _fail(exc)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _pipe_closed()
    return code


def _pipe_closed() -> int:
    """The reader of standard output went away (`smime-proxy keys show alice | head -1`):
    end quietly with the status of a process killed by SIGPIPE, as other Unix tools do.
    Standard output points to /dev/null from here on, so that flushing it at exit raises
    nothing either."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 128 + signal.SIGPIPE


def _fail(exc: Exception) -> None:
    text = str(exc) or type(exc).__name__
    sys.stderr.write(f"smime-proxy: {text}\n")
