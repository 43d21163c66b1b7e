"""The IMAP front's shell against a scripted fake upstream on 127.0.0.1: the upstream dying
in the middle of a FETCH literal, an upstream injecting a response before its STARTTLS
handshake, graceful stop, the per-user connection limit, autologout.

Async tests on pytest-asyncio's loop: the front, the scripted upstream and the client (raw
asyncio streams speaking IMAP lines) share it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from smime_proxy.config import ImapConfig, UpstreamEndpoint
from smime_proxy.imap.server import ImapFront, ImapSettings
from support.imap_proxy import imap_services
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
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "close-before-greeting":  # Dovecot at its imap-login process_limit
            writer.close()
            return
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


class Client:
    """An IMAP client as raw lines: enough to drive the proxy and see exactly what it says."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.greeting = b""

    @classmethod
    async def connect(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        client.greeting = await asyncio.wait_for(reader.readline(), 20)
        return client

    async def command(self, tag: str, text: str) -> list[bytes]:
        """Send one command; the lines up to its tagged response (or to the close)."""
        self.writer.write(f"{tag} {text}\r\n".encode())
        await self.writer.drain()
        lines: list[bytes] = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), 20)
            lines.append(line)
            if not line or line.startswith(tag.encode() + b" "):
                return lines

    async def rest(self) -> bytes:
        """Everything until the proxy closes the connection."""
        return await asyncio.wait_for(self.reader.read(), 20)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


@dataclass
class Env:
    fake: FakeUpstream
    front: ImapFront
    clients: list[Client] = field(default_factory=list)

    async def client(self, login: str | None = None) -> Client:
        client = await Client.connect(self.front.port)
        self.clients.append(client)
        if login is not None:
            assert (await client.command("l1", f"LOGIN {login} pw"))[-1].startswith(b"l1 OK")
        return client


Start = Callable[..., "AbstractAsyncContextManager[Env]"]


@asynccontextmanager
async def _env(tmp_path: Path, mode: str, tls: str = "none",
               settings: ImapSettings | None = None,
               imap: ImapConfig | None = None) -> AsyncIterator[Env]:
    """`settings` as a test gives them, else from the config (its `imap` section: `imap`)."""
    fake = FakeUpstream(mode)
    await fake.start()
    endpoint = UpstreamEndpoint(host="127.0.0.1", port=fake.port, tls=tls,  # type: ignore[arg-type]
                                verify=False, ca_file=None)
    services = imap_services(tmp_path, key_world(), endpoint)
    if imap is not None:
        services = replace(services, config=replace(services.config, imap=imap))
    front = ImapFront(services, settings=settings)
    await front.start()
    env = Env(fake, front)
    try:
        yield env
    finally:
        for client in env.clients:
            await client.close()
        await front.stop(1.0)
        await fake.stop()


async def test_upstream_dying_mid_fetch_closes_the_client_cleanly(tmp_path: Path) -> None:
    async with _env(tmp_path, "die-in-fetch") as env:
        client = await env.client(login="alice")
        assert (await client.command("s1", "SELECT INBOX"))[-1].startswith(b"s1 OK")
        lines = await client.command("f1", "UID FETCH 1 BODY.PEEK[]")
        # no partial message is passed on as if it were the message: BYE, then the close
        assert lines[-1] == b""
        assert lines[0].startswith(b"* BYE")
        assert not any(b"partial" in line for line in lines)


async def test_upstream_injecting_before_its_handshake_is_refused(tmp_path: Path) -> None:
    async with _env(tmp_path, "inject-before-tls", tls="starttls") as env:
        client = await env.client()
        assert b"UNAVAILABLE" in client.greeting
        assert client.greeting.startswith(b"* BYE")
        assert await client.rest() == b""
        assert env.fake.commands == [b"STARTTLS\r\n"]  # nothing else, no credentials


