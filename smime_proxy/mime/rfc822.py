"""RFC 5322 / RFC 2045 lexical helpers, with the tolerance of Dovecot's lib-mail.

The rules (which bytes are atext, how comments, quoted strings, MIME tokens, content-type
parameters and RFC 2231 continuations are read) follow Dovecot 2.3 `rfc822-parser.c` and
`rfc2231-parser.c`, because Dovecot is the oracle the IMAP views are compared with. Pure, stdlib.

May import: native, stdlib.
"""

from __future__ import annotations

import re

from smime_proxy.native import native

# Dovecot's rfc822_atext_chars: 1 = atext, 2 = alpha/digit/8-bit, 4 = atext but MIME tspecial.
_ATEXT = bytearray(256)
for _c in b"!#$%&'*+-^_`{|}~":
    _ATEXT[_c] = 1
for _c in b"/=?":
    _ATEXT[_c] = 4
for _c in range(ord("0"), ord("9") + 1):
    _ATEXT[_c] = 2
for _c in range(ord("A"), ord("Z") + 1):
    _ATEXT[_c] = 2
for _c in range(ord("a"), ord("z") + 1):
    _ATEXT[_c] = 2
for _c in range(0x80, 0x100):
    _ATEXT[_c] = 2
ATEXT = bytes(_ATEXT)
IS_ATEXT = frozenset(i for i in range(256) if ATEXT[i])
IS_TOKEN = frozenset(i for i in range(256) if ATEXT[i] & 3) | {ord(".")}
IS_ATEXT_OR_DOT = IS_ATEXT | {ord(".")}



def _run_re(allowed: frozenset[int]) -> re.Pattern[bytes]:
    return re.compile(b"[" + b"".join(re.escape(bytes([c])) for c in sorted(allowed)) + b"]*")


_RUNS: dict[frozenset[int], re.Pattern[bytes]] = {
    s: _run_re(s) for s in (IS_ATEXT, IS_TOKEN, IS_ATEXT_OR_DOT)
}
_WS_RUN = re.compile(rb"[ \t\r\n]*")
_QS_SPECIAL = re.compile(rb'["\\\n]')
_BACKSLASH = 0x5C
_NOT_ESCAPABLE = frozenset(b"\r\n\0")
_DQUOTE = 0x22


