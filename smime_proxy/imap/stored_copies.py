"""How the IMAP session keeps the user's own copies encrypted at rest (a part of
`imap.session.ImapSession`, kept here to keep that module readable; issue 13).

A mail client stores its Sent copy (and drafts) itself with an APPEND. When the folder is
one the admin wants sealed (`SessionSettings.sealed_uses`: RFC 6154 `\\Sent`, `\\Drafts`),
the message is sealed to the user's own certificate (`SealCopy`, done by the shell with
`smime.seal_stored_copy`) and the sealed bytes are appended instead, in the same command
(flags and date-time kept). Reading it back through the proxy gives the message exactly as
the client wrote it. Never a second copy: the client's APPEND is replaced, not repeated.

What a folder is for is asked of the upstream once per folder and session
(`LIST "" folder RETURN (SPECIAL-USE)`) before the first APPEND to it. Relayed as they are:
an APPEND to any other folder, one the parsers here do not take (MULTIAPPEND, CATENATE, a
folder name given as a literal or with wildcards), a message that is already S/MIME, a
message over what the proxy holds whole (`imap.streaming.MAX_MESSAGE`, 64 MiB: streamed
through as it comes), and any APPEND when the upstream does not answer that LIST (no
LIST-EXTENDED / SPECIAL-USE). A large APPEND to such a folder is collected whole first. A user
without a certificate gets the copy stored as written.

May import: errors, imap.wire, imap.events, imap.inflight, imap.streaming, mime, stdlib.
"""

from __future__ import annotations

import re
from typing import Final

from smime_proxy.errors import MalformedMessage
from smime_proxy.imap.events import Action, CopySealed, SealCopy, SendToUpstream, SessionSettings
from smime_proxy.imap.inflight import AppendJob, InFlight
from smime_proxy.imap.streaming import MAX_MESSAGE
from smime_proxy.mime.entity import needs_opening, parse_entity

# RFC 9051 6.3.12 (APPEND), single message, the mailbox an atom or a quoted string
_APPEND: Final = re.compile(
    rb'([^ ]+) APPEND ("(?:[^"\\\r\n]|\\.)*"|[^ (){"%*\\\r\n]+)'
    rb'( \([^()\r\n]*\))?( "[^"\r\n]*")? \{([0-9]{1,10})\+?\}\r\n',
    re.IGNORECASE)
_LIST_ATTRIBUTES: Final = re.compile(rb"\* LIST \(([^)]*)\)", re.IGNORECASE)


class StoredCopies:
    """The APPEND half of the session (a mixin: the session provides the state)."""

    settings: SessionSettings
    user: str | None
    mailbox_uses: dict[bytes, frozenset[str]]  # special-use attributes, by folder
    _inflight: InFlight | None
    _counter: int
    _out: list[Action]

    def _new_tag(self) -> bytes:
        raise NotImplementedError

    def _relay(self, tag: bytes, raw: bytes) -> None:
        raise NotImplementedError

    def _may_seal(self, head: bytes) -> bool:
        """Whether a large APPEND (its head, up to the literal) must be collected whole
        rather than streamed: it goes to a folder that is, or may be, sealed, and fits in
        what the proxy holds (`MAX_MESSAGE`; a larger one is stored as written)."""
        if not self.settings.sealed_uses:
            return False
        match = _APPEND.fullmatch(head)
        if match is None or int(match[5]) > MAX_MESSAGE:
            return False
        uses = self.mailbox_uses.get(match[2])
        return uses is None or bool(uses & self.settings.sealed_uses)

    def _start_append(self, raw: bytes) -> bool:
        """Take a client APPEND that may have to be sealed; False: relay it as it is."""
        if not self.settings.sealed_uses:
            return False
        match = _APPEND.match(raw)
        if match is None:
            return False
        size = int(match[5])
        message = raw[match.end():match.end() + size]
        if len(message) != size or raw[match.end() + size:] != b"\r\n":
            return False  # another message follows (MULTIAPPEND), or an extension
        try:
            header = message[:parse_entity(message).header_end]
        except MalformedMessage:
            return False  # no header the parsers take (over 64 KiB, say): stored as written
        if needs_opening(header):
            return False  # already S/MIME (or carrying a status field): stored as written
        job = AppendJob(tag=match[1], raw=raw, mailbox=match[2],
                        head=raw[:match.start(5) - 2], message=message)
        self._inflight = job
        uses = self.mailbox_uses.get(job.mailbox)
        if uses is None:
            job.list_tag = self._new_tag()
            self._out.append(SendToUpstream(job.list_tag + b' LIST "" ' + job.mailbox
                                            + b" RETURN (SPECIAL-USE)\r\n"))
        else:
            self._decide(job, uses)
        return True

    def _append_untagged(self, job: AppendJob, raw: bytes) -> bool:
        """A LIST answer about the folder (kept, not shown); False for anything else."""
        match = _LIST_ATTRIBUTES.match(raw)
        if job.phase != "list" or match is None:
            return False
        attributes = frozenset(a.decode("ascii", "replace").upper()
                               for a in match[1].split())
        self.mailbox_uses[job.mailbox] = self.mailbox_uses.get(job.mailbox,
                                                               frozenset()) | attributes
        return True

    def _append_tagged(self, job: AppendJob, tag: bytes) -> bool:
        if tag != job.list_tag:
            return False
        job.list_tag = None
        # a failed LIST, or one that named no folder: an ordinary folder then
        self._decide(job, self.mailbox_uses.setdefault(job.mailbox, frozenset()))
        return True

    def _decide(self, job: AppendJob, uses: frozenset[str]) -> None:
        if not uses & self.settings.sealed_uses:
            self._inflight = None
            self._relay(job.tag, job.raw)
            return
        job.phase = "seal"
        self._counter += 1
        job.request_id = self._counter
        self._out.append(SealCopy(self._counter, self.user or "", job.message))

    def _copy_sealed(self, job: AppendJob, result: CopySealed) -> None:
        if result.request_id != job.request_id:
            return
        self._inflight = None
        if result.sealed is None:
            self._relay(job.tag, job.raw)
            return
        self._relay(job.tag, job.head + b" {%d}\r\n" % len(result.sealed) + result.sealed
                    + b"\r\n")
