"""The one connector to the upstream IMAP server: connect, TLS per the config (implicit,
STARTTLS or none; certificate and host name verified unless `verify: false`), the greeting
(`* OK` only: `PREAUTH` and `BYE` are refused), one line limit (`imap.wire.MAX_LINE`).

Two ways to use the connection:

- `open_stream()` gives asyncio streams for the proxy session of a client (imap/connection.py).
  That session keeps its own byte-exact sans-I/O wire (`imap.wire`): a proxy must pass
  literals and responses it does not understand through untouched, which a client library
  that parses everything cannot do.
- `open_client()` gives an aioimaplib client, for the work the proxy does as a client of its
  own (the control endpoint's login check, operations on stored messages).

STARTTLS (notes/security.md item 7): the plaintext phase is read from the raw socket, so any
byte the server sends after its tagged OK and before the handshake is seen, and the
connection is refused before a TLS ClientHello is sent. aioimaplib has no STARTTLS of its
own: it is handed the socket only after that check, and then speaks TLS from the first byte.

May import: config, errors, imap.streams, imap.wire, tlsconfig, aioimaplib, stdlib.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import sys
from typing import Final

from aioimaplib import aioimaplib

from smime_proxy.config import UpstreamEndpoint
from smime_proxy.errors import SmimeProxyError
from smime_proxy.imap.streams import StreamProtocol
from smime_proxy.imap.wire import MAX_LINE
from smime_proxy.tlsconfig import upstream_context

STARTTLS_TAG: Final = b"~spx0"
READ_SIZE: Final = 4096


class UpstreamUnavailable(SmimeProxyError):
    """The upstream IMAP server cannot be used (down, slow, TLS or protocol trouble)."""


class _Client(aioimaplib.IMAP4ClientProtocol):  # type: ignore[misc]  # untyped library
    """aioimaplib's client with our greeting rule and line limit (it has neither), and a way
    to wait until its connection is really closed (a TLS close is asynchronous)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.gone = asyncio.Event()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.gone.set()

    async def welcome(self, command: bytes) -> None:
        if not _greeting_ok(command):
            async with self.state_condition:
                self.state = aioimaplib.LOGOUT
                self.state_condition.notify_all()
            return
        await super().welcome(command)

    def data_received(self, d: bytes) -> None:
        super().data_received(d)
        if len(self.incomplete_line) > MAX_LINE and self.transport is not None:
            self.transport.close()


def _greeting_ok(line: bytes) -> bool:
    """Only `* OK` is a greeting to go on with (PREAUTH would skip our login, BYE refuses)."""
    return line.upper().startswith(b"* OK")


def _check_greeting(line: bytes) -> None:
    if not _greeting_ok(line):
        raise UpstreamUnavailable("unexpected IMAP greeting (only * OK is accepted)")


async def _raw_line(loop: asyncio.AbstractEventLoop, sock: socket.socket,
                    buffer: bytearray) -> bytes:
    while b"\n" not in buffer:
        if len(buffer) > MAX_LINE:
            raise UpstreamUnavailable("overlong line from the IMAP server")
        chunk = await loop.sock_recv(sock, READ_SIZE)
        if not chunk:
            raise UpstreamUnavailable("the IMAP server closed the connection")
        buffer += chunk
    end = buffer.index(b"\n") + 1
    line = bytes(buffer[:end])
    del buffer[:end]
    return line


NEARBY_RTT_US: Final = 250  # at most this round trip, the upstream counts as nearby
NEARBY_RECEIVE_BUFFER: Final = 32 * 1024  # SO_RCVBUF then (Linux doubles it)


