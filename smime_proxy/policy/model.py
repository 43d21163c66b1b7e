"""The policy file: its format, loading and load-time validation (pure; no I/O but reading).

A policy is a list of `Rule`s, each at one of three levels (`global` < `domain` < `user`,
chosen by how specifically its sender pattern names the sender), holding any subset of the
`Settings` keys. `load_policy(path)` / `parse_policy(data)` build a `Policy`; every problem
raises `ConfigError` whose message starts with the YAML path of the offending value, e.g.::

    users.carol@example.test.fallback: "signed" contradicts sign: never in the same rule

The format is documented in `config/policy.yaml`.

May import: errors, yamlcheck, stdlib.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Literal, cast

from smime_proxy.errors import ConfigError
from smime_proxy.yamlcheck import boolean, load_yaml, only, show

SignMode = Literal["never", "if-unlocked", "required"]
EncryptMode = Literal["never", "if-possible", "required"]
Fallback = Literal["signed", "plain"]
HeaderProtection = Literal["injected", "wrapped", "none"]
HEADER_PROTECTIONS: tuple[HeaderProtection, ...] = ("injected", "wrapped", "none")
CipherName = Literal["aes-256-gcm", "aes-256-cbc", "aes-128-cbc"]
Level = Literal["global", "domain", "user"]

SIGN_MODES: tuple[SignMode, ...] = ("never", "if-unlocked", "required")
ENCRYPT_MODES: tuple[EncryptMode, ...] = ("never", "if-possible", "required")
CIPHERS: tuple[CipherName, ...] = ("aes-256-gcm", "aes-256-cbc", "aes-128-cbc")
LEVELS: tuple[Level, ...] = ("global", "domain", "user")
_WILDCARDS = frozenset("*?[")


@dataclass(frozen=True)
class Settings:
    """What a rule may set; `None`: not set here (inherited from a less specific rule)."""

    sign: SignMode | None = None
    encrypt: EncryptMode | None = None
    ciphers: tuple[CipherName, ...] | None = None
    fallback: Fallback | None = None
    subject_tags: tuple[tuple[str, str], ...] | None = None  # (("sign", "[sign]"), ...)
    header_protection: HeaderProtection | None = None
    hide_subject: bool | None = None
    gcm_recipients: tuple[str, ...] | None = None
    smime: bool | None = None  # off: the sender's mail is neither signed nor encrypted
    # incoming plain mail to the address (the LMTP filter) is stored encrypted to its owner;
    # rules are then keyed by the recipient's address, as `users:`/`domains:` name it
    store_encrypted: bool | None = None

    def items(self) -> list[tuple[str, object]]:
        return [(f.name, getattr(self, f.name)) for f in fields(self)
                if getattr(self, f.name) is not None]


DEFAULTS = Settings(
    sign="if-unlocked",
    encrypt="if-possible",
    ciphers=("aes-256-gcm", "aes-256-cbc"),
    fallback="signed",
    subject_tags=(),
    header_protection="injected",
    hide_subject=False,
    gcm_recipients=(),
    smime=True,
    store_encrypted=False,
)


@dataclass(frozen=True)
class Pattern:
    """An address pattern: exact address, domain, or glob (case-insensitive)."""

    text: str

    @property
    def kind(self) -> Literal["any", "domain", "address"]:
        if self.text == "*":
            return "any"
        if "@" not in self.text:
            return "domain"
        local = self.text.split("@", 1)[0]
        return "domain" if local == "*" else "address"

    def matches(self, address: str) -> bool:
        address = address.lower()
        if self.text == "*":
            return True
        if "@" not in self.text:  # a domain (or a glob over domains)
            domain = address.rsplit("@", 1)[-1]
            return _match(domain, self.text)
        return _match(address, self.text)


def _match(value: str, pattern: str) -> bool:
    if _WILDCARDS.isdisjoint(pattern):
        return value == pattern
    return fnmatch.fnmatchcase(value, pattern)


@dataclass(frozen=True)
class Rule:
    """Settings that apply when the sender matches `sender` and (if given) at least one
    recipient matches one of `recipients`. `where`: its YAML path (for explanations)."""

    where: str
    level: Level
    sender: Pattern
    recipients: tuple[Pattern, ...]
    settings: Settings

    def applies(self, sender: str, recipients: Sequence[str]) -> bool:
        if not self.sender.matches(sender):
            return False
        if not self.recipients:
            return True
        return any(p.matches(r) for p in self.recipients for r in recipients)


@dataclass(frozen=True)
class Policy:
    """A validated policy. `source`: the file it came from (None: built-in defaults)."""

    rules: tuple[Rule, ...] = ()
    defaults: Settings = DEFAULTS
    source: Path | None = None
    all_tags: tuple[str, ...] = field(default=())
    certificate_dir: Path | None = None
    """A directory of recipients' certificates (PEM/DER files), used when the sender's
    address book has none for an address (relative paths: to the policy file)."""

    def matching(self, sender: str, recipients: Sequence[str]) -> list[Rule]:
        """Rules that apply, least specific first (level, then rules with recipients
        after those without, then file order)."""
        found = [r for r in self.rules if r.applies(sender, recipients)]
        return sorted(found, key=lambda r: (LEVELS.index(r.level), bool(r.recipients)))


# --- loading ----------------------------------------------------------------------------


def load_policy(path: Path | str) -> Policy:
    """Read and validate the policy YAML at `path`."""
    path = Path(path)
    data = load_yaml(path, "policy file")
    policy = parse_policy(data)
    directory = policy.certificate_dir
    if directory is not None:
        directory = (path.resolve().parent / directory).resolve()
        if not directory.is_dir():
            raise ConfigError(f"certificate_dir: not a directory: {directory}")
    return replace(policy, source=path, certificate_dir=directory)


def parse_policy(data: object) -> Policy:
    """Validate already-parsed YAML."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"(top level): expected a mapping, got {show(data)}")
    top = cast(dict[str, object], data)
    only(top, "", {"global", "domains", "users", "rules", "certificate_dir"})
    certificate_dir: Path | None = None
    if top.get("certificate_dir") is not None:
        raw_dir = top["certificate_dir"]
        if not isinstance(raw_dir, str) or not raw_dir.strip():
            raise ConfigError(f"certificate_dir: expected a directory path, got {show(raw_dir)}")
        certificate_dir = Path(raw_dir).expanduser()
    rules: list[Rule] = []
    glob = _settings(top.get("global", {}), "global")
    rules.append(Rule("global", "global", Pattern("*"), (), glob))
    for section, level in (("domains", "domain"), ("users", "user")):
        raw = top.get(section, {}) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{section}: expected a mapping of {level} -> settings, "
                              f"got {show(raw)}")
        for key, value in cast(dict[object, object], raw).items():
            where = f"{section}.{key}"
            pattern = _pattern(key, where, level=cast(Level, level))
            rules.append(Rule(where, cast(Level, level), pattern, (),
                              _settings(value, where)))
    raw_rules = top.get("rules", []) or []
    if not isinstance(raw_rules, list):
        raise ConfigError(f"rules: expected a list of rules, got {show(raw_rules)}")
    for index, item in enumerate(raw_rules):
        rules.append(_rule(item, f"rules[{index}]"))
    _check_overlaps(rules)
    tags: list[str] = []
    for rule in rules:
        for _, tag in rule.settings.subject_tags or ():
            if tag.lower() not in (t.lower() for t in tags):
                tags.append(tag)
    return Policy(rules=tuple(rules), all_tags=tuple(tags), certificate_dir=certificate_dir)


