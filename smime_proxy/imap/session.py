"""The IMAP proxy session: a sans-I/O state machine (events in, actions out; never awaits).

One `ImapSession` per client connection, with one upstream connection behind it (already
connected, TLS done and greeting read by the shell). The shell feeds it:

- `start()` once the upstream is ready (it asks the upstream for its CAPABILITY, then greets
  the client);
- `client_data(data)` / `upstream_data(data)`: bytes from either side (`b""` = closed);
- `client_tls_started()` after the STARTTLS handshake it was told to do;
- `message_opened(result)`: the outcome of an `OpenMessage` request it emitted.

and executes the returned actions in order: `SendToClient`, `SendToUpstream`, `Pause`
(wait, e.g. 2 s after a failed login), `StartClientTls` (send nothing more, discard anything
already read from the client, do the TLS handshake, then call `client_tls_started()`),
`OpenMessage` (decrypt + verify off the event loop: the IMAP core never imports crypto,
DESIGN), `Close`.

Behaviour:
- Before login the proxy answers CAPABILITY, NOOP, LOGOUT and STARTTLS itself, relays ID,
  LOGIN and AUTHENTICATE PLAIN (the upstream decides) and refuses the rest. LOGIN and
  AUTHENTICATE need TLS unless the shell says plaintext is allowed (loopback option):
  LOGINDISABLED is advertised then. A failed login is answered after a 2 s pause; literals
  before login are capped at 64 KiB. Bytes a client pipelines after STARTTLS are discarded
  (notes/security.md item 7). Capabilities the proxy cannot carry (COMPRESS, NOTIFY,
  PREVIEW/SNIPPET, SASL mechanisms other than PLAIN) are filtered out everywhere.
- After login every command is relayed as sent (tag kept). Commands whose answers only the
  upstream gives (NOOP, STATUS, STORE, SEARCH, non-content FETCH, ...: `PIPELINABLE`) are
  pipelined; any other waits until those in flight are answered. Content FETCHes are
  answered by `imap.fetch_answers` (plain messages: the upstream's own answer; S/MIME ones:
  opened through `OpenMessage`, answered from the bytes the client is shown; \\Seen set
  with `UID STORE +FLAGS.SILENT` where the client's items would have set it). A locked key
  on an encrypted message makes the FETCH end in `NO [UNAVAILABLE]` with no data for that
  message (or, with `locked_fetch: passthrough`, the raw S/MIME message). Large literals
  are streamed (`imap.streaming`).
- Internal commands use tags starting with `~spx`; a client tag with that prefix gets BAD.

Why its own wire and not an IMAP client library (aioimaplib serves the proxy's own work, see
`imap.upstream`): a proxy must pass literals, responses and extensions it does not
understand through byte for byte; a client library parses and rebuilds everything it reads.

The actions and results are in `imap.events`, the capability filter in `imap.negotiation`,
the answering of content FETCHes in `imap.fetch_answers`, logins in `imap.login`, Sent
and Drafts copies sealed at rest in `imap.stored_copies`, conversions asked for by keyword in
`imap.keyword_requests`.

May import: errors, throttle, imap.wire, imap.events, imap.inflight, imap.negotiation,
imap.fetch_answers, imap.fetch_rewrite, imap.keyword_requests, imap.login, imap.search_job,
imap.streaming, imap.stored_copies, imap.uid_map, imap.view_cache, imap.views, mime,
stdlib.
"""

from __future__ import annotations

import functools
import re
from collections import deque
from collections.abc import Callable
from typing import Final, Literal