def _small_receive_window_nearby(sock: socket.socket) -> None:
    """A small receive buffer for an upstream that is near (same host, container network,
    LAN: the round trip TCP measured while connecting, Linux `TCP_INFO`, at most
    `NEARBY_RTT_US`).

    Why: the event loop's TLS layer (uvloop's) reads the socket into a 256 KiB buffer per
    connection and hands OpenSSL's memory BIO pieces that size; both stay as large as the
    largest read for the connection's life. A connection that once relayed a large message
    kept 672-685 KB (bench/imap.py `idle_after_fetch_rss_per_connection_kb`); with reads
    bounded by this buffer, 203-223 KB. The window it allows still carries 128 MB/s at that
    round trip; a farther upstream keeps the kernel's autotuning (a small window there
    would slow large messages). asyncio's TLS layer with 32 KiB reads was tried instead:
    314-328 KB, but more CPU per command (imaptest 0.57-0.61 of Dovecot against 0.64-0.66,
    three interleaved pairs). No effect where `TCP_INFO` is not available."""
    tcp_info = getattr(socket, "TCP_INFO", None)
    if tcp_info is None:
        return
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, tcp_info, 104)
        if len(info) < 72:  # a kernel whose tcp_info has no tcpi_rtt
            return
        rtt = int.from_bytes(info[68:72], sys.byteorder)  # struct tcp_info.tcpi_rtt, µs
        if 0 < rtt <= NEARBY_RTT_US:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, NEARBY_RECEIVE_BUFFER)
    except OSError:
        return


async def _connect_socket(endpoint: UpstreamEndpoint, limit: float) -> socket.socket:
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM), limit)
    except (OSError, TimeoutError):
        raise UpstreamUnavailable("cannot resolve the IMAP server's name") from None
    error = "no address"
    for family, kind, proto, _name, address in infos:
        candidate = socket.socket(family, kind, proto)
        candidate.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(candidate, address), limit)
        except (OSError, TimeoutError) as exc:
            candidate.close()
            error = type(exc).__name__
            continue
        _small_receive_window_nearby(candidate)
        return candidate
    raise UpstreamUnavailable(f"cannot connect to the IMAP server ({error})")


async def _plaintext_starttls(sock: socket.socket) -> bytes:
    """Greeting, `STARTTLS`, its tagged OK and nothing after it; returns the greeting."""
    loop = asyncio.get_running_loop()
    buffer = bytearray()
    greeting = await _raw_line(loop, sock, buffer)
    _check_greeting(greeting)
    await loop.sock_sendall(sock, STARTTLS_TAG + b" STARTTLS\r\n")
    while True:
        line = await _raw_line(loop, sock, buffer)
        if line.startswith(STARTTLS_TAG + b" "):
            break
    if not line[len(STARTTLS_TAG) + 1 :].upper().startswith(b"OK"):
        raise UpstreamUnavailable("the IMAP server refused STARTTLS")
    if buffer:
        raise UpstreamUnavailable("the IMAP server sent data before the TLS handshake")
    return greeting


def _tls(endpoint: UpstreamEndpoint, handshake_timeout: float
         ) -> tuple[ssl.SSLContext | None, str | None, float | None]:
    """(context, server name, handshake timeout) for asyncio, all None without TLS."""
    if endpoint.tls == "none":
        return None, None, None
    return upstream_context(endpoint), endpoint.host, handshake_timeout


async def _prepared_socket(endpoint: UpstreamEndpoint, connect_timeout: float
                           ) -> tuple[socket.socket, bytes | None]:
    """A connected socket, past STARTTLS's plaintext phase when the endpoint uses it (then
    with the greeting already read)."""
    sock = await _connect_socket(endpoint, connect_timeout)
    try:
        greeting = await _plaintext_starttls(sock) if endpoint.tls == "starttls" else None
    except BaseException:
        sock.close()
        raise
    return sock, greeting


