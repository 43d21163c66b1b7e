"""How the IMAP session answers a content FETCH (a part of `imap.session.ImapSession`, kept
here to keep that module readable).

Plain mail costs nothing extra (issue 10): a message that needs no opening (`mime.entity.
needs_opening`: not S/MIME, no incoming X-SMIME-Status) is answered with the upstream's own
response, relayed as it came. Up to three upstream passes, one after the other:

1. "sort": the client's set, with `UID` and the classification fields
   `BODY.PEEK[HEADER.FIELDS (CONTENT-TYPE X-SMIME-STATUS)]` added, and the client's own items
   when none of them sets \\Seen. Each plain message's response goes to the client with the
   added items cut out (`imap.wire.spans`); a UID FETCH of UIDs already known to be plain
   skips the passes and is relayed as it is (see the session).
2. "plain": when the client's items set \\Seen, its own command for the plain messages (the
   upstream sets \\Seen and says so, exactly as without the proxy).
3. "open": the whole stored bytes (`BODY.PEEK[]`) of the S/MIME messages that the cache of
   opened views does not hold and the sort pass did not already bring; each is opened through
   `OpenMessage` and answered from the bytes the client is shown, with the non-content items
   of the sort pass; \\Seen is then set with `UID STORE +FLAGS.SILENT` where the client's
   items would have set it.

Responses keep the upstream's order where it matters: a FETCH never overtakes an untagged
response of another kind (an EXPUNGE renumbers what follows it). The tagged response says
what could not be shown (locked key, unknown transfer encoding, a message whose views
failed).

May import: imap.wire, imap.events, imap.inflight, imap.fetch_rewrite, imap.uid_map,
imap.view_cache, imap.views, mime, stdlib.
"""

from __future__ import annotations

from typing import Final

from smime_proxy.imap import fetch_rewrite
from smime_proxy.imap.events import (
    Action,
    MessageOpened,
    OpenMessage,
    SendToClient,
    SendToUpstream,
    SessionSettings,
)
from smime_proxy.imap.inflight import (
    FetchEntry,
    FetchJob,
    InFlight,
    Stream,
)
from smime_proxy.imap.uid_map import UidMap
from smime_proxy.imap.view_cache import MailboxKey, ViewCache
from smime_proxy.imap.views import MessageView
from smime_proxy.imap.wire import (
    FetchCommand,
    FetchItem,
    FetchResponse,
    ParseError,
    Section,
    parse_response,
)
from smime_proxy.imap.wire.sequence import SequenceSet
from smime_proxy.imap.wire.spans import (
    FetchSpans,
    fetch_spans,
    item_value,
    last_literal,
    metadata_items,
    uid_date_head,
    uid_literal_head,
    uid_size_head,
    uid_value,
    without_items,
)
from smime_proxy.mime.entity import (
    STATUS_HEADER,
    may_be_encrypted,
    needs_opening,
    without_field,
)
from smime_proxy.mime.transfer import UnknownCte

CLASSIFY: Final = FetchItem(
    "BODY", Section(text="HEADER.FIELDS", fields=(b"CONTENT-TYPE", b"X-SMIME-STATUS")), peek=True)
