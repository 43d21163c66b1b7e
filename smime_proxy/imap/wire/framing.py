"""Sans-I/O IMAP framing: cut a byte stream into commands/responses, lines and literals.

h11 style: the I/O shell feeds bytes with `receive_data(data)` (`b""` means the peer closed)
and pulls events with `next_event()` until it returns `NEED_DATA`. Nothing here awaits or
touches a socket. Two framers:

- `ServerFramer` reads what a client sends (commands). A synchronising literal `{n}` makes it
  emit `ContinuationRequest`: the shell sends `+ ...` then, or refuses the literal with a
  tagged NO/BAD and calls `reject_continuation()`. A literal over the caps gives a
  `LiteralRejected` event (RFC 7888 section 4 / RFC 4469 TOOBIG); the shell answers it.
- `ClientFramer` reads what a server sends (responses). A literal over the cap raises.

Both return a whole command/response as one `Message` (raw bytes as on the wire, literals
included), except in streaming mode (`stream_threshold=n`): a literal of n octets or more is
handed on as `LiteralStart` (with the raw bytes of the message before the literal data),
`LiteralChunk`s and `LiteralEnd`, never buffered whole; the rest of that message follows as
`MessageTail` (or as the head of the next streamed literal).

Literal forms (RFC 9051 section 4.3, RFC 7888, RFC 3516): `{n}` synchronising, `{n+}`
non-synchronising (LITERAL+/LITERAL-; there is no `{n-}` on the wire: LITERAL- is the
capability that limits `{n+}` to 4096 octets, see `max_nonsync_literal_size`), and `~{n}` /
`~{n+}` literal8 for BINARY. Lines end in CRLF; a bare LF is an error (a proxy must not cut
a stream differently from the server behind it).

Hot path: `bytearray.find` for CRLF, literal data moved by slicing, and a literal streamed
from data handed to `receive_data` is passed on without a copy.

May import: errors, imap.wire, stdlib.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import ClassVar, Final

from smime_proxy.errors import UsageError

from .errors import (
    FramingError,
    LineTooLong,
    LiteralTooLarge,
    LocalProtocolError,
    TruncatedMessage,
)

__all__ = [
    "NEED_DATA",
    "ClientFramer",
    "ConnectionClosed",
    "ContinuationRequest",
    "Event",
    "LiteralChunk",
    "LiteralEnd",
    "LiteralRejected",
    "LiteralStart",
    "Message",
    "MessageTail",
    "NeedData",
    "ServerFramer",
    "split_at_sync_literals",
    "use_nonsync_literals",
]

MAX_LINE: Final = 64 * 1024  # the one line limit of every IMAP connection (both sides)
DEFAULT_MAX_LITERAL_SIZE: Final = 1024 * 1024 * 1024
DEFAULT_MAX_MESSAGE_SIZE: Final = 64 * 1024 * 1024 + 64 * 1024
LITERAL_MINUS_LIMIT: Final = 4096  # RFC 7888 section 5
_NUMBER64_MAX: Final = 2**63 - 1

# literal = "{" number64 ["+"] "}" CRLF *CHAR8        (RFC 9051 section 9, RFC 7888 section 8)
# literal8 = "~{" number64 ["+"] "}" CRLF *OCTET      (RFC 9051 section 9, RFC 3516 section 6)
_MARKER_BODY = re.compile(rb"([0-9]{1,19})(\+?)")
# What a client may have meant as a literal marker but is not one: `{}`, `{5-}`, `{+}`.
_BROKEN_MARKER_BODY = re.compile(rb"[0-9]*[+-]?")


# --- events -------------------------------------------------------------------------------


def _summary(raw: bytes) -> str:
    """What a repr may show of raw protocol bytes: the first word (a tag or `*`) and the
    length. Passwords, AUTHENTICATE data and message bodies never reach a log this way."""
    word = raw[: raw.find(b" ")] if 0 < raw.find(b" ") <= 32 else b""
    return f"<{word.decode('ascii', 'replace')!s}... {len(raw)} octets>"


class NeedData:
    """The framer needs more bytes (`receive_data`) before it can say anything new."""

    _instance: ClassVar[NeedData | None] = None

    def __new__(cls) -> NeedData:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()


@dataclass(frozen=True, slots=True)
class Message:
    """One whole command or response, raw as on the wire (literals included, final CRLF)."""

    raw: bytes

    def __repr__(self) -> str:
        return f"Message({_summary(self.raw)})"


@dataclass(frozen=True, slots=True)
class LiteralStart:
    """A streamed literal begins. `head` is the raw message text before its data, marker and
    CRLF included (from the start of the message, or from the end of the previous literal)."""

    head: bytes
    size: int
    binary: bool
    synchronizing: bool

    def __repr__(self) -> str:
        return (
            f"LiteralStart({_summary(self.head)}, size={self.size}, binary={self.binary}, "
            f"synchronizing={self.synchronizing})"
        )


@dataclass(frozen=True, slots=True)
class LiteralChunk:
    """Some octets of a streamed literal, in order."""

    data: bytes

    def __repr__(self) -> str:
        return f"LiteralChunk(<{len(self.data)} octets>)"


@dataclass(frozen=True, slots=True)
class LiteralEnd:
    """The streamed literal is complete."""


@dataclass(frozen=True, slots=True)
class MessageTail:
    """The rest of a message after its last streamed literal, final CRLF included."""

    raw: bytes

    def __repr__(self) -> str:
        return f"MessageTail(<{len(self.raw)} octets>)"


@dataclass(frozen=True, slots=True)
class ContinuationRequest:
    """(ServerFramer) The client waits for `+ ` before it sends this synchronising literal."""

    size: int


@dataclass(frozen=True, slots=True)
class LiteralRejected:
    """(ServerFramer) A literal over the caps: the command is dropped by the framer.

    synchronizing: send a tagged `NO [TOOBIG]` (or BAD) and no continuation; the client
    abandons the command. Non-synchronizing: the client sends the data anyway; either answer
    `* BYE [TOOBIG]` and close, or send the tagged `NO [TOOBIG]`: the framer reads and
    discards the literal and the rest of the command without buffering it (RFC 7888 section 4).
    When an earlier literal of the command was streamed, the command is abandoned as well:
    no MessageTail follows its LiteralEnd.
    """

    tag: bytes
    size: int
    synchronizing: bool


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed the connection between two messages."""