async def test_an_upstream_closing_before_its_greeting_is_named(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """What a client and the admin see when the upstream is at its connection limit."""
    async with _env(tmp_path, "close-before-greeting") as env:
        client = await env.client()
        assert client.greeting == (b"* BYE [UNAVAILABLE] The mail server closed the connection"
                                   b" before its greeting; try again later\r\n")
        assert await client.rest() == b""
    assert any("closed the connection" in r.getMessage() and "connection limit" in
               r.getMessage() for r in caplog.records)


async def test_graceful_stop_says_bye(tmp_path: Path) -> None:
    async with _env(tmp_path, "die-in-fetch") as env:
        client = await env.client(login="alice")
        await env.front.stop(1.0)
        rest = await client.rest()
        assert rest.startswith(b"* BYE")


@pytest.mark.parametrize("where", ["settings", "config"])
async def test_connections_per_user_and_address_are_limited(tmp_path: Path, where: str) -> None:
    """The limit as ImapSettings gives it, or the config's `imap.max_userip_connections`."""
    settings = ImapSettings(max_user_ip_connections=2) if where == "settings" else None
    imap = ImapConfig(max_userip_connections=2) if where == "config" else None
    async with _env(tmp_path, "die-in-fetch", settings=settings, imap=imap) as env:
        first = [await env.client(login="alice") for _ in range(2)]
        extra = await env.client()
        await extra.command("l1", "LOGIN alice pw")  # the upstream's OK, then:
        assert (await extra.rest()).startswith(b"* BYE [LIMIT]")
        other = await env.client(login="bob")  # another user is not affected
        assert (await other.command("n1", "NOOP"))[-1].startswith(b"n1 OK")
        await first[0].command("o1", "LOGOUT")  # a slot is free again once that session ended
        await first[0].close()
        for _ in range(1000):
            if env.front.user_ip_counts.get(("alice", "127.0.0.1")) == 1:
                break
            await asyncio.sleep(0.01)
        assert env.front.user_ip_counts.get(("alice", "127.0.0.1")) == 1
        again = await env.client(login="alice")
        assert (await again.command("n2", "NOOP"))[-1].startswith(b"n2 OK")


async def test_idle_client_is_logged_out(tmp_path: Path) -> None:
    async with _env(tmp_path, "die-in-fetch", settings=ImapSettings(idle_timeout=0.3)) as env:
        client = await env.client(login="alice")  # then nothing is sent
        assert await client.rest() == b"* BYE Autologout; idle for too long\r\n"


@pytest.mark.parametrize("turns", ["in callbacks", "by the pumps"])
async def test_a_session_failing_ends_only_that_session(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch, turns: str) -> None:
    """A bug in the session on a logged-in client's command, taken in the protocol callback
    (`ClientConnection._turn_now`) or, with those turned off, by the client's pump: that
    client is told `* BYE Internal error` and closed, the log says so once without the
    command's text, and the front serves the next client."""
    from smime_proxy.imap.connection import ClientConnection
    from smime_proxy.imap.session import ImapSession

    if turns == "by the pumps":
        monkeypatch.setattr(ClientConnection, "_turn_now", lambda *args: False)

    client_data = ImapSession.client_data

    def failing(session: ImapSession, data: bytes) -> list[object]:
        if b"SECRET-TEXT" in data:
            raise RuntimeError("a bug")
        return client_data(session, data)  # type: ignore[return-value]

    monkeypatch.setattr(ImapSession, "client_data", failing)
    async with _env(tmp_path, "plain") as env:
        client = await env.client(login="alice")
        assert (await client.command("n1", "NOOP"))[-1].startswith(b"n1 OK")
        lines = await client.command("x1", 'SEARCH SUBJECT "SECRET-TEXT"')
        assert lines[0] == b"* BYE Internal error\r\n" and lines[-1] == b""
        other = await env.client(login="alice")
        assert (await other.command("n2", "NOOP"))[-1].startswith(b"n2 OK")
    failed = [r for r in caplog.records if r.getMessage() == "IMAP session failed"]
    assert len(failed) == 1 and getattr(failed[0], "reason", None) == "RuntimeError"
    assert not any("SECRET-TEXT" in r.getMessage() for r in caplog.records)
