"""Check a user's mail credentials with one IMAP LOGIN to the upstream (asyncio, no imaplib).

`check_login(endpoint, user, password)` connects (TLS per the config: implicit, STARTTLS or
none; the certificate and host name are verified unless `verify: false`), sends LOGIN, and
returns True (OK) or False (NO/BAD). Anything else - refused connection, timeout, TLS failure,
an unexpected greeting - raises `UpstreamUnavailable`, so the control endpoint answers 503
quickly instead of hanging. The password only ever goes into the LOGIN command; it is never
logged and never appears in an exception.

STARTTLS (notes/security.md item 7): the plaintext phase is read from the raw socket, so any
byte the server sends after its tagged OK and before the handshake is seen and refused.

May import: config, errors, stdlib.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl

from smime_proxy.config import UpstreamEndpoint
from smime_proxy.errors import SmimeProxyError
from smime_proxy.tlsconfig import upstream_context

CONNECT_TIMEOUT = 5.0
EXCHANGE_TIMEOUT = 15.0
MAX_LINE = 64 * 1024


class UpstreamUnavailable(SmimeProxyError):
    """The upstream IMAP server could not be asked (down, slow, TLS or protocol trouble)."""



def _astring(value: str) -> bytes | None:
    """A quoted IMAP string, or None when the value needs a literal (non-ASCII)."""
    data = value.encode("utf-8")
    if any(b > 0x7E or b < 0x20 for b in data):
        return None
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


class _Plain:
    """Line reading from a raw non-blocking socket (the phase before STARTTLS)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    async def line(self) -> bytes:
        loop = asyncio.get_running_loop()
        while b"\n" not in self.buffer:
            if len(self.buffer) > MAX_LINE:
                raise UpstreamUnavailable("the IMAP server sent an overlong line")
            chunk = await loop.sock_recv(self.sock, 4096)
            if not chunk:
                raise UpstreamUnavailable("the IMAP server closed the connection")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line + b"\n"


async def _read_tagged(reader: asyncio.StreamReader, tag: bytes) -> bytes:
    while True:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            raise UpstreamUnavailable("the IMAP server sent an overlong line") from None
        except asyncio.IncompleteReadError:
            raise UpstreamUnavailable("the IMAP server closed the connection") from None
        if line.startswith(tag + b" "):
            return line[len(tag) + 1 :].upper()
        if line.startswith(b"* BYE"):
            raise UpstreamUnavailable("the IMAP server said BYE")


async def _send_astring(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, value: str, tail: bytes
) -> None:
    """Send `value` as a quoted string, or as a synchronising literal, followed by `tail`."""
    quoted = _astring(value)
    if quoted is not None:
        writer.write(quoted + tail)
        return
    data = value.encode("utf-8")
    writer.write(b"{%d}\r\n" % len(data))
    await writer.drain()
    try:
        line = await reader.readuntil(b"\n")
    except (asyncio.LimitOverrunError, asyncio.IncompleteReadError):
        raise UpstreamUnavailable("the IMAP server closed the connection") from None
    if not line.startswith(b"+"):
        raise _Refused
    writer.write(data + tail)


class _Refused(Exception):
    """The server refused the LOGIN command itself (a tagged NO/BAD during a literal)."""


async def _login(endpoint: UpstreamEndpoint, user: str, password: str) -> bool:
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM),
            CONNECT_TIMEOUT,
        )
    except (OSError, TimeoutError):
        raise UpstreamUnavailable("cannot resolve the IMAP server's name") from None
    sock: socket.socket | None = None
    for family, kind, proto, _name, address in infos:
        candidate = socket.socket(family, kind, proto)
        candidate.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(candidate, address), CONNECT_TIMEOUT)
        except (OSError, TimeoutError):
            candidate.close()
            continue
        sock = candidate
        break
    if sock is None:
        raise UpstreamUnavailable("cannot connect to the IMAP server")
    writer: asyncio.StreamWriter | None = None
    try:
        use_tls = endpoint.tls != "none"
        if endpoint.tls == "starttls":
            plain = _Plain(sock)
            greeting = await plain.line()
            if not greeting.upper().startswith(b"* OK"):
                raise UpstreamUnavailable("unexpected IMAP greeting")
            await loop.sock_sendall(sock, b"s1 STARTTLS\r\n")
            while True:
                line = await plain.line()
                if line.startswith(b"s1 "):
                    break
            if not line[3:].upper().startswith(b"OK"):
                raise UpstreamUnavailable("the IMAP server refused STARTTLS")
            if plain.buffer:
                raise UpstreamUnavailable("the IMAP server sent data before the TLS handshake")
        reader, writer = await asyncio.open_connection(
            sock=sock,
            ssl=upstream_context(endpoint) if use_tls else None,
            server_hostname=endpoint.host if use_tls else None,
            ssl_handshake_timeout=CONNECT_TIMEOUT if use_tls else None,
            limit=MAX_LINE,
        )
        sock = None  # owned by the transport now
        if endpoint.tls != "starttls":
            try:
                greeting = await reader.readuntil(b"\n")
            except (asyncio.LimitOverrunError, asyncio.IncompleteReadError):
                raise UpstreamUnavailable("no IMAP greeting") from None
            if not greeting.upper().startswith(b"* OK"):
                raise UpstreamUnavailable("unexpected IMAP greeting")
        writer.write(b"a1 LOGIN ")
        try:
            await _send_astring(reader, writer, user, b" ")
            await _send_astring(reader, writer, password, b"\r\n")
        except _Refused:
            return False
        await writer.drain()
        result = await _read_tagged(reader, b"a1")
        ok = result.startswith(b"OK")
        with contextlib.suppress(Exception):
            writer.write(b"a2 LOGOUT\r\n")
            await writer.drain()
        return ok
    except ssl.SSLError:
        raise UpstreamUnavailable("TLS with the IMAP server failed") from None
    except (OSError, EOFError):
        raise UpstreamUnavailable("the connection to the IMAP server failed") from None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
        if sock is not None:
            sock.close()


async def check_login(
    endpoint: UpstreamEndpoint, user: str, password: str, *, limit: float = EXCHANGE_TIMEOUT
) -> bool:
    """True if the upstream accepts LOGIN user/password; `UpstreamUnavailable` if it cannot
    be asked within `limit` seconds. Credentials with CR, LF or NUL are refused here."""
    if any(c in user + password for c in "\r\n\x00") or not user or not password:
        return False
    try:
        return await asyncio.wait_for(_login(endpoint, user, password), limit)
    except TimeoutError:
        raise UpstreamUnavailable("the IMAP server did not answer in time") from None
