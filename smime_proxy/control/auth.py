"""Who is asking: mail-credential checks (cached briefly as salted hashes), throttling of
password attempts, and the web page's sessions.

- `CredentialCache`: a successful upstream LOGIN is remembered for at most 5 minutes as
  PBKDF2-HMAC-SHA256(password, per-process random salt + user); the password itself is never
  kept. A failed check is never cached.
- `Throttle` (from `smime_proxy.throttle`, shared with the IMAP and SMTP fronts).
- `Sessions`: random session ids (cookie) with a CSRF token each; idle and absolute expiry.

May import: errors, throttle, stdlib.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from smime_proxy.errors import UsageError

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
    # what the user last asked to see of their mail: folder counts, found messages
    folders: list[dict[str, Any]] = field(default_factory=list)
    found: dict[str, Any] | None = None

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
