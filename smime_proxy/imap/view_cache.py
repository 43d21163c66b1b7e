"""The cache of opened messages' views (issue 10): re-fetching an opened message, or asking
its metadata again (BODYSTRUCTURE, ENVELOPE, RFC822.SIZE), costs no download and no crypto.

- `ViewCache`: the port the session sees (its default keeps nothing); `UserViews`, one
  user's view of `OpenedViews`, is what the front gives a logged-in session.
- One LRU over every user's entries, bounded in bytes per user and in all; an entry is keyed
  by user, mailbox (name and UIDVALIDITY) and UID: a UID's content never changes (RFC 9051
  2.3.1.1), so an entry never goes stale while its UIDVALIDITY holds.
- A decrypted view belongs to the unlock it was made under: it is served only while that
  same unlock lasts (the key agent of the unlock, held weakly, is still the user's agent),
  and every decrypted entry of a user is dropped the moment the key locks (`drop_decrypted`,
  which the front calls from SecureMail's lock listener) and when the user's last
  connection ends (`detach`). Nothing is written to disk.

May import: imap.views, stdlib.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from smime_proxy.imap.views import MessageView

MailboxKey = tuple[bytes, int]  # the selected mailbox's name as the client gave it, UIDVALIDITY


class ViewCache:
    """Where the session finds and keeps the views of opened messages, and learns whether
    they can be opened now (the shell gives one bound to the logged-in user). This default
    keeps nothing and says the key is unlocked."""

    def get(self, mailbox: MailboxKey, uid: int) -> MessageView | None:
        return None

    def put(self, mailbox: MailboxKey, uid: int, view: MessageView, *,
            decrypted: bool, unlock: object | None = None) -> None:
        """Keep `view`; a decrypted one is tied to `unlock` (the one it was opened under;
        None: the current one, asked now) and goes when that unlock ends."""
        return None

    def key_unlocked(self) -> bool:
        """Whether the user's key is unlocked now (an encrypted message can be opened)."""
        return True

    def locks(self) -> int:
        """How many of the user's unlocks have ended so far (a view found before a change of
        it may belong to an unlock that has ended)."""
        return 0

    def get_all(self, mailbox: MailboxKey, uids: list[int]) -> dict[int, MessageView] | None:
        """The views of all these UIDs, or None when one is not kept."""
        found: dict[int, MessageView] = {}
        for uid in uids:
            view = self.get(mailbox, uid)
            if view is None:
                return None
            found[uid] = view
        return found


ENTRY_OVERHEAD: Final = 2048  # the parsed tree and computed views beside the bytes
CurrentUnlock = Callable[[], object | None]  # the user's unlocked key agent now, or None


def view_cost(view: MessageView) -> int:
    """What an entry is counted as: twice its bytes (the tree and the views computed from
    them) plus a fixed overhead."""
    return 2 * len(view.data) + ENTRY_OVERHEAD


@dataclass
class _Entry:
    view: MessageView
    cost: int
    unlock: weakref.ref[object] | None  # None: not decrypted (a verified signature, say)


_Key = tuple[str, bytes, int, int]  # user, mailbox name, UIDVALIDITY, UID


