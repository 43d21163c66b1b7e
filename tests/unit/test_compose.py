"""docker-compose.yml, checked without a Docker engine: every mounted path and referenced file
exists, the upstream templates get every placeholder, and the ports agree with
config/smime-proxy.yaml. The compose entrypoint renders byte-for-byte what the harness renders."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from smime_proxy.config import load_config, parse_config
from smime_proxy.harness import read_users_file
from smime_proxy.harness.render import placeholders, render

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
UPSTREAM_CONFIG = REPO / "config" / "upstream"
TEMPLATES = ("dovecot.conf", "main.cf", "master.cf")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def _mounts(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) of each short-syntax volume entry."""
    result = []
    for entry in service.get("volumes", []):
        assert isinstance(entry, str), f"long volume syntax not expected: {entry!r}"
        parts = entry.split(":")
        assert len(parts) in (2, 3), entry
        result.append((parts[0], parts[1], len(parts) == 3 and parts[2] == "ro"))
    return result


def _container_path_to_host(service: dict[str, Any], container_path: str) -> Path | None:
    """The host file a container path comes from through a bind mount, if any."""
    for source, target, _ in _mounts(service):
        if not source.startswith("."):
            continue
        target_path = PurePosixPath(target)
        path = PurePosixPath(container_path)
        if path == target_path or target_path in path.parents:
            return REPO / source / path.relative_to(target_path)
    return None


def _under_mount(service: dict[str, Any], container_path: PurePosixPath) -> bool:
    return any(
        container_path == PurePosixPath(t) or PurePosixPath(t) in container_path.parents
        for _, t, _ in _mounts(service)
    )


CLUSTER = {"postgres", "redis", "cluster-key", "smime-proxy-a", "smime-proxy-b"}
IMAGES = {"postgres", "redis"}  # pulled, not built


def test_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"smime-proxy", "dovecot", "postfix", *CLUSTER}
    for name in CLUSTER:  # only with `--profile cluster`
        assert compose["services"][name]["profiles"] == ["cluster"]
    for service in compose["services"].values():
        # One network namespace: 127.0.0.1 is the same in every container, as in the tests.
        assert service["network_mode"] == "host"
        assert "ports" not in service  # meaningless with host networking


def test_bind_mounts_and_build_files_exist(compose: dict[str, Any]) -> None:
    named_volumes = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        if "build" in service:
            build = service["build"]
            context = REPO / build["context"]
            assert context.is_dir(), name
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), name
        else:  # an image built by another service, or pulled
            assert name in IMAGES or service["image"] in {
                s.get("image") for s in compose["services"].values() if "build" in s}, name
        for source, target, _ in _mounts(service):
            assert target.startswith("/"), (name, target)
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name}: mounted {source} does not exist"
            else:
                assert source in named_volumes, f"{name}: volume {source} not declared"


def test_commands_reference_mounted_files(compose: dict[str, Any]) -> None:
    for name in ("dovecot", "postfix"):
        service = compose["services"][name]
        command = service["command"]
        assert command[:2] == ["sh", "/etc/smime-upstream/entrypoint.sh"]
        assert command[2] == name
        script = _container_path_to_host(service, command[1])
        assert script is not None and script.is_file()
    proxy = compose["services"]["smime-proxy"]
    command = proxy["command"]
    assert command[:2] == ["serve", "--config"]
    config_file = _container_path_to_host(proxy, command[2])
    assert config_file == REPO / "config" / "smime-proxy.yaml"
    assert config_file.is_file()


def test_dockerfiles() -> None:
    top = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", top, re.MULTILINE)
    assert "pip install" in top and " ." in top
    for copied in re.findall(r"^COPY (.+) \./?\S*$", top, re.MULTILINE):
        for name in copied.split():
            assert (REPO / name).exists(), name
    upstream = (UPSTREAM_CONFIG / "Dockerfile").read_text()
    for package in ("dovecot-imapd", "dovecot-lmtpd", "postfix"):
        assert package in upstream
        assert package in (REPO / "scripts" / "test.sh").read_text()
    uid = re.search(r"^USER (\d+)$", top, re.MULTILINE)
    assert uid is not None
    # The proxy's user owns its TLS key in the shared volume.
    for name in ("dovecot", "postfix"):
        env = yaml.safe_load(COMPOSE.read_text())["services"][name]["environment"]
        assert env["PROXY_UID"] == uid.group(1)


def test_every_placeholder_has_a_value(compose: dict[str, Any]) -> None:
    script = (UPSTREAM_CONFIG / "entrypoint.sh").read_text()
    for name in ("dovecot", "postfix"):
        env = compose["services"][name]["environment"]
        for template in TEMPLATES:
            for placeholder in placeholders((UPSTREAM_CONFIG / template).read_text()):
                assert f"@@{placeholder}@@" in script, (template, placeholder)
                if placeholder != "DIR":  # DIR comes from UPSTREAM_DIR
                    assert placeholder in env, (name, placeholder)
        assert "UPSTREAM_DIR" in env


