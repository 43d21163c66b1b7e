"""smime_proxy.config: the reference example loads; every kind of mistake is one ConfigError
whose message starts with the YAML path of the offending value."""

from __future__ import annotations

import copy
import dataclasses
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from smime_proxy.config import (
    Config,
    ListenerTls,
    check_ports_free,
    load_config,
    parse_config,
)
from smime_proxy.errors import ConfigError, InputError

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "config" / "smime-proxy.yaml"
POLICY = REPO / "config" / "policy.yaml"


def _valid() -> dict[str, Any]:
    """A complete valid config; files relative to the config file's directory."""
    tls = {"mode": "starttls", "cert": "tls/cert.pem", "key": "tls/key.pem"}
    return {
        "listeners": {
            "imap": {"host": "127.0.0.1", "port": 11143, "tls": dict(tls),
                     "plaintext_loopback": False},
            "smtp": {"host": "127.0.0.1", "port": 11587, "tls": dict(tls)},
            "control": {"host": "127.0.0.1", "port": 18443,
                        "tls": {**tls, "mode": "implicit"}},
        },
        "upstream": {
            "imap": {"host": "127.0.0.1", "port": 143, "tls": "starttls", "verify": True,
                     "ca_file": "tls/ca.pem"},
            "smtp": {"host": "mail.example.test", "port": 587, "tls": "implicit",
                     "verify": False},
        },
        "data_dir": "data",
        "trust_roots": ["trust/root1.pem", "trust/root2.pem"],
        "unlock": {"idle_timeout": 180, "max_unlock": 3600},
        "locked_fetch": "unavailable",
        "policy_file": "policy.yaml",
        "logging": {"format": "json", "level": "debug"},
    }


