"""Growing delays after failed password attempts, per user and per client address, across
connections (the control endpoint, IMAP LOGIN/AUTHENTICATE and SMTP AUTH each keep one).

After a few free attempts each further attempt must wait a delay that doubles (capped). Time
comes from the injected clock, so tests need no sleeping. Attempts are reserved before the
slow check, so a burst of parallel guesses cannot slip through; but a few attempts still
in flight (`in_flight_allowance[_address]`: a mail client opening several connections at
once, each with the right password; many users behind one address) are not held against
the next one. Memory is bounded: past
`max_entries` the stale entries go, then the oldest.

May import: errors, stdlib.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from smime_proxy.errors import SmimeProxyError

Clock = Callable[[], datetime]
log = logging.getLogger("smime_proxy.throttle")


class Throttled(SmimeProxyError):
    """Too many failed attempts: try again in `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        self.retry_after = max(1, retry_after)
        super().__init__(f"too many failed attempts; try again in {self.retry_after} s")


@dataclass
class _Failures:
    count: int = 0  # failed attempts, and attempts not yet judged
    pending: int = 0  # of those, not yet judged
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
    max_entries: int = 100_000
    in_flight_allowance: int = 8  # per user: a client's parallel connections
    in_flight_allowance_address: int = 64  # per address: many users behind one (NAT)
    _users: dict[str, _Failures] = field(default_factory=dict)
    _addresses: dict[str, _Failures] = field(default_factory=dict)

    def _delay(self, failures: _Failures, free: int, allowance: int, now: datetime) -> float:
        if failures.last is None:
            return 0.0
        if now - failures.last >= self.forget_after:
            failures.count = 0
            failures.last = None
            return 0.0
        # attempt number count+1 (the first `free` cost nothing), less a few in flight: an
        # abandoned attempt stays counted, so at most the allowance goes uncounted
        counted = failures.count - min(failures.pending, allowance)
        over = counted + 1 - free
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
            self._delay(by_user, self.free_user, self.in_flight_allowance, now),
            self._delay(by_address, self.free_address, self.in_flight_allowance_address, now),
        )
        if wait > 0:
            raise Throttled(math.ceil(wait))
        for failures in (by_user, by_address):
            failures.count += 1
            failures.pending += 1
            failures.last = now
        if len(self._users) + len(self._addresses) > self.max_entries:
            self._prune(now)

    def succeeded(self, user: str, address: str) -> None:
        """The reserved attempt was right: the user's count starts again."""
        self._users.pop(user, None)
        by_address = self._addresses.get(address)
        if by_address is not None and by_address.count > 0:
            by_address.count -= 1  # this attempt was not a failure
            by_address.pending = max(0, by_address.pending - 1)

    def failed(self, user: str, address: str) -> None:
        """The reserved attempt was judged wrong: it stays counted, no longer in flight."""
        for failures in (self._users.get(user), self._addresses.get(address)):
            if failures is not None:
                failures.pending = max(0, failures.pending - 1)

    def cancel(self, user: str, address: str) -> None:
        """The reserved attempt was not judged (upstream down, bad input): undo it."""
        for failures in (self._users.get(user), self._addresses.get(address)):
            if failures is not None and failures.count > 0:
                failures.count -= 1
                failures.pending = max(0, failures.pending - 1)

    def _prune(self, now: datetime) -> None:
        for table in (self._users, self._addresses):
            for key in [k for k, f in table.items()
                        if f.last is None or now - f.last >= self.forget_after]:
                del table[key]
            # still too many (a flood of fresh names): the oldest half of this table goes
            if len(table) > self.max_entries // 2:
                ordered = sorted(table, key=lambda k: table[k].last or now)
                for key in ordered[: len(table) - self.max_entries // 4]:
                    del table[key]


def account_key(user: str) -> str:
    """The count a login's failures go to: the spellings a server may take as one account
    (`Alice`, `alice@example.test`) share one."""
    return user.lower().partition("@")[0]


class Increments(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class Counted(Protocol):
    """A counter with labels (a prometheus_client Counter, say)."""

    def labels(self, *values: str) -> Increments: ...


class LoginGate(Protocol):
    """Failed logins across connections as a protocol core sees them: `reserve` counts an
    attempt before it is relayed and raises `Throttled` when the user or address must wait;
    the outcome then confirms (`succeeded`) or undoes (`cancel`, no password was judged) it.
    Synchronous and clock-driven: the sans-I/O cores may call it."""

    def reserve(self, user: str) -> None: ...

    def succeeded(self, user: str) -> None: ...

    def failed(self, user: str) -> None: ...

    def cancel(self, user: str) -> None: ...


class OpenGate:
    """No throttling (the cores' default; the fronts pass an `AddressGate`)."""

    def reserve(self, user: str) -> None:
        return None

    def succeeded(self, user: str) -> None:
        return None

    def failed(self, user: str) -> None:
        return None

    def cancel(self, user: str) -> None:
        return None


class AddressGate:
    """A front's `Throttle` seen from one client address (a `LoginGate`). Spellings of one
    account (`Alice`, `alice@example.test`) share a count, as the control endpoint's do; a
    refusal is logged with user and address, never a password."""

    def __init__(self, throttle: Throttle, address: str, front: str,
                 refusals: Counted | None = None) -> None:
        """`refusals`: counted by front and reason ("login", "throttled") when given."""
        self.throttle = throttle
        self.address = address
        self.front = front
        self.refusals = refusals

    def reserve(self, user: str) -> None:
        try:
            self.throttle.reserve(account_key(user), self.address)
        except Throttled as exc:
            log.info("login throttled", extra={"front": self.front, "user": user,
                                               "remote": self.address,
                                               "retry_after": exc.retry_after})
            self._count("throttled")
            raise

    def succeeded(self, user: str) -> None:
        self.throttle.succeeded(account_key(user), self.address)

    def failed(self, user: str) -> None:
        self.throttle.failed(account_key(user), self.address)
        self._count("login")

    def _count(self, reason: str) -> None:
        if self.refusals is not None:
            self.refusals.labels(self.front, reason).inc()

    def cancel(self, user: str) -> None:
        self.throttle.cancel(account_key(user), self.address)
