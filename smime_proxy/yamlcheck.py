"""Loading and validating YAML files (the config and the policy share these): every problem
is a `ConfigError` whose message starts with the YAML path of the offending value, e.g.
`listeners.imap.port: expected an integer 1-65535, got "x"`.

May import: errors, yaml, stdlib.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import cast

import yaml

from smime_proxy.errors import ConfigError


def load_yaml(path: Path, what: str) -> object:
    """Safe-load a YAML file; a missing file, a syntax error (with line and column) or a
    duplicate key (PyYAML silently keeps the last) is a ConfigError naming the place."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read {what}: {reason(e)}") from None
    try:
        _check_duplicate_keys(yaml.compose(text, Loader=yaml.SafeLoader))
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        raise ConfigError(_yaml_error(path, e)) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None


def show(value: object) -> str:
    """A value as an error message may show it (strings quoted and cut, containers named)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null (empty)"
    if isinstance(value, str):
        shown = json.dumps(value, ensure_ascii=False)
        return shown if len(shown) <= 60 else shown[:57] + '..."'
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def expected(where: str, what: str, value: object) -> ConfigError:
    return ConfigError(f"{where}: expected {what}, got {show(value)}")


def mapping(value: object, where: str, what: str) -> Mapping[str, object]:
    if not isinstance(value, dict):
        if where == "":
            raise ConfigError(f"(top level): expected {what} (a YAML mapping), "
                              f"got {show(value)}")
        raise expected(where, what, value)
    return cast(dict[str, object], value)


def only(m: Mapping[str, object], where: str, allowed: set[str]) -> None:
    """Refuse a key that is not in `allowed` (a typo must not be ignored silently)."""
    for key in m:
        if key not in allowed:
            name = f"{where}.{key}" if where else str(key)
            raise ConfigError(f"{name}: unknown key (expected one of: "
                              f"{', '.join(sorted(allowed))})")


def required(m: Mapping[str, object], where: str, key: str) -> object:
    if key not in m or m[key] is None:
        raise ConfigError(f"{where + '.' if where else ''}{key}: missing (required)")
    return m[key]


def boolean(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise expected(where, "true or false", value)
    return value


def choice(value: object, where: str, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise expected(where, " | ".join(choices), value)
    return value


def reason(e: BaseException) -> str:
    return e.strerror if isinstance(e, OSError) and e.strerror else str(e)


def _yaml_error(path: Path, e: yaml.MarkedYAMLError) -> str:
    mark = e.problem_mark
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    return f"{where}: YAML syntax error: {e.problem or e.context or 'cannot parse'}"


def _check_duplicate_keys(node: yaml.Node | None, where: str = "") -> None:
    """PyYAML silently keeps the last of two equal keys: refuse them, naming the path."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            name = f"{where}.{key}" if where else key
            if key in seen:
                raise ConfigError(f"{name}: duplicate key (line {key_node.start_mark.line + 1})")
            seen.add(key)
            _check_duplicate_keys(value_node, name)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicate_keys(item, f"{where}[{i}]")
