"""The config's `sessions:` section: unlocks in memory by default, in Redis with `url` and a
cluster key from `cluster_key_file` or `cluster_key_env`; mistakes are one ConfigError naming
the YAML path, and neither the URL (it may hold the Redis password) nor the cluster key is
ever shown by an error or a repr."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

import pytest

from smime_proxy.app import open_sessions
from smime_proxy.config import Config, SessionsConfig
from smime_proxy.errors import ConfigError
from smime_proxy.keystore.sessions import MemoryUnlockSessions
from support.configs import minimal_config

SECRET = "Redis-Secret-5521"
URL = f"redis://:{SECRET}@redis.example.test:6379/2"
KEY = secrets.token_bytes(32)
KEY_TEXT = base64.b64encode(KEY).decode()


def _config(tmp_path: Path, sessions: object = None) -> Config:
    return minimal_config(tmp_path, sessions=sessions)


def _key_file(tmp_path: Path, text: str = KEY_TEXT + "\n", mode: int = 0o600) -> Path:
    path = tmp_path / "cluster.key"
    path.write_text(text)
    path.chmod(mode)
    return path


def _error(tmp_path: Path, sessions: object) -> str:
    with pytest.raises(ConfigError) as info:
        _config(tmp_path, sessions)
    message = str(info.value)
    assert "\n" not in message and SECRET not in message
    return message


def test_memory_is_the_default(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert config.sessions == SessionsConfig("memory") == SessionsConfig()
    assert _config(tmp_path, {"backend": "memory"}).sessions == SessionsConfig()
    assert isinstance(open_sessions(config.sessions), MemoryUnlockSessions)
    assert isinstance(open_sessions(None), MemoryUnlockSessions)


def test_redis_with_a_key_file_read_at_open(tmp_path: Path) -> None:
    _key_file(tmp_path)
    sessions = _config(tmp_path, {"backend": "redis", "url": URL,
                                  "cluster_key_file": "cluster.key"}).sessions
    assert sessions.backend == "redis" and sessions.url == URL
    assert sessions.cluster_key_file == tmp_path / "cluster.key"
    assert sessions.read_cluster_key() == KEY
    assert SECRET not in repr(sessions) and KEY_TEXT not in repr(sessions)
    _key_file(tmp_path, mode=0o640)  # a group that may read it: allowed
    assert sessions.read_cluster_key() == KEY
    _key_file(tmp_path, mode=0o644)
    with pytest.raises(ConfigError, match=r"^sessions.cluster_key_file: .* by others "
                                          r"\(mode 0644\): chmod 600"):
        sessions.read_cluster_key()
    _key_file(tmp_path, "bm90IDMyIGJ5dGVz\n")
    with pytest.raises(ConfigError, match=r"does not hold 32 bytes in base64") as info:
        sessions.read_cluster_key()
    assert "bm90" not in str(info.value)
    _key_file(tmp_path, "not base64 at all!")
    with pytest.raises(ConfigError, match=r"does not hold 32 bytes"):
        sessions.read_cluster_key()
    (tmp_path / "cluster.key").unlink()
    with pytest.raises(ConfigError, match=r"^sessions.cluster_key_file: .* cannot read"):
        sessions.read_cluster_key()


def test_redis_with_a_key_in_the_environment(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    sessions = _config(tmp_path, {"backend": "redis", "url": "rediss://redis.example.test",
                                  "cluster_key_env": "SMIME_PROXY_CLUSTER_KEY"}).sessions
    monkeypatch.setenv("SMIME_PROXY_CLUSTER_KEY", KEY_TEXT)
    assert sessions.read_cluster_key() == KEY
    monkeypatch.setenv("SMIME_PROXY_CLUSTER_KEY", KEY_TEXT[:-8])
    with pytest.raises(ConfigError, match="SMIME_PROXY_CLUSTER_KEY does not hold") as info:
        sessions.read_cluster_key()
    assert KEY_TEXT[:-8] not in str(info.value)
    monkeypatch.delenv("SMIME_PROXY_CLUSTER_KEY")
    with pytest.raises(ConfigError, match="SMIME_PROXY_CLUSTER_KEY is not set"):
        sessions.read_cluster_key()


def test_unix_socket_url(tmp_path: Path) -> None:
    _key_file(tmp_path)
    sessions = _config(tmp_path, {"backend": "redis", "url": "unix:///run/redis/redis.sock",
                                  "cluster_key_file": str(tmp_path / "cluster.key")}).sessions
    assert sessions.url == "unix:///run/redis/redis.sock"


@pytest.mark.parametrize(("sessions", "expected"), [
    ({"backend": "redis", "cluster_key_env": "K"}, "sessions.url: missing"),
    ({"backend": "redis", "url": URL}, "sessions.cluster_key_file: give cluster_key_file or"),
    ({"backend": "redis", "url": URL, "cluster_key_env": "K", "cluster_key_file": "x"},
     "sessions.cluster_key_file: give cluster_key_file or"),
    ({"backend": "memory", "url": URL}, "sessions.url: only for backend redis"),
    ({"cluster_key_env": "K"}, "sessions.cluster_key_env: only for backend redis"),
    ({"backend": "etcd"}, "sessions.backend: expected"),
    ({"backend": "redis", "url": f"http://:{SECRET}@x", "cluster_key_env": "K"},
     "sessions.url: expected redis://"),
    ({"backend": "redis", "url": f"redis://:{SECRET}@x\n", "cluster_key_env": "K"},
     "sessions.url: expected redis://"),
    ({"backend": "redis", "url": 6379, "cluster_key_env": "K"}, "sessions.url: expected"),
    ({"backend": "redis", "url": URL, "cluster_key_env": "1 bad"},
     "sessions.cluster_key_env: expected an environment variable name"),
    ({"backend": "redis", "url": URL, "cluster_key_file": "missing"},
     "sessions.cluster_key_file: file not found"),
    ({"backend": "redis", "url": URL, "cluster_key": KEY_TEXT},
     "sessions.cluster_key: unknown key"),
    ("redis", "sessions: expected a mapping"),
])
def test_mistakes_name_the_place_and_show_no_secret(tmp_path: Path, sessions: object,
                                                    expected: str) -> None:
    message = _error(tmp_path, sessions)
    assert message.startswith(expected), message
    assert KEY_TEXT not in message
