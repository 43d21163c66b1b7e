"""Benchmark: the IMAP front against Dovecot read directly.

In one run, against the real upstream (Debian's Dovecot + Postfix on 127.0.0.1, started here
with more users than the stock three, for the IDLE test), user bob:

- Dovecot read directly on its IMAP port with STARTTLS + LOGIN, which is what the proxy does
  upstream (as configured in the tests: STARTTLS, certificate verified against the harness
  CA), so both paths carry one TLS hop to Dovecot; the proxy's client side is plain text on
  127.0.0.1 (`plaintext_loopback`). (Here Dovecot without TLS answers FETCH 1:* BODY.PEEK[]
  about 4 times faster than with STARTTLS: its imap-login process relays TLS sessions.)
- Mailboxes filled once, directly at Dovecot with pipelined APPEND (LITERAL+), outside any
  timing: "plain" (`--count` plain messages of about 20 KB: text + html + a base64
  attachment, or text only; sizes vary), "enc" (`--count` S/MIME messages to bob: AES-256-CBC
  signed by alice, AES-256-GCM signed by alice, AES-256-GCM unsigned, and one in ten signed
  only), "warm" (a few of each, to warm a fresh proxy), "large" (one encrypted message of
  about 25 MB as stored), "append" (target of the APPENDs).
- Dovecot's caches are warmed by one untimed pass over "plain" and "enc". Then `--rounds`
  interleaved rounds (the side that goes first alternates), each in a fresh proxy child
  process (the proxy front alone in it; bob's key imported and unlocked), warmed with "warm":
  the median of each figure is kept. One round times, on connections already logged in and
  SELECTed:
    plain_fetch_all     FETCH 1:* BODY.PEEK[] on "plain"
    plain_fetch_seq     one UID FETCH n BODY.PEEK[] per message, each awaited; also
                        through a bare relay (`relay_child`: bytes copied to and from
                        the same STARTTLS upstream connection, no IMAP in it, on the same
                        event loop), the floor of any relay's one-by-one speed here:
                        `plain_fetch_seq_relay_ratio` (not with BENCH_UPSTREAM_TLS=none);
                        the proxy's and the relay's CPU per command (/proc):
                        `plain_fetch_seq_{proxy,relay}_cpu_us_per_cmd`
    plain_sync          FETCH 1:* (FLAGS BODYSTRUCTURE ENVELOPE RFC822.SIZE) on "plain"
    plain_sync_first    the same as the first FETCH of a new connection (a client opening
                        the folder: the proxy knows nothing of its messages yet), measured
                        first in the round, each side on a connection of its own
    append_1m           APPEND of a 1 MB message (synchronizing literal), per message
  then, through a fresh proxy connection right after a lock + unlock of bob's key (and in a
  process that has not opened any "enc" message yet; a cache of opened messages, if any,
  would be empty):
    encrypted_first_fetch   FETCH 1:* BODY.PEEK[] on "enc" (messages/s)
    encrypted_cached_fetch  the same FETCH again, against direct plain_fetch_all
    encrypted_sync_cached   FETCH 1:* (FLAGS BODYSTRUCTURE ENVELOPE RFC822.SIZE) on "enc",
                            against direct plain_sync
  Every message shown through the proxy from "enc" is checked: it must carry an
  X-SMIME-Status with no `error=` / `content=withheld` (`encrypted_not_opened` counts the rest).
- IDLE: a fresh proxy child (per user and address limit raised to 2000); connections logged
  in (round robin over 10 users, Dovecot allows 200 per user and address), SELECT INBOX, IDLE,
  opened until 1000 or until one fails (`idle_stop_reason` says why, with Dovecot's log
  lines about limits: the stock harness stops at 100, imap-login's process_limit, as every
  STARTTLS session keeps its imap-login process). RSS of the child (VmRSS) before and after
  (2 connections opened and closed first): `idle_rss_mb` is the total,
  `idle_rss_growth_mb` the growth; `idle_1000_rss_mb` is the total at 1000 connections,
  extrapolated linearly from the connections held when fewer (`idle_1000_extrapolated` 1).
  Then `idle_after_fetch_rss_per_connection_kb`: a fresh proxy child, up to 200 IDLE
  connections that each first read a 2 MB message whole (`FETCH 1 BODY.PEEK[]`): the RSS
  growth per connection, what a connection keeps of a large transfer.
- Large: one FETCH BODY.PEEK[] of the ~25 MB encrypted message through a fresh proxy child
  (warmed with "warm"): peak RSS growth (VmHWM after minus VmRSS before, peak reset through
  /proc/PID/clear_refs) divided by the stored size; the time direct and through the proxy.
- With `--imaptest PATH` (Dovecot's imaptest, /work/shared/tools/imaptest/build.sh): 5
  clients for 10 s on carol's INBOX, directly (implicit TLS, the IMAPS port) and through a
  fresh proxy child: commands/s and the "Error:" lines imaptest printed; then through the
  bare relay (`imaptest_relay_ratio`, the floor, as for the one-by-one fetch).

Every command has a deadline: a proxy that hangs or fails is reported (`failures`, exit 1)
rather than waited for.

`BENCH_UPSTREAM_TLS=none` measures the single-host deployment: the bench's clients reach the
proxy over STARTTLS (as they reach Dovecot directly) and the proxy reaches Dovecot over
loopback in plain text (`upstream.imap.tls: none`); by default the clients reach the proxy in
plain text and the proxy reaches Dovecot over STARTTLS. Either way each side has one TLS leg.
The JSON says which (`upstream_tls`). The proxy child runs on the event loop `smime-proxy
serve` runs on (uvloop, or asyncio's with `SMIME_PROXY_EVENT_LOOP=asyncio`): `event_loop`.

    .venv/bin/python bench/imap.py [--count 1000] [--rounds 3] [--quick] [--json]
                                   [--skip-idle] [--skip-large] [--imaptest PATH]

`--json` prints one JSON object as the last line: `plain_fetch_all_ratio`,
`plain_fetch_seq_ratio`, `plain_sync_ratio`, `encrypted_first_fetch_per_s`,
`encrypted_cached_fetch_ratio`, `encrypted_sync_cached_ratio`, `append_1m_ratio`,
`idle_1000_rss_mb`, `idle_after_fetch_rss_per_connection_kb`, `large_25m_rss_ratio`,
`imaptest_stress_ratio` and
`imaptest_proxy_errors` (with --imaptest), the CPU per message of the encrypted first fetch
(`encrypted_first_fetch_{daemon,loop,worker}_cpu_ms_per_msg`: the daemon, its event loop
thread of that, its worker processes), `encrypted_open_cpu_ms_per_msg` and
`encrypted_open_parallel_per_s` (opening alone, `measure_opening`), `machine_rsa2048_sign_ms`
(the machine's speed apart from the proxy's code: one RSA-2048 signature's CPU), the bare
relay's ratios
`plain_fetch_seq_relay_ratio` and `imaptest_relay_ratio` (the floors above),
`plain_fetch_seq_proxy_cpu_us_per_cmd` and `plain_fetch_seq_relay_cpu_us_per_cmd`, the absolute
figures behind them (`*_direct_s`,
`*_proxy_s`, `*_msgs_per_s`, ...), `encrypted_not_opened`, `idle_connections`, `failures`.
Ratios are direct time / proxy time (1.0: as fast as Dovecot). Needs root and the Debian
packages of the test upstream.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import re
import select
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bench.imap_views import make_message  # noqa: E402
from smime_proxy import event_loop  # noqa: E402
from smime_proxy.harness import Upstream, start_upstream  # noqa: E402
from support.pki import NOW, Identity, make_ca, make_user  # noqa: E402
from support.procmem import reset_peak, status_bytes, stop_child  # noqa: E402

if TYPE_CHECKING:
    from smime_proxy.app import DaemonServices
    from smime_proxy.keystore.service import SecureMail

T = TypeVar("T")
KEY_PASSWORD = "bench-secure-mail-pw"
USER, PASSWORD = "bob", "bob-pw"
IDLE_USERS = {f"idle{i:02d}": f"idle{i:02d}-pw" for i in range(10)}
COMMAND_TIMEOUT = 30.0  # seconds for one short command (login, select, one message)
MB = 1024 * 1024


class BenchError(Exception):
    """A measurement that could not be made: a timeout, a NO/BAD/BYE, a closed connection."""


# --- a small blocking IMAP client -----------------------------------------------------------


@dataclass
class Reply:
    status: str  # OK, NO, BAD
    text: str  # the tagged line
    fetches: int = 0  # untagged FETCH responses
    literal_bytes: int = 0
    literals: list[bytes] = field(default_factory=list)  # only when asked to keep them
    untagged: list[bytes] = field(default_factory=list)  # first lines, only when kept


_FETCH = re.compile(rb"\* \d+ FETCH ")


class Client:
    """Raw-socket IMAP client: one command at a time, literals skipped unless kept, every
    read under the command's deadline (a hang becomes a BenchError)."""

    def __init__(self, name: str, host: str, port: int, *,
                 starttls: ssl.SSLContext | None = None) -> None:
        self.name = name
        self.n = 0
        self.buf = bytearray()
        self.pos = 0
        self.bye = b""  # the last * BYE read, said when the connection then closes
        self.deadline = time.monotonic() + COMMAND_TIMEOUT
        self.sock: socket.socket = socket.create_connection((host, port), COMMAND_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        greeting = self.readline()
        if not greeting.startswith(b"* OK"):
            raise BenchError(f"{name}: greeting {greeting[:200]!r}")
        if starttls is not None:
            self.check(self.command("STARTTLS"), "STARTTLS")
            assert self.pos == len(self.buf), "bytes after STARTTLS"
            self.sock = starttls.wrap_socket(self.sock, server_hostname=host)

    def close(self) -> None:
        try:
            self.sock.settimeout(2.0)
            self.sock.sendall(b"z LOGOUT\r\n")
        except OSError:
            pass
        self.sock.close()

    # reading
    def _fill(self) -> None:
        if self.pos:
            del self.buf[: self.pos]  # cheap in CPython: bytearray drops its front in O(1)
            self.pos = 0
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise BenchError(f"{self.name}: timeout (no tagged answer in time)")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(262144)
        except TimeoutError:
            raise BenchError(f"{self.name}: timeout (no tagged answer in time)") from None
        if not data:
            said = f" after {self.bye.decode(errors='replace').strip()!r}" if self.bye else ""
            raise BenchError(f"{self.name}: connection closed by the server{said}")
        self.buf += data

    def readline(self) -> bytes:
        while True:
            end = self.buf.find(b"\n", self.pos)
            if end >= 0:
                line = bytes(self.buf[self.pos : end + 1])
                self.pos = end + 1
                return line
            self._fill()

    def _literal(self, size: int, keep: bool) -> bytes:
        if keep:
            while len(self.buf) - self.pos < size:
                self._fill()
            data = bytes(self.buf[self.pos : self.pos + size])
            self.pos += size
            return data
        while size > 0:  # skip without keeping (25 MB literals stay out of this process)
            if self.pos >= len(self.buf):
                self._fill()
            take = min(size, len(self.buf) - self.pos)
            self.pos += take
            size -= take
        return b""

    def _answer(self, tag: bytes, keep: bool, continuation: bool = False) -> Reply:
        reply = Reply("", "")
        while True:
            first = line = self.readline()
            while line.endswith(b"}\r\n") and (start := line.rfind(b"{")) >= 0:
                size = int(line[start + 1 : -3].rstrip(b"+"))
                reply.literal_bytes += size
                data = self._literal(size, keep)
                if keep:
                    reply.literals.append(data)
                line = self.readline()
            if first.startswith(b"* "):
                if _FETCH.match(first):
                    reply.fetches += 1
                elif first.startswith(b"* BYE"):
                    self.bye = first
                if keep:
                    reply.untagged.append(first)
            elif first.startswith(b"+"):
                if continuation:
                    reply.status = "+"
                    return reply
            elif first.startswith(tag + b" "):
                reply.text = first.decode(errors="replace").strip()
                reply.status = reply.text.split(" ", 2)[1].upper()
                return reply

    # commands
    def command(self, line: str, *, keep: bool = False, timeout: float = COMMAND_TIMEOUT,
                literal: bytes | None = None) -> Reply:
        self.n += 1
        tag = f"b{self.n}".encode()
        self.deadline = time.monotonic() + timeout
        try:
            if literal is None:
                self.sock.sendall(tag + b" " + line.encode() + b"\r\n")
                return self._answer(tag, keep)
            self.sock.sendall(tag + b" " + line.encode() + b" {%d}\r\n" % len(literal))
            go = self._answer(tag, keep=False, continuation=True)
            if go.status != "+":
                return go
            self.sock.sendall(literal + b"\r\n")
            return self._answer(tag, keep)
        except BenchError as exc:
            raise BenchError(f"{exc} [{line[:60]}]") from None
        except OSError as exc:
            raise BenchError(f"{self.name}: {type(exc).__name__}: {exc} [{line[:60]}]") from None

    def check(self, reply: Reply, what: str) -> Reply:
        if reply.status != "OK":
            raise BenchError(f"{self.name}: {what}: {reply.text[:300]}")
        return reply

    def login(self, user: str, password: str) -> None:
        self.check(self.command(f'LOGIN "{user}" "{password}"'), "LOGIN")

    def select(self, mailbox: str) -> None:
        self.check(self.command(f'SELECT "{mailbox}"'), f"SELECT {mailbox}")

    def append_pipelined(self, mailbox: str, messages: Sequence[bytes], batch: int = 50) -> None:
        """APPEND with LITERAL+, `batch` commands in flight (for filling, not for timing)."""
        for i in range(0, len(messages), batch):
            tags = []
            out = bytearray()
            for message in messages[i : i + batch]:
                self.n += 1
                tag = f"f{self.n}".encode()
                tags.append(tag)
                out += tag + f' APPEND "{mailbox}" {{{len(message)}+}}\r\n'.encode()
                out += message + b"\r\n"
            self.deadline = time.monotonic() + 300
            self.sock.sendall(out)
            for tag in tags:
                self.check(self._answer(tag, keep=False), f"APPEND to {mailbox}")


def connect(name: str, port: int, *, mailbox: str | None, user: str = USER,
            password: str = PASSWORD, host: str = "127.0.0.1",
            starttls: ssl.SSLContext | None = None) -> Client:
    """Connected, logged in and (with `mailbox`) SELECTed; any failure is a BenchError."""
    try:
        client = Client(name, host, port, starttls=starttls)
    except (OSError, ssl.SSLError) as exc:
        raise BenchError(f"{name}: cannot connect: {type(exc).__name__}: {exc}") from None
    try:
        client.login(user, password)
        if mailbox is not None:
            client.select(mailbox)
    except BaseException:
        client.close()
        raise
    return client


# --- messages -------------------------------------------------------------------------------


def text_message(rng: random.Random, index: int, size: int) -> bytes:
    words = [rng.choice(("lorem", "ipsum", "dolor", "sit", "amet", "elit", "magna", "quis"))
             for _ in range(size // 6)]
    lines = [" ".join(words[i : i + 12]) for i in range(0, len(words), 12)]
    return (f"From: Alice <alice@example.test>\r\nTo: Bob <bob@example.test>\r\n"
            f"Subject: bench text {index}\r\nDate: Mon, 01 Jun 2026 12:00:00 +0000\r\n"
            f"Message-ID: <bench-text-{index}-{rng.randrange(10**9)}@example.test>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
            + "\r\n".join(lines) + "\r\n").encode()


def plain_messages(rng: random.Random, count: int) -> list[bytes]:
    """About 20 KB each: three in four multipart (text, html, attachment), one text only."""
    return [text_message(rng, i, rng.randrange(16_000, 24_000)) if i % 4 == 3
            else make_message(rng, rng.randrange(14_000, 26_000)) for i in range(count)]


def as_alice(message: bytes) -> bytes:
    """From alice (a signature of alice's on a message from someone else is a mismatch)."""
    return re.sub(rb"(?m)^From: [^\r\n]*\r\n", b"From: Alice <alice@example.test>\r\n",
                  message, count=1)


def encrypted_messages(rng: random.Random, count: int, alice: Identity,
                       bob: Identity) -> list[bytes]:
    """About 20 KB as stored: CBC signed, GCM signed, GCM unsigned; one in ten signed only."""
    from smime_proxy.crypto.keyagent import InProcessKeyAgent
    from smime_proxy.smime import Cipher, Recipient, encrypt_message, sign_message

    agent = InProcessKeyAgent(alice.key, alice.cert, tuple(alice.chain))
    out = []
    for i in range(count):
        inner = as_alice(make_message(rng, rng.randrange(11_000, 16_000)))
        if i % 10 == 9:
            out.append(sign_message(inner, agent, now=NOW))
            continue
        kind = i % 3
        if kind < 2:
            inner = sign_message(inner, agent, now=NOW)
        cipher: Cipher = "aes-256-cbc" if kind == 0 else "aes-256-gcm"
        out.append(encrypt_message(inner, [Recipient(bob.cert, supports_gcm=True)],
                                   cipher=cipher))
    return out


def attachment_message(rng: random.Random, size: int, subject: str) -> bytes:
    head = (f"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}-{rng.randrange(10**9)}@example.test>\r\n"
            "MIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
            "--b\r\nContent-Type: text/plain\r\n\r\nA large attachment.\r\n"
            "--b\r\nContent-Type: application/octet-stream; name=big.bin\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n").encode()
    blob = rng.randbytes(max(1, (size - len(head) - 20) * 3 // 4))
    return head + base64.encodebytes(blob).replace(b"\n", b"\r\n") + b"--b--\r\n"


def large_encrypted(rng: random.Random, stored_size: int, alice: Identity,
                    bob: Identity) -> bytes:
    """Signed by alice then AES-256-GCM to bob, about `stored_size` bytes as stored."""
    from smime_proxy.crypto.keyagent import InProcessKeyAgent
    from smime_proxy.smime import Recipient, encrypt_message, sign_message

    agent = InProcessKeyAgent(alice.key, alice.cert, tuple(alice.chain))
    inner = attachment_message(rng, int(stored_size / 1.37), "large")
    signed = sign_message(inner, agent, now=NOW)
    return encrypt_message(signed, [Recipient(bob.cert, supports_gcm=True)])


_STATUS = re.compile(rb"^X-SMIME-Status: ([^\r\n]*)\r\n")


def not_opened(literals: Sequence[bytes]) -> int:
    """Messages of "enc" the proxy did not show opened (no status, an error, withheld)."""
    bad = 0
    for shown in literals:
        m = _STATUS.match(shown)
        if m is None or b"error=" in m.group(1) or b"content=withheld" in m.group(1):
            bad += 1
    return bad


# --- the proxy process ------------------------------------------------------------------------


# `imap.open_processes` of the proxy under test (BENCH_OPEN_PROCESSES, default the config's)
OPEN_PROCESSES = int(os.environ.get("BENCH_OPEN_PROCESSES", "0"))
# `upstream.imap.tls` of the proxy under test (BENCH_UPSTREAM_TLS). "starttls" (default): the
# bench reaches the proxy in plain text and the proxy reaches Dovecot over STARTTLS. "none":
# the single-host deployment of docs/imap-front.md, where the bench's clients reach the proxy
# over STARTTLS (as they reach Dovecot directly) and the proxy reaches Dovecot over loopback
# in plain text; the one TLS leg is then the client's on both sides.
UPSTREAM_TLS: Literal["starttls", "none"] = (
    "none" if os.environ.get("BENCH_UPSTREAM_TLS") == "none" else "starttls")


def listener_tls(work: Path) -> tuple[Path, Path, Path] | None:
    """(CA, certificate, key) of the proxy's STARTTLS listener when UPSTREAM_TLS is "none"."""
    if UPSTREAM_TLS != "none":
        return None
    from smime_proxy.harness.tls import ensure_tls

    files = ensure_tls(work / "listener-tls")
    return files.ca_cert, files.server_cert, files.server_key


def child_services(work: Path, cfg: dict[str, Any]) -> tuple[DaemonServices, SecureMail]:
    """The services of the proxy under test (bob's key imported and unlocked), as the
    proxy child makes them; the bench process makes the same to time opening alone."""
    from cryptography import x509

    from smime_proxy.app import DaemonServices
    from smime_proxy.config import (
        Config,
        ImapConfig,
        ListenerConfig,
        ListenersConfig,
        ListenerTls,
        LoggingConfig,
        UnlockConfig,
        UpstreamConfig,
        UpstreamEndpoint,
        UsersConfig,
    )
    from smime_proxy.keystore.contacts import Contacts
    from smime_proxy.keystore.ports import MemoryAddressBook, MemoryKeyStore
    from smime_proxy.keystore.service import SecureMail

    secure_mail = SecureMail(MemoryKeyStore(), kdf_iterations=1000)
    contacts = Contacts(MemoryAddressBook())
    secure_mail.import_pkcs12(USER, (work / "bob.pem").read_bytes(), b"", KEY_PASSWORD)
    secure_mail.unlock(USER, KEY_PASSWORD, NOW)
    tls_files = listener_tls(work)
    listener = ListenerConfig(
        host="127.0.0.1", port=0, plaintext_loopback=True,
        tls=None if tls_files is None else ListenerTls("starttls", tls_files[1], tls_files[2]))
    other = ListenerConfig(host="127.0.0.1", port=1, tls=None, plaintext_loopback=True)
    upstream = UpstreamEndpoint(host=cfg["host"], port=cfg["port"], tls=UPSTREAM_TLS,
                                verify=True, ca_file=Path(cfg["ca_file"]))
    config = Config(
        source=work / "smime-proxy.yaml",
        listeners=ListenersConfig(imap=listener, smtp=other, control=other),
        upstream=UpstreamConfig(imap=upstream, smtp=upstream), data_dir=work,
        trust_roots=(), unlock=UnlockConfig(), locked_fetch="unavailable", policy_file=None,
        logging=LoggingConfig(), users=UsersConfig(),
        imap=ImapConfig(open_processes=cfg["open_processes"]),
    )
    ca = x509.load_pem_x509_certificate((work / "ca.pem").read_bytes())
    services = DaemonServices(config=config, secure_mail=secure_mail, contacts=contacts,
                              trust_roots=(ca,), ca=None, now=lambda: NOW)
    return services, secure_mail


def proxy_child(work: Path) -> None:
    """Serve the IMAP front until stdin closes; print `PORT n` once listening. Commands on
    stdin, answered `OK`: `RELOCK` (lock then unlock bob's key)."""
    from smime_proxy.imap.server import ImapFront, ImapSettings
    from smime_proxy.memory import tune_memory

    tune_memory()  # as `smime-proxy serve` does at start (cli.main)
    cfg = json.loads((work / "child.json").read_text())
    services, secure_mail = child_services(work, cfg)
    settings = ImapSettings(max_user_ip_connections=cfg["max_user_ip_connections"],
                            connect_timeout=cfg["connect_timeout"])
    front = ImapFront(services, settings=settings)

    async def main() -> None:
        await front.start()
        print(f"PORT {front.port}", flush=True)
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            if line.strip() == "RELOCK":
                secure_mail.lock(USER)
                secure_mail.unlock(USER, KEY_PASSWORD, NOW)
            print("OK", flush=True)
        await front.stop(1.0)

    profile = os.environ.get("BENCH_IMAP_PROFILE")  # a directory: cProfile of each child
    if profile:
        import cProfile

        cProfile.runctx("event_loop.run(main())", globals(), locals(),
                        str(Path(profile) / f"proxy-{os.getpid()}.prof"))
    else:
        event_loop.run(main())  # the loop `smime-proxy serve` runs on


def relay_child(work: Path) -> None:
    """A bare byte relay to Dovecot, with no IMAP in it: the floor of any relay's one-by-one
    speed through the same upstream connection as the proxy's (`open_stream`: the same
    STARTTLS and certificate check, on the same event loop). It greets the client itself
    (the upstream's greeting is read before STARTTLS). Prints `PORT n`; serves until stdin
    closes. Only where the clients reach the proxy in plain text (`UPSTREAM_TLS` not "none")."""
    from smime_proxy.config import UpstreamEndpoint
    from smime_proxy.imap.upstream import open_stream

    cfg = json.loads((work / "child.json").read_text())
    endpoint = UpstreamEndpoint(host=cfg["host"], port=cfg["port"], tls=UPSTREAM_TLS,
                                verify=True, ca_file=Path(cfg["ca_file"]))

    async def copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ssl.SSLError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await open_stream(endpoint, connect_timeout=30.0,
                                                 handshake_timeout=30.0)
        writer.write(b"* OK bare relay ready\r\n")
        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))

    async def main() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
        loop = asyncio.get_running_loop()
        while await loop.run_in_executor(None, sys.stdin.readline):
            pass
        server.close()

    event_loop.run(main())


class ProxyProcess:
    def __init__(self, work: Path, *, max_user_ip_connections: int = 10,
                 connect_timeout: float = 30.0, bare_relay: bool = False,
                 script: Path | None = None) -> None:
        """`script`: the bench/imap.py whose checkout the child runs (default: this one)."""
        (work / "child.json").write_text(json.dumps({
            **json.loads((work / "upstream.json").read_text()),
            "max_user_ip_connections": max_user_ip_connections,
            "connect_timeout": connect_timeout,
            "open_processes": OPEN_PROCESSES,
        }))
        tls_files = listener_tls(work)  # made here first: the child keeps the same files
        self.tls: ssl.SSLContext | None = None  # how the bench's clients reach the proxy
        if tls_files is not None:
            self.tls = ssl.create_default_context(cafile=str(tls_files[0]))
        self.log = work / "proxy-child.log"
        kind = "--relay-child" if bare_relay else "--proxy-child"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(script or __file__), kind, str(work)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
            )
        line = self.read_line(60.0)
        if not line.startswith("PORT "):
            self.stop()
            raise SystemExit(f"proxy child did not start: {line!r}\n{self.log_tail()}")
        self.port = int(line.split()[1])

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def read_line(self, seconds: float) -> str:
        """One line the child printed, or "" after `seconds` (a wedged child)."""
        assert self.proc.stdout is not None
        if not select.select([self.proc.stdout], [], [], seconds)[0]:
            return ""
        return self.proc.stdout.readline().decode(errors="replace")

    def ask(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()
        if self.read_line(30.0).strip() != "OK":
            raise BenchError(f"proxy child did not answer {command} within 30 s")

    def status(self, field_name: str) -> int:
        return status_bytes(self.proc.pid, field_name)

    def reset_peak(self) -> None:
        reset_peak(self.proc.pid)

    def cpu_seconds(self) -> tuple[float, float, float]:
        """(the daemon's CPU seconds, its worker processes', the daemon's event loop thread's
        alone), user + system, so far."""
        pid = self.proc.pid
        children: list[int] = []
        for task in Path(f"/proc/{pid}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                children.extend(int(c) for c in task.read_text().split())
        loop = process_cpu(pid, f"/proc/{pid}/task/{pid}/stat")  # the main thread runs it
        return process_cpu(pid), sum(process_cpu(c) for c in children), loop

    def stop(self) -> None:
        stop_child(self.proc, 15)


# --- measurements ----------------------------------------------------------------------------


@dataclass
class Env:
    up: Upstream
    work: Path
    tls: ssl.SSLContext
    count: int
    failures: list[str] = field(default_factory=list)
    times: dict[str, list[float]] = field(default_factory=dict)
    warm_count: int = 0
    large_size: int = 0
    not_opened: int | None = None  # "enc" messages not shown opened (worst round)
    enc_sample: list[bytes] = field(default_factory=list)  # for `measure_opening`
    notes: dict[str, object] = field(default_factory=dict)  # reported as they are

    def direct(self, mailbox: str | None, user: str = USER, password: str = PASSWORD) -> Client:
        return connect("direct", self.up.imap_port, mailbox=mailbox, user=user,
                       password=password, host=self.up.host, starttls=self.tls)

    def record(self, name: str, seconds: float) -> None:
        self.times.setdefault(name, []).append(seconds)

    def fail(self, what: str, exc: BenchError) -> None:
        self.failures.append(f"{what}: {exc}")
        print(f"  FAILED {what}: {exc}", file=sys.stderr, flush=True)

    def attempt(self, what: str, fn: Callable[[], T]) -> T | None:
        """fn(), or None with the failure recorded."""
        try:
            return fn()
        except BenchError as exc:
            self.fail(what, exc)
            return None


def process_cpu(pid: int, stat: str | None = None) -> float:
    """A process's (or, with the path of a task's stat file, a thread's) user + system CPU
    seconds (0 when it is gone)."""
    try:
        fields = Path(stat or f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def big_timeout(count: int) -> float:
    return 120.0 + count * 0.2


def fetch_all(client: Client, items: str, count: int, *, keep: bool = False) -> Reply:
    reply = client.check(client.command(f"FETCH 1:* {items}", keep=keep,
                                        timeout=big_timeout(count)), f"FETCH 1:* {items}")
    if reply.fetches != count:
        raise BenchError(f"{client.name}: FETCH 1:* {items}: {reply.fetches} of {count} "
                         "messages answered")
    return reply


def fetch_seq(client: Client, uids: Sequence[int]) -> None:
    for uid in uids:
        reply = client.check(client.command(f"UID FETCH {uid} BODY.PEEK[]"), f"UID FETCH {uid}")
        if reply.fetches != 1:
            raise BenchError(f"{client.name}: UID FETCH {uid}: {reply.fetches} answers")


def uids_of(client: Client) -> list[int]:
    reply = client.check(client.command("UID SEARCH ALL", keep=True), "UID SEARCH")
    for line in reply.untagged:
        if line.startswith(b"* SEARCH"):
            return [int(x) for x in line.split()[2:]]
    raise BenchError("no SEARCH answer")


def append_each(client: Client, messages: Sequence[bytes]) -> float:
    """Seconds per APPEND (median of the messages)."""
    each = []
    for message in messages:
        start = time.perf_counter()
        client.check(client.command('APPEND "append"', literal=message, timeout=60),
                     "APPEND 1 MB")
        each.append(time.perf_counter() - start)
    return statistics.median(each)


def plain_round(env: Env, proxy: ProxyProcess, relay: ProxyProcess | None, uids: list[int],
                appends: list[bytes], direct_first: bool) -> None:
    """One round of the plain figures; the one-by-one fetch also through `relay` (the bare
    relay, `relay_child`) when there is one."""
    count = env.count
    sides = ["direct", "proxy"] if direct_first else ["proxy", "direct"]
    clients: dict[str, Client] = {}

    def new_client(side: str) -> Client:
        if side == "direct":
            return env.direct("plain")
        child = relay if side == "relay" and relay is not None else proxy
        return connect(side, child.port, mailbox="plain", starttls=child.tls)

    def open_side(side: str) -> Client:
        if side not in clients:
            clients[side] = new_client(side)
        return clients[side]

    sync = "(FLAGS BODYSTRUCTURE ENVELOPE RFC822.SIZE)"
    for side in sides:  # a client opening the folder: the first FETCH of a new connection
        def first_sync(side: str = side) -> float:
            client = new_client(side)
            try:
                return timed(lambda: fetch_all(client, sync, count))[0]
            finally:
                client.close()

        seconds = env.attempt(f"plain_sync_first {side}", first_sync)
        if seconds is not None:
            env.record(f"plain_sync_first_{side}", seconds)
    try:
        for name, run in (
            ("plain_fetch_all", lambda c: fetch_all(c, "BODY.PEEK[]", count)),
            ("plain_fetch_seq", lambda c: fetch_seq(c, uids)),
            ("plain_sync", lambda c: fetch_all(c, sync, count)),
        ):
            with_relay = relay is not None and name == "plain_fetch_seq"
            for side in [*sides, "relay"] if with_relay else sides:
                child = {"proxy": proxy, "relay": relay}.get(side)
                cpu_before = child.cpu_seconds()[0] if child is not None else 0.0

                def measure(side: str = side, run: Callable[[Client], object] = run) -> float:
                    return timed(lambda: run(open_side(side)))[0]

                seconds = env.attempt(f"{name} {side}", measure)
                if seconds is not None:
                    env.record(f"{name}_{side}", seconds)
                    if name == "plain_fetch_seq" and child is not None:  # µs per command
                        env.record(f"{name}_{side}_cpu", (child.cpu_seconds()[0] - cpu_before)
                                   / len(uids) * 1e6)
                elif side in clients:  # its state is unknown: the next metric reconnects
                    clients.pop(side).close()
        for side in sides:
            def appending(side: str = side) -> float:
                return append_each(open_side(side), appends)

            per = env.attempt(f"append_1m {side}", appending)
            if per is not None:
                env.record(f"append_1m_{side}", per)
            elif side in clients:
                clients.pop(side).close()
    finally:
        for client in clients.values():
            client.close()


def encrypted_round(env: Env, proxy: ProxyProcess) -> None:
    count = env.count
    try:
        proxy.ask("RELOCK")
    except BenchError as exc:
        env.fail("lock + unlock", exc)
        return
    client = env.attempt("encrypted connect", lambda: connect(
        "proxy", proxy.port, mailbox="enc", starttls=proxy.tls))
    if client is None:
        return
    try:
        cpu_before = proxy.cpu_seconds()
        first = env.attempt("encrypted_first_fetch", lambda: timed(
            lambda: fetch_all(client, "BODY.PEEK[]", count, keep=True)))
        if first is None:
            return
        cpu_after = proxy.cpu_seconds()
        env.record("encrypted_first_fetch", first[0])
        # CPU per message (machine-load-independent): the daemon's, its workers', and of the
        # daemon's the event loop thread's (the rest is opening, in its worker threads)
        env.record("encrypted_first_fetch_daemon_cpu", cpu_after[0] - cpu_before[0])
        env.record("encrypted_first_fetch_worker_cpu", cpu_after[1] - cpu_before[1])
        env.record("encrypted_first_fetch_loop_cpu", cpu_after[2] - cpu_before[2])
        env.not_opened = max(env.not_opened or 0, not_opened(first[1].literals))
        second = env.attempt("encrypted_cached_fetch", lambda: timed(
            lambda: fetch_all(client, "BODY.PEEK[]", count))[0])
        if second is None:
            return
        env.record("encrypted_cached_fetch", second)
        sync = env.attempt("encrypted_sync_cached", lambda: timed(
            lambda: fetch_all(client, "(FLAGS BODYSTRUCTURE ENVELOPE RFC822.SIZE)", count))[0])
        if sync is not None:
            env.record("encrypted_sync_cached", sync)
    finally:
        client.close()


def warm_proxy(env: Env, proxy: ProxyProcess) -> None:
    """Opens the few messages of "warm" (imports, first-use costs) without touching "enc"."""
    def go() -> None:
        client = connect("proxy", proxy.port, mailbox="warm", starttls=proxy.tls)
        try:
            fetch_all(client, "BODY.PEEK[]", env.warm_count)
            fetch_all(client, "(FLAGS BODYSTRUCTURE ENVELOPE RFC822.SIZE)", env.warm_count)
        finally:
            client.close()

    env.attempt("warm-up through the proxy", go)


# --- IDLE -----------------------------------------------------------------------------------


async def idle_connection(port: int, user: str, password: str, wait: float,
                          fetch: bool = False) -> asyncio.StreamWriter:
    """Logged in, INBOX selected (with `fetch`, its first message read whole), in IDLE."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), wait)
    try:
        async def until(prefix: bytes) -> bytes:
            while True:
                line = await asyncio.wait_for(reader.readline(), wait)
                if not line:
                    raise BenchError("connection closed")
                if line.startswith(prefix):
                    return line
                if line.startswith(b"* BYE"):
                    raise BenchError(line.decode(errors="replace").strip())

        greeting = await asyncio.wait_for(reader.readline(), wait)
        if not greeting.startswith(b"* OK"):
            raise BenchError(f"greeting {greeting.decode(errors='replace').strip()!r}")
        for tag, command in ((b"a", f'LOGIN "{user}" "{password}"'.encode()),
                             (b"b", b"SELECT INBOX")):
            writer.write(tag + b" " + command + b"\r\n")
            answer = await until(tag + b" ")
            if not answer.startswith(tag + b" OK"):
                raise BenchError(answer.decode(errors="replace").strip())
        if fetch:
            writer.write(b"f FETCH 1 BODY.PEEK[]\r\n")
            line = await until(b"* 1 FETCH")
            size = int(line.rstrip()[:-1].rsplit(b"{", 1)[1])
            await asyncio.wait_for(reader.readexactly(size), wait)
            if not (await until(b"f ")).startswith(b"f OK"):
                raise BenchError("FETCH 1 BODY.PEEK[] failed")
        writer.write(b"c IDLE\r\n")
        await until(b"+")
        return writer
    except BaseException:
        writer.close()
        raise


async def hold_idle(port: int, target: int, wait: float, fetch: bool = False
                    ) -> tuple[list[asyncio.StreamWriter], str]:
    """Open IDLE connections, 20 at a time, until `target` or the first failure."""
    writers: list[asyncio.StreamWriter] = []
    users = list(IDLE_USERS.items())
    reason = ""
    while len(writers) < target and not reason:
        batch = min(20, target - len(writers))
        results = await asyncio.gather(
            *(idle_connection(port, *users[(len(writers) + i) % len(users)], wait, fetch)
              for i in range(batch)), return_exceptions=True)
        for result in results:
            if isinstance(result, asyncio.StreamWriter):
                writers.append(result)
            elif not reason:
                reason = (str(result) if isinstance(result, BenchError)
                          else f"{type(result).__name__}: {result}")
    return writers, reason


async def close_all(writers: Sequence[asyncio.StreamWriter]) -> None:
    for writer in writers:
        writer.close()
    for writer in writers:
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 2.0)


_OPENING_SERVICES: list[DaemonServices] = []  # in a process of measure_opening's pool


def _opening_process(work: str) -> None:
    """Pool initializer: the proxy child's services in this process."""
    cfg = {**json.loads((Path(work) / "upstream.json").read_text()), "open_processes": 0}
    _OPENING_SERVICES.append(child_services(Path(work), cfg)[0])


def _open_each(messages: list[bytes]) -> int:
    """Open `messages` one after another in this process; how many were shown opened."""
    from smime_proxy.imap.opening import open_for_client

    services = _OPENING_SERVICES[0]
    return sum(open_for_client(services, USER, raw, 0).outcome == "opened" for raw in messages)


def measure_opening(env: Env) -> dict[str, float]:
    """Opening alone, outside the daemon: `open_for_client` on "enc" messages, no IMAP, no
    event loop. In one thread of this process: its CPU per message. In one process per core
    at once, each opening the whole sample: messages/s, the most a proxy that did nothing
    else could open on this machine (against encrypted_first_fetch_per_s). Medians of 3."""
    import multiprocessing

    sample = env.enc_sample
    _opening_process(str(env.work))
    _open_each(sample[:10])  # first-use costs (imports, the trust roots' caches)
    cpu = []
    for _ in range(3):
        start = time.thread_time()
        if _open_each(sample) != len(sample):
            raise BenchError("opening alone: a message was not shown opened")
        cpu.append((time.thread_time() - start) / len(sample))
    _OPENING_SERVICES.clear()
    cores = os.cpu_count() or 1
    rates = []
    with multiprocessing.get_context("spawn").Pool(cores, _opening_process,
                                                   (str(env.work),)) as pool:
        pool.map(_open_each, [sample[:10]] * cores, chunksize=1)  # started, warm
        for _ in range(3):
            start = time.perf_counter()
            opened = sum(pool.map(_open_each, [sample] * cores, chunksize=1))
            rates.append(opened / (time.perf_counter() - start))
    return {"encrypted_open_cpu_ms_per_msg": round(statistics.median(cpu) * 1000, 2),
            "encrypted_open_parallel_per_s": round(statistics.median(rates), 1),
            "machine_rsa2048_sign_ms": machine_gauge()}


def machine_gauge() -> float:
    """The machine's speed, apart from the proxy's code: ms of one thread's CPU for one
    RSA-2048 PKCS#1 v1.5 signature through `cryptography` (the system's OpenSSL), median of
    5 x 100. The development VM's speed moved 3x between days (docs/imap-front.md "Speed"):
    runs are compared by it."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    each = []
    for _ in range(5):
        start = time.thread_time()
        for _ in range(100):
            key.sign(b"gauge", padding.PKCS1v15(), hashes.SHA256())
        each.append((time.thread_time() - start) / 100)
    return round(statistics.median(each) * 1000, 3)


def dovecot_limit_lines(up: Upstream, since: int) -> list[str]:
    log = up.workdir / "log" / "dovecot.log"
    with log.open("rb") as f:
        f.seek(since)
        text = f.read().decode(errors="replace")
    keep = ("limit", "Maximum number", "reached")
    lines = [line for line in text.splitlines() if any(k in line for k in keep)]
    stamp = re.compile(r"^[A-Z][a-z]{2} +\d+ [\d:]+ ")
    return list(dict.fromkeys(stamp.sub("", line) for line in lines))[:5]


def measure_idle(env: Env, target: int) -> dict[str, float]:
    log = env.up.workdir / "log" / "dovecot.log"
    since = log.stat().st_size if log.exists() else 0
    proxy = ProxyProcess(env.work, max_user_ip_connections=2000, connect_timeout=10.0)
    async def run() -> tuple[int, int, str, int]:
        warm, _ = await hold_idle(proxy.port, 2, 20.0)  # first-use costs, then closed
        await close_all(warm)
        await asyncio.sleep(1.0)
        rss_before = proxy.status("VmRSS")
        writers, reason = await hold_idle(proxy.port, target, 20.0)
        await asyncio.sleep(2.0)
        rss = proxy.status("VmRSS")
        await close_all(writers)
        return rss_before, len(writers), reason, rss

    try:
        before, held, reason, after = asyncio.run(run())
    finally:
        proxy.stop()
    if reason:
        limits = dovecot_limit_lines(env.up, since)
        reason += "; dovecot.log: " + (" | ".join(limits) if limits else "(nothing about limits)")
        env.notes["idle_stop_reason"] = reason
    if held == 0:
        raise BenchError(f"no IDLE connection held: {reason}")
    growth = after - before
    per = growth / held
    total_1000 = after if held >= 1000 else before + per * 1000
    return {
        "idle_connections": held,
        "idle_rss_before_mb": round(before / MB, 1),
        "idle_rss_mb": round(after / MB, 1),
        "idle_rss_growth_mb": round(growth / MB, 1),
        "idle_rss_per_connection_kb": round(per / 1024, 1),
        "idle_1000_rss_mb": round(total_1000 / MB, 1),
        "idle_1000_extrapolated": 0 if held >= 1000 else 1,
    }


def measure_idle_after_fetch(env: Env, count: int) -> dict[str, float]:
    """RSS per IDLE connection that first read a 2 MB message (a client that opened an
    attachment, then waits for mail): what a connection keeps of a large transfer. A
    fresh proxy child; each IDLE user's INBOX gets the message once."""
    message = attachment_message(random.Random(9), 2 * MB, "after-fetch")
    for user, password in IDLE_USERS.items():
        client = connect("fill", env.up.imap_port, mailbox="INBOX", user=user,
                         password=password)
        try:
            exists = client.check(client.command("SEARCH ALL", keep=True), "SEARCH")
            if not any(line.strip() != b"* SEARCH" for line in exists.untagged
                       if line.startswith(b"* SEARCH")):
                client.append_pipelined("INBOX", [message])
        finally:
            client.close()
    proxy = ProxyProcess(env.work, max_user_ip_connections=2000, connect_timeout=10.0)

    async def run() -> tuple[int, int]:
        warm, _ = await hold_idle(proxy.port, 2, 20.0, fetch=True)
        await close_all(warm)
        await asyncio.sleep(1.0)
        before = proxy.status("VmRSS")
        writers, reason = await hold_idle(proxy.port, count, 60.0, fetch=True)
        if reason:
            await close_all(writers)
            raise BenchError(f"IDLE after a FETCH: {reason}")
        await asyncio.sleep(2.0)
        after = proxy.status("VmRSS")
        await close_all(writers)
        return after - before, len(writers)

    try:
        growth, held = asyncio.run(run())
    finally:
        proxy.stop()
    return {"idle_after_fetch_connections": held,
            "idle_after_fetch_rss_per_connection_kb": round(growth / held / 1024, 1)}


# --- large message --------------------------------------------------------------------------


def measure_large(env: Env, size: int) -> dict[str, float]:
    timeout = 300.0
    direct = env.direct("large")
    try:
        direct_s = min(timed(lambda: fetch_all(direct, "BODY.PEEK[]", 1))[0] for _ in range(2))
    finally:
        direct.close()
    proxy = ProxyProcess(env.work)
    try:
        warm_proxy(env, proxy)
        client = connect("proxy", proxy.port, mailbox="large", starttls=proxy.tls)
        try:
            time.sleep(0.5)
            baseline = proxy.status("VmRSS")
            proxy.reset_peak()
            start = time.perf_counter()
            reply = client.check(client.command("FETCH 1 BODY.PEEK[]", timeout=timeout),
                                 "FETCH large")
            proxy_s = time.perf_counter() - start
            peak = proxy.status("VmHWM")
        finally:
            client.close()
    finally:
        proxy.stop()
    if reply.fetches != 1:
        raise BenchError(f"large: {reply.fetches} answers")
    return {
        "large_25m_mb": round(size / MB, 1),
        "large_25m_shown_mb": round(reply.literal_bytes / MB, 1),
        "large_25m_direct_s": round(direct_s, 3),
        "large_25m_proxy_s": round(proxy_s, 3),
        "large_25m_rss_growth_mb": round((peak - baseline) / MB, 1),
        "large_25m_rss_ratio": round((peak - baseline) / size, 2),
    }


# --- imaptest ------------------------------------------------------------------------------


def run_imaptest(binary: str, port: int, mbox: Path, extra: Sequence[str],
                 secs: int = 10) -> tuple[float, int, str]:
    """(commands/s, "Error:" lines, last output lines)."""
    argv = [binary, "host=127.0.0.1", f"port={port}", "user=carol", "pass=carol-pw",
            f"secs={secs}", "clients=5", f"mbox={mbox}", *extra]
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=secs + 60, check=False)
    except subprocess.TimeoutExpired:
        raise BenchError(f"imaptest on port {port} did not end in time") from None
    out = (proc.stdout + proc.stderr).decode(errors="replace")
    lines = out.splitlines()
    errors = sum(1 for line in lines if "Error:" in line)
    if "Totals:" not in lines:
        raise BenchError(f"imaptest: no totals (exit {proc.returncode}): "
                         + " | ".join(lines[-5:]))
    totals = lines[lines.index("Totals:") + 4]
    commands = sum(int(x) for x in totals.split())
    errors_text = [line for line in lines if "Error:" in line][:5]
    return commands / secs, errors, " | ".join(errors_text)


def measure_imaptest(env: Env, binary: str) -> dict[str, float]:
    rng = random.Random(5)
    mbox = env.work / "imaptest.mbox"
    with mbox.open("wb") as f:
        for i in range(200):
            message = text_message(rng, i, 3000) if i % 2 else make_message(rng, 8000)
            f.write(b"From imaptest@example.test Mon Jun  1 12:00:00 2026\n")
            f.write(message.replace(b"\r\n", b"\n") + b"\n")
    filler = connect("fill", env.up.imap_port, mailbox=None, user="carol", password="carol-pw")
    try:
        filler.append_pipelined("INBOX", plain_messages(rng, 200))
    finally:
        filler.close()
    direct_rate, direct_errors, _ = run_imaptest(binary, env.up.imaps_port, mbox,
                                                 ["ssl=any-cert"])
    proxy = ProxyProcess(env.work)
    try:
        proxy_rate, proxy_errors, sample = run_imaptest(binary, proxy.port, mbox, [])
    finally:
        proxy.stop()
    if sample:
        env.notes["imaptest_proxy_error_sample"] = sample
    results = {
        "imaptest_direct_cmds_per_s": round(direct_rate, 1),
        "imaptest_proxy_cmds_per_s": round(proxy_rate, 1),
        "imaptest_stress_ratio": round(proxy_rate / direct_rate, 3) if direct_rate else 0.0,
        "imaptest_direct_errors": direct_errors,
        "imaptest_proxy_errors": proxy_errors,
    }
    if UPSTREAM_TLS != "none":  # the floor: the same through the bare relay (relay_child)
        relay = ProxyProcess(env.work, bare_relay=True)
        try:
            relay_rate, _, _ = run_imaptest(binary, relay.port, mbox, [])
        finally:
            relay.stop()
        results["imaptest_relay_cmds_per_s"] = round(relay_rate, 1)
        results["imaptest_relay_ratio"] = (round(relay_rate / direct_rate, 3) if direct_rate
                                           else 0.0)
    return results


# --- main ----------------------------------------------------------------------------------


def fill(env: Env, rng: random.Random, alice: Identity, bob: Identity, large_size: int,
         append_size: int) -> list[bytes]:
    count = env.count
    plain = plain_messages(rng, count)
    enc = encrypted_messages(rng, count, alice, bob)
    warm = encrypted_messages(rng, 10, alice, bob) + plain_messages(rng, 4)
    env.warm_count = len(warm)
    env.notes["plain_avg_kb"] = round(sum(map(len, plain)) / len(plain) / 1024, 1)
    env.notes["enc_avg_kb"] = round(sum(map(len, enc)) / len(enc) / 1024, 1)
    env.enc_sample = enc[:300]
    client = connect("fill", env.up.imap_port, mailbox=None)  # plain LOGIN: no TLS needed
    try:
        for box in ("plain", "enc", "warm", "large", "append"):
            client.check(client.command(f'CREATE "{box}"'), f"CREATE {box}")
        client.append_pipelined("plain", plain)
        client.append_pipelined("enc", enc)
        client.append_pipelined("warm", warm)
        if large_size:
            large = large_encrypted(rng, large_size, alice, bob)
            env.large_size = len(large)
            client.append_pipelined("large", [large])
    finally:
        client.close()
    return [attachment_message(rng, append_size, f"append-{i}") for i in range(10)]


def median_results(env: Env) -> dict[str, float]:
    med = {name: statistics.median(values) for name, values in env.times.items()}
    r: dict[str, float] = {}
    count = env.count
    for name in ("plain_fetch_all", "plain_fetch_seq", "plain_sync", "plain_sync_first",
                 "append_1m"):
        d, p = med.get(f"{name}_direct"), med.get(f"{name}_proxy")
        if d is not None:
            r[f"{name}_direct_s"] = round(d, 4)
        if p is not None:
            r[f"{name}_proxy_s"] = round(p, 4)
        if name != "append_1m":
            if d is not None:
                r[f"{name}_direct_msgs_per_s"] = round(count / d, 1)
            if p is not None:
                r[f"{name}_proxy_msgs_per_s"] = round(count / p, 1)
        if d is not None and p is not None:
            r[f"{name}_ratio"] = round(d / p, 4)
    for side in ("proxy", "relay"):  # less hour-bound than the times: what to cut
        cpu = med.get(f"plain_fetch_seq_{side}_cpu")
        if cpu is not None:
            r[f"plain_fetch_seq_{side}_cpu_us_per_cmd"] = round(cpu, 1)
    relay = med.get("plain_fetch_seq_relay")
    if relay is not None:
        r["plain_fetch_seq_relay_s"] = round(relay, 4)
        d = med.get("plain_fetch_seq_direct")
        if d is not None:
            r["plain_fetch_seq_relay_ratio"] = round(d / relay, 4)
    direct_fetch, direct_sync = med.get("plain_fetch_all_direct"), med.get("plain_sync_direct")
    for name, against in (("encrypted_first_fetch", None),
                          ("encrypted_cached_fetch", direct_fetch),
                          ("encrypted_sync_cached", direct_sync)):
        seconds = med.get(name)
        if seconds is None:
            continue
        r[f"{name}_s"] = round(seconds, 4)
        r[f"{name}_per_s"] = round(count / seconds, 1)
        for part in ("daemon", "worker", "loop"):
            cpu = med.get(f"{name}_{part}_cpu")
            if cpu is not None:
                r[f"{name}_{part}_cpu_ms_per_msg"] = round(cpu * 1000 / count, 2)
        if against is not None:
            r[f"{name}_ratio"] = round(against / seconds, 4)
    return r


def prepare_work(work: Path, up: Upstream) -> tuple[Identity, Identity]:
    """alice and bob under a new CA; what a proxy child reads in `work`: bob's key and
    certificate, the CA, the upstream's address."""
    ca = make_ca("Bench CA")
    alice = make_user("alice@example.test", ca)
    bob = make_user("bob@example.test", ca)
    (work / "bob.pem").write_bytes(bob.key_pem() + bob.cert_pem() + ca.cert_pem())
    (work / "ca.pem").write_bytes(ca.cert_pem())
    (work / "upstream.json").write_text(json.dumps(
        {"host": up.host, "port": up.imap_port, "ca_file": str(up.ca_file)}))
    return alice, bob


def run(args: argparse.Namespace) -> tuple[dict[str, object], Env]:
    base = Path(tempfile.mkdtemp(prefix="smime-bench-imap-"))
    os.chmod(base, 0o711)  # noqa: S103 (the daemons' users need to reach their files)
    users = {"alice": "alice-pw", USER: PASSWORD, "carol": "carol-pw", **IDLE_USERS}
    up = start_upstream(base / "upstream", users=users)
    work = base / "proxy"
    work.mkdir()
    try:
        rng = random.Random(1)
        alice, bob = prepare_work(work, up)
        env = Env(up, work, up.ssl_context(), args.count)
        large_size = 0 if args.skip_large else args.large_mb * MB
        start = time.perf_counter()
        appends = fill(env, rng, alice, bob, large_size, MB)
        print(f"mailboxes filled in {time.perf_counter() - start:.1f} s", file=sys.stderr)

        direct = env.direct("plain")  # warm Dovecot's caches (outside timing)
        try:
            uids = uids_of(direct)
            fetch_all(direct, "BODY.PEEK[]", env.count)
            fetch_all(direct, "(FLAGS BODYSTRUCTURE ENVELOPE RFC822.SIZE)", env.count)
            direct.select("enc")
            fetch_all(direct, "(FLAGS BODYSTRUCTURE ENVELOPE RFC822.SIZE)", env.count)
        finally:
            direct.close()
        for i in range(args.rounds):
            start = time.perf_counter()
            proxy = ProxyProcess(work)
            # the bare relay's child only while the plain figures are measured
            relay = ProxyProcess(work, bare_relay=True) if UPSTREAM_TLS != "none" else None
            try:
                warm_proxy(env, proxy)
                plain_round(env, proxy, relay, uids, appends[: args.appends],
                            direct_first=i % 2 == 0)
                if relay is not None:
                    relay.stop()
                    relay = None
                encrypted_round(env, proxy)
            finally:
                proxy.stop()
                if relay is not None:
                    relay.stop()
            print(f"round {i + 1}/{args.rounds}: {time.perf_counter() - start:.1f} s",
                  file=sys.stderr, flush=True)
        results: dict[str, object] = dict(median_results(env))
        opening = env.attempt("opening alone", lambda: measure_opening(env))
        if opening is not None:
            results.update(opening)
        if env.not_opened is not None:
            results["encrypted_not_opened"] = env.not_opened
        if not args.skip_idle:
            idle = env.attempt("idle", lambda: measure_idle(env, args.idle))
            if idle is not None:
                results.update(idle)
            if "idle_stop_reason" in env.notes:
                results["idle_stop_reason"] = env.notes["idle_stop_reason"]
            kept = env.attempt("idle after fetch",
                               lambda: measure_idle_after_fetch(env, min(args.idle, 200)))
            if kept is not None:
                results.update(kept)
        if large_size:
            large = env.attempt("large", lambda: measure_large(env, env.large_size))
            if large is not None:
                results.update(large)
        if args.imaptest:
            stress = env.attempt("imaptest", lambda: measure_imaptest(env, args.imaptest))
            if stress is not None:
                results.update(stress)
            if "imaptest_proxy_error_sample" in env.notes:
                results["imaptest_proxy_error_sample"] = env.notes["imaptest_proxy_error_sample"]
        results["count"] = args.count
        results["rounds"] = args.rounds
        results["plain_avg_kb"] = env.notes["plain_avg_kb"]
        results["upstream_tls"] = UPSTREAM_TLS
        results["event_loop"] = event_loop.loop_name()
        results["enc_avg_kb"] = env.notes["enc_avg_kb"]
        results["failures"] = env.failures
        if env.failures:
            log = work / "proxy-child.log"
            if log.exists():
                tail = log.read_text(errors="replace").splitlines()[-15:]
                print("proxy child log (tail):\n  " + "\n  ".join(tail), file=sys.stderr)
        return results, env
    finally:
        up.stop()
        shutil.rmtree(base, ignore_errors=True)


def report(r: dict[str, object], args: argparse.Namespace) -> None:
    def num(key: str) -> float | None:
        value = r.get(key)
        return float(value) if isinstance(value, int | float) else None

    def fmt(key: str, spec: str, unit: str = "") -> str:
        value = num(key)
        return "   n/a" if value is None else f"{value:{spec}}{unit}"

    print(f"{args.count} messages per mailbox (plain ~{r['plain_avg_kb']} KB, encrypted "
          f"~{r['enc_avg_kb']} KB), user bob, median of {args.rounds} interleaved rounds; "
          "direct = Dovecot with STARTTLS, proxy = plain to the proxy, STARTTLS upstream")
    print("                                direct         proxy    direct/proxy")
    for name, label in (("plain_fetch_all", "FETCH 1:* BODY.PEEK[]"),
                        ("plain_fetch_seq", "UID FETCH n, one by one"),
                        ("plain_sync", "FETCH 1:* (FLAGS BS ENV SIZE)"),
                        ("plain_sync_first", "  the same, new connection")):
        print(f"  {label:<28}{fmt(f'{name}_direct_s', '8.3f', ' s')}  "
              f"{fmt(f'{name}_proxy_s', '8.3f', ' s')}   {fmt(f'{name}_ratio', '8.3f')}   "
              f"({fmt(f'{name}_direct_msgs_per_s', '.0f')} / "
              f"{fmt(f'{name}_proxy_msgs_per_s', '.0f')} msg/s)")
    if "plain_fetch_seq_relay_ratio" in r:
        print(f"  {'  the same, bare relay':<28}{'':10}  "
              f"{fmt('plain_fetch_seq_relay_s', '8.3f', ' s')}   "
              f"{fmt('plain_fetch_seq_relay_ratio', '8.3f')}   (no IMAP in it: the floor)")
    if "plain_fetch_seq_proxy_cpu_us_per_cmd" in r:
        print(f"  {'  CPU per command':<28}{'':10}  proxy "
              f"{fmt('plain_fetch_seq_proxy_cpu_us_per_cmd', '.0f', ' µs')}, bare relay "
              f"{fmt('plain_fetch_seq_relay_cpu_us_per_cmd', '.0f', ' µs')}")
    print(f"  {'APPEND 1 MB, per message':<28}{fmt('append_1m_direct_s', '8.3f', ' s')}  "
          f"{fmt('append_1m_proxy_s', '8.3f', ' s')}   {fmt('append_1m_ratio', '8.3f')}")
    print(f"encrypted, first FETCH 1:* BODY.PEEK[] after unlock: "
          f"{fmt('encrypted_first_fetch_s', '.3f', ' s')}, "
          f"{fmt('encrypted_first_fetch_per_s', '.1f')} msg/s "
          f"(not shown opened: {r.get('encrypted_not_opened')}); CPU per message: daemon "
          f"{fmt('encrypted_first_fetch_daemon_cpu_ms_per_msg', '.2f', ' ms')} (its event "
          f"loop {fmt('encrypted_first_fetch_loop_cpu_ms_per_msg', '.2f', ' ms')}), worker "
          f"processes {fmt('encrypted_first_fetch_worker_cpu_ms_per_msg', '.2f', ' ms')} "
          f"(imap.open_processes: {OPEN_PROCESSES})")
    if "encrypted_open_cpu_ms_per_msg" in r:
        print(f"  opening alone: {fmt('encrypted_open_cpu_ms_per_msg', '.2f', ' ms')} of CPU per"
              f" message in one thread; {os.cpu_count()} processes at once, nothing else "
              f"running: {fmt('encrypted_open_parallel_per_s', '.0f')} msg/s (the ceiling)")
        print(f"  the machine: {fmt('machine_rsa2048_sign_ms', '.3f', ' ms')} of CPU for one "
              "RSA-2048 signature (OpenSSL, one thread)")
    print(f"encrypted, same FETCH again: {fmt('encrypted_cached_fetch_s', '.3f', ' s')} "
          f"({fmt('encrypted_cached_fetch_per_s', '.1f')} msg/s), "
          f"{fmt('encrypted_cached_fetch_ratio', '.3f')} x direct plain FETCH")
    print(f"encrypted, sync after opened: {fmt('encrypted_sync_cached_s', '.3f', ' s')} "
          f"({fmt('encrypted_sync_cached_per_s', '.1f')} msg/s), "
          f"{fmt('encrypted_sync_cached_ratio', '.3f')} x direct plain sync")
    if "idle_connections" in r:
        extrapolated = " (extrapolated)" if r.get("idle_1000_extrapolated") else ""
        print(f"IDLE: {r['idle_connections']} connections held, proxy RSS "
              f"{r['idle_rss_before_mb']} -> {r['idle_rss_mb']} MB (+{r['idle_rss_growth_mb']} "
              f"MB, {r['idle_rss_per_connection_kb']} KB each); at 1000: "
              f"{r['idle_1000_rss_mb']} MB{extrapolated}")
    if "idle_after_fetch_rss_per_connection_kb" in r:
        print(f"  IDLE after reading a 2 MB message: {r['idle_after_fetch_connections']} "
              f"connections, {r['idle_after_fetch_rss_per_connection_kb']} KB each")
    if "idle_stop_reason" in r:
        print(f"  stopped by: {r['idle_stop_reason']}")
    if "large_25m_rss_ratio" in r:
        print(f"large ({r['large_25m_mb']} MB stored, {r['large_25m_shown_mb']} MB shown): "
              f"direct {r['large_25m_direct_s']} s, proxy {r['large_25m_proxy_s']} s, proxy "
              f"peak RSS growth {r['large_25m_rss_growth_mb']} MB = "
              f"{r['large_25m_rss_ratio']} x the stored size")
    if "imaptest_stress_ratio" in r:
        print(f"imaptest 5 clients 10 s: direct {r['imaptest_direct_cmds_per_s']} cmd/s "
              f"({r['imaptest_direct_errors']} errors), proxy {r['imaptest_proxy_cmds_per_s']} "
              f"cmd/s ({r['imaptest_proxy_errors']} errors), ratio {r['imaptest_stress_ratio']}")
        if "imaptest_relay_ratio" in r:
            print(f"  the same through the bare relay: {r['imaptest_relay_cmds_per_s']} cmd/s, "
                  f"ratio {r['imaptest_relay_ratio']} (no IMAP in it: the floor)")
        if "imaptest_proxy_error_sample" in r:
            print(f"  proxy errors: {r['imaptest_proxy_error_sample']}")
    failures = r.get("failures")
    if isinstance(failures, list) and failures:
        print(f"FAILURES ({len(failures)}):")
        for failure in failures:
            print(f"  {failure}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--appends", type=int, default=10, help="1 MB APPENDs per side/round")
    parser.add_argument("--idle", type=int, default=1000, help="IDLE connections to try")
    parser.add_argument("--large-mb", type=int, default=25)
    parser.add_argument("--quick", action="store_true",
                        help="40 messages, 1 round, 3 APPENDs, 20 IDLE, 5 MB")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    parser.add_argument("--skip-idle", action="store_true")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--imaptest", help="path of Dovecot's imaptest binary (optional)")
    parser.add_argument("--proxy-child", help=argparse.SUPPRESS)
    parser.add_argument("--relay-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.proxy_child:
        proxy_child(Path(args.proxy_child))
        return
    if args.relay_child:
        relay_child(Path(args.relay_child))
        return
    if args.quick:
        args.count, args.rounds, args.appends, args.idle, args.large_mb = 40, 1, 3, 20, 5
    results, env = run(args)
    report(results, args)
    if args.json:
        print(json.dumps(results, sort_keys=True))
    if env.failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
