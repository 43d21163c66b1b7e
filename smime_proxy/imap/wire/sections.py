"""FETCH data item names: `Section` (the `[...]` of BODY/BINARY) and `FetchItem`.

A `FetchItem` is one fetch attribute as a client asks for it (`BODY.PEEK[1.2]<0.100>`) or
as a server names it in a FETCH response (`BODY[1.2]<0>`); `response_item()` maps the first
to the second. Grammar: RFC 9051 section 6.4.5 and section 9 (`fetch-att`, `section`,
`partial`), RFC 3516 (BINARY), RFC 7162 (MODSEQ), RFC 3501 (RFC822.* items).

May import: imap.wire, stdlib.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from .errors import ParseError, RenderError
from .lexer import NUMBER64_MAX, NUMBER_MAX, Reader
from .values import render_astring

__all__ = [
    "KNOWN_ITEMS",
    "MACROS",
    "FetchItem",
    "Section",
    "read_fetch_att",
    "read_msg_att_name",
]

# section-msgtext = "HEADER" / "HEADER.FIELDS" [".NOT"] SP header-list / "TEXT"
# section-text    = section-msgtext / "MIME"
SECTION_TEXTS: Final = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"})

# fetch-att items without a section (RFC 9051 section 9, RFC 3501 for RFC822.*, RFC 7162).
SIMPLE_ITEMS: Final = frozenset(
    {
        "ENVELOPE",
        "FLAGS",
        "INTERNALDATE",
        "RFC822",
        "RFC822.HEADER",
        "RFC822.SIZE",
        "RFC822.TEXT",
        "BODY",
        "BODYSTRUCTURE",
        "UID",
        "MODSEQ",
    }
)
SECTION_ITEMS: Final = frozenset({"BODY", "BINARY", "BINARY.SIZE"})
KNOWN_ITEMS: Final = SIMPLE_ITEMS | SECTION_ITEMS

_NOT_ITEM_NAMES: Final = frozenset({"BODY.PEEK", "BINARY.PEEK", "ALL", "FAST", "FULL"})
_PART = re.compile(rb"[1-9][0-9]{0,9}")
_ITEM_NAME = re.compile(rb"[A-Za-z][A-Za-z0-9.\-_]*")


@dataclass(frozen=True, slots=True)
class Section:
    """section-spec: part numbers (`1.2` -> (1, 2)) then at most one text specifier.

    `fields` are the header field names of HEADER.FIELDS[.NOT], as sent (compare them
    case-insensitively: `field_names()`).
    """

    part: tuple[int, ...] = ()
    text: str | None = None
    fields: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if self.text is not None and self.text not in SECTION_TEXTS:
            raise RenderError(f"unknown section text {self.text!r}")
        if self.text == "MIME" and not self.part:
            raise RenderError("MIME needs a part number")
        if (self.text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT")) != bool(self.fields):
            raise RenderError("header fields go with HEADER.FIELDS[.NOT] and only with it")
        if any(not 0 < number <= NUMBER_MAX for number in self.part):
            raise RenderError("part numbers are non-zero 32-bit numbers")

    def field_names(self) -> tuple[str, ...]:
        """The header field names, upper-cased."""
        return tuple(name.decode("latin-1").upper() for name in self.fields)

    def render(self) -> bytes:
        """The text between the brackets."""
        out = b".".join(b"%d" % number for number in self.part)
        if self.text is not None:
            if out:
                out += b"."
            out += self.text.encode("ascii")
            if self.fields:
                out += b" (" + b" ".join(render_astring(name) for name in self.fields) + b")"
        return out

    @classmethod
    def read(cls, reader: Reader, *, binary: bool = False) -> Section:
        """section = "[" [section-spec] "]"
        section-spec = section-msgtext / (section-part ["." section-text])
        section-part = nz-number *("." nz-number)
        header-list = "(" header-fld-name *(SP header-fld-name) ")"; header-fld-name = astring
                                                               (RFC 9051 section 9)
        section-binary = "[" [section-part] "]"               (RFC 3516 section 6)"""
        reader.expect(b"[")
        part: list[int] = []
        text: str | None = None
        fields: list[bytes] = []
        need_text = False
        if _PART.match(reader.data, reader.pos) is not None:
            while True:
                match = _PART.match(reader.data, reader.pos)
                if match is None:  # after "1.": a section-text must follow
                    need_text = True
                    break
                if int(match[0]) > NUMBER_MAX:
                    raise reader.error("part number out of range")
                reader.pos = match.end()
                part.append(int(match[0]))
                if not reader.skip(b"."):
                    break
        elif reader.peek() != 0x5D:
            need_text = True
        if need_text:
            if binary:
                raise reader.error("BINARY takes part numbers only")
            for name in ("HEADER.FIELDS.NOT", "HEADER.FIELDS", "HEADER", "TEXT", "MIME"):
                if reader.at_ci(name.encode("ascii")):
                    text = name
                    reader.pos += len(name)
                    break
            else:
                raise reader.error("bad section")
            if text == "MIME" and not part:
                raise reader.error("MIME needs a part number")
            if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
                reader.sp()
                reader.expect(b"(")
                fields.append(reader.astring())
                while not reader.skip(b")"):
                    reader.sp()
                    fields.append(reader.astring())
        reader.expect(b"]")
        return cls(tuple(part), text, tuple(fields))


@dataclass(frozen=True, slots=True)
class FetchItem:
    """One fetch attribute (request form) or msg-att name (response form).

    name: upper-case item name; BODY with a section is `BODY[...]`, without one the
    BODY structure. BINARY and BINARY.SIZE always have a section (maybe empty).
    peek: BODY.PEEK / BINARY.PEEK (requests only). origin/length: `<origin.length>` in a
    request; a response has the origin only. Unknown extension items keep their name
    (`is_known` is False) and never have a section.
    """

    name: str
    section: Section | None = None
    peek: bool = False
    origin: int | None = None
    length: int | None = None

    def __post_init__(self) -> None:
        if (
            self.name != self.name.upper()
            or not _ITEM_NAME.fullmatch(self.name.encode())
            or self.name in _NOT_ITEM_NAMES
        ):
            raise RenderError(f"bad fetch item name {self.name!r}")
        if self.section is None:
            if self.name in ("BINARY", "BINARY.SIZE"):
                raise RenderError(f"{self.name} needs a section")
            if self.peek or self.origin is not None or self.length is not None:
                raise RenderError("PEEK and partials go with a section")
            return
        if self.name not in SECTION_ITEMS:
            raise RenderError(f"{self.name} takes no section")
        if self.name != "BODY" and self.section.text is not None:
            raise RenderError(f"{self.name} takes part numbers only")
        if self.name == "BINARY.SIZE" and (self.peek or self.origin is not None):
            raise RenderError("BINARY.SIZE takes neither PEEK nor a partial")
        if self.origin is None and self.length is not None:
            raise RenderError("a partial length needs an origin")
        if self.origin is not None and not 0 <= self.origin <= NUMBER64_MAX:
            raise RenderError("partial origin out of range")
        if self.length is not None and not 0 < self.length <= NUMBER64_MAX:
            raise RenderError("partial length out of range")

    @property
    def is_known(self) -> bool:
        return self.name in KNOWN_ITEMS

    @property
    def is_body_section(self) -> bool:
        """BODY[...] / BODY.PEEK[...] (as opposed to the BODY structure)."""
        return self.name == "BODY" and self.section is not None

    @property
    def sets_seen(self) -> bool:
        """Fetching this item sets \\Seen (RFC 9051 section 6.4.5)."""
        if self.name in ("RFC822", "RFC822.TEXT"):
            return True
        return self.name in ("BODY", "BINARY") and self.section is not None and not self.peek

    def response_item(self) -> FetchItem:
        """How a server names the answer: no PEEK, `<origin>` without the length, and
        RFC822.* as is (RFC 9051 section 7.5.2)."""
        if self.section is None or (not self.peek and self.length is None):
            return self
        return FetchItem(self.name, self.section, False, self.origin, None)

    def response_name(self) -> bytes:
        return self.response_item().render()

    def render(self) -> bytes:
        if self.section is None:
            return self.name.encode("ascii")
        out = self.name.encode("ascii")
        if self.peek:
            out += b".PEEK"
        out += b"[" + self.section.render() + b"]"
        if self.origin is not None:
            out += b"<%d" % self.origin
            if self.length is not None:
                out += b".%d" % self.length
            out += b">"
        return out


# The macros of RFC 9051 section 6.4.5.
MACROS: Final[dict[str, tuple[FetchItem, ...]]] = {
    "ALL": tuple(FetchItem(n) for n in ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE")),
    "FAST": tuple(FetchItem(n) for n in ("FLAGS", "INTERNALDATE", "RFC822.SIZE")),
    "FULL": tuple(
        FetchItem(n) for n in ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY")
    ),
}


def _read_name(reader: Reader) -> str:
    match = _ITEM_NAME.match(reader.data, reader.pos)
    if match is None:
        raise reader.error("expected a fetch item")
    reader.pos = match.end()
    return match[0].decode("ascii").upper()


def read_fetch_att(reader: Reader) -> FetchItem:
    """fetch-att = "ENVELOPE" / "FLAGS" / "INTERNALDATE" / "RFC822" [".HEADER" / ".TEXT"] /
        "RFC822.SIZE" / "BODY" ["STRUCTURE"] / "UID" /
        "BODY" section [partial] / "BODY.PEEK" section [partial] /
        "BINARY" [".PEEK"] section-binary [partial] / "BINARY.SIZE" section-binary /
        "MODSEQ"                       (RFC 9051 section 9, RFC 3501 section 9, RFC 7162)
    partial = "<" number64 "." nz-number64 ">"                     (RFC 9051 section 9)

    Extension items (an atom of letters, digits, ".", "-", "_") are kept by name.
    """
    start = reader.pos
    name = _read_name(reader)
    if name in MACROS:
        raise ParseError(f"the macro {name} cannot be combined with other items", start)
    peek = False
    if name in ("BODY.PEEK", "BINARY.PEEK"):
        name, peek = name[:-5], True
        if reader.peek() != 0x5B:
            raise reader.error(f"{name}.PEEK needs a section")
    if reader.peek() != 0x5B:
        if name in ("BINARY", "BINARY.SIZE"):
            raise reader.error(f"{name} needs a section")
        return FetchItem(name)
    if name not in SECTION_ITEMS:
        raise ParseError(f"{name} takes no section", start)
    section = Section.read(reader, binary=name != "BODY")
    origin = length = None
    if name != "BINARY.SIZE" and reader.skip(b"<"):
        origin = reader.number(NUMBER64_MAX)
        reader.expect(b".")
        length = reader.nz_number(NUMBER64_MAX)
        reader.expect(b">")
    return FetchItem(name, section, peek, origin, length)


def read_msg_att_name(reader: Reader) -> FetchItem:
    """The name of one msg-att in a FETCH response:
    "BODY" section ["<" number ">"] / "BINARY" section-binary ["<" number ">"] /
    "BINARY.SIZE" section-binary / any other item name   (RFC 9051 section 7.5.2 and 9)"""
    start = reader.pos
    name = _read_name(reader)
    if name in _NOT_ITEM_NAMES:
        raise ParseError(f"{name} is not a response item", start)
    if reader.peek() != 0x5B:
        if name in ("BINARY", "BINARY.SIZE"):
            raise reader.error(f"{name} needs a section")
        return FetchItem(name)
    if name not in SECTION_ITEMS:
        raise ParseError(f"{name} takes no section", start)
    section = Section.read(reader, binary=name != "BODY")
    origin = None
    if name != "BINARY.SIZE" and reader.skip(b"<"):
        origin = reader.number(NUMBER64_MAX)
        reader.expect(b">")
    return FetchItem(name, section, False, origin, None)
