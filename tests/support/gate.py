"""A `throttle.LoginGate` for core transcripts: throttles the users it is told to and records
what the core asked of it."""

from __future__ import annotations

from smime_proxy.throttle import Throttled


class RecordingGate:
    def __init__(self, blocked: tuple[str, ...] = (), retry_after: int = 7) -> None:
        self.blocked = blocked
        self.retry_after = retry_after
        self.calls: list[tuple[str, str]] = []

    def reserve(self, user: str) -> None:
        self.calls.append(("reserve", user))
        if user in self.blocked:
            raise Throttled(self.retry_after)

    def succeeded(self, user: str) -> None:
        self.calls.append(("succeeded", user))

    def failed(self, user: str) -> None:
        self.calls.append(("failed", user))

    def cancel(self, user: str) -> None:
        self.calls.append(("cancel", user))