CLASSIFY_NAME: Final = CLASSIFY.response_name()
UID_NAME: Final = b"UID"
FALLBACK_MAX: Final = 1024 * 1024  # stored messages kept for showing as stored, if need be
SORT_NAMES: Final = frozenset({CLASSIFY_NAME, UID_NAME})
KNOWN_MARK: Final = FetchItem("INTERNALDATE")  # marks the answers of a planned sort pass
KNOWN_MARK_NAME: Final = b"INTERNALDATE"
# A client's own item that marks them instead (nothing added): a server sends it only when
# asked (RFC 9051 7.5.2; unsolicited FETCH data carries flags), and Dovecot spends about a
# fifth more on a resync with INTERNALDATE added (bench/imap.py's sync, 1000 messages).
CLIENT_MARK: Final = FetchItem("RFC822.SIZE")
_OPEN_NAMES: Final = frozenset({fetch_rewrite.WHOLE_NAME, UID_NAME})
LARGE_ANSWER: Final = 1024 * 1024  # an answer this large is sent as its pieces
MAX_KNOWN_PLAIN: Final = 200_000  # UIDs remembered as plain per selected mailbox
class ContentFetch:
    """The content-FETCH half of the session (a mixin: the session provides the state)."""

    settings: SessionSettings
    user: str | None
    read_only: bool
    known_plain: set[int]  # UIDs of the selected mailbox that need no opening
    uid_map: UidMap  # its message numbers' UIDs, as far as seen
    views: ViewCache
    mailbox: MailboxKey | None  # the selected mailbox, once its UIDVALIDITY is known
    up_stream: Stream | None  # a response being streamed from the upstream
    _inflight: InFlight | None
    _counter: int
    _out: list[Action]

    def _new_tag(self) -> bytes:
        raise NotImplementedError

    def _fatal(self, reason: str, bye: bytes = b"* BYE Internal error, closing\r\n") -> None:
        raise NotImplementedError

    # -- starting ---------------------------------------------------------------------------

    def _start_fetch(self, command: FetchCommand) -> None:
        """Send the sort pass (the job keeps the client's tag for it)."""
        if self._start_known(command):
            return
        self._send_sort(command, CLASSIFY, relays=not fetch_rewrite.sets_seen(command))

    def _send_sort(self, command: FetchCommand, added: FetchItem | None, *, relays: bool,
                   known: dict[int, MessageView] | None = None,
                   mark: bytes = KNOWN_MARK_NAME) -> None:
        """Send a sort pass: UID and `added` first, then the client's items (when it relays
        them; else its non-content ones and FLAGS); the job cuts out what the client did not
        ask for. `known`: the views a planned pass answers from (`_start_known`), whose
        answers carry `mark`."""
        asked = {item.response_name() for item in command.items}
        strip = set() if added is None else {added.response_name()} - asked
        if not command.uid and FetchItem("UID") not in command.items:
            strip.add(UID_NAME)
        items: list[FetchItem] = [FetchItem("UID")] if added is None else [
            FetchItem("UID"), added]
        for item in command.items:
            if (relays or not fetch_rewrite.is_content(item)) and item not in items:
                items.append(item)
        if not relays and fetch_rewrite.FLAGS not in items:
            items.append(fetch_rewrite.FLAGS)
        sort = FetchCommand(command.tag, command.uid, command.sequence_set, tuple(items), None,
                            command.modifiers)
        copies = known is not None and not relays and (
            self.read_only or not fetch_rewrite.sets_seen(command))
        self._inflight = FetchJob(command, relays, frozenset(strip),
                                  listing=fetch_rewrite.lists_only(command), known=known,
                                  locks=self.views.locks() if known is not None else 0,
                                  copy_plan=fetch_rewrite.copy_plan(command) if copies else None,
                                  mark=mark)
        self._out.append(SendToUpstream(sort.render()))

    def _start_known(self, command: FetchCommand) -> bool:
        """Plan the FETCH from what is known of each message it names (`imap.uid_map`), when
        every one is known plain or has a cached view: the sort pass then asks for no
        classification fields (the upstream need not read the messages), and for no content
        when a view will answer. `INTERNALDATE` marks its answers (an unsolicited FETCH
        carries flags, never that), or the client's own `RFC822.SIZE` when every message is
        plain (its items relayed in its order, less UID). False: not every message is
        known."""
        if self.mailbox is None:
            return False
        uids = self.uid_map.predict(command.sequence_set, by_uid=command.uid)
        if not uids:
            return False
        unknown = [uid for uid in uids if uid not in self.known_plain]
        known = self.views.get_all(self.mailbox, unknown) if unknown else {}
        if known is None:
            return False
        # all plain: the client's items, relayed as they come
        if not known and CLIENT_MARK in command.items:
            self._send_sort(command, None, relays=True, known=known,
                            mark=CLIENT_MARK.response_name())
        else:
            self._send_sort(command, KNOWN_MARK, relays=not known, known=known)
        return True

    # -- upstream responses -------------------------------------------------------------------

    def _fetch_other(self, job: FetchJob, raw: bytes) -> None:
        """An untagged response that is not a FETCH (EXISTS, EXPUNGE, ...): in order."""
        job.entries.append(FetchEntry(raw=raw, other=True))
        job.held += 1
        self._flush_job(job)

    def _pass_on(self, job: FetchJob, raw: bytes) -> None:
        """A FETCH response for the client as it is: now, unless it would overtake a queued
        response of another kind."""
        if job.held:
            job.entries.append(FetchEntry(raw=raw))
        else:
            self._out.append(SendToClient(raw))

    def _fetch_data(self, job: FetchJob, raw: bytes) -> None:
        if job.phase == "plain":
            self._pass_on(job, raw)
            return
        if job.phase == "sort" and job.known is not None:
            self._sorted_known(job, raw)
            return
        if job.phase == "sort" and self._sorted_usual(job, raw):
            return
        try:  # only as far as the items looked at (the sort pass puts them first)
            spans = fetch_spans(raw, _OPEN_NAMES if job.phase == "open" else SORT_NAMES)
        except ParseError:
            self._fatal("bad upstream FETCH response", b"* BYE Upstream server error\r\n")
            return
        if job.phase == "open":
            self._stored_bytes(job, raw, spans)
            return
        if spans.find(CLASSIFY_NAME) is None:
            # not an answer to the sort pass: a flag update of another message, say
            self._pass_on(job, fetch_rewrite.without_content(raw))
            return
        self._sorted(job, raw, spans)

    def _sorted_usual(self, job: FetchJob, raw: bytes) -> bool:
        """A sort-pass answer in the usual shape (UID, the classification fields as a
        literal, more items: `uid_literal_head`), answered as `_sorted` would without
        reading it all: a message that needs no opening; one to open whose whole stored
        bytes end the answer (a client's first read). False: for `_sorted`."""
        head = uid_literal_head(raw, CLASSIFY_NAME)
        if head is None:
            return False
        header = raw[head.value_start : head.rest_start - 1]
        if not needs_opening(header):
            self._known_plain(head.uid)
            if job.relays_items:
                self._pass_on(job, head.without(raw, UID_NAME in job.strip,
                                                CLASSIFY_NAME in job.strip))
            else:
                job.plain.append(head.uid if job.command.uid else head.number)
            return True
        if not job.relays_items or self.mailbox is None or head.second_start != head.uid_end:
            return False  # (items between UID and the fields would be lost below)
        whole = last_literal(raw, head.rest_start, fetch_rewrite.WHOLE_NAME)
        if whole is None or self._listed_while_locked(job, header):
            return False
        # what `_to_answer` keeps of this answer: the UID (the content items are computed),
        # also as the text `answer` would render for it
        entry = FetchEntry(number=head.number, uid=head.uid, items={UID_NAME: head.uid},
                           copied={UID_NAME: b"UID %d" % head.uid})
        view = self.views.get(self.mailbox, head.uid)
        self._queue(job, entry, view, None if view is not None else raw[whole[0] : whole[1]])
        return True

    @staticmethod
    def _classification(raw: bytes, spans: FetchSpans) -> tuple[bytes | None, int | None]:
        """A sort-pass response's classification fields (None: the message is gone) and
        UID. Raises ParseError."""
        classify = spans.find(CLASSIFY_NAME)
        if classify is None:
            raise ParseError("no classification fields", 0)
        return item_value(raw, classify), uid_value(raw, spans)

    def _known_plain(self, uid: int | None) -> None:
        """Remember a UID of the selected mailbox as plain (up to `MAX_KNOWN_PLAIN`)."""
        if uid is not None and len(self.known_plain) < MAX_KNOWN_PLAIN:
            self.known_plain.add(uid)

    def _sorted(self, job: FetchJob, raw: bytes, spans: FetchSpans) -> None:
        """One response of the sort pass: relay it, or queue the message for a later pass."""
        try:
            header, uid = self._classification(raw, spans)
        except ParseError:
            self._fatal("bad upstream FETCH response", b"* BYE Upstream server error\r\n")
            return
        if header is None or not needs_opening(header):
            # plain; or expunged by another session (the fields are NIL): then too the
            # upstream's own answer, whose forms only it knows (ENVELOPE of ten NILs,
            # RFC822.SIZE 0, BODY[] NIL: imaptest checks them)
            if header is not None:
                self._known_plain(uid)
            self._plain_answer(job, raw, spans, uid)
            return
        view = (self.views.get(self.mailbox, uid)
                if uid is not None and self.mailbox is not None else None)
        self._to_answer(job, raw, uid, view, header)

    def _plain_answer(self, job: FetchJob, raw: bytes, spans: FetchSpans,
                      uid: int | None) -> None:
        """A message answered by the upstream: this response, or the plain pass."""
        if job.relays_items:
            self._pass_on(job, without_items(raw, spans, job.strip))
        else:
            job.plain.append(uid if job.command.uid and uid is not None else spans.number)

    def _sorted_known(self, job: FetchJob, raw: bytes) -> None:
        """One response of a sort pass planned from what is known (`_start_known`): each
        message is answered by what its own UID says, whatever was predicted."""
        assert job.known is not None
        if job.relays_items:  # every message known plain: its answer less UID and the mark
            head = uid_date_head(raw) if job.mark == KNOWN_MARK_NAME else uid_size_head(raw)
            if head is not None and head.uid in self.known_plain:
                self._pass_on(job, head.without(raw, UID_NAME in job.strip,
                                                KNOWN_MARK_NAME in job.strip))
                return
        else:
            quick = metadata_items(raw)
            if quick is not None:  # the usual shape, read by one expression
                number, known_uid, items = quick
                if known_uid not in self.known_plain and job.copy_plan is not None:
                    view = self._planned_view(job, known_uid)
                    answer = None if view is None else fetch_rewrite.copying_or_none(
                        number, job.copy_plan, view, items)
                    if answer is not None:
                        self._pass_on(job, answer)
                        return
        try:  # without content, the answer is short: read whole
            spans = fetch_spans(raw, frozenset({job.mark, UID_NAME}) if job.relays_items
                                else frozenset())
            uid = uid_value(raw, spans)
        except ParseError:
            self._fatal("bad upstream FETCH response", b"* BYE Upstream server error\r\n")
            return
        if spans.find(job.mark) is None or uid is None:
            self._pass_on(job, fetch_rewrite.without_content(raw))  # not an answer of ours
            return
        if uid in self.known_plain:
            self._plain_answer(job, raw, spans, uid)
            return
        view = self._planned_view(job, uid)
        if view is not None and job.copy_plan is not None:
            # nothing to learn from the upstream's items: copied as it wrote them
            answer = fetch_rewrite.copying_or_none(spans.number, job.copy_plan, view,
                              {span.name: raw[span.start : span.end] for span in spans.items})
            if answer is not None:
                self._pass_on(job, answer)
                return
        self._to_answer(job, raw, uid, view, None)

    def _planned_view(self, job: FetchJob, uid: int) -> MessageView | None:
        """The view the plan found for `uid`, while no unlock of the user has ended since
        (else what the cache says now: nothing decrypted outlives its unlock)."""
        assert job.known is not None
        view = job.known.get(uid)
        if view is not None and self.views.locks() == job.locks:
            return view
        return self.views.get(self.mailbox, uid) if self.mailbox is not None else None

    def _to_answer(self, job: FetchJob, raw: bytes, uid: int | None,
                   view: MessageView | None, header: bytes | None) -> None:
        """Queue a message the proxy answers: from `view`, else once opened. `header`: its
        classification fields (None: not asked, it is opened whatever it is)."""
        # Only the items copied to the answer are parsed: the content items are computed
        # from the shown message (the whole stored message is taken by its offsets)
        stored = None
        try:
            if job.known is not None and not job.relays_items:  # no content was asked
                response = parse_response(raw)
            else:
                spans = fetch_spans(raw)  # all of it now
                content = frozenset(span.name for span in spans.items
                                    if fetch_rewrite.is_content_name(span.name))
                whole = spans.find(fetch_rewrite.WHOLE_NAME)
                response = parse_response(without_items(raw, spans, content))
                stored = item_value(raw, whole) if whole is not None else None
        except ParseError:
            self._fatal("bad upstream FETCH response", b"* BYE Upstream server error\r\n")
            return
        assert isinstance(response, FetchResponse)
        if (view is None and header is not None and job.relays_items
                and self._listed_while_locked(job, header)):
            try:
                self._pass_on(job, fetch_rewrite.as_stored_for_listing(raw, spans, job.strip))
            except ParseError:
                self._fatal("bad upstream FETCH response", b"* BYE Upstream server error\r\n")
            return
        items = {item.render(): value for item, value in response.items}
        self._queue(job, FetchEntry(number=response.number, uid=uid, items=items), view, stored)

    def _queue(self, job: FetchJob, entry: FetchEntry, view: MessageView | None,
               stored: bytes | None) -> None:
        """A message the proxy answers, in its place: from `view`, else once opened from
        `stored`, else once the open pass brings its stored bytes."""
        job.entries.append(entry)
        if view is not None:
            entry.view = view
            self._flush_job(job)
        elif stored is not None:
            self._open(entry, stored)
        elif entry.uid is not None:
            entry.waiting = True
            job.to_open[entry.uid] = entry
        else:
            self._fatal("upstream FETCH without UID", b"* BYE Upstream server error\r\n")

    def _listed_while_locked(self, job: FetchJob, header: bytes) -> bool:
        """Whether the client only lists an encrypted message while the key is locked: then
        it is answered as stored (`is_listing`), the folder never looks empty (issue 13)."""
        return (self.settings.locked_fetch != "passthrough" and job.listing
                and may_be_encrypted(header)  # remembered: one sender, few Content-Types
                and not self.views.key_unlocked())

    def _stored_bytes(self, job: FetchJob, raw: bytes, spans: FetchSpans) -> None:
        """One response of the open pass: the whole stored message of a waiting entry."""
        whole = spans.find(fetch_rewrite.WHOLE_NAME)
        entry = None
        if whole is not None:
            try:
                uid = uid_value(raw, spans)
            except ParseError:
                uid = None
            entry = job.to_open.pop(uid, None) if uid is not None else None
        if entry is None or whole is None:
            self._pass_on(job, fetch_rewrite.without_content(raw))
            return
        try:
            stored = item_value(raw, whole)
        except ParseError:
            stored = None
        entry.waiting = False
        if stored is None:  # expunged meanwhile
            entry.raw = b"".join(fetch_rewrite.answer(entry.number, job.command, None,
                                                      entry.items, mark_seen=False))
            self._flush_job(job)
            return
        self._open(entry, stored)

    def _open(self, entry: FetchEntry, stored: bytes) -> None:
        self._counter += 1
        entry.request_id = self._counter
        entry.stored = stored
        self._out.append(OpenMessage(self._counter, self.user or "", stored))

    def _fetch_tagged(self, job: FetchJob, tag: bytes, raw: bytes) -> bool:
        """A tagged response of one of the job's commands; False when it is none of them."""
        ok = raw[len(tag) + 1 :].upper().startswith(b"OK")
        if tag == job.command.tag and job.phase == "sort" and job.done is None:
            job.done, job.done_ok = raw, ok
            self._next_pass(job, ok)
        elif job.phase_tag is not None and tag == job.phase_tag:
            job.phase_tag = None
            if not ok:
                job.failure = job.command.tag + raw[len(tag) :]
            self._next_pass(job, ok)
        elif job.store_tag is not None and tag == job.store_tag:
            job.store_tag = None
            job.seen_uids.clear()
        else:
            return False
        self._flush_job(job)
        return True

    def _next_pass(self, job: FetchJob, ok: bool) -> None:
        command = job.command
        modifiers = tuple(m for m in command.modifiers if m.name != "VANISHED")
        if ok and job.phase == "sort" and job.plain:
            job.phase = "plain"
            job.phase_tag = self._new_tag()
            plain = FetchCommand(job.phase_tag, command.uid, SequenceSet.compact(job.plain),
                                 command.items, command.macro, modifiers)
            self._out.append(SendToUpstream(plain.render()))
            return
        if ok and job.phase in ("sort", "plain") and job.to_open:
            job.phase = "open"
            job.phase_tag = self._new_tag()
            numbers = (job.to_open if command.uid
                       else [e.number for e in job.to_open.values()])
            whole = FetchCommand(job.phase_tag, command.uid, SequenceSet.compact(numbers),
                                 (FetchItem("UID"), fetch_rewrite.WHOLE), None, modifiers)
            self._out.append(SendToUpstream(whole.render()))
            return
        job.phase = "done"
        for entry in job.to_open.values():  # never fetched (a pass failed): nothing to show
            entry.waiting = False
            entry.raw = b""
        job.to_open.clear()

    # -- answering ------------------------------------------------------------------------

    def _flush_job(self, job: FetchJob) -> None:
        """Answer the messages ready so far, in order; finish when all passes are done.
        Nothing is sent in the middle of a response streamed to the client."""
        if self.up_stream is not None and self.up_stream.mode == "relay":
            return
        while job.entries:
            entry = job.entries[0]
            if entry.is_raw:
                if entry.raw:
                    self._out.append(SendToClient(entry.raw))
                if entry.other:
                    job.held -= 1
                job.entries.popleft()
                continue
            if entry.view is not None:
                job.entries.popleft()
                if not self._answer_view(job, entry, entry.view):
                    job.unviewable = True
                continue
            if entry.result is None:
                return
            job.entries.popleft()
            self._answer(job, entry, entry.result)
        if job.phase != "done" or job.store_tag is not None:
            return
        if job.seen_uids and job.done_ok and job.failure is None:
            tag = self._new_tag()
            job.store_tag = tag
            uids = SequenceSet.compact(job.seen_uids).render()
            self._out.append(SendToUpstream(tag + b" UID STORE " + uids
                                            + b" +FLAGS.SILENT (\\Seen)\r\n"))
            return
        tag = job.command.tag
        assert job.done is not None
        if not job.done_ok:
            final = job.done
        elif job.failure is not None:
            final = job.failure
        elif job.unknown_cte:
            final = tag + b" NO [UNKNOWN-CTE] Unknown Content-Transfer-Encoding\r\n"
        elif job.too_large:
            final = (tag + b" NO [LIMIT] A message is larger than the proxy opens (64 MiB);"
                     b" the others were shown\r\n")
        elif job.unviewable:
            final = (tag + b" NO [SERVERBUG] A message could not be shown (the others were);"
                     b" it is left as stored on the server\r\n")
        elif job.locked:
            where = self.settings.unlock_url.encode("ascii", "replace")
            final = (tag + b" NO [UNAVAILABLE] This message is encrypted and your Secure Mail"
                     b" key is locked: unlock it" + (b" at " + where if where else b"")
                     + b", then open the message again\r\n")
        else:
            final = job.done
        self._out.append(SendToClient(final))
        self._inflight = None

    def _answer(self, job: FetchJob, entry: FetchEntry, result: MessageOpened) -> None:
        if result.outcome == "locked":
            if self.settings.locked_fetch != "passthrough" and not job.listing:
                job.locked = True
                return
            # listed only (`is_listing`), or passthrough: as stored, minus any incoming
            # X-SMIME-Status (only the proxy writes it)
            shown = without_field(entry.stored, STATUS_HEADER)
        elif result.outcome == "opened" and result.plain:
            shown = entry.stored
        else:
            shown = result.content
        # the bytes to show or, should their views fail, the stored bytes (incoming
        # X-SMIME-Status removed): one message must never end a session. A large stored
        # message is let go first (memory: the shown one and its answer are as large).
        stored, entry.stored = entry.stored, b""
        if shown is not stored and len(stored) > FALLBACK_MAX:
            stored = b""
        for candidate in (shown, None):
            if candidate is None:
                if not stored or job.unknown_cte:
                    break
                candidate = without_field(stored, STATUS_HEADER)
                if candidate == shown:
                    break
            try:
                view = (result.view if candidate is shown and isinstance(result.view,
                                                                         MessageView)
                        else MessageView(candidate))
            except Exception:  # noqa: S112 - try the stored bytes, then give up
                continue
            if self._answer_view(job, entry, view):
                if (result.outcome == "opened" and candidate is shown and entry.uid is not None
                        and self.mailbox is not None):
                    self.views.put(self.mailbox, entry.uid, view, decrypted=result.decrypted,
                                   unlock=result.unlock)
                return
            if job.unknown_cte:
                return
        job.unviewable = True

    def _answer_view(self, job: FetchJob, entry: FetchEntry, view: MessageView) -> bool:
        """Send the client's response for one message from its view; False when the views
        failed (UnknownCte is noted in the job, the client is told)."""
        command = job.command
        if entry.copied is not None and view.size < LARGE_ANSWER:  # no \\Seen to set
            if job.first_read_plan is None:
                job.first_read_plan = fetch_rewrite.copy_plan(command)
            copied = fetch_rewrite.copying_or_none(entry.number, job.first_read_plan, view,
                                                   entry.copied)
            if copied is not None:  # else the long way, which says what failed
                self._out.append(SendToClient(copied))
                return True
        mark_seen = not self.read_only and fetch_rewrite.newly_seen(command, entry.items)
        try:
            response = fetch_rewrite.answer(entry.number, command, view, entry.items,
                                            mark_seen=mark_seen)
        except UnknownCte:
            job.unknown_cte = True
            return True
        except Exception:  # a bug in the views: the caller decides
            return False
        if mark_seen and entry.uid is not None:
            job.seen_uids.append(entry.uid)
        if sum(map(len, response)) < LARGE_ANSWER:
            self._out.append(SendToClient(b"".join(response)))
            return True
        # a large answer goes as its pieces: the message's bytes are never copied into
        # another tens of MB (the shell writes a large piece as the client takes it)
        self._out.extend(SendToClient(piece) for piece in response if piece)
        return True

