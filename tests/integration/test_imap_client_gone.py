"""A client that vanishes in the middle of an answer, with the real Dovecot behind the
proxy: a TCP reset while a large plain message is relayed to it, and while its encrypted
messages are opened for it; and the proxy's own side of the connection closed while the
upstream still sends. The proxy ends that session cleanly (its connection slot is given
back, nothing is logged as an error) and serves the next client. And the other way round: a
failure on the proxy's side while opened messages are handed over ends the session with a
BYE instead of leaving the client waiting.

On uvloop, the daemon's loop (and the tests' loop thread's), writing to a closed transport
raises where asyncio's loop dropped the bytes (smime_proxy/event_loop.py, `write_if_open`).
Without that guard these tests fail on uvloop (checked): "IMAP session failed" and an
unretrieved RuntimeError from the task that hands opened messages to the session."""

from __future__ import annotations

import imaplib
import logging
import socket
import struct
import time
import uuid
from collections.abc import Iterator

import pytest

from smime_proxy.harness import Upstream
from smime_proxy.imap.server import ImapFront
from smime_proxy.imap.session import ImapSession
from support.imap_proxy import (
    LoopThread,
    encrypted_signed,
    imap_services,
    running_front,
    upstream_imap,
)
from support.smtp_proxy import KeyWorld, key_world, people

USER = "alice"
SLOT = (USER, "127.0.0.1")  # the front's count of logged-in connections per user and address


@pytest.fixture(scope="module")
def world() -> KeyWorld:
    w = key_world()
    w.give_key(USER, people().ids["alice"], unlock=True)
    return w


@pytest.fixture(scope="module")
def front(upstream: Upstream, loop: LoopThread, world: KeyWorld,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImapFront]:
    services = imap_services(tmp_path_factory.mktemp("imap-gone"), world,
                             upstream_imap(upstream))
    with running_front(loop, services) as running:
        yield running


def _mailbox(upstream: Upstream, messages: list[bytes]) -> str:
    """A new mailbox of alice's holding `messages`, filled directly at Dovecot."""
    name = "gone-" + uuid.uuid4().hex[:8]
    with imaplib.IMAP4(upstream.host, upstream.imap_port, timeout=60) as imap:
        imap.login(USER, upstream.users[USER])
        assert imap.create(name)[0] == "OK"
        for message in messages:
            assert imap.append(name, "", None, message)[0] == "OK"
    return name


def _message(subject: str, body: bytes) -> bytes:
    return (f"From: bob@example.test\r\nTo: alice@example.test\r\nSubject: {subject}\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n").encode() + body


def _selected(front: ImapFront, upstream: Upstream, mailbox: str) -> socket.socket:
    """A raw client of the proxy, logged in as alice, `mailbox` selected."""
    sock = socket.create_connection(("127.0.0.1", front.port), timeout=30)
    reader = sock.makefile("rb")
    assert reader.readline().startswith(b"* OK")
    for tag, command in ((b"l", f"LOGIN {USER} {upstream.users[USER]}"),
                         (b"s", f"SELECT {mailbox}")):
        sock.sendall(tag + b" " + command.encode() + b"\r\n")
        while not (line := reader.readline()).startswith(tag + b" "):
            assert line, "the proxy closed the connection"
        assert line.startswith(tag + b" OK"), line
    reader.close()
    return sock


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset, as a client that crashes or loses its network does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _slot_given_back(front: ImapFront, before: int) -> None:
    deadline = time.monotonic() + 20
    while front.user_ip_counts.get(SLOT, 0) != before:
        assert time.monotonic() < deadline, "the session of the vanished client did not end"
        time.sleep(0.05)


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records
            if r.levelno >= logging.ERROR]


def _still_serves(front: ImapFront, upstream: Upstream, mailbox: str, wanted: bytes) -> None:
    with imaplib.IMAP4("127.0.0.1", front.port, timeout=60) as imap:
        imap.login(USER, upstream.users[USER])
        assert imap.select(mailbox)[0] == "OK"
        typ, data = imap.fetch("1", "(BODY.PEEK[TEXT])")
        assert typ == "OK"
        assert any(isinstance(d, tuple) and wanted in d[1] for d in data), data


