"""Many clients at once through the IMAP proxy to the real Dovecot: 200 connections logged in at
the same time (each with its own STARTTLS upstream connection), each SELECTs INBOX, IDLEs and
NOOPs, then all log out cleanly. With Dovecot's stock imap-login settings this stopped at 100
(`service(imap-login): process_limit (100) reached`): config/upstream/dovecot.conf runs
imap-login in high-performance mode (docs/imap-front.md, "Dovecot in front of many proxy
connections"). The clients are asyncio streams in the test's own loop; the front runs in a
loop thread."""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from smime_proxy.harness import Upstream
from smime_proxy.imap.server import ImapFront, ImapSettings
from support.imap_proxy import LoopThread, imap_services, running_front, upstream_imap
from support.smtp_proxy import key_world

CONNECTIONS = 200
USERS = ("alice", "bob", "carol")
STEP_TIMEOUT = 30.0  # one command's answer; the whole test takes a few seconds
# The proxy's login throttle (smime_proxy/throttle.py) counts a LOGIN in flight against its
# user and address until the upstream answers, and refuses a large burst ("Too many failed
# login attempts"). This test is about connections, not the throttle: the clients log in at
# most this many at a time per user. Connecting, SELECT, IDLE and NOOP are not limited.
LOGINS_IN_FLIGHT_PER_USER = 2
# Dovecot's log lines when one of its services is at a limit.
LIMIT_MARKERS = ("process_limit", "client_limit", "Maximum number of connections")


@pytest.fixture(scope="module")
def front(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImapFront]:
    _enough_descriptors(4 * CONNECTIONS + 256)
    # Every test client comes from 127.0.0.1, and the proxy counts logged-in connections per
    # user and client address as Dovecot's mail_max_userip_connections does (default 10):
    # 200 clients over three users is about 67 each, so the limit is raised for this test.
    settings = ImapSettings(max_user_ip_connections=CONNECTIONS)
    services = imap_services(tmp_path_factory.mktemp("imap-many"), key_world(),
                             upstream_imap(upstream))
    with LoopThread() as loop, running_front(loop, services, settings) as running:
        yield running


def _enough_descriptors(count: int) -> None:
    """This process holds both ends of every client connection and the proxy's upstream
    sockets: raise the soft RLIMIT_NOFILE if it is lower (never above the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < count:
        wanted = count if hard == resource.RLIM_INFINITY else min(count, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


class Client:
    """A raw IMAP client: one command at a time, answers without literals."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.tags = 0

    async def line(self) -> bytes:
        line = await asyncio.wait_for(self.reader.readline(), STEP_TIMEOUT)
        if not line:
            raise AssertionError("the proxy closed the connection")
        return line

    async def until_tagged(self, tag: bytes) -> list[bytes]:
        lines = [await self.line()]
        while not lines[-1].startswith(tag + b" "):
            lines.append(await self.line())
        return lines

    async def command(self, text: str) -> list[bytes]:
        self.tags += 1
        tag = b"c%d" % self.tags
        self.writer.write(tag + b" " + text.encode() + b"\r\n")
        lines = await self.until_tagged(tag)
        assert lines[-1].startswith(tag + b" OK"), (text.partition(" ")[0], lines[-3:])
        return lines

    async def idle(self) -> None:
        self.tags += 1
        tag = b"c%d" % self.tags
        self.writer.write(tag + b" IDLE\r\n")
        while not (line := await self.line()).startswith(b"+"):
            assert line.startswith(b"* "), line
        self.writer.write(b"DONE\r\n")
        lines = await self.until_tagged(tag)
        assert lines[-1].startswith(tag + b" OK"), lines[-3:]


async def one_client(n: int, port: int, users: dict[str, str], all_in: asyncio.Barrier,
                     logins: dict[str, asyncio.Semaphore]) -> float:
    """Log in, SELECT, IDLE, NOOP; wait until every client got that far; LOGOUT. Returns
    the seconds from connect to a selected mailbox."""
    start = time.monotonic()
    user = USERS[n % len(USERS)]
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), STEP_TIMEOUT)
    except BaseException:
        await all_in.abort()
        raise
    client = Client(reader, writer)
    try:
        greeting = await client.line()
        assert greeting.startswith(b"* OK"), greeting
        async with logins[user]:
            await client.command(f'LOGIN {user} "{users[user]}"')
        selected = await client.command("SELECT INBOX")
        assert any(b" EXISTS" in line for line in selected), selected
        ready = time.monotonic() - start
        await client.idle()
        await client.command("NOOP")
        await asyncio.wait_for(all_in.wait(), STEP_TIMEOUT)
        logout = await client.command("LOGOUT")
        assert any(line.startswith(b"* BYE") for line in logout), logout
        rest = await asyncio.wait_for(reader.read(), STEP_TIMEOUT)
        assert rest == b"", rest  # nothing after the tagged OK, then the proxy closes
        return ready
    except BaseException:
        await all_in.abort()
        raise
    finally:
        writer.close()


async def many_clients(port: int, users: dict[str, str]) -> list[float]:
    all_in = asyncio.Barrier(CONNECTIONS)
    logins = {user: asyncio.Semaphore(LOGINS_IN_FLIGHT_PER_USER) for user in USERS}
    return list(await asyncio.gather(
        *(one_client(n, port, users, all_in, logins) for n in range(CONNECTIONS))))


def dovecot_log(upstream: Upstream) -> Path:
    return upstream.workdir / "log" / "dovecot.log"


def test_200_connections_at_once(front: ImapFront, upstream: Upstream) -> None:
    log = dovecot_log(upstream)
    log_start = log.stat().st_size
    started = time.monotonic()
    ready = asyncio.run(many_clients(front.port, upstream.users))
    elapsed = time.monotonic() - started
    print(f"{CONNECTIONS} connections: all logged out after {elapsed:.2f} s; connect to "
          f"selected: median {sorted(ready)[len(ready) // 2]:.2f} s, max {max(ready):.2f} s")
    with log.open("rb") as f:
        f.seek(log_start)
        new_lines = f.read().decode(errors="replace").splitlines()
    at_limit = [line for line in new_lines if any(m in line for m in LIMIT_MARKERS)]
    assert not at_limit, at_limit[:5]
    logins = [line for line in new_lines if "imap-login: Info: Login:" in line]
    assert len(logins) == CONNECTIONS, (len(logins), new_lines[-5:])