Event = (
    Message
    | LiteralStart
    | LiteralChunk
    | LiteralEnd
    | MessageTail
    | ContinuationRequest
    | LiteralRejected
    | ConnectionClosed
)

# --- the framer ---------------------------------------------------------------------------

_LINE: Final = 0
_LITERAL: Final = 1  # buffered literal: data stays in the buffer as part of the message
_STREAM: Final = 2  # streamed literal: data handed on in LiteralChunk events
_DISCARD: Final = 3  # literal of a rejected command: read and dropped
_CLOSED: Final = 4
_FAILED: Final = 5


class _Framer:
    _server_side: ClassVar[bool]

    def __init__(
        self,
        *,
        max_line_length: int = MAX_LINE,
        max_literal_size: int = DEFAULT_MAX_LITERAL_SIZE,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        stream_threshold: int | None = None,
    ) -> None:
        if max_line_length < 1 or max_literal_size < 0 or max_message_size < 1:
            raise UsageError("framing caps must be positive")
        if stream_threshold is not None and stream_threshold < 0:
            raise UsageError("stream_threshold must be >= 0")
        self.max_line_length = max_line_length
        self.max_literal_size = max_literal_size
        self.max_message_size = max_message_size
        self.stream_threshold = stream_threshold
        self._buf = bytearray()
        self._start = 0  # first byte of the current message piece not yet handed out
        self._pos = 0  # parse cursor: start of the current line, or of literal data
        self._scan = 0  # where to resume looking for LF
        self._state = _LINE
        self._remaining = 0  # octets of literal data still to come
        self._after_stream = False  # the current message had a streamed literal
        self._tag = b"*"  # tag of the current message once part of it was handed on
        self._asked = False  # the last event returned was a ContinuationRequest
        self._discarding = False  # inside a rejected command (ServerFramer)
        self._eof = False
        self._pending: deque[Event] = deque()
        self._direct: deque[bytes] = deque()  # streamed literal data not copied to _buf
        self._direct_size = 0

    # -- input -----------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; `b""` means the peer closed the connection."""
        if self._eof:
            raise LocalProtocolError("receive_data after end of stream")
        if not data:
            self._eof = True
            return
        if type(data) is not bytes:
            data = bytes(data)
        start = self._start
        if start:
            del self._buf[:start]  # O(1) in CPython when cutting at the front
            self._pos -= start
            self._scan -= start
            self._start = 0
        if self._state == _STREAM and self._pos == len(self._buf):
            need = self._remaining - self._direct_size
            if need > 0:
                if len(data) <= need:
                    self._direct.append(data)
                    self._direct_size += len(data)
                    return
                self._direct.append(data[:need])
                self._direct_size += need
                with memoryview(data) as rest:
                    self._buf += rest[need:]  # no intermediate copy of the rest
                return
        self._buf += data

    # -- output ----------------------------------------------------------------------------

    def next_event(self) -> Event | NeedData:
        """The next event, or `NEED_DATA`. Raises a `FramingError` once the stream is broken."""
        self._asked = False
        if self._pending:
            return self._pending.popleft()
        if self._state == _FAILED:
            raise FramingError("the stream was already broken")
        try:
            return self._step()
        except FramingError:
            self._state = _FAILED
            raise

    @property
    def literal_missing(self) -> int:
        """Octets still to come of a literal buffered whole (0 when not inside one): fewer
        than that and `next_event` can only say `NEED_DATA`."""
        if self._state != _LITERAL or self._pending or self._eof:
            return 0
        return max(self._remaining - (len(self._buf) - self._pos), 0)

    @property
    def buffered(self) -> int:
        """Octets received and not yet handed out (memory held by the framer)."""
        return len(self._buf) - self._start + self._direct_size

    def _take(self, lo: int, hi: int) -> bytes:
        with memoryview(self._buf) as view:
            return bytes(view[lo:hi])

    def _step(self) -> Event | NeedData:
        buf = self._buf
        while True:
            state = self._state
            if state == _LINE:
                lf = buf.find(b"\n", self._scan)
                if lf < 0:
                    if len(buf) - self._pos > self.max_line_length + 1:
                        raise LineTooLong(f"line longer than {self.max_line_length} octets")
                    self._scan = len(buf)
                    if self._eof:
                        if self._start == len(buf) and not self._after_stream:
                            if self._discarding:
                                raise TruncatedMessage("closed in the middle of a command")
                            self._state = _CLOSED
                            return ConnectionClosed()
                        raise TruncatedMessage("closed in the middle of a line")
                    return NEED_DATA
                pos = self._pos
                if lf == pos or buf[lf - 1] != 0x0D:
                    raise FramingError("line ends in a bare LF")
                if lf - 1 - pos > self.max_line_length:
                    raise LineTooLong(f"line longer than {self.max_line_length} octets")
                end = lf + 1
                self._pos = self._scan = end
                marker = None
                if lf - pos >= 4 and buf[lf - 2] == 0x7D:  # "}" before CRLF
                    marker = self._literal_marker(pos, lf - 2)
                if marker is None:
                    if self._discarding:
                        self._discarding = False
                        self._start = end
                        continue
                    raw = self._take(self._start, end)
                    self._start = end
                    if self._after_stream:
                        self._after_stream = False
                        return MessageTail(raw)
                    return Message(raw)
                size, synchronizing, binary = marker
                if self._discarding:
                    if synchronizing:
                        # The client waits for a "+" it will not get: the command is over.
                        self._discarding = False
                        self._start = end
                        continue
                    self._state = _DISCARD
                    self._remaining = size
                    self._start = end
                    continue
                streamed = self.stream_threshold is not None and size >= self.stream_threshold
                if self._too_large(size, synchronizing, streamed, end):
                    return self._reject(size, synchronizing, end)
                self._remaining = size
                if streamed:
                    if self._server_side and not self._after_stream:
                        self._tag = self._tag_at(self._start, end)
                    event = LiteralStart(self._take(self._start, end), size, binary, synchronizing)
                    self._start = end
                    self._state = _STREAM
                    self._after_stream = True
                    if self._server_side and synchronizing:
                        self._pending.append(event)
                        self._asked = True
                        return ContinuationRequest(size)
                    return event
                self._state = _LITERAL
                if self._server_side and synchronizing:
                    self._asked = True
                    return ContinuationRequest(size)
                continue
            if state == _LITERAL:
                if len(buf) - self._pos >= self._remaining:
                    self._pos += self._remaining
                    self._scan = self._pos
                    self._remaining = 0
                    self._state = _LINE
                    continue
                if self._eof:
                    raise TruncatedMessage("closed in the middle of a literal")
                return NEED_DATA
            if state == _STREAM:
                if self._remaining == 0:
                    self._state = _LINE
                    return LiteralEnd()
                if self._direct:
                    chunk = self._direct.popleft()
                    self._direct_size -= len(chunk)
                    self._remaining -= len(chunk)
                    return LiteralChunk(chunk)
                avail = len(buf) - self._pos
                if avail == 0:
                    if self._eof:
                        raise TruncatedMessage("closed in the middle of a literal")
                    return NEED_DATA
                n = min(avail, self._remaining)
                lo = self._pos
                self._pos = self._scan = self._start = lo + n
                self._remaining -= n
                return LiteralChunk(self._take(lo, lo + n))
            if state == _DISCARD:
                n = min(len(buf) - self._pos, self._remaining)
                self._pos = self._scan = self._start = self._pos + n
                self._remaining -= n
                if self._remaining == 0:
                    self._state = _LINE
                    continue
                if self._eof:
                    raise TruncatedMessage("closed in the middle of a literal")
                return NEED_DATA
            if state == _CLOSED:
                return ConnectionClosed()
            raise LocalProtocolError(f"framer state {state}")  # pragma: no cover

    def _literal_marker(self, line_start: int, close: int) -> tuple[int, bool, bool] | None:
        """(size, synchronizing, binary) when the line ends in a literal marker."""
        buf = self._buf
        opening = buf.rfind(b"{", line_start, close)
        if opening < 0:
            return None
        body = bytes(buf[opening + 1 : close])
        match = _MARKER_BODY.fullmatch(body)
        if match is None:
            if _BROKEN_MARKER_BODY.fullmatch(body) is not None and (
                self._server_side or len(body) > 19
            ):
                raise FramingError("malformed literal marker")
            return None
        size = int(match[1])
        if size > _NUMBER64_MAX:
            raise FramingError("literal size out of range")
        binary = opening > line_start and buf[opening - 1] == 0x7E  # "~"
        return size, not match[2], binary

    def _tag_at(self, start: int, end: int) -> bytes:
        """The first word of the message that starts at `start` (its tag)."""
        space = self._buf.find(b" ", start, min(end, start + 256))
        return bytes(self._buf[start:space]) if space > start else b"*"

    def _too_large(self, size: int, synchronizing: bool, streamed: bool, end: int) -> bool:
        if size > self.max_literal_size:
            return True
        return not streamed and (end - self._start) + size > self.max_message_size

    def _reject(self, size: int, synchronizing: bool, end: int) -> Event | NeedData:
        raise LiteralTooLarge(f"literal of {size} octets is over the cap")