class Rfc822Parser:
    """A cursor over one header value (Dovecot's `struct rfc822_parser_context`).

    Methods return Dovecot's codes: -1 error, 0 end of input reached, 1 more input follows.
    """

    __slots__ = ("data", "end", "last_comment", "pos")

    def __init__(self, data: bytes, *, keep_comment: bool = False) -> None:
        self.data = data
        self.pos = 0
        self.end = len(data)
        self.last_comment: bytearray | None = bytearray() if keep_comment else None

    def peek(self) -> int:
        """The current byte, or -1 at the end."""
        return self.data[self.pos] if self.pos < self.end else -1

    def skip_comment(self) -> int:
        """Skip one (nested) comment, keeping its text in `last_comment` (folds removed, quoted
        pairs unescaped). Measured on Dovecot 2.3.19: the text of an unterminated comment is
        kept up to its last fold, and a backslash at the very end adds nothing."""
        data = self.data
        level = 1
        keep = self.last_comment
        if keep is not None:
            del keep[:]
        self.pos += 1
        start = self.pos
        while self.pos < self.end:
            c = data[self.pos]
            if c == 0x28:
                level += 1
            elif c == 0x29:
                level -= 1
                if level == 0:
                    if keep is not None:
                        keep += data[start : self.pos]
                    self.pos += 1
                    return 1 if self.pos < self.end else 0
            elif c == 0x0A:
                if keep is not None:
                    seg_end = self.pos
                    if seg_end > start and data[seg_end - 1] == 0x0D:
                        seg_end -= 1
                    keep += data[start:seg_end]
                start = self.pos + 1
            elif c == _BACKSLASH:
                self.pos += 1
                if self.pos >= self.end:
                    return -1
                if data[self.pos] in _NOT_ESCAPABLE:
                    self.pos -= 1  # a backslash before CR, LF or NUL is kept as a character
                else:
                    if keep is not None:
                        keep += data[start : self.pos - 1]
                    start = self.pos
            self.pos += 1
        return -1

    def skip_lwsp(self) -> int:
        data = self.data
        while self.pos < self.end:
            match = _WS_RUN.match(data, self.pos)
            if match is not None:
                self.pos = match.end()
            if self.pos >= self.end or data[self.pos] != 0x28:
                break
            if self.skip_comment() < 0:
                return -1
        return 1 if self.pos < self.end else 0

    def _run(self, allowed: frozenset[int]) -> bytes:
        start = self.pos
        match = _RUNS[allowed].match(self.data, start)
        end = match.end() if match is not None else start
        self.pos = end
        return self.data[start:end]

    def parse_atom(self, out: bytearray) -> int:
        if self.pos >= self.end or self.data[self.pos] not in IS_ATEXT:
            return -1
        out += self._run(IS_ATEXT)
        if self.pos < self.end:
            return self.skip_lwsp()
        return 0

    def parse_dot_atom(self, out: bytearray) -> int:
        if self.pos >= self.end or self.data[self.pos] not in IS_ATEXT:
            return -1
        while True:
            out += self._run(IS_ATEXT)
            if self.pos >= self.end:
                return 0
            ret = self.skip_lwsp()
            if ret <= 0:
                return ret
            if self.data[self.pos] != 0x2E:
                return 1
            self.pos += 1
            out.append(0x2E)
            # Dovecot 2.3.19: a dot must be followed by more atext ("a." and "a..b" fail)
            if self.skip_lwsp() <= 0 or self.data[self.pos] not in IS_ATEXT:
                return -1

    def parse_mime_token(self, out: bytearray) -> int:
        out += self._run(IS_TOKEN)
        if self.pos < self.end:
            return self.skip_lwsp()
        return 0

    def parse_quoted_string(self, out: bytearray) -> int:
        data = self.data
        self.pos += 1
        start = self.pos
        while self.pos < self.end:
            special = _QS_SPECIAL.search(data, self.pos)
            if special is None:
                self.pos = self.end
                break
            self.pos = special.start()
            c = data[self.pos]
            if c == _DQUOTE:
                out += data[start : self.pos]
                self.pos += 1
                return self.skip_lwsp()
            if c == 0x0A:
                seg_end = self.pos
                if seg_end > start and data[seg_end - 1] == 0x0D:
                    seg_end -= 1
                out += data[start:seg_end]
                start = self.pos + 1
            elif c == _BACKSLASH:
                self.pos += 1
                if self.pos >= self.end:
                    return -1
                if data[self.pos] in _NOT_ESCAPABLE:
                    self.pos -= 1  # a backslash before CR, LF or NUL is kept as a character
                else:
                    out += data[start : self.pos - 1]
                    start = self.pos
            self.pos += 1
        return -1

    def _parse_atom_or_dot(self, out: bytearray) -> int:
        out += self._run(IS_ATEXT_OR_DOT)
        if self.pos < self.end:
            return self.skip_lwsp()
        return 0

    def parse_phrase(self, out: bytearray) -> int:
        if self.pos >= self.end:
            return 0
        if self.data[self.pos] == 0x2E:
            return -1
        while True:
            if self.data[self.pos] == _DQUOTE:
                ret = self.parse_quoted_string(out)
            else:
                ret = self._parse_atom_or_dot(out)
            if ret <= 0:
                return ret
            c = self.data[self.pos]
            if c not in IS_ATEXT and c not in (_DQUOTE, 46):
                break
            out.append(0x20)
        return self.skip_lwsp()

    def _parse_domain_literal(self, out: bytearray) -> int:
        data = self.data
        start = self.pos
        while self.pos < self.end:
            c = data[self.pos]
            if c == _BACKSLASH:
                self.pos += 1
                if self.pos >= self.end:
                    break
            elif c == 0x5D:
                self.pos += 1
                out += data[start : self.pos]
                return self.skip_lwsp()
            self.pos += 1
        return -1

    def parse_domain(self, out: bytearray) -> int:
        self.pos += 1  # the "@"
        if self.skip_lwsp() <= 0:
            return -1
        if self.data[self.pos] == 0x5B:
            return self._parse_domain_literal(out)
        return self.parse_dot_atom(out)

    def parse_content_type(self, out: bytearray) -> int:
        """type "/" subtype; on a broken value after the type, `out` is emptied (Dovecot 2.3:
        `text` alone stays "text", `text; x=y`, `text/`, `text/;` and `a/b/c` become "")."""
        if self.skip_lwsp() <= 0:
            return -1
        if self.parse_mime_token(out) <= 0 or not out:
            return -1
        if self.data[self.pos] != 0x2F:
            del out[:]
            return -1
        self.pos += 1
        if self.skip_lwsp() <= 0:
            del out[:]
            return -1
        out.append(0x2F)
        type_len = len(out)
        ret = self.parse_mime_token(out)
        if (
            ret < 0
            or len(out) == type_len  # empty subtype
            or (self.pos < self.end and self.data[self.pos] != 0x3B)
        ):
            del out[:]
            return -1
        return ret

    def parse_content_param(self) -> tuple[int, bytes, bytes]:
        """One `; key=value`: (ret, key, value); ret 0 at the end, -1 broken, 1 found."""
        if self.pos >= self.end:
            return 0, b"", b""
        if self.data[self.pos] != 0x3B:
            return -1, b"", b""
        self.pos += 1
        if self.skip_lwsp() <= 0:
            return -1, b"", b""
        key = bytearray()
        if self.parse_mime_token(key) <= 0:
            return -1, b"", b""
        if self.data[self.pos] != 0x3D:
            return -1, b"", b""
        self.pos += 1
        value = bytearray()
        ret = self.skip_lwsp()
        if ret <= 0:
            pass
        elif self.data[self.pos] == _DQUOTE:
            ret = self.parse_quoted_string(value)
        elif self.data[self.pos] == 0x3D:
            # Dovecot's workaround for name==?utf-8?b?...?=
            data = self.data
            start = self.pos
            while self.pos < self.end and data[self.pos] not in b"; \t\r\n":
                self.pos += 1
            value += data[start : self.pos]
        else:
            ret = self.parse_mime_token(value)
        return (-1 if ret < 0 else 1), bytes(key), bytes(value)