def test_a_client_reset_while_a_large_message_is_relayed(
        front: ImapFront, upstream: Upstream, caplog: pytest.LogCaptureFixture) -> None:
    body = b"".join(b"line %07d of a large plain message\r\n" % i for i in range(200_000))
    mailbox = _mailbox(upstream, [_message("large", body)])  # 7.4 MB
    before = front.user_ip_counts.get(SLOT, 0)
    with caplog.at_level(logging.INFO):
        sock = _selected(front, upstream, mailbox)
        sock.sendall(b"f FETCH 1 BODY.PEEK[]\r\n")
        received = 0
        while received < 256 * 1024:  # well into the literal, far from its end
            chunk = sock.recv(65536)
            assert chunk
            received += len(chunk)
        _reset(sock)
        _slot_given_back(front, before)
        assert _errors(caplog) == []
    _still_serves(front, upstream, mailbox, b"line 0000000 of a large plain message")


def test_the_client_side_closed_under_a_relayed_answer(
        front: ImapFront, upstream: Upstream, loop: LoopThread,
        caplog: pytest.LogCaptureFixture) -> None:
    body = b"".join(b"line %07d of another large message\r\n" % i for i in range(200_000))
    mailbox = _mailbox(upstream, [_message("large", body)])
    before = front.user_ip_counts.get(SLOT, 0)

    async def close_the_clients_transport() -> None:
        [connection] = [c for c in front._connections if c.counted == SLOT]
        connection.writer.transport.abort()  # as when the kernel reports the peer gone

    with caplog.at_level(logging.INFO):
        sock = _selected(front, upstream, mailbox)
        sock.sendall(b"f FETCH 1 BODY.PEEK[]\r\n")
        assert sock.recv(65536)
        loop.run(close_the_clients_transport())  # the upstream is still sending
        _slot_given_back(front, before)
        sock.close()
        assert _errors(caplog) == []
    _still_serves(front, upstream, mailbox, b"line 0000000 of another large message")


def test_a_client_reset_while_its_encrypted_messages_are_opened(
        front: ImapFront, upstream: Upstream, caplog: pytest.LogCaptureFixture) -> None:
    alice = people().ids["alice"]
    messages = [encrypted_signed(_message(f"sealed {i}", b"sealed body %d\r\n" % i), alice,
                                 alice) for i in range(60)]
    mailbox = _mailbox(upstream, messages)
    before = front.user_ip_counts.get(SLOT, 0)
    with caplog.at_level(logging.INFO):
        sock = _selected(front, upstream, mailbox)
        sock.sendall(b"f FETCH 1:* BODY.PEEK[]\r\n")
        assert sock.recv(100)  # the first answers are on their way; most are being opened
        _reset(sock)
        _slot_given_back(front, before)
        assert _errors(caplog) == []
    _still_serves(front, upstream, mailbox, b"sealed body 0")


def test_a_failure_handing_over_opened_messages_ends_the_session(
        front: ImapFront, upstream: Upstream, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug where opened messages are handed to the session (a task of its own) is said
    once and ends that session with a BYE: the client is not left waiting for ever."""
    alice = people().ids["alice"]
    mailbox = _mailbox(upstream, [encrypted_signed(_message("sealed", b"sealed body\r\n"),
                                                   alice, alice)])

    def broken(self: object, result: object) -> list[object]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(ImapSession, "message_opened", broken)
    with caplog.at_level(logging.INFO):
        sock = _selected(front, upstream, mailbox)
        sock.settimeout(20)
        sock.sendall(b"f FETCH 1 BODY.PEEK[]\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        sock.close()
    assert answer.endswith(b"* BYE Internal error\r\n"), answer[-200:]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        "IMAP session failed"]
