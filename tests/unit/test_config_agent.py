"""The config's `agent:` section: a key agent process on a Unix socket, started by the daemon
unless `start: false`; mistakes are one ConfigError naming the YAML path."""

from __future__ import annotations

from pathlib import Path

import pytest

from smime_proxy.app import default_fronts
from smime_proxy.config import AgentConfig, Config
from smime_proxy.errors import ConfigError
from support.configs import minimal_config


def _config(tmp_path: Path, **sections: object) -> Config:
    return minimal_config(tmp_path, **sections)


def test_no_agent_by_default_and_one_when_named(tmp_path: Path) -> None:
    assert _config(tmp_path).agent is None
    assert _config(tmp_path, agent={"socket": "/run/smime/agent.sock"}).agent == AgentConfig(
        Path("/run/smime/agent.sock"), True)
    assert _config(tmp_path, agent={"socket": "/run/a.sock", "start": False}).agent == \
        AgentConfig(Path("/run/a.sock"), False)


@pytest.mark.parametrize(("agent", "words"), [
    ("yes", "agent: expected a mapping"),
    ({}, "agent.socket: expected an absolute path"),
    ({"socket": "agent.sock"}, "agent.socket: expected an absolute path"),
    ({"socket": "/" + "x" * 120}, "agent.socket: expected an absolute path"),
    ({"socket": "/run/a.sock", "start": "maybe"}, "agent.start: expected true or false"),
    ({"socket": "/run/a.sock", "user": "agent"}, "agent"),
])
def test_mistakes_name_the_yaml_path(tmp_path: Path, agent: object, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        _config(tmp_path, agent=agent)


def test_an_agent_with_redis_sessions_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "cluster.key"
    key.write_text("A" * 43 + "=\n")
    key.chmod(0o600)
    with pytest.raises(ConfigError, match="agent: a key agent process and sessions in Redis"):
        _config(tmp_path, agent={"socket": "/run/a.sock"},
                sessions={"backend": "redis", "url": "redis://127.0.0.1:6379/0",
                          "cluster_key_file": str(key)})


def test_the_daemon_starts_the_agent_first(tmp_path: Path) -> None:
    from smime_proxy.app import build_services

    config = _config(tmp_path, agent={"socket": str(tmp_path / "run" / "agent.sock")})
    services = build_services(config, kdf_iterations=1000)
    assert [front.name for front in default_fronts(services)][:2] == ["agent", "control"]
