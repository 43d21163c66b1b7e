"""The policy: loading, load-time validation (YAML paths), precedence, headers, tags, CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from smime_proxy.errors import ConfigError
from smime_proxy.policy import Policy, decide, find_subject_tags, load_policy, parse_policy

REPO = Path(__file__).resolve().parents[3]


def _policy(text: str) -> Policy:
    return parse_policy(yaml.safe_load(text))


def test_example_policy_loads_and_carol_is_required() -> None:
    policy = load_policy(REPO / "config" / "policy.yaml")
    d = decide(policy, "carol@example.test", ["bob@example.test"])
    assert (d.sign, d.encrypt) == ("required", "required")
    d = decide(policy, "alice@example.test", ["bob@example.test"])
    assert (d.sign, d.encrypt) == ("if-unlocked", "never")
    assert any("users.alice@example.test" in r for r in d.reasons)


def test_defaults_without_policy() -> None:
    d = decide(Policy(), "a@x.test", ["b@y.test"])
    assert (d.sign, d.encrypt, d.fallback) == ("if-unlocked", "if-possible", "signed")
    assert d.ciphers == ("aes-256-gcm", "aes-256-cbc")
    assert d.refusal is None


def test_precedence_global_domain_user() -> None:
    policy = _policy("""
global: {sign: never, encrypt: never}
domains:
  example.test: {sign: if-unlocked}
users:
  bob@example.test: {sign: required, encrypt: if-possible}
""")
    assert decide(policy, "x@other.test", ["y@z.test"]).sign == "never"
    d = decide(policy, "alice@example.test", ["y@z.test"])
    assert (d.sign, d.encrypt) == ("if-unlocked", "never")
    d = decide(policy, "BOB@Example.Test", ["y@z.test"])
    assert (d.sign, d.encrypt) == ("required", "if-possible")


def test_smime_off_per_domain_and_on_again_per_account() -> None:
    policy = _policy("""
global: {sign: required, encrypt: if-possible}
domains:
  legacy.test: {smime: off}
users:
  boss@legacy.test: {smime: "on"}
""")
    d = decide(policy, "clerk@legacy.test", ["y@z.test"])
    assert (d.sign, d.encrypt, d.refusal) == ("never", "never", None)
    assert any(r.startswith("smime: off (from domains.legacy.test)") for r in d.reasons)
    d = decide(policy, "clerk@legacy.test", ["y@z.test"], [("X-SMIME-Encrypt", "yes")])
    assert d.refusal == ("header X-SMIME-Encrypt asks to encrypt, but S/MIME is turned off "
                         "for this sender")
    d = decide(policy, "boss@legacy.test", ["y@z.test"])
    assert (d.sign, d.encrypt) == ("required", "if-possible")
    assert decide(policy, "x@other.test", ["y@z.test"]).sign == "required"


@pytest.mark.parametrize(("rule", "message"), [
    ("{smime: maybe}", 'global.smime: expected on or off, got "maybe"'),
    ("{smime: off, sign: required}",
     "global.smime: off contradicts sign: required in the same rule"),
])
def test_smime_setting_mistakes(rule: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _policy(f"global: {rule}")
    assert str(info.value) == message


def test_glob_and_recipient_rules() -> None:
    policy = _policy("""
global: {encrypt: if-possible}
rules:
  - from: "*.corp.test"
    to: ["*@partner.test", "boss@x.test"]
    encrypt: required
  - from: "sales-*@corp.test"
    sign: required
""")
    assert decide(policy, "a@eu.corp.test", ["p@partner.test"]).encrypt == "required"
    assert decide(policy, "a@eu.corp.test", ["q@other.test", "boss@x.test"]).encrypt == \
        "required"
    assert decide(policy, "a@eu.corp.test", ["q@other.test"]).encrypt == "if-possible"
    assert decide(policy, "a@corp.test", ["p@partner.test"]).encrypt == "if-possible"
    assert decide(policy, "sales-eu@corp.test", ["q@o.test"]).sign == "required"
    assert decide(policy, "dev@corp.test", ["q@o.test"]).sign == "if-unlocked"


def test_equally_specific_rules_stricter_wins() -> None:
    policy = _policy("""
