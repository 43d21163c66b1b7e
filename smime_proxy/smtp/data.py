"""Sans-I/O reader of an SMTP DATA stream (RFC 5321 4.1.1.4, 4.5.2), hardened against
SMTP smuggling.

`DataReader.feed(chunk)` takes bytes as they arrive after `354` and returns once the end of
data (`CRLF . CRLF`) is seen; `.result()` then says what was received. Only `CRLF . CRLF`
ends the data: a bare LF or bare CR anywhere (`\\n.\\n`, `\\r.\\r`, `\\n.\\r\\n`...) is never
an end, and marks the message as refused (`bare_line_end`), so one submission can never be
split into two messages, neither here nor by a more lenient server downstream. Dot-stuffing
is undone. At most `limit` bytes of content are buffered: beyond it the data is read and
discarded up to the end marker, and `too_big` is set (the client gets 552 *after* the end
marker, RFC 5321 4.2.5, so the session stays in sync).

Bytes after the end marker (pipelined commands) are returned by `feed` as `leftover`.

May import: errors, stdlib.
"""

from __future__ import annotations

from dataclasses import dataclass

from smime_proxy.errors import LocalProtocolError

END = b"\r\n.\r\n"
_KEEP = len(END) - 1  # an end marker may straddle two chunks


@dataclass(frozen=True)
class DataResult:
    content: bytes | None  # None when refused (too big, bare line end)
    size: int  # bytes of content seen (after un-stuffing), including discarded ones
    too_big: bool
    bare_line_end: bool


class DataReader:
    """Incremental DATA decoder; `limit`: maximum content bytes to accept (0: no limit)."""

    def __init__(self, limit: int = 0) -> None:
        self.limit = limit
        self._buffer = bytearray()
        self._pending = b""  # complete-lines boundary not reached yet
        self._prefix = b"\r\n"  # the two bytes before `_pending` (the 354 line ended so)
        self._size = 0
        self._too_big = False
        self._bare = False
        self.done = False

    def feed(self, chunk: bytes) -> bytes:
        """Consume `chunk`; return the bytes after the end marker once `done` (else b"")."""
        if self.done:
            return chunk
        data = self._pending + chunk
        self._pending = b""
        # look for the end marker in prefix + data (the marker may start in the prefix)
        probe = self._prefix + data
        end = probe.find(END)
        if end >= 0:
            # content = probe[2 : end + 2] (up to and including the CRLF before ".")
            self._consume(probe, end + 2)
            self.done = True
            return probe[end + len(END):]
        # process complete lines only; keep the partial last line (bounded)
        cut = data.rfind(b"\n") + 1
        if cut == 0 and len(data) > 65536:
            cut = len(data) - _KEEP  # a very long line: keep only what a marker needs
            if data[cut - 1] == 0x0D:
                cut -= 1
        if cut > 0:
            self._consume(self._prefix + data[:cut], cut + 2)
            data = data[cut:]
        self._pending = data
        return b""

    def _consume(self, probe: bytes, stop: int) -> None:
        """Account for probe[2:stop]; probe[:2] is the already-consumed prefix.

        probe[2:stop] never ends with a CR (it ends after an LF, or before a kept tail), so
        the lookahead of the bare-CR test never needs the next piece; the lookbehind of the
        bare-LF test sees the prefix.
        """
        if stop <= 2:
            return
        if not self._bare:
            # every LF and every CR of the piece belongs to a CRLF (C-speed counts; the
            # piece never ends in CR and never starts with the LF of a CRLF)
            crlf = probe.count(b"\r\n", 2, stop)
            if probe.count(b"\n", 2, stop) != crlf or probe.count(b"\r", 2, stop) != crlf:
                self._bare = True
        text = probe[:stop].replace(b"\r\n.", b"\r\n")[2:]
        self._prefix = probe[stop - 2: stop]
        self._size += len(text)
        if self.limit and self._size > self.limit:
            self._too_big = True
        if self._too_big or self._bare:
            self._buffer = bytearray()
        else:
            self._buffer += text  # one growing buffer (mremap), not many heap chunks

    @property
    def buffered(self) -> int:
        """Bytes currently held (content kept plus an incomplete line)."""
        return len(self._buffer) + len(self._pending)

    def result(self) -> DataResult:
        if not self.done:
            raise LocalProtocolError("DATA not complete")
        content: bytes | None = None
        if not self._too_big and not self._bare:
            content = bytes(self._buffer)
        self._buffer = bytearray()
        return DataResult(content, self._size, self._too_big, self._bare)
