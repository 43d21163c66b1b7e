"""Helpers shared by the CLI command modules: secrets from files or prompts, byte I/O.

May import: errors, stdlib.
"""

from __future__ import annotations

import getpass
import sys
from pathlib import Path

from smime_proxy.errors import InputError


def read_secret(path: str | None, prompt: str, *, confirm: bool = False) -> bytes:
    """A password from FILE, from stdin (`-`), or from a prompt when a terminal is attached.

    Passwords are never taken as plain command-line arguments. One trailing newline is dropped.
    """
    if path is None:
        if not sys.stdin.isatty():
            raise InputError(f"{prompt.rstrip(': ')}: give --password-file (no terminal to ask)")
        first = getpass.getpass(prompt)
        if confirm and getpass.getpass("again: ") != first:
            raise InputError("the two passwords differ")
        return first.encode("utf-8")
    if path == "-":
        data = sys.stdin.buffer.readline()
    else:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read password file {path}: {exc.strerror}") from None
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    return data


def read_file(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror}") from None


def read_stdin() -> bytes:
    return sys.stdin.buffer.read()


def write_stdout(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
