"""Postfix -> the Store Encrypted filter -> Dovecot, all real: a second upstream whose Postfix
delivers to the filter (the harness's `delivery_port` switch). Mail submitted to Postfix for
a `store_encrypted` user arrives sealed; while the filter is down Postfix keeps the message
in its queue (LMTP gave no 250), and once the filter is back a queue flush delivers it
exactly once; and when Dovecot's LMTP process is killed in the middle of a delivery (the
message's data sent, its end not yet), the filter answers 4xx, Postfix keeps the message,
and a flush delivers it exactly once."""

from __future__ import annotations

import asyncio
import os
import smtplib
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from smime_proxy.accounts import Accounts
from smime_proxy.config import ListenerConfig, UpstreamEndpoint
from smime_proxy.harness import Upstream, start_upstream
from smime_proxy.lmtp.server import LmtpFront
from support.control import free_port
from support.mailbox import fetch, wait_for
from support.procmem import processes
from support.smime_check import smime_type
from support.smtp_proxy import key_world, people, policy


@pytest.fixture(scope="module")
def filtered() -> Iterator[tuple[Upstream, int]]:
    """An upstream whose Postfix delivers to 127.0.0.1:<port> (the filter, started by each
    test), and that port."""
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="smime-upstream-lmtp-"))
    os.chmod(workdir, 0o711)  # noqa: S103 (the daemons' users need search)
    up = start_upstream(workdir, delivery_port=port)
    try:
        yield up, port
    finally:
        up.stop()


@asynccontextmanager
async def _filter(up: Upstream, port: int, lmtp_port: int | None = None
                  ) -> AsyncIterator[LmtpFront]:
    world = key_world()
    world.give_key("bob", people().ids["bob"], unlock=False)
    front = LmtpFront(
        secure_mail=world.secure_mail,
        listener=ListenerConfig("127.0.0.1", port, None, plaintext_loopback=True),
        upstream=UpstreamEndpoint(up.host, lmtp_port or up.lmtp_port, "none", False, None),
        accounts=Accounts("%Ln"),
        policy=policy("users: {bob@example.test: {store_encrypted: yes}}"),
        now=lambda: world.now)
    await front.start()
    try:
        yield front
    finally:
        await front.stop(1.0)


def _submit(up: Upstream, token: str) -> None:
    message = (f"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: {token}\r\n"
               f"Message-ID: <{token}@example.test>\r\n\r\nsecret text {token}\r\n")
    with smtplib.SMTP(up.host, up.submission_port, timeout=20) as smtp:
        smtp.login("alice", up.users["alice"])
        smtp.sendmail("alice@example.test", ["bob@example.test"], message)


def _flush(up: Upstream) -> None:
    subprocess.run(["postqueue", "-c", str(up.workdir / "postfix" / "etc"), "-f"],
                   check=True, capture_output=True, timeout=30)


async def test_postfix_delivers_through_the_filter(filtered: tuple[Upstream, int]) -> None:
    up, port = filtered
    async with _filter(up, port):
        await asyncio.to_thread(_submit, up, "via-filter-1")
        [stored] = await asyncio.to_thread(wait_for, up, "bob", "via-filter-1")
    assert smime_type(stored) == "authEnveloped-data"
    assert b"secret text" not in stored


async def test_a_filter_that_is_down_leaves_the_message_queued_then_once(
        filtered: tuple[Upstream, int]) -> None:
    up, port = filtered
    await asyncio.to_thread(_submit, up, "via-filter-2")  # the filter is not running
    await asyncio.sleep(2)
    assert await asyncio.to_thread(fetch, up, "bob", "via-filter-2") == []
    async with _filter(up, port):
        await asyncio.to_thread(_flush, up)
        [stored] = await asyncio.to_thread(wait_for, up, "bob", "via-filter-2")
        await asyncio.to_thread(_flush, up)  # a second flush delivers nothing more
        await asyncio.sleep(1)
    assert len(await asyncio.to_thread(fetch, up, "bob", "via-filter-2")) == 1
    assert smime_type(stored) == "authEnveloped-data"


class HoldingRelay:
    """TCP between the filter and Dovecot's LMTP that holds back the end of the first DATA
    (the final "." line) until told, so that a test can kill Dovecot's LMTP process while
    a delivery is in the middle of its data."""

    def __init__(self, up: Upstream) -> None:
        self.up = up
        self.holding = asyncio.Event()  # the end of data has arrived and is held
        self.release = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.held_once = False

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _client(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.up.host, self.up.lmtp_port)

        async def to_dovecot() -> None:
            tail = b""
            while data := await reader.read(65536):
                seen = tail + data
                if not self.held_once and b"\r\n.\r\n" in seen:
                    self.held_once = True
                    cut = len(data) - 3  # all but ".\r\n"
                    up_writer.write(data[:cut])
                    await up_writer.drain()
                    self.holding.set()
                    await self.release.wait()
                    data = data[cut:]
                up_writer.write(data)
                await up_writer.drain()
                tail = seen[-4:]
            up_writer.close()

        async def to_filter() -> None:
            try:
                while data := await up_reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            finally:  # Dovecot's side ended (a killed process: EOF or a reset): so does ours
                writer.close()
                up_writer.close()

        # a killed peer ends a direction with a reset: nothing to report
        await asyncio.gather(to_dovecot(), to_filter(), return_exceptions=True)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def _kill_dovecot_lmtp(up: Upstream) -> int:
    """SIGKILL every `lmtp` process of this upstream's Dovecot (its process group)."""
    pgid = int((up.workdir / "run" / "dovecot.pgid").read_text())
    killed = 0
    for process in processes():
        if process.comm == "lmtp" and process.pgrp == pgid:
            os.kill(process.pid, 9)
            killed += 1
    return killed


async def test_dovecot_lmtp_killed_mid_delivery_then_delivered_once(
        filtered: tuple[Upstream, int]) -> None:
    up, port = filtered
    relay = HoldingRelay(up)
    relay_port = await relay.start()
    try:
        async with _filter(up, port, relay_port):
            await asyncio.to_thread(_submit, up, "via-filter-3")
            await asyncio.wait_for(relay.holding.wait(), 30)
            assert await asyncio.to_thread(_kill_dovecot_lmtp, up) >= 1
            relay.release.set()
            await asyncio.sleep(2)
            assert await asyncio.to_thread(fetch, up, "bob", "via-filter-3") == []
            log = (up.workdir / "log" / "postfix.out").read_text(errors="replace")
            assert "via-filter-3" not in log  # (Postfix logs queue ids, not subjects)
            await asyncio.to_thread(_flush, up)
            [stored] = await asyncio.to_thread(wait_for, up, "bob", "via-filter-3")
            await asyncio.to_thread(_flush, up)
            await asyncio.sleep(1)
        assert len(await asyncio.to_thread(fetch, up, "bob", "via-filter-3")) == 1
        assert smime_type(stored) == "authEnveloped-data"
    finally:
        await relay.stop()
