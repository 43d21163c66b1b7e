"""Unlock sessions shared through Redis (issue 12 part 2): two `SecureMail` nodes over one key
store and one real `redis-server`. An unlock on one node works on the other, a lock on either
ends it everywhere at the next check (and that node's lock listeners hear it), idle timeout and
absolute maximum hold across nodes with injected clocks, a mail login on one node is seen on the
other; and the claims of docs/cluster-threat-model.md: Redis holds neither the key nor a
password, its values do not open without the cluster key, a session moved or altered in Redis
is refused, an outage gives the locked behaviour with no secret in any message."""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from smime_proxy.app import open_sessions, open_stores
from smime_proxy.config import SessionsConfig
from smime_proxy.crypto.keyagent import InProcessKeyAgent, KeyAgent
from smime_proxy.errors import ConfigError, KeyLocked, KeyStoreError
from smime_proxy.keystore.ports import KeyStore, MemoryKeyStore
from smime_proxy.keystore.redis_sessions import ClusterKey, RedisUnlockSessions
from smime_proxy.keystore.service import SecureMail
from smime_proxy.keystore.sessions import SessionStoreError, SessionsUnavailable
from smime_proxy.smime import Recipient, decrypt_message, encrypt_message
from support.redis import RedisServer
from unit.keystore.keystore_helpers import FAST_ITERATIONS, NOW, THUNDERBIRD_PASSWORD, vector

SMP = b"Secure-Mail-Passw0rd-of-alice"
MAIL = b"Mail-Passw0rd-of-alice"
SECONDS = dt.timedelta(seconds=1)
IDLE = dt.timedelta(seconds=180)
MAX = dt.timedelta(minutes=10)


class Node:
    """One proxy node: its SecureMail over the shared key store and Redis, and what its lock
    listeners heard."""

    def __init__(self, store: KeyStore, url: str, key: ClusterKey) -> None:
        self.sessions = RedisUnlockSessions(url, key)
        self.mail = SecureMail(store, kdf_iterations=FAST_ITERATIONS, idle_timeout=IDLE,
                               max_unlock=MAX, sessions=self.sessions)
        self.heard: list[str] = []
        self.mail.add_lock_listener(self.heard.append)

    def close(self) -> None:
        self.sessions.close()


NodeMaker = Callable[..., Node]


@pytest.fixture
def cluster_key() -> ClusterKey:
    return ClusterKey(secrets.token_bytes(32))


@pytest.fixture
def key_store() -> KeyStore:
    store = MemoryKeyStore()
    alice = SecureMail(store, kdf_iterations=FAST_ITERATIONS)
    alice.import_pkcs12("alice", vector("thunderbird", "smime", "Alice.p12").read_bytes(),
                        THUNDERBIRD_PASSWORD, SMP)
    alice.import_pkcs12("bob", vector("thunderbird", "smime", "Bob.p12").read_bytes(),
                        THUNDERBIRD_PASSWORD, SMP)
    alice.enable_mail_unlock("alice", SMP, MAIL, NOW)
    return store


@pytest.fixture
def make_node(key_store: KeyStore, cluster_key: ClusterKey) -> Iterator[NodeMaker]:
    made: list[Node] = []

    def make(server: RedisServer, key: ClusterKey | None = None) -> Node:
        node = Node(key_store, server.url(), key or cluster_key)
        made.append(node)
        return node

    try:
        yield make
    finally:
        for node in made:
            node.close()


@pytest.fixture
def two(make_node: NodeMaker, redis_server: RedisServer) -> tuple[Node, Node]:
    return make_node(redis_server), make_node(redis_server)


def _opens(agent: KeyAgent) -> bool:
    """Whether `agent` decrypts a message encrypted to its certificate."""
    sealed = encrypt_message(b"Subject: hi\r\n\r\nthe secret body\r\n",
                             [Recipient(agent.certificate)])
    return b"the secret body" in decrypt_message(sealed, agent).content


# --- one unlock, every node -------------------------------------------------------------------


