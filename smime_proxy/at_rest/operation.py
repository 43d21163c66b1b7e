"""One "encrypt" or "decrypt" operation on a user's folder, as `smime-proxy store`, the
control API's `/api/v1/store` and a client's keyword (`run_requested`) run it: log in to the
mail store as the user, select the folder, pick the messages in the starting form, and
`convert` them, with the journal of that (user, folder, UIDVALIDITY, action) under
`journal_dir`, so that the same request made again resumes.

`builder` makes the per-message step from the user's unlocked key: decrypting with
`decrypted_form`; encrypting with `stored_form`, after proving once that the key opens what
it seals (nothing is stored that its owner cannot read).

May import: at_rest, config, crypto, errors, imap.upstream, aioimaplib, cryptography,
stdlib.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from pathlib import Path

from aioimaplib import aioimaplib
from cryptography import x509

from smime_proxy.at_rest.convert import (
    Build,
    Journal,
    Progress,
    StoredMessages,
    convert,
)
from smime_proxy.at_rest.forms import NotDecryptable, decrypted_form, stored_form
from smime_proxy.at_rest.keywords import Action
from smime_proxy.config import UpstreamEndpoint
from smime_proxy.crypto.keyagent import KeyAgent
from smime_proxy.errors import InputError, SmimeProxyError, WrongPassword
from smime_proxy.imap.upstream import authenticate, close_client, open_client

PROBE = b"Subject: probe\r\n\r\nprobe\r\n"


class LoginRefused(WrongPassword):
    """The mail store refused the mail login."""


class StoreUnreachable(SmimeProxyError):
    """The mail store could not be reached (the reason names the kind of failure)."""


def builder(action: Action, agent: KeyAgent, certificate: x509.Certificate,
            trust_roots: Sequence[x509.Certificate], now: datetime) -> Build:
    if action == "decrypt":
        return lambda message: decrypted_form(message, agent, trust_roots, now)
    sealed = stored_form(PROBE, certificate, wanted=True).message
    if decrypted_form(sealed, agent, trust_roots, now) != PROBE:
        raise InputError("the key does not open what it seals: nothing was changed")

    def encrypt(message: bytes) -> bytes:
        form = stored_form(message, certificate, wanted=True)
        if not form.encrypted:
            raise NotDecryptable(form.reason)
        return form.message

    return encrypt


@contextlib.asynccontextmanager
async def logged_in(endpoint: UpstreamEndpoint, login: str, mail_password: str
                    ) -> AsyncIterator[aioimaplib.IMAP4ClientProtocol]:
    """A connection to the mail store, logged in as the user."""
    try:
        client = await open_client(endpoint, connect_timeout=10, handshake_timeout=10)
    except (OSError, SmimeProxyError) as exc:
        raise StoreUnreachable(f"cannot reach the mail store: {type(exc).__name__}") from None
    try:
        if not await authenticate(client, login, mail_password):
            raise LoginRefused("the mail store refused the login")
        yield client
    finally:
        await close_client(client)


@contextlib.asynccontextmanager
async def _mailbox(endpoint: UpstreamEndpoint, journal_dir: Path, login: str,
                   mail_password: str, mailbox: str, action: Action
                   ) -> AsyncIterator[tuple[StoredMessages, Journal]]:
    """Log in as the user, select `mailbox`; its messages and the journal of (user,
    folder, UIDVALIDITY, action)."""
    async with logged_in(endpoint, login, mail_password) as client:
        messages = StoredMessages(client, mailbox)
        validity = await messages.select()
        key = f"{login}\0{mailbox}\0{validity}\0{action}".encode()
        yield messages, Journal(journal_dir / f"{hashlib.sha256(key).hexdigest()[:24]}.jsonl")


async def run_operation(endpoint: UpstreamEndpoint, journal_dir: Path, login: str,
                        mail_password: str, mailbox: str, action: Action,
                        uids: Sequence[int] | None, build: Build, *,
                        progress: Callable[[Progress], None] | None = None,
                        cancelled: Callable[[], bool] | None = None) -> Progress:
    """Convert `uids` (None: every message in the starting form) of `mailbox`."""
    async with _mailbox(endpoint, journal_dir, login, mail_password, mailbox,
                        action) as (messages, journal):
        found = await messages.candidates(action, None if uids is None else set(uids))
        chosen = found if uids is None else [u for u in uids if u in set(found)]
        return await convert(messages, journal, chosen, build, progress=progress,
                             cancelled=cancelled)


async def run_requested(endpoint: UpstreamEndpoint, journal_dir: Path, login: str,
                        mail_password: str, mailbox: str, action: Action, build: Build, *,
                        progress: Callable[[Progress], None] | None = None,
                        cancelled: Callable[[], bool] | None = None) -> Progress:
    """Convert the messages of `mailbox` a client marked with the action's keyword
    (`REQUEST_KEYWORDS`), then take the keyword off those that stay (already in the
    other form, or not convertible: the reasons are in the progress). Replacements never
    carry it, so the client sees the keyword go in every case."""
    async with _mailbox(endpoint, journal_dir, login, mail_password, mailbox,
                        action) as (messages, journal):
        asked = await messages.requested(action)
        chosen = await messages.candidates(action, asked) if asked else []
        state = await convert(messages, journal, chosen, build, progress=progress,
                              cancelled=cancelled)
        if not state.cancelled:
            await messages.clear_request(action, await messages.requested(action) & asked)
        return state
