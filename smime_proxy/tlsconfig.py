"""TLS contexts made from the configuration, and the loopback test the listeners share.

Used by the I/O shells (control, SMTP, IMAP). May import: config, errors, stdlib.
"""

from __future__ import annotations

import functools
import ipaddress
import ssl

from smime_proxy.config import ListenerConfig, UpstreamEndpoint
from smime_proxy.errors import ConfigError


@functools.lru_cache(maxsize=16)
def upstream_context(endpoint: UpstreamEndpoint) -> ssl.SSLContext:
    """Client context for an upstream: verifying (against `ca_file`, else the system store)
    unless the admin wrote `verify: false`. One per endpoint, shared by every connection:
    a context holds the CA store (the system's is hundreds of KiB) and the TLS session
    cache."""
    if not endpoint.verify:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    cafile = str(endpoint.ca_file) if endpoint.ca_file is not None else None
    return ssl.create_default_context(cafile=cafile)


def listener_context(listener: ListenerConfig, name: str) -> ssl.SSLContext | None:
    """Server context of a listener with TLS (None without); a bad certificate or key is a
    ConfigError naming `listeners.<name>.tls`."""
    if listener.tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(str(listener.tls.cert), str(listener.tls.key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"listeners.{name}.tls: cannot load the certificate or key: {exc}"
        ) from None
    return context


def is_loopback_peer(peer: object) -> bool:
    """Whether a transport's `peername` is a loopback address."""
    if not isinstance(peer, tuple) or not peer:
        return False
    try:
        return ipaddress.ip_address(str(peer[0])).is_loopback
    except ValueError:
        return False
