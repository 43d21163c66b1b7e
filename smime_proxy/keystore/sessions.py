"""The `UnlockSessions` port: where a user's unlock lives between `unlock` and its end.

A session is one unlock of one user: a random `session_id` (a new one at each unlock), the
unlocked key as an `InProcessKeyAgent`, `unlocked_at`, `last_used` and the mark of the mail
password known to open the user's mail copy (issue 13). The port only stores: `SecureMail`
decides expiry from the stored timestamps and the `now` it is given, and ends sessions through
the port. Changes of a session are conditional on its id (`touch`, `end`), so a node that
decided on an old session never refreshes or ends the new one that replaced it.

- `MemoryUnlockSessions` (here): in this process's memory, the embedded default and the
  reference semantics (every refresh is written; the same agent object for as long as the
  session lasts: the IMAP view cache relies on that identity).
- `keystore.redis_sessions.RedisUnlockSessions`: shared by every proxy node through Redis,
  the key sealed under the cluster key.

`current` hands back the same agent object for as long as one session lasts, a new one for a
new session. Errors of a shared store are `SessionStoreError`s (a `KeyStoreError`); never a
password, key or connection secret in their text.

May import: errors, crypto.keyagent, cryptography, stdlib.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from smime_proxy.crypto.keyagent import InProcessKeyAgent
from smime_proxy.errors import KeyStoreError, KeysUnavailable


class SessionStoreError(KeyStoreError):
    """The unlock sessions' store failed (Redis unreachable, a session that does not open
    with this node's cluster key): nothing about the unlock could be read or written."""


class SessionsUnavailable(SessionStoreError, KeysUnavailable):
    """A check (`SecureMail.agent_for`) could not reach the unlock sessions: the key cannot be
    used now, so the fronts give their locked behaviour (a `KeyLocked`)."""


@dataclass(frozen=True)
class UnlockSession:
    """One user's unlock as stored. Never shows the agent or the mark in a repr."""

    session_id: str
    agent: InProcessKeyAgent = field(repr=False)
    unlocked_at: datetime
    last_used: datetime
    mail_mark: bytes | None = field(default=None, repr=False)


class UnlockSessions(Protocol):
    """The users' unlock sessions (see the module docstring)."""

    def mail_mark(self, user: str, mail_password: bytes) -> bytes:
        """The mark stored for a mail password known to open `user`'s mail copy: an HMAC
        under a key every node of one deployment shares (memory: this process's)."""
        ...

    def start(self, user: str, agent: InProcessKeyAgent, now: datetime, *,
              keep_until: datetime, mail_mark: bytes | None = None
              ) -> tuple[UnlockSession, bool]:
        """A new session (a new id, unlocked_at = last_used = now) replacing the user's
        current one; and whether there was one. `keep_until`: the earliest moment it may be
        forgotten without a decision (a shared store's garbage collection)."""
        ...

    def current(self, user: str) -> UnlockSession | None:
        """The user's session as stored (expired or not), or None."""
        ...

    def touch(self, user: str, session: UnlockSession, now: datetime, *,
              keep_until: datetime, mail_mark: bytes | None = None) -> bool:
        """Record use at `now` (last_used = max(stored, now)) and, if given, a new mail mark,
        if `session` (just read by `current`) is still the user's session; False if it ended
        or was replaced. While `session.last_used` is less than `refresh_interval` before
        `now`, a store may answer True without writing or looking (the mark is always
        written)."""
        ...

    def end(self, user: str, session_id: str | None = None) -> bool:
        """End the user's session (only if its id is `session_id`, when given); True if one
        ended."""
        ...

    def users(self) -> list[str]:
        """The users whose session this process holds or has handed out an agent for (what
        the periodic sweep looks at)."""
        ...

    @property
    def refresh_interval(self) -> timedelta:
        """How stale a stored last_used may be after a use (0 for memory)."""
        ...

    def close(self) -> None:
        """Release connections (memory: nothing)."""
        ...


def mark_of(key: bytes, user: str, mail_password: bytes) -> bytes:
    """HMAC-SHA256 of the user name and the mail password under `key` (the user is bound in,
    so equal mail passwords of two users give different marks)."""
    name = user.encode("utf-8")
    return hmac.new(key, len(name).to_bytes(4, "big") + name + mail_password,
                    hashlib.sha256).digest()


class MemoryUnlockSessions:
    """`UnlockSessions` in a dict: one process (the embedded default), the reference."""

    def __init__(self) -> None:
        self._sessions: dict[str, UnlockSession] = {}
        self._lock = threading.Lock()
        self._mark_key = secrets.token_bytes(32)  # this process only: marks, not secrets

    def __repr__(self) -> str:
        return f"MemoryUnlockSessions(unlocked={len(self._sessions)})"

    @property
    def refresh_interval(self) -> timedelta:
        return timedelta(0)

    def mail_mark(self, user: str, mail_password: bytes) -> bytes:
        return mark_of(self._mark_key, user, mail_password)

    def start(self, user: str, agent: InProcessKeyAgent, now: datetime, *,
              keep_until: datetime, mail_mark: bytes | None = None
              ) -> tuple[UnlockSession, bool]:
        session = UnlockSession(secrets.token_hex(16), agent, unlocked_at=now, last_used=now,
                                mail_mark=mail_mark)
        with self._lock:
            replaced = self._sessions.get(user)
            self._sessions[user] = session
        return session, replaced is not None

    def current(self, user: str) -> UnlockSession | None:
        with self._lock:
            return self._sessions.get(user)

    def touch(self, user: str, session: UnlockSession, now: datetime, *,
              keep_until: datetime, mail_mark: bytes | None = None) -> bool:
        with self._lock:
            stored = self._sessions.get(user)
            if stored is None or stored.session_id != session.session_id:
                return False
            if now <= stored.last_used and mail_mark is None:
                return True  # nothing would change
            # made directly (dataclasses.replace looks the fields up at each call): every
            # message an unlocked key opens touches its session
            self._sessions[user] = UnlockSession(
                stored.session_id, stored.agent, stored.unlocked_at,
                max(stored.last_used, now),
                stored.mail_mark if mail_mark is None else mail_mark)
            return True

    def end(self, user: str, session_id: str | None = None) -> bool:
        with self._lock:
            stored = self._sessions.get(user)
            if stored is None or (session_id is not None and stored.session_id != session_id):
                return False
            del self._sessions[user]
            return True

    def users(self) -> list[str]:
        with self._lock:
            return list(self._sessions)

    def close(self) -> None:
        """Nothing to release."""
