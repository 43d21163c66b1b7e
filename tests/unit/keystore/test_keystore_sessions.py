"""The `UnlockSessions` port's contract, on the memory twin and on Redis (a real
`redis-server`, `support.redis`): what `SecureMail` relies on, whatever holds the sessions."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable, Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from smime_proxy.crypto.keyagent import InProcessKeyAgent
from smime_proxy.keystore.ca import ServerCA
from smime_proxy.keystore.redis_sessions import ClusterKey, RedisUnlockSessions
from smime_proxy.keystore.sessions import (
    MemoryUnlockSessions,
    UnlockSession,
    UnlockSessions,
)
from support.redis import RedisServer
from unit.keystore.keystore_helpers import NOW

SECOND = dt.timedelta(seconds=1)
LATER = NOW + dt.timedelta(hours=1)  # keep_until: garbage collection only


def make_agent(ca: ServerCA, email: str, *, rsa_key: bool = False) -> InProcessKeyAgent:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
        rsa.generate_private_key(65537, 2048) if rsa_key else ec.generate_private_key(
            ec.SECP256R1()))
    certificate = ca.issue_user_certificate(email, key.public_key(), NOW, 30)
    return InProcessKeyAgent(key, certificate, (ca.certificate,))


@pytest.fixture(scope="module")
def agents(server_ca: ServerCA) -> dict[str, InProcessKeyAgent]:
    return {"alice": make_agent(server_ca, "alice@example.org", rsa_key=True),
            "bob": make_agent(server_ca, "bob@example.org")}


NodeFactory = Callable[[], UnlockSessions]


@pytest.fixture(params=["memory", "redis"])
def nodes(request: pytest.FixtureRequest) -> Iterator[NodeFactory]:
    """Make the sessions of one node; for Redis every node shares the server and the key."""
    made: list[UnlockSessions] = []
    if request.param == "memory":
        shared = MemoryUnlockSessions()

        def memory_node() -> UnlockSessions:
            return shared

        yield memory_node
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    key = ClusterKey(secrets.token_bytes(32))

    def redis_node() -> UnlockSessions:
        node = RedisUnlockSessions(server.url(), key)
        made.append(node)
        return node

    try:
        yield redis_node
    finally:
        for node in made:
            node.close()


@pytest.fixture
def sessions(nodes: NodeFactory) -> UnlockSessions:
    return nodes()


def _same_key(a: InProcessKeyAgent, b: InProcessKeyAgent) -> bool:
    return (a.private_key.private_numbers() == b.private_key.private_numbers()
            and a.cert == b.cert and tuple(a.chain) == tuple(b.chain))


def test_nothing_before_a_start(sessions: UnlockSessions) -> None:
    assert sessions.current("alice") is None
    assert not sessions.end("alice")
    assert sessions.users() == []


def test_start_then_current_keeps_one_agent(sessions: UnlockSessions,
                                            agents: dict[str, InProcessKeyAgent]) -> None:
    session, replaced = sessions.start("alice", agents["alice"], NOW, keep_until=LATER)
    assert not replaced
    assert (session.unlocked_at, session.last_used) == (NOW, NOW)
    first = sessions.current("alice")
    assert first is not None and first.session_id == session.session_id
    assert (first.unlocked_at, first.last_used, first.mail_mark) == (NOW, NOW, None)
    assert _same_key(first.agent, agents["alice"])
    second = sessions.current("alice")
    assert second is not None and second.agent is first.agent  # the view cache's identity
    assert sessions.users() == ["alice"]
    assert sessions.current("bob") is None


def test_a_new_start_replaces(sessions: UnlockSessions,
                              agents: dict[str, InProcessKeyAgent]) -> None:
    old, _ = sessions.start("alice", agents["alice"], NOW, keep_until=LATER)
    held = sessions.current("alice")
    new, replaced = sessions.start("alice", agents["alice"], NOW + SECOND, keep_until=LATER)
    assert replaced and new.session_id != old.session_id
    now = sessions.current("alice")
    assert now is not None and now.session_id == new.session_id
    assert now.unlocked_at == NOW + SECOND
    assert held is not None and not sessions.touch("alice", held, NOW + 2 * SECOND,
                                                   keep_until=LATER)
    assert not sessions.end("alice", old.session_id)  # the old id ends nothing
    assert sessions.current("alice") is not None


def test_touch_moves_last_used_forward_only(sessions: UnlockSessions,
                                            agents: dict[str, InProcessKeyAgent]) -> None:
    session, _ = sessions.start("alice", agents["alice"], NOW, keep_until=LATER)
    assert sessions.touch("alice", session, NOW + 10 * SECOND, keep_until=LATER)
    current = sessions.current("alice")
    assert current is not None and current.last_used == NOW + 10 * SECOND
    assert sessions.touch("alice", current, NOW + 5 * SECOND, keep_until=LATER)
    current = sessions.current("alice")
    assert current is not None and current.last_used == NOW + 10 * SECOND
    assert current.unlocked_at == NOW


def test_touch_records_the_mail_mark(sessions: UnlockSessions,
                                     agents: dict[str, InProcessKeyAgent]) -> None:
    mark = sessions.mail_mark("alice", b"mail secret")
    session, _ = sessions.start("alice", agents["alice"], NOW, keep_until=LATER,
                                mail_mark=mark)
    current = sessions.current("alice")
    assert current is not None and current.mail_mark == mark
    other = sessions.mail_mark("alice", b"changed upstream")
    assert sessions.touch("alice", session, NOW, keep_until=LATER, mail_mark=other)
    current = sessions.current("alice")
    assert current is not None and current.mail_mark == other


def test_mail_marks(nodes: NodeFactory) -> None:
    a, b = nodes(), nodes()
    mark = a.mail_mark("alice", b"pw")
    assert len(mark) == 32
    assert b.mail_mark("alice", b"pw") == mark  # every node computes the same mark
    assert a.mail_mark("bob", b"pw") != mark  # the user is bound in
    assert a.mail_mark("alice", b"pw2") != mark


def test_end(sessions: UnlockSessions, agents: dict[str, InProcessKeyAgent]) -> None:
    session, _ = sessions.start("alice", agents["alice"], NOW, keep_until=LATER)
    sessions.start("bob", agents["bob"], NOW, keep_until=LATER)
    assert not sessions.end("alice", "0" * 32)
    assert sessions.end("alice", session.session_id)
    assert sessions.current("alice") is None
    assert not sessions.touch("alice", session, NOW + 2 * SECOND, keep_until=LATER)
    assert sessions.users() == ["bob"]
    assert sessions.end("bob")
    assert not sessions.end("bob")
    assert sessions.users() == []


def test_every_node_sees_one_session(nodes: NodeFactory,
                                     agents: dict[str, InProcessKeyAgent]) -> None:
    a, b = nodes(), nodes()
    started, _ = a.start("alice", agents["alice"], NOW, keep_until=LATER)
    seen = b.current("alice")
    assert seen is not None and seen.session_id == started.session_id
    assert _same_key(seen.agent, agents["alice"])
    again = b.current("alice")
    assert again is not None and again.agent is seen.agent
    assert b.touch("alice", seen, NOW + 5 * SECOND, keep_until=LATER)
    back = a.current("alice")
    assert back is not None and back.last_used == NOW + 5 * SECOND
    replaced, was = b.start("alice", agents["alice"], NOW + 6 * SECOND, keep_until=LATER)
    assert was
    fresh = a.current("alice")
    assert fresh is not None and fresh.session_id == replaced.session_id
    assert isinstance(fresh, UnlockSession)
    assert b.end("alice")
    assert a.current("alice") is None
    assert "alice" not in a.users()  # what a node holds goes when it sees the end


def test_redis_refreshes_at_most_once_per_interval(
        redis_server: RedisServer, agents: dict[str, InProcessKeyAgent]) -> None:
    node = RedisUnlockSessions(redis_server.url(), ClusterKey(secrets.token_bytes(32)))
    try:
        assert node.refresh_interval == SECOND
        session, _ = node.start("alice", agents["alice"], NOW, keep_until=LATER)
        assert node.touch("alice", session, NOW + SECOND / 2, keep_until=LATER)
        current = node.current("alice")
        assert current is not None and current.last_used == NOW  # not written: < 1 s
        assert node.touch("alice", current, NOW + SECOND, keep_until=LATER)
        current = node.current("alice")
        assert current is not None and current.last_used == NOW + SECOND
        # the TTL follows: the time left to keep_until, plus a grace, at least
        with redis_server.client() as client:
            ttl = client.pttl(node.key_name("alice"))
        assert 3_600_000 - 1_000 < ttl <= 3_610_000
    finally:
        node.close()


def test_memory_writes_every_refresh(agents: dict[str, InProcessKeyAgent]) -> None:
    memory = MemoryUnlockSessions()
    assert memory.refresh_interval == dt.timedelta(0)
    session, _ = memory.start("alice", agents["alice"], NOW, keep_until=LATER)
    assert memory.touch("alice", session, NOW + SECOND / 1000, keep_until=LATER)
    current = memory.current("alice")
    assert current is not None and current.last_used == NOW + SECOND / 1000
    assert "alice" not in repr(memory) and "private" not in repr(current)