class ClientFramer(_Framer):
    """Frames what an IMAP server sends (responses), for the client side of a connection."""

    _server_side = False


class ServerFramer(_Framer):
    """Frames what an IMAP client sends (commands), for the server side of a connection.

    `max_nonsync_literal_size`: the largest `{n+}` accepted; `LITERAL_MINUS_LIMIT` (4096) when
    only LITERAL- is advertised, None for LITERAL+ (then only `max_literal_size` applies).
    """

    _server_side = True

    def __init__(
        self,
        *,
        max_line_length: int = MAX_LINE,
        max_literal_size: int = DEFAULT_MAX_LITERAL_SIZE,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        stream_threshold: int | None = None,
        max_nonsync_literal_size: int | None = None,
    ) -> None:
        super().__init__(
            max_line_length=max_line_length,
            max_literal_size=max_literal_size,
            max_message_size=max_message_size,
            stream_threshold=stream_threshold,
        )
        self.max_nonsync_literal_size = max_nonsync_literal_size

    def _too_large(self, size: int, synchronizing: bool, streamed: bool, end: int) -> bool:
        limit = self.max_nonsync_literal_size
        if not synchronizing and limit is not None and size > limit:
            return True
        return super()._too_large(size, synchronizing, streamed, end)

    def reject_continuation(self) -> None:
        """Call instead of sending `+ ` when the shell answers a `ContinuationRequest` with a
        tagged NO/BAD: the client then does not send the literal and abandons the command
        (RFC 9051 section 7.5), and so does the framer. Only valid right after
        `next_event()` returned the ContinuationRequest. Bytes the client sent without
        waiting are read as the start of its next command."""
        if not self._asked:
            raise LocalProtocolError("no continuation request was just returned")
        self._asked = False
        self._pending.clear()
        if self._direct:
            self._buf[self._pos : self._pos] = b"".join(self._direct)
            self._direct.clear()
            self._direct_size = 0
        self._start = self._scan = self._pos
        self._remaining = 0
        self._after_stream = False
        self._state = _LINE

    def _reject(self, size: int, synchronizing: bool, end: int) -> Event | NeedData:
        # After a streamed literal, the part of the command handed on is abandoned (no
        # MessageTail follows) and the tag was noted when the first part went out.
        tag = self._tag if self._after_stream else self._tag_at(self._start, end)
        self._start = end
        if self._after_stream:
            self._after_stream = False
        if synchronizing:
            self._state = _LINE
        else:
            self._discarding = True
            self._state = _DISCARD
            self._remaining = size
        return LiteralRejected(tag, size, synchronizing)