_SETTING_KEYS = {"sign", "encrypt", "ciphers", "fallback", "subject_tags",
                 "header_protection", "hide_subject", "gcm_recipients", "smime",
                 "store_encrypted"}


def _rule(raw: object, where: str) -> Rule:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with from/to and settings, "
                          f"got {show(raw)}")
    m = cast(dict[str, object], raw)
    only(m, where, _SETTING_KEYS | {"from", "to"})
    sender = _pattern(m.get("from", "*"), f"{where}.from", level=None)
    to_raw = m.get("to", [])
    if isinstance(to_raw, str):
        to_raw = [to_raw]
    if not isinstance(to_raw, list):
        raise ConfigError(f"{where}.to: expected a pattern or a list of patterns, "
                          f"got {show(to_raw)}")
    recipients = tuple(_pattern(p, f"{where}.to[{i}]", level=None)
                       for i, p in enumerate(to_raw))
    level: Level = {"any": "global", "domain": "domain", "address": "user"}[
        sender.kind]  # type: ignore[assignment]
    settings = _settings({k: v for k, v in m.items() if k not in ("from", "to")}, where)
    if not settings.items():
        raise ConfigError(f"{where}: the rule sets nothing (expected at least one of: "
                          f"{', '.join(sorted(_SETTING_KEYS))})")
    return Rule(where, level, sender, recipients, settings)


