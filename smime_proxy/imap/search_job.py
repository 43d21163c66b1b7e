"""SEARCH over encrypted mail (a part of `imap.session.ImapSession`; issue 10).

The upstream searches ciphertext: `BODY`, `TEXT`, `SUBJECT`... never find what an encrypted
message says. A `[UID] SEARCH` with such a key (`imap.search.has_text`), in a selected
mailbox, is answered in upstream passes, all in the client's numbering (UIDs for UID SEARCH,
sequence numbers otherwise: a non-UID SEARCH or FETCH never sees an EXPUNGE, so the numbers
hold from pass to pass):

1. the client's own search, upstream: what it finds is found;
2. the S/MIME messages of the mailbox (`OR HEADER Content-Type pkcs7 HEADER Content-Type
   p7m`), the last `MAX_CANDIDATES` of them: the ones the plaintext may match;
3. each key the proxy cannot judge itself (flags, dates, sizes, sets: `imap.search.Leaf`),
   once, restricted to those candidates;
4. the candidates' UIDs, then the whole stored bytes of those the view cache does not hold:
   each is opened as for a FETCH (and kept in the cache); a locked key or a message that
   cannot be opened simply does not match;
5. the criteria evaluated on each candidate's shown message (`imap.search.matching`).

The answer is 5 for the messages opened, 1 for all others (the upstream judged ciphertext:
`NOT BODY x` finds every encrypted message there): `* SEARCH` or, with `RETURN (MIN MAX COUNT ALL)`,
`* ESEARCH` computed here. Nothing decrypted is kept beyond the view cache's rules.
Searches this cannot answer exactly (SAVE, PARTIAL, a MODSEQ key, a CHARSET other than
UTF-8/US-ASCII, no selected mailbox) are relayed unchanged.

May import: imap.wire, imap.events, imap.inflight, imap.search, imap.views, imap.view_cache,
imap.fetch_rewrite, mime, stdlib.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Final

from smime_proxy.imap import fetch_rewrite
from smime_proxy.imap.events import Action, MessageOpened, OpenMessage, SendToClient, SendToUpstream
from smime_proxy.imap.inflight import (
    InFlight,
    SearchJob,
)
from smime_proxy.imap.search import (
    SearchUnsupported,
    has_text,
    leaves,
    matching,
    parse_program,
)
from smime_proxy.imap.view_cache import MailboxKey, ViewCache
from smime_proxy.imap.views import MessageView
from smime_proxy.imap.wire import ParseError, SearchCommand
from smime_proxy.imap.wire.sequence import SequenceSet
from smime_proxy.imap.wire.spans import fetch_spans, item_value, uid_value

MAX_CANDIDATES: Final = 500  # S/MIME messages looked into per SEARCH (the newest)
_RETURNS: Final = frozenset({"MIN", "MAX", "COUNT", "ALL"})
_CHARSETS: Final = frozenset({b"UTF-8", b"US-ASCII"})
_SEARCH_LINE: Final = re.compile(rb"\* SEARCH((?: [0-9]+)*)[ ]?(\(.*\))?\r\n\Z", re.IGNORECASE)
_CANDIDATES: Final = b"OR HEADER Content-Type pkcs7 HEADER Content-Type p7m"

class EncryptedSearch:
    """The SEARCH half of the session (a mixin: the session provides the state)."""

    user: str | None
    views: ViewCache
    mailbox: MailboxKey | None
    _inflight: InFlight | None
    _counter: int
    _out: list[Action]

    def _new_tag(self) -> bytes:
        raise NotImplementedError

    def _fatal(self, reason: str, bye: bytes = b"* BYE Internal error, closing\r\n") -> None:
        raise NotImplementedError

    # -- starting ---------------------------------------------------------------------------

    def _start_search(self, command: SearchCommand) -> bool:
        """Take over a SEARCH that may find encrypted mail; False: relay it unchanged."""
        if self.mailbox is None or (command.charset is not None
                                    and command.charset.upper() not in _CHARSETS):
            return False
        try:
            tree = parse_program(command.criteria, command.charset)
        except SearchUnsupported:
            return False
        if not has_text(tree) or any(b"MODSEQ" in leaf.text.upper() for leaf in leaves(tree)):
            return False
        returns: tuple[str, ...] | None = None
        if command.return_options is not None:
            words = tuple(str(v).upper() for v in command.return_options)
            if not set(words) <= _RETURNS:
                return False  # SAVE, PARTIAL, ...: the upstream's own
            returns = words or ("ALL",)
        job = SearchJob(command, tree, returns)
        self._inflight = job
        plain = dataclasses.replace(command, return_options=None).render()  # no RETURN (...)
        self._search_send(job, plain.split(b" SEARCH ", 1)[1].rstrip(b"\r\n").join(
            (b"SEARCH ", b"")))
        return True

    def _searches_text(self, command: SearchCommand) -> bool:
        """Whether `_start_search` would take this SEARCH (it then is not pipelined)."""
        try:
            return self.mailbox is not None and has_text(
                parse_program(command.criteria, command.charset))
        except SearchUnsupported:
            return False

    def _search_send(self, job: SearchJob, text: bytes) -> None:
        job.tag = self._new_tag()
        job.numbers = []
        prefix = b" UID " if job.command.uid else b" "
        self._out.append(SendToUpstream(job.tag + prefix + text + b"\r\n"))

    # -- upstream responses -------------------------------------------------------------------

    def _search_untagged(self, job: SearchJob, raw: bytes) -> None:
        match = _SEARCH_LINE.match(raw)
        if match is not None and job.phase != "done":
            job.numbers.extend(int(n) for n in match[1].split())
            return
        if job.phase in ("uids", "open") and re.match(rb"\* [0-9]+ FETCH ", raw, re.I):
            if self._search_fetched(job, raw):
                return
            raw = fetch_rewrite.without_content(raw)
            if not raw:
                return
        self._out.append(SendToClient(raw))  # EXISTS, EXPUNGE, a flag update...

    def _search_fetched(self, job: SearchJob, raw: bytes) -> bool:
        """A response to the proxy's own FETCH of candidates (UID, then whole messages)."""
        try:
            spans = fetch_spans(raw)
            whole = spans.find(fetch_rewrite.WHOLE_NAME)
            uid = uid_value(raw, spans)
            stored = item_value(raw, whole) if whole is not None else None
        except ParseError:
            return False
        number = uid if job.command.uid else spans.number
        if uid is None or number not in job.candidates:
            return False
        if job.phase == "uids":
            job.uids[number] = uid
        elif stored is not None:
            self._counter += 1
            job.opening[self._counter] = number
            self._out.append(OpenMessage(self._counter, self.user or "", stored))
        return True

    def _search_tagged(self, job: SearchJob, tag: bytes, raw: bytes) -> bool:
        if tag != job.tag:
            return False
        ok = raw[len(tag) + 1 :].upper().startswith(b"OK")
        command = job.command
        if job.phase == "upstream":
            if not ok:  # the upstream refuses the search itself: its answer is the answer
                self._out.append(SendToClient(command.tag + raw[len(tag) :]))
                self._inflight = None
                return True
            job.found = set(job.numbers)
            job.done = command.tag + raw[len(tag) :]
            job.phase = "candidates"
            self._search_send(job, b"SEARCH " + _CANDIDATES)
            return True
        if not ok:  # a pass of the proxy's own failed: the upstream's result stands
            self._search_finish(job)
            return True
        if job.phase == "candidates":
            job.candidates = sorted(job.numbers)[-MAX_CANDIDATES:]
            job.leaf_list = leaves(job.tree)
            job.phase = "leaves"
        elif job.phase == "leaves":
            job.leaf_numbers[job.leaf_list[len(job.leaf_numbers)]] = set(job.numbers)
        elif job.phase == "uids":
            self._search_open_uncached(job)
            return True
        elif job.phase == "open":
            job.phase = "done"
            self._search_finish_when_opened(job)
            return True
        if not job.candidates:
            self._search_finish(job)
        elif len(job.leaf_numbers) < len(job.leaf_list):
            leaf = job.leaf_list[len(job.leaf_numbers)]
            self._search_send(job, b"SEARCH " + _set(job.candidates) + b" " + leaf.text)
        else:
            job.phase = "uids"
            self._search_send(job, b"FETCH " + _set(job.candidates) + b" (UID)")
        return True

    def _search_open_uncached(self, job: SearchJob) -> None:
        wanted: list[int] = []
        for number in job.candidates:
            uid = job.uids.get(number)
            view = (self.views.get(self.mailbox, uid)
                    if uid is not None and self.mailbox is not None else None)
            if view is not None:
                job.views[number] = view
            elif uid is not None:
                wanted.append(number)
        if not wanted:
            job.phase = "done"
            self._search_finish(job)
            return
        job.phase = "open"
        self._search_send(job, b"FETCH " + _set(wanted) + b" (UID BODY.PEEK[])")

    def search_opened(self, job: SearchJob, result: MessageOpened) -> None:
        number = job.opening.pop(result.request_id, None)
        if number is None:
            return
        if result.outcome == "opened":  # the message as the client sees it, status included
            try:
                view = MessageView(result.content)
            except Exception:
                view = None
            if view is not None:
                job.views[number] = view
                uid = job.uids.get(number)
                if uid is not None and self.mailbox is not None and not result.plain:
                    self.views.put(self.mailbox, uid, view, decrypted=result.decrypted,
                                   unlock=result.unlock)
        self._search_finish_when_opened(job)

    def _search_finish_when_opened(self, job: SearchJob) -> None:
        if job.phase == "done" and not job.opening:
            self._search_finish(job)

    def _search_finish(self, job: SearchJob) -> None:
        leaf_results = {leaf: job.leaf_numbers.get(leaf, set()) for leaf in job.leaf_list}
        try:
            # for an opened message the proxy's verdict replaces the upstream's (which saw
            # ciphertext: NOT BODY x would find it); for every other message, the upstream's
            found = (job.found - job.views.keys()) | matching(
                job.tree, job.views, leaf_results, job.command.charset)
        except Exception:  # the upstream's result stands
            found = job.found
        self._out.append(SendToClient(_answer(job, sorted(found))))
        self._out.append(SendToClient(job.done))
        self._inflight = None


def _set(numbers: list[int]) -> bytes:
    return SequenceSet.compact(numbers).render()


def _answer(job: SearchJob, found: list[int]) -> bytes:
    """`* SEARCH ...`, or `* ESEARCH` (RFC 4731) with what RETURN asked for."""
    if job.returns is None:
        return b"* SEARCH" + b"".join(b" %d" % n for n in found) + b"\r\n"
    parts = [b'* ESEARCH (TAG "' + job.command.tag + b'")']
    if job.command.uid:
        parts.append(b"UID")
    if found and "MIN" in job.returns:
        parts.append(b"MIN %d" % found[0])
    if found and "MAX" in job.returns:
        parts.append(b"MAX %d" % found[-1])
    if "COUNT" in job.returns:
        parts.append(b"COUNT %d" % len(found))
    if found and "ALL" in job.returns:
        parts.append(b"ALL " + _set(found))
    return b" ".join(parts) + b"\r\n"
