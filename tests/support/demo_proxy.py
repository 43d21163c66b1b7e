"""The product as a user starts it (scripts/run.sh), in front of the test session's upstream.

``start_demo_proxy(upstream, workdir, log)`` writes the upstream's env file (the format of
``python -m smime_proxy.harness --env-file``), runs ``python -m smime_proxy.demo --workdir W
--env-file E`` (config with STARTTLS listeners and plaintext from loopback, a server CA, a key
per demo user with the Secure Mail Password ``<user>-smime``, address books), then
``smime-proxy serve --config W/smime-proxy.yaml`` as a subprocess (stderr into ``log``), and
returns once the control listener answers. ``unlock``/``lock``/``export_p12`` use the control
endpoint's JSON API (HTTPS, HTTP Basic with the mail login), as ``smime-proxy unlock`` does.

``start_variant(proxy, workdir, log, **settings)`` runs a second ``smime-proxy serve`` on a
copy of a running demo proxy's config and data directory (same server CA, same keys, every key
locked), with its own listener ports and the given top-level settings changed (e.g.
``signatures="keep"``); ``demo_variant(upstream, workdir, **settings)`` is one for a module's
tests, the demo it is copied from already stopped.

``read_by_subject(proxy, user, subject, item)`` reads a message through the IMAP front;
``private_key_forms(proxy, user)`` is what of a user's key a memory search looks for.
"""

from __future__ import annotations

import base64
import contextlib
import imaplib
import json
import os
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from smime_proxy.app import stores_of
from smime_proxy.demo import DEMO_PASSWORD_SUFFIX, read_env
from smime_proxy.harness import Upstream
from smime_proxy.harness.__main__ import env_lines
from support.control import free_port

SMIME_PROXY = Path(sys.executable).with_name("smime-proxy")


