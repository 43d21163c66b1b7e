"""The daemon's YAML configuration: load, validate, freeze.

``load_config(path)`` reads ``config/smime-proxy.yaml``-style YAML into the frozen dataclasses
below. Every problem (unknown key, wrong type, missing key, missing file, bad port, duplicate
key, YAML syntax) raises ``ConfigError`` whose message starts with the YAML path of the
offending value, e.g.::

    listeners.imap.port: expected an integer 1-65535, got "abc"

Relative paths are resolved against the directory of the config file. Files named by the
config (TLS certificates and keys, CA files, trust roots, the policy file) must exist unless
``check_files=False`` (used to validate the reference example, whose files live elsewhere).
The ``store:`` and ``sessions:`` sections are `config_stores`' (re-exported here): the
PostgreSQL DSN and the Redis URL may hold a password, and the cluster key is a secret: no repr
and no error message shows them.
``check_ports_free(config)`` is the start-time check that no listener port is already taken.
The YAML loader and the validation helpers are `yamlcheck`'s (shared with the policy file).

May import: errors, yamlcheck, config_stores, stdlib.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

# `as`: re-exported (`from smime_proxy.config import StoreConfig` under mypy --strict)
from smime_proxy.config_stores import AgentConfig as AgentConfig  # noqa: PLC0414
from smime_proxy.config_stores import SessionsConfig as SessionsConfig  # noqa: PLC0414
from smime_proxy.config_stores import StoreConfig as StoreConfig  # noqa: PLC0414
from smime_proxy.config_stores import parse_agent, parse_sessions, parse_store
from smime_proxy.errors import ConfigError
from smime_proxy.yamlcheck import (
    boolean,
    choice,
    expected,
    load_yaml,
    mapping,
    only,
    reason,
    required,
)

ListenerTlsMode = Literal["starttls", "implicit"]
UpstreamTlsMode = Literal["implicit", "starttls", "none"]
LockedFetch = Literal["unavailable", "passthrough"]
UnauthenticatedContent = Literal["withhold", "text"]
Signatures = Literal["strip", "keep"]
Revocation = Literal["off", "soft-fail", "hard-fail"]
LogFormat = Literal["text", "json"]
LogLevel = Literal["debug", "info", "warning", "error"]


# --- the configuration ------------------------------------------------------------------------


@dataclass(frozen=True)
class ListenerTls:
    """TLS of a listener: ``starttls`` (offered on the plain port) or ``implicit``."""

    mode: ListenerTlsMode
    cert: Path
    key: Path


@dataclass(frozen=True)
class ListenerConfig:
    """One port the proxy listens on. ``tls is None`` means plaintext only, which is allowed
    only with ``plaintext_loopback`` on a loopback ``host``. ``plaintext_loopback``: clients
    from a loopback address may log in without TLS."""

    host: str
    port: int
    tls: ListenerTls | None
    plaintext_loopback: bool


@dataclass(frozen=True)
class ListenersConfig:
    imap: ListenerConfig
    smtp: ListenerConfig
    control: ListenerConfig
    lmtp: ListenerConfig | None = None  # the Store Encrypted filter (README "Mail at rest")


@dataclass(frozen=True)
class UpstreamEndpoint:
    """An upstream server. ``verify``: check its certificate and host name, against
    ``ca_file`` if given, else the system CA store."""

    host: str
    port: int
    tls: UpstreamTlsMode
    verify: bool
    ca_file: Path | None


@dataclass(frozen=True)
class UpstreamConfig:
    imap: UpstreamEndpoint
    smtp: UpstreamEndpoint
    lmtp: UpstreamEndpoint | None = None  # the mail store's LMTP (plaintext, trusted network)


@dataclass(frozen=True)
class UnlockConfig:
    """Secure Mail unlock: lock after ``idle_timeout`` seconds unused, and after
    ``max_unlock`` seconds in any case."""

    idle_timeout: int = 180
    max_unlock: int = 3600
    mail_password: bool = True  # users may choose to unlock by their mail login


@dataclass(frozen=True)
class ControlConfig:
    """The Secure Mail control endpoint. ``mail_domain``: the domain of certificates issued
    to users whose login name is not an address; ``allowed_hosts``: extra Host/Origin names
    the page is served under (IP literals, localhost and the names in the listener's TLS
    certificate are always allowed); ``max_upload_bytes``: the largest request body."""

    mail_domain: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    max_upload_bytes: int = 1024 * 1024


@dataclass(frozen=True)
class UsersConfig:
    """Who a login is (``accounts.Accounts``): ``username_format`` as Dovecot's
    auth_username_format (``%u``, ``%n``, ``%d``, ``L`` to lower-case), the ``local_domains``
    whose addresses users own, and an optional static ``addresses`` map (user -> list)."""

    username_format: str = "%u"
    local_domains: tuple[str, ...] = ()
    addresses: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class ImapConfig:
    """The IMAP front: the cache of opened messages' views, in MiB per user and in all
    (0 turns it off). Decrypted views live only while the unlock they were made under."""

    view_cache_mb_per_user: int = 64
    view_cache_mb: int = 512
    seal_sent: bool = True  # APPENDs to the \Sent folder are sealed to the user (at rest)
    seal_drafts: bool = False  # and to \Drafts
    open_processes: int = 0  # worker processes opening encrypted mail (imap/open_processes.py)
    # logged-in connections per user and client address (Dovecot's mail_max_userip_connections)
    max_userip_connections: int = 10


@dataclass(frozen=True)
class LdapConfig:
    """A directory of recipients' certificates (README "LDAP"). ``url``: ``ldaps://`` or
    ``ldap://`` (then StartTLS unless ``starttls: false`` on a loopback host); the server's
    certificate is always verified, against ``ca_file`` if given, else the system store.
    ``filter``: an RFC 4515 filter with ``{address}`` (escaped when filled in). ``publish``:
    write a user's new certificate to the entry of their address (needs ``bind_dn``)."""

    url: str
    base: str
    filter: str = "(mail={address})"
    starttls: bool = True
    ca_file: Path | None = None
    bind_dn: str | None = None
    bind_password_file: Path | None = None
    cache_seconds: int = 3600
    timeout: int = 5
    publish: bool = False


