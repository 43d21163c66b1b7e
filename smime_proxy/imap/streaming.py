"""Large literals go through the IMAP session without being held whole (a part of
`imap.session.ImapSession`, kept here to keep that module readable; issue 10).

Both framers hand on literals of `STREAM_AT` octets or more as `LiteralStart`, chunks and a
`MessageTail` (`imap.wire.framing`). Each streamed command or response is then either:

- relayed as it comes: a FETCH response of a plain message (the sort pass decides from the
  classification fields at the head of the response, before the literal; the plain pass and
  UID FETCHes of known plain messages are the upstream's own answers), and an APPEND to an
  upstream with LITERAL+ (its synchronising literals sent as `{n+}`: the proxy already
  answered the client's `+`), unless it may have to be sealed (`imap.stored_copies`).
  Memory stays bounded by the shell's back-pressure: it drains one side before it reads
  the other again.
- or collected up to `MAX_MESSAGE` and then handled as a whole message: an S/MIME message
  to open, anything the proxy must read. Past the cap a FETCH response is dropped (the
  FETCH then ends in `NO [LIMIT]`, the session goes on) and a command is refused with
  `NO [TOOBIG]` once its bytes are read.

May import: imap.wire, imap.events, imap.inflight, imap.fetch_answers, imap.fetch_rewrite,
mime, stdlib.
"""

from __future__ import annotations

import re
from typing import Final

from smime_proxy.imap.events import Action, SendToClient, SendToUpstream
from smime_proxy.imap.fetch_answers import SORT_NAMES
from smime_proxy.imap.inflight import (
    FetchJob,
    InFlight,
    RelayedCommand,
    Stream,
)
from smime_proxy.imap.wire import LiteralStart, ParseError
from smime_proxy.imap.wire.spans import FetchSpans, fetch_spans, without_items
from smime_proxy.mime.entity import needs_opening

STREAM_AT: Final = 256 * 1024  # literals from this size on are streamed
MAX_MESSAGE: Final = 64 * 1024 * 1024  # what the proxy holds whole, at most
MAX_STREAMED: Final = 2**40  # a literal relayed as it comes (the upstream sets its own cap)
_MARKER: Final = re.compile(rb"(~?)\{([0-9]{1,19})\}\r\n")
_APPEND: Final = re.compile(rb"[^ \r\n]+ (UID )?APPEND ", re.IGNORECASE)

def nonsync(text: bytes) -> bytes:
    """Every synchronising literal marker of a streamed command's piece turned into `{n+}`
    (RFC 7888 LITERAL+); the last marker's data may be missing (a LiteralStart head)."""
    out: list[bytes] = []
    pos = start = 0
    while True:
        lf = text.find(b"\r\n", pos)
        if lf < 0:
            break
        line_end = lf + 2
        opening = text.rfind(b"{", pos, lf)
        match = _MARKER.match(text, opening) if opening >= 0 else None
        if match is None or match.end() != line_end:
            pos = line_end
            continue
        close = lf - 1  # the "}"
        out.append(text[start:close])
        out.append(b"+")
        start = close
        pos = line_end + int(match[2])
    out.append(text[start:])
    return b"".join(out)


def _collect(stream: Stream, data: bytes) -> None:
    """Hold what the proxy must read, up to `MAX_MESSAGE`; past it, discard the rest."""
    if stream.mode == "collect":
        stream.collected += data
        if len(stream.collected) > MAX_MESSAGE:
            stream.collected = bytearray()
            stream.mode = "discard"


