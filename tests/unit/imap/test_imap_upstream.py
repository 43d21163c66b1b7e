"""The one upstream IMAP connector (`imap.upstream`) and the login check built on aioimaplib,
against scripted hostile upstreams (the shapes of ../shared/vectors/east: responses injected
before the TLS handshake, PREAUTH, BYE, STARTTLS refused, overlong lines)."""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from smime_proxy.config import UpstreamEndpoint
from smime_proxy.control.imapcheck import check_login
from smime_proxy.harness.tls import ensure_tls
from smime_proxy.imap import upstream as upstream_module
from smime_proxy.imap.streams import StreamProtocol
from smime_proxy.imap.upstream import (
    MAX_LINE,
    UpstreamUnavailable,
    close_client,
    open_client,
    open_stream,
)

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, list[bytes]], Awaitable[None]]


@dataclass
class Scripted:
    port: int
    received: list[bytes] = field(default_factory=list)

    def endpoint(self, tls: str) -> UpstreamEndpoint:
        return UpstreamEndpoint("127.0.0.1", self.port, tls, verify=False, ca_file=None)  # type: ignore[arg-type]


Starter = Callable[[Script], Awaitable[Scripted]]
Opener = Callable[[UpstreamEndpoint], Awaitable[object]]


@pytest.fixture
async def scripted() -> AsyncIterator[Starter]:
    servers: list[asyncio.Server] = []

    async def start(script: Script) -> Scripted:
        received: list[bytes] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await script(reader, writer, received)
                await writer.drain()
                # keep the connection open until the client goes (it must not hang on us)
                while await reader.read(4096):
                    pass
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return Scripted(server.sockets[0].getsockname()[1], received)

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def _line(reader: asyncio.StreamReader, received: list[bytes]) -> bytes:
    line = await reader.readline()
    received.append(line)
    return line


def _starttls_then(extra: bytes) -> Script:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     received: list[bytes]) -> None:
        writer.write(b"* OK ready\r\n")
        line = await _line(reader, received)
        tag = line.split(b" ", 1)[0]
        writer.write(tag + b" OK begin TLS now\r\n" + extra)
        await writer.drain()
        received.append(await reader.read(4096))  # what the client sends next
    return script


def _greeting(greeting: bytes) -> Script:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     received: list[bytes]) -> None:
        writer.write(greeting)
        await writer.drain()
        received.append(await reader.read(4096))
    return script


OPENERS: dict[str, Opener] = {
    "stream": lambda e: open_stream(e, connect_timeout=2, handshake_timeout=2),
    "client": lambda e: open_client(e, connect_timeout=2, handshake_timeout=2),
}


@pytest.mark.parametrize("opener", sorted(OPENERS))
async def test_response_injected_before_the_handshake_is_refused(scripted: Starter,
                                                                 opener: str) -> None:
    server = await scripted(_starttls_then(b"a1 OK LOGIN completed\r\n"))
    with pytest.raises(UpstreamUnavailable, match="before the TLS handshake"):
        await OPENERS[opener](server.endpoint("starttls"))
    await asyncio.sleep(0.05)
    assert server.received[0].endswith(b" STARTTLS\r\n")
    assert server.received[1:] == [b""]  # closed: no ClientHello (0x16), no command


@pytest.mark.parametrize("opener", sorted(OPENERS))
async def test_starttls_refused_is_unavailable(scripted: Starter, opener: str) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     received: list[bytes]) -> None:
        writer.write(b"* OK ready\r\n")
        tag = (await _line(reader, received)).split(b" ", 1)[0]
        writer.write(tag + b" NO no TLS here\r\n")
        await writer.drain()
        received.append(await reader.read(4096))

    server = await scripted(script)
    with pytest.raises(UpstreamUnavailable, match="refused STARTTLS"):
        await OPENERS[opener](server.endpoint("starttls"))
    await asyncio.sleep(0.05)
    assert b"LOGIN" not in b"".join(server.received)