@dataclass(frozen=True)
class LoggingConfig:
    format: LogFormat = "text"
    level: LogLevel = "info"


@dataclass(frozen=True)
class Config:
    """The whole configuration (``source``: the file it was read from)."""

    source: Path
    listeners: ListenersConfig
    upstream: UpstreamConfig
    data_dir: Path
    trust_roots: tuple[Path, ...]
    unlock: UnlockConfig
    locked_fetch: LockedFetch
    policy_file: Path | None
    logging: LoggingConfig
    control: ControlConfig = ControlConfig()
    unauthenticated_content: UnauthenticatedContent = "withhold"
    signatures: Signatures = "strip"  # a verified signed layer: removed, or shown too
    trust_server_ca: bool = True  # the server CA (data_dir) is a trust root when it exists
    users: UsersConfig = UsersConfig()
    imap: ImapConfig = ImapConfig()
    ldap: LdapConfig | None = None
    revocation: Revocation = "off"  # signer and recipient certificates (README "Revocation")
    store: StoreConfig = field(default_factory=StoreConfig)  # README "Running several nodes"
    sessions: SessionsConfig = field(default_factory=SessionsConfig)  # where unlocks live
    agent: AgentConfig | None = None  # a key agent process holds the unlocked keys


def control_url(control: ListenerConfig) -> str:
    """Where users reach the Secure Mail page (named in refusals that need an unlock)."""
    scheme = "https" if control.tls is not None else "http"
    host = f"[{control.host}]" if ":" in control.host else control.host
    return f"{scheme}://{host}:{control.port}/"


# --- loading ---------------------------------------------------------------------------------


def load_config(path: Path | str, *, check_files: bool = True) -> Config:
    """Read and validate the YAML config at ``path``."""
    path = Path(path)
    data = load_yaml(path, "config file")
    return parse_config(data, base_dir=path.resolve().parent, source=path,
                        check_files=check_files)


