"""Client commands: typed dataclasses, `parse_command(raw)` and `render()` back to wire bytes.

Typed: FETCH, STORE, COPY/MOVE, SEARCH (each also in its UID form), LOGIN, SELECT/EXAMINE.
Every other command is a `GenericCommand` that keeps its arguments as raw bytes (literals
included), so the proxy can pass it on unchanged. `parse_command` takes one `Message.raw`
from `ServerFramer` and raises `ParseError` (a `PeerProtocolError`: answer `BAD`);
constructing or rendering an invalid object raises `RenderError` (a `LocalProtocolError`).
`render()` gives the whole command with its CRLF; `framing.split_at_sync_literals` cuts it
where a synchronising literal must wait for `+`.

Grammar: RFC 9051 section 6 and section 9, RFC 4466 (modifiers), RFC 7162 (CHANGEDSINCE,
UNCHANGEDSINCE, VANISHED), RFC 6851 (MOVE), RFC 5182 (`$`).

May import: imap.wire, stdlib.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from .errors import ParseError, RenderError
from .lexer import NUMBER64_MAX, Reader
from .sections import MACROS, FetchItem, read_fetch_att
from .sequence import SequenceSet
from .values import Atom, Value, render, render_astring

__all__ = [
    "Command",
    "CopyCommand",
    "FetchCommand",
    "GenericCommand",
    "LoginCommand",
    "Modifier",
    "SearchCommand",
    "SelectCommand",
    "StoreCommand",
    "parse_command",
]

_TAG_CHECK = re.compile(rb'[^(){ \x00-\x1f\x7f%*"\\+\x80-\xff]+')
_NAME_CHECK = re.compile(r"[A-Z][A-Z0-9.\-_]*")
# flag = "\Answered" / "\Flagged" / "\Deleted" / "\Seen" / "\Draft" / flag-keyword /
#        flag-extension; flag-keyword = atom; flag-extension = "\" atom   (RFC 9051 section 9)
_FLAG = re.compile(rb'\\?[^(){ \x00-\x1f\x7f%*"\\\]\x80-\xff]+')

# Modifiers with a known number of parameters (RFC 7162 sections 3.1.3, 3.1.4, 3.2.6).
_MODIFIER_ARITY: Final = {"CHANGEDSINCE": 1, "UNCHANGEDSINCE": 1, "VANISHED": 0}
# Commands whose arguments must not show in a repr (credentials, message content).
_SECRET_ARGS: Final = frozenset({"AUTHENTICATE", "APPEND"})


def _check_tag(tag: bytes) -> None:
    if not _TAG_CHECK.fullmatch(tag):
        raise RenderError(f"bad tag {tag!r}")


@dataclass(frozen=True, slots=True)
class Modifier:
    """A FETCH/STORE modifier (RFC 4466 section 2.4): name and zero or one parameter."""

    name: str
    params: tuple[Value, ...] = ()

    def __post_init__(self) -> None:
        if not _NAME_CHECK.fullmatch(self.name) or len(self.params) > 1:
            raise RenderError(f"bad modifier {self.name!r}")
        arity = _MODIFIER_ARITY.get(self.name)
        if arity is not None and arity != len(self.params):
            raise RenderError(f"{self.name} takes {arity} parameter(s)")
        if arity == 1 and not (
            isinstance(self.params[0], int) and 0 <= self.params[0] <= NUMBER64_MAX
        ):
            raise RenderError(f"{self.name} takes a mod-sequence value")

    def render(self) -> bytes:
        out = self.name.encode("ascii")
        for param in self.params:
            out += b" " + render(param)
        return out


def _read_modifiers(reader: Reader) -> tuple[Modifier, ...]:
    """fetch-modifiers / store-modifiers = SP "(" modifier *(SP modifier) ")"
    modifier = modifier-name [SP modif-params]                (RFC 4466 section 2.4, 2.5)
    "CHANGEDSINCE" SP mod-sequence-valzer / "VANISHED" / "UNCHANGEDSINCE" SP
    mod-sequence-valzer                                       (RFC 7162 section 7)"""
    reader.expect(b"(")
    modifiers: list[Modifier] = []
    while True:
        start = reader.pos
        name = reader.word()
        arity = _MODIFIER_ARITY.get(name)
        params: tuple[Value, ...] = ()
        if arity == 1 or (arity is None and reader.at(b" ")):
            reader.sp()
            params = (reader.value(),)
        try:
            modifiers.append(Modifier(name, params))
        except RenderError as exc:
            raise ParseError(str(exc), start) from None
        if reader.skip(b")"):
            return tuple(modifiers)
        reader.sp()


def _render_modifiers(modifiers: tuple[Modifier, ...]) -> bytes:
    if not modifiers:
        return b""
    return b" (" + b" ".join(m.render() for m in modifiers) + b")"


class Command:
    """Base of every parsed command: `tag`, `name` and `render()`."""

    __slots__ = ()
    tag: bytes

    @property
    def name(self) -> str:
        raise NotImplementedError

    def render(self) -> bytes:
        raise NotImplementedError


def _prefix(tag: bytes, uid: bool, name: str) -> bytes:
    _check_tag(tag)
    return tag + (b" UID " if uid else b" ") + name.encode("ascii")


@dataclass(frozen=True, slots=True)
class FetchCommand(Command):
    """[UID] FETCH sequence-set items [modifiers]. `macro` is ALL/FAST/FULL when the client
    used one (then `items` is its expansion)."""

    tag: bytes
    uid: bool
    sequence_set: SequenceSet
    items: tuple[FetchItem, ...]
    macro: str | None = None
    modifiers: tuple[Modifier, ...] = ()

    def __post_init__(self) -> None:
        if not self.items:
            raise RenderError("FETCH needs at least one item")
        if self.macro is not None and MACROS.get(self.macro) != self.items:
            raise RenderError("macro and items disagree")
        names = [m.name for m in self.modifiers]
        if "VANISHED" in names and not (self.uid and "CHANGEDSINCE" in names):
            raise RenderError("VANISHED needs UID FETCH and CHANGEDSINCE (RFC 7162 3.2.6)")

    @property
    def name(self) -> str:
        return "FETCH"

    @property
    def changedsince(self) -> int | None:
        for modifier in self.modifiers:
            if modifier.name == "CHANGEDSINCE":
                value = modifier.params[0]
                assert isinstance(value, int)
                return value
        return None

    @property
    def vanished(self) -> bool:
        return any(m.name == "VANISHED" for m in self.modifiers)

    def render(self) -> bytes:
        out = _prefix(self.tag, self.uid, "FETCH") + b" " + self.sequence_set.render() + b" "
        if self.macro is not None:
            out += self.macro.encode("ascii")
        else:
            out += b"(" + b" ".join(item.render() for item in self.items) + b")"
        return out + _render_modifiers(self.modifiers) + b"\r\n"


def _parse_fetch(reader: Reader, tag: bytes, uid: bool) -> FetchCommand:
    """fetch = "FETCH" SP sequence-set SP ("ALL" / "FULL" / "FAST" / fetch-att /
               "(" fetch-att *(SP fetch-att) ")") [fetch-modifiers]
                                         (RFC 9051 section 9, RFC 4466 section 2.4)
    uid = "UID" SP (copy / move / fetch / search / store / uid-expunge)"""
    reader.sp()
    sequence_set = SequenceSet.read(reader)
    reader.sp()
    tail = reader.data[reader.pos :]
    if len(tail) <= _TAIL_MEMO_MAX and b"{" not in tail:
        try:
            items, macro, modifiers = _fetch_tail_memo(tail)
            return FetchCommand(tag, uid, sequence_set, items, macro, modifiers)
        except (ParseError, RenderError):
            pass  # read again in place below: the error with its position in the command
    items, macro, modifiers = _read_fetch_tail(reader)
    start = reader.pos
    reader.end()
    try:
        return FetchCommand(tag, uid, sequence_set, items, macro, modifiers)
    except RenderError as exc:
        raise ParseError(str(exc), start) from None


_FetchTail = tuple[tuple[FetchItem, ...], str | None, tuple[Modifier, ...]]
# A client asks for the same few item lists again and again (one per message, read one by
# one): what follows the sequence set is parsed once per distinct text (the items are frozen
# values), which is most of a FETCH's parsing time. Only short texts without literals.
_TAIL_MEMO_MAX: Final = 200


@functools.lru_cache(maxsize=256)
def _fetch_tail_memo(tail: bytes) -> _FetchTail:
    reader = Reader(tail)
    parsed = _read_fetch_tail(reader)
    reader.end()
    return parsed


def _read_fetch_tail(reader: Reader) -> _FetchTail:
    """What follows `FETCH sequence-set SP`: the items or macro, then the modifiers."""
    macro: str | None = None
    if reader.skip(b"("):
        items = [read_fetch_att(reader)]
        while not reader.skip(b")"):
            reader.sp()
            items.append(read_fetch_att(reader))
    else:
        for candidate in MACROS:
            if reader.at_ci(candidate.encode("ascii")) and reader.data[
                reader.pos + len(candidate) : reader.pos + len(candidate) + 1
            ] in (b" ", b"\r"):
                macro = candidate
                reader.pos += len(candidate)
                break
        items = list(MACROS[macro]) if macro else [read_fetch_att(reader)]
    modifiers: tuple[Modifier, ...] = ()
    if reader.skip(b" "):
        modifiers = _read_modifiers(reader)
    return tuple(items), macro, modifiers


@dataclass(frozen=True, slots=True)
class StoreCommand(Command):
    """[UID] STORE sequence-set [modifiers] (+|-)FLAGS[.SILENT] (flags)."""

    tag: bytes
    uid: bool
    sequence_set: SequenceSet
    action: str  # "FLAGS", "+FLAGS" or "-FLAGS"
    silent: bool
    flags: tuple[Atom, ...]
    modifiers: tuple[Modifier, ...] = ()

    def __post_init__(self) -> None:
        if self.action not in ("FLAGS", "+FLAGS", "-FLAGS"):
            raise RenderError(f"bad STORE action {self.action!r}")
        for flag in self.flags:
            if not flag.isascii() or not _FLAG.fullmatch(flag.encode("ascii")):
                raise RenderError(f"bad flag {flag!r}")

    @property
    def name(self) -> str:
        return "STORE"

    @property
    def unchangedsince(self) -> int | None:
        for modifier in self.modifiers:
            if modifier.name == "UNCHANGEDSINCE":
                value = modifier.params[0]
                assert isinstance(value, int)
                return value
        return None

    def render(self) -> bytes:
        out = _prefix(self.tag, self.uid, "STORE") + b" " + self.sequence_set.render()
        out += _render_modifiers(self.modifiers)
        out += b" " + self.action.encode("ascii") + (b".SILENT" if self.silent else b"")
        out += b" (" + b" ".join(flag.encode("ascii") for flag in self.flags) + b")\r\n"
        return out


def _parse_store(reader: Reader, tag: bytes, uid: bool) -> StoreCommand:
    """store = "STORE" SP sequence-set [store-modifiers] SP store-att-flags
    store-att-flags = (["+" / "-"] "FLAGS" [".SILENT"]) SP (flag-list / (flag *(SP flag)))
    flag-list = "(" [flag *(SP flag)] ")"          (RFC 9051 section 9, RFC 4466 section 2.5)"""
    reader.sp()
    sequence_set = SequenceSet.read(reader)
    reader.sp()
    modifiers: tuple[Modifier, ...] = ()
    if reader.at(b"("):
        modifiers = _read_modifiers(reader)
        reader.sp()
    sign = b""
    if reader.peek() in (0x2B, 0x2D):
        sign = reader.data[reader.pos : reader.pos + 1]
        reader.pos += 1
    if not reader.at_ci(b"FLAGS"):
        raise reader.error("expected FLAGS")
    reader.pos += 5
    silent = False
    if reader.at_ci(b".SILENT"):
        reader.pos += 7
        silent = True
    reader.sp()
    flags: list[Atom] = []

    def flag() -> Atom:
        match = _FLAG.match(reader.data, reader.pos)
        if match is None:
            raise reader.error("expected a flag")
        reader.pos = match.end()
        return Atom(match[0].decode("ascii"))

    if reader.skip(b"("):
        if not reader.skip(b")"):
            flags.append(flag())
            while not reader.skip(b")"):
                reader.sp()
                flags.append(flag())
    else:
        flags.append(flag())
        while reader.skip(b" "):
            flags.append(flag())
    reader.end()
    return StoreCommand(
        tag, uid, sequence_set, sign.decode("ascii") + "FLAGS", silent, tuple(flags), modifiers
    )


@dataclass(frozen=True, slots=True)
class CopyCommand(Command):
    """[UID] COPY / MOVE sequence-set mailbox."""

    tag: bytes
    uid: bool
    sequence_set: SequenceSet
    mailbox: bytes
    move: bool = False

    @property
    def name(self) -> str:
        return "MOVE" if self.move else "COPY"

    def render(self) -> bytes:
        out = _prefix(self.tag, self.uid, self.name) + b" " + self.sequence_set.render()
        return out + b" " + render_astring(self.mailbox) + b"\r\n"


def _parse_copy(move: bool) -> Callable[[Reader, bytes, bool], CopyCommand]:
    def parse(reader: Reader, tag: bytes, uid: bool) -> CopyCommand:
        """copy = "COPY" SP sequence-set SP mailbox              (RFC 9051 section 9)
        move = "MOVE" SP sequence-set SP mailbox                 (RFC 6851 section 5)
        mailbox = "INBOX" / astring"""
        reader.sp()
        sequence_set = SequenceSet.read(reader)
        reader.sp()
        mailbox = reader.astring()
        reader.end()
        return CopyCommand(tag, uid, sequence_set, mailbox, move)

    return parse


@dataclass(frozen=True, slots=True)
class SearchCommand(Command):
    """[UID] SEARCH [RETURN (...)] [CHARSET x] criteria; the criteria stay generic values
    (atoms, numbers, strings, lists; a sequence set with `*` is an Atom)."""

    tag: bytes
    uid: bool
    criteria: tuple[Value, ...]
    charset: bytes | None = None
    return_options: tuple[Value, ...] | None = None

    def __post_init__(self) -> None:
        if not self.criteria:
            raise RenderError("SEARCH needs at least one search key")

    @property
    def name(self) -> str:
        return "SEARCH"

    def render(self) -> bytes:
        out = _prefix(self.tag, self.uid, "SEARCH")
        if self.return_options is not None:
            out += b" RETURN " + render(self.return_options)
        if self.charset is not None:
            out += b" CHARSET " + render_astring(self.charset)
        return out + b" " + b" ".join(render(key) for key in self.criteria) + b"\r\n"


def _parse_search(reader: Reader, tag: bytes, uid: bool) -> SearchCommand:
    """search = "SEARCH" [search-return-opts] SP search-program
    search-return-opts = SP "RETURN" SP "(" [search-return-opt *(SP search-return-opt)] ")"
    search-program = ["CHARSET" SP charset SP] search-key *(SP search-key)
                                                   (RFC 9051 section 9, RFC 4466 section 2.6)"""
    reader.sp()
    return_options: tuple[Value, ...] | None = None
    if reader.at_ci(b"RETURN ("):
        reader.pos += 7
        options = reader.value()
        assert isinstance(options, tuple)
        return_options = options
        reader.sp()
    charset = None
    if reader.at_ci(b"CHARSET "):
        reader.pos += 8
        charset = reader.astring()
        reader.sp()
    criteria = reader.values_until_end()
    return SearchCommand(tag, uid, criteria, charset, return_options)


@dataclass(frozen=True, slots=True)
class LoginCommand(Command):
    """LOGIN userid password. The password never shows in a repr."""

    tag: bytes
    username: bytes
    password: bytes = field(repr=False)

    @property
    def name(self) -> str:
        return "LOGIN"

    def render(self) -> bytes:
        user, password = render_astring(self.username), render_astring(self.password)
        return _prefix(self.tag, False, "LOGIN") + b" " + user + b" " + password + b"\r\n"


def _parse_login(reader: Reader, tag: bytes, uid: bool) -> LoginCommand:
    """login = "LOGIN" SP userid SP password            (RFC 9051 section 9)
    userid = astring; password = astring"""
    reader.sp()
    username = reader.astring()
    reader.sp()
    password = reader.astring()
    reader.end()
    return LoginCommand(tag, username, password)


@dataclass(frozen=True, slots=True)
class SelectCommand(Command):
    """SELECT / EXAMINE mailbox [(params)] (CONDSTORE, QRESYNC (...) of RFC 7162)."""

    tag: bytes
    mailbox: bytes
    examine: bool = False
    parameters: tuple[Value, ...] | None = None

    @property
    def name(self) -> str:
        return "EXAMINE" if self.examine else "SELECT"

    def render(self) -> bytes:
        out = _prefix(self.tag, False, self.name) + b" " + render_astring(self.mailbox)
        if self.parameters is not None:
            out += b" " + render(self.parameters)
        return out + b"\r\n"


def _parse_select(examine: bool) -> Callable[[Reader, bytes, bool], SelectCommand]:
    def parse(reader: Reader, tag: bytes, uid: bool) -> SelectCommand:
        """select = "SELECT" SP mailbox [select-params]; examine likewise
        select-params = SP "(" select-param *(SP select-param) ")"
                                                   (RFC 9051 section 9, RFC 4466 section 2.1)"""
        reader.sp()
        mailbox = reader.astring()
        parameters: tuple[Value, ...] | None = None
        if reader.skip(b" "):
            if not reader.at(b"("):
                raise reader.error("expected select parameters")
            value = reader.value()
            assert isinstance(value, tuple)
            parameters = value
        reader.end()
        return SelectCommand(tag, mailbox, examine, parameters)

    return parse


@dataclass(frozen=True, slots=True)
class GenericCommand(Command):
    """Any other command: its name and its raw argument bytes (without the CRLF)."""

    tag: bytes
    command: str
    args: bytes = b""
    uid: bool = False

    def __repr__(self) -> str:
        # AUTHENTICATE arguments (SASL-IR) carry credentials; APPEND a message.
        shown = self.args if self.command not in _SECRET_ARGS else b"<hidden>"
        if len(shown) > 80:
            shown = shown[:80] + b"..."
        return f"GenericCommand({self.tag!r}, {self.command!r}, {shown!r}, uid={self.uid})"

    def __post_init__(self) -> None:
        if not _NAME_CHECK.fullmatch(self.command) or self.command == "UID":
            raise RenderError(f"bad command name {self.command!r}")

    @property
    def name(self) -> str:
        return self.command

    def render(self) -> bytes:
        out = _prefix(self.tag, self.uid, self.command)
        if self.args:
            out += b" " + self.args
        return out + b"\r\n"


_PARSERS: Final[dict[str, Callable[[Reader, bytes, bool], Command]]] = {
    "FETCH": _parse_fetch,
    "STORE": _parse_store,
    "COPY": _parse_copy(move=False),
    "MOVE": _parse_copy(move=True),
    "SEARCH": _parse_search,
    "LOGIN": _parse_login,
    "SELECT": _parse_select(examine=False),
    "EXAMINE": _parse_select(examine=True),
}
_UID_COMMANDS: Final = frozenset({"FETCH", "STORE", "COPY", "MOVE", "SEARCH"})


def parse_command(raw: bytes) -> Command:
    """One complete command (`Message.raw` of `ServerFramer`), final CRLF included.

    command = tag SP (command-any / command-auth / command-nonauth / command-select) CRLF
                                                                    (RFC 9051 section 9)
    """
    if not raw.endswith(b"\r\n"):
        raise ParseError("a command ends in CRLF", len(raw))
    reader = Reader(raw)
    try:
        return _parse_command(reader, raw)
    except RenderError as exc:  # a value the grammar admits but the object model does not
        raise ParseError(str(exc), reader.pos) from None


def _parse_command(reader: Reader, raw: bytes) -> Command:
    tag = reader.tag()
    reader.sp()
    name = reader.word()
    uid = False
    if name == "UID":
        uid = True
        reader.sp()
        name = reader.word()
    parser = _PARSERS.get(name)
    if parser is not None and (not uid or name in _UID_COMMANDS):
        return parser(reader, tag, uid)
    if not _NAME_CHECK.fullmatch(name):
        raise ParseError(f"bad command name {name!r}", 0)
    if reader.at_end():
        return GenericCommand(tag, name, b"", uid)
    reader.sp()
    args = raw[reader.pos : -2]
    if not args:
        raise reader.error("expected arguments")
    return GenericCommand(tag, name, args, uid)
