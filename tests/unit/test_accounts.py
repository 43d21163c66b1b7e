"""One identity per user (security issue, item 2): the key-store user of a login, as
Dovecot's auth_username_format makes it, and the addresses a user owns."""

from __future__ import annotations

from pathlib import Path

import pytest

from smime_proxy.accounts import Accounts
from smime_proxy.config import parse_config
from smime_proxy.errors import ConfigError

BASE = {
    "listeners": {name: {"host": "127.0.0.1", "port": port, "plaintext_loopback": True}
                  for name, port in (("imap", 1143), ("smtp", 1587), ("control", 1880))},
    "upstream": {"imap": {"host": "127.0.0.1", "port": 143, "tls": "none"},
                 "smtp": {"host": "127.0.0.1", "port": 587, "tls": "none"}},
    "data_dir": "data",
}


@pytest.mark.parametrize(("fmt", "login", "user"), [
    ("%u", "Alice@Example.Test", "Alice@Example.Test"),
    ("%Lu", "Alice@Example.Test", "alice@example.test"),
    ("%Ln", "Alice@Example.Test", "alice"),
    ("%Ln", "alice@partner.example", "alice"),
    ("%Ln", "ALICE", "alice"),
    ("%n@%Ld", "Bob@EXAMPLE.test", "Bob@example.test"),
    ("%Ld/%Ln", "bob", "/bob"),
])
def test_user_of_a_login(fmt: str, login: str, user: str) -> None:
    assert Accounts(fmt).user(login) == user


def test_addresses_come_from_the_admin_never_from_the_login() -> None:
    accounts = Accounts("%Ln", ("example.test",), {"carol": ("c.smith@example.test",)})
    assert accounts.addresses(accounts.user("alice@partner.example")) == ("alice@example.test",)
    assert accounts.addresses("carol") == ("c.smith@example.test",)
    assert not accounts.owns("alice", "alice@partner.example")
    assert accounts.owns("alice", "Alice@Example.Test")
    as_typed = Accounts("%u", ("example.test",))
    assert as_typed.addresses("alice@partner.example") == ()  # not a local domain
    assert as_typed.addresses("alice@example.test") == ("alice@example.test",)


def test_the_config_section(tmp_path: Path) -> None:
    config = parse_config({**BASE, "users": {
        "username_format": "%Ln", "local_domains": ["Example.Test"],
        "addresses": {"alice": ["Alice@Example.Test", "a@example.test"]}}}, base_dir=tmp_path)
    accounts = Accounts.from_config(config)
    assert accounts.user("ALICE@x") == "alice"
    assert accounts.addresses("alice") == ("alice@example.test", "a@example.test")
    assert accounts.addresses("bob") == ("bob@example.test",)
    fallback = parse_config({**BASE, "control": {"mail_domain": "mail.test"}}, base_dir=tmp_path)
    assert Accounts.from_config(fallback).addresses("bob") == ("bob@mail.test",)


@pytest.mark.parametrize(("users", "where"), [
    ({"username_format": "%x"}, "users.username_format"),
    ({"username_format": ""}, "users.username_format"),
    ({"local_domains": "example.test"}, "users.local_domains"),
    ({"addresses": {"alice": ["not an address"]}}, "users.addresses.alice"),
    ({"nickname": 1}, "users.nickname"),
])
def test_bad_sections_name_the_yaml_path(tmp_path: Path, users: object, where: str) -> None:
    with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
        parse_config({**BASE, "users": users}, base_dir=tmp_path)
