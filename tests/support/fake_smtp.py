"""A scripted fake upstream submission server for fault tests (asyncio, 127.0.0.1, no TLS).

It speaks just enough SMTP (EHLO with SIZE/AUTH/8BITMIME/SMTPUTF8/PIPELINING, CHUNKING when
`chunking=True`, AUTH PLAIN and LOGIN, MAIL, RCPT, DATA, BDAT, RSET, NOOP, QUIT) and records a
message as delivered exactly when it answers 250 to the end of its data. `script` maps a step
to a fault:

    steps:   "connect" (the greeting), "EHLO", "AUTH", "MAIL", "RCPT", "DATA" (the 354),
             "DATA_END" (after the data), "BDAT" (after a chunk: the LAST one delivers),
             "RSET"; "STEP#n" only for the n-th occurrence
    faults:  "kill" (drop the connection), "stall" (never answer), or a reply line
             such as "451 4.3.0 try later"

Used where the real Postfix cannot be made to fail on cue (the real one is used elsewhere).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Delivery:
    sender: str
    recipients: list[str]
    data: bytes = field(repr=False)


class FakeUpstream:
    def __init__(self, *, users: dict[str, str] | None = None, size: int = 50_000_000,
                 smtputf8: bool = True, chunking: bool = False) -> None:
        self.users = users if users is not None else {"alice": "alice-pw"}
        self.size = size
        self.smtputf8 = smtputf8
        self.chunking = chunking
        self.script: dict[str, str] = {}
        self.delivered: list[Delivery] = []
        self.commands: list[str] = []
        self.counts: Counter[str] = Counter()
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0,
                                                  limit=256 * 1024 * 1024)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def _fault(self, step: str) -> str | None:
        self.counts[step] += 1
        return self.script.get(f"{step}#{self.counts[step]}") or self.script.get(step)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            await self._session(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, _Killed):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _reply(self, writer: asyncio.StreamWriter, step: str, normal: str) -> bool:
        """Send the normal reply unless scripted otherwise; False if a fault replaced it."""
        fault = self._fault(step)
        if fault == "kill":
            writer.transport.abort()
            raise _Killed
        if fault == "stall":
            await asyncio.sleep(3600)
            raise _Killed
        writer.write(((fault or normal) + "\r\n").encode())
        await writer.drain()
        return fault is None or fault.startswith(("2", "3"))

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._reply(writer, "connect", "220 fake.test ESMTP")
        sender: str | None = None
        rcpts: list[str] = []
        chunks: list[bytes] = []
        while True:
            line = (await reader.readuntil(b"\r\n")).decode("utf-8", "replace").rstrip("\r\n")
            verb = line.split(" ", 1)[0].upper()
            self.commands.append(verb)
            if verb == "EHLO":
                caps = [f"250-SIZE {self.size}", "250-8BITMIME", "250-PIPELINING",
                        "250-AUTH PLAIN LOGIN", "250-ENHANCEDSTATUSCODES"]
                if self.smtputf8:
                    caps.append("250-SMTPUTF8")
                if self.chunking:
                    caps.append("250-CHUNKING")
                fault = self._fault("EHLO")
                if fault in ("kill", "stall"):
                    await self._reply_fault(writer, fault)
                elif fault:
                    writer.write((fault + "\r\n").encode())
                else:
                    writer.write(("250-fake.test\r\n" + "\r\n".join(caps)
                                  + "\r\n250 HELP\r\n").encode())
            elif verb == "AUTH":
                await self._auth(line, reader, writer)
                continue
            elif verb == "MAIL":
                if await self._reply(writer, "MAIL", "250 2.1.0 Ok"):
                    sender = line.split(":", 1)[1].strip().split(" ")[0].strip("<>")
                    rcpts = []
                continue
            elif verb == "RCPT":
                if await self._reply(writer, "RCPT", "250 2.1.5 Ok"):
                    rcpts.append(line.split(":", 1)[1].strip().split(" ")[0].strip("<>"))
                continue
            elif verb == "DATA":
                if not await self._reply(writer, "DATA", "354 End data with <CR><LF>.<CR><LF>"):
                    continue
                data = await reader.readuntil(b"\r\n.\r\n")
                body = data[:-3].replace(b"\r\n..", b"\r\n.")
                if await self._reply(writer, "DATA_END", "250 2.0.0 Ok: queued"):
                    self.delivered.append(Delivery(sender or "", list(rcpts), body))
                sender, rcpts = None, []
                continue
            elif verb == "BDAT" and self.chunking:
                args = line.split()
                chunks.append(await reader.readexactly(int(args[1])))
                last = len(args) > 2 and args[2].upper() == "LAST"
                if await self._reply(writer, "BDAT", "250 2.0.0 Ok: queued" if last
                                     else f"250 2.0.0 Ok: {args[1]} octets"):
                    if last:
                        self.delivered.append(Delivery(sender or "", list(rcpts),
                                                       b"".join(chunks)))
                        sender, rcpts, chunks = None, [], []
                else:  # a failed chunk ends the transaction (RFC 3030 2)
                    sender, rcpts, chunks = None, [], []
                continue
            elif verb == "RSET":
                sender, rcpts, chunks = None, [], []
                await self._reply(writer, "RSET", "250 2.0.0 Ok")
                continue
            elif verb == "QUIT":
                writer.write(b"221 2.0.0 Bye\r\n")
                await writer.drain()
                return
            elif verb == "NOOP":
                writer.write(b"250 2.0.0 Ok\r\n")
            else:
                writer.write(b"502 5.5.2 Error: command not recognized\r\n")
            await writer.drain()

    async def _reply_fault(self, writer: asyncio.StreamWriter, fault: str) -> None:
        if fault == "kill":
            writer.transport.abort()
            raise _Killed
        await asyncio.sleep(3600)
        raise _Killed

    async def _auth(self, line: str, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        parts = line.split()
        mech = parts[1].upper() if len(parts) > 1 else ""
        if mech == "PLAIN":
            if len(parts) > 2:
                blob = base64.b64decode(parts[2])
            else:
                writer.write(b"334 \r\n")
                await writer.drain()
                blob = base64.b64decode(await reader.readuntil(b"\r\n"))
            _, user, password = blob.split(b"\x00")
        elif mech == "LOGIN":
            if len(parts) > 2:
                user = base64.b64decode(parts[2])
            else:
                writer.write(b"334 VXNlcm5hbWU6\r\n")
                await writer.drain()
                user = base64.b64decode(await reader.readuntil(b"\r\n"))
            writer.write(b"334 UGFzc3dvcmQ6\r\n")
            await writer.drain()
            password = base64.b64decode(await reader.readuntil(b"\r\n"))
        else:
            writer.write(b"504 5.5.4 unsupported\r\n")
            await writer.drain()
            return
        ok = self.users.get(user.decode()) == password.decode()
        await self._reply(writer, "AUTH", "235 2.7.0 Authentication successful" if ok
                          else "535 5.7.8 Error: authentication failed")


class _Killed(Exception):
    pass