rules:
  - {to: "*@a.test", encrypt: required}
  - {to: "*@b.test", encrypt: never}
""")
    assert decide(policy, "s@x.test", ["r@a.test", "r@b.test"]).encrypt == "required"
    assert decide(policy, "s@x.test", ["r@b.test"]).encrypt == "never"


@pytest.mark.parametrize(
    ("rule", "header", "expected", "refused"),
    [
        ("if-unlocked", "yes", "required", False),
        ("if-unlocked", "no", "never", False),
        ("required", "no", "required", False),
        ("never", "yes", "never", True),
        ("never", "no", "never", False),
        ("if-unlocked", "maybe", "if-unlocked", True),
    ],
)
def test_sign_header_within_the_rule(rule: str, header: str, expected: str,
                                     refused: bool) -> None:
    policy = _policy(f"global: {{sign: {rule}}}")
    d = decide(policy, "a@x.test", ["b@x.test"], [("X-SMIME-Sign", header)])
    assert d.sign == expected
    assert (d.refusal is not None) == refused


@pytest.mark.parametrize(
    ("rule", "header", "expected", "refused"),
    [
        ("if-possible", "YES", "required", False),
        ("if-possible", "no", "never", False),
        ("required", "no", "required", False),
        ("never", "yes", "never", True),
    ],
)
def test_encrypt_header_within_the_rule(rule: str, header: str, expected: str,
                                        refused: bool) -> None:
    policy = _policy(f"global: {{encrypt: {rule}}}")
    d = decide(policy, "a@x.test", ["b@x.test"], [("x-smime-encrypt", header)])
    assert d.encrypt == expected
    assert (d.refusal is not None) == refused


def test_conflicting_repeated_headers_refuse() -> None:
    d = decide(Policy(), "a@x.test", ["b@x.test"],
               [("X-SMIME-Sign", "yes"), ("X-SMIME-Sign", "no")])
    assert d.refusal is not None


def test_subject_tags() -> None:
    policy = _policy('global: {subject_tags: {sign: "[sign]", encrypt: "[Encrypt]"}}')
    d = decide(policy, "a@x.test", ["b@x.test"], [("Subject", "Hello [encrypt] there")])
    assert (d.sign, d.encrypt) == ("if-unlocked", "required")
    subject, found = find_subject_tags("[SIGN] Hello [encrypt] there", d.subject_tags)
    assert subject == "Hello there"
    assert sorted(found) == ["encrypt", "sign"]
    assert find_subject_tags("no tags  here", d.subject_tags) == ("no tags  here", [])


def test_gcm_recipients() -> None:
    policy = _policy('global: {gcm_recipients: ["*@modern.test"]}')
    d = decide(policy, "a@x.test", ["b@modern.test"])
    assert d.supports_gcm("B@modern.test")
    assert not d.supports_gcm("b@old.test")


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("global: {sign: sometimes}", "global.sign"),
        ("global: {sign: never, fallback: signed}", "global.fallback"),
        ("global: {encrypt: required, fallback: plain}", "global.fallback"),
        ("global: {encrypt: never, hide_subject: true}", "global.hide_subject"),
        ("global: {header_protection: none, hide_subject: true}", "global.hide_subject"),
        ("global: {encrypt: never, ciphers: [aes-256-cbc]}", "global.ciphers"),
        ("global: {ciphers: [aes-256-cbc, rc2]}", "global.ciphers[1]"),
        ("global: {ciphers: [aes-256-cbc, aes-256-cbc]}", "global.ciphers[1]"),
        ("global: {ciphers: []}", "global.ciphers"),
        ('global: {subject_tags: {sign: "[x]", encrypt: "[X]"}}',
         "global.subject_tags.encrypt"),
        ('users: {"a@x.test": {sign: never, subject_tags: {sign: "[s]"}}}',
         "users.a@x.test.subject_tags.sign"),
        ("users: {'a@x.test': {colour: red}}", "users.a@x.test.colour"),
        ("users: {'*@x.test': {sign: never}}", "users.*@x.test"),
        ("domains: {'a@x.test': {sign: never}}", "domains.a@x.test"),
        ("rules: [{from: '*@x.test'}]", "rules[0]"),
        ("rules: [{to: 'a@@b', sign: never}]", "rules[0].to[0]"),
        ("domains: {x.test: {sign: never}}\nrules: [{from: x.test, sign: required}]",
         "rules[0].sign"),
        ("rules: [{to: a@b.test, encrypt: never}, {to: A@B.test, encrypt: required}]",
         "rules[1].encrypt"),
        ("surprise: 1", "surprise"),
        ("- a list", "(top level)"),
    ],
)
def test_load_time_errors_name_the_yaml_path(text: str, path: str) -> None:
    with pytest.raises(ConfigError) as info:
        _policy(text)
    assert str(info.value).startswith(path + ":"), str(info.value)


def test_duplicate_key_and_syntax_errors_in_file(tmp_path: Path) -> None:
    file = tmp_path / "p.yaml"
    file.write_text("users:\n  a@x.test: {sign: never}\n  a@x.test: {sign: required}\n")
    with pytest.raises(ConfigError, match=r"^users\.a@x\.test: duplicate key"):
        load_policy(file)
    file.write_text("global: [\n")
    with pytest.raises(ConfigError, match="YAML syntax error"):
        load_policy(file)
    with pytest.raises(ConfigError, match="not found"):
        load_policy(tmp_path / "missing.yaml")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "smime_proxy", "policy", *args],
                          capture_output=True, text=True, check=False, timeout=60)


def test_cli_explain() -> None:
    policy = str(REPO / "config" / "policy.yaml")
    res = _cli("explain", "--policy", policy, "--from", "carol@example.test",
               "--to", "bob@example.test", "--header", "X-SMIME-Encrypt: no")
    assert res.returncode == 0, res.stderr
    assert "encrypt: required" in res.stdout
    assert "no is ignored" in res.stdout
    res = _cli("explain", "--policy", policy, "--from", "alice@example.test",
               "--to", "bob@example.test", "--header", "X-SMIME-Encrypt: yes")
    assert res.returncode == 1
    assert "REFUSED" in res.stdout


def test_cli_bad_policy_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("global: {sign: never, fallback: signed}\n")
    res = _cli("explain", "--policy", str(bad), "--from", "a@x.test", "--to", "b@x.test")
    assert res.returncode == 2
    assert res.stderr.startswith("smime-proxy: global.fallback:")
    res = _cli("explain", "--policy", str(bad), "--from", "a@x.test", "--to", "b@x.test",
               "--header", "nocolon")
    assert res.returncode == 2


def test_certificate_dir_relative_to_the_policy_file(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    file = tmp_path / "p.yaml"
    file.write_text("certificate_dir: certs\n")
    assert load_policy(file).certificate_dir == (tmp_path / "certs").resolve()
    file.write_text("certificate_dir: nowhere\n")
    with pytest.raises(ConfigError, match=r"^certificate_dir: not a directory"):
        load_policy(file)
    with pytest.raises(ConfigError, match=r"^certificate_dir: expected"):
        _policy("certificate_dir: [a]")


def test_cli_explain_names_each_recipients_certificate(tmp_path: Path) -> None:
    """Issue 14: `policy explain --user` says where each recipient's certificate comes from
    and whether they get AES-256-GCM (what their signed mail announced)."""
    from smime_proxy.app import stores_of
    from support.pki import make_ca, make_user

    ca = make_ca()
    bob = make_user("bob@example.test", ca)
    with stores_of(tmp_path / "data") as stores:
        stores.contacts.take_certificate("alice", bob.cert, ("2.16.840.1.101.3.4.1.46",))
    res = subprocess.run(
        [sys.executable, "-m", "smime_proxy", "--data-dir", str(tmp_path / "data"), "policy",
         "explain", "--from", "alice@example.test", "--to", "Bob@example.test",
         "--to", "carol@example.test", "--user", "alice"],
        capture_output=True, text=True, check=False, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "certificates (user alice; revocation: not checked):" in res.stdout
    assert "  - bob@example.test: address book, SHA-256 " in res.stdout
    assert "AES-256-GCM: yes (announced in their signed mail)" in res.stdout
    assert "  - carol@example.test: no usable certificate" in res.stdout
    res = _cli("explain", "--from", "a@x.test", "--to", "b@x.test", "--user", "alice")
    assert res.returncode == 2 and "--data-dir" in res.stderr
