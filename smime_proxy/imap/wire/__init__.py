"""Sans-I/O IMAP wire core: framing, lexing, parsing and rendering. Stdlib only; never awaits.

Modules (imports only go from later to earlier in this list, plus `smime_proxy.errors`):
`errors` (PeerProtocolError / LocalProtocolError subclasses), `values` (the value model and
`render`), `framing` (ClientFramer / ServerFramer and their events), `lexer` (`Reader`),
`sequence` (`SequenceSet`), `sections` (`Section`, `FetchItem`), `commands`
(`parse_command` and the command classes), `responses` (`parse_response` and the response
classes). The names most callers need are re-exported here.

May import: imap.wire.
"""

from .commands import (
    Command,
    CopyCommand,
    FetchCommand,
    GenericCommand,
    LoginCommand,
    Modifier,
    SearchCommand,
    SelectCommand,
    StoreCommand,
    parse_command,
)
from .errors import (
    FramingError,
    LineTooLong,
    LiteralTooLarge,
    MessageTooLarge,
    ParseError,
    RenderError,
    TruncatedMessage,
)
from .framing import (
    MAX_LINE,
    NEED_DATA,
    ClientFramer,
    ConnectionClosed,
    ContinuationRequest,
    Event,
    LiteralChunk,
    LiteralEnd,
    LiteralRejected,
    LiteralStart,
    Message,
    MessageTail,
    NeedData,
    ServerFramer,
    split_at_sync_literals,
    use_nonsync_literals,
)
from .responses import (
    CapabilityResponse,
    ContinuationResponse,
    FetchHead,
    FetchResponse,
    Response,
    ResponseCode,
    TaggedResponse,
    UntaggedResponse,
    UntaggedStatus,
    parse_fetch_head,
    parse_fetch_tail,
    parse_response,
)
from .sections import FetchItem, Section
from .sequence import SeqRange, SequenceSet
from .values import Atom, Binary, Literal, Value, render, render_astring, render_nstring

__all__ = [
    "MAX_LINE",
    "NEED_DATA",
    "Atom",
    "Binary",
    "CapabilityResponse",
    "ClientFramer",
    "Command",
    "ConnectionClosed",
    "ContinuationRequest",
    "ContinuationResponse",
    "CopyCommand",
    "Event",
    "FetchCommand",
    "FetchHead",
    "FetchItem",
    "FetchResponse",
    "FramingError",
    "GenericCommand",
    "LineTooLong",
    "Literal",
    "LiteralChunk",
    "LiteralEnd",
    "LiteralRejected",
    "LiteralStart",
    "LiteralTooLarge",
    "LoginCommand",
    "Message",
    "MessageTail",
    "MessageTooLarge",
    "Modifier",
    "NeedData",
    "ParseError",
    "RenderError",
    "Response",
    "ResponseCode",
    "SearchCommand",
    "Section",
    "SelectCommand",
    "SeqRange",
    "SequenceSet",
    "ServerFramer",
    "StoreCommand",
    "TaggedResponse",
    "TruncatedMessage",
    "UntaggedResponse",
    "UntaggedStatus",
    "Value",
    "parse_command",
    "parse_fetch_head",
    "parse_fetch_tail",
    "parse_response",
    "render",
    "render_astring",
    "render_nstring",
    "split_at_sync_literals",
    "use_nonsync_literals",
]
