"""Auto-lock over the `UnlockSessions` port: `Unlocks` decides whether a user's unlock holds at
`now` (an idle timeout refreshed by every use, an absolute maximum from the unlock; a clock
that went back before the unlock locks), ends expired sessions, and tells this process's lock
listeners when an unlock it knew ends: ended here, or found gone or replaced at a check (ended
by another node, or by the store). A listener may hear one end twice: it must be idempotent.

Decisions use the stored timestamps and the `now` given, so every node sharing the sessions
decides alike. `SecureMail` (keystore.service) is the API; this is its unlock half.

Errors: `KeyLocked`; a failing shared store raises `SessionStoreError`, which `agent_for`
turns into `SessionsUnavailable` (a `KeyLocked` too: the fronts behave as if locked) and
`state` reads as locked (logged).

May import: errors, crypto.keyagent, keystore.sessions, stdlib (logging: user names and
outcomes only).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from smime_proxy.crypto.keyagent import InProcessKeyAgent
from smime_proxy.errors import KeyLocked
from smime_proxy.keystore.sessions import (
    SessionStoreError,
    SessionsUnavailable,
    UnlockSession,
    UnlockSessions,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UnlockState:
    """Whether a user's key is unlocked at a moment, and until when at most."""

    unlocked: bool
    idle_expires: datetime | None = None
    absolute_expires: datetime | None = None

    @property
    def expires(self) -> datetime | None:
        """The earlier of the two deadlines."""
        if self.idle_expires is None or self.absolute_expires is None:
            return None
        return min(self.idle_expires, self.absolute_expires)


class Unlocks:
    """The users' unlocks with their timeouts (see the module docstring). Thread-safe."""

    def __init__(self, sessions: UnlockSessions, idle_timeout: timedelta,
                 max_unlock: timedelta) -> None:
        self.sessions = sessions
        self.idle_timeout = idle_timeout
        self.max_unlock = max_unlock
        self._listeners: list[Callable[[str], None]] = []
        # user -> id of the session this process last started or handed out an agent of
        self._seen: dict[str, str] = {}
        self._lock = threading.Lock()

    def add_listener(self, listener: Callable[[str], None]) -> None:
        self._listeners.append(listener)

    def _tell(self, users: Collection[str]) -> None:
        for user in users:
            for listener in self._listeners:
                listener(user)

    def expired(self, session: UnlockSession, now: datetime) -> bool:
        return (
            now - session.last_used >= self.idle_timeout
            or now - session.unlocked_at >= self.max_unlock
            or now < session.unlocked_at  # the clock went back: be safe
        )

    def start(self, user: str, agent: InProcessKeyAgent, now: datetime,
              mail_mark: bytes | None = None) -> None:
        """Unlocked from `now`; an unlock it replaces ends (its listeners hear)."""
        session, replaced = self.sessions.start(
            user, agent, now, mail_mark=mail_mark,
            keep_until=now + min(self.idle_timeout, self.max_unlock))
        with self._lock:
            seen = self._seen.get(user)
            self._seen[user] = session.session_id
        if replaced or seen is not None:
            self._tell((user,))

    def current(self, user: str) -> UnlockSession | None:
        """The user's stored session, expired or not; listeners hear of a session this
        process had seen that is now gone or replaced."""
        session = self.sessions.current(user)
        with self._lock:
            seen = self._seen.get(user)
            gone = seen is not None and (session is None or session.session_id != seen)
            if gone:
                del self._seen[user]
        if gone:
            self._tell((user,))
        return session

    def live(self, user: str, now: datetime) -> UnlockSession | None:
        """The user's session if it holds at `now` (nothing refreshed, nothing ended)."""
        session = self.current(user)
        return None if session is None or self.expired(session, now) else session

    def touch(self, user: str, session: UnlockSession, now: datetime,
              mail_mark: bytes | None = None) -> bool:
        """Record use (and a mark) if `session` is still current; a shared store may forget
        it once expired (idle or absolute, the earlier)."""
        keep = min(max(session.last_used, now) + self.idle_timeout,
                   session.unlocked_at + self.max_unlock)
        return self.sessions.touch(user, session, now, keep_until=keep, mail_mark=mail_mark)

    def end(self, user: str, session: UnlockSession | None) -> bool:
        """End `session` (the user's, whichever, when None); listeners hear it. True if one
        ended in the store."""
        ended = self.sessions.end(user, None if session is None else session.session_id)
        with self._lock:
            seen = self._seen.get(user)
            dropped = seen is not None and (session is None or seen == session.session_id)
            if dropped:
                del self._seen[user]
        if ended or dropped:
            self._tell((user,))
        return ended

    def agent_for(self, user: str, now: datetime) -> InProcessKeyAgent:
        """The agent of the user's unlock at `now`, refreshing its idle timer; `KeyLocked`
        otherwise (an expired session is ended)."""
        try:
            for _attempt in range(3):
                session = self.current(user)
                if session is None:
                    break
                if self.expired(session, now):
                    self.end(user, session)
                    break
                if self.touch(user, session, now):
                    with self._lock:
                        self._seen[user] = session.session_id
                    return session.agent
                # ended or replaced since it was read: look again
        except SessionStoreError as exc:
            raise SessionsUnavailable(
                f"the key of user {user!r} cannot be used now: {exc}") from None
        raise KeyLocked(
            f"the key of user {user!r} is locked: unlock it with the Secure Mail Password")

    def state(self, user: str, now: datetime) -> UnlockState:
        """Whether the unlock holds at `now` (nothing refreshed); locked if the store fails."""
        try:
            session = self.live(user, now)
        except SessionStoreError as exc:
            log.warning("unlock state unavailable",
                        extra={"user": user, "reason": type(exc).__name__})
            return UnlockState(False)
        if session is None:
            return UnlockState(False)
        return UnlockState(True, idle_expires=session.last_used + self.idle_timeout,
                           absolute_expires=session.unlocked_at + self.max_unlock)

    def lock_expired(self, now: datetime) -> list[str]:
        """End every expired session this process knows of; the users whose unlock ended
        (expired now, or found gone from a shared store). `SessionStoreError` stops it."""
        with self._lock:
            seen = list(self._seen)
        gone: list[str] = []
        for user in dict.fromkeys([*self.sessions.users(), *seen]):
            with self._lock:
                was_seen = user in self._seen
            session = self.current(user)
            if (session is None and was_seen) or (
                    session is not None and self.expired(session, now)
                    and self.end(user, session)):
                gone.append(user)
        return gone
