"""The key agent process's protocol, server and client (smime_proxy.agent), over a real Unix
socket: the key opens only with its password, the fronts' side decrypts and signs through
it, locks and timeouts end an unlock, a stopped agent means locked, a foreign user id is
refused, and no frame makes it fail other than with a protocol error."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smime_proxy.agent import protocol as p
from smime_proxy.agent.client import (
    DOWN_SECONDS,
    AgentClient,
    AgentUnreachable,
    RemoteKeyAgent,
)
from smime_proxy.agent.server import AgentCore, AgentServer
from smime_proxy.errors import KeyLocked, WrongPassword
from smime_proxy.keystore.pkcs import wrap_private_key
from smime_proxy.smime import (
    Recipient,
    decrypt_message,
    encrypt_message,
    sign_message,
    verify_message,
)
from support import pki
from support.smtp_proxy import LoopThread

MESSAGE = b"From: bob@example.test\r\nTo: bob@example.test\r\nSubject: s\r\n\r\nagent body\r\n"
NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def ca() -> pki.Identity:
    return pki.make_ca("Agent Test CA")


@pytest.fixture(scope="module", params=["rsa", "p256"])
def bob(request: pytest.FixtureRequest, ca: pki.Identity) -> pki.Identity:
    return pki.make_user("bob@example.test", ca, kind=request.param)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[AgentServer, AgentClient, LoopThread]]:
    server = AgentServer(tmp_path / "agent" / "socket")
    with LoopThread() as loop:
        loop.run(server.start())
        client = AgentClient(server.socket_path, timeout=10)
        try:
            yield server, client, loop
        finally:
            client.close()
            loop.run(server.stop())


def _unlock(client: AgentClient, bob: pki.Identity, password: bytes = b"pw-1",
            now: float = NOW) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    wrapped = wrap_private_key(bob.key, b"pw-1", iterations=1000)
    client.unlock("bob", wrapped, password, bob.cert.public_bytes(Encoding.DER), idle=60,
                  maximum=600, now=now)


def test_decrypt_and_sign_through_the_agent(agent: tuple[AgentServer, AgentClient, LoopThread],
                                            bob: pki.Identity, ca: pki.Identity) -> None:
    server, client, _loop = agent
    assert (server.socket_path.stat().st_mode & 0o777) == 0o600
    with pytest.raises(WrongPassword):
        _unlock(client, bob, b"wrong")
    assert client.status("bob", NOW) is None
    _unlock(client, bob)
    remote = RemoteKeyAgent(client, "bob", bob.cert, (), NOW + 1)
    sealed = encrypt_message(MESSAGE, [Recipient(bob.cert, supports_gcm=True)])
    assert b"agent body" in decrypt_message(sealed, remote).content
    signed = sign_message(MESSAGE, remote, now=pki.NOW)
    assert verify_message(signed, [ca.cert], now=pki.NOW).valid
    status = client.status("bob", NOW + 2)
    assert status is not None and status.unlocked_at == NOW and status.last_used == NOW + 1


def test_lock_idle_and_maximum_end_the_unlock(
        agent: tuple[AgentServer, AgentClient, LoopThread], bob: pki.Identity) -> None:
    _server, client, _loop = agent
    _unlock(client, bob)
    client.lock("bob")
    with pytest.raises(KeyLocked):
        RemoteKeyAgent(client, "bob", bob.cert, (), NOW).sign_digest(b"\0" * 32, "sha256",
                                                                   "ecdsa")
    _unlock(client, bob)
    assert client.status("bob", NOW + 59) is not None  # STATUS does not count as use
    assert client.status("bob", NOW + 61) is None  # idle for 60 s
    _unlock(client, bob)
    for minute in range(1, 10):
        assert client.status("bob", NOW + 55 * minute, touch=True) is not None
    assert client.expire(NOW + 601) == ["bob"]  # the absolute maximum, however busy


def test_a_stopped_agent_is_locked_and_a_new_one_recovers(
        tmp_path: Path, bob: pki.Identity) -> None:
    server = AgentServer(tmp_path / "a" / "socket")
    client = AgentClient(server.socket_path, timeout=5)
    with LoopThread() as loop:
        loop.run(server.start())
        _unlock(client, bob)
        loop.run(server.stop())
        with pytest.raises(AgentUnreachable):
            client.status("bob", NOW)
        assert issubclass(AgentUnreachable, KeyLocked)
        again = AgentServer(tmp_path / "a" / "socket")
        loop.run(again.start())
        with pytest.raises(AgentUnreachable):  # a failed check counts for DOWN_SECONDS
            client.status("bob", NOW)
        time.sleep(DOWN_SECONDS + 0.1)
        assert client.status("bob", NOW) is None  # its unlocks died with it
        _unlock(client, bob)
        assert client.status("bob", NOW) is not None
        loop.run(again.stop())
    client.close()


def test_a_foreign_user_id_is_refused(tmp_path: Path, bob: pki.Identity) -> None:
    def stranger(_sock: socket.socket) -> int:
        return os.geteuid() + 4242

    server = AgentServer(tmp_path / "b" / "socket", uid_of=stranger)
    client = AgentClient(server.socket_path, timeout=5)
    with LoopThread() as loop:
        loop.run(server.start())
        with pytest.raises(AgentUnreachable):
            client.status("bob", NOW)
        loop.run(server.stop())
    client.close()


def test_a_malformed_frame_is_refused_and_the_agent_goes_on(
        agent: tuple[AgentServer, AgentClient, LoopThread], bob: pki.Identity) -> None:
    server, client, _loop = agent
    with socket.socket(socket.AF_UNIX) as raw:
        raw.settimeout(5)
        raw.connect(str(server.socket_path))
        raw.sendall(b"\x00\x00\x00\x03Zxx")
        answer = raw.recv(100)
        assert answer[4:5] == p.BAD_REQUEST
        assert raw.recv(100) == b""  # and closed
    _unlock(client, bob)
    assert client.status("bob", NOW) is not None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_body_decodes_or_is_a_protocol_error(body: bytes) -> None:
    try:
        message = p.decode(body, p.OPERATIONS)
    except p.ProtocolError:
        return
    assert p.encode(message)[4:] == body


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(p.OPERATIONS)),
       st.lists(st.binary(max_size=40), max_size=10))
def test_the_core_answers_any_request_or_raises_a_protocol_error(
        kind: bytes, fields: list[bytes]) -> None:
    core = AgentCore()
    try:
        if kind == p.UNLOCK:
            answer = core.unlock(tuple(fields))
        else:
            answer = core.handle(p.Message(kind, tuple(fields)))
    except p.ProtocolError:
        return
    assert answer.kind in p.OUTCOMES