def test_shared_tls_volume_lines_up(compose: dict[str, Any]) -> None:
    services = compose["services"]
    env = services["dovecot"]["environment"]
    upstream_tls = f"{env['UPSTREAM_DIR']}/tls"
    for name in ("dovecot", "postfix"):
        assert ("tls", upstream_tls) in [(s, t) for s, t, _ in _mounts(services[name])]
    proxy_mounts = {t: s for s, t, _ in _mounts(services["smime-proxy"])}
    assert proxy_mounts["/etc/smime-proxy/tls"] == "tls"


def test_ports_and_paths_agree_with_proxy_config(compose: dict[str, Any]) -> None:
    services = compose["services"]
    env = services["dovecot"]["environment"]
    assert env == services["postfix"]["environment"]
    proxy = services["smime-proxy"]
    container_config = PurePosixPath(proxy["command"][2])
    config = parse_config(
        yaml.safe_load((REPO / "config" / "smime-proxy.yaml").read_text()),
        base_dir=Path(str(container_config.parent)), check_files=False,
    )
    # upstream addresses: the compose upstream's loopback ports
    assert config.upstream.imap.host == env["LISTEN"] == "127.0.0.1"
    assert config.upstream.smtp.host == env["LISTEN"]
    implicit = config.upstream.imap.tls == "implicit"
    expected_imap = env["IMAPS_PORT"] if implicit else env["IMAP_PORT"]
    assert config.upstream.imap.port == int(expected_imap)
    assert config.upstream.smtp.port == int(env["SUBMISSION_PORT"])
    assert config.upstream.smtp.tls != "implicit"  # Postfix offers STARTTLS on submission
    # no two listeners on one port
    upstream_ports = [int(env[k]) for k in
                      ("IMAP_PORT", "IMAPS_PORT", "LMTP_PORT", "SASL_PORT", "SUBMISSION_PORT")]
    proxy_ports = [config.listeners.imap.port, config.listeners.smtp.port,
                   config.listeners.control.port]
    every_port = upstream_ports + proxy_ports
    assert len(set(every_port)) == len(every_port)
    # the ports the header comment documents are these
    header = COMPOSE.read_text().split("x-upstream-env")[0]
    for port in every_port:
        assert str(port) in header
    # every file the proxy config names is inside something mounted into the proxy container
    files = [config.policy_file, *config.trust_roots, config.upstream.imap.ca_file,
             config.upstream.smtp.ca_file]
    for listener in (config.listeners.imap, config.listeners.smtp, config.listeners.control):
        if listener.tls is not None:
            files += [listener.tls.cert, listener.tls.key]
    for path in files:
        if path is not None:
            assert _under_mount(proxy, PurePosixPath(path)), f"{path} is not mounted"
    assert _under_mount(proxy, PurePosixPath(config.data_dir))
    # the policy file mounted is the repository's
    assert config.policy_file is not None
    host_policy = _container_path_to_host(proxy, str(config.policy_file))
    assert host_policy == REPO / "config" / "policy.yaml"


def test_reference_config_loads_without_files() -> None:
    load_config(REPO / "config" / "smime-proxy.yaml", check_files=False)


def test_users_file_is_the_harness_default() -> None:
    users = read_users_file(UPSTREAM_CONFIG / "users")
    assert users == {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}


def test_entrypoint_renders_what_the_harness_renders(tmp_path: Path,
                                                     compose: dict[str, Any]) -> None:
    env = {k: str(v) for k, v in compose["services"]["dovecot"]["environment"].items()}
    env["UPSTREAM_DIR"] = str(tmp_path)
    subprocess.run(
        ["sh", str(UPSTREAM_CONFIG / "entrypoint.sh"), "render"],
        env={**os.environ, **env}, check=True, capture_output=True, timeout=30,
    )
    values = {"DIR": str(tmp_path), **{k: v for k, v in env.items() if k != "UPSTREAM_DIR"}}
    outputs = {"dovecot.conf": tmp_path / "dovecot.conf",
               "main.cf": tmp_path / "postfix" / "etc" / "main.cf",
               "master.cf": tmp_path / "postfix" / "etc" / "master.cf"}
    for template, output in outputs.items():
        assert output.read_text() == render((UPSTREAM_CONFIG / template).read_text(), values)
    # a second render with the same values rewrites nothing
    mtimes = {p: p.stat().st_mtime_ns for p in outputs.values()}
    subprocess.run(["sh", str(UPSTREAM_CONFIG / "entrypoint.sh"), "render"],
                   env={**os.environ, **env}, check=True, capture_output=True, timeout=30)
    assert {p: p.stat().st_mtime_ns for p in outputs.values()} == mtimes