def parse_config(data: object, *, base_dir: Path, source: Path | None = None,
                 check_files: bool = True) -> Config:
    """Validate already-parsed YAML ``data`` (paths relative to ``base_dir``)."""
    r = _Reader(base_dir, check_files)
    top = r.mapping(data, "", "the configuration")
    r.only(top, "", {"listeners", "upstream", "data_dir", "trust_roots", "unlock",
                     "locked_fetch", "policy_file", "logging", "control",
                     "unauthenticated_content", "signatures", "trust_server_ca", "users",
                     "imap", "ldap", "revocation", "store", "sessions", "agent"})
    listeners = _listeners(r, r.required(top, "", "listeners"))
    upstream = _upstream(r, r.required(top, "", "upstream"))
    if (listeners.lmtp is None) != (upstream.lmtp is None):
        raise ConfigError("listeners.lmtp: the Store Encrypted filter needs both "
                          "listeners.lmtp and upstream.lmtp (the mail store's LMTP)")
    data_dir = r.path(r.required(top, "", "data_dir"), "data_dir", must_exist=False)
    if data_dir.exists() and not data_dir.is_dir():
        raise ConfigError(f"data_dir: {data_dir} exists and is not a directory")
    roots_raw = top.get("trust_roots", [])
    if not isinstance(roots_raw, list):
        raise r.type_error("trust_roots", "a list of file paths", roots_raw)
    trust_roots = tuple(r.path(v, f"trust_roots[{i}]", must_exist=True)
                        for i, v in enumerate(roots_raw))
    unlock = _unlock(r, top.get("unlock", {}))
    locked_fetch = r.choice(top.get("locked_fetch", "unavailable"), "locked_fetch",
                            ("unavailable", "passthrough"))
    unauthenticated = r.choice(top.get("unauthenticated_content", "withhold"),
                               "unauthenticated_content", ("withhold", "text"))
    signatures = r.choice(top.get("signatures", "strip"), "signatures", ("strip", "keep"))
    policy_raw = top.get("policy_file")
    policy_file = None if policy_raw is None else r.path(policy_raw, "policy_file",
                                                         must_exist=True)
    def files(value: object, where: str) -> Path:
        return r.path(value, where, must_exist=True)

    log = r.mapping(top.get("logging", {}), "logging", "a mapping")
    r.only(log, "logging", {"format", "level"})
    logging = LoggingConfig(
        format=cast(LogFormat, r.choice(log.get("format", "text"), "logging.format",
                                        ("text", "json"))),
        level=cast(LogLevel, r.choice(log.get("level", "info"), "logging.level",
                                      ("debug", "info", "warning", "error"))),
    )
    agent = None if top.get("agent") is None else parse_agent(top["agent"])
    sessions = (SessionsConfig() if top.get("sessions") is None
                else parse_sessions(top["sessions"], files))
    if agent is not None and sessions.backend == "redis":
        raise ConfigError("agent: a key agent process and sessions in Redis cannot be used "
                          "together yet (the agent keeps its unlocks in its own memory)")
    return Config(
        source=source if source is not None else base_dir / "<config>",
        listeners=listeners, upstream=upstream, data_dir=data_dir, trust_roots=trust_roots,
        unlock=unlock, locked_fetch=cast(LockedFetch, locked_fetch), policy_file=policy_file,
        logging=logging, control=_control(r, top.get("control", {})),
        unauthenticated_content=cast(UnauthenticatedContent, unauthenticated),
        signatures=cast(Signatures, signatures),
        trust_server_ca=r.boolean(top.get("trust_server_ca", True), "trust_server_ca"),
        users=_users(r, top.get("users", {})),
        imap=_imap(r, top.get("imap", {})),
        ldap=None if top.get("ldap") is None else _ldap(r, top["ldap"]),
        # YAML 1.1 reads a bare `off` as false
        revocation=cast(Revocation, r.choice(
            "off" if top.get("revocation") is False else top.get("revocation", "off"),
            "revocation", ("off", "soft-fail", "hard-fail"))),
        store=StoreConfig() if top.get("store") is None else parse_store(top["store"], files),
        sessions=sessions, agent=agent,
    )


def check_ports_free(config: Config) -> None:
    """Raise ``ConfigError`` naming the first listener whose address is already in use."""
    for name in ("imap", "smtp", "control"):
        listener: ListenerConfig = getattr(config.listeners, name)
        family = socket.AF_INET6 if ":" in listener.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((listener.host, listener.port))
            except OSError as e:
                raise ConfigError(
                    f"listeners.{name}.port: cannot listen on {listener.host} port "
                    f"{listener.port}: {reason(e)}"
                ) from None


# --- sections --------------------------------------------------------------------------------