@pytest.mark.parametrize("opener", sorted(OPENERS))
@pytest.mark.parametrize("greeting", [b"* PREAUTH logged in already\r\n",
                                      b"* BYE go away, not OK\r\n", b"+ OK?\r\n"])
@pytest.mark.parametrize("tls", ["none", "starttls"])
async def test_only_an_ok_greeting_is_accepted(scripted: Starter, opener: str, greeting: bytes,
                                             tls: str) -> None:
    server = await scripted(_greeting(greeting))
    with pytest.raises(UpstreamUnavailable, match="greeting"):
        await OPENERS[opener](server.endpoint(tls))


@pytest.mark.parametrize("opener", sorted(OPENERS))
async def test_overlong_line_before_tls_is_refused(scripted: Starter, opener: str) -> None:
    server = await scripted(_greeting(b"* OK " + b"x" * (MAX_LINE + 10)))
    with pytest.raises(UpstreamUnavailable, match="overlong"):
        await OPENERS[opener](server.endpoint("starttls"))


async def test_nobody_listening_is_unavailable(scripted: Starter) -> None:
    server = await scripted(_greeting(b"* OK\r\n"))
    endpoint = UpstreamEndpoint("127.0.0.1", 1, "none", verify=False, ca_file=None)
    with pytest.raises(UpstreamUnavailable, match="cannot connect"):
        await open_stream(endpoint, connect_timeout=2, handshake_timeout=2)
    assert server.received == []


def _login_server(capabilities: bytes, accept: Callable[[bytes], bool]) -> Script:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     received: list[bytes]) -> None:
        writer.write(b"* OK ready\r\n")
        while line := await _line(reader, received):
            tag, _, rest = line.rstrip(b"\r\n").partition(b" ")
            verb = rest.split(b" ", 1)[0].upper()
            if verb == b"CAPABILITY":
                writer.write(b"* CAPABILITY " + capabilities + b"\r\n" + tag + b" OK done\r\n")
            elif verb in (b"LOGIN", b"AUTHENTICATE"):
                ok = accept(rest)
                result = b" OK logged in\r\n" if ok else b" NO [AUTHENTICATIONFAILED] no\r\n"
                writer.write(tag + result)
            elif verb == b"LOGOUT":
                writer.write(b"* BYE\r\n" + tag + b" OK bye\r\n")
            await writer.drain()
    return script


async def test_login_check_uses_sasl_ir_plain_for_any_utf8_password(scripted: Starter) -> None:
    expected = base64.b64encode("\0jürgen\0pässwörd \"x\"".encode())
    server = await scripted(_login_server(b"IMAP4rev1 SASL-IR AUTH=PLAIN",
                                          lambda rest: rest.endswith(b"PLAIN " + expected)))
    endpoint = server.endpoint("none")
    assert await check_login(endpoint, "jürgen", 'pässwörd "x"') is True
    assert await check_login(endpoint, "jürgen", "wrong") is False
    assert not any("pässwörd".encode() in line for line in server.received)


async def test_login_check_falls_back_to_quoted_login(scripted: Starter) -> None:
    server = await scripted(_login_server(
        b"IMAP4rev1", lambda rest: rest == b'LOGIN "alice" "pa\\"ss\\\\word"'))
    endpoint = server.endpoint("none")
    assert await check_login(endpoint, "alice", 'pa"ss\\word') is True
    assert await check_login(endpoint, "alice", "other") is False
    # not quotable and no SASL-IR: refused without sending it
    assert await check_login(endpoint, "alice", "pässwort") is False
    assert not any("pässwort".encode() in line for line in server.received)


async def test_login_check_refuses_control_characters_without_connecting(scripted: Starter) -> None:
    server = await scripted(_login_server(b"IMAP4rev1", lambda rest: True))
    for user, password in [("a\r\nb", "x"), ("a", "x\r\na2 LOGIN b c"), ("a", "x\0"), ("", "x")]:
        assert await check_login(server.endpoint("none"), user, password) is False
    assert server.received == []


