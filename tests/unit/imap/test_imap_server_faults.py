"""The IMAP front's shell against a scripted fake upstream on 127.0.0.1: the upstream dying
in the middle of a FETCH literal, an upstream injecting a response before its STARTTLS
handshake, an unverifiable upstream certificate, graceful stop. imaplib is the client."""

from __future__ import annotations

import asyncio
import imaplib
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from smime_proxy.config import UpstreamEndpoint
from smime_proxy.imap.server import ImapFront, ImapSettings
from support.imap_proxy import LoopThread, imap_services
from support.smtp_proxy import key_world


@dataclass
class FakeUpstream:
    """A tiny scripted IMAP server. `mode`: "die-in-fetch" or "inject-before-tls"."""

    mode: str
    commands: list[bytes] = field(default_factory=list)
    server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* OK fake ready\r\n")
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                self.commands.append(line.split(b" ")[1].upper() if b" " in line else line)
                tag = line.split(b" ", 1)[0]
                verb = line.split(b" ")[1].strip().upper()
                if verb == b"STARTTLS" and self.mode == "inject-before-tls":
                    writer.write(tag + b" OK Begin TLS\r\n* OK [CAPABILITY IMAP4rev1] x\r\n")
                elif verb == b"CAPABILITY":
                    writer.write(b"* CAPABILITY IMAP4rev1 LITERAL+ AUTH=PLAIN\r\n" + tag
                                 + b" OK done\r\n")
                elif verb == b"LOGIN":
                    writer.write(tag + b" OK Logged in\r\n")
                elif verb == b"SELECT":
                    writer.write(b"* 1 EXISTS\r\n" + tag + b" OK [READ-WRITE] done\r\n")
                elif verb in (b"FETCH", b"UID"):
                    writer.write(b"* 1 FETCH (UID 1 BODY[] {100}\r\nFrom: partial")
                    await writer.drain()
                    break
                else:
                    writer.write(tag + b" OK done\r\n")
                await writer.drain()
        finally:
            writer.close()


@dataclass
class Env:
    loop: LoopThread
    fake: FakeUpstream
    front: ImapFront


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    with LoopThread() as lt:
        yield lt


def _env(loop: LoopThread, tmp_path: Path, mode: str, tls: str = "none",
         verify: bool = False, settings: ImapSettings | None = None) -> Iterator[Env]:
    fake = FakeUpstream(mode)
    loop.run(fake.start())
    endpoint = UpstreamEndpoint(host="127.0.0.1", port=fake.port, tls=tls,  # type: ignore[arg-type]
                                verify=verify, ca_file=None)
    front = ImapFront(imap_services(tmp_path, key_world(), endpoint),
                      settings=settings or ImapSettings())
    loop.run(front.start())
    try:
        yield Env(loop, fake, front)
    finally:
        loop.run(front.stop(1.0))
        loop.run(fake.stop())


def test_upstream_dying_mid_fetch_closes_the_client_cleanly(loop: LoopThread,
                                                            tmp_path: Path) -> None:
    for env in _env(loop, tmp_path, "die-in-fetch"):
        imap = imaplib.IMAP4("127.0.0.1", env.front.port, timeout=20)
        imap.login("alice", "pw")
        assert imap.select("INBOX")[0] == "OK"
        with pytest.raises(imaplib.IMAP4.abort, match=r"connection lost"):
            imap.uid("FETCH", "1", "BODY.PEEK[]")
        imap.shutdown()


def test_upstream_injecting_before_its_handshake_is_refused(loop: LoopThread,
                                                             tmp_path: Path) -> None:
    for env in _env(loop, tmp_path, "inject-before-tls", tls="starttls"):
        with pytest.raises(imaplib.IMAP4.error, match="UNAVAILABLE"):
            imaplib.IMAP4("127.0.0.1", env.front.port, timeout=20)
        assert env.fake.commands == [b"STARTTLS\r\n"]  # nothing else, no credentials


def test_graceful_stop_says_bye(loop: LoopThread, tmp_path: Path) -> None:
    for env in _env(loop, tmp_path, "die-in-fetch"):
        imap = imaplib.IMAP4("127.0.0.1", env.front.port, timeout=20)
        imap.login("alice", "pw")
        loop.run(env.front.stop(1.0))
        with pytest.raises(imaplib.IMAP4.abort):
            imap.noop()
        imap.shutdown()


def test_connections_per_user_and_address_are_limited(loop: LoopThread,
                                                      tmp_path: Path) -> None:
    for env in _env(loop, tmp_path, "die-in-fetch",
                    settings=ImapSettings(max_user_ip_connections=2)):
        first = [imaplib.IMAP4("127.0.0.1", env.front.port, timeout=20) for _ in range(2)]
        for imap in first:
            imap.login("alice", "pw")
        extra = imaplib.IMAP4("127.0.0.1", env.front.port, timeout=20)
        extra.login("alice", "pw")
        with pytest.raises(imaplib.IMAP4.abort, match="LIMIT"):
            extra.noop()
        other = imaplib.IMAP4("127.0.0.1", env.front.port, timeout=20)
        other.login("bob", "pw")  # another user is not affected
        assert other.noop()[0] == "OK"
        first[0].logout()  # a slot is free again once the proxy has closed that session
        deadline = time.monotonic() + 10
        while env.front.user_ip_counts.get(("alice", "127.0.0.1")) != 1:
            assert time.monotonic() < deadline, env.front.user_ip_counts
            time.sleep(0.01)
        again = imaplib.IMAP4("127.0.0.1", env.front.port, timeout=20)
        again.login("alice", "pw")
        assert again.noop()[0] == "OK"
        for imap in (first[1], other, again):
            imap.logout()
        extra.shutdown()


def test_idle_client_is_logged_out(loop: LoopThread, tmp_path: Path) -> None:
    for env in _env(loop, tmp_path, "die-in-fetch", settings=ImapSettings(idle_timeout=0.3)):
        with socket.create_connection(("127.0.0.1", env.front.port), timeout=20) as sock:
            received = b""
            sock.sendall(b"a1 LOGIN alice pw\r\n")
            while True:  # greeting, login OK, then (nothing sent) the autologout
                chunk = sock.recv(4096)
                if not chunk:
                    break
                received += chunk
        assert b"a1 OK" in received
        assert received.endswith(b"* BYE Autologout; idle for too long\r\n")
