"""The smallest valid smime-proxy config, for tests of one config section."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from smime_proxy.config import Config, parse_config


def minimal_config(tmp_path: Path, **sections: object) -> Config:
    """Loopback listeners without TLS, plaintext upstreams, data_dir `data`, and the given
    top-level sections (a section given as None is left out)."""
    listener = {"host": "127.0.0.1", "plaintext_loopback": True}
    upstream = {"host": "127.0.0.1", "tls": "none"}
    data: dict[str, Any] = {
        "listeners": {name: {**listener, "port": port} for name, port in
                      (("imap", 11143), ("smtp", 11587), ("control", 18443))},
        "upstream": {"imap": {**upstream, "port": 143}, "smtp": {**upstream, "port": 587}},
        "data_dir": "data",
    }
    data.update({name: value for name, value in sections.items() if value is not None})
    return parse_config(data, base_dir=tmp_path)
