"""How the IMAP session answers a content FETCH (a part of `imap.session.ImapSession`, kept
here to keep that module readable): each message of the upstream's whole-message answer is
opened through `OpenMessage`, then answered in order from the bytes the client is shown;
`\\Seen` is set afterwards where the client's items would have set it; the tagged response
says what could not be shown (locked key, unknown transfer encoding, a message whose views
failed).

May import: imap.wire, imap.events, imap.inflight, imap.fetch_rewrite, mime, stdlib.
"""

from __future__ import annotations

from smime_proxy.imap import fetch_rewrite
from smime_proxy.imap.events import (
    Action,
    MessageOpened,
    OpenMessage,
    SendToClient,
    SendToUpstream,
    SessionSettings,
)
from smime_proxy.imap.inflight import FetchEntry, FetchJob, InternalCommand, RelayedCommand
from smime_proxy.imap.wire import FetchResponse, ParseError, parse_response
from smime_proxy.mime.transfer import UnknownCte


class ContentFetch:
    """The content-FETCH half of the session (a mixin: the session provides the state)."""

    settings: SessionSettings
    user: str | None
    read_only: bool
    _inflight: RelayedCommand | FetchJob | InternalCommand | None
    _counter: int
    _out: list[Action]

    def _new_tag(self) -> bytes:
        raise NotImplementedError

    def _fatal(self, reason: str, bye: bytes = b"* BYE Internal error, closing\r\n") -> None:
        raise NotImplementedError

    def _fetch_data(self, job: FetchJob, raw: bytes) -> None:
        try:
            response = parse_response(raw)
        except ParseError:
            self._fatal("bad upstream FETCH response", b"* BYE Upstream server error\r\n")
            return
        assert isinstance(response, FetchResponse)
        items = {item.render(): value for item, value in response.items}
        stored = items.get(fetch_rewrite.WHOLE_NAME)
        if fetch_rewrite.WHOLE_NAME not in items:
            # not an answer to our FETCH: a flag update of another message, say
            job.entries.append(FetchEntry(raw=fetch_rewrite.without_content(raw)))
            self._flush_job(job)
            return
        if stored is None:
            # BODY[] NIL: expunged by another session. Dovecot answers NIL for its content,
            # and so does the proxy: an empty message would be cached by the client as this one
            response_line = fetch_rewrite.answer(response.number, job.command, None, items,
                                                 mark_seen=False)
            job.entries.append(FetchEntry(raw=response_line))
            self._flush_job(job)
            return
        self._counter += 1
        entry = FetchEntry(number=response.number, request_id=self._counter,
                       stored=stored if isinstance(stored, bytes) else b"", items=items)
        job.entries.append(entry)
        self._out.append(OpenMessage(self._counter, self.user or "", entry.stored))

    def _flush_job(self, job: FetchJob) -> None:
        """Answer the messages opened so far, in order; finish when all are answered."""
        while job.entries:
            entry = job.entries[0]
            if entry.request_id is None:
                if entry.raw:
                    self._out.append(SendToClient(entry.raw))
                job.entries.popleft()
                continue
            if entry.result is None:
                return
            job.entries.popleft()
            self._answer(job, entry, entry.result)
        if job.done is None or job.store_tag is not None:
            return
        if job.seen_uids and job.done_ok:
            tag = self._new_tag()
            job.store_tag = tag
            uids = b",".join(b"%d" % uid for uid in job.seen_uids)
            self._out.append(SendToUpstream(tag + b" UID STORE " + uids
                                            + b" +FLAGS.SILENT (\\Seen)\r\n"))
            return
        tag = job.command.tag
        if not job.done_ok:
            final = job.done
        elif job.unknown_cte:
            final = tag + b" NO [UNKNOWN-CTE] Unknown Content-Transfer-Encoding\r\n"
        elif job.unviewable:
            final = (tag + b" NO [SERVERBUG] A message could not be shown (the others were);"
                     b" it is left as stored on the server\r\n")
        elif job.locked:
            final = (tag + b" NO [UNAVAILABLE] An encrypted message cannot be shown while"
                     b" the Secure Mail key is locked: unlock it, then fetch again\r\n")
        else:
            final = job.done
        self._out.append(SendToClient(final))
        self._inflight = None

    def _answer(self, job: FetchJob, entry: FetchEntry, result: MessageOpened) -> None:
        if result.outcome == "locked":
            if self.settings.locked_fetch != "passthrough":
                job.locked = True
                return
            shown = entry.stored
        elif result.outcome == "opened" and result.plain:
            shown = entry.stored
        else:
            shown = result.content
        command = job.command
        mark_seen = not self.read_only and fetch_rewrite.newly_seen(command, entry.items)
        try:
            response = fetch_rewrite.answer_shown(entry.number, command, shown, entry.stored,
                                                  entry.items, mark_seen=mark_seen)
        except UnknownCte:
            job.unknown_cte = True
            return
        if response is None:
            job.unviewable = True
            return
        if mark_seen:
            uid = entry.items.get(b"UID")
            if isinstance(uid, int):
                job.seen_uids.append(uid)
        self._out.append(SendToClient(response))
