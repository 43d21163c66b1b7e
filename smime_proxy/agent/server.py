"""The key agent process (`smime-proxy agent`): the only process that holds unlocked private
keys when the config names one (`agent:`), so that a flaw in the fronts' parsing of mail,
IMAP, SMTP or HTTP cannot read a key out of memory (issue 12, privilege separation).

It listens on a Unix socket (created mode 0600 in a directory of its own) and parses
nothing but `agent.protocol` frames. A connecting process is accepted only if the socket's
peer credentials (SO_PEERCRED) name an allowed user id (its own by default). An unlock
sends the stored, password-encrypted key and the password: the key is decrypted here
(PBKDF2, in a worker thread) and never leaves. The fronts then ask for the operations of the
`KeyAgent` port (unwrap a content-encryption key, ECDH, sign a digest) by user. Unlocks end
as in `keystore.service`: after `idle` seconds without use, `maximum` seconds after the
unlock, on LOCK, and when this process ends (nothing is written anywhere). The clock is the
fronts' (each request says `now`): one host, and tests inject clocks.

Nothing here logs a password, a key or a digest; a malformed frame closes its connection.

May import: agent.protocol, crypto, errors, event_loop, keystore, cryptography, stdlib.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from smime_proxy.agent import protocol as p
from smime_proxy.crypto.keyagent import InProcessKeyAgent, KeyTransportPadding
from smime_proxy.errors import SmimeProxyError, WrongPassword
from smime_proxy.event_loop import write_if_open
from smime_proxy.keystore.pkcs import public_key_der, unwrap_private_key

log = logging.getLogger("smime_proxy.agent")
ITERATION_CAP = 10_000_000  # a stored key with more KDF iterations is refused (a DoS)
_PEERCRED = struct.Struct("3i")  # pid, uid, gid
_KEY_OPERATIONS = frozenset({p.UNWRAP, p.ECDH, p.SIGN})


@dataclass
class _Unlocked:
    agent: InProcessKeyAgent
    unlocked_at: float
    last_used: float
    idle: float
    maximum: float
    mark: bytes

    def expired(self, now: float) -> bool:
        return (now - self.last_used >= self.idle or now - self.unlocked_at >= self.maximum
                or now < self.unlocked_at)


def peer_uid(sock: socket.socket) -> int | None:
    """The user id of the process at the other end of a Unix socket (Linux SO_PEERCRED)."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    except (OSError, AttributeError):
        return None
    _pid, uid, _gid = _PEERCRED.unpack(raw)
    return int(uid)


class AgentCore:
    """What the agent knows and does, without the socket (tests call it directly)."""

    def __init__(self, iteration_cap: int = ITERATION_CAP) -> None:
        self.iteration_cap = iteration_cap
        self._unlocked: dict[str, _Unlocked] = {}
        self._lock = threading.Lock()  # requests run in worker threads

    def __repr__(self) -> str:
        return f"AgentCore(unlocked={len(self._unlocked)})"

    def unlock(self, fields: tuple[bytes, ...]) -> p.Message:
        if len(fields) != 8:
            raise p.ProtocolError("UNLOCK: 8 fields")
        user = p.user_name(fields[0])
        encrypted_key, password, certificate_der = fields[1], fields[2], fields[3]
        idle, maximum, now = (p.number(fields[i], n) for i, n in
                              ((4, "idle"), (5, "maximum"), (6, "now")))
        try:
            certificate = x509.load_der_x509_certificate(certificate_der)
            key = unwrap_private_key(encrypted_key, password, max_iterations=self.iteration_cap)
        except (ValueError, WrongPassword):
            return p.Message(p.WRONG_PASSWORD)
        if public_key_der(key) != public_key_der(certificate):
            return p.Message(p.WRONG_PASSWORD)
        with self._lock:
            self._unlocked[user] = _Unlocked(InProcessKeyAgent(key, certificate), now, now,
                                             idle, maximum, fields[7])
        log.info("unlocked", extra={"user": user})
        return p.Message(p.OK)

    def _session(self, user_field: bytes, now_field: bytes, *, touch: bool = True
                 ) -> _Unlocked | None:
        user = p.user_name(user_field)
        now = p.number(now_field, "now")
        with self._lock:
            unlocked = self._unlocked.get(user)
            if unlocked is None:
                return None
            if unlocked.expired(now):
                del self._unlocked[user]
                log.info("auto-locked", extra={"user": user})
                return None
            if touch:
                unlocked.last_used = max(unlocked.last_used, now)
            return unlocked

    def handle(self, request: p.Message) -> p.Message:
        """The answer to one request (UNLOCK excepted: `unlock`, in a worker thread)."""
        kind, fields = request.kind, request.fields
        if kind == p.LOCK:
            if len(fields) != 1:
                raise p.ProtocolError("LOCK: 1 field")
            with self._lock:
                gone = self._unlocked.pop(p.user_name(fields[0]), None)
            if gone is not None:
                log.info("locked", extra={"user": p.user_name(fields[0])})
            return p.Message(p.OK)
        if kind == p.EXPIRE:
            if len(fields) != 1:
                raise p.ProtocolError("EXPIRE: 1 field")
            now = p.number(fields[0], "now")
            with self._lock:
                ended = [u for u, s in self._unlocked.items() if s.expired(now)]
                for user in ended:
                    del self._unlocked[user]
            return p.Message(p.OK, tuple(u.encode("utf-8") for u in ended))
        if len(fields) < 2:
            raise p.ProtocolError("user and now expected")
        session = self._session(fields[0], fields[1], touch=kind != p.STATUS)
        if session is None:
            return p.Message(p.LOCKED)
        if kind in (p.STATUS, p.TOUCH):
            if kind == p.TOUCH and len(fields) == 3:
                session.mark = fields[2]
            elif len(fields) != 2:
                raise p.ProtocolError("STATUS, TOUCH: 2 fields (TOUCH: or 3, with a mark)")
            return p.Message(p.OK, (repr(session.unlocked_at).encode(),
                                    repr(session.last_used).encode(), session.mark))
        return _operate(session.agent, kind, fields[2:])

    def users(self) -> Collection[str]:
        with self._lock:
            return tuple(self._unlocked)


