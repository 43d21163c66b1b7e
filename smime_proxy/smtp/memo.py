"""The memo of copies already accepted: when one copy of a multi-copy message (Bcc
privacy) fails, the client gets the failure and retries; the copies the upstream accepted
are remembered here (by user, envelope and message digest, for a day) so that the retry
sends only the missing ones. One memo per front, shared by its sessions; in memory only.

May import: stdlib.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

MEMO_SECONDS: Final = 24 * 3600
MEMO_MAX: Final = 1000



class DeliveryMemo:
    """Which copies of a multi-copy message the upstream accepted, per retry key."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 seconds: float = MEMO_SECONDS, size: int = MEMO_MAX) -> None:
        self.clock = clock
        self.seconds = seconds
        self.size = size
        self._entries: dict[str, tuple[float, set[tuple[str, ...]]]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> set[tuple[str, ...]]:
        now = self.clock()
        for k in [k for k, (t, _) in self._entries.items() if now - t > self.seconds]:
            del self._entries[k]
        entry = self._entries.get(key)
        return set(entry[1]) if entry else set()

    def put(self, key: str, done: set[tuple[str, ...]]) -> None:
        if not done:
            self._entries.pop(key, None)
            return
        if len(self._entries) >= self.size:
            oldest = min(self._entries, key=lambda k: self._entries[k][0])
            del self._entries[oldest]
        self._entries[key] = (self.clock(), set(done))
