"""The config's `imap:` section: the view cache's sizes, sealing Sent and Drafts, the
worker processes that open encrypted mail and the connections per user and address;
mistakes are one ConfigError naming the path."""

from __future__ import annotations

from pathlib import Path

import pytest

from smime_proxy.config import ImapConfig
from smime_proxy.errors import ConfigError
from support.configs import minimal_config


def test_defaults_and_worker_processes(tmp_path: Path) -> None:
    assert minimal_config(tmp_path).imap == ImapConfig()
    assert ImapConfig().open_processes == 0  # threads, unless the admin asks
    assert minimal_config(tmp_path, imap={"open_processes": 4}).imap.open_processes == 4
    assert ImapConfig().max_userip_connections == 10  # as Dovecot's stock limit
    assert minimal_config(tmp_path, imap={"max_userip_connections": 50}
                          ).imap.max_userip_connections == 50


@pytest.mark.parametrize(("imap", "words"), [
    ({"open_processes": -1}, "imap.open_processes: expected a whole number 0-64"),
    ({"open_processes": True}, "imap.open_processes: expected a whole number 0-64"),
    ({"open_processes": "2"}, "imap.open_processes: expected a whole number 0-64"),
    ({"view_cache_mb": 1.5}, "imap.view_cache_mb: expected a whole number of MiB"),
    ({"max_userip_connections": 0}, "imap.max_userip_connections: expected a whole number 1-"),
    ({"max_userip_connections": "10"}, "imap.max_userip_connections: expected a whole number"),
    ({"processes": 2}, "imap"),
])
def test_mistakes_name_the_yaml_path(tmp_path: Path, imap: object, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        minimal_config(tmp_path, imap=imap)