def _operate(agent: InProcessKeyAgent, kind: bytes, args: tuple[bytes, ...]) -> p.Message:
    try:
        if kind == p.UNWRAP:
            if len(args) != 7:
                raise p.ProtocolError("UNWRAP: 9 fields")
            scheme = p.text(args[1], "scheme")
            if scheme not in ("pkcs1", "oaep"):
                raise p.ProtocolError("UNWRAP: scheme")
            pad = KeyTransportPadding(
                "oaep" if scheme == "oaep" else "pkcs1", p.text(args[2], "oaep hash"),
                p.text(args[3], "mgf hash"), args[5] if args[4] == b"1" else None)
            length = int(p.number(args[6], "length"))
            if not 1 <= length <= 64:
                raise p.ProtocolError("UNWRAP: length")
            return p.Message(p.OK, (agent.unwrap_key(args[0], pad, length),))
        if kind == p.ECDH:
            if len(args) != 1:
                raise p.ProtocolError("ECDH: 3 fields")
            try:
                peer = serialization.load_der_public_key(args[0])
            except ValueError:
                raise p.ProtocolError("ECDH: not a public key") from None
            if not isinstance(peer, ec.EllipticCurvePublicKey):
                raise p.ProtocolError("ECDH: not an EC key")
            return p.Message(p.OK, (agent.ecdh(peer),))
        if kind == p.SIGN:
            if len(args) != 3:
                raise p.ProtocolError("SIGN: 5 fields")
            scheme = p.text(args[2], "scheme")
            if scheme not in ("pkcs1", "pss", "ecdsa"):
                raise p.ProtocolError("SIGN: scheme")
            return p.Message(p.OK, (agent.sign_digest(
                args[0], p.text(args[1], "hash"),
                "pss" if scheme == "pss" else "ecdsa" if scheme == "ecdsa" else "pkcs1"),))
    except (SmimeProxyError, ValueError) as exc:  # the key cannot do it (never says why more)
        return p.Message(p.UNSUPPORTED, (type(exc).__name__.encode(),))
    raise p.ProtocolError("unknown operation")


class AgentServer:
    """The agent's Unix socket server."""

    def __init__(self, socket_path: Path, *, allowed_uids: Collection[int] = (),
                 core: AgentCore | None = None,
                 uid_of: Callable[[socket.socket], int | None] = peer_uid) -> None:
        self.socket_path = socket_path
        self.allowed = frozenset(allowed_uids) | {os.geteuid()}
        self.core = core or AgentCore()
        self._uid_of = uid_of
        self._server: asyncio.AbstractServer | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="agent")
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        directory = self.socket_path.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # a socket left by an agent that died
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._client, str(self.socket_path))
        finally:
            os.umask(old_umask)
        log.info("key agent listening on %s", self.socket_path)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):  # a connection's handler then ends quietly
                writer.close()
            if self._handlers:  # before the loop ends (it would cancel them, noisily)
                await asyncio.wait(list(self._handlers), timeout=2.0)
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _client(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        uid = self._uid_of(sock) if sock is not None else None
        if uid is None or uid not in self.allowed:
            log.warning("refused a connection", extra={"uid": uid})
            writer.close()
            return
        self._writers.add(writer)
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
        try:
            while True:
                try:
                    header = await reader.readexactly(4)
                    body = await reader.readexactly(p.frame_length(header))
                    request = p.decode(body, p.OPERATIONS)
                    if request.kind == p.UNLOCK:  # PBKDF2: a worker thread
                        answer = await asyncio.get_running_loop().run_in_executor(
                            self._pool, self.core.unlock, request.fields)
                    elif request.kind in _KEY_OPERATIONS:  # ~1 ms of RSA: a worker thread
                        answer = await asyncio.get_running_loop().run_in_executor(
                            self._pool, self.core.handle, request)
                    else:  # a look at the table: here, at once
                        answer = self.core.handle(request)
                except p.ProtocolError as exc:
                    write_if_open(writer, p.encode(p.Message(p.BAD_REQUEST,
                                                             (str(exc).encode(),))))
                    await writer.drain()
                    return
                write_if_open(writer, p.encode(answer))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            self._writers.discard(writer)
            if handler is not None:
                self._handlers.discard(handler)
            writer.close()