def _listeners(r: _Reader, raw: object) -> ListenersConfig:
    m = r.mapping(raw, "listeners", "a mapping with imap, smtp and control")
    r.only(m, "listeners", {"imap", "smtp", "control", "lmtp"})
    built = {name: _listener(r, r.required(m, "listeners", name), f"listeners.{name}",
                             control=name == "control")
             for name in ("imap", "smtp", "control")}
    if m.get("lmtp") is not None:
        lmtp = _listener(r, m["lmtp"], "listeners.lmtp", control=False)
        if lmtp.tls is not None or not _is_loopback(lmtp.host):
            # LMTP has no authentication: whoever reaches it delivers into mailboxes
            raise ConfigError("listeners.lmtp: LMTP is unauthenticated: listen on a loopback "
                              "host with plaintext_loopback: true and no tls")
        built["lmtp"] = lmtp
    seen: dict[tuple[str, int], str] = {}
    for name, lst in built.items():
        other = seen.get((lst.host, lst.port))
        if other is not None:
            raise ConfigError(f"listeners.{name}.port: {lst.port} is already used by "
                              f"listeners.{other}")
        seen[(lst.host, lst.port)] = name
    return ListenersConfig(**built)


def _listener(r: _Reader, raw: object, where: str, *, control: bool) -> ListenerConfig:
    m = r.mapping(raw, where, "a mapping")
    r.only(m, where, {"host", "port", "tls", "plaintext_loopback"})
    host = r.host(m.get("host", "127.0.0.1"), f"{where}.host", ip_only=True)
    port = r.port(r.required(m, where, "port"), f"{where}.port")
    plaintext_loopback = r.boolean(m.get("plaintext_loopback", False),
                                   f"{where}.plaintext_loopback")
    tls: ListenerTls | None = None
    if m.get("tls") is not None:
        t = r.mapping(m["tls"], f"{where}.tls", "a mapping with mode, cert and key")
        r.only(t, f"{where}.tls", {"mode", "cert", "key"})
        modes = ("implicit",) if control else ("starttls", "implicit")
        mode = r.choice(t.get("mode", modes[0]), f"{where}.tls.mode", modes)
        tls = ListenerTls(
            mode=cast(ListenerTlsMode, mode),
            cert=r.path(r.required(t, f"{where}.tls", "cert"), f"{where}.tls.cert",
                        must_exist=True),
            key=r.path(r.required(t, f"{where}.tls", "key"), f"{where}.tls.key",
                       must_exist=True),
        )
    elif not plaintext_loopback:
        raise ConfigError(f"{where}.tls: missing (a listener without TLS needs "
                          "plaintext_loopback: true)")
    if plaintext_loopback and not _is_loopback(host) and tls is None:
        raise ConfigError(f"{where}.host: {host} is not a loopback address; without tls "
                          "only a loopback address may be used")
    return ListenerConfig(host=host, port=port, tls=tls, plaintext_loopback=plaintext_loopback)


def _upstream(r: _Reader, raw: object) -> UpstreamConfig:
    m = r.mapping(raw, "upstream", "a mapping with imap and smtp")
    r.only(m, "upstream", {"imap", "smtp", "lmtp"})
    built = {}
    for name in ("imap", "smtp", "lmtp"):
        if name == "lmtp" and m.get("lmtp") is None:
            continue
        where = f"upstream.{name}"
        e = r.mapping(r.required(m, "upstream", name), where, "a mapping")
        r.only(e, where, {"host", "port", "tls", "verify", "ca_file"})
        host = r.host(r.required(e, where, "host"), f"{where}.host", ip_only=False)
        tls = r.choice(e.get("tls", "none" if name == "lmtp" else "starttls"), f"{where}.tls",
                       ("none",) if name == "lmtp" else ("implicit", "starttls", "none"))
        # (LMTP carries no password; it goes to the store as the MTA's LMTP did before)
        if tls == "none" and not _is_loopback(host) and name != "lmtp":
            raise ConfigError(f"{where}.tls: none would send users' passwords in clear to "
                              f"{host}; only allowed for a loopback host")
        ca_raw = e.get("ca_file")
        built[name] = UpstreamEndpoint(
            host=host,
            port=r.port(r.required(e, where, "port"), f"{where}.port"),
            tls=cast(UpstreamTlsMode, tls),
            verify=r.boolean(e.get("verify", True), f"{where}.verify"),
            ca_file=None if ca_raw is None else r.path(ca_raw, f"{where}.ca_file",
                                                       must_exist=True),
        )
    return UpstreamConfig(**built)