def _pattern(raw: object, where: str, *, level: Level | None) -> Pattern:
    if not isinstance(raw, str) or not raw.strip() or any(c.isspace() for c in raw.strip()):
        raise ConfigError(f"{where}: expected an address, domain or glob pattern, "
                          f"got {show(raw)}")
    text = raw.strip().lower()
    if text.startswith("@"):
        text = text[1:]
    if text.count("@") > 1 or text.endswith("@") or not text:
        raise ConfigError(f"{where}: not an address, domain or glob pattern: {show(raw)}")
    pattern = Pattern(text)
    if level == "user" and (pattern.kind != "address" or not _WILDCARDS.isdisjoint(text)):
        raise ConfigError(f"{where}: users are keyed by an exact address "
                          "(use rules: for patterns)")
    if level == "domain" and (pattern.kind != "domain" or "@" in text):
        raise ConfigError(f"{where}: domains are keyed by a domain name or domain glob")
    return pattern


def _settings(raw: object, where: str) -> Settings:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of settings, got {show(raw)}")
    m = cast(dict[str, object], raw)
    only(m, where, _SETTING_KEYS)
    s = Settings(
        sign=cast(SignMode | None, _choice(m, "sign", where, SIGN_MODES)),
        encrypt=cast(EncryptMode | None, _choice(m, "encrypt", where, ENCRYPT_MODES)),
        ciphers=_ciphers(m, where),
        fallback=cast(Fallback | None, _choice(m, "fallback", where, ("signed", "plain"))),
        subject_tags=_tags(m, where),
        header_protection=cast(HeaderProtection | None,
                               _choice(m, "header_protection", where, HEADER_PROTECTIONS)),
        hide_subject=_bool(m, "hide_subject", where),
        gcm_recipients=_patterns(m, "gcm_recipients", where),
        smime=_on_off(m, "smime", where),
        store_encrypted=_bool(m, "store_encrypted", where),
    )
    # contradictions inside one rule
    if s.smime is False and "required" in (s.sign, s.encrypt):
        raise ConfigError(f"{where}.smime: off contradicts "
                          f"{'sign' if s.sign == 'required' else 'encrypt'}: required in the "
                          "same rule")
    if s.fallback == "signed" and s.sign == "never":
        raise ConfigError(f'{where}.fallback: "signed" contradicts sign: never in the same rule')
    if s.fallback is not None and s.encrypt in ("required", "never"):
        raise ConfigError(f"{where}.fallback: only applies to encrypt: if-possible, but this "
                          f"rule says encrypt: {s.encrypt}")
    if s.hide_subject and s.encrypt == "never":
        raise ConfigError(f"{where}.hide_subject: true contradicts encrypt: never in the "
                          "same rule")
    if s.hide_subject and s.header_protection == "none":
        raise ConfigError(f"{where}.hide_subject: true needs header protection (injected or "
                          "wrapped: the real Subject must travel inside), but the rule says none")
    if s.ciphers is not None and s.encrypt == "never":
        raise ConfigError(f"{where}.ciphers: set, but the rule says encrypt: never")
    for name, _tag in s.subject_tags or ():
        if name == "sign" and s.sign == "never":
            raise ConfigError(f"{where}.subject_tags.sign: a tag asking to sign contradicts "
                              "sign: never in the same rule")
        if name == "encrypt" and s.encrypt == "never":
            raise ConfigError(f"{where}.subject_tags.encrypt: a tag asking to encrypt "
                              "contradicts encrypt: never in the same rule")
    return s


