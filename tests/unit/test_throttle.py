"""`throttle.Throttle`: bounded memory under a flood of fresh names (security issue, item 5)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from smime_proxy.throttle import Throttle, Throttled


def test_memory_stays_bounded_under_a_flood_of_fresh_names() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    throttle = Throttle(lambda: now, max_entries=1000)
    for i in range(20_000):
        throttle.reserve(f"user{i}", f"10.0.{i // 250}.{i % 250}")
        assert len(throttle._users) + len(throttle._addresses) <= 1001


def test_recent_failures_survive_a_prune() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    clock = [now]
    throttle = Throttle(lambda: clock[0], free_user=1, max_entries=100)
    for i in range(300):
        clock[0] = now + timedelta(microseconds=i)
        throttle.reserve(f"old{i}", f"198.51.100.{i}")
    clock[0] = now + timedelta(seconds=1)
    throttle.reserve("alice", "192.0.2.2")  # alice's one free attempt, the newest entry
    throttle.failed("alice", "192.0.2.2")
    with pytest.raises(Throttled):
        throttle.reserve("alice", "192.0.2.3")


NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_client_logging_in_on_several_connections_at_once_is_not_throttled() -> None:
    """Thunderbird opens up to 5 connections at once, each with the right password: found by
    bench/imap.py and imaptest (`NO [UNAVAILABLE] Too many failed login attempts`)."""
    throttle = Throttle(lambda: NOW)  # free_user 3
    for _ in range(8):
        throttle.reserve("alice", "192.0.2.1")
    for _ in range(8):
        throttle.succeeded("alice", "192.0.2.1")
    throttle.reserve("alice", "192.0.2.1")


def test_judged_failures_and_abandoned_attempts_count() -> None:
    throttle = Throttle(lambda: NOW)
    for _ in range(3):
        throttle.reserve("bob", "192.0.2.1")
        throttle.failed("bob", "192.0.2.1")
    with pytest.raises(Throttled):
        throttle.reserve("bob", "192.0.2.1")
    # attempts never judged (the client left before the answer): a few go uncounted, no more
    for _ in range(3 + throttle.in_flight_allowance):
        throttle.reserve("carol", "192.0.2.9")
    with pytest.raises(Throttled):
        throttle.reserve("carol", "192.0.2.9")
