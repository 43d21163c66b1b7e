"""Pure parts of the control endpoint: throttle, credential cache, sessions, HTML escaping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from smime_proxy.control import pages
from smime_proxy.control.auth import CredentialCache, Sessions
from smime_proxy.keystore.certs import CertificateSummary
from smime_proxy.throttle import Throttle, Throttled


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def fail(throttle: Throttle, user: str = "u", address: str = "a") -> None:
    throttle.reserve(user, address)  # reserved = counted as failed until succeeded()
    throttle.failed(user, address)


def retry_after(throttle: Throttle, user: str = "u", address: str = "a") -> int:
    with pytest.raises(Throttled) as info:
        throttle.reserve(user, address)
    return info.value.retry_after


def test_throttle_delays_double_up_to_the_cap() -> None:
    clock = Clock()
    throttle = Throttle(clock, free_user=3, free_address=100, base=1.0, cap=8.0)
    for _ in range(3):
        fail(throttle)
    waits = []
    for _ in range(6):
        wait = retry_after(throttle)
        waits.append(wait)
        clock.advance(wait)
        fail(throttle)
    assert waits == [1, 2, 4, 8, 8, 8]


def test_throttle_success_resets_the_user_not_the_address() -> None:
    clock = Clock()
    throttle = Throttle(clock, free_user=2, free_address=3)
    fail(throttle, "u", "a")
    fail(throttle, "u", "a")
    assert retry_after(throttle, "u", "a") == 1
    clock.advance(1)
    throttle.reserve("u", "a")
    throttle.succeeded("u", "a")
    throttle.reserve("u", "a")  # the user starts again
    throttle.failed("u", "a")
    # the address has 3 failures: its limit
    assert retry_after(throttle, "other", "a") == 1


def test_throttle_cancel_and_forget() -> None:
    clock = Clock()
    throttle = Throttle(clock, free_user=1, free_address=10, forget_after=timedelta(minutes=15))
    throttle.reserve("u", "a")
    throttle.cancel("u", "a")  # e.g. the upstream was down: not a failure
    fail(throttle, "u", "a")
    assert retry_after(throttle, "u", "a") == 1
    clock.advance(15 * 60)
    throttle.reserve("u", "a")  # forgotten after 15 quiet minutes


def test_credential_cache_keeps_only_a_salted_hash_for_five_minutes() -> None:
    clock = Clock()
    cache = CredentialCache(clock)
    cache.remember("alice", "alice-pw")
    assert cache.hit("alice", "alice-pw")
    assert not cache.hit("alice", "other")
    assert not cache.hit("bob", "alice-pw")
    assert "alice-pw" not in repr(cache)
    stored = b"".join(digest for digest, _ in cache._entries.values())
    assert b"alice-pw" not in stored
    clock.advance(299)
    assert cache.hit("alice", "alice-pw")
    clock.advance(1)
    assert not cache.hit("alice", "alice-pw")
    with pytest.raises(ValueError):
        CredentialCache(clock, ttl=timedelta(minutes=6))


def test_credential_cache_salt_is_per_process_instance() -> None:
    clock = Clock()
    one, two = CredentialCache(clock), CredentialCache(clock)
    one.remember("alice", "pw")
    two.remember("alice", "pw")
    assert one._entries["alice"][0] != two._entries["alice"][0]


def test_sessions_expire_idle_and_absolute() -> None:
    clock = Clock()
    sessions = Sessions(clock, idle=timedelta(minutes=30), maximum=timedelta(hours=1))
    session = sessions.create("alice")
    assert session.csrf != session.id and len(session.csrf) >= 32
    assert "alice" in repr(session) and session.csrf not in repr(session)
    clock.advance(29 * 60)
    assert sessions.get(session.id) is session
    clock.advance(29 * 60)
    assert sessions.get(session.id) is session  # 58 minutes, active
    clock.advance(2 * 60)
    assert sessions.get(session.id) is None  # absolute maximum
    other = sessions.create("bob")
    clock.advance(30 * 60)
    assert sessions.get(other.id) is None  # idle
    assert sessions.get(None) is None and sessions.get("nope") is None


def test_page_escapes_everything() -> None:
    evil = '<script>alert("x")</script>'
    summary = CertificateSummary(
        subject=f"CN={evil}", issuer=evil, addresses=("a@b.test",), serial="1",
        not_before=datetime(2026, 1, 1, tzinfo=UTC), not_after=datetime(2027, 1, 1, tzinfo=UTC),
        key_type="RSA", key_size=2048, fingerprint="00",
    )
    state = pages.PageState(
        user=evil, csrf='"><x', certificate=summary, unlocked=True,
        expires_at=datetime(2026, 6, 1, tzinfo=UTC), seconds_left=10,
        absolute_expires_at=datetime(2026, 6, 1, 1, tzinfo=UTC),
        default_email="", contacts=[(summary, True)], flash=[("error", evil)],
        can_generate=True,
    )
    html = pages.main_page(state) + pages.login_page('"><x', evil, evil)
    assert evil not in html
    assert '"><x' not in html
    assert "&lt;script&gt;" in html
    assert html.count("<script>") == 1  # the countdown only
