"""Postfix -> the Store Encrypted filter -> Dovecot, all real: a second upstream whose Postfix
delivers to the filter (the harness's `delivery_port` switch). Mail submitted to Postfix for
a `store_encrypted` user arrives sealed; while the filter is down Postfix keeps the message
in its queue (LMTP gave no 250), and once the filter is back a queue flush delivers it
exactly once."""

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
async def _filter(up: Upstream, port: int) -> AsyncIterator[LmtpFront]:
    world = key_world()
    world.give_key("bob", people().ids["bob"], unlock=False)
    front = LmtpFront(
        secure_mail=world.secure_mail,
        listener=ListenerConfig("127.0.0.1", port, None, plaintext_loopback=True),
        upstream=UpstreamEndpoint(up.host, up.lmtp_port, "none", False, None),
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
