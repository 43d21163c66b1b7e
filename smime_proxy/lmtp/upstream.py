"""The LMTP client side of the Store Encrypted filter: one transaction to the mail store's
LMTP server (Dovecot) with one reply per recipient (RFC 2033 4.2).

Written here because neither aiosmtplib nor smtplib reads LMTP's per-recipient DATA replies
(smtplib reads one: bpo-32803). One connection per transaction, plaintext: the filter and
the store talk on a trusted network, as the MTA and the store did before the filter.
A reply the store did not give (connection lost, timeout) is `None` for that recipient: the
caller answers it with a 4xx so that the MTA retries.

May import: errors, smtp.relay, stdlib.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from smime_proxy.smtp.relay import dot_stuffed_pieces

_BARE_LF = re.compile(rb"(?<!\r)\n")
MAX_REPLY_LINES = 100


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


async def deliver(host: str, port: int, sender: str, recipients: Sequence[str],
                  message: bytes, *, mail_options: Sequence[str] = (),
                  step_seconds: float = 60.0) -> list[Reply | None]:
    """One LMTP transaction: `message` to `recipients`. One entry per recipient, in order:
    the store's reply to its RCPT (if not 250) or to the data, or None when the store gave
    no reply for it (the connection failed first). `step_seconds` bounds each step."""
    results: list[Reply | None] = [None] * len(recipients)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port),
                                                step_seconds)
    except (TimeoutError, OSError):
        return results
    connection = _Connection(reader, writer, step_seconds)
    try:
        if (await connection.reply()).code != 220:
            return results
        if (await connection.command("LHLO smime-proxy")).code != 250:
            return results
        mail = await connection.command(" ".join([f"MAIL FROM:<{sender}>", *mail_options]))
        if mail.code != 250:
            return [mail] * len(recipients)
        accepted: list[int] = []
        for index, recipient in enumerate(recipients):
            reply = await connection.command(f"RCPT TO:<{recipient}>")
            if reply.code == 250:
                accepted.append(index)
            else:
                results[index] = reply
        if not accepted:
            await connection.command("QUIT")
            return results
        if (await connection.command("DATA")).code != 354:
            return results  # no reply per recipient: each gets a 4xx from the caller
        data = message if message.count(b"\n") == message.count(b"\r\n") \
            else _BARE_LF.sub(b"\r\n", message)
        for piece in dot_stuffed_pieces(data):
            connection.writer.write(piece)
            await connection.writer.drain()
        connection.writer.write(b".\r\n")
        for index in accepted:  # RFC 2033 4.2: one reply per accepted RCPT, in order
            results[index] = await connection.reply()
        with contextlib.suppress(LmtpLost):
            await connection.command("QUIT")
    except (LmtpLost, OSError):
        pass
    finally:
        await connection.close()
    return results