from smime_proxy.errors import PeerProtocolError
from smime_proxy.imap import fetch_rewrite
from smime_proxy.imap.events import (
    Action,
    Close,
    CopySealed,
    MailLogin,
    MessageOpened,
    OpenMessage,
    Pause,
    SealCopy,
    SendToClient,
    SendToUpstream,
    SessionSettings,
    StartClientTls,
)
from smime_proxy.imap.fetch_answers import ContentFetch
from smime_proxy.imap.inflight import (
    AppendJob,
    FetchJob,
    InFlight,
    InternalCommand,
    RelayedCommand,
    SearchJob,
    Stream,
)
from smime_proxy.imap.keyword_requests import Conversion, KeywordRequests, requested_conversions
from smime_proxy.imap.login import MAX_LITERAL_BEFORE_LOGIN, Logins
from smime_proxy.imap.negotiation import (
    capabilities_in,
    rewrite_capabilities,
    shown_capabilities,
)
from smime_proxy.imap.search_job import EncryptedSearch
from smime_proxy.imap.stored_copies import StoredCopies
from smime_proxy.imap.streaming import MAX_MESSAGE, MAX_STREAMED, STREAM_AT, StreamedLiterals
from smime_proxy.imap.uid_map import UidMap
from smime_proxy.imap.view_cache import MailboxKey, ViewCache
from smime_proxy.imap.wire import (
    MAX_LINE,
    NEED_DATA,
    ClientFramer,
    Command,
    ConnectionClosed,
    ContinuationRequest,
    FetchCommand,
    FramingError,
    GenericCommand,
    LiteralChunk,
    LiteralEnd,
    LiteralRejected,
    LiteralStart,
    LoginCommand,
    Message,
    MessageTail,
    ParseError,
    SearchCommand,
    SelectCommand,
    ServerFramer,
    TruncatedMessage,
    parse_command,
    split_at_sync_literals,
    use_nonsync_literals,
)
from smime_proxy.throttle import LoginGate, OpenGate

__all__ = [
    "Action",
    "Close",
    "CopySealed",
    "ImapSession",
    "MailLogin",
    "MessageOpened",
    "OpenMessage",
    "Pause",
    "SealCopy",
    "SendToClient",
    "SendToUpstream",
    "SessionSettings",
    "StartClientTls",
]

INTERNAL_TAG: Final = b"~spx"
MAX_BAD_BEFORE_LOGIN: Final = 10
# Relayed as they are and answered by the upstream alone: these may be pipelined
PIPELINABLE: Final = frozenset({
    "NOOP", "CHECK", "STATUS", "LIST", "LSUB", "STORE", "COPY", "MOVE", "EXPUNGE", "SEARCH",
    "SORT", "THREAD", "FETCH", "NAMESPACE", "GETQUOTA", "GETQUOTAROOT", "GETMETADATA",
    "MYRIGHTS", "GETACL", "LISTRIGHTS", "SUBSCRIBE", "UNSUBSCRIBE", "CREATE", "DELETE",
    "RENAME"})
_FETCH: Final = re.compile(rb"\* [0-9]+ FETCH ", re.IGNORECASE)
_UIDVALIDITY: Final = re.compile(rb"\* OK \[UIDVALIDITY ([0-9]{1,10})\]", re.IGNORECASE)


@functools.lru_cache(maxsize=16)
def _upper_set(caps: tuple[str, ...]) -> frozenset[str]:
    """The capabilities upper-cased, one set for all the sessions of an upstream (a set
    kept by each session made each IDLE session 2 KB larger)."""
    return frozenset(c.upper() for c in caps)


