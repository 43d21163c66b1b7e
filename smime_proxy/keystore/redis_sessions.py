"""Unlock sessions shared by every proxy node through Redis (`UnlockSessions` on redis-py).

One Redis hash per unlocked user, under a key named by an HMAC of the user name (Redis does
not learn who is unlocked):

- `sid`: the session id, 16 random bytes in hex, new at each unlock (the generation);
- `unlocked_at`: microseconds since 1970 (UTC), bound into the seal below;
- `last_used`: microseconds since 1970 and an HMAC of user, sid and that number (Redis alone
  cannot make a session look recently used);
- `sealed`: AES-256-GCM (a 96-bit random nonce, then ciphertext and tag) of the private key
  (PKCS#8 DER), the certificate and its chain, with associated data binding user, sid,
  unlocked_at and the cluster key's id: a session moved to another user, or with another
  unlock time, does not open;
- `kid`: the id of the cluster key that sealed it (a node with another key says so);
- `mark`: the mark of the mail password known to open the mail copy (HMAC, `mail_mark`).

Every key (sealing, marks, names, last_used) is derived with HKDF-SHA256 from the 32-byte
cluster key, which comes from the config (a file or an environment variable) and never goes to
Redis: every node computes the same. Timestamps decide expiry (`keystore.unlocks`, with the
`now` it is given); Redis TTLs are only garbage collection: the time left until the earlier
of idle and absolute expiry, plus `TTL_GRACE`, set at unlock and at each refresh.

Cost of one check (`SecureMail.agent_for`, `unlock_state`): one round trip (HGETALL of ~3 KB)
and an HMAC; plus, at most once per `refresh_interval` (1 s) per user, a second round trip (a
Lua script that moves last_used and the TTL forward if the session is still the same). The
unsealed agent is kept in this process by (user, sid, unlocked_at), so a session is unsealed
once per node (AES-GCM and a key parse, well under a millisecond). The stored last_used may lag
the last use by less than `refresh_interval`: an idle session may lock that much early, never
late. The calls block (sync client): connect and command timeouts are `timeout` (1 s); after a
connection failure every call fails at once for `retry_after` (1 s) instead of waiting again,
so an outage does not stall the event loop that asks. Errors are `SessionStoreError`s naming
the server (never the URL's password).

May import: errors, crypto.keyagent, keystore.sessions, cryptography, redis, stdlib.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import redis
import redis.exceptions
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from redis.backoff import NoBackoff
from redis.retry import Retry

from smime_proxy.crypto.keyagent import InProcessKeyAgent
from smime_proxy.errors import ConfigError
from smime_proxy.keystore.sessions import SessionStoreError, UnlockSession, mark_of

T = TypeVar("T")
CLUSTER_KEY_BYTES = 32
DEFAULT_PREFIX = "smime-proxy:unlock:"
TTL_GRACE = timedelta(seconds=10)  # beyond the decision: refresh lag and clocks' skew
FORMAT = b"1"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

# last_used := max(stored, given) and the TTL at least the given, if the sid still matches
_TOUCH = """
if redis.call('HGET', KEYS[1], 'sid') ~= ARGV[1] then return 0 end
local stored = tonumber(string.match(redis.call('HGET', KEYS[1], 'last_used') or '', '^%d+'))
if stored == nil or stored < tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], 'last_used', ARGV[2])
end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'mark', ARGV[5]) end
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[4]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
return 1
"""
# delete the hash if its sid is still the given one
_END = """
if redis.call('HGET', KEYS[1], 'sid') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class ClusterKey:
    """The 32-byte secret every node shares, and the keys derived from it. No repr shows it."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) != CLUSTER_KEY_BYTES:
            raise ConfigError(f"the cluster key must be {CLUSTER_KEY_BYTES} bytes")

        def derive(label: str, length: int = 32) -> bytes:
            return HKDF(hashes.SHA256(), length, salt=None,
                        info=f"smime-proxy {label} v1".encode()).derive(secret)

        self._seal = AESGCM(derive("unlock seal"))
        self.mark_key = derive("mail mark")
        self.name_key = derive("session name")
        self.time_key = derive("last used")
        self.key_id = derive("cluster key id", 8).hex()

    def __repr__(self) -> str:
        return f"ClusterKey(id={self.key_id})"

    def seal(self, plain: bytes, aad: bytes) -> bytes:
        nonce = secrets.token_bytes(12)
        return nonce + self._seal.encrypt(nonce, plain, aad)

    def unseal(self, sealed: bytes, aad: bytes) -> bytes:
        """The plaintext; `InvalidTag` if anything (key, data, aad) differs."""
        return self._seal.decrypt(sealed[:12], sealed[12:], aad)


def _field(value: bytes) -> bytes:
    return len(value).to_bytes(4, "big") + value


def _fields(data: bytes) -> Iterator[bytes]:
    at = 0
    while at < len(data):
        if at + 4 > len(data):
            raise ValueError("truncated")
        size = int.from_bytes(data[at:at + 4], "big")
        if at + 4 + size > len(data):
            raise ValueError("truncated")
        yield data[at + 4:at + 4 + size]
        at += 4 + size


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // _MICROSECOND


def _moment(micros: int) -> datetime:
    return _EPOCH + micros * _MICROSECOND


@dataclass(frozen=True)
class _Cached:
    session_id: str
    unlocked_at: int
    agent: InProcessKeyAgent


class RedisUnlockSessions:
    """`UnlockSessions` in Redis, shared by every node with the same `cluster_key`."""

    def __init__(self, url: str, cluster_key: ClusterKey, *, prefix: str = DEFAULT_PREFIX,
                 timeout: float = 1.0, retry_after: float = 1.0,
                 refresh_interval: timedelta = timedelta(seconds=1)) -> None:
        """`url`: redis://[user:password@]host[:port][/db], rediss:// (TLS) or
        unix://path. Nothing is sent until the first call."""
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ConfigError("sessions.url: expected redis://, rediss:// or unix:// "
                              "(value not shown)")
        self._password = unquote(parts.password or "")
        where = parts.path if parts.scheme == "unix" else (
            f"{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path or ''}")
        self.where = f"{parts.scheme}://{where}"
        try:
            self._redis: redis.Redis = redis.Redis.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 1), client_name="smime-proxy")
        except ValueError:
            raise ConfigError("sessions.url: not a Redis URL (value not shown)") from None
        self._key = cluster_key
        self._prefix = prefix
        self._retry_after = retry_after
        self._refresh = refresh_interval
        self._failing_until = 0.0
        self._failure = ""
        self._cache: dict[str, _Cached] = {}
        self._lock = threading.Lock()
        self._touch = self._redis.register_script(_TOUCH)
        self._end = self._redis.register_script(_END)

    def __repr__(self) -> str:
        return f"RedisUnlockSessions({self.where!r}, {self._key!r})"

    @property
    def refresh_interval(self) -> timedelta:
        return self._refresh

    @property
    def key_id(self) -> str:
        """The cluster key's id (not secret: compare it across nodes)."""
        return self._key.key_id

    def check(self) -> None:
        """Reach the server now (PING); `SessionStoreError` if it cannot be used."""
        self._call(self._redis.ping)

    def close(self) -> None:
        self._redis.close()
        self._redis.connection_pool.disconnect()

    # --- names, seals, errors ----------------------------------------------------------------

    def key_name(self, user: str) -> str:
        """The Redis key of `user`'s session (an HMAC of the name: Redis learns no names)."""
        digest = hmac.new(self._key.name_key, user.encode("utf-8"), hashlib.sha256)
        return self._prefix + digest.hexdigest()[:32]

    def _aad(self, user: str, sid: str, unlocked_at: int) -> bytes:
        return (b"smime-proxy unlock session v1" + _field(user.encode("utf-8"))
                + _field(sid.encode("ascii")) + _field(str(unlocked_at).encode("ascii"))
                + _field(self._key.key_id.encode("ascii")))

    def _stamp(self, user: str, sid: str, micros: int) -> str:
        mac = hmac.new(self._key.time_key, _field(user.encode("utf-8"))
                       + _field(sid.encode("ascii")) + str(micros).encode("ascii"),
                       hashlib.sha256).hexdigest()[:32]
        return f"{micros}.{mac}"

    def _call(self, work: Callable[[], T]) -> T:
        if time.monotonic() < self._failing_until:
            raise SessionStoreError(f"unlock sessions unavailable ({self.where}): "
                                    f"{self._failure} (retrying shortly)")
        try:
            return work()
        except redis.exceptions.RedisError as exc:
            text = " ".join(str(exc).split()) or type(exc).__name__
            if self._password:
                text = text.replace(self._password, "***")
            if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
                self._failure = text
                self._failing_until = time.monotonic() + self._retry_after
            raise SessionStoreError(f"unlock sessions unavailable ({self.where}): "
                                    f"{text}") from None

    def _damaged(self, user: str, why: str) -> SessionStoreError:
        return SessionStoreError(f"the unlock session of user {user!r} in {self.where} "
                                 f"is refused: {why}")

    def _ttl_ms(self, now: datetime, keep_until: datetime) -> int:
        return max(1, (keep_until - now + TTL_GRACE) // timedelta(milliseconds=1))

    # --- the port ----------------------------------------------------------------------------

    def mail_mark(self, user: str, mail_password: bytes) -> bytes:
        return mark_of(self._key.mark_key, user, mail_password)

    def start(self, user: str, agent: InProcessKeyAgent, now: datetime, *,
              keep_until: datetime, mail_mark: bytes | None = None
              ) -> tuple[UnlockSession, bool]:
        sid = secrets.token_hex(16)
        unlocked = _micros(now)
        plain = b"".join(_field(part) for part in (
            agent.private_key.private_bytes(serialization.Encoding.DER,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()),
            agent.cert.public_bytes(serialization.Encoding.DER),
            *(c.public_bytes(serialization.Encoding.DER) for c in agent.extra_certs)))
        entry: dict[str, bytes | str] = {
            "v": FORMAT, "sid": sid, "kid": self._key.key_id, "unlocked_at": str(unlocked),
            "last_used": self._stamp(user, sid, unlocked),
            "sealed": self._key.seal(plain, self._aad(user, sid, unlocked)),
        }
        if mail_mark is not None:
            entry["mark"] = mail_mark
        name = self.key_name(user)

        def write() -> list[Any]:
            pipe = self._redis.pipeline(transaction=True)
            pipe.delete(name)
            pipe.hset(name, mapping=entry)  # type: ignore[arg-type]
            pipe.pexpire(name, self._ttl_ms(now, keep_until))
            return pipe.execute()

        replaced = self._call(write)[0]
        with self._lock:
            self._cache[user] = _Cached(sid, unlocked, agent)
        session = UnlockSession(sid, agent, unlocked_at=_moment(unlocked),
                                last_used=_moment(unlocked), mail_mark=mail_mark)
        return session, bool(replaced)

    def current(self, user: str) -> UnlockSession | None:
        raw: dict[bytes, bytes] = self._call(
            lambda: self._redis.hgetall(self.key_name(user)))  # type: ignore[arg-type,return-value]
        if not raw:
            with self._lock:
                self._cache.pop(user, None)
            return None
        try:
            if raw[b"v"] != FORMAT:
                raise self._damaged(user, "an unknown format")
            sid = raw[b"sid"].decode("ascii")
            kid = raw[b"kid"].decode("ascii")
            unlocked = int(raw[b"unlocked_at"])
            stamp = raw[b"last_used"].decode("ascii")
            last_used = int(stamp.partition(".")[0])
            sealed = raw[b"sealed"]
        except (KeyError, ValueError, UnicodeDecodeError):
            raise self._damaged(user, "damaged") from None
        if kid != self._key.key_id:
            raise self._damaged(user, f"it was sealed under another cluster key (id {kid}, "
                                      f"this node's is {self._key.key_id}): every node needs "
                                      "the same cluster key")
        if not hmac.compare_digest(stamp, self._stamp(user, sid, last_used)):
            raise self._damaged(user, "its last use does not verify (altered in Redis?)")
        with self._lock:
            cached = self._cache.get(user)
        if cached is None or (cached.session_id, cached.unlocked_at) != (sid, unlocked):
            cached = _Cached(sid, unlocked, self._unseal(user, sid, unlocked, sealed))
            with self._lock:
                self._cache[user] = cached
        return UnlockSession(sid, cached.agent, unlocked_at=_moment(unlocked),
                             last_used=_moment(last_used), mail_mark=raw.get(b"mark"))

    def _unseal(self, user: str, sid: str, unlocked: int, sealed: bytes) -> InProcessKeyAgent:
        try:
            parts = list(_fields(self._key.unseal(sealed, self._aad(user, sid, unlocked))))
        except InvalidTag:
            raise self._damaged(user, "it does not open with this node's cluster key "
                                      "(altered in Redis?)") from None
        except ValueError:
            raise self._damaged(user, "damaged") from None
        try:
            # authenticated above: sealed by a node from a key it had checked
            key = serialization.load_der_private_key(parts[0], None,
                                                     unsafe_skip_rsa_key_validation=True)
            certificates = [x509.load_der_x509_certificate(der) for der in parts[1:]]
        except (IndexError, ValueError, TypeError):
            raise self._damaged(user, "damaged") from None
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise self._damaged(user, "an unsupported key")
        return InProcessKeyAgent(key, certificates[0], tuple(certificates[1:]))

    def touch(self, user: str, session: UnlockSession, now: datetime, *,
              keep_until: datetime, mail_mark: bytes | None = None) -> bool:
        if mail_mark is None and session.last_used <= now < session.last_used + self._refresh:
            return True  # used less than refresh_interval ago: nothing to write yet
        micros = max(_micros(now), _micros(session.last_used))
        result = self._call(lambda: self._touch(
            keys=[self.key_name(user)],
            args=[session.session_id, self._stamp(user, session.session_id, micros), micros,
                  self._ttl_ms(now, keep_until), mail_mark or b""]))
        return bool(result == 1)

    def end(self, user: str, session_id: str | None = None) -> bool:
        name = self.key_name(user)
        if session_id is None:
            count = self._call(lambda: self._redis.delete(name))
        else:
            count = self._call(lambda: self._end(keys=[name], args=[session_id]))
        with self._lock:
            cached = self._cache.get(user)
            if cached is not None and session_id in (None, cached.session_id):
                del self._cache[user]
        return bool(count)

    def users(self) -> list[str]:
        with self._lock:
            return list(self._cache)
