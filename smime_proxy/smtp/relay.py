"""The upstream side of one client session: an aiosmtplib connection to the submission
server, authenticated with the client's own credentials, that carries this session's mail.

Every upstream reply that is not a success reaches the client with its code and text
(`UpstreamReply`); a timeout, a reset, a closed connection or a TLS failure raise
`UpstreamLost` (the client gets `451 4.4.2` and the session ends: its authentication lived
on that connection). TLS: `implicit` or `starttls` as configured, certificates verified
unless `verify: false`; `starttls` never falls back to plaintext when the server does not
offer it. aiosmtplib discards anything the server sent between its `220` to STARTTLS and
the handshake (RFC 3207 4.2). The message goes as one `BDAT ... LAST` chunk when the upstream
offers CHUNKING (RFC 3030; Postfix does), else as DATA.

Which commands to send (and which MAIL parameters) is the core's decision (`smtp.session`);
this class only carries them out.

May import: config, errors, smtp, tlsconfig, aiosmtplib, stdlib.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Iterator, Sequence
from typing import Any, NoReturn

import aiosmtplib

from smime_proxy.config import UpstreamEndpoint
from smime_proxy.errors import SmimeProxyError
from smime_proxy.smtp.session import format_reply
from smime_proxy.tlsconfig import upstream_context

DEFAULT_TIMEOUT = 100.0  # seconds per step (Postfix's smtp_*_timeout order of magnitude)


PIECE = 1 << 20


def _streamable(protocol: object, message: bytes) -> bool:
    """CRLF-only line ends, and an aiosmtplib protocol with the parts `_stream_data` uses."""
    if not all(hasattr(protocol, a) for a in ("_command_lock", "_response_pending",
                                              "_drain_helper", "read_response", "write")):
        return False
    crlf = message.count(b"\r\n")
    return message.count(b"\n") == crlf and message.count(b"\r") == crlf


def dot_stuffed_pieces(message: bytes) -> Iterator[bytes]:
    """The message dot-stuffed (RFC 5321 4.5.2) and ending in CRLF, in pieces of about
    `PIECE` bytes that each start at a line start (needs CRLF-only line ends)."""
    start = 0
    size = len(message)
    while start < size:
        cut = message.find(b"\n", min(start + PIECE, size) - 1) + 1 if start + PIECE < size \
            else size
        if cut <= 0:
            cut = size
        piece = message[start:cut]
        stuffed = piece.replace(b"\r\n.", b"\r\n..")
        if stuffed.startswith(b"."):
            stuffed = b"." + stuffed
        yield stuffed
        start = cut
    if not message.endswith(b"\r\n"):
        yield b"\r\n"


class UpstreamLost(SmimeProxyError):
    """The upstream connection is unusable (timeout, reset, closed, TLS failure)."""


class UpstreamReply(SmimeProxyError):
    """The upstream answered with a failure: relay `code` and `text` to the client."""

    def __init__(self, code: int, text: str) -> None:
        self.code = code
        self.text = text
        super().__init__(f"{code} {text}")

    def lines(self) -> str:
        return format_reply(self.code, self.text)



class SubmissionUpstream:
    """One upstream connection (not shared between client sessions)."""

    def __init__(self, endpoint: UpstreamEndpoint, *, timeout: float = DEFAULT_TIMEOUT,
                 local_hostname: str = "smime-proxy",
                 tls_context: ssl.SSLContext | None = None) -> None:
        """`tls_context`: the front's shared client context (`upstream_context(endpoint)`
        when not given; building one per connection reads the CA file again)."""
        self.endpoint = endpoint
        self.timeout = timeout
        if tls_context is None and endpoint.tls != "none":
            tls_context = upstream_context(endpoint)
        self._smtp = aiosmtplib.SMTP(
            hostname=endpoint.host, port=endpoint.port, timeout=timeout,
            use_tls=endpoint.tls == "implicit", start_tls=False,
            tls_context=tls_context if endpoint.tls != "none" else None,
            local_hostname=local_hostname,
        )
        self.connected = False

    def __repr__(self) -> str:
        return f"SubmissionUpstream({self.endpoint.host}:{self.endpoint.port}, {self.endpoint.tls})"

    @property
    def size_limit(self) -> int | None:
        value = self._smtp.esmtp_extensions.get("size", "")
        return int(value) if value.strip().isdigit() else None

    @property
    def eight_bit(self) -> bool:
        return "8bitmime" in self._smtp.esmtp_extensions

    @property
    def smtputf8(self) -> bool:
        return "smtputf8" in self._smtp.esmtp_extensions

    async def connect(self) -> None:
        try:
            await self._smtp.connect()
            await self._smtp.ehlo()
            if self.endpoint.tls == "starttls":
                if not self._smtp.supports_extension("starttls"):
                    raise UpstreamLost("the upstream does not offer STARTTLS")
                await self._smtp.starttls()
                await self._smtp.ehlo()
        except UpstreamLost:
            self.close()
            raise
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
            self.close()
            raise UpstreamLost(f"cannot connect to the upstream: {type(exc).__name__}") \
                from None
        self.connected = True

    async def login(self, user: str, password: str) -> None:
        """One attempt with one mechanism (PLAIN, else LOGIN): a failed login is not retried
        with other mechanisms (each attempt costs the server's failure delay)."""
        methods = self._smtp.supported_auth_methods
        if "plain" in methods:
            await self._call(self._smtp.auth_plain(user, password))
        elif "login" in methods:
            await self._call(self._smtp.auth_login(user, password))
        else:
            raise UpstreamReply(454, "4.7.0 the upstream offers no usable AUTH mechanism")

    async def mail(self, sender: str, options: Sequence[str]) -> str:
        return await self._command(b"MAIL", b"FROM:<" + sender.encode() + b">",
                                   *(o.encode() for o in options))

    async def rcpt(self, recipient: str, options: Sequence[str] = ()) -> str:
        return await self._command(b"RCPT", b"TO:<" + recipient.encode() + b">",
                                   *(o.encode() for o in options), ok=(250, 251))

    async def _command(self, *args: bytes, ok: tuple[int, ...] = (250,)) -> str:
        """One command as the core decided it (the address exactly as the client gave it;
        aiosmtplib's own `mail`/`rcpt` re-parse it with `email.utils`, ~30 us a command)."""
        response = await self._call(self._smtp.execute_command(*args, timeout=self.timeout))
        if response.code not in ok:
            self._failed(response.code, response.message)
        return format_reply(response.code, response.message)

    async def rset(self) -> None:
        if self.connected:
            await self._call(self._smtp.rset())

    @property
    def chunking(self) -> bool:
        return "chunking" in self._smtp.esmtp_extensions

    async def data(self, message: bytes) -> str:
        """Send the message; the upstream's final reply (UpstreamReply unless 250)."""
        if _streamable(self._smtp.protocol, message):
            send = self._stream_bdat if self.chunking else self._stream_data
            response = await self._call(send(message))
        else:
            response = await self._call(self._smtp.data(message))
        return format_reply(response.code, response.message)

    async def _stream_data(self, message: bytes) -> aiosmtplib.SMTPResponse:
        """DATA written in dot-stuffed pieces of about 1 MiB, each drained before the next.

        aiosmtplib's own `data()` makes three whole copies of the message (line-end
        normalisation, dot-stuffing, terminator) and hands the whole result to the transport
        at once (which buffers it again): 4-5 x a 25 MB message. Used only for messages whose
        line ends are all CRLF (then normalisation is the identity), through aiosmtplib's
        protocol object (its command lock, response flag and flow control).
        """
        protocol: Any = self._smtp.protocol
        async with protocol._command_lock:
            protocol._response_pending = True
            protocol.write(b"DATA\r\n")
            start = await protocol.read_response(timeout=self.timeout)
            if start.code != 354:
                self._failed(start.code, start.message)
            protocol._response_pending = True
            last = b""
            for piece in dot_stuffed_pieces(message):
                if last:
                    protocol.write(last)
                    if getattr(protocol, "_paused", True):
                        await asyncio.wait_for(protocol._drain_helper(), self.timeout)
                last = piece
            protocol.write(last + b".\r\n")  # one write (and TLS record) less per message
            response: aiosmtplib.SMTPResponse = await protocol.read_response(
                timeout=self.timeout)
        if response.code != 250:
            self._failed(response.code, response.message)
        return response

    async def _stream_bdat(self, message: bytes) -> aiosmtplib.SMTPResponse:
        """The message as one `BDAT <size> LAST` chunk (RFC 3030), when the upstream offers
        CHUNKING: no dot-stuffing copy, and one command, one write and one reply where DATA
        takes two of each (DATA, 354, the data, the reply). Large messages are written in
        `PIECE` slices, each drained before the next. The bytes the upstream stores are the
        same as with DATA; a missing final CRLF is added, as for DATA."""
        protocol: Any = self._smtp.protocol
        tail = b"" if message.endswith(b"\r\n") else b"\r\n"
        head = b"BDAT %d LAST\r\n" % (len(message) + len(tail))
        async with protocol._command_lock:
            protocol._response_pending = True
            if len(message) <= PIECE:
                protocol.write(b"".join((head, message, tail)))
            else:
                protocol.write(head)
                view = memoryview(message)
                for start in range(0, len(view), PIECE):
                    protocol.write(view[start:start + PIECE])
                    if getattr(protocol, "_paused", True):
                        await asyncio.wait_for(protocol._drain_helper(), self.timeout)
                if tail:
                    protocol.write(tail)
            response: aiosmtplib.SMTPResponse = await protocol.read_response(
                timeout=self.timeout)
        if response.code != 250:
            self._failed(response.code, response.message)
        return response

    def _failed(self, code: int, text: str) -> NoReturn:
        """A failure reply: `UpstreamLost` for 421 (the server is closing), else relay it."""
        if code == 421:
            self.close()
            raise UpstreamLost("the upstream closed the connection (421)")
        raise UpstreamReply(code, text)

    async def quit(self) -> None:
        if self.connected:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await self._smtp.quit()
        self.close()

    def close(self) -> None:
        self.connected = False
        self._smtp.close()

    async def _call(self, awaitable: Awaitable[aiosmtplib.SMTPResponse]
                    ) -> aiosmtplib.SMTPResponse:
        try:
            response = await awaitable
        except aiosmtplib.SMTPServerDisconnected:
            self.close()
            raise UpstreamLost("the upstream closed the connection") from None
        except aiosmtplib.SMTPTimeoutError:
            self.close()
            raise UpstreamLost("the upstream did not answer in time") from None
        except aiosmtplib.SMTPResponseException as exc:
            self._failed(exc.code, exc.message)
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError):
            self.close()
            raise UpstreamLost("the upstream connection failed") from None
        except ValueError:  # aiosmtplib's check: a CR or LF in a command argument
            raise UpstreamReply(501, "5.5.4 invalid command argument") from None
        return response
