"""Server responses: typed dataclasses, `parse_response(raw)` and `render()` to wire bytes.

Typed: tagged status (`TaggedResponse`), untagged status (`UntaggedStatus`: OK/NO/BAD/
PREAUTH/BYE, with an optional `ResponseCode`), continuation requests, `CapabilityResponse`
and `FetchResponse` (msg-att items as `FetchItem` -> value, values nested with literals, see
`values`). Any other untagged response (`* 3 EXISTS`, `* LIST ...`, `* VANISHED ...`) is an
`UntaggedResponse` that keeps its arguments raw. For a FETCH response whose big literal is
streamed (`framing.LiteralStart`), `parse_fetch_head` and `parse_fetch_tail` read the items
around the literal.

`parse_response` takes one `Message.raw` of `ClientFramer` and raises `ParseError` (a
`PeerProtocolError`); invalid objects raise `RenderError` (a `LocalProtocolError`).

May import: errors, imap.wire, stdlib.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from smime_proxy.errors import MissingItem

from .errors import ParseError, RenderError
from .lexer import Reader
from .sections import FetchItem, read_msg_att_name
from .values import Value, render

__all__ = [
    "CapabilityResponse",
    "ContinuationResponse",
    "FetchHead",
    "FetchResponse",
    "Response",
    "ResponseCode",
    "TaggedResponse",
    "UntaggedResponse",
    "UntaggedStatus",
    "parse_fetch_head",
    "parse_fetch_tail",
    "parse_response",
]

TAGGED_STATUSES: Final = frozenset({"OK", "NO", "BAD"})
UNTAGGED_STATUSES: Final = frozenset({"OK", "NO", "BAD", "PREAUTH", "BYE"})

_TAG_CHECK = re.compile(rb'[^(){ \x00-\x1f\x7f%*"\\+\x80-\xff]+')
_ATOM_CHECK = re.compile(rb'[^(){ \x00-\x1f\x7f%*"\\\]\x80-\xff]+')
_CODE_ARGS = re.compile(rb"[^\]\r\n\x00]+")
_TEXT_CHECK = re.compile(rb"[^\r\n\x00]*")
_NAME_CHECK = re.compile(r"[A-Z][A-Z0-9.\-_=]*")
_OPEN_LITERAL = re.compile(rb"~?\{[0-9]{1,19}\+?\}\r\n\Z")


def _check_text(text: bytes) -> None:
    if not _TEXT_CHECK.fullmatch(text):
        raise RenderError("response text holds CR, LF or NUL")


@dataclass(frozen=True, slots=True)
class ResponseCode:
    """resp-text-code: an upper-cased atom and its raw arguments (text up to the "]")."""

    name: str
    args: bytes | None = None

    def __post_init__(self) -> None:
        if (
            not self.name.isascii()
            or self.name != self.name.upper()
            or not _ATOM_CHECK.fullmatch(self.name.encode("ascii"))
        ):
            raise RenderError(f"bad response code {self.name!r}")
        if self.args is not None and not _CODE_ARGS.fullmatch(self.args):
            raise RenderError("bad response code arguments")

    def words(self) -> tuple[str, ...]:
        """The arguments split at spaces (e.g. the capabilities of `[CAPABILITY ...]`)."""
        if self.args is None:
            return ()
        return tuple(word.decode("ascii", "replace") for word in self.args.split(b" ") if word)

    def render(self) -> bytes:
        out = b"[" + self.name.encode("ascii")
        if self.args is not None:
            out += b" " + self.args
        return out + b"]"


def _read_resp_text(reader: Reader) -> tuple[ResponseCode | None, bytes]:
    """resp-text = ["[" resp-text-code "]" SP] [text]
    resp-text-code = ... / atom [SP 1*<any TEXT-CHAR except "]">]   (RFC 9051 section 9)

    The SP after "]" may be missing when no text follows (servers do that)."""
    code = None
    if reader.skip(b"["):
        name = reader.atom().decode("ascii").upper()
        args = None
        if reader.skip(b" "):
            match = _CODE_ARGS.match(reader.data, reader.pos)
            if match is None:
                raise reader.error("expected response code arguments")
            reader.pos = match.end()
            args = match[0]
        reader.expect(b"]")
        code = ResponseCode(name, args)
        if not reader.skip(b" "):
            reader.end()
            return code, b""
    text = reader.text()
    reader.end()
    return code, text


def _render_resp_text(code: ResponseCode | None, text: bytes) -> bytes:
    _check_text(text)
    if code is None:
        if text.startswith(b"["):
            raise RenderError("text that starts with [ would read as a response code")
        return text
    return code.render() + (b" " + text if text else b"")


@dataclass(frozen=True, slots=True)
class TaggedResponse:
    """response-tagged = tag SP resp-cond-state CRLF              (RFC 9051 section 9)"""

    tag: bytes
    status: str
    code: ResponseCode | None = None
    text: bytes = b""

    def __post_init__(self) -> None:
        if not _TAG_CHECK.fullmatch(self.tag) or self.status not in TAGGED_STATUSES:
            raise RenderError("bad tagged response")
        _check_text(self.text)

    def render(self) -> bytes:
        resp_text = _render_resp_text(self.code, self.text)
        return self.tag + b" " + self.status.encode("ascii") + b" " + resp_text + b"\r\n"


@dataclass(frozen=True, slots=True)
class UntaggedStatus:
    """resp-cond-state / resp-cond-bye / resp-cond-auth (PREAUTH), untagged."""

    status: str
    code: ResponseCode | None = None
    text: bytes = b""

    def __post_init__(self) -> None:
        if self.status not in UNTAGGED_STATUSES:
            raise RenderError(f"bad untagged status {self.status!r}")
        _check_text(self.text)

    def render(self) -> bytes:
        resp_text = _render_resp_text(self.code, self.text)
        return b"* " + self.status.encode("ascii") + b" " + resp_text + b"\r\n"


@dataclass(frozen=True, slots=True)
class ContinuationResponse:
    """continue-req = "+" SP (resp-text / base64) CRLF             (RFC 9051 section 9)
    The text is kept raw (a server may send "+" alone)."""

    text: bytes = b""

    def __post_init__(self) -> None:
        _check_text(self.text)

    def render(self) -> bytes:
        return b"+ " + self.text + b"\r\n"


@dataclass(frozen=True, slots=True)
class CapabilityResponse:
    """capability-data = "CAPABILITY" *(SP capability) SP "IMAP4rev1" *(SP capability)
    capability = ("AUTH=" auth-type) / atom                        (RFC 9051 section 9)"""

    capabilities: tuple[str, ...]

    def __post_init__(self) -> None:
        for capability in self.capabilities:
            if not capability.isascii() or not _ATOM_CHECK.fullmatch(capability.encode()):
                raise RenderError(f"bad capability {capability!r}")

    def has(self, name: str) -> bool:
        """Case-insensitive membership."""
        wanted = name.upper()
        return any(capability.upper() == wanted for capability in self.capabilities)

    def render(self) -> bytes:
        out = b"* CAPABILITY"
        for capability in self.capabilities:
            out += b" " + capability.encode("ascii")
        return out + b"\r\n"


@dataclass(frozen=True, slots=True)
class FetchResponse:
    """message-data = nz-number SP "FETCH" SP msg-att; items in the order sent."""

    number: int
    items: tuple[tuple[FetchItem, Value], ...]

    def __repr__(self) -> str:
        # Item names only: the values hold message content, which never goes to a log.
        names = " ".join(item.render().decode("ascii", "replace") for item, _ in self.items)
        return f"FetchResponse({self.number}, ({names}))"

    def __post_init__(self) -> None:
        if self.number < 1 or not self.items:
            raise RenderError("FETCH needs a message number and at least one item")

    def get(self, name: str) -> Value:
        """The value of the first item whose response name is `name` (e.g. "UID",
        "BODY[1.2]<0>"); MissingItem (a KeyError) when absent."""
        wanted = name.encode("ascii")
        for item, value in self.items:
            if item.render() == wanted:
                return value
        raise MissingItem(name)

    def render(self) -> bytes:
        parts = [item.render() + b" " + render(value) for item, value in self.items]
        return b"* %d FETCH (" % self.number + b" ".join(parts) + b")\r\n"


@dataclass(frozen=True, slots=True)
class UntaggedResponse:
    """Any other untagged response: `* [number SP] NAME [SP args]`, args raw (no CRLF)."""

    name: str
    number: int | None = None
    args: bytes = b""

    def __post_init__(self) -> None:
        if not _NAME_CHECK.fullmatch(self.name) or (self.number is not None and self.number < 0):
            raise RenderError(f"bad untagged response {self.name!r}")
        if self.number is None and (self.name in UNTAGGED_STATUSES or self.name == "CAPABILITY"):
            raise RenderError(f"{self.name} has its own response class")
        if self.number is not None and self.name == "FETCH":
            raise RenderError("FETCH has its own response class")

    def render(self) -> bytes:
        out = b"* "
        if self.number is not None:
            out += b"%d " % self.number
        out += self.name.encode("ascii")
        if self.args:
            out += b" " + self.args
        return out + b"\r\n"


Response = (
    TaggedResponse
    | UntaggedStatus
    | ContinuationResponse
    | CapabilityResponse
    | FetchResponse
    | UntaggedResponse
)


def _read_msg_att(reader: Reader) -> tuple[tuple[FetchItem, Value], ...]:
    """msg-att = "(" (msg-att-dynamic / msg-att-static) *(SP (msg-att-dynamic /
    msg-att-static)) ")"                                           (RFC 9051 section 9)
    Each value is read as a generic value (nstring, number, list, literal8...)."""
    reader.expect(b"(")
    items: list[tuple[FetchItem, Value]] = []
    while True:
        name = read_msg_att_name(reader)
        reader.sp()
        items.append((name, reader.value()))
        if reader.skip(b")"):
            return tuple(items)
        reader.sp()


def parse_response(raw: bytes) -> Response:
    """One complete response (`Message.raw` of `ClientFramer`), final CRLF included.

    response = *(continue-req / response-data) response-done      (RFC 9051 section 9)
    response-data = "*" SP (resp-cond-state / resp-cond-bye / mailbox-data / message-data /
                    capability-data / enable-data) CRLF
    """
    if not raw.endswith(b"\r\n"):
        raise ParseError("a response ends in CRLF", len(raw))
    reader = Reader(raw)
    try:
        return _parse_response(reader)
    except RenderError as exc:  # a value the grammar admits but the object model does not
        raise ParseError(str(exc), reader.pos) from None


def _parse_response(reader: Reader) -> Response:
    if reader.skip(b"+"):
        if not reader.skip(b" ") and not reader.at_end():
            raise reader.error("expected SP after +")
        text = reader.text()
        reader.end()
        return ContinuationResponse(text)
    if reader.skip(b"* "):
        if reader.peek() in range(0x30, 0x3A):
            number = reader.number()
            reader.sp()
            start = reader.pos
            name = reader.word()
            if name == "FETCH":
                if number == 0:
                    raise ParseError("FETCH needs a non-zero message number", start)
                reader.sp()
                items = _read_msg_att(reader)
                reader.end()
                return FetchResponse(number, items)
            return _generic(reader, reader.data, name, number, start)
        start = reader.pos
        name = reader.word()
        if name in UNTAGGED_STATUSES:
            reader.sp()
            code, text = _read_resp_text(reader)
            return UntaggedStatus(name, code, text)
        if name == "CAPABILITY":
            capabilities: list[str] = []
            while reader.skip(b" "):
                capabilities.append(reader.atom().decode("ascii"))
            reader.end()
            return CapabilityResponse(tuple(capabilities))
        return _generic(reader, reader.data, name, None, start)
    tag = reader.tag()
    reader.sp()
    status = reader.word()
    if status not in TAGGED_STATUSES:
        raise reader.error("expected OK, NO or BAD")
    if reader.at_end():  # "a1 OK" without text: common enough to accept
        reader.end()
        return TaggedResponse(tag, status)
    reader.sp()
    code, text = _read_resp_text(reader)
    return TaggedResponse(tag, status, code, text)


def _generic(
    reader: Reader, raw: bytes, name: str, number: int | None, start: int
) -> UntaggedResponse:
    if not _NAME_CHECK.fullmatch(name):
        raise ParseError(f"bad response name {name!r}", start)
    if reader.at_end():
        return UntaggedResponse(name, number)
    reader.sp()
    args = raw[reader.pos : -2]
    if not args:
        raise reader.error("expected arguments")
    return UntaggedResponse(name, number, args)


@dataclass(frozen=True, slots=True)
class FetchHead:
    """What precedes a streamed literal in a FETCH response: the message number (None when
    the head follows an earlier streamed literal of the same response), the complete items
    before it, and the item whose value the literal is."""

    number: int | None
    items: tuple[tuple[FetchItem, Value], ...]
    pending: FetchItem


def parse_fetch_head(head: bytes) -> FetchHead:
    """Read `LiteralStart.head` of a streamed FETCH literal: `* 12 FETCH (UID 5 BODY[] {n}`
    CRLF, or ` BINARY[2] ~{n}` CRLF after an earlier streamed literal. The literal must be
    the value of a top-level item (else ParseError)."""
    reader = Reader(head)
    try:
        return _parse_fetch_head(reader)
    except RenderError as exc:
        raise ParseError(str(exc), reader.pos) from None


def _parse_fetch_head(reader: Reader) -> FetchHead:
    head = reader.data
    number = None
    first = False
    if reader.skip(b"* "):
        number = reader.nz_number()
        reader.sp()
        if reader.word() != "FETCH":
            raise reader.error("not a FETCH response")
        reader.sp()
        reader.expect(b"(")
        first = True
    items: list[tuple[FetchItem, Value]] = []
    while True:
        if not first:
            reader.sp()
        first = False
        name = read_msg_att_name(reader)
        reader.sp()
        if _OPEN_LITERAL.match(head, reader.pos):
            return FetchHead(number, tuple(items), name)
        items.append((name, reader.value()))


def parse_fetch_tail(tail: bytes) -> tuple[tuple[FetchItem, Value], ...]:
    """Read `MessageTail.raw` of a FETCH response: the items after the last streamed literal
    (` UID 5)` CRLF, or `)` CRLF)."""
    reader = Reader(tail)
    try:
        return _parse_fetch_tail(reader)
    except RenderError as exc:
        raise ParseError(str(exc), reader.pos) from None


def _parse_fetch_tail(reader: Reader) -> tuple[tuple[FetchItem, Value], ...]:
    items: list[tuple[FetchItem, Value]] = []
    while not reader.skip(b")"):
        reader.sp()
        name = read_msg_att_name(reader)
        reader.sp()
        items.append((name, reader.value()))
    reader.end()
    return tuple(items)