class StreamedLiterals:
    """The streaming half of the session (a mixin: the session provides the state)."""

    state: str
    known_plain: set[int]
    _inflight: InFlight | None
    _out: list[Action]
    up_stream: Stream | None
    client_stream: Stream | None

    def _upstream_message(self, raw: bytes) -> None:
        raise NotImplementedError

    def _client_command(self, raw: bytes) -> None:
        raise NotImplementedError

    def _flush_job(self, job: FetchJob) -> None:
        raise NotImplementedError

    def _fatal(self, reason: str, bye: bytes = b"* BYE Internal error, closing\r\n") -> None:
        raise NotImplementedError

    def _upstream_has(self, name: str) -> bool:
        raise NotImplementedError

    def _may_seal(self, head: bytes) -> bool:
        raise NotImplementedError

    @staticmethod
    def _classification(raw: bytes, spans: FetchSpans) -> tuple[bytes | None, int | None]:
        raise NotImplementedError

    def _known_plain(self, uid: int | None) -> None:
        raise NotImplementedError

    # -- from the upstream ------------------------------------------------------------------

    def _upstream_literal(self, event: LiteralStart) -> None:
        stream = self.up_stream
        if stream is None:
            self.up_stream = stream = self._upstream_stream(event.head)
            return
        self._upstream_piece(stream, event.head)

    def _upstream_stream(self, head: bytes) -> Stream:
        """Relay a streamed response as it comes where the proxy does not change it."""
        job = self._inflight
        relay: bytes | None = None
        if head.startswith(b"* "):
            if (isinstance(job, RelayedCommand) and job.plain_fetch) or (
                    isinstance(job, FetchJob) and not job.held and job.phase == "plain"):
                relay = head
            elif isinstance(job, FetchJob) and not job.held and job.phase == "sort":
                relay = self._plain_head(job, head)
        if relay is not None:
            self._out.append(SendToClient(relay))
            return Stream("relay")
        return Stream("collect", collected=bytearray(head))

    def _plain_head(self, job: FetchJob, head: bytes) -> bytes | None:
        """The head to relay when the sort pass's classification fields (before the streamed
        literal) say the message needs no opening and the response holds the client's
        items; else None (the response is collected and handled whole)."""
        if not job.relays_items:
            return None
        try:
            spans = fetch_spans(head, SORT_NAMES)
            header, uid = self._classification(head, spans)
        except ParseError:  # no fields before the literal (or they are the literal)
            return None
        if header is None or needs_opening(header):
            return None
        self._known_plain(uid)
        return without_items(head, spans, job.strip)

    def _upstream_piece(self, stream: Stream, data: bytes) -> None:
        if stream.mode == "relay":
            self._out.append(SendToClient(data))
        else:
            _collect(stream, data)

    def _upstream_tail(self, tail: bytes) -> None:
        stream = self.up_stream
        self.up_stream = None
        if stream is None:  # a tail without a streamed start cannot come
            self._fatal("upstream framing", b"* BYE Upstream server error\r\n")
            return
        job = self._inflight
        if stream.mode == "relay":
            self._out.append(SendToClient(tail))
            if isinstance(job, FetchJob):
                self._flush_job(job)  # what waited for the stream to end
        elif stream.mode == "collect":
            stream.collected += tail
            whole = bytes(stream.collected)
            stream.collected = bytearray()  # not two copies of a large message at once
            self._upstream_message(whole)
        elif isinstance(job, FetchJob):
            job.too_large = True  # the message is left out; the FETCH says so
            self._flush_job(job)
        else:
            self._fatal("upstream response too large", b"* BYE [LIMIT] Response too large\r\n")

    # -- from the client --------------------------------------------------------------------

    def _client_literal(self, event: LiteralStart) -> None:
        stream = self.client_stream
        if stream is not None:
            self._client_piece(stream, nonsync(event.head) if stream.mode == "relay"
                               else event.head)
            return
        tag = event.head.split(b" ", 1)[0]
        if (self.state == "authenticated" and self._inflight is None
                and _APPEND.match(event.head) is not None and self._upstream_has("LITERAL+")
                and not tag.startswith(b"~spx") and not self._may_seal(event.head)):
            # an APPEND of any size the upstream takes, relayed as it comes
            self._inflight = RelayedCommand(tag)
            self.client_stream = Stream("relay", tag)
            self._out.append(SendToUpstream(nonsync(event.head)))
            return
        self.client_stream = Stream("collect", tag, bytearray(event.head))

    def _client_piece(self, stream: Stream, data: bytes) -> None:
        if stream.mode == "relay":
            self._out.append(SendToUpstream(data))
        else:
            _collect(stream, data)

    def _client_tail(self, tail: bytes) -> None:
        stream = self.client_stream
        self.client_stream = None
        if stream is None:
            self._fatal("client framing", b"* BYE Protocol error\r\n")
        elif stream.mode == "relay":
            self._out.append(SendToUpstream(nonsync(tail)))
        elif stream.mode == "collect":
            stream.collected += tail
            whole = bytes(stream.collected)
            stream.collected = bytearray()
            self._client_command(whole)
        else:
            self._out.append(SendToClient(stream.tag + b" NO [TOOBIG] The command is larger"
                                          b" than the proxy takes\r\n"))