class ImapSession(Logins, ContentFetch, EncryptedSearch, StoredCopies, StreamedLiterals,
                  KeywordRequests):
    """See the module docstring."""

    def __init__(self, settings: SessionSettings, gate: LoginGate | None = None,
                 views_for: Callable[[str], ViewCache] | None = None) -> None:
        """`views_for(login)`: the cache of opened views for the user once logged in."""
        self.settings = settings
        self.gate: LoginGate = gate if gate is not None else OpenGate()
        self.client = ServerFramer(max_line_length=MAX_LINE, max_message_size=MAX_MESSAGE,
                                   max_literal_size=MAX_LITERAL_BEFORE_LOGIN)
        self.upstream = ClientFramer(max_line_length=MAX_LINE, max_message_size=MAX_MESSAGE,
                                     max_literal_size=MAX_STREAMED, stream_threshold=STREAM_AT)
        self.up_stream: Stream | None = None  # a response being streamed (imap.streaming)
        self.client_stream: Stream | None = None  # a command being streamed
        self.state: Literal["starting", "not_authenticated", "authenticated", "closed"] = (
            "starting"
        )
        self.user: str | None = None
        self.tls_active = settings.tls_active
        self.starttls_available = settings.starttls_available and not settings.tls_active
        self.upstream_caps: tuple[str, ...] = ()
        self._inflight: InFlight | None = None
        self.mailbox_uses: dict[bytes, frozenset[str]] = {}  # imap.stored_copies
        self._pipelined: dict[bytes, RelayedCommand] = {}  # tag -> relayed, not yet answered
        self._held: bytes | None = None  # a command waiting for the pipelined ones to end
        self._counter = 0  # OpenMessage request ids
        self._tags = 0  # internal command tags
        self._bad_count = 0
        self._awaiting_tls = False
        self._logging_out = False
        self.read_only = False  # the selected mailbox
        self.known_plain: set[int] = set()  # UIDs of the selected mailbox needing no opening
        self.uid_map = UidMap()  # its message numbers' UIDs, as far as seen (a prediction)
        self.views = ViewCache()  # nothing is kept before login
        self._views_for = views_for
        self.mailbox: MailboxKey | None = None
        self._selecting: bytes | None = None  # the mailbox name of a SELECT in flight
        self._out: list[Action] = []

    # -- inputs ----------------------------------------------------------------------------

    @property
    def pending_opens(self) -> tuple[int, int]:
        """Messages handed out to be opened and not yet back, and their stored bytes."""
        job = self._inflight
        return job.pending_opens() if isinstance(job, FetchJob | SearchJob) else (0, 0)

    @property
    def busy(self) -> bool:
        """A command is in progress (graceful stop waits for this)."""
        return bool(self._pipelined) or self._held is not None or (
            self._inflight is not None and not (
                isinstance(self._inflight, RelayedCommand) and self._inflight.client_continues))

    def start(self) -> list[Action]:
        tag = self._new_tag()
        self._inflight = InternalCommand(tag, "capability")
        return [SendToUpstream(tag + b" CAPABILITY\r\n")]

    def client_data(self, data: bytes) -> list[Action]:
        if self.state == "closed":
            return []
        if self._awaiting_tls:
            return []  # pipelined after STARTTLS: discarded (security item 7)
        self.client.receive_data(data)
        return self._run()

    def client_tls_started(self) -> list[Action]:
        self._awaiting_tls = False
        self.tls_active = True
        self.starttls_available = False
        return self._run()

    def upstream_data(self, data: bytes) -> list[Action]:
        if self.state == "closed":
            return []
        self.upstream.receive_data(data)
        if self.upstream.literal_missing:  # a piece of a message still coming: nothing to do
            return []
        return self._run()

    def take_literal_piece(self, data: bytes) -> bool:
        """Take upstream bytes only when they continue a literal without reaching its end
        (nothing to do then): whether taken (if not, `upstream_data` must have them)."""
        if self.state == "closed" or len(data) >= self.upstream.literal_missing:
            return False
        self.upstream.receive_data(data)
        return True

    def copy_sealed(self, result: CopySealed) -> list[Action]:
        job = self._inflight
        if self.state == "closed" or not isinstance(job, AppendJob):
            return []
        self._copy_sealed(job, result)
        return self._run()

    def message_opened(self, result: MessageOpened) -> list[Action]:
        job = self._inflight
        if self.state != "closed" and isinstance(job, SearchJob):
            self.search_opened(job, result)
            return self._run()
        if self.state == "closed" or not isinstance(job, FetchJob):
            return []
        for entry in job.entries:
            if entry.request_id == result.request_id:
                entry.result = result
                break
        self._flush_job(job)
        return self._run()

    # -- the loop --------------------------------------------------------------------------

    def _run(self) -> list[Action]:
        try:
            self._pump_upstream()
            self._pump_client()
        except FramingError as exc:
            self._fatal(f"protocol error: {type(exc).__name__}")
        out, self._out = self._out, []
        return out

    def _fatal(self, reason: str, bye: bytes = b"* BYE Internal error, closing\r\n") -> None:
        if self.state != "closed":
            self._out.append(SendToClient(bye))
            self._out.append(Close(reason))
            self.state = "closed"

    def _new_tag(self) -> bytes:
        self._tags += 1
        return INTERNAL_TAG + b"%d" % self._tags

    # -- upstream side ---------------------------------------------------------------------

    def _pump_upstream(self) -> None:
        while self.state != "closed":
            try:
                event = self.upstream.next_event()
            except TruncatedMessage:
                self._fatal("upstream closed", b"* BYE Upstream server connection lost\r\n")
                return
            except FramingError:
                self._fatal("upstream protocol error", b"* BYE Upstream server error\r\n")
                return
            if event is NEED_DATA:
                return
            if isinstance(event, ConnectionClosed):
                if self._logging_out:
                    self._out.append(Close("logout"))
                    self.state = "closed"
                else:
                    self._fatal("upstream closed",
                                b"* BYE Upstream server connection lost\r\n")
                return
            if isinstance(event, Message):
                self._upstream_message(event.raw)
            elif isinstance(event, LiteralStart):
                self._upstream_literal(event)
            elif isinstance(event, LiteralChunk) and self.up_stream is not None:
                self._upstream_piece(self.up_stream, event.data)
            elif isinstance(event, MessageTail):
                self._upstream_tail(event.raw)
            elif not isinstance(event, LiteralEnd):
                self._fatal("unexpected upstream event")

    def _upstream_message(self, raw: bytes) -> None:
        job = self._inflight
        if raw.startswith(b"+"):
            self._upstream_continuation(raw)
            return
        if raw.startswith(b"* "):
            self._upstream_untagged(raw)
            return
        tag = raw.split(b" ", 1)[0]
        relayed = self._pipelined.pop(tag, None)
        if relayed is not None:
            ok = raw[len(tag) + 1 :].upper().startswith(b"OK")
            self._tagged_with_requests(relayed, self._filter_caps_in(raw), ok)
            return
        if isinstance(job, InternalCommand) and tag == job.tag:
            self._inflight = None
            if not raw[len(tag) + 1 :].upper().startswith(b"OK"):
                self._fatal("upstream refused CAPABILITY")
                return
            self.state = "not_authenticated"
            caps = b" ".join(c.encode("ascii") for c in self._caps())
            self._out.append(SendToClient(b"* OK [CAPABILITY " + caps + b"] smime-proxy ready\r\n"))
            return
        if isinstance(job, RelayedCommand) and tag == job.tag:
            self._inflight = None
            ok = raw[len(tag) + 1 :].upper().startswith(b"OK")
            if job.throttled is not None:  # our refusal, after the upstream's "*" answer
                self._out.append(SendToClient(tag + b" " + job.throttled))
                return
            if job.login:
                self._login_answered(job, raw[len(tag) + 1 :], ok)
            if job.select:
                # EXAMINE or a read-only SELECT: fetching sets no \Seen (RFC 9051 6.3.3)
                self.read_only = not ok or b"[READ-ONLY]" in raw.upper()
                if not ok:
                    self.mailbox = None
                self._selecting = None
            self._tagged_with_requests(job, self._filter_caps_in(raw), ok)
            return
        if isinstance(job, FetchJob) and self._fetch_tagged(job, tag, raw):
            return
        if isinstance(job, AppendJob) and self._append_tagged(job, tag):
            return
        if isinstance(job, SearchJob) and self._search_tagged(job, tag, raw):
            return
        self._fatal("unexpected tagged response", b"* BYE Upstream server error\r\n")

    def _upstream_continuation(self, raw: bytes) -> None:
        job = self._inflight
        if isinstance(job, RelayedCommand):
            if job.pieces:
                self._out.append(SendToUpstream(job.pieces.popleft()))
                return
            job.client_continues = True
            self._out.append(SendToClient(raw))
            return
        self._fatal("unexpected continuation", b"* BYE Upstream server error\r\n")

    def _upstream_untagged(self, raw: bytes) -> None:
        job = self._inflight
        upper = raw[:40].upper()
        if upper.startswith(b"* CAPABILITY ") or upper.startswith(b"* OK [CAPABILITY "):
            if isinstance(job, InternalCommand):
                self._remember_caps(raw)
                return
            if self.state == "starting":
                return
            raw = self._filter_caps_in(raw)
        elif self.state == "starting":
            return
        self.uid_map.observe(raw)
        is_fetch = _FETCH.match(raw, 0, 40) is not None
        if isinstance(job, FetchJob):
            if is_fetch:
                self._fetch_data(job, raw)
            else:
                self._fetch_other(job, raw)
            return
        if isinstance(job, SearchJob):
            self._search_untagged(job, raw)
            return
        if isinstance(job, AppendJob) and self._append_untagged(job, raw):
            return
        if self._selecting is not None:
            match = _UIDVALIDITY.match(raw)
            if match is not None:
                self.mailbox = (self._selecting, int(match[1]))
        if is_fetch and not (isinstance(job, RelayedCommand) and job.plain_fetch):
            raw = fetch_rewrite.without_content(raw)
            if not raw:
                return
        self._out.append(SendToClient(raw))

    # -- capabilities ------------------------------------------------------------------------

    def _remember_caps(self, raw: bytes) -> None:
        caps = capabilities_in(raw)
        if caps is not None:
            self.upstream_caps = caps

    def _filter(self, caps: tuple[str, ...]) -> list[str]:
        return shown_capabilities(caps, before_login=self.state != "authenticated",
                                  starttls=self.starttls_available,
                                  login_allowed=self._login_allowed())

    def _caps(self) -> list[str]:
        return self._filter(self.upstream_caps)

    def _filter_caps_in(self, raw: bytes) -> bytes:
        return rewrite_capabilities(raw, self._filter)

    def _upstream_has(self, name: str) -> bool:
        return name in _upper_set(self.upstream_caps)

    # -- client side ---------------------------------------------------------------------

    def _pump_client(self) -> None:
        while self.state not in ("closed", "starting") and not self._awaiting_tls:
            if self._held is not None:  # it waits for the pipelined commands to end
                if self._inflight is not None or self._pipelined:
                    return
                raw, self._held = self._held, None
                self._client_command(raw)
                continue
            job = self._inflight
            if job is not None and self.client_stream is None and not (
                    isinstance(job, RelayedCommand) and job.client_continues):
                return
            try:
                event = self.client.next_event()
            except FramingError as exc:
                bye = b"* BYE [TOOBIG] Line too long\r\n" if "line" in str(exc) else (
                    b"* BYE Protocol error\r\n")
                self._fatal(f"client protocol error: {type(exc).__name__}", bye)
                return
            if event is NEED_DATA:
                return
            if isinstance(event, ConnectionClosed):
                self._out.append(Close("client closed"))
                self.state = "closed"
                return
            if isinstance(event, ContinuationRequest):
                self._out.append(SendToClient(b"+ OK\r\n"))
                continue
            if isinstance(event, LiteralRejected):
                tag = event.tag if event.tag else b"*"
                if event.synchronizing:
                    self._out.append(SendToClient(tag + b" NO [TOOBIG] Literal too large\r\n"))
                    continue
                self._fatal("literal too large", b"* BYE [TOOBIG] Literal too large\r\n")
                return
            if isinstance(event, Message):
                if isinstance(job, RelayedCommand) and job.client_continues:
                    self._client_continuation(job, event.raw)
                else:
                    self._client_command(event.raw)
                continue
            if isinstance(event, LiteralStart):
                self._client_literal(event)
            elif isinstance(event, LiteralChunk) and self.client_stream is not None:
                self._client_piece(self.client_stream, event.data)
            elif isinstance(event, MessageTail):
                self._client_tail(event.raw)
            elif not isinstance(event, LiteralEnd):
                self._fatal("unexpected client event")
                return

    def _bad(self, tag: bytes, text: bytes) -> None:
        self._out.append(SendToClient(tag + b" BAD " + text + b"\r\n"))
        if self.state != "authenticated":
            self._bad_count += 1
            if self._bad_count >= MAX_BAD_BEFORE_LOGIN:
                self._fatal("too many bad commands", b"* BYE Too many invalid commands\r\n")

    def _client_command(self, raw: bytes) -> None:
        first = raw.split(b" ", 1)[0].rstrip(b"\r\n")
        if first.startswith(INTERNAL_TAG):
            self._bad(b"*", b"This tag prefix is reserved")
            return
        try:
            command = parse_command(raw)
        except (ParseError, PeerProtocolError):
            tag = first if re.fullmatch(rb"[A-Za-z0-9.\-_]{1,64}", first) else b"*"
            self._bad(tag, b"Error in IMAP command")
            return
        name, tag = command.name, command.tag
        if self._pipelined and not self._may_pipeline(command, raw):
            self._held = raw  # after the commands in flight (the loop comes back to it)
            return
        if name in ("CAPABILITY", "NOOP", "LOGOUT", "STARTTLS") and (
            self.state != "authenticated" or name == "STARTTLS"
        ):
            self._local(command.tag, name, raw)
            return
        if name in ("COMPRESS", "NOTIFY"):
            self._out.append(SendToClient(tag + b" NO [CANNOT] Not supported by the proxy\r\n"))
            return
        if self.state != "authenticated":
            if name == "LOGIN" and isinstance(command, LoginCommand):
                if not self._login_allowed():
                    self._out.append(SendToClient(
                        tag + b" NO [PRIVACYREQUIRED] Use STARTTLS or TLS first\r\n"))
                    return
                self._login(tag, raw, command.username.decode("utf-8", "replace"),
                            command.password)
                return
            if name == "AUTHENTICATE" and isinstance(command, GenericCommand):
                self._authenticate(command, raw)
                return
            if name == "ID":
                self._relay(tag, raw)
                return
            self._bad(tag, b"Log in first")
            return
        if name in ("LOGIN", "AUTHENTICATE"):
            self._bad(tag, b"Already logged in")
            return
        if isinstance(command, SearchCommand) and self._start_search(command):
            return
        if name == "APPEND" and self._start_append(raw):
            return
        if isinstance(command, FetchCommand) and fetch_rewrite.needs_rewrite(command):
            if fetch_rewrite.only_known_plain(command, self.known_plain):
                self._relay(tag, raw, plain_fetch=True)
            else:
                self._start_fetch(command)
            return
        if name == "LOGOUT":
            self._logging_out = True
        requests = requested_conversions(raw) if name == "STORE" else ()
        if self._may_pipeline(command, raw):
            self._relay(tag, raw, pipelined=True, requests=requests)
            return
        if name in ("SELECT", "EXAMINE", "UNSELECT", "CLOSE"):
            # another mailbox (or none): what was learnt about the last one no longer holds
            self.known_plain = set()
            self.mailbox = None
            self._selecting = None
            self.uid_map.forget()
            if isinstance(command, SelectCommand):  # INBOX is case-insensitive (RFC 9051 5.1)
                self.uid_map.selected()
                inbox = command.mailbox.upper() == b"INBOX"
                self._selecting = b"INBOX" if inbox else command.mailbox
        self._relay(tag, raw, select=name in ("SELECT", "EXAMINE"), requests=requests)

    def _may_pipeline(self, command: Command, raw: bytes) -> bool:
        """Whether a command may go upstream while others are in flight (RFC 9051 5.5: the
        upstream orders them; the client decided they may run together). Only commands the
        proxy relays as they are, whose answers it does not read, in one piece."""
        return (self.state == "authenticated" and command.name in PIPELINABLE
                and command.tag not in self._pipelined
                and not (isinstance(command, FetchCommand)
                         and fetch_rewrite.needs_rewrite(command))
                and not (isinstance(command, SearchCommand) and self._searches_text(command))
                and (b"{" not in raw or self._upstream_has("LITERAL+")))

    def _relay(self, tag: bytes, raw: bytes, *, login: bool = False,
               login_user: str | None = None, login_secret: bytes = b"",
               sasl_plain: bool = False, select: bool = False, plain_fetch: bool = False,
               pipelined: bool = False, requests: tuple[Conversion, ...] = ()) -> None:
        if b"{" not in raw:  # no literal: one line, as the framer cut it (most commands)
            pieces = deque((raw,))
        else:
            if self._upstream_has("LITERAL+"):
                raw = use_nonsync_literals(raw, None)
            elif self._upstream_has("LITERAL-"):
                raw = use_nonsync_literals(raw)
            pieces = deque(split_at_sync_literals(raw))
        command = RelayedCommand(tag, login=login, login_user=login_user,
                                 login_secret=login_secret, sasl_plain=sasl_plain,
                                 select=select, plain_fetch=plain_fetch, requests=requests)
        if pipelined:
            self._pipelined[tag] = command
        else:
            self._inflight = command
        command.pieces = pieces
        self._out.append(SendToUpstream(pieces.popleft()))