def test_unlock_on_a_works_on_b(two: tuple[Node, Node]) -> None:
    a, b = two
    a.mail.unlock("alice", SMP, NOW)
    agent = b.mail.agent_for("alice", NOW + SECONDS)
    assert _opens(agent)
    assert b.mail.agent_for("alice", NOW + 2 * SECONDS) is agent  # unsealed once per node
    state = b.mail.unlock_state("alice", NOW + 2 * SECONDS)
    assert state.unlocked and state.absolute_expires == NOW + MAX
    with pytest.raises(KeyLocked):
        b.mail.agent_for("bob", NOW)


def test_lock_on_b_ends_it_on_a_and_a_hears_it(two: tuple[Node, Node]) -> None:
    a, b = two
    a.mail.unlock("alice", SMP, NOW)
    a.mail.agent_for("alice", NOW)
    b.mail.lock("alice")
    assert a.heard == []  # nobody tells A: it finds out at its next check
    with pytest.raises(KeyLocked):
        a.mail.agent_for("alice", NOW + SECONDS)
    assert a.heard == ["alice"]
    with pytest.raises(KeyLocked):
        b.mail.agent_for("alice", NOW + SECONDS)
    assert not a.mail.unlock_state("alice", NOW + SECONDS).unlocked
    assert a.heard == ["alice"]  # once


def test_a_new_unlock_on_b_replaces_the_one_a_used(two: tuple[Node, Node]) -> None:
    a, b = two
    a.mail.unlock("alice", SMP, NOW)
    first = a.mail.agent_for("alice", NOW)
    b.mail.unlock("alice", SMP, NOW + 10 * SECONDS)
    second = a.mail.agent_for("alice", NOW + 11 * SECONDS)
    assert second is not first  # what was decrypted under the old unlock does not carry over
    assert a.heard == ["alice"]
    assert a.mail.unlock_state("alice", NOW + 11 * SECONDS).absolute_expires == (
        NOW + 10 * SECONDS + MAX)


def test_the_sweep_hears_an_unlock_ended_elsewhere(two: tuple[Node, Node]) -> None:
    a, b = two
    a.mail.unlock("alice", SMP, NOW)
    b.mail.unlock("bob", SMP, NOW)
    assert a.mail.lock_expired(NOW + SECONDS) == []
    b.mail.lock("alice")
    assert a.mail.lock_expired(NOW + 2 * SECONDS) == ["alice"]
    assert a.heard == ["alice"]
    assert b.mail.lock_expired(NOW + IDLE) == ["bob"]  # idle: ended for every node
    with pytest.raises(KeyLocked):
        a.mail.agent_for("bob", NOW + SECONDS)


# --- timeouts with injected clocks ------------------------------------------------------------


def test_idle_timeout_across_nodes(two: tuple[Node, Node], redis_server: RedisServer) -> None:
    a, b = two
    a.mail.unlock("alice", SMP, NOW)
    with redis_server.client() as client:  # garbage collection: the idle timeout and a grace
        assert 170_000 < client.pttl(a.sessions.key_name("alice")) <= 190_000
    b.mail.agent_for("alice", NOW + 100 * SECONDS)  # use on B refreshes for A too
    assert a.mail.agent_for("alice", NOW + 250 * SECONDS)
    state = b.mail.unlock_state("alice", NOW + 250 * SECONDS)
    assert state.idle_expires == NOW + 430 * SECONDS
    with pytest.raises(KeyLocked):
        b.mail.agent_for("alice", NOW + 430 * SECONDS)
    with pytest.raises(KeyLocked):
        a.mail.agent_for("alice", NOW + 250 * SECONDS)  # ended, even if A's clock lags


def test_refresh_writes_at_most_once_a_second_and_idle_stays_within_it(
        two: tuple[Node, Node]) -> None:
    a, b = two
    a.mail.unlock("alice", SMP, NOW)
    b.mail.agent_for("alice", NOW + 0.5 * SECONDS)  # under 1 s: not written
    assert a.mail.unlock_state("alice", NOW + SECONDS).idle_expires == NOW + IDLE
    b.mail.agent_for("alice", NOW + 1.5 * SECONDS)  # written
    assert a.mail.unlock_state("alice", NOW + 2 * SECONDS).idle_expires == (
        NOW + 1.5 * SECONDS + IDLE)