class OpenedViews:
    """Every user's opened views (see the module docstring). Thread-safe: the fronts run on
    one event loop, the lock listener may fire from a worker thread."""

    def __init__(self, max_bytes_per_user: int, max_bytes: int,
                 looked_up: Callable[[bool], None] | None = None) -> None:
        """`looked_up(hit)`: told of every lookup (the front's metrics)."""
        self.max_bytes_per_user = max_bytes_per_user
        self.max_bytes = max_bytes
        self._looked_up = looked_up
        self._entries: OrderedDict[_Key, _Entry] = OrderedDict()
        self._user_bytes: dict[str, int] = {}
        self._total = 0
        self._attached: dict[str, int] = {}
        self._lock = threading.Lock()
        self._lock_counts: dict[str, int] = {}  # drop_decrypted calls, per user

    @property
    def total_bytes(self) -> int:
        return self._total

    def __len__(self) -> int:
        return len(self._entries)

    def bind(self, user: str, current_unlock: CurrentUnlock) -> UserViews:
        """The cache as one logged-in connection of `user` sees it (`detach` when it ends)."""
        with self._lock:
            self._attached[user] = self._attached.get(user, 0) + 1
        return UserViews(self, user, current_unlock)

    def detach(self, user: str) -> None:
        """A connection of `user` ended; the last one takes the user's entries with it."""
        with self._lock:
            left = self._attached.get(user, 0) - 1
            if left > 0:
                self._attached[user] = left
                return
            self._attached.pop(user, None)
            self._drop(lambda key, entry: key[0] == user)

    def drop_decrypted(self, user: str) -> None:
        """The user's key locked: nothing decrypted under it may be served again."""
        with self._lock:
            self._lock_counts[user] = self._lock_counts.get(user, 0) + 1
            self._drop(lambda key, entry: key[0] == user and entry.unlock is not None)

    def lock_count(self, user: str) -> int:
        """How many times the user's unlocks ended so far (a message opened before a change
        of it may have been opened under an unlock that has ended)."""
        with self._lock:
            return self._lock_counts.get(user, 0)

    def _drop(self, doomed: Callable[[_Key, _Entry], bool]) -> None:
        for key in [k for k, e in self._entries.items() if doomed(k, e)]:
            self._remove(key)

    def _remove(self, key: _Key) -> None:
        entry = self._entries.pop(key)
        self._total -= entry.cost
        left = self._user_bytes[key[0]] - entry.cost
        if left:
            self._user_bytes[key[0]] = left
        else:
            del self._user_bytes[key[0]]

    def get(self, key: _Key, current_unlock: CurrentUnlock) -> MessageView | None:
        view = self._get(key, current_unlock)
        if self._looked_up is not None:
            self._looked_up(view is not None)
        return view

    def _get(self, key: _Key, current_unlock: CurrentUnlock) -> MessageView | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry.unlock is not None:
                made_under = entry.unlock()
                if made_under is None or made_under is not current_unlock():
                    # locked (or unlocked again) since: nothing decrypted survives that
                    self._drop(lambda k, e: k[0] == key[0] and e.unlock is not None)
                    return None
            self._entries.move_to_end(key)
            return entry.view

    def get_all(self, keys: list[_Key],
                current_unlock: CurrentUnlock) -> dict[int, MessageView] | None:
        """The views of all these keys (one user's) by UID, or None when one is not kept;
        the unlock is asked once, not once a message."""
        unlock = current_unlock()
        found: dict[int, MessageView] = {}
        with self._lock:
            for key in keys:
                entry = self._entries.get(key)
                if entry is None or (entry.unlock is not None and (
                        unlock is None or entry.unlock() is not unlock)):
                    break
                found[key[3]] = entry.view
            else:
                for key in keys:
                    self._entries.move_to_end(key)
                if self._looked_up is not None:
                    for _ in keys:
                        self._looked_up(True)
                return found
        if self._looked_up is not None:
            self._looked_up(False)
        return None

    def put(self, key: _Key, view: MessageView, unlock: object | None) -> None:
        cost = view_cost(view)
        if cost > self.max_bytes_per_user or cost > self.max_bytes:
            return
        reference = weakref.ref(unlock) if unlock is not None else None
        with self._lock:
            if key[0] not in self._attached:
                return  # the user's last connection ended meanwhile
            if key in self._entries:
                self._remove(key)
            self._entries[key] = _Entry(view, cost, reference)
            self._total += cost
            self._user_bytes[key[0]] = self._user_bytes.get(key[0], 0) + cost
            user = key[0]
            while self._user_bytes.get(user, 0) > self.max_bytes_per_user:
                self._remove(next(k for k in self._entries if k[0] == user))
            while self._total > self.max_bytes:
                self._remove(next(iter(self._entries)))


class UserViews(ViewCache):
    """`OpenedViews` bound to one user (what the IMAP session is given)."""

    def __init__(self, views: OpenedViews, user: str, current_unlock: CurrentUnlock) -> None:
        self._views = views
        self._user = user
        self._current_unlock = current_unlock

    def get(self, mailbox: MailboxKey, uid: int) -> MessageView | None:
        return self._views.get((self._user, mailbox[0], mailbox[1], uid),
                               self._current_unlock)

    def locks(self) -> int:
        return self._views.lock_count(self._user)

    def get_all(self, mailbox: MailboxKey, uids: list[int]) -> dict[int, MessageView] | None:
        return self._views.get_all([(self._user, mailbox[0], mailbox[1], uid) for uid in uids],
                                   self._current_unlock)

    def put(self, mailbox: MailboxKey, uid: int, view: MessageView, *,
            decrypted: bool, unlock: object | None = None) -> None:
        """The unlock a decrypted view was opened under comes with it (the opening checked
        it a moment ago): asking the key store again here would cost a round trip to
        shared sessions on the event loop for every message (bench/cluster.py)."""
        if not decrypted:
            unlock = None
        elif unlock is None:
            unlock = self._current_unlock()
            if unlock is None:
                return  # locked since it was opened: not kept
        self._views.put((self._user, mailbox[0], mailbox[1], uid), view, unlock)

    def key_unlocked(self) -> bool:
        return self._current_unlock() is not None