def rfc2231_parse(parser: Rfc822Parser) -> list[tuple[bytes, bytes]]:
    """The remaining `;`-parameters, RFC 2231 continuations merged as Dovecot merges them.

    `key*0*=a; key*1=b` becomes `key*` = `a` + `b` (percent-escaped where it was not extended);
    values of extended parameters are left encoded (`utf-8''...`), exactly as Dovecot reports
    them in BODYSTRUCTURE. Parameters with missing indexes are kept under their raw names.
    """
    result: list[tuple[bytes, bytes]] = []
    # (key, idx, extended, value, order)
    ext: list[tuple[bytes, int, bool, bytes, int]] = []
    idx = 0
    while True:
        ret, key, value = parser.parse_content_param()
        if ret == 0:
            break
        if ret < 0:
            if parser.pos >= parser.end:
                break
            parser.pos += 1
            continue
        star = key.find(b"*")
        if star < 0:
            result.append((key, value))
            continue
        p = star
        if p + 1 < len(key):
            p += 1
            idx = 0
            while p < len(key) and 0x30 <= key[p] <= 0x39:
                idx = idx * 10 + key[p] - 0x30
                p += 1
        extended = p < len(key) and key[p] == 0x2A
        if extended:
            p += 1
        if p < len(key):
            result.append((key, value))
        else:
            ext.append((key[:star], idx & 0xFFFFFFFF, extended, value, len(ext)))
    if not ext:
        return result
    ext.sort(key=lambda e: (e[0], e[1], e[4]))
    i = 0
    count = len(ext)
    while i < count:
        ok = True
        have_extended = False
        next_idx = 0
        j = i
        first_key = ext[i][0].lower()
        while j < count and ext[j][0].lower() == first_key:
            if ext[j][1] != next_idx:
                ok = False
            if ext[j][2]:
                have_extended = True
            next_idx += 1
            j += 1
        if not ok:
            for k in range(i, j):
                name = b"%s*%d*" if ext[k][2] else b"%s*%d"
                result.append((name % (ext[k][0], ext[k][1]), ext[k][3]))
        else:
            merged = bytearray()
            if not ext[i][2] and have_extended:
                merged += b"''"
            for k in range(i, j):
                if not ext[k][2] and have_extended:
                    merged += ext[k][3].replace(b"%", b"%25")
                else:
                    merged += ext[k][3]
            result.append((ext[i][0] + b"*" if have_extended else ext[i][0], bytes(merged)))
        i = j
    return result