async def test_client_is_usable_after_greeting(scripted: Starter) -> None:
    server = await scripted(_login_server(b"IMAP4rev1 ID", lambda rest: True))
    client = await open_client(server.endpoint("none"), connect_timeout=2, handshake_timeout=2)
    try:
        assert "ID" in client.capabilities
    finally:
        await close_client(client)


@pytest.mark.parametrize("nearby", [True, False])
async def test_a_nearby_upstream_gets_a_small_receive_window(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nearby: bool) -> None:
    """On a nearby upstream (127.0.0.1 here) the socket's receive buffer is small, so the
    loop's TLS layer never reads (and keeps) more than that at once (docs/imap-front.md
    "Memory"); a farther one (here: the threshold made 0) keeps the kernel's autotuning.
    Either way a large answer is read whole."""
    if not hasattr(socket, "TCP_INFO"):
        pytest.skip("no TCP_INFO here")
    if not nearby:
        monkeypatch.setattr(upstream_module, "NEARBY_RTT_US", 0)
    files = ensure_tls(tmp_path / "tls")
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(files.server_cert, files.server_key)
    answer = b"* 1 FETCH (BODY[] {1000000}\r\n" + b"x" * 1_000_000 + b")\r\na OK done\r\n"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* OK ready\r\n")
        await reader.readline()
        writer.write(answer)
        await writer.drain()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    endpoint = UpstreamEndpoint("127.0.0.1", port, "implicit", verify=True,
                                ca_file=files.ca_cert)
    reader, writer = await open_stream(endpoint, connect_timeout=2, handshake_timeout=2)
    try:
        sock = writer.get_extra_info("socket")
        receive = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        small = receive <= 2 * upstream_module.NEARBY_RECEIVE_BUFFER  # Linux doubles it
        assert small is nearby
        writer.write(b"a FETCH 1 BODY[]\r\n")
        assert await reader.readexactly(len(answer)) == answer
    finally:
        writer.close()
        server.close()
        await server.wait_closed()


async def test_bytes_a_shortcut_takes_never_reach_the_reader(tmp_path: Path) -> None:
    """`StreamProtocol.shortcut` sees every read first; what it takes is not given to the
    reader, `passed` counts what is (the shell compares it with what it read)."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* OK ready\r\n")
        await writer.drain()
        for piece in (b"taken-1 ", b"kept-1 ", b"taken-2 ", b"kept-2\r\n"):
            await reader.readline()  # one piece per line asked for: one read each
            writer.write(piece)
            await writer.drain()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    endpoint = UpstreamEndpoint("127.0.0.1", server.sockets[0].getsockname()[1], "none",
                                verify=False, ca_file=None)
    reader, writer = await open_stream(endpoint, connect_timeout=2, handshake_timeout=2)
    protocol = writer.transport.get_protocol()
    assert isinstance(protocol, StreamProtocol)
    shortcut_saw: list[bytes] = []

    told: list[tuple[int, int]] = []  # asserted after: a raise in the callback is asyncio's

    def shortcut(data: bytes, passed: int) -> bool:
        told.append((passed, protocol.passed))  # what the reader was given so far
        shortcut_saw.append(data)
        return data.startswith(b"taken")

    protocol.shortcut = shortcut
    passed_before = protocol.passed
    kept = b""
    try:
        for _ in range(4):
            writer.write(b"next\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)
        while not kept.endswith(b"\r\n"):
            kept += await reader.read(100)
    finally:
        writer.close()
        server.close()
        await server.wait_closed()
    assert kept == b"kept-1 kept-2\r\n"
    assert b"".join(shortcut_saw) == b"taken-1 kept-1 taken-2 kept-2\r\n"
    assert protocol.passed - passed_before == len(kept)
    assert told and all(passed == given for passed, given in told)
