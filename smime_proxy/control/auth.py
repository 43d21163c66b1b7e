"""Who is asking: mail-credential checks (cached briefly as salted hashes), throttling of
password attempts, and the web page's sessions.

- `CredentialCache`: a successful upstream LOGIN is remembered for at most 5 minutes as
  PBKDF2-HMAC-SHA256(password, per-process random salt + user); the password itself is never
  kept. A failed check is never cached.
- `Throttle`: consecutive failures per user and per source address; after a few free
  attempts each further attempt must wait a delay that doubles (capped). Time comes from the
  injected clock, so tests need no sleeping. Attempts are reserved before the slow check, so a
  burst of parallel guesses cannot slip through.
- `Sessions`: random session ids (cookie) with a CSRF token each; idle and absolute expiry.

May import: errors, stdlib.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from smime_proxy.errors import SmimeProxyError, UsageError

Clock = Callable[[], datetime]

CREDENTIAL_CACHE_TTL = timedelta(minutes=5)
_CACHE_KDF_ITERATIONS = 2_000
_CACHE_MAX_ENTRIES = 10_000


class CredentialCache:
    """Users whose mail credentials were accepted upstream recently (salted hashes only)."""

    def __init__(self, clock: Clock, ttl: timedelta = CREDENTIAL_CACHE_TTL) -> None:
        if ttl > CREDENTIAL_CACHE_TTL:
            raise UsageError("the credential cache may keep a check for 5 minutes at most")
        self._clock = clock
        self._ttl = ttl
        self._salt = secrets.token_bytes(16)
        self._entries: dict[str, tuple[bytes, datetime]] = {}

    def __repr__(self) -> str:
        return f"CredentialCache(entries={len(self._entries)}, ttl={self._ttl})"

    def _digest(self, user: str, password: str) -> bytes:
        salt = self._salt + hashlib.sha256(user.encode("utf-8")).digest()
        return hashlib.pbkdf2_hmac(
            "sha256", password.encode("utf-8"), salt, _CACHE_KDF_ITERATIONS
        )

    def hit(self, user: str, password: str) -> bool:
        entry = self._entries.get(user)
        if entry is None:
            return False
        digest, expires = entry
        if self._clock() >= expires:
            self._entries.pop(user, None)
            return False
        return hmac.compare_digest(digest, self._digest(user, password))

    def remember(self, user: str, password: str) -> None:
        now = self._clock()
        if len(self._entries) >= _CACHE_MAX_ENTRIES:
            self._entries = {u: e for u, e in self._entries.items() if e[1] > now}
            if len(self._entries) >= _CACHE_MAX_ENTRIES:
                self._entries.clear()
        self._entries[user] = (self._digest(user, password), now + self._ttl)

    def forget(self, user: str) -> None:
        self._entries.pop(user, None)


class Throttled(SmimeProxyError):
    """Too many failed attempts: try again in `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        self.retry_after = max(1, retry_after)
        super().__init__(f"too many failed attempts; try again in {self.retry_after} s")


@dataclass
class _Failures:
    count: int = 0
    last: datetime | None = None


@dataclass
class Throttle:
    """Growing delays after failed attempts, per user and per source address.

    The first `free_user` / `free_address` attempts cost nothing; attempt n > free must wait
    `base * 2**(n - free - 1)` seconds (at most `cap`) after the previous failure. A success
    clears the user's count (not the address's: one good account must not launder guesses at
    others); counts are forgotten after `forget_after` without failures.
    """

    clock: Clock
    free_user: int = 3
    free_address: int = 10
    base: float = 1.0
    cap: float = 300.0
    forget_after: timedelta = timedelta(minutes=15)
    _users: dict[str, _Failures] = field(default_factory=dict)
    _addresses: dict[str, _Failures] = field(default_factory=dict)

    def _delay(self, failures: _Failures, free: int, now: datetime) -> float:
        if failures.last is None:
            return 0.0
        if now - failures.last >= self.forget_after:
            failures.count = 0
            failures.last = None
            return 0.0
        over = failures.count + 1 - free  # attempt number count+1; the first `free` cost 0
        if over <= 0:
            return 0.0
        wait = min(self.cap, self.base * 2.0 ** (over - 1))
        elapsed = (now - failures.last).total_seconds()
        return max(0.0, wait - elapsed)

    def reserve(self, user: str, address: str) -> None:
        """Count an attempt as failed up front; raise `Throttled` if it must wait first."""
        now = self.clock()
        by_user = self._users.setdefault(user, _Failures())
        by_address = self._addresses.setdefault(address, _Failures())
        wait = max(
            self._delay(by_user, self.free_user, now),
            self._delay(by_address, self.free_address, now),
        )
        if wait > 0:
            raise Throttled(math.ceil(wait))
        for failures in (by_user, by_address):
            failures.count += 1
            failures.last = now
        if len(self._users) + len(self._addresses) > 100_000:
            self._prune(now)

    def succeeded(self, user: str, address: str) -> None:
        """The reserved attempt was right: the user's count starts again."""
        self._users.pop(user, None)
        by_address = self._addresses.get(address)
        if by_address is not None and by_address.count > 0:
            by_address.count -= 1  # this attempt was not a failure

    def cancel(self, user: str, address: str) -> None:
        """The reserved attempt was not judged (upstream down, bad input): undo it."""
        for failures in (self._users.get(user), self._addresses.get(address)):
            if failures is not None and failures.count > 0:
                failures.count -= 1

    def _prune(self, now: datetime) -> None:
        for table in (self._users, self._addresses):
            for key in [k for k, f in table.items()
                        if f.last is None or now - f.last >= self.forget_after]:
                del table[key]


SESSION_IDLE = timedelta(minutes=30)
SESSION_MAX = timedelta(hours=8)


@dataclass
class Session:
    """A logged-in browser. Holds no password."""

    id: str
    user: str
    csrf: str
    created: datetime
    last_seen: datetime
    domain: str | None = None
    flash: list[tuple[str, str]] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"Session(user={self.user!r}, created={self.created.isoformat()})"


class Sessions:
    def __init__(self, clock: Clock, idle: timedelta = SESSION_IDLE,
                 maximum: timedelta = SESSION_MAX) -> None:
        self._clock = clock
        self._idle = idle
        self._max = maximum
        self._by_id: dict[str, Session] = {}

    def __repr__(self) -> str:
        return f"Sessions(count={len(self._by_id)})"

    def create(self, user: str, domain: str | None = None) -> Session:
        now = self._clock()
        self._prune(now)
        session = Session(
            id=secrets.token_urlsafe(32), user=user, csrf=secrets.token_urlsafe(32),
            created=now, last_seen=now, domain=domain,
        )
        self._by_id[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        session = self._by_id.get(session_id)
        if session is None:
            return None
        now = self._clock()
        if now - session.last_seen >= self._idle or now - session.created >= self._max \
                or now < session.created:
            del self._by_id[session_id]
            return None
        session.last_seen = now
        return session

    def drop(self, session_id: str) -> None:
        self._by_id.pop(session_id, None)

    def _prune(self, now: datetime) -> None:
        if len(self._by_id) < 1000:
            return
        for key in [k for k, s in self._by_id.items()
                    if now - s.last_seen >= self._idle or now - s.created >= self._max]:
            del self._by_id[key]