def test_entrypoint_refuses_missing_values(tmp_path: Path) -> None:
    result = subprocess.run(
        ["sh", str(UPSTREAM_CONFIG / "entrypoint.sh"), "render"],
        env={"PATH": os.environ["PATH"], "UPSTREAM_DIR": str(tmp_path)},
        capture_output=True, timeout=30, check=False,
    )
    assert result.returncode == 2
    assert b"LISTEN is not set" in result.stderr


@pytest.fixture(scope="module")
def rendered() -> dict[str, Any]:
    """docker-compose.yml as Debian's docker-compose renders it (no engine needed)."""
    result = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config"], cwd=REPO,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    data = yaml.safe_load(result.stdout)
    assert isinstance(data, dict)
    return data


def test_docker_compose_renders_it(rendered: dict[str, Any]) -> None:
    services = rendered["services"]
    assert set(services) == {"dovecot", "postfix", "smime-proxy", *CLUSTER}
    proxy = services["smime-proxy"]
    assert proxy["command"] == ["serve", "--config", "/etc/smime-proxy/smime-proxy.yaml"]
    assert proxy["environment"]["SMIME_PROXY_DATA_DIR"] == "/var/lib/smime-proxy"
    assert f"{REPO}/config/smime-proxy.yaml:/etc/smime-proxy/smime-proxy.yaml:ro" in \
        proxy["volumes"]
    assert {"tls", "mail", "proxy-data"} <= set(rendered["volumes"])


def test_the_proxys_entrypoint_makes_the_server_ca_once_then_runs_the_command(
        rendered: dict[str, Any], tmp_path: Path) -> None:
    """The entrypoint as compose gives it to the container, run here with the venv's
    smime-proxy and `ca show --pem` in place of `serve`: first start makes the CA, the
    next keeps it; the reference config trusts it (trust_server_ca)."""
    entrypoint = rendered["services"]["smime-proxy"]["entrypoint"]
    assert entrypoint[:2] == ["sh", "-c"]
    script = entrypoint[2].replace("$$", "$")  # compose's escape of a literal $
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "SMIME_PROXY_DATA_DIR": str(tmp_path / "data"),
           "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    outputs = []
    for _ in range(2):
        result = subprocess.run(["sh", "-c", script, *entrypoint[3:], "ca", "show", "--pem"],
                                capture_output=True, text=True, env=env, timeout=120,
                                check=False)
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    assert "created the server CA" in outputs[0] and "kept" in outputs[1]
    pem = outputs[1].split("-----BEGIN CERTIFICATE-----", 1)[1]
    assert pem in outputs[0]  # the same CA both times
    config = load_config(REPO / "config" / "smime-proxy.yaml", check_files=False)
    assert config.trust_server_ca


def test_the_cluster_nodes_share_postgres_redis_and_the_key(compose: dict[str, Any]) -> None:
    """config/cluster/node-*.yaml load, listen on ports of their own, and reach the
    postgres and redis services where compose runs them, with the key the cluster-key
    service makes in the volume both nodes mount."""
    services = compose["services"]
    postgres_port = services["postgres"]["command"][-1].split("=")[1]
    redis_command = services["redis"]["command"]
    redis_port = redis_command[redis_command.index("--port") + 1]
    key_maker = services["cluster-key"]["entrypoint"][2]
    ports: list[int] = []
    for node in ("a", "b"):
        service = services[f"smime-proxy-{node}"]
        host_config = _container_path_to_host(service, service["command"][2])
        assert host_config == REPO / "config" / "cluster" / f"node-{node}.yaml"
        config = parse_config(yaml.safe_load(host_config.read_text()),
                              base_dir=Path("/etc/smime-proxy"), check_files=False)
        assert config.store.backend == "postgresql" and config.store.dsn is not None
        assert f"port={postgres_port}" in config.store.dsn
        assert config.sessions.backend == "redis" and config.sessions.url is not None
        assert config.sessions.url.endswith(f":{redis_port}/0")
        key = config.sessions.cluster_key_file
        assert key is not None and str(key) in key_maker
        assert _under_mount(service, PurePosixPath(key))
        assert _under_mount(service, PurePosixPath(config.data_dir))
        ports += [config.listeners.imap.port, config.listeners.smtp.port,
                  config.listeners.control.port]
    single = load_config(REPO / "config" / "smime-proxy.yaml", check_files=False)
    ports += [single.listeners.imap.port, single.listeners.smtp.port,
              single.listeners.control.port, int(postgres_port), int(redis_port)]
    assert len(set(ports)) == len(ports)
