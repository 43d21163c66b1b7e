"""A cursor over one complete IMAP command or response (as framed: literals inline).

`Reader` reads the lexical tokens of RFC 9051 section 4 and section 9 (atoms, numbers,
quoted strings, literals and literal8, astrings, nstrings, and generic parenthesised values)
and raises `ParseError` (a `PeerProtocolError`) at the first byte that does not fit. The
grammar rules are quoted beside each method. Used by `commands` and `responses`.

May import: imap.wire, stdlib.
"""

from __future__ import annotations

import re
from typing import Final

from .errors import ParseError
from .values import Atom, Binary, Literal, Value

__all__ = ["Reader"]

# ATOM-CHAR = <any CHAR except atom-specials>
# atom-specials = "(" / ")" / "{" / SP / CTL / list-wildcards / quoted-specials / resp-specials
# list-wildcards = "%" / "*"; quoted-specials = DQUOTE / "\"; resp-specials = "]"
_ATOM = re.compile(rb'[^(){ \x00-\x1f\x7f%*"\\\]\x80-\xff]+')
# ASTRING-CHAR = ATOM-CHAR / resp-specials
_ASTRING_ATOM = re.compile(rb'[^(){ \x00-\x1f\x7f%*"\\\x80-\xff]+')
# tag = 1*<any ASTRING-CHAR except "+">
_TAG = re.compile(rb'[^(){ \x00-\x1f\x7f%*"\\+\x80-\xff]+')
# A token of a generic value: an atom, a flag ("\" atom, "\*"), a sequence set with "*",
# or a mailbox pattern with list-wildcards; everything up to a delimiter.
_TOKEN = re.compile(rb'\\?[^(){ \x00-\x1f\x7f"\\\x80-\xff]+|\\\*')
# quoted = DQUOTE *QUOTED-CHAR DQUOTE
# QUOTED-CHAR = <any TEXT-CHAR except quoted-specials> / "\" quoted-specials / UTF8-2..4
_QUOTED = re.compile(rb'"([^"\\\r\n\x00]*(?:\\["\\][^"\\\r\n\x00]*)*)"')  # unrolled: linear
_UNESCAPE = re.compile(rb'\\(["\\])')
# literal = "{" number64 ["+"] "}" CRLF *CHAR8 ; literal8 = "~{" number64 ["+"] "}" CRLF *OCTET
_LITERAL = re.compile(rb"(~?)\{([0-9]{1,19})\+?\}\r\n")
_DIGITS = re.compile(rb"[0-9]+")
# TEXT-CHAR = <any CHAR except CR and LF> (plus UTF-8 in RFC 9051)
_TEXT = re.compile(rb"[^\r\n\x00]*")

NUMBER_MAX: Final = 2**32 - 1  # number: unsigned 32-bit
NUMBER64_MAX: Final = 2**63 - 1  # number64: signed 63-bit