def _control(r: _Reader, raw: object) -> ControlConfig:
    m = r.mapping(raw, "control", "a mapping")
    r.only(m, "control", {"mail_domain", "allowed_hosts", "max_upload_bytes"})
    domain = m.get("mail_domain")
    if domain is not None:
        domain = r.host(domain, "control.mail_domain", ip_only=False).lower()
    hosts_raw = m.get("allowed_hosts", [])
    if not isinstance(hosts_raw, list):
        raise r.type_error("control.allowed_hosts", "a list of host names", hosts_raw)
    hosts = tuple(
        r.host(h, f"control.allowed_hosts[{i}]", ip_only=False).lower()
        for i, h in enumerate(hosts_raw)
    )
    size = m.get("max_upload_bytes", ControlConfig.max_upload_bytes)
    if isinstance(size, bool) or not isinstance(size, int) or not 1024 <= size <= 1 << 30:
        raise r.type_error("control.max_upload_bytes", "an integer 1024-1073741824", size)
    return ControlConfig(mail_domain=domain, allowed_hosts=hosts,
                         max_upload_bytes=size)


def _users(r: _Reader, raw: object) -> UsersConfig:
    m = r.mapping(raw, "users", "a mapping")
    r.only(m, "users", {"username_format", "local_domains", "addresses"})
    fmt = m.get("username_format", "%u")
    if not isinstance(fmt, str) or not fmt or re.search(r"%(?!L?[und%])", fmt):
        raise r.type_error("users.username_format", "a format of %u, %n, %d (L to lower-case)",
                           fmt)
    domains_raw = m.get("local_domains", [])
    if not isinstance(domains_raw, list):
        raise r.type_error("users.local_domains", "a list of domains", domains_raw)
    domains = tuple(r.host(d, f"users.local_domains[{i}]", ip_only=False).lower()
                    for i, d in enumerate(domains_raw))
    map_raw = r.mapping(m.get("addresses", {}), "users.addresses", "a mapping")
    addresses: list[tuple[str, tuple[str, ...]]] = []
    for user, values in map_raw.items():
        where = f"users.addresses.{user}"
        if not isinstance(values, list) or not all(
                isinstance(v, str) and re.fullmatch(r"[^@\s]+@[^@\s]+", v) for v in values):
            raise r.type_error(where, "a list of e-mail addresses", values)
        addresses.append((str(user), tuple(v.lower() for v in values)))
    return UsersConfig(str(fmt), domains, tuple(addresses))


def _imap(r: _Reader, raw: object) -> ImapConfig:
    m = r.mapping(raw, "imap", "a mapping")
    r.only(m, "imap", {"view_cache_mb_per_user", "view_cache_mb", "seal_sent", "seal_drafts",
                       "open_processes", "max_userip_connections"})
    sizes = []
    for name, default in (("view_cache_mb_per_user", ImapConfig.view_cache_mb_per_user),
                          ("view_cache_mb", ImapConfig.view_cache_mb)):
        value = m.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65536:
            raise r.type_error(f"imap.{name}", "a whole number of MiB 0-65536", value)
        sizes.append(value)
    processes = m.get("open_processes", ImapConfig.open_processes)
    if isinstance(processes, bool) or not isinstance(processes, int) or not 0 <= processes <= 64:
        raise r.type_error("imap.open_processes", "a whole number 0-64", processes)
    per_user_ip = m.get("max_userip_connections", ImapConfig.max_userip_connections)
    if (isinstance(per_user_ip, bool) or not isinstance(per_user_ip, int)
            or not 1 <= per_user_ip <= 100000):
        raise r.type_error("imap.max_userip_connections", "a whole number 1-100000",
                           per_user_ip)
    return ImapConfig(view_cache_mb_per_user=sizes[0], view_cache_mb=sizes[1],
                      seal_sent=r.boolean(m.get("seal_sent", True), "imap.seal_sent"),
                      seal_drafts=r.boolean(m.get("seal_drafts", False), "imap.seal_drafts"),
                      open_processes=processes, max_userip_connections=per_user_ip)


