"""RFC 5322 address lists as IMAP ENVELOPE sees them (Dovecot `message-address.c` rules).

`parse_address_list(value)` returns `Address` items in order; a group is an item with only
`mailbox` (the group name) set, and its end an item with everything None. Missing pieces are
filled as Dovecot does (`MISSING_MAILBOX`, `MISSING_DOMAIN`, `SYNTAX_ERROR`, `INVALID_ROUTE`),
and encoded words are left as they are.

May import: mime, stdlib.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from smime_proxy.mime.rfc822 import Rfc822Parser


@dataclass(slots=True)
class Address:
    name: bytes | None = None
    route: bytes | None = None
    mailbox: bytes | None = None
    domain: bytes | None = None
    invalid_syntax: bool = False


class _Ctx:
    __slots__ = ("addr", "local_buf", "out", "p")

    def __init__(self, value: bytes) -> None:
        self.p = Rfc822Parser(value, keep_comment=True)
        self.local_buf = bytearray()
        self.out: list[Address] = []
        self.addr = Address()

    def add(self) -> None:
        self.out.append(self.addr)
        self.addr = Address()

    def cur(self) -> int:
        return self.p.peek()

    def nonstrict_dot_atom(self, buf: bytearray) -> int:
        """Dovecot's parse_nonstrict_dot_atom (ENVELOPE parses with NON_STRICT_DOTS): dots
        anywhere in the local part, as real mail has (`.a`, `a.`, `a..b`)."""
        p = self.p
        ret = -1
        while True:
            while p.peek() == 0x2E:
                buf.append(0x2E)
                p.pos += 1
                if p.pos >= p.end:
                    return 0
                ret = 1
            if p.peek() == 0x40:
                break
            ret = p.parse_atom(buf)
            if not (ret > 0 and p.peek() == 0x2E):
                break
        return ret

    # local-part = dot-atom / quoted-string / obs-local-part
    def local_part(self) -> int:
        buf = self.local_buf = bytearray()  # kept even when parsing fails (Dovecot's ctx->str)
        quoted = self.cur() == 0x22
        ret = self.p.parse_quoted_string(buf) if quoted else self.nonstrict_dot_atom(buf)
        if ret < 0:
            return -1
        self.addr.mailbox = bytes(buf)
        return ret

    def domain(self) -> int:
        buf = bytearray()
        ret = self.p.parse_domain(buf)
        if ret < 0:
            return -1
        self.addr.domain = bytes(buf)
        return ret

    def domain_list(self) -> int:
        buf = bytearray()
        while True:
            if self.p.pos >= self.p.end:
                return 0
            if self.cur() != 0x40:
                break
            if buf:
                buf.append(0x2C)
            buf.append(0x40)
            ret = self.p.parse_domain(buf)
            if ret <= 0:
                return ret
            while self.p.skip_lwsp() > 0 and self.cur() == 0x2C:
                self.p.pos += 1
        self.addr.route = bytes(buf)
        return 1

    def angle_addr(self) -> int:
        self.p.pos += 1  # "<"
        if self.p.skip_lwsp() <= 0:
            return -1
        if self.cur() == 0x40:
            if self.domain_list() > 0 and self.cur() == 0x3A:
                self.p.pos += 1
            else:
                self.addr.route = b"INVALID_ROUTE"
                if self.p.pos >= self.p.end:
                    return -1
            if self.p.skip_lwsp() <= 0:
                return -1
        if self.cur() != 0x3E:
            if self.local_part() <= 0:
                return -1
            if self.cur() == 0x40 and self.domain() <= 0:
                return -1
        if self.cur() != 0x3E:
            return -1
        self.p.pos += 1
        return self.p.skip_lwsp()

    def name_addr(self) -> int:
        buf = bytearray()
        if self.p.parse_phrase(buf) <= 0 or self.cur() != 0x3C:
            return -1
        self.addr.name = bytes(buf) or None
        if self.angle_addr() < 0:
            self.addr.domain = b"SYNTAX_ERROR"
            self.addr.invalid_syntax = True
        return 1 if self.p.pos < self.p.end else 0

    def addr_spec(self) -> int:
        ret2 = -2
        comment = self.p.last_comment
        assert comment is not None
        del comment[:]
        quoted = self.cur() == 0x22
        ret = self.local_part()
        if ret <= 0:
            self.addr.invalid_syntax = True
        if ret != 0 and self.p.pos < self.p.end and self.cur() == 0x40:
            ret2 = self.domain()
            if ret2 <= 0:
                ret = ret2
        if comment:
            self.addr.name = bytes(comment)
        elif ret2 == -2:
            buf = bytearray(self.local_buf)
            buf.append(0x20)
            orig = len(buf)
            self.p.parse_phrase(buf)
            if len(buf) != orig:
                self.addr.mailbox = None
                self.addr.name = bytes(buf)
            elif not quoted:
                self.addr.domain = b""
            self.addr.invalid_syntax = True
            ret = -1
        return ret

    def add_fixed(self) -> None:
        if self.addr.mailbox is None:
            self.addr.mailbox = b"MISSING_MAILBOX"
            self.addr.invalid_syntax = True
        if not self.addr.domain:
            self.addr.domain = b"MISSING_DOMAIN"
            self.addr.invalid_syntax = True
        self.add()

    def mailbox(self) -> int:
        start = self.p.pos
        ret = self.name_addr()
        if ret < 0:
            self.p.pos = start
            self.addr = Address()
            ret = self.addr_spec()
            a = self.addr
            if a.invalid_syntax and a.name is None and a.mailbox is not None and a.domain is None:
                a.name, a.mailbox = a.mailbox, None
        if ret < 0:
            self.addr.invalid_syntax = True
        self.add_fixed()
        return ret

    def group(self) -> int:
        buf = bytearray()
        if self.p.parse_phrase(buf) <= 0 or self.cur() != 0x3A:
            return -1
        self.p.pos += 1
        ret = self.p.skip_lwsp()
        if ret <= 0:
            self.addr.invalid_syntax = True
        self.addr.mailbox = bytes(buf)
        self.add()
        if ret > 0 and self.cur() != 0x3B:
            while True:
                self.mailbox()
                if self.p.pos >= self.p.end or self.cur() != 0x2C:
                    break
                self.p.pos += 1
                if self.p.skip_lwsp() <= 0:
                    ret = -1
                    break
        if ret >= 0:
            if self.p.pos >= self.p.end or self.cur() != 0x3B:
                ret = -1
            else:
                self.p.pos += 1
                ret = self.p.skip_lwsp()
        if ret < 0:
            self.addr.invalid_syntax = True
        self.add()
        return 0 if ret == 0 else 1

    def address(self) -> int:
        start = self.p.pos
        saved = len(self.out)
        ret = self.group()
        if ret < 0:
            del self.out[saved:]
            self.addr = Address()
            self.p.pos = start
            ret = self.mailbox()
        return ret

    def address_list(self) -> None:
        while True:
            ret = self.address()
            if ret == 0:
                break
            if self.p.pos >= self.p.end or self.cur() != 0x2C:
                break
            self.p.pos += 1
            ret = self.p.skip_lwsp()
            if ret <= 0:
                if ret < 0:
                    self.add_fixed()
                break


# Possessive quantifiers throughout: every piece has one way to match, so no input can make
# these expressions backtrack (they see attacker-controlled header values).
_ATEXT = rb"[!#$%&'*+\-/=?^_`{|}~0-9A-Za-z\x80-\xff]"
_DOT_ATOM = _ATEXT + rb"++(?:\." + _ATEXT + rb"++)*+"
_WORD = rb'(?:"[^"\\\r\n]*+"|' + _ATEXT + rb"[" + _ATEXT[1:-1] + rb".]*+)"
_LWSP = rb"[ \t\r\n]*+"
_FAST_MAILBOX = (
    rb"(?:(" + _WORD + rb"(?:" + _LWSP + _WORD + rb")*+)?+" + _LWSP
    + rb"<(" + _DOT_ATOM + rb")@(" + _DOT_ATOM + rb")>"
    + rb"|(" + _DOT_ATOM + rb")@(" + _DOT_ATOM + rb"))"
)
_FAST_LIST = re.compile(
    _LWSP + _FAST_MAILBOX + rb"(?:" + _LWSP + rb"," + _LWSP + _FAST_MAILBOX + rb")*" + _LWSP
    + rb"\Z"
)
_FAST_ONE = re.compile(_FAST_MAILBOX)
_PHRASE_WORD = re.compile(_WORD)


def _fast(value: bytes) -> list[Address] | None:
    """Lists of plain `a@b`, `Name <a@b>` and `"Name" <a@b>` by regular expression (the
    common case); None when the general parser is needed."""
    if _FAST_LIST.match(value) is None:
        return None
    out: list[Address] = []
    for m in _FAST_ONE.finditer(value):
        if m.group(4) is not None:
            out.append(Address(None, None, m.group(4), m.group(5)))
            continue
        phrase = m.group(1)
        name = None
        if phrase:
            words = [w[1:-1] if w[:1] == b'"' else w for w in _PHRASE_WORD.findall(phrase)]
            name = b" ".join(words) or None
        out.append(Address(name, None, m.group(2), m.group(3)))
    return out


def parse_address_list(value: bytes) -> list[Address]:
    """Addresses of a From/To/Cc/... value, as Dovecot's message_address_parse(FILL_MISSING)."""
    value = _strip_blank_folds(value)
    fast = _fast(value)
    if fast is not None:
        return fast
    return parse_address_list_slow(value)


def _strip_blank_folds(value: bytes) -> bytes:
    """An empirical Dovecot 2.3.19 rule, for values with a quoted string only: trailing folds
    made of one blank are not seen (`a"b<LF><SP>` parses as `a"b`, `a"b<LF><SP><SP>` and
    `.<LF><SP>` do not change). Only syntactically broken fields are affected."""
    if b'"' not in value:
        return value
    while len(value) >= 2 and value[-2] == 0x0A and value[-1] in (0x20, 0x09):
        value = value[:-2]
    return value


def parse_address_list_slow(value: bytes) -> list[Address]:
    """parse_address_list with the general (Dovecot message-address) code only."""
    ctx = _Ctx(_strip_blank_folds(value))
    if ctx.p.skip_lwsp() > 0:
        ctx.address_list()
    return ctx.out