async def open_stream(endpoint: UpstreamEndpoint, *, connect_timeout: float,
                      handshake_timeout: float
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Streams to the upstream, greeting read and checked, ready for the first command.
    The writer's protocol is a `StreamProtocol` (`writer.transport.get_protocol()`)."""
    sock, greeting = await _prepared_socket(endpoint, connect_timeout)
    loop = asyncio.get_running_loop()
    try:
        context, name, handshake = _tls(endpoint, handshake_timeout)
        reader = asyncio.StreamReader(limit=MAX_LINE)
        protocol = StreamProtocol(reader)
        transport, _ = await loop.create_connection(
            lambda: protocol, sock=sock, ssl=context, server_hostname=name,
            ssl_handshake_timeout=handshake)
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    except BaseException:
        sock.close()
        raise
    if greeting is None:
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\n"), connect_timeout)
            _check_greeting(line)
        except asyncio.IncompleteReadError:
            writer.close()
            raise UpstreamUnavailable("the IMAP server closed the connection before its "
                                      "greeting") from None
        except (asyncio.LimitOverrunError, TimeoutError):
            writer.close()
            raise UpstreamUnavailable("no IMAP greeting") from None
        except UpstreamUnavailable:
            writer.close()
            raise
    return reader, writer


async def open_client(endpoint: UpstreamEndpoint, *, connect_timeout: float,
                      handshake_timeout: float) -> aioimaplib.IMAP4ClientProtocol:
    """An aioimaplib client in the not-authenticated state, its capabilities read (after
    TLS). Close it with `close_client`."""
    loop = asyncio.get_running_loop()
    sock, greeting = await _prepared_socket(endpoint, connect_timeout)
    protocol = _Client(loop)
    try:
        context, name, handshake = _tls(endpoint, handshake_timeout)
        await loop.create_connection(lambda: protocol, sock=sock, ssl=context,
                                     server_hostname=name, ssl_handshake_timeout=handshake)
    except BaseException:
        sock.close()
        raise
    try:
        if greeting is not None:
            # no second greeting after STARTTLS (RFC 9051 6.2.1): the one read in plaintext
            # moves the client on, and it asks for the capabilities again over TLS
            await asyncio.wait_for(protocol.welcome(greeting.rstrip(b"\r\n")), connect_timeout)
        else:
            await asyncio.wait_for(protocol.wait("AUTH|NONAUTH|LOGOUT"), connect_timeout)
        if protocol.state != aioimaplib.NONAUTH:
            raise UpstreamUnavailable("unexpected IMAP greeting (only * OK is accepted)")
    except (aioimaplib.AioImapException, TimeoutError):
        await close_client(protocol)
        raise UpstreamUnavailable("no usable IMAP greeting") from None
    except BaseException:
        await close_client(protocol)
        raise
    return protocol


async def close_client(protocol: aioimaplib.IMAP4ClientProtocol, limit: float = 1.0) -> None:
    """Close the connection and wait until it is gone (a TLS close first says goodbye to the
    server); after `limit` seconds it is aborted, so no socket outlives the call."""
    transport = protocol.transport
    if transport is None:
        return
    transport.close()
    gone = getattr(protocol, "gone", None)
    if gone is None:
        return
    try:
        await asyncio.wait_for(gone.wait(), limit)
    except TimeoutError:
        transport.abort()


__all__ = ["MAX_LINE", "UpstreamUnavailable", "close_client", "open_client",
           "open_stream"]


_QUOTABLE = frozenset(range(0x20, 0x7F))


def _quoted(value: str) -> str | None:
    """An IMAP quoted string, or None when the value cannot be one (non-ASCII)."""
    if not all(ord(c) in _QUOTABLE for c in value):
        return None
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


async def authenticate(client: aioimaplib.IMAP4ClientProtocol, user: str,
                       password: str) -> bool:
    """Log `client` in; True on OK, False on NO/BAD; UpstreamUnavailable when the server
    does not answer. `AUTHENTICATE PLAIN` with an initial response (RFC 4959) when offered
    (base64: any UTF-8 user name or password), else `LOGIN` with quoted strings, which carry
    ASCII only (RFC 9051 4.3): non-ASCII credentials are then refused here. The password is
    never logged and never appears in an exception."""
    capabilities = {c.upper() for c in client.capabilities}
    if "SASL-IR" in capabilities and "AUTH=PLAIN" in capabilities:
        answer = base64.b64encode(f"\0{user}\0{password}".encode()).decode("ascii")
        command = aioimaplib.Command("AUTHENTICATE", client.new_tag(), "PLAIN", answer,
                                     loop=client.loop)
    else:
        quoted_user, quoted_password = _quoted(user), _quoted(password)
        if quoted_user is None or quoted_password is None:
            return False
        command = aioimaplib.Command("LOGIN", client.new_tag(), quoted_user,
                                     quoted_password, loop=client.loop)
    try:
        response = await client.execute(command)
    except aioimaplib.AioImapException:
        raise UpstreamUnavailable("the IMAP server did not answer the login") from None
    if response.result not in ("OK", "NO", "BAD"):
        raise UpstreamUnavailable("the IMAP server did not answer the login")
    ok: bool = response.result == "OK"
    if ok:
        client.state = aioimaplib.AUTH
    return ok