# Possessive quantifiers: linear matching whatever the (attacker-controlled) value.
_TOKEN = rb"[!#$%&'*+\-.^_`{|}~0-9A-Za-z\x80-\xff]++"
_TOKEN_NO_STAR = rb"[!#$%&'+\-.^_`{|}~0-9A-Za-z\x80-\xff]++"
_QUOTED_SIMPLE = rb'"[^"\\\r\n]*+"'
_WSP = rb"[ \t]*+"
_FAST_PARAM = (
    rb";" + _WSP + rb"(" + _TOKEN_NO_STAR + rb")" + _WSP + rb"=" + _WSP
    + rb"(" + _TOKEN + rb"|" + _QUOTED_SIMPLE + rb")" + _WSP
)
_FAST_CT = re.compile(
    _WSP + rb"(" + _TOKEN + rb")" + _WSP + rb"/" + _WSP + rb"(" + _TOKEN + rb")" + _WSP
    + rb"((?:" + _FAST_PARAM + rb")*+)\Z"
)
_FAST_PARAM_RE = re.compile(_FAST_PARAM)


def _parse_content_type_fast(
    value: bytes,
) -> tuple[bytes, bytes | None, list[tuple[bytes, bytes]], int] | None:
    """The common well-formed case (no comments, folds, escapes or RFC 2231 keys) by regular
    expression; None when the general parser is needed. Same results by construction (and by
    the equivalence test in tests/unit/mime)."""
    m = _FAST_CT.match(value)
    if m is None:
        return None
    params: list[tuple[bytes, bytes]] = []
    rest = m.group(3)
    if rest:
        for pm in _FAST_PARAM_RE.finditer(rest):
            v = pm.group(2)
            params.append((pm.group(1), v[1:-1] if v[:1] == b'"' else v))
    return m.group(1), m.group(2), params, 1 if rest else 0


def parse_content_type(value: bytes) -> tuple[bytes, bytes | None, list[tuple[bytes, bytes]], int]:
    """(type, subtype or None, parameters, ret) of a Content-Type value, Dovecot-tolerant.
    A value the expression does not take (folded, commented, RFC 2231) is read by the
    native core when it is built (native/src/rfc822.rs; `parse_content_type_slow` is its
    reference), fifty times faster than the general parser here."""
    fast = _parse_content_type_fast(value)
    if fast is not None:
        return fast
    if native is not None:
        parsed: tuple[bytes, bytes | None, list[tuple[bytes, bytes]], int] = (
            native.parse_content_type(value))
        return parsed
    return parse_content_type_slow(value)


def parse_content_type_slow(
    value: bytes,
) -> tuple[bytes, bytes | None, list[tuple[bytes, bytes]], int]:
    """parse_content_type with the general (Dovecot rfc822-parser) code only."""
    parser = Rfc822Parser(value)
    parser.skip_lwsp()
    out = bytearray()
    ret = parser.parse_content_type(out)
    slash = out.find(b"/")
    if slash >= 0:
        ctype, subtype = bytes(out[:slash]), bytes(out[slash + 1 :])
    else:
        ctype, subtype = bytes(out), None
    if ret < 0:
        return ctype, subtype, [], ret
    return ctype, subtype, rfc2231_parse(parser), ret


def parse_token_value(value: bytes) -> tuple[bytes | None, list[tuple[bytes, bytes]]]:
    """(token, parameters) of a Content-Disposition-like value; token None if unparsable."""
    parser = Rfc822Parser(value)
    parser.skip_lwsp()
    out = bytearray()
    if parser.parse_mime_token(out) < 0:
        return None, []
    return bytes(out), rfc2231_parse(parser)


_FAST_CTE = re.compile(_WSP + rb"(" + _TOKEN + rb")" + _WSP + rb"\Z")


def parse_transfer_encoding(value: bytes) -> bytes | None:
    """The Content-Transfer-Encoding token, or None when Dovecot would ignore the header."""
    fast = _FAST_CTE.match(value)
    if fast is not None:
        return fast.group(1)
    parser = Rfc822Parser(value)
    parser.skip_lwsp()
    out = bytearray()
    if parser.parse_mime_token(out) >= 0 and parser.skip_lwsp() == 0 and out:
        return bytes(out)
    return None


def parse_language(value: bytes) -> list[bytes]:
    """Content-Language tags (atoms separated by commas)."""
    parser = Rfc822Parser(value)
    langs: list[bytes] = []
    parser.skip_lwsp()
    while True:
        out = bytearray()
        if parser.parse_atom(out) < 0:
            break
        langs.append(bytes(out))
        if parser.pos >= parser.end or parser.data[parser.pos] != 0x2C:
            break
        parser.pos += 1
        parser.skip_lwsp()
    return langs