class Reader:
    """A position in one message; every `read_*` consumes what it returns."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    # -- basics ----------------------------------------------------------------------------

    def error(self, what: str) -> ParseError:
        return ParseError(what, self.pos)

    def peek(self) -> int:
        """The next byte, or -1 at the end."""
        return self.data[self.pos] if self.pos < len(self.data) else -1

    def at(self, text: bytes) -> bool:
        return self.data.startswith(text, self.pos)

    def at_ci(self, word: bytes) -> bool:
        """The next bytes spell `word` (ASCII, case-insensitive)."""
        chunk = self.data[self.pos : self.pos + len(word)]
        return chunk.upper() == word

    def expect(self, text: bytes) -> None:
        if not self.data.startswith(text, self.pos):
            raise self.error(f"expected {text!r}")
        self.pos += len(text)

    def skip(self, text: bytes) -> bool:
        """Consume `text` when it comes next."""
        if self.data.startswith(text, self.pos):
            self.pos += len(text)
            return True
        return False

    def sp(self) -> None:
        """SP = %x20"""
        self.expect(b" ")

    def end(self) -> None:
        """CRLF that ends the message."""
        if self.data[self.pos :] != b"\r\n":
            raise self.error("expected end of line")
        self.pos += 2

    def at_end(self) -> bool:
        return self.data.startswith(b"\r\n", self.pos) and self.pos + 2 == len(self.data)

    # -- tokens ----------------------------------------------------------------------------

    def _match(self, pattern: re.Pattern[bytes], what: str) -> bytes:
        match = pattern.match(self.data, self.pos)
        if match is None:
            raise self.error(f"expected {what}")
        self.pos = match.end()
        return match[0]

    def atom(self) -> bytes:
        """atom = 1*ATOM-CHAR                                        (RFC 9051 section 9)"""
        return self._match(_ATOM, "an atom")

    def word(self) -> str:
        """An atom read as a case-insensitive keyword (upper-cased)."""
        return self.atom().decode("ascii").upper()

    def tag(self) -> bytes:
        """tag = 1*<any ASTRING-CHAR except "+">                     (RFC 9051 section 9)"""
        return self._match(_TAG, "a tag")

    def number(self, limit: int = NUMBER_MAX) -> int:
        """number = 1*DIGIT (32-bit); number64 with limit=NUMBER64_MAX (RFC 9051 section 9)"""
        digits = self._match(_DIGITS, "a number")
        if len(digits) > 20 or int(digits) > limit:
            raise ParseError("number out of range", self.pos - len(digits))
        return int(digits)

    def nz_number(self, limit: int = NUMBER_MAX) -> int:
        """nz-number = digit-nz *DIGIT                               (RFC 9051 section 9)"""
        start = self.pos
        value = self.number(limit)
        if self.data[start] == 0x30:
            raise ParseError("expected a non-zero number", start)
        return value

    def quoted(self) -> bytes:
        """quoted = DQUOTE *QUOTED-CHAR DQUOTE                       (RFC 9051 section 9)"""
        match = _QUOTED.match(self.data, self.pos)
        if match is None:
            raise self.error("expected a quoted string")
        self.pos = match.end()
        return _UNESCAPE.sub(rb"\1", match[1])

    def literal(self) -> Literal | Binary:
        """literal = "{" number64 ["+"] "}" CRLF *CHAR8
        literal8 = "~{" number64 ["+"] "}" CRLF *OCTET    (RFC 9051 section 9, RFC 7888)"""
        match = _LITERAL.match(self.data, self.pos)
        if match is None:
            raise self.error("expected a literal")
        size = int(match[2])
        start = match.end()
        if start + size > len(self.data):
            raise self.error("literal runs past the end of the message")
        self.pos = start + size
        content = self.data[start : self.pos]
        if match[1]:
            return Binary(content)
        return Literal(content)

    def string(self) -> bytes:
        """string = quoted / literal                                 (RFC 9051 section 9)"""
        byte = self.peek()
        if byte == 0x22:
            return self.quoted()
        if byte == 0x7B:
            literal = self.literal()
            if isinstance(literal, Binary):  # pragma: no cover - "{" never starts literal8
                raise self.error("literal8 is not a string")
            return literal
        raise self.error("expected a string")

    def astring(self) -> bytes:
        """astring = 1*ASTRING-CHAR / string                         (RFC 9051 section 9)"""
        byte = self.peek()
        if byte in (0x22, 0x7B):
            return self.string()
        return self._match(_ASTRING_ATOM, "an astring")

    def nstring(self) -> bytes | None:
        """nstring = string / nil                                    (RFC 9051 section 9)"""
        if self.at_ci(b"NIL") and not self._token_continues(3):
            self.pos += 3
            return None
        return self.string()

    def _token_continues(self, length: int) -> bool:
        return _TOKEN.match(self.data, self.pos + length) is not None

    def text(self) -> bytes:
        """text = 1*(TEXT-CHAR / UTF8-2 / UTF8-3 / UTF8-4); may be empty here."""
        return self._match(_TEXT, "text")

    # -- generic values --------------------------------------------------------------------

    def value(self, depth: int = 0) -> Value:
        """One value of the model in `values`: NIL, number, string, literal8, atom, or a
        parenthesised list of these ("(" [value *(SP value)] ")"), nesting at most 100 deep.
        A list may follow a list with no SP between them: the body parts of a multipart
        BODYSTRUCTURE (`1*body`) and the addresses of an ENVELOPE (`1*address`) come so
        (RFC 9051 section 9).

        A token of digits is a number; NIL (any case) is None; every other token is an Atom.
        """
        byte = self.peek()
        if byte == 0x28:  # "("
            if depth >= 100:
                raise self.error("values nested too deep")
            self.pos += 1
            items: list[Value] = []
            if not self.skip(b")"):
                while True:
                    items.append(self.value(depth + 1))
                    if self.skip(b")"):
                        break
                    if self.peek() == 0x28 and self.data[self.pos - 1] == 0x29:
                        continue  # ")(": adjacent lists
                    self.sp()
            return tuple(items)
        if byte == 0x22:
            return self.quoted()
        if byte == 0x7B or (byte == 0x7E and self.data.startswith(b"{", self.pos + 1)):
            return self.literal()
        token = self._match(_TOKEN, "a value")
        if token.isdigit():
            if len(token) > 20 or int(token) > NUMBER64_MAX:
                raise ParseError("number out of range", self.pos - len(token))
            return int(token)
        if token.upper() == b"NIL":
            return None
        return Atom(token.decode("ascii"))

    def values_until_end(self) -> tuple[Value, ...]:
        """value *(SP value) CRLF"""
        items: list[Value] = [self.value()]
        while not self.at_end():
            self.sp()
            items.append(self.value())
        self.end()
        return tuple(items)
