"""What the IMAP front does in its worker threads, away from the event loop: open one stored
message for a client (`open_for_client`: decrypt, verify, the status line; never raises) and
seal a client's Sent or Drafts copy to the user's own certificate (`seal_for_user`); and
what a worker process does for it (`open_in_child`, `imap.open_processes`).

May import: config, errors, services, smime, smime_forms, display, crypto, keystore, mime,
revocation, imap.events, imap.fetch_rewrite, imap.open_processes, imap.views, cryptography,
stdlib.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from smime_proxy.crypto.enveloped import ContentKey
from smime_proxy.crypto.keyagent import KeyAgent
from smime_proxy.crypto.signer_info import load_certificate
from smime_proxy.display import open_message
from smime_proxy.errors import (
    DecryptionFailed,
    InputError,
    KeyLocked,
    NoSuchKey,
    SmimeProxyError,
    UnsupportedAlgorithm,
)
from smime_proxy.imap import fetch_rewrite
from smime_proxy.imap.events import MessageOpened
from smime_proxy.imap.open_processes import ChildOpened, ChildSettings, OpenProcesses
from smime_proxy.imap.views import MessageView
from smime_proxy.keystore.certs import certificate_addresses
from smime_proxy.mime.entity import STATUS_HEADER, parse_entity, without_field
from smime_proxy.revocation import check_chain
from smime_proxy.services import Services
from smime_proxy.smime import SignerReport, message_content_key, seal_stored_copy
from smime_proxy.smime_forms import is_encrypted

log = logging.getLogger("smime_proxy.imap")


def without_status(message: bytes) -> bytes:
    """The message without any top-level X-SMIME-Status field (for bytes shown as stored;
    DESIGN decision 5: only the proxy writes this field)."""
    return without_field(message, STATUS_HEADER)


def open_for_client(services: Services, user: str, raw: bytes, request_id: int,
                    processes: OpenProcesses | None = None) -> MessageOpened:
    """Blocking: what the client is shown for one stored message (runs in a worker thread).

    Never raises: a message that breaks a limit or an assumption anywhere on the way is shown
    as stored (incoming status fields removed, never a verified claim), so one hostile
    message cannot end the session that fetches it."""
    started = time.perf_counter()
    try:
        result = _with_view(_open(services, user, raw, request_id, processes))
    except Exception as exc:
        log.warning("message shown as stored after an unexpected error",
                    extra={"user": user, "command": "FETCH", "reason": type(exc).__name__})
        try:
            encrypted = is_encrypted(raw)
        except Exception:  # a message the parsers refuse is not an encryption we could open
            encrypted = False
        result = as_stored(raw, request_id, "internal", encrypted=encrypted)
    metrics = services.metrics
    metrics.open_seconds.observe(time.perf_counter() - started)
    metrics.opened.labels(_outcome_word(result)).inc()
    return result


def _with_view(result: MessageOpened) -> MessageOpened:
    """An opened message with the view the session answers from, made here: parsing the
    shown message and rendering the structures a client's resync asks for (BODYSTRUCTURE,
    ENVELOPE) cost more than the answer itself. A plain message is answered by the
    upstream, and a view that fails is left to the session (it tells the client)."""
    if result.outcome != "opened" or result.plain or result.view is not None:
        return result
    try:
        view = MessageView(result.content)
        fetch_rewrite.prerender(view)
    except Exception:  # the session tries again, and says what failed
        return result
    return replace(result, view=view)


def _outcome_word(result: MessageOpened) -> str:
    if result.outcome == "locked":
        return "locked"
    if result.outcome == "shown":
        return "shown_as_stored"
    return "decrypted" if result.decrypted else "plain" if result.plain else "verified"


def as_stored(raw: bytes, request_id: int, error: str, *, encrypted: bool) -> MessageOpened:
    """The stored message, incoming status fields removed, under a status that says why it
    was not opened (`error=`, docs/security.md)."""
    status = (f"{STATUS_HEADER}: encrypted={'yes' if encrypted else 'no'}; signature=none; "
              f"error={error}\r\n").encode("ascii")
    return MessageOpened(request_id, "shown", status + without_status(raw))


def _error_word(exc: SmimeProxyError) -> str:
    if isinstance(exc, DecryptionFailed):
        return "cannot-decrypt"
    if isinstance(exc, UnsupportedAlgorithm):
        return "unsupported-algorithm"
    if isinstance(exc, InputError):
        return "malformed"
    return "cannot-open"


def _open(services: Services, user: str, raw: bytes, request_id: int,
          processes: OpenProcesses | None) -> MessageOpened:
    now = services.now()
    agent = None
    try:
        outer = parse_entity(raw)  # parsed once for the questions below
        encrypted = is_encrypted(outer)
    except SmimeProxyError as exc:  # beyond a parser limit, say: shown as stored
        return as_stored(raw, request_id, _error_word(exc), encrypted=False)
    if encrypted:
        try:
            agent = services.secure_mail.agent_for(user, now)
        except KeyLocked:
            return MessageOpened(request_id, "locked")
        except (NoSuchKey, SmimeProxyError):
            # no key to unlock: shown as stored (the client sees an S/MIME attachment)
            return as_stored(raw, request_id, "no-key", encrypted=True)
        if processes is not None and services.revocation is None:
            return _open_elsewhere(services, user, raw, request_id, processes, agent, now)
    try:
        opened = open_message(outer, agent, services.trust_roots, now=now,
                              unauthenticated=services.config.unauthenticated_content,
                              signatures=services.config.signatures,
                              revocation=_revocation_check(services, user, now),
                              revocation_hard_fail=services.config.revocation == "hard-fail",
                              encrypted=encrypted)
    except KeyLocked:
        return MessageOpened(request_id, "locked")
    except SmimeProxyError as exc:
        log.info("message not opened", extra={"user": user, "command": "FETCH",
                                              "reason": type(exc).__name__})
        # once decryption began, every failure is one word (RFC 3218: no oracle)
        word = _error_word(exc)
        if encrypted and word != "unsupported-algorithm":
            word = "cannot-decrypt"
        return as_stored(raw, request_id, word, encrypted=encrypted)
    report = opened.signature
    if report is not None and report.valid:
        _keep_signers(services, user, [
            (signer.certificate, signer.capabilities, signer.encryption_certificate)
            for signer in report.signers if signer.certificate is not None],
            report.from_address)
    prefix = f"{STATUS_HEADER}: {opened.status}\r\n".encode("ascii")
    plain = (not opened.encrypted and report is None and len(opened.content) == len(prefix)
             + len(raw) and opened.content.startswith(prefix) and opened.content.endswith(raw))
    return MessageOpened(request_id, "opened", opened.content, plain=plain,
                         decrypted=opened.encrypted,
                         unlock=agent if opened.encrypted else None)


def _keep_signers(services: Services, user: str, signers: Sequence[tuple[
        x509.Certificate, Sequence[str], x509.Certificate | None]],
                  from_address: str | None) -> None:
    """Take the certificates of a valid signature's signers into the user's address book."""
    for certificate, capabilities, preferred in signers:
        try:
            services.contacts.take_certificate(user, certificate, capabilities)
            if (preferred is not None and from_address is not None
                    and from_address in certificate_addresses(preferred)):
                # the one they want mail encrypted to (RFC 8551 2.5.3): only for the
                # address the signature was verified for
                services.contacts.take_certificate(user, preferred, capabilities)
        except Exception as exc:  # the message is still shown
            log.warning("cannot keep the signer certificate",
                        extra={"user": user, "reason": type(exc).__name__})


def _open_elsewhere(services: Services, user: str, raw: bytes, request_id: int,
                    processes: OpenProcesses, agent: KeyAgent, now: datetime) -> MessageOpened:
    """An encrypted message opened in a worker process: its content-encryption key is
    recovered here (the private key stays where it is), the rest is done there."""
    try:
        key = message_content_key(raw, agent)
    except KeyLocked:
        return MessageOpened(request_id, "locked")
    except SmimeProxyError as exc:
        word = _error_word(exc)
        log.info("message not opened", extra={"user": user, "command": "FETCH",
                                              "reason": type(exc).__name__})
        return as_stored(raw, request_id, word if word == "unsupported-algorithm"
                         else "cannot-decrypt", encrypted=True)
    opened = processes.open(raw, key, now)
    if opened.error is not None:
        log.info("message not opened", extra={"user": user, "command": "FETCH",
                                              "reason": opened.error})
        return as_stored(raw, request_id, opened.error, encrypted=True)
    _keep_signers(services, user, [
        (certificate, capabilities, preferred)
        for der, capabilities, preferred_der in opened.signers
        if (certificate := load_certificate(der)) is not None
        for preferred in [None if preferred_der is None else load_certificate(preferred_der)]],
        opened.from_address)
    result = MessageOpened(request_id, "opened", opened.content, decrypted=True, unlock=agent)
    try:
        view = MessageView(opened.content)
    except Exception:  # the session tries again, and says what failed
        return result
    view.rendered.update(opened.rendered)
    return replace(result, view=view)


# -- in a worker process (imap.open_processes) ---------------------------------------------

_child: ChildSettings | None = None
_child_roots: tuple[x509.Certificate, ...] = ()


def start_child(settings: ChildSettings) -> None:
    """A worker process's initializer: what every opening there needs."""
    global _child, _child_roots  # noqa: PLW0603 - one process, one configuration
    _child = settings
    _child_roots = tuple(x509.load_der_x509_certificate(der) for der in settings.trust_roots)