def test_absolute_maximum_across_nodes(two: tuple[Node, Node]) -> None:
    a, b = two
    a.mail.unlock("alice", SMP, NOW)
    t = NOW
    for step in range(4):
        t += dt.timedelta(minutes=2)
        (a if step % 2 else b).mail.agent_for("alice", t)  # busy on both: never idle
    assert b.mail.unlock_state("alice", t).expires == NOW + MAX
    with pytest.raises(KeyLocked):
        a.mail.agent_for("alice", NOW + MAX)
    with pytest.raises(KeyLocked):
        b.mail.agent_for("alice", NOW + MAX - SECONDS)
    assert a.heard == b.heard == ["alice"]


# --- unlock by mail login ---------------------------------------------------------------------


def test_mail_login_on_one_node_unlocks_and_refreshes_for_all(two: tuple[Node, Node]) -> None:
    a, b = two
    assert b.mail.mail_login("alice", MAIL, NOW) == "unlocked"
    assert _opens(a.mail.agent_for("alice", NOW + SECONDS))
    later = NOW + 150 * SECONDS
    assert a.mail.mail_login("alice", MAIL, later) == "refreshed"  # the same mark on A
    assert b.mail.unlock_state("alice", later).idle_expires == later + IDLE
    # the mail password changed upstream: A wraps the copy anew and records the new mark...
    assert a.mail.mail_login("alice", b"new mail password", later) == "rewrapped"
    # ... which B finds: no KDF there
    assert b.mail.mail_login("alice", b"new mail password", later + SECONDS) == "refreshed"
    b.mail.agent_for("alice", later + 170 * SECONDS)


# --- what Redis holds (docs/cluster-threat-model.md) ------------------------------------------


