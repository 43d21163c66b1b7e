"""Encrypted mail opened in worker processes (`imap.open_processes`, issue 10), with
`smime-proxy serve` in front of the real Dovecot:

- bob's encrypted and signed mail reads through the IMAP front as with threads: decrypted,
  the signature verified, the status line saying so;
- the worker processes never hold bob's private key (their memory is searched for every
  form of it), while the daemon, whose in-process agent has it, does (the search finds what
  is there): a process is given one message's content-encryption key, nothing more.
"""

from __future__ import annotations

import imaplib
import os
import signal
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from smime_proxy.app import stores_of
from smime_proxy.harness import Upstream
from smime_proxy.smime import Recipient, encrypt_message, sign_message
from support.demo_proxy import DemoProxy, demo_variant, private_key_forms, read_by_subject
from support.procmem import memory_contains, processes

BODY = "opened in a worker process"


@pytest.fixture(scope="module")
def with_processes(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[DemoProxy]:
    work = tmp_path_factory.mktemp("open-processes")
    # the demo's config has no imap section: only the worker processes are set
    with demo_variant(upstream, work, imap={"open_processes": 2}) as proxy:
        yield proxy


def _workers(daemon_pid: int) -> list[int]:
    """The daemon's children that multiprocessing started to work (spawn; its resource
    tracker is not one)."""
    return [p.pid for p in processes()
            if p.ppid == daemon_pid and b"spawn_main" in p.cmdline]


def _deliver(proxy: DemoProxy, upstream: Upstream, token: str) -> None:
    """From alice (signed with her key), encrypted to bob, straight into bob's INBOX."""
    now = datetime.now(UTC)
    with stores_of(proxy.workdir / "data") as stores:
        bob = stores.secure_mail.certificate("bob")
        alice = stores.secure_mail.unlock("alice", proxy.smime_password("alice"), now)
        message = (f"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: workers "
                   f"{token}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n"
                   f"{BODY} {token}\r\n").encode()
        signed = sign_message(message, alice, now=now)
        stores.secure_mail.lock("alice")
    sealed = encrypt_message(signed, [Recipient(bob, supports_gcm=True)])
    with imaplib.IMAP4(upstream.host, upstream.imap_port) as imap:
        imap.login("bob", upstream.users["bob"])
        imap.append("INBOX", "", None, sealed)


def _read(proxy: DemoProxy, token: str) -> bytes:
    status, shown = read_by_subject(proxy, "bob", f"workers {token}", "BODY.PEEK[]")
    assert status == "OK"
    return shown


def test_workers_open_signed_encrypted_mail_without_the_private_key(
        with_processes: DemoProxy, upstream: Upstream) -> None:
    token = os.urandom(4).hex()
    _deliver(with_processes, upstream, token)
    forms = private_key_forms(with_processes, "bob")
    with_processes.unlock("bob")
    shown = _read(with_processes, token)
    status = shown.split(b"\r\n", 1)[0]
    assert status.startswith(b"X-SMIME-Status: encrypted=yes; cipher=aes-256-gcm; "
                             b"signature=valid"), status
    assert f"{BODY} {token}".encode() in shown
    workers = _workers(with_processes.proc.pid)
    assert len(workers) == 2
    assert any(memory_contains(with_processes.proc.pid, form) for form in forms)
    for worker in workers:
        assert not any(memory_contains(worker, form) for form in forms)


def test_a_killed_worker_is_replaced_and_reading_goes_on(
        with_processes: DemoProxy, upstream: Upstream) -> None:
    """A worker that dies (killed, out of memory) breaks the pool: the message in flight is
    shown as stored (`error=internal`), a new pool is started, and reading goes on."""
    token = os.urandom(4).hex()
    _deliver(with_processes, upstream, token)
    with_processes.unlock("bob")
    assert b"signature=valid" in _read(with_processes, token).split(b"\r\n", 1)[0]
    old = _workers(with_processes.proc.pid)
    for pid in old:
        os.kill(pid, signal.SIGKILL)
    statuses = []
    for _ in range(3):
        statuses.append(_read(with_processes, token).split(b"\r\n", 1)[0])
        if b"signature=valid" in statuses[-1]:
            break
    assert b"signature=valid" in statuses[-1], statuses
    assert all(b"error=internal" in s for s in statuses[:-1]), statuses
    new = _workers(with_processes.proc.pid)
    assert len(new) == 2 and not set(new) & set(old)
