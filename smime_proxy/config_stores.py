"""The configuration's sections on where keys live (README "Running several nodes"):
``store:`` (the key store's engine: SQLite or PostgreSQL), ``sessions:`` (where unlocks
live: this process or Redis, with the cluster key) and ``agent:`` (a key agent process that
holds the unlocked keys). `config` validates them through `parse_store`, `parse_sessions`
and `parse_agent` and re-exports the classes. The DSN, the Redis URL (either may hold a
password) and the cluster key are never shown by a repr or an error message.

May import: errors, yamlcheck, stdlib.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from smime_proxy.errors import ConfigError
from smime_proxy.yamlcheck import choice, expected, mapping, only, reason

StoreBackend = Literal["sqlite", "postgresql"]
SessionsBackend = Literal["memory", "redis"]
CLUSTER_KEY_BYTES = 32
PathReader = Callable[[object, str], Path]  # (YAML value, its place) -> a file that exists


@dataclass(frozen=True)
class StoreConfig:
    """Where keys, address books and settings live (README "Running several nodes"):
    ``sqlite`` (default: a file in data_dir) or ``postgresql``, shared by several proxy nodes,
    reached by ``dsn`` (a libpq connection string, ``host=... dbname=...``, or a
    ``postgresql://`` URI) or by ``dsn_file``, a file holding that string, so that the
    password need not sit in the YAML (libpq's ``PGPASSFILE``/``~/.pgpass`` works too). The
    DSN is never shown by repr."""

    backend: StoreBackend = "sqlite"
    dsn: str | None = field(default=None, repr=False)
    dsn_file: Path | None = None

    def read_dsn(self) -> str:
        """The connection string: ``dsn``, or the content of ``dsn_file`` (read now, at each
        open; surrounding white space and line ends dropped)."""
        if self.dsn is not None:
            return self.dsn
        if self.dsn_file is None:
            raise ConfigError("store.dsn: missing (backend postgresql needs dsn or dsn_file)")
        try:
            text = self.dsn_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"store.dsn_file: cannot read {self.dsn_file}: "
                              f"{reason(e) if isinstance(e, OSError) else 'not UTF-8'}"
                              ) from None
        if not _looks_like_dsn(text):
            raise ConfigError(f"store.dsn_file: {self.dsn_file} does not hold a PostgreSQL "
                              "connection string on one line (content not shown)")
        return text


@dataclass(frozen=True)
class SessionsConfig:
    """Where unlocks live (README "Running several nodes"): ``memory`` (default: this
    process) or ``redis``, shared by every node, at ``url`` (``redis://[:password@]host
    [:port][/db]``, ``rediss://`` for TLS, ``unix:///path``). The unlocked key goes there
    sealed under the cluster key: 32 random bytes in base64, from ``cluster_key_file`` (mode
    0600 or 0640: not readable by others) or from the environment variable named by
    ``cluster_key_env``; the same on every node, never sent to Redis. The URL is never shown
    by repr."""

    backend: SessionsBackend = "memory"
    url: str | None = field(default=None, repr=False)
    cluster_key_file: Path | None = None
    cluster_key_env: str | None = None

    def read_cluster_key(self) -> bytes:
        """The cluster key's 32 bytes, read now (at each open); ConfigError, never showing
        the content, if it is missing, exposed or not 32 bytes in base64."""
        if self.cluster_key_env is not None:
            where = f"sessions.cluster_key_env: the environment variable {self.cluster_key_env}"
            text = os.environ.get(self.cluster_key_env)
            if text is None:
                raise ConfigError(f"{where} is not set")
        elif self.cluster_key_file is not None:
            where = f"sessions.cluster_key_file: {self.cluster_key_file}"
            try:
                mode = self.cluster_key_file.stat().st_mode
                if mode & 0o027:
                    raise ConfigError(f"{where} may be read or written by others (mode "
                                      f"{mode & 0o777:04o}): chmod 600 it")
                text = self.cluster_key_file.read_text(encoding="ascii")
            except (OSError, UnicodeDecodeError) as e:
                raise ConfigError(f"{where}: cannot read it: "
                                  f"{reason(e) if isinstance(e, OSError) else 'not base64'}"
                                  ) from None
        else:
            raise ConfigError("sessions.cluster_key_file: missing (backend redis needs "
                              "cluster_key_file or cluster_key_env)")
        try:
            secret = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            secret = b""
        if len(secret) != CLUSTER_KEY_BYTES:
            raise ConfigError(f"{where} does not hold {CLUSTER_KEY_BYTES} bytes in base64 "
                              "(content not shown; make one with "
                              "`head -c 32 /dev/urandom | base64`)")
        return secret


@dataclass(frozen=True)
class AgentConfig:
    """A key agent process holds the unlocked keys (docs/key-agent.md): it listens on
    ``socket`` (a Unix socket path); ``start: true`` (default) has the daemon start it as a
    child (and start it again if it dies), ``false`` expects one started otherwise (e.g.
    under another user: ``smime-proxy agent --socket PATH --allow-uid UID``)."""

    socket: Path
    start: bool = True


def parse_agent(raw: object) -> AgentConfig:
    """The `agent:` section."""
    m = mapping(raw, "agent", "a mapping with socket (a Unix socket path)")
    only(m, "agent", {"socket", "start"})
    where = m.get("socket")
    if not isinstance(where, str) or not where.startswith("/") or len(where) > 100:
        raise expected("agent.socket", "an absolute path of at most 100 characters", where)
    start = m.get("start", True)
    if not isinstance(start, bool):
        raise expected("agent.start", "true or false", start)
    return AgentConfig(Path(where), start)


def parse_store(raw: object, path: PathReader) -> StoreConfig:
    """The `store:` section (`path(value, where)`: a file that must exist)."""
    m = mapping(raw, "store", "a mapping with backend (sqlite or postgresql)")
    only(m, "store", {"backend", "dsn", "dsn_file"})
    backend = choice(m.get("backend", "sqlite"), "store.backend", ("sqlite", "postgresql"))
    dsn, dsn_file = m.get("dsn"), m.get("dsn_file")
    if backend == "sqlite":
        for name, value in (("dsn", dsn), ("dsn_file", dsn_file)):
            if value is not None:
                raise ConfigError(f"store.{name}: only for backend postgresql (sqlite keeps "
                                  "its file in data_dir)")
        return StoreConfig()
    if dsn is None and dsn_file is None:
        raise ConfigError("store.dsn: missing (backend postgresql needs dsn or dsn_file)")
    if dsn is not None and dsn_file is not None:
        raise ConfigError("store.dsn_file: give dsn or dsn_file, not both")
    if dsn_file is not None:
        return StoreConfig("postgresql", dsn_file=path(dsn_file, "store.dsn_file"))
    # the value is never echoed: it may hold the database password
    if not isinstance(dsn, str) or not _looks_like_dsn(dsn.strip()):
        raise ConfigError("store.dsn: expected a PostgreSQL connection string on one line "
                          "(host=... dbname=... or postgresql://...; value not shown)")
    return StoreConfig("postgresql", dsn=dsn.strip())


def parse_sessions(raw: object, path: PathReader) -> SessionsConfig:
    """The `sessions:` section (`path(value, where)`: a file that must exist)."""
    m = mapping(raw, "sessions", "a mapping with backend (memory or redis)")
    only(m, "sessions", {"backend", "url", "cluster_key_file", "cluster_key_env"})
    backend = choice(m.get("backend", "memory"), "sessions.backend", ("memory", "redis"))
    url, key_file, key_env = m.get("url"), m.get("cluster_key_file"), m.get("cluster_key_env")
    if backend == "memory":
        for name, value in (("url", url), ("cluster_key_file", key_file),
                            ("cluster_key_env", key_env)):
            if value is not None:
                raise ConfigError(f"sessions.{name}: only for backend redis (memory keeps "
                                  "unlocks in this process)")
        return SessionsConfig()
    # the value is never echoed: it may hold the Redis password
    if url is None:
        raise ConfigError("sessions.url: missing (backend redis needs "
                          "url: redis://host:port/db)")
    if (not isinstance(url, str) or any(c in url for c in "\r\n\0 ")
            or not re.match(r"(rediss?://[^/?#]+|unix:///[^?#]+)", url)):
        raise ConfigError("sessions.url: expected redis://host[:port][/db], rediss://... or "
                          "unix:///path (value not shown)")
    if (key_file is None) == (key_env is None):
        raise ConfigError("sessions.cluster_key_file: give cluster_key_file or "
                          "cluster_key_env (one of them)")
    if key_env is not None and (not isinstance(key_env, str)
                                or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key_env)):
        raise expected("sessions.cluster_key_env", "an environment variable name", key_env)
    return SessionsConfig(
        "redis", url=url,
        cluster_key_file=None if key_file is None else path(
            key_file, "sessions.cluster_key_file"),
        cluster_key_env=key_env)


def _looks_like_dsn(text: str) -> bool:
    """libpq's key=value form or its URI form, one line (libpq parses it at open)."""
    if not text or any(c in text for c in "\r\n\0"):
        return False
    return text.startswith(("postgresql://", "postgres://")) or "=" in text