def _secrets_of(agent: KeyAgent) -> dict[str, bytes]:
    assert isinstance(agent, InProcessKeyAgent)
    key = agent.private_key
    found = {
        "PKCS#8 DER": key.private_bytes(serialization.Encoding.DER,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()),
        "traditional DER": key.private_bytes(serialization.Encoding.DER,
                                             serialization.PrivateFormat.TraditionalOpenSSL,
                                             serialization.NoEncryption()),
        "PKCS#8 PEM body": key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()).split(b"\n")[1],
        "Secure Mail Password": SMP,
        "mail password": MAIL,
        "user name": b"alice",
    }
    assert isinstance(key, rsa.RSAPrivateKey)
    numbers = key.private_numbers()
    for name, value in (("d", numbers.d), ("p", numbers.p), ("q", numbers.q)):
        found[f"RSA {name}"] = value.to_bytes((value.bit_length() + 7) // 8, "big")[:32]
    return found


def _flat(value: object) -> list[bytes]:
    if isinstance(value, bytes):
        return [value]
    if isinstance(value, dict):
        return [part for k, v in value.items() for part in (*_flat(k), *_flat(v))]
    if isinstance(value, list | set | tuple):
        return [part for item in value for part in _flat(item)]
    return [str(value).encode()]


def test_redis_holds_no_key_and_no_password(two: tuple[Node, Node],
                                            redis_server: RedisServer) -> None:
    a, b = two
    a.mail.unlock("alice", SMP, NOW)
    b.mail.mail_login("alice", MAIL, NOW + 2 * SECONDS)
    a.mail.agent_for("alice", NOW + 3 * SECONDS)
    dump = redis_server.dump()
    assert len(dump) == 1
    everything = [*dump, *(part for value in dump.values() for part in _flat(value))]
    for name, secret in _secrets_of(a.mail.agent_for("alice", NOW + 4 * SECONDS)).items():
        for blob in everything:
            assert secret not in blob, f"the {name} is in Redis"


def test_redis_values_do_not_open_without_the_cluster_key(
        two: tuple[Node, Node], make_node: NodeMaker, redis_server: RedisServer) -> None:
    a, _ = two
    a.mail.unlock("alice", SMP, NOW)
    (name, entry), = redis_server.dump().items()
    assert isinstance(entry, dict)
    wrong = ClusterKey(secrets.token_bytes(32))
    for value in entry.values():  # whatever field, whatever associated data
        with pytest.raises((InvalidTag, ValueError)):
            wrong.unseal(value, b"")
    stranger = make_node(redis_server, wrong)
    assert stranger.sessions.key_name("alice").encode() != name  # nor find it by its name
    with redis_server.client() as client:  # put it where the stranger looks
        client.copy(name, stranger.sessions.key_name("alice"))
        with pytest.raises(KeyLocked, match="another cluster key"):
            stranger.mail.agent_for("alice", NOW)
        # the stranger's own id and last-use stamp: only the seal is left to stop it
        sid, used = entry[b"sid"].decode(), int(entry[b"last_used"].split(b".")[0])
        client.hset(stranger.sessions.key_name("alice"), mapping={
            "kid": wrong.key_id, "last_used": stranger.sessions._stamp("alice", sid, used)})
    with pytest.raises(KeyLocked, match="does not open with this node's cluster key"):
        stranger.mail.agent_for("alice", NOW)


def _alter(server: RedisServer, name: str, **fields: bytes | str) -> None:
    with server.client() as client:
        client.hset(name, mapping=fields)


def test_a_session_moved_or_altered_in_redis_is_refused(two: tuple[Node, Node],
                                                         redis_server: RedisServer) -> None:
    a, b = two
    a.mail.unlock("alice", SMP, NOW)
    alice, bob = a.sessions.key_name("alice"), a.sessions.key_name("bob")
    with redis_server.client() as client:
        client.copy(alice, bob)
        entry = {k.decode(): v for k, v in client.hgetall(alice).items()}
    # alice's session under bob's name: the last-use stamp names alice
    with pytest.raises(KeyLocked, match="refused"):
        b.mail.agent_for("bob", NOW)
    # ... and with a stamp forged for bob (as only a node could), the seal's AAD names alice
    sid, used = entry["sid"].decode(), int(entry["last_used"].decode().partition(".")[0])
    _alter(redis_server, bob, last_used=b.sessions._stamp("bob", sid, used))
    with pytest.raises(KeyLocked, match="does not open"):
        b.mail.agent_for("bob", NOW)
    # a later unlock time (to stretch the absolute maximum) breaks the seal too
    _alter(redis_server, alice, unlocked_at=str(int(entry["unlocked_at"]) + 60_000_000))
    with pytest.raises(KeyLocked, match="does not open"):
        b.mail.agent_for("alice", NOW + 2 * SECONDS)
    # a later last use (to stretch the idle timeout) is refused
    _alter(redis_server, alice, unlocked_at=entry["unlocked_at"],
           last_used=f"{used + 100_000_000}.{'0' * 32}")
    with pytest.raises(KeyLocked, match="does not verify"):
        b.mail.agent_for("alice", NOW + 200 * SECONDS)
    _alter(redis_server, alice, last_used=entry["last_used"])
    assert _opens(b.mail.agent_for("alice", NOW + 3 * SECONDS))  # put back: it opens again


def test_reprs_and_errors_show_no_secret(two: tuple[Node, Node],
                                         redis_server: RedisServer) -> None:
    a, _ = two
    a.mail.unlock("alice", SMP, NOW)
    shown = repr(a.mail) + repr(a.sessions) + repr(a.sessions.current("alice"))
    assert redis_server.password not in shown and "SMP" not in shown
    assert "127.0.0.1" in shown


# --- Redis gone -------------------------------------------------------------------------------


def test_redis_stopped_gives_the_locked_behaviour_without_secrets(
        make_node: NodeMaker, own_redis_server: RedisServer,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    a, b = make_node(own_redis_server), make_node(own_redis_server)
    a.mail.unlock("alice", SMP, NOW)
    assert _opens(b.mail.agent_for("alice", NOW))
    own_redis_server.stop()
    errors: list[BaseException] = []
    started = time.monotonic()
    with pytest.raises(KeyLocked) as locked:
        b.mail.agent_for("alice", NOW + SECONDS)
    assert isinstance(locked.value, SessionsUnavailable)  # a KeyLocked and a KeyStoreError
    errors.append(locked.value)
    assert not b.mail.unlock_state("alice", NOW + SECONDS).unlocked
    for attempt in (lambda: a.mail.lock("alice"),
                    lambda: a.mail.unlock("alice", SMP, NOW + SECONDS)):
        with pytest.raises(SessionStoreError) as failed:
            attempt()
        errors.append(failed.value)
    with pytest.raises(SessionStoreError):
        b.mail.lock_expired(NOW + SECONDS)
    b.mail.mail_login_logged("alice", MAIL, NOW + SECONDS)  # logged, never raised
    assert time.monotonic() - started < 5  # fails fast: no retry loop
    for error in errors:
        text = str(error)
        assert "unavailable" in text and "127.0.0.1" in text
        for secret in (own_redis_server.password, SMP.decode(), MAIL.decode()):
            assert secret not in text and secret not in caplog.text
        assert error.__cause__ is None


def test_redis_back_again_resumes(make_node: NodeMaker, own_redis_server: RedisServer) -> None:
    """A Redis restart loses the sessions (nothing on disk): everyone is locked, a node hears
    it, and the next unlock works without restarting the nodes."""
    a, b = make_node(own_redis_server), make_node(own_redis_server)
    a.mail.unlock("alice", SMP, NOW)
    b.mail.agent_for("alice", NOW)
    own_redis_server.halt()
    with pytest.raises(KeyLocked):
        b.mail.agent_for("alice", NOW + SECONDS)
    own_redis_server.resume()
    time.sleep(1.1)  # past the nodes' fail-fast second
    with pytest.raises(KeyLocked):
        b.mail.agent_for("alice", NOW + 2 * SECONDS)
    assert b.heard == ["alice"]
    a.mail.unlock("alice", SMP, NOW + 3 * SECONDS)
    assert _opens(b.mail.agent_for("alice", NOW + 4 * SECONDS))


# --- the config's wiring ----------------------------------------------------------------------


def _key_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "cluster.key"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_open_stores_with_redis_sessions(tmp_path: Path, redis_server: RedisServer) -> None:
    import base64

    text = base64.b64encode(secrets.token_bytes(32)).decode() + "\n"
    config = SessionsConfig("redis", url=redis_server.url(),
                            cluster_key_file=_key_file(tmp_path, text))
    stores = open_stores(tmp_path / "data", sessions=config, kdf_iterations=FAST_ITERATIONS)
    other = open_stores(tmp_path / "data", sessions=config, kdf_iterations=FAST_ITERATIONS)
    try:
        assert isinstance(stores.secure_mail.sessions, RedisUnlockSessions)
        stores.secure_mail.import_pkcs12(
            "alice", vector("thunderbird", "smime", "Alice.p12").read_bytes(),
            THUNDERBIRD_PASSWORD, SMP)
        stores.secure_mail.unlock("alice", SMP, NOW)
        assert _opens(other.secure_mail.agent_for("alice", NOW))  # same file, same key
    finally:
        stores.close()
        other.close()


def test_open_sessions_refuses_an_unreachable_redis_or_a_bad_key(
        tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    import base64

    good = base64.b64encode(secrets.token_bytes(32)).decode()
    down = SessionsConfig("redis", url=redis_server.url().replace(
        f":{redis_server.port}/", ":1/"), cluster_key_file=_key_file(tmp_path, good))
    with pytest.raises(KeyStoreError, match="unavailable") as failed:
        open_sessions(down)
    assert redis_server.password not in str(failed.value)
    refused = SessionsConfig("redis", url=redis_server.url(password="wrong-password-x"),
                             cluster_key_file=_key_file(tmp_path, good))
    with pytest.raises(KeyStoreError) as failed:
        open_sessions(refused)
    assert "wrong-password-x" not in str(failed.value)
    exposed = SessionsConfig("redis", url=redis_server.url(),
                             cluster_key_file=_key_file(tmp_path, good, 0o644))
    with pytest.raises(ConfigError, match="chmod 600"):
        open_sessions(exposed)
    short = SessionsConfig("redis", url=redis_server.url(),
                           cluster_key_file=_key_file(tmp_path, good[:20]))
    with pytest.raises(ConfigError, match="32 bytes") as bad_key:
        open_sessions(short)
    assert good[:20] not in str(bad_key.value)
    monkeypatch.setenv("SMIME_TEST_CLUSTER_KEY", good)
    from_env = SessionsConfig("redis", url=redis_server.url(),
                              cluster_key_env="SMIME_TEST_CLUSTER_KEY")
    sessions = open_sessions(from_env)
    try:
        assert isinstance(sessions, RedisUnlockSessions)
    finally:
        sessions.close()
    monkeypatch.delenv("SMIME_TEST_CLUSTER_KEY")
    with pytest.raises(ConfigError, match="not set"):
        open_sessions(from_env)
