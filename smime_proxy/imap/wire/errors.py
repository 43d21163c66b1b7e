"""Errors of the IMAP wire core: subclasses of the project's protocol errors.

`PeerProtocolError` subclasses mean "the peer sent something wrong"; `LocalProtocolError`
subclasses mean "we tried to send something that breaks the protocol". Imports only
`smime_proxy.errors`.

May import: errors.
"""

from __future__ import annotations

from smime_proxy.errors import LocalProtocolError, PeerProtocolError

__all__ = [
    "FramingError",
    "LineTooLong",
    "LiteralTooLarge",
    "LocalProtocolError",
    "MessageTooLarge",
    "ParseError",
    "PeerProtocolError",
    "RenderError",
    "TruncatedMessage",
]


class FramingError(PeerProtocolError):
    """The byte stream cannot be cut into lines and literals (the connection is unusable)."""


class LineTooLong(FramingError):
    """A line is longer than the configured cap."""


class LiteralTooLarge(FramingError):
    """A literal announces more octets than the configured cap (response side)."""


class MessageTooLarge(FramingError):
    """A command or response buffered whole exceeds the configured cap."""


class TruncatedMessage(FramingError):
    """The peer closed the connection in the middle of a command or response."""


class ParseError(PeerProtocolError):
    """A complete command or response does not follow the grammar.

    `position` is the byte offset in the message where parsing stopped.
    """

    def __init__(self, message: str, position: int = -1) -> None:
        super().__init__(message if position < 0 else f"{message} (at byte {position})")
        self.position = position


class RenderError(LocalProtocolError):
    """A command or response object cannot be rendered (it would not be valid IMAP)."""
