"""What the IMAP core (`imap.session.ImapSession`) and its shell (`imap.connection`) say to each
other: the actions the core asks for, the results the shell feeds back, and the settings the
shell knows about a connection. Plain data, no behaviour.

May import: stdlib.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# --- actions (out) ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendToClient:
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class SendToUpstream:
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class StartClientTls:
    """Do the server-side TLS handshake now; whatever the client sent before it is dropped."""


@dataclass(frozen=True, slots=True)
class OpenMessage:
    """Open (decrypt + verify) one stored message for `user`; answer with `MessageOpened`."""

    request_id: int
    user: str
    raw: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class MailLogin:
    """The upstream accepted this login: the shell may unlock the user's key with the mail
    password (`SecureMail.mail_login`, the user's opt-in) before the client hears OK."""

    user: str
    password: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class SealCopy:
    """Seal `message` (the client's APPEND to its Sent or Drafts folder) to `user`'s own
    certificate (`smime.seal_stored_copy`); answer with `CopySealed`."""

    request_id: int
    user: str
    message: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class ConvertRequested:
    """The client set `action`'s keyword on messages of `mailbox` (its name, decoded) and
    the key is unlocked: convert the messages that carry it (`at_rest`), on another
    connection. Nothing is answered back."""

    user: str
    mailbox: str
    action: Literal["encrypt", "decrypt"]


@dataclass(frozen=True, slots=True)
class Pause:
    """Wait this long before the next action (after a failed login: slows guessing)."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Close:
    """Close both connections (after sending what was queued before)."""

    reason: str


Action = (SendToClient | SendToUpstream | StartClientTls | OpenMessage | MailLogin | SealCopy
          | ConvertRequested | Pause | Close)


# --- results (in) -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageOpened:
    """The shell's answer to `OpenMessage`.

    outcome "opened": `content` is what `open_message` returned (X-SMIME-Status first);
    "locked": encrypted and the user's key is locked; "shown": `content` is to be shown as
    it is (e.g. a message that could not be decrypted, incoming status fields removed).
    `plain`: `open_message` only put its status line in front of the stored bytes (a plain,
    unsigned message without an incoming X-SMIME-Status). `decrypted`: what is shown was
    decrypted (it must not outlive the unlock)."""

    request_id: int
    outcome: Literal["opened", "locked", "shown"]
    content: bytes = field(default=b"", repr=False)
    plain: bool = False
    decrypted: bool = False  # opened with the user's unlocked key
    # the unlock it was opened under (the key's agent, opaque here): what the view cache
    # ties a decrypted view to, without asking the key store again
    unlock: object | None = field(default=None, repr=False)
    # a `MessageView` of `content` with its structures rendered, made in the worker thread
    # (opaque here): the event loop neither parses the shown message nor renders a
    # client's resync of it (None: the session makes one)
    view: object | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class CopySealed:
    """The shell's answer to `SealCopy`: the sealed message, or None (the user has no
    certificate: the copy is stored as the client wrote it)."""

    request_id: int
    sealed: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class SessionSettings:
    """What the shell knows about this connection and the configuration."""

    starttls_available: bool = False  # listener mode starttls, TLS not yet active
    tls_active: bool = False  # implicit TLS listener
    plaintext_login: bool = False  # plaintext_loopback and a loopback client
    locked_fetch: Literal["unavailable", "passthrough"] = "unavailable"
    unlock_url: str = ""  # the Secure Mail page, named when an encrypted message is refused
    sealed_uses: frozenset[str] = frozenset()  # APPENDs to these folders are sealed, e.g.
    # {"\\Sent", "\\Drafts"} (RFC 6154 special-use attributes, upper-cased)
