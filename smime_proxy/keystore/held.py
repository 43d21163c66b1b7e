"""Unlocks held by a key agent process (issue 12, privilege separation): the `KeyHolder` port
(what `agent.client.AgentClient` offers) and `HeldKeys`, the unlock half of `SecureMail`
when the config names an agent (`agent: {socket: ...}`).

An unlock sends the stored, password-encrypted key and the password to the agent, which
decrypts and keeps it: no unlocked key is ever in this process. `agent_for` asks the agent
whether the unlock holds (and counts the use) and gives a `KeyAgent` whose operations the
agent performs; the same object for as long as one unlock lasts (the IMAP view cache relies
on that identity). Timeouts are the agent's, on this process's clock (`now` is sent).
Listeners hear of an unlock that ends here, or that a check finds gone (the agent locked it
or was restarted). An agent that cannot be reached is a `KeyLocked`.

May import: errors, crypto.keyagent, keystore.unlocks, cryptography, stdlib.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

from cryptography import x509

from smime_proxy.crypto.keyagent import KeyAgent
from smime_proxy.errors import KeyLocked
from smime_proxy.keystore.unlocks import UnlockState


class HeldStatus(Protocol):
    @property
    def unlocked_at(self) -> float: ...

    @property
    def last_used(self) -> float: ...

    @property
    def mark(self) -> bytes: ...


class HeldAgent(KeyAgent, Protocol):
    """A `KeyAgent` of a held key; `now` is the moment its unlock was last checked."""

    now: float


class KeyHolder(Protocol):
    """A process that holds unlocked keys (`agent.client.AgentClient`)."""

    def unlock(self, user: str, encrypted_key: bytes, password: bytes, certificate: bytes, *,
               idle: float, maximum: float, now: float, mark: bytes = b"") -> None:
        """Decrypt and keep the key; `WrongPassword` if it does not open."""
        ...

    def lock(self, user: str) -> None: ...

    def status(self, user: str, now: float, *, touch: bool = False,
               mark: bytes | None = None) -> HeldStatus | None: ...

    def expire(self, now: float) -> list[str]: ...

    def agent(self, user: str, certificate: x509.Certificate,
              chain: Sequence[x509.Certificate], now: float) -> HeldAgent: ...


def _seconds(moment: datetime) -> float:
    return moment.timestamp()


def _moment(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class HeldKeys:
    """The users' unlocks in a key agent process (see the module docstring)."""

    def __init__(self, holder: KeyHolder, idle_timeout: timedelta,
                 max_unlock: timedelta) -> None:
        self.holder = holder
        self.idle_timeout = idle_timeout
        self.max_unlock = max_unlock
        self._listeners: list[Callable[[str], None]] = []
        self._agents: dict[str, tuple[float, HeldAgent]] = {}  # user -> (unlocked_at, agent)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"HeldKeys({self.holder!r})"

    def add_listener(self, listener: Callable[[str], None]) -> None:
        self._listeners.append(listener)

    def _tell(self, users: Collection[str]) -> None:
        for user in users:
            with self._lock:
                self._agents.pop(user, None)
            for listener in self._listeners:
                listener(user)

    def unlock(self, user: str, encrypted_key: bytes, password: bytes, certificate: bytes,
               now: datetime) -> None:
        """Have the agent open the key (`WrongPassword` if it does not); an unlock it
        replaces ends (its listeners hear)."""
        self.holder.unlock(user, encrypted_key, password, certificate,
                           idle=self.idle_timeout.total_seconds(),
                           maximum=self.max_unlock.total_seconds(), now=_seconds(now))
        self._tell((user,))

    def agent_for(self, user: str,
                  certificates: Callable[[], tuple[bytes, Sequence[bytes]]],
                  now: datetime) -> KeyAgent:
        """The agent of the user's unlock, counting the use; `certificates()` (the
        certificate and chain, DER) is read only for a new unlock."""
        status = self.holder.status(user, _seconds(now), touch=True)
        if status is None:
            self._forget(user)
            raise KeyLocked(
                f"the key of user {user!r} is locked: unlock it with the Secure Mail Password")
        with self._lock:
            kept = self._agents.get(user)
        if kept is not None and kept[0] == status.unlocked_at:
            kept[1].now = _seconds(now)
            return kept[1]
        if kept is not None:
            self._tell((user,))  # a new unlock replaced the one this process knew
        certificate, chain = certificates()
        agent = self.holder.agent(user, x509.load_der_x509_certificate(certificate),
                                  [x509.load_der_x509_certificate(d) for d in chain],
                                  _seconds(now))
        with self._lock:
            self._agents[user] = (status.unlocked_at, agent)
        return agent

    def _forget(self, user: str) -> None:
        with self._lock:
            known = user in self._agents
        if known:
            self._tell((user,))

    def state(self, user: str, now: datetime) -> UnlockState:
        try:
            status = self.holder.status(user, _seconds(now))
        except KeyLocked:  # no agent: locked
            return UnlockState(False)
        if status is None:
            return UnlockState(False)
        return UnlockState(True, idle_expires=_moment(status.last_used) + self.idle_timeout,
                           absolute_expires=_moment(status.unlocked_at) + self.max_unlock)

    def touch(self, user: str, now: datetime) -> bool:
        return self.holder.status(user, _seconds(now), touch=True) is not None

    def lock(self, user: str) -> None:
        self.holder.lock(user)
        self._tell((user,))

    def lock_expired(self, now: datetime) -> list[str]:
        """Let the agent end expired unlocks; the users whose unlock ended (or that this
        process knew and the agent no longer holds)."""
        try:
            ended = set(self.holder.expire(_seconds(now)))
        except KeyLocked:  # no agent: everything it held is gone
            with self._lock:
                ended = set(self._agents)
        with self._lock:
            known = set(self._agents)
        for user in known - ended:
            try:
                if self.holder.status(user, _seconds(now)) is None:
                    ended.add(user)
            except KeyLocked:
                ended.add(user)
        self._tell(sorted(ended))
        return sorted(ended)