@dataclass
class DemoProxy:
    workdir: Path
    config: Path
    host: str
    imap_port: int
    smtp_port: int
    control_port: int
    tls_ca: Path
    """The CA of the proxy's listeners' TLS certificate."""
    smime_ca: Path
    """The server CA that issued the demo users' S/MIME certificates (trust_roots)."""
    log: Path
    mail_passwords: dict[str, str] = field(repr=False)
    proc: subprocess.Popen[bytes] = field(repr=False)

    @staticmethod
    def smime_password(user: str) -> str:
        return user + DEMO_PASSWORD_SUFFIX

    def api(self, user: str, path: str, body: dict[str, Any] | None = None) -> bytes:
        """POST ``/api/v1/<path>`` as ``user``; the answer's bytes (AssertionError if not 2xx)."""
        token = base64.b64encode(f"{user}:{self.mail_passwords[user]}".encode()).decode()
        request = urllib.request.Request(
            f"https://{self.host}:{self.control_port}/api/v1/{path}",
            data=json.dumps(body or {}).encode(), method="POST",
            headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
        )
        context = ssl.create_default_context(cafile=str(self.tls_ca))
        try:
            with urllib.request.urlopen(request, timeout=60, context=context) as answer:  # noqa: S310
                data: bytes = answer.read()
                return data
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"control API {path} as {user}: {exc.code} {exc.read()!r}") \
                from None

    def unlock(self, user: str) -> None:
        self.api(user, "unlock", {"password": self.smime_password(user)})

    def lock(self, user: str) -> None:
        self.api(user, "lock")

    def export_p12(self, user: str, export_password: str) -> bytes:
        """The user's key and certificate as PKCS#12 (the Secure Mail page's export)."""
        return self.api(user, "export", {"password": self.smime_password(user),
                                         "export_password": export_password,
                                         "export_password2": export_password})

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_demo_proxy(upstream: Upstream, workdir: Path, log: Path,
                     timeout: float = 30.0) -> DemoProxy:
    workdir.mkdir(parents=True, exist_ok=True)
    env_file = workdir / "upstream.env"
    env_file.write_text(env_lines(upstream), encoding="utf-8")
    proxy_dir = workdir / "proxy"
    subprocess.run([sys.executable, "-m", "smime_proxy.demo", "--workdir", str(proxy_dir),
                    "--env-file", str(env_file)], check=True, timeout=120)
    ports = read_env(proxy_dir / "proxy.env")
    config = proxy_dir / "smime-proxy.yaml"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as sink:
        proc = subprocess.Popen(
            [str(SMIME_PROXY), "serve", "--config", str(config)],
            stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    proxy = DemoProxy(
        workdir=proxy_dir, config=config, host="127.0.0.1",
        imap_port=int(ports["PROXY_IMAP_PORT"]), smtp_port=int(ports["PROXY_SMTP_PORT"]),
        control_port=int(ports["PROXY_CONTROL_PORT"]), tls_ca=Path(ports["PROXY_TLS_CA_FILE"]),
        smime_ca=proxy_dir / "data" / "server-ca.pem", log=log,
        mail_passwords=dict(upstream.users), proc=proc,
    )
    wait_ready(proxy, timeout)
    return proxy


def start_variant(proxy: DemoProxy, workdir: Path, log: Path, timeout: float = 30.0,
                  **settings: Any) -> DemoProxy:
    """A second ``smime-proxy serve`` on a copy of ``proxy``'s config and data directory, with
    its own listener ports and the top-level ``settings`` replaced."""
    workdir.mkdir(parents=True, exist_ok=True)
    source = proxy.workdir / "data"
    data = workdir / "data"
    shutil.copytree(source, data, ignore=shutil.ignore_patterns("*.sqlite3*"))
    for db in source.glob("*.sqlite3"):  # a consistent copy of a store in use (WAL)
        with contextlib.closing(sqlite3.connect(db)) as src, \
                contextlib.closing(sqlite3.connect(data / db.name)) as dst:
            src.backup(dst)
        (data / db.name).chmod(0o600)
    config = yaml.safe_load(proxy.config.read_text(encoding="utf-8"))
    ports = {name: free_port() for name in config["listeners"]}  # lmtp too, when there
    for name, port in ports.items():
        config["listeners"][name]["port"] = port
    config["data_dir"] = str(data)
    config.update(settings)
    path = workdir / "smime-proxy.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as sink:
        proc = subprocess.Popen(
            [str(SMIME_PROXY), "serve", "--config", str(path)],
            stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    variant = replace(proxy, workdir=workdir, config=path, imap_port=ports["imap"],
                      smtp_port=ports["smtp"], control_port=ports["control"], log=log,
                      proc=proc)
    wait_ready(variant, timeout)
    return variant


def wait_ready(proxy: DemoProxy, timeout: float = 30.0) -> None:
    """Returns once ``proxy``'s control listener answers and its log says ``ready``; stops it
    and raises AssertionError (with the log's tail) if it exits or is not ready in time."""
    deadline = time.monotonic() + timeout
    while True:
        if proxy.proc.poll() is not None:
            raise AssertionError(f"smime-proxy serve exited {proxy.proc.returncode}: "
                                 f"{proxy.log.read_text(errors='replace')[-2000:]}")
        with contextlib.suppress(OSError), \
                socket.create_connection((proxy.host, proxy.control_port), timeout=1):
            if b"ready" in proxy.log.read_bytes():
                return
        if time.monotonic() > deadline:
            proxy.stop()
            raise AssertionError(f"smime-proxy serve not ready in {timeout} s: "
                                 f"{proxy.log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.1)


def private_key_forms(proxy: DemoProxy, user: str) -> list[bytes]:
    """What of the user's private key could be found in a process's memory: its PKCS#8 and
    PKCS#1/SEC1 DER, and its secret numbers as OpenSSL keeps them (little-endian limbs) and
    as big-endian bytes."""
    data = proxy.workdir / "data"
    with stores_of(data) as stores:
        agent = stores.secure_mail.unlock(user, proxy.smime_password(user), datetime.now(UTC))
        key = agent.private_key  # type: ignore[attr-defined]  # the in-process agent here
        stores.secure_mail.lock(user)
    forms = [key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())]
    if isinstance(key, rsa.RSAPrivateKey):
        secret = key.private_numbers().p
    else:
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        secret = key.private_numbers().private_value
    size = (secret.bit_length() + 7) // 8
    forms += [secret.to_bytes(size, "big")[:24], secret.to_bytes(size, "little")[:24]]
    return forms


@contextlib.contextmanager
def demo_variant(upstream: Upstream, workdir: Path, **settings: Any) -> Iterator[DemoProxy]:
    """`start_variant` of a fresh demo proxy with `settings`, the demo stopped once copied;
    the variant is stopped on leaving."""
    demo = start_demo_proxy(upstream, workdir / "demo", workdir / "demo.log")
    try:
        proxy = start_variant(demo, workdir / "variant", workdir / "variant.log", **settings)
    finally:
        demo.stop()
    try:
        yield proxy
    finally:
        proxy.stop()


def read_by_subject(proxy: DemoProxy, user: str, subject: str,
                    item: str = "BODY.PEEK[TEXT]") -> tuple[str, bytes]:
    """(the tagged status, the item's bytes) of the message with `subject` in `user`'s INBOX,
    read through the proxy's IMAP front (STARTTLS, the mailbox examined)."""
    context = ssl.create_default_context(cafile=str(proxy.tls_ca))
    with imaplib.IMAP4(proxy.host, proxy.imap_port) as imap:
        imap.starttls(context)
        imap.login(user, proxy.mail_passwords[user])
        imap.select("INBOX", readonly=True)
        _, found = imap.uid("SEARCH", "SUBJECT", f'"{subject}"')
        [uid] = (found[0] or b"").split()
        status, data = imap.uid("FETCH", uid.decode(), f"({item})")
        return status, b"".join(part[1] for part in data if isinstance(part, tuple))
