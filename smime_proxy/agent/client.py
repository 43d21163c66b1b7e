"""The fronts' side of the key agent process (`agent.server`): `AgentClient` sends requests
over the agent's Unix socket, `RemoteKeyAgent` is the `KeyAgent` port backed by it (what
`SecureMail.agent_for` gives when the config names an agent).

Synchronous: the key store and the `KeyAgent` port are called from worker threads (and the
CLI). One connection per thread, made on first use and made again once if the agent
closed it. An agent that cannot be reached means locked (`KeyLocked`): the fronts then
behave as for a locked key (IMAP `NO [UNAVAILABLE]`, SMTP 4xx) and recover when the agent is
back (its unlocks are gone: it keeps nothing on disk).

May import: agent.protocol, crypto, errors, cryptography, stdlib.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from smime_proxy.agent import protocol as p
from smime_proxy.crypto.keyagent import KeyTransportPadding, SignatureScheme
from smime_proxy.errors import (
    KeyLocked,
    KeyStoreError,
    KeysUnavailable,
    UnsupportedAlgorithm,
    WrongPassword,
)

UNREACHABLE = "the key agent cannot be reached: Secure Mail is locked until it is back"
DOWN_SECONDS = 1.0
PATIENCE = 5.0  # seconds an unlock waits for an agent being started again


class AgentUnreachable(KeysUnavailable):
    """The key agent process is not there (every key counts as locked)."""


@dataclass(frozen=True)
class AgentStatus:
    unlocked_at: float
    last_used: float
    mark: bytes = field(repr=False)


class AgentClient:
    """Requests to one key agent socket (thread-safe: a connection per thread)."""

    def __init__(self, socket_path: Path, *, timeout: float = 30.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._local = threading.local()
        self._down_until = 0.0  # monotonic: until then the agent counts as gone

    def __repr__(self) -> str:
        return f"AgentClient({str(self.socket_path)!r})"

    def _connection(self) -> socket.socket:
        sock: socket.socket | None = getattr(self._local, "sock", None)
        if sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(str(self.socket_path))
            except OSError:
                sock.close()
                raise
            self._local.sock = sock
        return sock

    def _drop(self) -> None:
        sock: socket.socket | None = getattr(self._local, "sock", None)
        self._local.sock = None
        if sock is not None:
            sock.close()

    def request(self, kind: bytes, *fields: bytes, patient: bool = False) -> p.Message:
        """One request and its answer; `AgentUnreachable` when there is no agent. A
        connection the agent closed is made again once. After a failure the agent counts
        as gone for `DOWN_SECONDS` (checks fail at once, not each after a timeout), unless
        `patient` (a user's unlock: it waits up to `PATIENCE` for an agent being started
        again)."""
        frame = p.encode(p.Message(kind, fields))
        deadline = time.monotonic() + (PATIENCE if patient else 0.0)
        attempt = 0
        while True:
            if not patient and time.monotonic() < self._down_until:
                raise AgentUnreachable(UNREACHABLE)
            try:
                sock = self._connection()
                sock.sendall(frame)
                length = p.frame_length(_read_exactly(sock, 4))
                answer = p.decode(_read_exactly(sock, length), p.OUTCOMES)
                self._down_until = 0.0
                return answer
            except (OSError, EOFError, p.ProtocolError):
                self._drop()
                attempt += 1
                if attempt >= 2 and time.monotonic() >= deadline:
                    self._down_until = time.monotonic() + DOWN_SECONDS
                    raise AgentUnreachable(UNREACHABLE) from None
                if attempt >= 2:
                    time.sleep(0.1)

    def close(self) -> None:
        self._drop()

    # --- the operations ---------------------------------------------------------------------

    def unlock(self, user: str, encrypted_key: bytes, password: bytes, certificate: bytes, *,
               idle: float, maximum: float, now: float, mark: bytes = b"") -> None:
        """Have the agent decrypt and keep the key; `WrongPassword` if it does not open."""
        answer = self.request(p.UNLOCK, user.encode("utf-8"), encrypted_key, password,
                              certificate, _num(idle), _num(maximum), _num(now), mark,
                              patient=True)
        if answer.kind == p.WRONG_PASSWORD:
            raise WrongPassword("wrong password")
        _expect_ok(answer)

    def lock(self, user: str) -> None:
        _expect_ok(self.request(p.LOCK, user.encode("utf-8")))

    def status(self, user: str, now: float, *, touch: bool = False,
               mark: bytes | None = None) -> AgentStatus | None:
        """The user's unlock, or None. `touch`: it counts as use (and `mark`, if given,
        replaces the stored mail mark)."""
        if touch or mark is not None:
            answer = self.request(p.TOUCH, user.encode("utf-8"), _num(now),
                                  *(() if mark is None else (mark,)))
        else:
            answer = self.request(p.STATUS, user.encode("utf-8"), _num(now))
        if answer.kind == p.LOCKED:
            return None
        _expect_ok(answer)
        if len(answer.fields) != 3:
            raise KeyStoreError("the key agent answered badly")
        return AgentStatus(p.number(answer.fields[0], "unlocked_at"),
                           p.number(answer.fields[1], "last_used"), answer.fields[2])

    def expire(self, now: float) -> list[str]:
        answer = self.request(p.EXPIRE, _num(now))
        _expect_ok(answer)
        return [f.decode("utf-8", "replace") for f in answer.fields]

    def agent(self, user: str, certificate: x509.Certificate,
              chain: Sequence[x509.Certificate], now: float) -> RemoteKeyAgent:
        """The `KeyAgent` of the user's key held by the agent."""
        return RemoteKeyAgent(self, user, certificate, chain, now)

    def operate(self, user: str, now: float, kind: bytes, *args: bytes) -> bytes:
        answer = self.request(kind, user.encode("utf-8"), _num(now), *args)
        if answer.kind == p.LOCKED:
            raise KeyLocked(f"the key of user {user!r} is locked: unlock it with the Secure "
                            "Mail Password")
        if answer.kind == p.UNSUPPORTED:
            raise UnsupportedAlgorithm("the key cannot do this operation")
        _expect_ok(answer)
        if len(answer.fields) != 1:
            raise KeyStoreError("the key agent answered badly")
        return answer.fields[0]


