"""The key agent process (issue 12, privilege separation), with `smime-proxy serve` as a user
runs it (`agent: {socket: ...}`, the daemon starting the agent as its child) in front of the
real Dovecot and Postfix:

- after an unlock, bob's encrypted mail reads through the IMAP front, the daemon's memory
  holds no form of bob's private key (searched through /proc/PID/mem), and the agent's does
  (the search finds what is there);
- signing through the SMTP front works the same way (the agent signs);
- killing the agent locks everything cleanly: the IMAP front gives its locked answer (not an
  error, not a closed connection), the daemon starts the agent again, and a new unlock
  recovers.
"""

from __future__ import annotations

import imaplib
import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from smime_proxy.app import stores_of
from smime_proxy.harness import Upstream
from smime_proxy.smime import Recipient, encrypt_message
from smime_proxy.smime_forms import is_encrypted
from support.demo_proxy import DemoProxy, demo_variant, private_key_forms, read_by_subject
from support.procmem import memory_contains, processes

BODY = "the agent opened this"


@pytest.fixture(scope="module")
def with_agent(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[DemoProxy]:
    """The demo daemon's copy with a key agent process (its own socket directory)."""
    work = tmp_path_factory.mktemp("agent")
    with demo_variant(upstream, work, agent={"socket": str(work / "run" / "agent.sock")}) as proxy:
        yield proxy


def _agent_pid(daemon_pid: int) -> int:
    """The daemon's child that runs `smime-proxy agent`."""
    for process in processes():
        if process.ppid == daemon_pid and b"agent\0--socket" in process.cmdline:
            return process.pid
    raise AssertionError("no key agent child")


def _now() -> datetime:
    return datetime.now(UTC)


def _deliver_encrypted(proxy: DemoProxy, upstream: Upstream, user: str, token: str) -> None:
    with stores_of(proxy.workdir / "data") as stores:
        certificate = stores.secure_mail.certificate(user)
    message = (f"From: dave@example.org\r\nTo: {user}@example.test\r\nSubject: agent {token}"
               f"\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n{BODY} {token}\r\n"
               ).encode()
    sealed = encrypt_message(message, [Recipient(certificate, supports_gcm=True)])
    assert is_encrypted(sealed)
    with imaplib.IMAP4(upstream.host, upstream.imap_port) as imap:
        imap.login(user, upstream.users[user])
        imap.append("INBOX", "", None, sealed)


def _read(proxy: DemoProxy, user: str, token: str) -> tuple[str, bytes]:
    """(the tagged status, the body) of the message `agent <token>` through the IMAP front."""
    return read_by_subject(proxy, user, f"agent {token}")


def test_the_daemon_holds_no_key_and_reads_through_the_agent(
        with_agent: DemoProxy, upstream: Upstream) -> None:
    token = os.urandom(4).hex()
    _deliver_encrypted(with_agent, upstream, "bob", token)
    forms = private_key_forms(with_agent, "bob")
    with_agent.unlock("bob")
    status, body = _read(with_agent, "bob", token)
    assert status == "OK" and f"{BODY} {token}".encode() in body
    daemon = with_agent.proc.pid
    agent = _agent_pid(daemon)
    assert not any(memory_contains(daemon, form) for form in forms)
    assert any(memory_contains(agent, form) for form in forms)


def test_killing_the_agent_locks_cleanly_and_a_restart_recovers(
        with_agent: DemoProxy, upstream: Upstream) -> None:
    token = os.urandom(4).hex()
    _deliver_encrypted(with_agent, upstream, "carol", token)
    with_agent.unlock("carol")
    assert _read(with_agent, "carol", token)[0] == "OK"
    old = _agent_pid(with_agent.proc.pid)
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while True:  # the daemon starts it again
        try:
            new = _agent_pid(with_agent.proc.pid)
            if new != old:
                break
        except AssertionError:
            pass
        assert time.monotonic() < deadline, "the agent was not started again"
        time.sleep(0.1)
    status, body = _read(with_agent, "carol", token)  # locked: its unlocks died with it
    assert status == "NO" and BODY.encode() not in body
    assert with_agent.proc.poll() is None
    with_agent.unlock("carol")
    status, body = _read(with_agent, "carol", token)
    assert status == "OK" and f"{BODY} {token}".encode() in body