_SEND_MARKER = re.compile(rb"(~?)\{([0-9]{1,19})(\+?)\}\Z")


def _literal_lines(raw: bytes) -> list[tuple[int, int, bool]]:
    """(line end after CRLF, size, synchronizing) for each literal of one
    rendered command; raises LocalProtocolError when `raw` is not one complete command."""
    found: list[tuple[int, int, bool]] = []
    pos = 0
    while True:
        lf = raw.find(b"\r\n", pos)
        if lf < 0:
            raise LocalProtocolError("a command must end in CRLF")
        end = lf + 2
        match = _SEND_MARKER.search(raw, pos, lf)
        if match is None:
            if end != len(raw):
                raise LocalProtocolError("data after the end of the command")
            return found
        size = int(match[2])
        if end + size > len(raw):
            raise LocalProtocolError("literal shorter than announced")
        found.append((end, size, not match[3]))
        pos = end + size


def split_at_sync_literals(raw: bytes) -> list[bytes]:
    """Cut one rendered command where the sender must wait for `+ ` (after each `{n}` CRLF).

    The I/O shell sends the first piece, then each following piece after a continuation
    request. Raises `LocalProtocolError` when `raw` is not one complete command.
    """
    pieces: list[bytes] = []
    start = 0
    for end, _, synchronizing in _literal_lines(raw):
        if synchronizing:
            pieces.append(raw[start:end])
            start = end
    pieces.append(raw[start:])
    return pieces


def use_nonsync_literals(raw: bytes, limit: int | None = LITERAL_MINUS_LIMIT) -> bytes:
    """One rendered command with its synchronising literals of at most `limit` octets
    turned into `{n+}` (RFC 7888): `limit=4096` for a server with LITERAL-, None (no
    limit) for LITERAL+. Saves a round trip per literal."""
    out: list[bytes] = []
    start = 0
    for end, size, synchronizing in _literal_lines(raw):
        if synchronizing and (limit is None or size <= limit):
            close = end - 3  # the "}" before CRLF
            out.append(raw[start:close])
            out.append(b"+")
            start = close
    out.append(raw[start:])
    return b"".join(out)
