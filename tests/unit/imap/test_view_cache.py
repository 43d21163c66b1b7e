"""The cache of opened views: bounds, and that nothing decrypted outlives its unlock."""

from __future__ import annotations

import gc

from smime_proxy.imap.view_cache import OpenedViews, view_cost
from smime_proxy.imap.views import MessageView

MESSAGE = b"Subject: x\r\n\r\n" + b"body line\r\n" * 100
BOX = (b"INBOX", 7)


class Unlock:
    """Stands for a key agent: compared by identity, held weakly by the cache."""


def test_views_are_served_per_user_mailbox_and_uid() -> None:
    views = OpenedViews(10**6, 10**7)
    agent = Unlock()
    alice = views.bind("alice", lambda: agent)
    bob = views.bind("bob", lambda: agent)
    view = MessageView(MESSAGE)
    alice.put(BOX, 5, view, decrypted=True)
    assert alice.get(BOX, 5) is view
    assert alice.get((b"INBOX", 8), 5) is None and alice.get(BOX, 6) is None
    assert bob.get(BOX, 5) is None


def test_a_decrypted_view_lives_only_as_long_as_its_unlock() -> None:
    views = OpenedViews(10**6, 10**7)
    current: list[object | None] = [Unlock()]
    alice = views.bind("alice", lambda: current[0])
    alice.put(BOX, 1, MessageView(MESSAGE), decrypted=True)
    alice.put(BOX, 2, MessageView(MESSAGE), decrypted=False)  # verified only: kept
    current[0] = Unlock()  # locked and unlocked again: another unlock
    gc.collect()
    assert alice.get(BOX, 1) is None
    assert alice.get(BOX, 2) is not None and len(views) == 1
    current[0] = None
    alice.put(BOX, 3, MessageView(MESSAGE), decrypted=True)  # locked meanwhile: not kept
    assert len(views) == 1


def test_a_view_comes_with_the_unlock_it_was_opened_under() -> None:
    """The opening says which unlock it used: the cache does not ask (a round trip to the
    shared sessions per message); the shell counts locks so that one in between is seen."""
    views = OpenedViews(10**6, 10**7)
    asked: list[int] = []
    agent = Unlock()

    def current() -> object:
        asked.append(1)
        return agent

    alice = views.bind("alice", current)
    before = views.lock_count("alice")
    alice.put(BOX, 1, MessageView(MESSAGE), decrypted=True, unlock=agent)
    assert asked == [] and len(views) == 1
    views.drop_decrypted("alice")
    assert views.lock_count("alice") == before + 1 and len(views) == 0
    alice.put(BOX, 2, MessageView(MESSAGE), decrypted=True)  # no unlock given: asked
    assert asked == [1]


def test_lock_and_the_last_logout_drop_what_they_must() -> None:
    views = OpenedViews(10**6, 10**7)
    agent = Unlock()
    first = views.bind("alice", lambda: agent)
    views.bind("alice", lambda: agent)
    first.put(BOX, 1, MessageView(MESSAGE), decrypted=True)
    first.put(BOX, 2, MessageView(MESSAGE), decrypted=False)
    views.drop_decrypted("alice")
    assert first.get(BOX, 1) is None and first.get(BOX, 2) is not None
    views.detach("alice")
    assert len(views) == 1  # another connection of alice's is still there
    views.detach("alice")
    assert len(views) == 0 and views.total_bytes == 0


def test_bounds_per_user_and_in_all_evict_the_least_recently_used() -> None:
    one = view_cost(MessageView(MESSAGE))
    views = OpenedViews(3 * one, 5 * one)
    agent = Unlock()
    alice = views.bind("alice", lambda: agent)
    bob = views.bind("bob", lambda: agent)
    for uid in range(1, 5):
        alice.put(BOX, uid, MessageView(MESSAGE), decrypted=False)
        if uid == 2:
            alice.get(BOX, 1)  # 1 is used again: 2 is now the oldest
    assert [uid for uid in range(1, 5) if alice.get(BOX, uid)] == [1, 3, 4]
    for uid in range(1, 4):
        bob.put(BOX, uid, MessageView(MESSAGE), decrypted=False)
    assert len(views) == 5 and views.total_bytes == 5 * one
    assert alice.get(BOX, 1) is None  # the oldest of all went first
    huge = MessageView(b"Subject: x\r\n\r\n" + b"x" * (4 * one))
    alice.put(BOX, 9, huge, decrypted=False)  # over the user's bound alone: not kept
    assert alice.get(BOX, 9) is None
