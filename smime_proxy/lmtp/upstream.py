"""The LMTP client side of the Store Encrypted filter: one transaction to the mail store's
LMTP server (Dovecot) with one reply per recipient (RFC 2033 4.2).

Written here because neither aiosmtplib nor smtplib reads LMTP's per-recipient DATA replies
(smtplib reads one: bpo-32803). Commands are pipelined when the store offers PIPELINING
(RFC 2920; Dovecot does). `StorePool` keeps connections open between transactions.
Plaintext: the filter and the store talk on a trusted network, as the MTA and the store did
before the filter.
A reply the store did not give (connection lost, timeout) is `None` for that recipient: the
caller answers it with a 4xx so that the MTA retries.

May import: errors, event_loop, smtp.relay, stdlib.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from smime_proxy.event_loop import write_if_open
from smime_proxy.smtp.relay import dot_stuffed_pieces

_BARE_LF = re.compile(rb"(?<!\r)\n")
MAX_REPLY_LINES = 100
ONE_WRITE = 4 * 1024 * 1024  # a message up to this size is written in one go


@dataclass(frozen=True)
class Reply:
    code: int
    text: str  # the whole reply, lines joined by CRLF, without the final CRLF

    @property
    def line(self) -> str:
        """The reply as one line a client may be given (the last line's text)."""
        last = self.text.rsplit("\r\n", 1)[-1]
        return last if last[:3].isdigit() else f"{self.code} {last}"


class LmtpLost(Exception):
    """The store's connection failed (reset, timeout, garbage)."""


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 timeout: float) -> None:
        self.reader, self.writer, self.timeout = reader, writer, timeout
        self.pipelining = False

    async def reply(self) -> Reply:
        lines: list[str] = []
        while len(lines) < MAX_REPLY_LINES:
            try:
                raw = await asyncio.wait_for(self.reader.readline(), self.timeout)
            except (TimeoutError, OSError, ValueError) as exc:
                raise LmtpLost(type(exc).__name__) from None
            if not raw.endswith(b"\n"):
                raise LmtpLost("connection closed")
            line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
            if len(line) < 3 or not line[:3].isdigit():
                raise LmtpLost("not an LMTP reply")
            lines.append(line)
            if len(line) == 3 or line[3] == " ":
                return Reply(int(line[:3]), "\r\n".join(lines))
        raise LmtpLost("reply too long")

    async def command(self, line: str) -> Reply:
        self.writer.write(line.encode("utf-8") + b"\r\n")
        return await self.reply()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


async def _open(host: str, port: int, step_seconds: float) -> _Connection | None:
    """A connection greeted and LHLO'd, or None."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port),
                                                step_seconds)
    except (TimeoutError, OSError):
        return None
    connection = _Connection(reader, writer, step_seconds)
    try:
        if (await connection.reply()).code == 220:
            hello = await connection.command("LHLO smime-proxy")
            if hello.code == 250:
                connection.pipelining = "PIPELINING" in hello.text.upper()
                return connection
    except (LmtpLost, OSError):
        pass
    await connection.close()
    return None


async def _transaction(connection: _Connection, sender: str, recipients: Sequence[str],
                       message: bytes, mail_options: Sequence[str],
                       results: list[Reply | None]) -> str:
    """One MAIL..data on an open connection, filling `results`. Returns "done" (the
    connection may carry another transaction), "stale" (it failed before the store replied
    to anything: nothing was delivered) or "ended" (close it)."""
    mail_line = " ".join([f"MAIL FROM:<{sender}>", *mail_options])
    rcpt_lines = [f"RCPT TO:<{recipient}>" for recipient in recipients]
    try:
        if connection.pipelining:
            # RFC 2920: MAIL, every RCPT and DATA in one write, their replies in order
            write_if_open(connection.writer, "".join(
                f"{line}\r\n" for line in [mail_line, *rcpt_lines, "DATA"]).encode("utf-8"))
        else:
            write_if_open(connection.writer, mail_line.encode("utf-8") + b"\r\n")
        try:
            mail = await connection.reply()
        except LmtpLost:
            return "stale"
        if mail.code != 250:
            results[:] = [mail] * len(recipients)
            return "ended"
        if connection.pipelining:
            replies = [await connection.reply() for _ in rcpt_lines]
            data_reply: Reply | None = await connection.reply()
        else:
            replies = [await connection.command(line) for line in rcpt_lines]
            data_reply = None
        accepted = [i for i, reply in enumerate(replies) if reply.code == 250]
        for index, reply in enumerate(replies):
            if reply.code != 250:
                results[index] = reply
        if not accepted:
            return "ended"
        if data_reply is None:
            data_reply = await connection.command("DATA")
        if data_reply.code != 354:
            return "ended"  # no reply per recipient: each gets a 4xx from the caller
        data = message if message.count(b"\n") == message.count(b"\r\n") \
            else _BARE_LF.sub(b"\r\n", message)
        if len(data) <= ONE_WRITE:
            write_if_open(connection.writer, b"".join([*dot_stuffed_pieces(data), b".\r\n"]))
        else:
            for piece in dot_stuffed_pieces(data):
                write_if_open(connection.writer, piece)
                await connection.writer.drain()
            write_if_open(connection.writer, b".\r\n")
        for index in accepted:  # RFC 2033 4.2: one reply per accepted RCPT, in order
            results[index] = await connection.reply()
        return "done"
    except (LmtpLost, OSError):
        return "ended"


async def deliver(host: str, port: int, sender: str, recipients: Sequence[str],
                  message: bytes, *, mail_options: Sequence[str] = (),
                  step_seconds: float = 60.0) -> list[Reply | None]:
    """One LMTP transaction on its own connection: `message` to `recipients`. One entry per
    recipient, in order: the store's reply to its RCPT (if not 250) or to the data, or None
    when the store gave no reply for it (the connection failed first). `step_seconds`
    bounds each step."""
    results: list[Reply | None] = [None] * len(recipients)
    connection = await _open(host, port, step_seconds)
    if connection is None:
        return results
    try:
        if await _transaction(connection, sender, recipients, message, mail_options,
                              results) == "done":
            with contextlib.suppress(LmtpLost, OSError):
                await connection.command("QUIT")
    finally:
        await connection.close()
    return results


class StorePool:
    """Connections to the store kept open between transactions (as Postfix keeps its LMTP
    connections): a delivery costs no connect, greeting and LHLO. A kept connection the
    store closed meanwhile fails before anything is delivered, and the transaction is
    tried once more on a new one; any other failure closes the connection."""

    def __init__(self, host: str, port: int, *, step_seconds: float = 60.0,
                 size: int = 8) -> None:
        self.host, self.port, self.step_seconds, self.size = host, port, step_seconds, size
        self._idle: list[_Connection] = []

    async def deliver(self, sender: str, recipients: Sequence[str], message: bytes, *,
                      mail_options: Sequence[str] = ()) -> list[Reply | None]:
        """As `deliver`, on a kept connection when there is one."""
        for _attempt in range(2):
            results: list[Reply | None] = [None] * len(recipients)
            kept = bool(self._idle)
            connection = self._idle.pop() if kept else await _open(
                self.host, self.port, self.step_seconds)
            if connection is None:
                return results
            connection.timeout = self.step_seconds
            state = await _transaction(connection, sender, recipients, message, mail_options,
                                       results)
            if state == "done" and len(self._idle) < self.size:
                self._idle.append(connection)
            else:
                await connection.close()
            if not (state == "stale" and kept):
                return results
        return results

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            with contextlib.suppress(LmtpLost, OSError):
                await connection.command("QUIT")
            await connection.close()
