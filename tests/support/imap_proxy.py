"""Helpers for IMAP proxy tests: a `DaemonServices` with in-memory key stores, the IMAP front on a
free 127.0.0.1 port in a loop thread (blocking clients such as imaplib talk to it from the
test), and the S/MIME messages the tests deliver."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from smime_proxy.app import DaemonServices
from smime_proxy.at_rest.operations import FolderOperations
from smime_proxy.config import (
    Config,
    ListenerConfig,
    ListenersConfig,
    ListenerTls,
    LockedFetch,
    LoggingConfig,
    UnlockConfig,
    UpstreamConfig,
    UpstreamEndpoint,
    UsersConfig,
)
from smime_proxy.harness import Upstream
from smime_proxy.imap.server import ImapFront, ImapSettings
from smime_proxy.smime import Recipient, encrypt_message, sign_message
from support import pki
from support.smtp_proxy import KeyWorld, LoopThread, people

__all__ = ["LoopThread", "encrypted_signed", "imap_services", "running_front", "upstream_imap"]


def upstream_imap(upstream: Upstream, tls: str = "starttls") -> UpstreamEndpoint:
    """The real Dovecot as the proxy's upstream: STARTTLS on the IMAP port, implicit TLS on
    the IMAPS port, or none; certificates verified against the harness CA."""
    port = upstream.imaps_port if tls == "implicit" else upstream.imap_port
    return UpstreamEndpoint(host="127.0.0.1", port=port, tls=tls,  # type: ignore[arg-type]
                            verify=tls != "none", ca_file=upstream.ca_file)


def imap_listener(tls: tuple[Path, Path, str] | None = None) -> ListenerConfig:
    return ListenerConfig(
        host="127.0.0.1", port=0,
        tls=None if tls is None else ListenerTls(mode=tls[2], cert=tls[0], key=tls[1]),  # type: ignore[arg-type]
        plaintext_loopback=tls is None,
    )


def imap_services(tmp_path: Path, world: KeyWorld, upstream: UpstreamEndpoint, *,
                  listener: ListenerConfig | None = None,
                  locked_fetch: LockedFetch = "unavailable",
                  users: UsersConfig | None = None) -> DaemonServices:
    other = ListenerConfig(host="127.0.0.1", port=1, tls=None, plaintext_loopback=True)
    config = Config(
        source=tmp_path / "smime-proxy.yaml",
        listeners=ListenersConfig(imap=listener or imap_listener(), smtp=other, control=other),
        upstream=UpstreamConfig(imap=upstream, smtp=upstream),
        data_dir=tmp_path,
        trust_roots=(),
        unlock=UnlockConfig(),
        locked_fetch=locked_fetch,
        policy_file=None,
        logging=LoggingConfig(),
        users=users if users is not None else UsersConfig(),
    )
    return DaemonServices(config=config, secure_mail=world.secure_mail, contacts=world.contacts,
                    trust_roots=(people().ca.cert,), ca=None, now=lambda: world.now)


@contextmanager
def running_front(loop: LoopThread, services: DaemonServices,
                  settings: ImapSettings | None = None,
                  folder_operations: FolderOperations | None = None) -> Iterator[ImapFront]:
    front = ImapFront(services, settings=settings or ImapSettings(),
                      folder_operations=folder_operations)
    loop.run(front.start())
    try:
        yield front
    finally:
        loop.run(front.stop(1.0))
        if folder_operations is not None:
            loop.run(folder_operations.close())


def encrypted_signed(message: bytes, signer: pki.Identity, recipient: pki.Identity, *,
                     gcm: bool = True) -> bytes:
    """`message` signed (multipart/signed) by `signer`, then encrypted to `recipient`."""
    from smime_proxy.crypto.keyagent import InProcessKeyAgent

    agent = InProcessKeyAgent(signer.key, signer.cert, tuple(signer.chain))
    signed = sign_message(message, agent, now=pki.NOW)
    return encrypt_message(signed, [Recipient(recipient.cert, supports_gcm=gcm)])