@pytest.fixture
def confdir(tmp_path: Path) -> Path:
    for name in ("tls/cert.pem", "tls/key.pem", "tls/ca.pem", "trust/root1.pem",
                 "trust/root2.pem", "policy.yaml"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("x\n")
    return tmp_path


def _write(confdir: Path, data: object) -> Path:
    path = confdir / "smime-proxy.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _error(confdir: Path, data: object) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(_write(confdir, data))
    message = str(info.value)
    assert "\n" not in message  # one line
    return message


# --- valid configs ---------------------------------------------------------------------------


def test_valid_config_resolves_relative_paths(confdir: Path) -> None:
    config = load_config(_write(confdir, _valid()))
    assert isinstance(config, Config)
    assert config.listeners.imap.port == 11143
    assert config.listeners.imap.tls == ListenerTls(
        "starttls", confdir / "tls/cert.pem", confdir / "tls/key.pem")
    assert config.listeners.control.tls is not None
    assert config.listeners.control.tls.mode == "implicit"
    assert config.upstream.imap.ca_file == confdir / "tls/ca.pem"
    assert config.upstream.smtp.ca_file is None
    assert config.upstream.smtp.verify is False
    assert config.upstream.smtp.tls == "implicit"
    assert config.data_dir == confdir / "data"
    assert config.trust_roots == (confdir / "trust/root1.pem", confdir / "trust/root2.pem")
    assert config.policy_file == confdir / "policy.yaml"
    assert config.logging.format == "json"
    assert config.source == confdir / "smime-proxy.yaml"


def test_defaults(confdir: Path) -> None:
    data = _valid()
    for key in ("trust_roots", "unlock", "locked_fetch", "policy_file", "logging"):
        del data[key]
    del data["listeners"]["imap"]["host"]
    del data["listeners"]["imap"]["plaintext_loopback"]
    del data["listeners"]["imap"]["tls"]["mode"]
    del data["upstream"]["imap"]["tls"]
    del data["upstream"]["imap"]["verify"]
    config = load_config(_write(confdir, data))
    assert config.listeners.imap.host == "127.0.0.1"
    assert config.listeners.imap.plaintext_loopback is False
    assert config.listeners.imap.tls is not None
    assert config.listeners.imap.tls.mode == "starttls"
    assert config.upstream.imap.tls == "starttls"
    assert config.upstream.imap.verify is True
    assert config.trust_roots == ()
    assert (config.unlock.idle_timeout, config.unlock.max_unlock) == (180, 3600)
    assert config.locked_fetch == "unavailable"
    assert config.signatures == "strip"
    assert config.policy_file is None
    assert (config.logging.format, config.logging.level) == ("text", "info")


def test_plaintext_loopback_listener_without_tls(confdir: Path) -> None:
    data = _valid()
    data["listeners"]["imap"] = {"host": "127.0.0.1", "port": 11143,
                                 "plaintext_loopback": True}
    data["listeners"]["smtp"] = {"host": "::1", "port": 11587, "plaintext_loopback": True}
    config = load_config(_write(confdir, data))
    assert config.listeners.imap.tls is None
    assert config.listeners.smtp.host == "::1"


def test_config_is_frozen(confdir: Path) -> None:
    config = load_config(_write(confdir, _valid()))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.listeners.imap.port = 1  # type: ignore[misc]


def test_reference_example_is_valid() -> None:
    config = load_config(REFERENCE, check_files=False)
    assert config.unlock.idle_timeout == 180
    assert config.locked_fetch == "unavailable"
    assert config.policy_file == REPO / "config" / "policy.yaml"
    assert config.upstream.imap.tls in ("starttls", "implicit")
    assert config.upstream.imap.verify is True
    for listener in (config.listeners.imap, config.listeners.smtp, config.listeners.control):
        assert listener.host == "127.0.0.1"
        assert listener.tls is not None


def test_reference_example_names_files_that_must_exist_at_start() -> None:
    # Its TLS files are made inside the compose containers: here they are missing, and the
    # loader says which one, by YAML path.
    with pytest.raises(ConfigError, match=r"^listeners\.imap\.tls\.cert: file not found: "):
        load_config(REFERENCE)


# --- every kind of error ---------------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: object) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = data
        for p in parents:
            node = node[p]
        node[last] = value
    return mutate


def _delete(path: str) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = data
        for p in parents:
            node = node[p]
        del node[last]
    return mutate


CASES: list[tuple[str, Mutation, str]] = [
    # unknown keys, at every level
    ("unknown top-level key", _set("listners", {}), "listners: unknown key (expected one of:"),
    ("unknown listener key", _set("listeners.imap.prot", 1), "listeners.imap.prot: unknown key"),
    ("unknown listener name", _set("listeners.pop3", {}), "listeners.pop3: unknown key"),
    ("unknown tls key", _set("listeners.smtp.tls.chain", "x"),
     "listeners.smtp.tls.chain: unknown key"),
    ("unknown upstream key", _set("upstream.smtp.user", "x"), "upstream.smtp.user: unknown key"),
    ("unknown unlock key", _set("unlock.idle", 5), "unlock.idle: unknown key"),
    ("unknown logging key", _set("logging.file", "x"), "logging.file: unknown key"),
    # bad ports
    ("port as text", _set("listeners.imap.port", "abc"),
     'listeners.imap.port: expected an integer 1-65535, got "abc"'),
    ("port quoted number", _set("upstream.imap.port", "143"),
     'upstream.imap.port: expected an integer 1-65535, got "143"'),
    ("port too big", _set("listeners.smtp.port", 70000),
     "listeners.smtp.port: expected an integer 1-65535, got 70000"),
    ("port zero", _set("upstream.smtp.port", 0),
     "upstream.smtp.port: expected an integer 1-65535, got 0"),
    ("port negative", _set("listeners.control.port", -1),
     "listeners.control.port: expected an integer 1-65535, got -1"),
    ("port boolean", _set("listeners.imap.port", True),
     "listeners.imap.port: expected an integer 1-65535, got true"),
    ("port float", _set("listeners.imap.port", 143.5),
     "listeners.imap.port: expected an integer 1-65535, got 143.5"),
    ("port used twice", _set("listeners.smtp.port", 11143),
     "listeners.smtp.port: 11143 is already used by listeners.imap"),
    # wrong types and values
    ("empty mapping", lambda d: d.clear(), "listeners: missing (required)"),
    ("listeners a list", _set("listeners", ["imap"]),
     "listeners: expected a mapping with imap, smtp and control, got a list"),
    ("listener host not an IP", _set("listeners.imap.host", "localhost"),
     'listeners.imap.host: expected an IP address to listen on, got "localhost"'),
    ("upstream host empty", _set("upstream.imap.host", ""),
     'upstream.imap.host: expected a host name or IP address, got ""'),
    ("upstream host number", _set("upstream.imap.host", 10),
     "upstream.imap.host: expected a host name or IP address, got 10"),
    ("switch as text", _set("listeners.imap.plaintext_loopback", "yes"),
     'listeners.imap.plaintext_loopback: expected true or false, got "yes"'),
    ("verify as text", _set("upstream.imap.verify", "off"),
     'upstream.imap.verify: expected true or false, got "off"'),
    ("listener tls mode", _set("listeners.imap.tls.mode", "ssl"),
     'listeners.imap.tls.mode: expected starttls | implicit, got "ssl"'),
    ("control tls starttls", _set("listeners.control.tls.mode", "starttls"),
     'listeners.control.tls.mode: expected implicit, got "starttls"'),
    ("upstream tls mode", _set("upstream.smtp.tls", "yes"),
     'upstream.smtp.tls: expected implicit | starttls | none, got "yes"'),
    ("upstream tls false", _set("upstream.smtp.tls", False),
     "upstream.smtp.tls: expected implicit | starttls | none, got false"),
    ("upstream cleartext to remote", _set("upstream.smtp.tls", "none"),
     "upstream.smtp.tls: none would send users' passwords in clear to mail.example.test"),
    ("locked_fetch", _set("locked_fetch", "placeholder"),
     'locked_fetch: expected unavailable | passthrough, got "placeholder"'),
    ("mail_password", _set("unlock.mail_password", True),
     "unlock.mail_password: expected allowed | forbidden, got true"),
    ("signatures", _set("signatures", "verify"),
     'signatures: expected strip | keep, got "verify"'),
    ("idle_timeout with unit", _set("unlock.idle_timeout", "3m"),
     'unlock.idle_timeout: expected a whole number of seconds >= 1, got "3m"'),
    ("idle_timeout zero", _set("unlock.idle_timeout", 0),
     "unlock.idle_timeout: expected a whole number of seconds >= 1, got 0"),
    ("max_unlock below idle", _set("unlock.max_unlock", 60),
     "unlock.max_unlock: 60 is less than unlock.idle_timeout (180)"),
    ("trust_roots not a list", _set("trust_roots", "roots.pem"),
     'trust_roots: expected a list of file paths, got "roots.pem"'),
    ("trust_roots item", _set("trust_roots", ["trust/root1.pem", 5]),
     "trust_roots[1]: expected a file path, got 5"),
    ("data_dir a list", _set("data_dir", ["a"]), "data_dir: expected a file path, got a list"),
    ("logging format", _set("logging.format", "xml"),
     'logging.format: expected text | json, got "xml"'),
    ("unlock null", _set("unlock", None), "unlock: expected a mapping, got null"),
    # missing keys
    ("missing listeners", _delete("listeners"), "listeners: missing (required)"),
    ("missing smtp listener", _delete("listeners.smtp"), "listeners.smtp: missing (required)"),
    ("missing port", _delete("listeners.imap.port"), "listeners.imap.port: missing (required)"),
    ("missing upstream host", _delete("upstream.imap.host"),
     "upstream.imap.host: missing (required)"),
    ("missing data_dir", _delete("data_dir"), "data_dir: missing (required)"),
    ("missing tls key", _delete("listeners.smtp.tls.key"),
     "listeners.smtp.tls.key: missing (required)"),
    ("no tls without plaintext_loopback", _delete("listeners.imap.tls"),
     "listeners.imap.tls: missing (a listener without TLS needs plaintext_loopback: true)"),
    # missing files
    ("missing cert", _set("listeners.imap.tls.cert", "tls/nope.pem"),
     "listeners.imap.tls.cert: file not found: "),
    ("missing key", _set("listeners.control.tls.key", "/nonexistent/key.pem"),
     "listeners.control.tls.key: file not found: /nonexistent/key.pem"),
    ("missing ca_file", _set("upstream.imap.ca_file", "ca-nope.pem"),
     "upstream.imap.ca_file: file not found: "),
    ("missing trust root", _set("trust_roots", ["trust/root1.pem", "trust/gone.pem"]),
     "trust_roots[1]: file not found: "),
    ("missing policy", _set("policy_file", "policies/none.yaml"),
     "policy_file: file not found: "),
    ("directory as file", _set("listeners.imap.tls.cert", "tls"),
     "listeners.imap.tls.cert: not a regular file: "),
    # ldap and revocation
    ("ldap url scheme", _set("ldap", {"url": "http://ldap.example.test", "base": "dc=x"}),
     'ldap.url: expected ldap://host[:port] or ldaps://host[:port], got "http://'),
    ("ldap missing base", _set("ldap", {"url": "ldaps://ldap.example.test"}),
     "ldap.base: missing (required)"),
    ("ldap clear text to remote",
     _set("ldap", {"url": "ldap://ldap.example.test", "base": "dc=x", "starttls": False}),
     "ldap.starttls: false would send the directory's traffic in clear to ldap.example.test"),
    ("ldap filter without address",
     _set("ldap", {"url": "ldaps://l.example.test", "base": "dc=x", "filter": "(mail=*)"}),
     'ldap.filter: expected an LDAP filter in parentheses with {address}, got "(mail=*)"'),
    ("ldap publish without bind",
     _set("ldap", {"url": "ldaps://l.example.test", "base": "dc=x", "publish": True}),
     "ldap.publish: needs ldap.bind_dn"),
    ("ldap password file",
     _set("ldap", {"url": "ldaps://l.example.test", "base": "dc=x",
                   "bind_password_file": "nope"}),
     "ldap.bind_password_file: file not found: "),
    ("ldap timeout", _set("ldap", {"url": "ldaps://l.example.test", "base": "dc=x",
                                   "timeout": "5s"}),
     'ldap.timeout: expected a whole number of seconds 0-120, got "5s"'),
    ("revocation", _set("revocation", "strict"),
     'revocation: expected off | soft-fail | hard-fail, got "strict"'),
]


@pytest.mark.parametrize(("mutate", "expected"), [(m, e) for _, m, e in CASES],
                         ids=[name for name, _, _ in CASES])
def test_error_names_yaml_path(confdir: Path, mutate: Mutation, expected: str) -> None:
    data = copy.deepcopy(_valid())
    mutate(data)
    message = _error(confdir, data)
    assert message.startswith(expected), message


def test_ldap_section(confdir: Path) -> None:
    data = _valid()
    data["ldap"] = {"url": "ldap://127.0.0.1:3890/", "base": "ou=people,dc=example,dc=test",
                    "starttls": False, "filter": "(|(mail={address})(mailAlternateAddress="
                    "{address}))", "cache_seconds": 0}
    (confdir / "config.yaml").write_text(yaml.safe_dump(data))
    ldap = load_config(confdir / "config.yaml").ldap
    assert ldap is not None
    assert (ldap.url, ldap.starttls, ldap.cache_seconds, ldap.publish) == (
        "ldap://127.0.0.1:3890", False, 0, False)
    data["ldap"] = {"url": "ldaps://ldap.example.test", "base": "dc=example,dc=test"}
    (confdir / "config.yaml").write_text(yaml.safe_dump(data))
    ldap = load_config(confdir / "config.yaml").ldap
    assert ldap is not None and not ldap.starttls and ldap.filter == "(mail={address})"


def test_plaintext_only_on_loopback(confdir: Path) -> None:
    data = _valid()
    data["listeners"]["imap"] = {"host": "192.0.2.1", "port": 11143, "plaintext_loopback": True}
    assert _error(confdir, data).startswith(
        "listeners.imap.host: 192.0.2.1 is not a loopback address")


def test_data_dir_that_is_a_file(confdir: Path) -> None:
    data = _valid()
    data["data_dir"] = "policy.yaml"
    assert _error(confdir, data).startswith("data_dir: ")
    assert "not a directory" in _error(confdir, data)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found") as info:
        load_config(tmp_path / "absent.yaml")
    assert str(tmp_path / "absent.yaml") in str(info.value)
    assert isinstance(info.value, InputError)  # the CLI maps it to exit status 2


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("listeners:\n  imap: {port: 1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:3:1: YAML syntax error"):
        load_config(path)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- listeners\n")
    with pytest.raises(ConfigError, match=r"^\(top level\): expected the configuration"):
        load_config(path)
    path.write_text("")
    with pytest.raises(ConfigError, match="got null"):
        load_config(path)


def test_duplicate_key_names_path(confdir: Path) -> None:
    path = confdir / "dup.yaml"
    text = yaml.safe_dump(_valid(), sort_keys=False)
    path.write_text(text.replace("    port: 11143\n", "    port: 11143\n    port: 11144\n"))
    with pytest.raises(ConfigError, match=r"^listeners\.imap\.port: duplicate key \(line \d+\)"):
        load_config(path)


def test_parse_config_without_file_checks(tmp_path: Path) -> None:
    config = parse_config(_valid(), base_dir=tmp_path, check_files=False)
    assert config.policy_file == tmp_path / "policy.yaml"
    with pytest.raises(ConfigError, match=r"^listeners\.imap\.tls\.cert: file not found"):
        parse_config(_valid(), base_dir=tmp_path)


def test_check_ports_free(confdir: Path) -> None:
    data = _valid()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        data["listeners"]["smtp"]["port"] = busy.getsockname()[1]
        with socket.socket() as free:
            free.bind(("127.0.0.1", 0))
            data["listeners"]["imap"]["port"] = free.getsockname()[1]
        config = load_config(_write(confdir, data))
        with pytest.raises(ConfigError, match=r"^listeners\.smtp\.port: cannot listen on "
                           r"127\.0\.0\.1 port \d+: Address already in use"):
            check_ports_free(config)


def test_control_section_defaults_and_errors(tmp_path: Path) -> None:
    import yaml as _yaml

    from smime_proxy.config import ControlConfig, parse_config

    base = _yaml.safe_load(
        """
listeners:
  imap: {host: 127.0.0.1, port: 1143, plaintext_loopback: true}
  smtp: {host: 127.0.0.1, port: 1587, plaintext_loopback: true}
  control: {host: 127.0.0.1, port: 8080, plaintext_loopback: true}
upstream:
  imap: {host: 127.0.0.1, port: 143, tls: none, verify: false}
  smtp: {host: 127.0.0.1, port: 587, tls: none, verify: false}
data_dir: data
"""
    )
    assert parse_config(base, base_dir=tmp_path).control == ControlConfig()
    good = {**base, "control": {"mail_domain": "Example.TEST", "allowed_hosts": ["mail.x"]}}
    control = parse_config(good, base_dir=tmp_path).control
    assert control.mail_domain == "example.test" and control.allowed_hosts == ("mail.x",)
    for bad, where in [
        ({"max_upload_bytes": 10}, "control.max_upload_bytes"),
        ({"allowed_hosts": "x"}, "control.allowed_hosts"),
        ({"mail_domain": "a b"}, "control.mail_domain"),
        ({"colour": 1}, "control.colour"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(where)):
            parse_config({**base, "control": bad}, base_dir=tmp_path)


@pytest.mark.parametrize("trusted", [True, False])
def test_the_server_ca_is_a_trust_root_unless_told_otherwise(tmp_path: Path,
                                                            trusted: bool) -> None:
    from datetime import UTC, datetime

    from smime_proxy.app import build_services
    from smime_proxy.keystore.ca import ServerCA

    data = {"listeners": {name: {"host": "127.0.0.1", "port": port, "plaintext_loopback": True}
                          for port, name in enumerate(("imap", "smtp", "control"), 1)},
            "upstream": {name: {"host": "127.0.0.1", "port": 1, "tls": "none", "verify": False}
                         for name in ("imap", "smtp")},
            "data_dir": str(tmp_path / "data"), "trust_server_ca": trusted}
    config = load_config(_write(tmp_path, data))
    assert build_services(config, kdf_iterations=1000).trust_roots == ()  # no CA yet
    (tmp_path / "data").mkdir(exist_ok=True)
    ca = ServerCA.init(tmp_path / "data", datetime.now(UTC))
    roots = build_services(config, kdf_iterations=1000).trust_roots
    assert roots == ((ca.certificate,) if trusted else ())