def _ldap(r: _Reader, raw: object) -> LdapConfig:
    m = r.mapping(raw, "ldap", "a mapping with url and base")
    r.only(m, "ldap", {"url", "base", "filter", "starttls", "ca_file", "bind_dn",
                       "bind_password_file", "cache_seconds", "timeout", "publish"})
    url = r.required(m, "ldap", "url")
    match = re.fullmatch(r"(ldaps?)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?/?",
                         url) if isinstance(url, str) else None
    if match is None or (match[3] is not None and not 1 <= int(match[3]) <= 65535):
        raise r.type_error("ldap.url", "ldap://host[:port] or ldaps://host[:port]", url)
    starttls = r.boolean(m.get("starttls", True), "ldap.starttls")
    if match[1] == "ldap" and not starttls and not _is_loopback(match[2].strip("[]")):
        raise ConfigError("ldap.starttls: false would send the directory's traffic in clear "
                          f"to {match[2]}; only allowed for a loopback host")
    texts = {}
    for name in ("base", "filter", "bind_dn"):
        value = m.get(name, "(mail={address})" if name == "filter" else None)
        if value is None and name == "base":
            value = r.required(m, "ldap", "base")
        if value is not None and (not isinstance(value, str) or not value.strip()
                                  or any(c in value for c in "\r\n\0")):
            raise r.type_error(f"ldap.{name}", "a single line of text", value)
        texts[name] = value
    search = texts["filter"]
    assert isinstance(search, str)
    if ("{address}" not in search or not search.startswith("(")
            or not search.endswith(")") or search.count("(") != search.count(")")):
        raise r.type_error("ldap.filter", "an LDAP filter in parentheses with {address}",
                           search)
    password_raw = m.get("bind_password_file")
    ca_raw = m.get("ca_file")
    publish = r.boolean(m.get("publish", False), "ldap.publish")
    if publish and texts["bind_dn"] is None:
        raise ConfigError("ldap.publish: needs ldap.bind_dn (and bind_password_file) to "
                          "write to the directory")
    numbers = []
    for name, default, top in (("cache_seconds", LdapConfig.cache_seconds, 86400),
                               ("timeout", LdapConfig.timeout, 120)):
        value = m.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
            raise r.type_error(f"ldap.{name}", f"a whole number of seconds 0-{top}", value)
        numbers.append(value)
    return LdapConfig(
        url=f"{match[1]}://{match[2]}" + (f":{match[3]}" if match[3] else ""),
        base=str(texts["base"]), filter=search, starttls=starttls and match[1] == "ldap",
        ca_file=None if ca_raw is None else r.path(ca_raw, "ldap.ca_file", must_exist=True),
        bind_dn=texts["bind_dn"],
        bind_password_file=None if password_raw is None else r.path(
            password_raw, "ldap.bind_password_file", must_exist=True),
        cache_seconds=numbers[0], timeout=max(numbers[1], 1), publish=publish)


def _unlock(r: _Reader, raw: object) -> UnlockConfig:
    m = r.mapping(raw, "unlock", "a mapping")
    r.only(m, "unlock", {"idle_timeout", "max_unlock", "mail_password"})
    idle = r.seconds(m.get("idle_timeout", UnlockConfig.idle_timeout), "unlock.idle_timeout")
    maximum = r.seconds(m.get("max_unlock", max(idle, UnlockConfig.max_unlock)),
                        "unlock.max_unlock")
    if maximum < idle:
        raise ConfigError(f"unlock.max_unlock: {maximum} is less than unlock.idle_timeout "
                          f"({idle})")
    mail = r.choice(m.get("mail_password", "allowed"), "unlock.mail_password",
                    ("allowed", "forbidden"))
    return UnlockConfig(idle_timeout=idle, max_unlock=maximum,
                        mail_password=mail == "allowed")


# --- validation helpers ----------------------------------------------------------------------


class _Reader:
    def __init__(self, base_dir: Path, check_files: bool) -> None:
        self.base_dir = base_dir
        self.check_files = check_files

    type_error = staticmethod(expected)
    mapping = staticmethod(mapping)
    only = staticmethod(only)
    required = staticmethod(required)
    boolean = staticmethod(boolean)
    choice = staticmethod(choice)

    def port(self, value: object, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            raise self.type_error(where, "an integer 1-65535", value)
        return value

    def seconds(self, value: object, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.type_error(where, "a whole number of seconds >= 1", value)
        return value

    def host(self, value: object, where: str, *, ip_only: bool) -> str:
        if not isinstance(value, str) or not value or any(c.isspace() for c in value):
            raise self.type_error(where, "a host name or IP address", value)
        if ip_only:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise self.type_error(where, "an IP address to listen on", value) from None
        return value

    def path(self, value: object, where: str, *, must_exist: bool) -> Path:
        if not isinstance(value, str) or not value:
            raise self.type_error(where, "a file path", value)
        path = Path(value).expanduser()
        if not path.is_absolute():
            path = self.base_dir / path
        if must_exist and self.check_files:
            if not path.exists():
                raise ConfigError(f"{where}: file not found: {path}")
            if not path.is_file():
                raise ConfigError(f"{where}: not a regular file: {path}")
        return path


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