def _check_overlaps(rules: list[Rule]) -> None:
    """Two rules for exactly the same senders and recipients must not disagree."""
    seen: dict[tuple[str, tuple[str, ...]], Rule] = {}
    for rule in rules:
        key = (rule.sender.text, tuple(sorted(p.text for p in rule.recipients)))
        other = seen.get(key)
        if other is None:
            seen[key] = rule
            continue
        for name, value in rule.settings.items():
            previous = getattr(other.settings, name)
            if previous is not None and previous != value:
                raise ConfigError(
                    f"{rule.where}.{name}: {_show_setting(value)} contradicts "
                    f"{other.where}.{name} ({_show_setting(previous)}) for the same senders "
                    "and recipients"
                )
        merged = Settings(**{f.name: getattr(other.settings, f.name)
                             if getattr(other.settings, f.name) is not None
                             else getattr(rule.settings, f.name) for f in fields(Settings)})
        seen[key] = replace(other, settings=merged)


def _choice(m: Mapping[str, object], key: str, where: str,
            choices: Sequence[str]) -> str | None:
    if key not in m:
        return None
    value = m[key]
    if value is False and "never" in choices:  # YAML 1.1 reads a bare `no`/`off` as false
        value = "never"
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"{where}.{key}: expected {' | '.join(choices)}, got {show(value)}")
    return value


def _bool(m: Mapping[str, object], key: str, where: str) -> bool | None:
    if key not in m:
        return None
    value = m[key]
    return boolean(value, f"{where}.{key}")


def _on_off(m: Mapping[str, object], key: str, where: str) -> bool | None:
    """on/off (YAML 1.1 reads a bare on/off as a boolean; quoted, it is a word)."""
    if key not in m:
        return None
    value = m[key]
    if isinstance(value, str) and value.strip().lower() in ("on", "off"):
        return value.strip().lower() == "on"
    if isinstance(value, bool):
        return value
    raise ConfigError(f"{where}.{key}: expected on or off, got {show(value)}")


def _ciphers(m: Mapping[str, object], where: str) -> tuple[CipherName, ...] | None:
    if "ciphers" not in m:
        return None
    value = m["ciphers"]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}.ciphers: expected a non-empty list of "
                          f"{' | '.join(CIPHERS)}, got {show(value)}")
    out: list[CipherName] = []
    for i, item in enumerate(value):
        if item not in CIPHERS:
            raise ConfigError(f"{where}.ciphers[{i}]: expected {' | '.join(CIPHERS)}, "
                              f"got {show(item)}")
        if item in out:
            raise ConfigError(f"{where}.ciphers[{i}]: {item} is listed twice")
        out.append(cast(CipherName, item))
    return tuple(out)


def _tags(m: Mapping[str, object], where: str) -> tuple[tuple[str, str], ...] | None:
    if "subject_tags" not in m:
        return None
    value = m["subject_tags"]
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise ConfigError(f"{where}.subject_tags: expected a mapping with sign and/or "
                          f"encrypt, got {show(value)}")
    tags = cast(dict[str, object], value)
    only(tags, f"{where}.subject_tags", {"sign", "encrypt"})
    out: list[tuple[str, str]] = []
    for name in ("sign", "encrypt"):
        if name not in tags:
            continue
        tag = tags[name]
        if (not isinstance(tag, str) or not tag.strip() or not tag.isprintable()
                or tag != tag.strip()):
            raise ConfigError(f"{where}.subject_tags.{name}: expected a printable tag such as "
                              f'"[{name}]", got {show(tag)}')
        out.append((name, tag))
    if len(out) == 2 and out[0][1].lower() == out[1][1].lower():
        raise ConfigError(f"{where}.subject_tags.encrypt: the same tag as "
                          "subject_tags.sign: one tag cannot mean both")
    return tuple(out)


def _patterns(m: Mapping[str, object], key: str, where: str) -> tuple[str, ...] | None:
    if key not in m:
        return None
    value = m[key]
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ConfigError(f"{where}.{key}: expected a list of patterns, got {show(value)}")
    return tuple(_pattern(p, f"{where}.{key}[{i}]", level=None).text
                 for i, p in enumerate(value))


def _show_setting(value: object) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_show_setting(v) for v in value) + "]"
    return show(value) if not isinstance(value, str) else value