def _num(value: float) -> bytes:
    return repr(float(value)).encode("ascii")


def _expect_ok(answer: p.Message) -> None:
    if answer.kind != p.OK:
        raise KeyStoreError("the key agent refused the request")


def _read_exactly(sock: socket.socket, count: int) -> bytes:
    chunks: list[bytes] = []
    while count:
        chunk = sock.recv(count)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


class RemoteKeyAgent:
    """`KeyAgent` for one user's key held by the agent process (the key never comes here)."""

    def __init__(self, client: AgentClient, user: str, certificate: x509.Certificate,
                 chain: Sequence[x509.Certificate], now: float) -> None:
        self.client = client
        self.user = user
        self.cert = certificate
        self.extra_certs = tuple(chain)
        self.now = now  # the moment of the last `agent_for`: the unlock was checked then

    def __repr__(self) -> str:
        return f"RemoteKeyAgent(user={self.user!r})"

    @property
    def certificate(self) -> x509.Certificate:
        return self.cert

    @property
    def chain(self) -> Sequence[x509.Certificate]:
        return self.extra_certs

    def sign_digest(self, digest: bytes, hash_name: str, scheme: SignatureScheme) -> bytes:
        return self.client.operate(self.user, self.now, p.SIGN, digest,
                                   hash_name.encode("ascii"), scheme.encode("ascii"))

    def unwrap_key(self, encrypted_key: bytes, pad: KeyTransportPadding,
                   expected_length: int) -> bytes:
        return self.client.operate(
            self.user, self.now, p.UNWRAP, encrypted_key, pad.scheme.encode("ascii"),
            pad.oaep_hash.encode("ascii"), pad.mgf_hash.encode("ascii"),
            b"0" if pad.label is None else b"1", pad.label or b"",
            str(expected_length).encode("ascii"))

    def ecdh(self, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        return self.client.operate(self.user, self.now, p.ECDH, peer_public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