def open_in_child(raw: bytes, key: bytes, now: datetime) -> ChildOpened:
    """In a worker process: open an encrypted message with its content-encryption key, as
    `_open` does with the user's key agent. Never raises."""
    settings = _child
    assert settings is not None
    try:
        opened = open_message(raw, ContentKey(key), _child_roots, now=now,
                              unauthenticated=settings.unauthenticated,
                              signatures=settings.signatures)
        report = opened.signature
        signers: tuple[tuple[bytes, tuple[str, ...], bytes | None], ...] = ()
        if report is not None and report.valid:
            signers = tuple(
                (signer.certificate.public_bytes(Encoding.DER), signer.capabilities,
                 None if signer.encryption_certificate is None
                 else signer.encryption_certificate.public_bytes(Encoding.DER))
                for signer in report.signers if signer.certificate is not None)
        rendered: dict[str, bytes] = {}
        try:
            view = MessageView(opened.content)
            fetch_rewrite.prerender(view)
            rendered = dict(view.rendered)
        except Exception:  # noqa: S110 - the daemon builds the view and says what failed
            pass
        return ChildOpened(opened.content, signers,
                           report.from_address if report is not None else None, rendered)
    except SmimeProxyError as exc:
        word = _error_word(exc)
        return ChildOpened(b"", (), None, {}, error=word if word == "unsupported-algorithm"
                           else "cannot-decrypt")
    except Exception:
        return ChildOpened(b"", (), None, {}, error="internal")


def _revocation_check(services: Services, user: str,
                      now: datetime) -> Callable[[SignerReport], str] | None:
    """What `open_message` asks of each signer of a valid signature, when the admin turned
    revocation checking on: its validated chain, by OCSP then CRL (network: this runs in
    the front's worker threads; answers are cached)."""
    checker = services.revocation
    if checker is None:
        return None

    def check(signer: SignerReport) -> str:
        result = check_chain(checker, signer.chain, now)
        if result.status != "good":
            log.info("signer certificate %s", result.status,
                     extra={"user": user, "reason": result.detail})
        return result.status

    return check


def seal_for_user(services: Services, user: str, message: bytes) -> bytes | None:
    """`message` sealed to `user`'s own certificate; None when the user has none (the copy
    is then stored as the client wrote it)."""
    try:
        certificate = services.secure_mail.certificate(user)
    except (NoSuchKey, SmimeProxyError):
        return None
    return seal_stored_copy(message, certificate)
